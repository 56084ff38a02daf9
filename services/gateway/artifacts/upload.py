"""A proxied upload's body: counted and hashed as it streams, checked against what was declared.

The gateway relays `PUT .../upload` to the object store chunk by chunk and never holds the
body. What it can know, it checks on the way:

- the byte count against `Content-Length`: a client that goes away early, or a body that
  runs past its declared length, ends the transfer with the reason, never as a success;
- the checksums the client declared, when it declared any: `Content-MD5` (RFC 1864),
  `Repr-Digest` or `Content-Digest` (RFC 9530, `sha-256=:<base64>:`) and the older
  `Digest` (RFC 3230, `sha-256=<base64>` or `md5=<base64>`), against the bytes that passed;
- the store's ETag of a single PUT, which S3 makes the MD5 of what it stored, against the
  MD5 of what was sent.

The route marks the version failed, with the reason, whenever a check fails; only a body
that passes them all is finished as a success (and the registry then checks the size of
the stored object itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Request
from starlette.requests import ClientDisconnect

from shared.errors import BadRequest, EkibenError, InvalidInput

# Algorithms in the digest headers that can be checked here, and the digest sizes.
_SIZES = {"sha-256": 32, "md5": 16}


@dataclass(frozen=True)
class DeclaredDigests:
    """What the client said the body's digests are (raw bytes), by algorithm."""

    md5: bytes | None = None
    sha256: bytes | None = None
    # Where each came from, for messages: "Content-MD5", "Repr-Digest", ...
    md5_from: str = ""
    sha256_from: str = ""


def _decode(header: str, algorithm: str, value: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != _SIZES[algorithm]:
        raise InvalidInput(
            f"{header}: the {algorithm} value must be the base64 of {_SIZES[algorithm]} bytes"
        )
    return raw


_ITEM = re.compile(r"^\s*([A-Za-z0-9-]+)\s*=\s*(.*?)\s*$")


def declared_digests(request: Request) -> DeclaredDigests:
    """The digests in the request's headers; a malformed one for a known algorithm is a 422."""
    found: dict[str, tuple[bytes, str]] = {}
    md5_header = request.headers.get("content-md5")
    if md5_header is not None:
        found["md5"] = (_decode("Content-MD5", "md5", md5_header), "Content-MD5")
    for header in ("Repr-Digest", "Content-Digest", "Digest"):
        raw = request.headers.get(header)
        if raw is None:
            continue
        for item in raw.split(","):
            match = _ITEM.match(item)
            if match is None:
                raise InvalidInput(f"{header}: {item.strip()[:40]!r} is not algorithm=value")
            algorithm, value = match.group(1).lower(), match.group(2)
            if algorithm not in _SIZES or algorithm in found:
                continue  # an algorithm checked here only once, and unknown ones ignored
            if header != "Digest":  # RFC 9530 values are structured byte sequences
                if not (len(value) >= 2 and value[0] == value[-1] == ":"):
                    raise InvalidInput(f"{header}: the {algorithm} value must be :<base64>:")
                value = value[1:-1]
            found[algorithm] = (_decode(header, algorithm, value), header)
    md5, sha256 = found.get("md5"), found.get("sha-256")
    return DeclaredDigests(
        md5=md5[0] if md5 else None,
        sha256=sha256[0] if sha256 else None,
        md5_from=md5[1] if md5 else "",
        sha256_from=sha256[1] if sha256 else "",
    )


class CountedBody:
    """The request body as an async iterator, counted and hashed; see the module.

    A problem met while streaming is kept in `failure` (and raised, which ends the
    upstream transfer): the route reports that reason rather than the store's view of
    an interrupted PUT.
    """

    def __init__(self, request: Request, length: int) -> None:
        self._request = request
        self.length = length
        self.received = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256 = hashlib.sha256()
        self.failure: EkibenError | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._request.stream():
                self.received += len(chunk)
                if self.received > self.length:
                    raise self._fail(
                        BadRequest(
                            f"the body is longer than its Content-Length of {self.length} bytes"
                        )
                    )
                self._md5.update(chunk)
                self._sha256.update(chunk)
                yield chunk
        except ClientDisconnect:
            raise self._fail(self._short("the client disconnected")) from None
        except EkibenError as exc:  # the route's limit, counted by the request's receive
            raise self._fail(exc) from None
        if self.received < self.length:
            raise self._fail(self._short("the body ended"))

    def _short(self, what: str) -> BadRequest:
        return BadRequest(f"{what} after {self.received} of its {self.length} bytes")

    def _fail(self, error: EkibenError) -> EkibenError:
        self.failure = error
        return error

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()

    def check(self, declared: DeclaredDigests, etag: str | None) -> None:
        """Raise unless what passed is what the client declared and the store received."""
        if declared.md5 is not None and declared.md5 != self._md5.digest():
            raise InvalidInput(
                f"the body's MD5 is {self.md5}, not the {declared.md5.hex()} its"
                f" {declared.md5_from} header declares"
            )
        if declared.sha256 is not None and declared.sha256 != self._sha256.digest():
            raise InvalidInput(
                f"the body's SHA-256 is {self.sha256}, not the {declared.sha256.hex()} its"
                f" {declared.sha256_from} header declares"
            )
        stored = (etag or "").strip().strip('"').lower()
        if re.fullmatch(r"[0-9a-f]{32}", stored) and stored != self.md5:
            raise InvalidInput(
                f"the object store holds different bytes than were sent (its MD5 {stored},"
                f" the body's {self.md5})"
            )
