"""The dashboard's HTTP side against a real gateway (served over loopback): cookies, CSRF,
redirects, the relayed event stream. The browser tests (tests/browser) cover the pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.dashboard.app import create_app
from services.dashboard.settings import DashboardSettings
from shared.devstack.servers import S3Server
from tests.fixtures.stack import Stack, running_stack, served

PASSWORD = "dana's long password"


@pytest.fixture
async def stack(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    async with running_stack(
        nats_url, pg_dsn, s3_server, tmp_path / "admin-token", serve_http=True
    ) as running:
        made = await running.call(
            "POST", "/api/v1/users", json={"name": "dana", "role": "developer"}
        )
        assert made.status_code == 200, made.text
        done = await running.call(
            "PUT", "/api/ekiben/v1/users/dana/password", json={"password": PASSWORD}
        )
        assert done.status_code == 200, done.text
        yield running


@pytest.fixture
async def dashboard(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(DashboardSettings(gateway_url=stack.url))
    # Served over loopback, not through ASGITransport, which would hold a stream's body
    # until it ends (and the event stream never does).
    # Generous: an Argon2 verification on a loaded 2-core machine can take seconds.
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        yield client
    await app.state.http.aclose()


async def login_form(client: httpx.AsyncClient) -> str:
    page = await client.get("/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def cookie_header(response: httpx.Response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(f"{name}="):
            return value
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


async def test_signing_in_sets_a_locked_down_cookie_secure_behind_https(
    dashboard: httpx.AsyncClient,
) -> None:
    assert (await dashboard.get("/bentos")).headers["location"] == "/login?next=/bentos"
    csrf = await login_form(dashboard)
    body = {"csrf": csrf, "username": "dana", "password": PASSWORD, "next": "/tokens"}
    plain = await dashboard.post("/login", data=body)
    assert plain.status_code == 303
    assert plain.headers["location"] == "/tokens"
    cookie = cookie_header(plain, "ekiben_session").lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "secure" not in cookie.replace("samesite", "")
    # The page says who is signed in, from the gateway's answer about the session.
    tokens = await dashboard.get("/tokens")
    assert tokens.status_code == 200
    assert '<span class="user">dana</span>' in tokens.text
    assert "script-src 'self'" in tokens.headers["content-security-policy"]

    dashboard.cookies.clear()
    csrf = await login_form(dashboard)
    behind_proxy = await dashboard.post(
        "/login",
        data={**body, "csrf": csrf, "next": "//evil.example/"},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert behind_proxy.headers["location"] == "/"  # never an open redirect
    assert "; secure" in cookie_header(behind_proxy, "ekiben_session").lower()


async def test_forms_need_their_token_and_this_origin(dashboard: httpx.AsyncClient) -> None:
    csrf = await login_form(dashboard)
    wrong = await dashboard.post(
        "/login", data={"csrf": "x", "username": "dana", "password": PASSWORD}
    )
    assert wrong.status_code == 403
    elsewhere = await dashboard.post(
        "/login",
        data={"csrf": csrf, "username": "dana", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    proxied = await dashboard.post(
        "/login",
        data={"csrf": csrf, "username": "dana", "password": "not it"},
        headers={"Origin": "https://ekiben.example", "X-Forwarded-Host": "ekiben.example"},
    )
    assert proxied.status_code == 401  # past the origin check, to the gateway's answer
    signed = await dashboard.post(
        "/login", data={"csrf": csrf, "username": "dana", "password": PASSWORD}
    )
    assert signed.status_code == 303
    page = await dashboard.get("/tokens")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    forged = await dashboard.post("/tokens", data={"name": "forged", "csrf": "nope"})
    assert forged.status_code == 403
    made = await dashboard.post("/tokens", data={"name": "real", "csrf": token.group(1)})
    assert made.status_code == 201
    assert "bentoml cloud login --endpoint" in made.text
    wrong_password = await dashboard.post(
        "/login", data={"csrf": await login_form(dashboard), "username": "dana", "password": "no"}
    )
    assert wrong_password.status_code == 401
    assert "wrong username or password" in wrong_password.text


async def test_the_live_stream_is_the_gateways_with_the_session(
    dashboard: httpx.AsyncClient,
) -> None:
    assert (await dashboard.get("/live")).status_code == 401  # no session: EventSource stops
    csrf = await login_form(dashboard)
    await dashboard.post("/login", data={"csrf": csrf, "username": "dana", "password": PASSWORD})
    async with dashboard.stream("GET", "/live", params={"types": "bento.*"}) as live:
        assert live.status_code == 200
        assert live.headers["content-type"].startswith("text/event-stream")
        first = await anext(live.aiter_text())
        assert first.startswith("retry: ")  # the gateway's stream, relayed
    home = re.search(r'name="csrf" value="([^"]+)"', (await dashboard.get("/")).text)
    assert home is not None
    signed_out = await dashboard.post("/logout", data={"csrf": home.group(1)})
    assert signed_out.status_code == 303
    dashboard.cookies.clear()
    assert (await dashboard.get("/")).status_code == 303
