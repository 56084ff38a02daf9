"""Signing in through the gateway's API, on real PostgreSQL and NATS.

Passwords are stored as Argon2id hashes only; the first admin sets one through a one-time
setup URL (or from the settings, or `ekiben user set-password`); a session made from a
password or an API token authenticates like a token, ends on sign-out, on expiry and (made
from a token) with its token; failed attempts are throttled per user name with a 429.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings, SessionSettings
from shared.db import Pool
from shared.service import BackendRuntime
from shared.settings import NatsSettings, PostgresSettings
from tests.integration.test_identity import ekiben

TOKEN = "X-YATAI-API-TOKEN"
SESSION = "X-Ekiben-Session"
PASSWORD = "correct horse battery staple"


@dataclass
class Gateway:
    client: httpx.AsyncClient
    pool: Pool
    admin_token: str
    setup_file: Path

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, **kwargs)

    async def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self.client.request(method, path, headers={TOKEN: self.admin_token}, **kwargs)

    async def sign_in(self, **body: str) -> httpx.Response:
        return await self.client.post("/api/ekiben/v1/sessions", json=body)

    async def as_session(self, secret: str, method: str, path: str, **kw: Any) -> httpx.Response:
        return await self.client.request(method, path, headers={SESSION: secret}, **kw)

    async def setup_code(self) -> str:
        url = self.setup_file.read_text().strip()
        return parse_qs(urlsplit(url).query)["code"][0]


Factory = Callable[..., AbstractAsyncContextManager[Gateway]]


@pytest.fixture
def gateway_factory(nats_url: str, pg_dsn: str, tmp_path: Path) -> Factory:
    @asynccontextmanager
    async def start(**sessions: Any) -> AsyncIterator[Gateway]:
        setup_file = tmp_path / "admin-setup-url"
        settings = GatewaySettings(
            nats=NatsSettings(url=nats_url, backoff_seconds=[0.05, 0.1]),
            postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
            bootstrap_token_file=tmp_path / "admin-token",
            sessions=SessionSettings(
                setup_url_file=setup_file, dashboard_url="http://dash.example:8080", **sessions
            ),
        )
        app = create_app(settings)
        runtime: BackendRuntime = app.state.runtime
        async with runtime.running():
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                token = (tmp_path / "admin-token").read_text().strip()
                yield Gateway(client, runtime.pool, token, setup_file)

    return start


@pytest.fixture
async def gateway(gateway_factory: Factory) -> AsyncIterator[Gateway]:
    async with gateway_factory(max_failures=3, failure_window_seconds=60) as gw:
        yield gw


async def _with_password(gateway: Gateway) -> None:
    done = await gateway.call(
        "POST",
        "/api/ekiben/v1/setup",
        json={"code": await gateway.setup_code(), "password": PASSWORD},
    )
    assert done.status_code == 200, done.text


async def test_the_first_admin_sets_a_password_once_through_the_setup_url(gateway: Gateway) -> None:
    assert stat.S_IMODE(gateway.setup_file.stat().st_mode) == 0o600
    url = gateway.setup_file.read_text().strip()
    assert url.startswith("http://dash.example:8080/setup?code=")
    code = await gateway.setup_code()
    # No password yet: signing in as admin fails like any wrong password.
    refused = await gateway.sign_in(username="admin", password=PASSWORD)
    assert refused.status_code == 401

    short = await gateway.call("POST", "/api/ekiben/v1/setup", json={"code": code, "password": "x"})
    assert short.status_code == 422
    assert "at least 8 characters" in short.json()["error"]["message"]
    done = await gateway.call(
        "POST", "/api/ekiben/v1/setup", json={"code": code, "password": PASSWORD}
    )
    assert done.status_code == 200, done.text
    assert done.json()["name"] == "admin"
    assert not gateway.setup_file.exists()
    again = await gateway.call(
        "POST", "/api/ekiben/v1/setup", json={"code": code, "password": "another password"}
    )
    assert again.status_code == 401
    assert "unknown, used or expired" in again.json()["error"]["message"]

    stored = await gateway.pool.fetchval("SELECT password_hash FROM users WHERE name = 'admin'")
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored

    signed = await gateway.sign_in(username="admin", password=PASSWORD)
    assert signed.status_code == 201, signed.text
    body = signed.json()
    assert body["session"].startswith("eks_")
    assert body["method"] == "password"
    assert body["role"] == "admin"
    assert body["organization"]["name"] == "default"
    me = await gateway.as_session(body["session"], "GET", "/api/v1/auth/current")
    assert me.status_code == 200
    assert me.json()["name"] == "admin"
    # Only the hash of the session's secret is kept.
    assert (
        await gateway.pool.fetchval("SELECT count(*) FROM sessions WHERE uid = $1", body["uid"])
        == 1
    )
    raw = await gateway.pool.fetchval("SELECT secret_hash FROM sessions")
    assert body["session"].encode() not in raw
    actions = [
        r["action"] for r in (await gateway.admin("GET", "/api/ekiben/v1/audit")).json()["items"]
    ]
    assert actions[:2] == ["session.created", "user.password_set"]


async def test_wrong_passwords_are_refused_then_throttled_per_user(gateway: Gateway) -> None:
    await _with_password(gateway)
    for _ in range(3):
        wrong = await gateway.sign_in(username="admin", password="not the password")
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"] == "wrong username or password"
    # Now even the right password waits, and the answer says how long.
    throttled = await gateway.sign_in(username="admin", password=PASSWORD)
    assert throttled.status_code == 429, throttled.text
    retry = int(throttled.headers["Retry-After"])
    assert 50 <= retry <= 60
    assert "too many failed sign-ins for 'admin'" in throttled.json()["error"]["message"]
    # An unknown name fails the same way, and is throttled on its own count.
    ghost = await gateway.sign_in(username="ghost", password=PASSWORD)
    assert ghost.status_code == 401
    assert ghost.json()["error"]["message"] == "wrong username or password"
    # Moving the failures out of the window (as time would) lets the right password in.
    await gateway.pool.execute("UPDATE login_failures SET at = at - interval '2 minutes'")
    assert (await gateway.sign_in(username="admin", password=PASSWORD)).status_code == 201
    assert (
        await gateway.pool.fetchval("SELECT count(*) FROM login_failures WHERE username = 'admin'")
        == 0
    )


async def test_a_token_session_has_the_tokens_scopes_and_ends_with_it(gateway: Gateway) -> None:
    made = await gateway.admin(
        "POST", "/api/v1/api_tokens", json={"name": "reader", "scopes": ["read_organization"]}
    )
    token = made.json()
    signed = await gateway.sign_in(api_token=token["token"])
    assert signed.status_code == 201, signed.text
    session = signed.json()
    assert session["method"] == "api_token"
    assert session["scopes"] == ["read_organization"]
    assert session["token_name"] == "reader"
    secret = session["session"]
    assert (await gateway.as_session(secret, "GET", "/api/v1/members")).status_code == 200
    write = await gateway.as_session(secret, "POST", "/api/v1/api_tokens", json={"name": "x"})
    assert write.status_code == 403
    bad = await gateway.sign_in(api_token="ekb_" + "x" * 43)
    assert bad.status_code == 401
    assert bad.json()["error"]["message"] == "invalid API token"
    both = await gateway.sign_in(api_token=token["token"], username="admin", password=PASSWORD)
    assert both.status_code == 422

    revoked = await gateway.admin("DELETE", f"/api/v1/api_tokens/{token['uid']}")
    assert revoked.status_code == 200
    after = await gateway.as_session(secret, "GET", "/api/v1/auth/current")
    assert after.status_code == 401
    assert "sign in again" in after.json()["error"]["message"]


async def test_sign_out_and_expiry_end_a_session(gateway_factory: Factory) -> None:
    async with gateway_factory(idle_minutes=1) as gateway:
        await _with_password(gateway)
        first = (await gateway.sign_in(username="admin", password=PASSWORD)).json()["session"]
        second = (await gateway.sign_in(username="admin", password=PASSWORD)).json()["session"]
        current = await gateway.as_session(first, "GET", "/api/ekiben/v1/sessions/current")
        assert current.status_code == 200
        assert current.json()["method"] == "password"
        out = await gateway.as_session(first, "DELETE", "/api/ekiben/v1/sessions/current")
        assert out.status_code == 200
        assert (await gateway.as_session(first, "GET", "/api/v1/auth/current")).status_code == 401
        assert (await gateway.as_session(second, "GET", "/api/v1/auth/current")).status_code == 200
        # Unused for longer than the idle limit, or past its lifetime: ended.
        await gateway.pool.execute(
            "UPDATE sessions SET last_seen_at = now() - interval '2 minutes'"
        )
        assert (await gateway.as_session(second, "GET", "/api/v1/auth/current")).status_code == 401
        await gateway.pool.execute("UPDATE sessions SET last_seen_at = now()")
        assert (await gateway.as_session(second, "GET", "/api/v1/auth/current")).status_code == 200
        await gateway.pool.execute("UPDATE sessions SET expires_at = now()")
        assert (await gateway.as_session(second, "GET", "/api/v1/auth/current")).status_code == 401
        # A token request has no session to show.
        none = await gateway.admin("GET", "/api/ekiben/v1/sessions/current")
        assert none.status_code == 404


async def test_passwords_are_set_by_their_owner_or_an_admin(gateway: Gateway) -> None:
    for name, role in (("dana", "developer"), ("gail", "guest")):
        made = await gateway.admin("POST", "/api/v1/users", json={"name": name, "role": role})
        assert made.status_code == 200, made.text
    set_dana = await gateway.admin(
        "PUT", "/api/ekiben/v1/users/dana/password", json={"password": "dana's password"}
    )
    assert set_dana.status_code == 200, set_dana.text
    dana = (await gateway.sign_in(username="dana", password="dana's password")).json()["session"]
    # Her own change needs her current password; another member's is for admins only.
    no_current = await gateway.as_session(
        dana, "PUT", "/api/ekiben/v1/users/dana/password", json={"password": "a new password"}
    )
    assert no_current.status_code == 401
    other = await gateway.as_session(
        dana, "PUT", "/api/ekiben/v1/users/gail/password", json={"password": "gail's password"}
    )
    assert other.status_code == 403
    changed = await gateway.as_session(
        dana, "PUT", "/api/ekiben/v1/users/dana/password",
        json={"password": "a new password", "current_password": "dana's password"},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    # The session that changed it stays; the old password no longer works.
    assert (await gateway.as_session(dana, "GET", "/api/v1/auth/current")).status_code == 200
    assert (await gateway.sign_in(username="dana", password="dana's password")).status_code == 401
    assert (await gateway.sign_in(username="dana", password="a new password")).status_code == 201
    # A narrow token cannot turn itself into a password (which signs in with full access).
    narrow = await gateway.admin(
        "POST", "/api/v1/api_tokens", json={"name": "ro", "scopes": ["read_organization"]}
    )
    refused = await gateway.call(
        "PUT", "/api/ekiben/v1/users/admin/password", json={"password": "escalated password"},
        headers={TOKEN: narrow.json()["token"]},
    )  # fmt: skip
    assert refused.status_code == 403
    assert "needs the api scope" in refused.json()["error"]["message"]


async def test_the_admin_password_from_settings_and_from_the_cli(
    gateway_factory: Factory, pg_dsn: str, tmp_path: Path
) -> None:
    async with gateway_factory(initial_admin_password=SecretStr(PASSWORD)) as gateway:
        assert not gateway.setup_file.exists()
        assert (await gateway.sign_in(username="admin", password=PASSWORD)).status_code == 201
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "stack.json").write_text(json.dumps({"postgres_dsn": pg_dsn}))
        done = await asyncio.to_thread(
            ekiben, "user", "set-password", "admin", "--password-stdin",
            "--data-dir", str(data_dir), stdin="from the command line\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "password set for admin" in done.stderr
        assert (await gateway.sign_in(username="admin", password=PASSWORD)).status_code == 401
        signed = await gateway.sign_in(username="admin", password="from the command line")
        assert signed.status_code == 201
        unknown = await asyncio.to_thread(
            ekiben, "user", "set-password", "nobody", "--password-stdin",
            "--data-dir", str(data_dir), stdin="whatever it is\n",
        )  # fmt: skip
        assert unknown.returncode == 1
        assert "no user named 'nobody'" in unknown.stderr
