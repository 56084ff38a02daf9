"""An OCI distribution API client (httpx): does an image exist, and what is its digest.

    async with RegistryClient.from_settings(settings.registry) as registry:
        digest = await registry.manifest_digest("ekiben/greeter", "v1")   # None: not there

The builder asks before it builds: an image already pushed for a bento version is not
built again. The lookup is a manifest `HEAD` accepting OCI index/manifest and Docker v2
list/manifest types; the digest is the `Docker-Content-Digest` header (or, where a registry
omits it, the sha256 of the manifest fetched by GET). Authentication follows the registry's
`WWW-Authenticate` challenge: Basic with the configured credentials, or the Bearer token
flow (a token fetched from the challenge's realm for its service and scope, with the
credentials when there are some, anonymously otherwise, and cached until it expires).
An insecure registry is spoken to over plain HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

from services.builder.adapters.auth import (
    Auth,
    RegistryCredentials,
    auth_from_settings,
    resolve_credentials,
)
from services.builder.settings import TargetRegistrySettings
from shared.errors import PermanentError, TemporaryError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(MANIFEST_TYPES)
_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_TOKEN_MARGIN_SECONDS = 10.0


class RegistryUnreachable(TemporaryError):
    """The registry did not answer, or answered with a server error."""


class RegistryAuthFailed(PermanentError):
    """The registry refused our credentials (or wants some and we have none)."""


@dataclass(frozen=True)
class Challenge:
    """A parsed `WWW-Authenticate` header: the scheme and its parameters."""

    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        params = {
            match.group(1).lower(): (
                match.group(2).replace('\\"', '"') if match.group(2) is not None else match.group(3)
            )
            for match in _PARAM.finditer(rest)
        }
        return cls(scheme.lower(), params)


@dataclass
class _Token:
    value: str
    expires_at: float


class RegistryClient:
    """Manifest lookups against one registry. Use as an async context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth = None,
        verify: bool = True,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = httpx.URL(self.base_url).netloc.decode()
        self._credentials: RegistryCredentials | None = resolve_credentials(auth, self.host)
        self._http = httpx.AsyncClient(
            verify=verify, timeout=timeout, transport=transport, follow_redirects=True
        )
        self._tokens: dict[str, _Token] = {}
        self._basic = False  # set once the registry asked for Basic auth

    @classmethod
    def from_settings(
        cls, registry: TargetRegistrySettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> RegistryClient:
        return cls(
            registry.base_url,
            auth=auth_from_settings(registry),
            verify=registry.tls_verify,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the API -------------------------------------------------------------------------

    async def ping(self) -> bool:
        """Whether `/v2/` answers (200, or 401 with a challenge we can meet)."""
        response = await self._request("GET", "/v2/", scope=None)
        return response.status_code == 200

    async def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest of `repository:reference` (a tag or a digest); None if it is not there.

        Raises `RegistryAuthFailed` when the registry refuses the credentials and
        `RegistryUnreachable` on connection failures and 5xx answers.
        """
        path = f"/v2/{repository}/manifests/{reference}"
        scope = f"repository:{repository}:pull"
        response = await self._request("HEAD", path, scope=scope, headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        self._check(response, f"{repository}:{reference}")
        digest: str | None = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        # Some registries omit the header on HEAD: the digest of the manifest bytes is it.
        response = await self._request("GET", path, scope=scope, headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        self._check(response, f"{repository}:{reference}")
        header: str | None = response.headers.get("Docker-Content-Digest")
        return header or "sha256:" + hashlib.sha256(response.content).hexdigest()

    # --- requests with authentication ---------------------------------------------------

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise RegistryAuthFailed(
                f"registry {self.host} refused access to {what} ({response.status_code})"
                + ("" if self._credentials else ": it needs credentials and none are configured"),
                reason="RegistryAuthFailed",
            )
        if response.status_code >= 500 or response.status_code == 429:
            raise RegistryUnreachable(
                f"registry {self.host} answered {response.status_code} for {what}",
                reason="RegistryUnavailable",
            )
        if response.status_code >= 400:
            raise PermanentError(
                f"registry {self.host} answered {response.status_code} for {what}: "
                f"{response.text[:200]}",
                reason="RegistryError",
            )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        scope: str | None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        headers = dict(headers or {})
        key = scope or ""
        token = self._tokens.get(key)
        if token is not None and token.expires_at > time.monotonic():
            headers["Authorization"] = f"Bearer {token.value}"
        elif self._basic and self._credentials is not None:
            headers["Authorization"] = self._basic_header(self._credentials)
        response = await self._send(method, path, headers)
        if response.status_code != 401:
            return response
        challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
        if challenge.scheme == "basic" and self._credentials is not None:
            self._basic = True
            headers["Authorization"] = self._basic_header(self._credentials)
        elif challenge.scheme == "bearer" and "realm" in challenge.params:
            value = await self._fetch_token(challenge, scope)
            headers["Authorization"] = f"Bearer {value}"
        else:
            return response
        return await self._send(method, path, headers)

    async def _send(self, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return await self._http.request(method, self.base_url + path, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"registry {self.host} unreachable: {type(exc).__name__}: {exc}",
                reason="RegistryUnreachable",
            ) from exc

    @staticmethod
    def _basic_header(credentials: RegistryCredentials) -> str:
        pair = f"{credentials.username}:{credentials.password.get_secret_value()}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    async def _fetch_token(self, challenge: Challenge, scope: str | None) -> str:
        """The Bearer token flow of the distribution spec (token endpoint by GET)."""
        params = {"service": challenge.params["service"]} if "service" in challenge.params else {}
        wanted = challenge.params.get("scope") or scope
        if wanted:
            params["scope"] = wanted
        headers = {}
        if self._credentials is not None:
            headers["Authorization"] = self._basic_header(self._credentials)
        try:
            response = await self._http.get(
                challenge.params["realm"], params=params, headers=headers
            )
        except httpx.HTTPError as exc:
            raise RegistryUnreachable(
                f"token service of {self.host} unreachable: {type(exc).__name__}: {exc}",
                reason="RegistryUnreachable",
            ) from exc
        if response.status_code in (401, 403):
            raise RegistryAuthFailed(
                f"token service of {self.host} refused the credentials ({response.status_code})",
                reason="RegistryAuthFailed",
            )
        if response.status_code != 200:
            raise RegistryUnreachable(
                f"token service of {self.host} answered {response.status_code}",
                reason="RegistryUnavailable",
            )
        try:
            body = response.json()
            value = str(body.get("token") or body["access_token"])
        except (ValueError, KeyError, AttributeError) as exc:
            raise RegistryUnreachable(
                f"token service of {self.host} sent no token", reason="RegistryUnavailable"
            ) from exc
        expires_in = float(body.get("expires_in") or 60)
        self._tokens[scope or ""] = _Token(
            value, time.monotonic() + max(0.0, expires_in - _TOKEN_MARGIN_SECONDS)
        )
        return value
