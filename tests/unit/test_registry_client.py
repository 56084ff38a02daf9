"""The registry client's authentication flows against a scripted registry (httpx.MockTransport).

distribution's own Bearer mode needs a token server with signed JWTs; the flow itself (the
challenge, the token request, the retry, the cache) is exercised here, Basic auth against a
real distribution with htpasswd in tests/images/test_registry_auth.py.
"""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
from pydantic import SecretStr

from services.builder.adapters.auth import RegistryCredentials
from services.builder.adapters.registry import (
    ACCEPT,
    Challenge,
    RegistryAuthFailed,
    RegistryClient,
    RegistryUnreachable,
)
from services.builder.settings import TargetRegistrySettings

DIGEST = "sha256:" + "ab" * 32
CREDENTIALS = RegistryCredentials("robot", SecretStr("pw"))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TokenRegistry:
    """A registry that wants a Bearer token from its token service (as Docker Hub, Harbor)."""

    def __init__(self, *, require_credentials: bool = True, with_digest_header: bool = True):
        self.require_credentials = require_credentials
        self.with_digest_header = with_digest_header
        self.token_requests: list[httpx.Request] = []
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            self.token_requests.append(request)
            if self.require_credentials and request.headers.get("Authorization") != basic(
                "robot", "pw"
            ):
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "t0k3n", "expires_in": 300})
        self.requests.append(request)
        if request.headers.get("Authorization") != "Bearer t0k3n":
            scope = f"repository:{request.url.path.split('/')[2]}/app:pull"
            return httpx.Response(
                401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="https://auth.example.com/token",'
                    f'service="registry.example.com",scope="{scope}"'
                },
            )
        if request.url.path.endswith("/missing"):
            return httpx.Response(404)
        headers = {"Docker-Content-Digest": DIGEST} if self.with_digest_header else {}
        return httpx.Response(200, headers=headers, content=b'{"schemaVersion":2}')


def client(handler: object, **kwargs: object) -> RegistryClient:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return RegistryClient("https://registry.example.com", transport=transport, **kwargs)  # type: ignore[arg-type]


async def test_bearer_flow_fetches_a_token_with_the_credentials_and_caches_it() -> None:
    registry = TokenRegistry()
    async with client(registry, auth=CREDENTIALS) as api:
        assert await api.manifest_digest("team/app", "v1") == DIGEST
        assert await api.manifest_digest("team/app", "missing") is None
    (token_request,) = registry.token_requests
    assert token_request.url.params["service"] == "registry.example.com"
    assert token_request.url.params["scope"] == "repository:team/app:pull"
    first = registry.requests[0]
    assert first.method == "HEAD"
    assert first.headers["Accept"] == ACCEPT
    # One challenge, then the cached token for both lookups.
    assert [r.headers.get("Authorization") for r in registry.requests] == [
        None,
        "Bearer t0k3n",
        "Bearer t0k3n",
    ]


async def test_bearer_flow_is_anonymous_without_credentials() -> None:
    registry = TokenRegistry(require_credentials=False)
    async with client(registry) as api:
        assert await api.manifest_digest("team/app", "v1") == DIGEST
    assert "Authorization" not in registry.token_requests[0].headers


async def test_refused_credentials_are_a_permanent_error() -> None:
    registry = TokenRegistry()
    wrong = RegistryCredentials("robot", SecretStr("wrong"))
    async with client(registry, auth=wrong) as api:
        with pytest.raises(RegistryAuthFailed, match="refused the credentials"):
            await api.manifest_digest("team/app", "v1")


async def test_the_digest_is_computed_when_the_registry_omits_the_header() -> None:
    registry = TokenRegistry(with_digest_header=False)
    async with client(registry, auth=CREDENTIALS) as api:
        digest = await api.manifest_digest("team/app", "v1")
    assert digest == "sha256:" + hashlib.sha256(b'{"schemaVersion":2}').hexdigest()
    assert [r.method for r in registry.requests] == ["HEAD", "HEAD", "GET"]


async def test_basic_challenge_is_answered_and_then_sent_up_front() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != basic("robot", "pw"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})

    async with client(handler, auth=CREDENTIALS) as api:
        assert await api.manifest_digest("a", "1") == DIGEST
        assert await api.manifest_digest("a", "2") == DIGEST
    assert seen == [None, basic("robot", "pw"), basic("robot", "pw")]


async def test_a_registry_wanting_credentials_we_lack_is_named() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async with client(handler) as api:
        with pytest.raises(RegistryAuthFailed, match="none are configured"):
            await api.manifest_digest("a", "1")


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_server_errors_are_temporary(status: int) -> None:
    async with client(lambda _: httpx.Response(status)) as api:
        with pytest.raises(RegistryUnreachable):
            await api.manifest_digest("a", "1")


async def test_a_registry_that_does_not_answer_is_temporary() -> None:
    async with RegistryClient("http://127.0.0.1:9", timeout=2) as api:
        with pytest.raises(RegistryUnreachable, match="unreachable"):
            await api.manifest_digest("a", "1")


def test_challenges_parse_with_quoted_commas() -> None:
    challenge = Challenge.parse(
        'Bearer realm="https://auth.example.com/token",service="registry",'
        'scope="repository:a/b:pull,push",error="insufficient_scope"'
    )
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.example.com/token",
        "service": "registry",
        "scope": "repository:a/b:pull,push",
        "error": "insufficient_scope",
    }
    assert Challenge.parse('Basic realm="x y"').params == {"realm": "x y"}


async def test_settings_choose_plain_http_for_insecure_registries() -> None:
    async with RegistryClient.from_settings(TargetRegistrySettings(url="127.0.0.1:5000")) as api:
        assert api.base_url == "http://127.0.0.1:5000"
