"""Unpack a bento archive into a build context, refusing anything that could escape it.

A bento arrives as the tar the client pushed (the registry stores it uncompressed; gzip
is accepted too). Its contents are the user's, so every entry is checked before anything
is written, and the archive is refused with a `PermanentError` (reason `UnsafeArchive`,
naming the entry) when an entry

- has an absolute name, a `..` component, or an empty or NUL-containing name;
- is a device, a FIFO or any type other than file, directory, symlink and hard link;
- is a symlink whose target is absolute or resolves outside the context, or a hard link
  to anything but a regular file extracted before it;
- would bring the total size (or the number of entries) past the limit.

On top of these checks, extraction itself runs with `tarfile`'s `data` filter (no
set-uid bits, no writing through a symlink that leaves the destination, owner and group
of this process). Nothing is written outside `dest_dir`; on refusal, what was already
extracted is removed again. The archive is read once, front to back, so a stream (an
HTTP response body being read) works as well as a file.

`fetch_bento(url, dest_dir, expected_digest)` is what both build backends do with a bento:
download it through its presigned URL, check that its sha256 is the one the build was
requested for (the image tag derives from it: a re-push that replaced the archive since
cannot put other content under that tag), and unpack it as above.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from shared.errors import EkibenError, PermanentError

DEFAULT_MAX_BYTES = 20 * 1024**3  # models are not inside a bento; its code and lock files are
DEFAULT_MAX_ENTRIES = 200_000
DOCKERFILE = Path("env/docker/Dockerfile")


class UnsafeArchive(PermanentError):
    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(
            message, reason="UnsafeArchive", details={"entry": entry} if entry else None
        )
        self.entry = entry


@dataclass(frozen=True)
class ExtractedBento:
    root: Path
    entries: int
    total_bytes: int
    # The archive as downloaded (fetch_bento): its size and sha256 (hex).
    archive_bytes: int = 0
    archive_sha256: str = ""

    @property
    def dockerfile(self) -> Path:
        """The Dockerfile `bentoml build` generated (bento spec 2: env/docker/Dockerfile)."""
        return self.root / DOCKERFILE

    def has_dockerfile(self) -> bool:
        return self.dockerfile.is_file()


def _normalised(name: str) -> str:
    """The member name without a leading `./` and trailing `/`; refused names raise."""
    if not name or "\x00" in name:
        raise UnsafeArchive(f"unsafe bento archive: entry {name!r} has an invalid name", entry=name)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"unsafe bento archive: entry {name!r} is an absolute path", entry=name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"unsafe bento archive: entry {name!r} contains '..'", entry=name)
    return "/".join(parts)


def _check(member: tarfile.TarInfo, files: set[str]) -> str:
    name = _normalised(member.name)
    where = f"unsafe bento archive: entry {member.name!r}"
    if member.isreg() or member.isdir():
        return name
    if member.issym():
        target = member.linkname
        if not target or target.startswith("/"):
            raise UnsafeArchive(f"{where} is a symlink to an absolute path {target!r}", entry=name)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if resolved == ".." or resolved.startswith("../"):
            raise UnsafeArchive(
                f"{where} is a symlink pointing outside the bento ({target!r})", entry=name
            )
        return name
    if member.islnk():
        try:
            target = _normalised(member.linkname)
        except UnsafeArchive as exc:
            raise UnsafeArchive(
                f"{where} is a hard link outside the bento ({member.linkname!r})", entry=name
            ) from exc
        if target not in files:
            raise UnsafeArchive(
                f"{where} is a hard link to {member.linkname!r}, which is not a file before it",
                entry=name,
            )
        return name
    kind = (
        "a character device"
        if member.ischr()
        else "a block device"
        if member.isblk()
        else "a FIFO"
        if member.isfifo()
        else f"of unsupported type {member.type!r}"
    )
    raise UnsafeArchive(f"{where} is {kind}", entry=name)


def _members(
    tar: tarfile.TarFile, max_bytes: int, max_entries: int
) -> Iterator[tuple[tarfile.TarInfo, str]]:
    files: set[str] = set()
    total = 0
    for count, member in enumerate(tar, start=1):
        if count > max_entries:
            raise UnsafeArchive(
                f"unsafe bento archive: more than {max_entries} entries", entry=member.name
            )
        name = _check(member, files)
        total += max(member.size, 0)
        if total > max_bytes:
            raise UnsafeArchive(
                f"unsafe bento archive: entry {member.name!r} takes the total size past the "
                f"limit of {max_bytes} bytes",
                entry=name,
            )
        if member.isreg():
            files.add(name)
        else:
            files.discard(name)
        yield member, name


def extract_bento_sync(
    source: Path | BinaryIO,
    dest_dir: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ExtractedBento:
    """Blocking variant of `extract_bento` (for a worker thread)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    if any(dest_dir.iterdir()):
        raise ValueError(f"{dest_dir} is not empty")
    root = dest_dir.resolve()
    total = count = 0
    try:
        # "r|*": a stream, read once front to back; uncompressed or gzip.
        if isinstance(source, Path):
            tar = tarfile.open(source, mode="r|*")  # noqa: SIM115 - closed below
        else:
            tar = tarfile.open(fileobj=source, mode="r|*")  # noqa: SIM115
        with tar:
            for member, name in _members(tar, max_bytes, max_entries):
                if not name:  # the archive's "." itself
                    continue
                member.name = name
                if member.islnk():
                    member.linkname = _normalised(member.linkname)
                tar.extract(member, root, filter="data")
                count += 1
                total += max(member.size, 0)
        _check_symlinks(root)
    except tarfile.FilterError as exc:
        _empty(root)
        entry = getattr(getattr(exc, "tarinfo", None), "name", None)
        raise UnsafeArchive(f"unsafe bento archive: {exc}", entry=entry) from exc
    except UnsafeArchive:
        _empty(root)
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        _empty(root)
        raise PermanentError(
            f"bento archive is not a readable tar: {type(exc).__name__}: {exc}",
            reason="InvalidArchive",
        ) from exc
    return ExtractedBento(root=root, entries=count, total_bytes=total)


def _check_symlinks(root: Path) -> None:
    """Every symlink as extracted resolves inside `root`.

    Each one was checked when it was written, but a later entry can change what an earlier
    one resolves to (`a -> b/..`, then `b -> .`): this looks at the final tree.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            if not path.is_symlink():
                continue
            try:
                inside = path.resolve().is_relative_to(root)
            except (RuntimeError, OSError):  # a symlink loop
                inside = False
            if not inside:
                entry = str(path.relative_to(root))
                raise UnsafeArchive(
                    f"unsafe bento archive: entry {entry!r} is a symlink that resolves outside "
                    f"the bento ({str(path.readlink())!r})",
                    entry=entry,
                )


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


async def extract_bento(
    source: Path | BinaryIO,
    dest_dir: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> ExtractedBento:
    """Extract the bento tar `source` (a path or a readable binary stream) into `dest_dir`.

    `dest_dir` must be missing or empty. Raises `UnsafeArchive` (a `PermanentError`) for
    an entry that could escape `dest_dir` or a size past `max_bytes` (see the module), and
    `PermanentError` (reason `InvalidArchive`) for a file that is not a tar. Runs in a
    worker thread: the event loop is not blocked by the disk.
    """
    return await asyncio.to_thread(
        extract_bento_sync, source, dest_dir, max_bytes=max_bytes, max_entries=max_entries
    )


_CHUNK = 1024 * 1024


async def fetch_bento(
    url: str,
    dest_dir: Path,
    *,
    expected_digest: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ExtractedBento:
    """Download the bento at the presigned `url`, check its digest, unpack it in `dest_dir`.

    `dest_dir` gets `context/` (the unpacked bento); the archive itself is removed.
    `expected_digest` is the build's content digest: `sha256:<hex>` is checked against the
    bytes (`PermanentError`, reason `ArchiveChanged`, when they differ); any other form (a
    bento uploaded before archives were hashed) is not. Refusals are `extract_bento`'s; a
    download that fails on the way is an `EkibenError` (another attempt may succeed).
    """
    await asyncio.to_thread(dest_dir.mkdir, parents=True, exist_ok=True)
    archive = dest_dir / "bento.tar"
    digest = hashlib.sha256()
    size = 0
    try:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(60.0, read=300.0)) as http,
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise PermanentError(
                    f"bento download answered {response.status_code}",
                    reason="BentoDownloadFailed",
                )
            with archive.open("wb") as out:
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise UnsafeArchive(
                            f"unsafe bento archive: larger than the limit of {max_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise EkibenError(f"bento download failed: {type(exc).__name__}: {exc}") from exc
    actual = digest.hexdigest()
    if expected_digest.startswith("sha256:") and expected_digest != f"sha256:{actual}":
        archive.unlink(missing_ok=True)
        raise PermanentError(
            f"the bento archive changed since the build was requested (expected "
            f"{expected_digest}, downloaded sha256:{actual}): a new push builds the new content",
            reason="ArchiveChanged",
        )
    try:
        extracted = await extract_bento(archive, dest_dir / "context", max_bytes=max_bytes)
    finally:
        archive.unlink(missing_ok=True)
    return ExtractedBento(
        root=extracted.root,
        entries=extracted.entries,
        total_bytes=extracted.total_bytes,
        archive_bytes=size,
        archive_sha256=actual,
    )
