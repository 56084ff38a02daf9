"""Identity through the gateway's HTTP API, on real PostgreSQL and NATS.

The first start makes an admin and a token file; tokens authenticate, are stored hashed,
expire, are revoked; organizations and roles bound what a token may do; every change
leaves an audit record; `ekiben token create` prints a token that works.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.gateway.app import MIGRATIONS, create_app
from services.gateway.identity import models
from services.gateway.identity import service as identity
from services.gateway.identity.auth import TokenCache
from services.gateway.settings import GatewaySettings
from shared.db import Pool, create_pool
from shared.service import BackendRuntime, migrate
from shared.settings import NatsSettings, PostgresSettings

ROOT = Path(__file__).parents[2]
TOKEN = "X-YATAI-API-TOKEN"


def gateway_settings(nats_url: str, pg_dsn: str, token_file: Path | None) -> GatewaySettings:
    return GatewaySettings(
        nats=NatsSettings(url=nats_url, backoff_seconds=[0.05, 0.1]),
        postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
        bootstrap_token_file=token_file,
    )


@dataclass
class Gateway:
    client: httpx.AsyncClient
    runtime: BackendRuntime
    token_file: Path
    admin_token: str
    app: FastAPI

    @property
    def pool(self) -> Pool:
        return self.runtime.pool

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        headers.setdefault(TOKEN, token if token is not None else self.admin_token)
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def new_token(
        self,
        name: str,
        token: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **body: Any,
    ) -> dict[str, Any]:
        response = await self.call(
            "POST", "/api/v1/api_tokens", token, json={"name": name, **body}, headers=headers or {}
        )
        assert response.status_code == 200, response.text
        created: dict[str, Any] = response.json()
        return created

    async def count(self, table: str) -> int:
        value: int = await self.pool.fetchval(f"SELECT count(*) FROM {table}")
        return value


@pytest.fixture
async def gateway(nats_url: str, pg_dsn: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    token_file = tmp_path / "secrets" / "admin-token"
    app = create_app(gateway_settings(nats_url, pg_dsn, token_file))
    runtime: BackendRuntime = app.state.runtime
    async with runtime.running():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(client, runtime, token_file, token_file.read_text().strip(), app)


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message: str = error["message"]
    for fragment in fragments:
        assert fragment in message, message
    return message


def aware(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


# --- bootstrap ----------------------------------------------------------------------------------


async def test_first_start_creates_an_admin_and_a_private_token_file_once(
    gateway: Gateway,
) -> None:
    assert stat.S_IMODE(gateway.token_file.stat().st_mode) == 0o600
    assert gateway.admin_token.startswith("ekb_")
    assert len(gateway.admin_token) == models.TOKEN_LENGTH
    rows = await gateway.pool.fetch(
        """SELECT o.name AS org, u.name AS user, m.role FROM members m
           JOIN users u ON u.id = m.user_id JOIN organizations o ON o.id = m.organization_id"""
    )
    assert [dict(r) for r in rows] == [{"org": "default", "user": "admin", "role": "admin"}]
    assert await gateway.pool.fetchval("SELECT name FROM api_tokens") == "bootstrap"

    # A later start (or another replica) finds users and leaves everything as it was.
    assert not await identity.bootstrap(gateway.pool, gateway.token_file)
    assert gateway.token_file.read_text().strip() == gateway.admin_token
    assert await gateway.count("users") == 1
    assert await gateway.count("api_tokens") == 1

    me = await gateway.call("GET", "/api/v1/auth/current")
    assert me.status_code == 200
    assert me.json()["name"] == "admin"


async def test_concurrent_bootstraps_make_one_admin_and_one_token(
    pg_dsn: str, nats_url: str, tmp_path: Path
) -> None:
    settings = gateway_settings(nats_url, pg_dsn, None)
    await migrate(settings, MIGRATIONS)
    pool = await create_pool(pg_dsn, schema="gateway", min_size=4, max_size=4)
    token_file = tmp_path / "admin-token"
    try:
        results = await asyncio.gather(*(identity.bootstrap(pool, token_file) for _ in range(4)))
        assert sorted(results) == [False, False, False, True]
        assert await pool.fetchval("SELECT count(*) FROM users") == 1
        assert await pool.fetchval("SELECT count(*) FROM organizations") == 1
        assert await pool.fetchval("SELECT count(*) FROM api_tokens") == 1
        found = await identity.find_token(pool, token_file.read_text().strip())
        assert found is not None
        assert found.name == "bootstrap"
        # No temporary file left beside the token.
        assert [p.name for p in tmp_path.iterdir()] == ["admin-token"]
    finally:
        await pool.close()


async def test_a_bootstrap_that_cannot_write_its_token_file_leaves_nothing(
    pg_dsn: str, nats_url: str, tmp_path: Path
) -> None:
    await migrate(gateway_settings(nats_url, pg_dsn, None), MIGRATIONS)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    pool = await create_pool(pg_dsn, schema="gateway", min_size=1, max_size=1)
    try:
        with pytest.raises(FileExistsError):
            await identity.bootstrap(pool, blocker / "admin-token")
        for table in ("users", "organizations", "api_tokens", "audit_log"):
            assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        # The next start, with a usable path, bootstraps normally.
        assert await identity.bootstrap(pool, tmp_path / "admin-token")
    finally:
        await pool.close()


# --- who am I -----------------------------------------------------------------------------------


async def test_login_calls_answer_the_shapes_the_bentoml_client_decodes(gateway: Gateway) -> None:
    version = await gateway.client.get("/api/v1/version")  # public: no token
    assert version.status_code == 200
    assert set(version.json()) == {"version", "git_commit", "build_date"}

    user = (await gateway.call("GET", "/api/v1/auth/current")).json()
    assert {"name", "email", "first_name", "last_name"} <= set(user)
    assert user["name"] == "admin"
    assert user["email"] == "admin@localhost"

    response = await gateway.call("GET", "/api/v1/current_org")
    assert response.status_code == 200
    org = response.json()
    resource_keys = {"uid", "created_at", "updated_at", "deleted_at", "name", "resource_type"}
    assert resource_keys | {"labels", "description"} <= set(org)
    assert org["name"] == "default"
    assert org["resource_type"] == "organization"
    assert org["labels"] == []
    assert org["updated_at"] is None
    assert org["deleted_at"] is None
    assert isinstance(org["description"], str)
    assert aware(org["created_at"]) <= datetime.now(UTC)


# --- refusals -----------------------------------------------------------------------------------


async def test_missing_unknown_revoked_and_expired_tokens_get_a_401_saying_why(
    gateway: Gateway,
) -> None:
    missing = await gateway.client.get("/api/v1/auth/current")
    assert_error(missing, 401, "missing API token", TOKEN)
    assert missing.json()["error"]["code"] == "unauthorized"

    for bad in ("nonsense", "ekb_" + "A" * 43, gateway.admin_token[:-1] + "?"):
        assert_error(
            await gateway.call("GET", "/api/v1/current_org", bad), 401, "invalid API token"
        )

    revoked = await gateway.new_token("short-lived")
    deleted = await gateway.call("DELETE", f"/api/v1/api_tokens/{revoked['uid']}")
    assert deleted.status_code == 200
    assert_error(
        await gateway.call("GET", "/api/v1/auth/current", revoked["token"]),
        401,
        "API token 'short-lived' was revoked on ",
    )

    expiring = await gateway.new_token("expiring", expired_at="2999-01-01 00:00:00.000000")
    await gateway.pool.execute(
        "UPDATE api_tokens SET expired_at = now() - interval '1 second' WHERE uid = $1",
        expiring["uid"],
    )
    message = assert_error(
        await gateway.call("GET", "/api/v1/current_org", expiring["token"]),
        401,
        "API token 'expiring' expired on ",
    )
    assert message.endswith("Z")


async def test_a_token_acts_only_in_its_own_organization(gateway: Gateway) -> None:
    # Another organization with its own admin and token, made as an operator would.
    async with gateway.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO organizations (name) VALUES ('acme') RETURNING id, uid, name,"
            " description, created_at, updated_at"
        )
        assert row is not None
        acme = models.Organization(**dict(row))
        await conn.execute("INSERT INTO users (name) VALUES ('wile')")
        member = await identity.add_members(conn, acme, ["wile"], models.Role.ADMIN)
        other = await identity.issue_token(conn, organization=acme, user=member[0].user, name="x")

    for headers, params in (
        ({"X-Yatai-Organization": "acme"}, {}),
        ({}, {"organization_name": "acme"}),
        ({}, {"organization_name": "nowhere"}),
    ):
        refused = await gateway.call("GET", "/api/v1/current_org", headers=headers, params=params)
        assert_error(refused, 403, "API token belongs to organization 'default'")
    # Naming its own organization, or none (the client sends empty parameters), is fine.
    for params in ({"organization_name": "default"}, {"organization_name": ""}):
        assert (await gateway.call("GET", "/api/v1/current_org", params=params)).status_code == 200

    acme_token = other.secret
    assert_error(
        await gateway.call(
            "GET", "/api/v1/members", acme_token, headers={"X-Yatai-Organization": "default"}
        ),
        403,
        "API token belongs to organization 'acme', not 'default'",
    )
    assert (await gateway.call("GET", "/api/v1/current_org", acme_token)).json()["name"] == "acme"
    # default's tokens do not exist as far as acme is concerned.
    bootstrap_uid = await gateway.pool.fetchval(
        "SELECT uid FROM api_tokens WHERE name = 'bootstrap'"
    )
    missing = await gateway.call("GET", f"/api/v1/api_tokens/{bootstrap_uid}", acme_token)
    assert_error(missing, 404, "not found")
    members = (await gateway.call("GET", "/api/v1/members", acme_token)).json()
    assert [m["user"]["name"] for m in members] == ["wile"]


async def test_a_guest_reads_but_changes_nothing(gateway: Gateway) -> None:
    created = await gateway.call(
        "POST",
        "/api/v1/users",
        json={"name": "gail", "email": "gail@example.com", "first_name": "Gail", "role": "guest"},
    )
    assert created.status_code == 200, created.text
    assert created.json()["first_name"] == "Gail"
    issued = await gateway.call(
        "POST", "/api/ekiben/v1/users/gail/api_tokens", json={"name": "laptop"}
    )
    assert issued.status_code == 200, issued.text
    guest = issued.json()["token"]
    assert issued.json()["user"]["name"] == "gail"

    me = await gateway.call("GET", "/api/v1/auth/current", guest)
    assert me.json()["email"] == "gail@example.com"
    assert (await gateway.call("GET", "/api/v1/members", guest)).status_code == 200
    audit_before = await gateway.count("audit_log")
    tokens_before = await gateway.count("api_tokens")

    refusals = [
        await gateway.call("POST", "/api/v1/api_tokens", guest, json={"name": "more"}),
        await gateway.call(
            "POST", "/api/v1/members", guest, json={"usernames": ["gail"], "role": "admin"}
        ),
        await gateway.call("POST", "/api/v1/users", guest, json={"name": "eve"}),
        await gateway.call("GET", "/api/ekiben/v1/audit", guest),
    ]
    assert_error(refusals[0], 403, "needs the developer role", "'gail' is a guest (read-only)")
    for refused in refusals[1:]:
        assert_error(refused, 403, "needs the admin role")
    assert await gateway.count("audit_log") == audit_before
    assert await gateway.count("api_tokens") == tokens_before
    assert await gateway.count("users") == 2


async def test_members_and_users_changes_are_all_or_nothing(gateway: Gateway) -> None:
    user = await gateway.call("POST", "/api/v1/users", json={"name": "dev", "role": "developer"})
    assert user.status_code == 200, user.text
    duplicate = await gateway.call("POST", "/api/v1/users", json={"name": "dev"})
    assert_error(duplicate, 409, "already exists")
    assert_error(
        await gateway.call("POST", "/api/v1/users", json={"name": "Not Valid"}),
        422,
        "invalid user name",
    )

    members_before = await gateway.count("members")
    unknown = await gateway.call(
        "POST", "/api/v1/members", json={"usernames": ["dev", "ghost"], "role": "admin"}
    )
    assert_error(unknown, 422, "unknown user(s): ghost")
    last_admin = await gateway.call(
        "POST", "/api/v1/members", json={"usernames": ["admin"], "role": "guest"}
    )
    assert_error(last_admin, 409, "at least one admin")
    roles = dict(
        await gateway.pool.fetch(
            "SELECT u.name, m.role FROM members m JOIN users u ON u.id = m.user_id"
        )
    )
    assert roles == {"admin": "admin", "dev": "developer"}
    assert await gateway.count("members") == members_before

    promoted = await gateway.call(
        "POST", "/api/v1/members", json={"usernames": ["dev"], "role": "admin"}
    )
    assert promoted.status_code == 200
    assert [(m["user"]["name"], m["role"]) for m in promoted.json()] == [("dev", "admin")]
    listed = (await gateway.call("GET", "/api/v1/users", params={"start": "", "count": ""})).json()
    assert (listed["start"], listed["count"], listed["total"]) == (0, 20, 2)
    assert [u["name"] for u in listed["items"]] == ["admin", "dev"]


# --- tokens -------------------------------------------------------------------------------------


async def test_a_token_secret_is_shown_once_and_stored_only_as_a_hash(gateway: Gateway) -> None:
    expiry = (datetime.now(UTC) + timedelta(days=30)).replace(tzinfo=None)
    created = await gateway.new_token(
        "ci",
        description="for CI",
        scopes=["api"],
        # The bentoml client's format: naive local time, read as UTC.
        expired_at=expiry.strftime("%Y-%m-%d %H:%M:%S.%f"),
    )
    secret = created["token"]
    assert secret.startswith("ekb_")
    assert len(secret) == models.TOKEN_LENGTH
    assert aware(created["expired_at"]) == expiry.replace(tzinfo=UTC)
    assert created["token_prefix"] == secret[:10]
    assert created["scopes"] == ["api"]
    assert created["is_expired"] is False
    assert created["user"]["name"] == "admin"
    assert created["organization"]["name"] == "default"
    assert created["resource_type"] == "api_token"
    assert created["labels"] == []

    listed = await gateway.call("GET", "/api/v1/api_tokens", params={"start": "0", "count": "100"})
    page = listed.json()
    assert (page["start"], page["count"], page["total"]) == (0, 100, 2)
    assert [t["name"] for t in page["items"]] == ["ci", "bootstrap"]  # newest first
    fetched = await gateway.call("GET", f"/api/v1/api_tokens/{created['uid']}")
    assert fetched.status_code == 200
    for shown in (*page["items"], fetched.json()):
        assert "token" not in shown
        assert secret not in json.dumps(shown)
    searched = await gateway.call("GET", "/api/v1/api_tokens", params={"search": "C"})
    assert [t["name"] for t in searched.json()["items"]] == ["ci"]

    # Nowhere in the database, in any column of any identity table, is the secret.
    for table in ("api_tokens", "audit_log", "users", "organizations", "members"):
        dump = await gateway.pool.fetchval(
            f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} t"
        )
        assert secret not in dump, table
        assert secret[4:] not in dump, table
    stored = await gateway.pool.fetchval(
        "SELECT token_hash FROM api_tokens WHERE uid = $1", created["uid"]
    )
    assert stored == hashlib.sha256(secret.encode()).digest()

    # Bad input: each a clear 4xx, and no row written.
    before = await gateway.count("api_tokens")
    assert_error(
        await gateway.call(
            "POST",
            "/api/v1/api_tokens",
            json={"name": "old", "expired_at": "2001-01-01 00:00:00.000000"},
        ),
        422,
        "is in the past",
    )
    assert_error(
        await gateway.call("POST", "/api/v1/api_tokens", json={"name": "x", "scopes": ["root"]}),
        422,
        "unknown scope(s) root",
    )
    duplicate = await gateway.call("POST", "/api/v1/api_tokens", json={"name": "ci"})
    assert_error(duplicate, 409, "already has an API token named 'ci'")
    assert await gateway.count("api_tokens") == before

    # Deleting revokes: 200 with the token, then gone from lists and lookups; the name is free.
    deleted = await gateway.call("DELETE", f"/api/v1/api_tokens/{created['uid']}")
    assert deleted.status_code == 200
    assert deleted.json()["deleted_at"] is not None
    assert_error(await gateway.call("GET", f"/api/v1/api_tokens/{created['uid']}"), 404)
    assert_error(await gateway.call("DELETE", f"/api/v1/api_tokens/{created['uid']}"), 404)
    assert [
        t["name"] for t in (await gateway.call("GET", "/api/v1/api_tokens")).json()["items"]
    ] == ["bootstrap"]
    assert (await gateway.new_token("ci"))["name"] == "ci"


async def test_a_narrow_token_cannot_mint_a_broad_one(gateway: Gateway) -> None:
    reader = await gateway.new_token("reader", scopes=["read_organization"])
    assert (await gateway.call("GET", "/api/v1/members", reader["token"])).status_code == 200
    assert_error(
        await gateway.call("POST", "/api/v1/api_tokens", reader["token"], json={"name": "y"}),
        403,
        "needs one of the scopes",
    )
    writer = await gateway.new_token("writer", scopes=["write_organization"])
    broad = await gateway.call("POST", "/api/v1/api_tokens", writer["token"], json={"name": "z"})
    assert_error(broad, 403, "can only issue tokens with its own scopes")
    narrow = await gateway.new_token("z", writer["token"], scopes=["write_organization"])
    assert narrow["scopes"] == ["write_organization"]
    # Admin-only calls need an operate scope even from an admin's token.
    assert_error(await gateway.call("GET", "/api/ekiben/v1/audit", writer["token"]), 403)


async def test_last_used_at_is_recorded_at_most_once_a_minute(gateway: Gateway) -> None:
    created = await gateway.new_token("used")
    uid = created["uid"]
    assert created["last_used_at"] is None

    async def last_used() -> datetime | None:
        response = await gateway.call("GET", f"/api/v1/api_tokens/{uid}")
        value = response.json()["last_used_at"]
        return aware(value) if value else None

    assert await last_used() is None
    assert (await gateway.call("GET", "/api/v1/auth/current", created["token"])).status_code == 200
    first = await last_used()
    assert first is not None
    assert (await gateway.call("GET", "/api/v1/current_org", created["token"])).status_code == 200
    assert await last_used() == first  # within the minute: no write

    await gateway.pool.execute(
        "UPDATE api_tokens SET last_used_at = last_used_at - interval '2 minutes' WHERE uid = $1",
        uid,
    )
    # Two minutes "passed" in the database; in this process the verified token is cached for
    # a few seconds, so let those pass too.
    gateway.app.state.token_cache = TokenCache()
    assert (await gateway.call("GET", "/api/v1/current_org", created["token"])).status_code == 200
    later = await last_used()
    assert later is not None
    assert later > first - timedelta(minutes=2)


# --- audit --------------------------------------------------------------------------------------


async def test_changes_leave_audit_records_listed_newest_first(gateway: Gateway) -> None:
    created = await gateway.new_token("audited", headers={"X-Request-Id": "req-create"})
    deleted = await gateway.call(
        "DELETE", f"/api/v1/api_tokens/{created['uid']}", headers={"X-Request-Id": "req-delete"}
    )
    assert deleted.status_code == 200

    response = await gateway.call("GET", "/api/ekiben/v1/audit")
    assert response.status_code == 200
    page = response.json()
    assert page["total"] == 3
    revoked, issued, bootstrapped = page["items"]
    assert revoked["action"] == "api_token.revoked"
    assert revoked["request_id"] == "req-delete"
    assert issued["action"] == "api_token.created"
    assert issued["request_id"] == "req-create"
    for record in (revoked, issued):
        assert record["actor"] == "admin"
        assert record["token_name"] == "bootstrap"
        assert record["organization"] == "default"
        assert record["resource_type"] == "api_token"
        assert record["resource"] == "audited"
        assert record["details"]["uid"] == created["uid"]
    assert aware(revoked["at"]) >= aware(issued["at"])
    assert bootstrapped["action"] == "organization.bootstrapped"
    assert bootstrapped["actor"] == "system:bootstrap"
    assert bootstrapped["request_id"] is None

    only = await gateway.call(
        "GET", "/api/ekiben/v1/audit", params={"action": "api_token.created", "count": "1"}
    )
    assert [r["request_id"] for r in only.json()["items"]] == ["req-create"]
    assert only.json()["total"] == 1
    by_actor = await gateway.call(
        "GET", "/api/ekiben/v1/audit", params={"actor": "system:bootstrap"}
    )
    assert [r["action"] for r in by_actor.json()["items"]] == ["organization.bootstrapped"]
    by_type = await gateway.call(
        "GET", "/api/ekiben/v1/audit", params={"resource_type": "api_token", "actor": "admin"}
    )
    assert [r["action"] for r in by_type.json()["items"]] == [
        "api_token.revoked",
        "api_token.created",
    ]
    none = await gateway.call("GET", "/api/ekiben/v1/audit", params={"resource_type": "bento"})
    assert none.json()["total"] == 0
    assert_error(
        await gateway.call("GET", "/api/ekiben/v1/audit", params={"count": "many"}),
        422,
        "count: expected an integer",
    )


# --- the operator's command ---------------------------------------------------------------------


def ekiben(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EKIBEN_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60,
        check=False, input=stdin,
    )  # fmt: skip


async def test_token_create_prints_one_working_admin_token(
    pg_dsn: str, nats_url: str, tmp_path: Path
) -> None:
    # The database of a stack running on --data-dir, as `ekiben up` describes it.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "stack.json").write_text(json.dumps({"postgres_dsn": pg_dsn}))

    made = await asyncio.to_thread(
        ekiben, "token", "create", "--name", "ops", "--data-dir", str(data_dir),
        "--expires-in-days", "7",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert len(lines) == 1
    assert made.stdout == lines[0] + "\n"
    secret = lines[0]
    assert secret.startswith("ekb_")

    # Run side by side: a repeated name, the database from the gateway's own setting (no
    # stack.json on that --data-dir), and a database that does not answer.
    again, other, unreachable = await asyncio.gather(
        asyncio.to_thread(ekiben, "token", "create", "--name", "ops", "--data-dir", str(data_dir)),
        asyncio.to_thread(
            ekiben, "token", "create", "--name", "ops2", "--scope", "read_organization",
            "--data-dir", str(tmp_path / "elsewhere"),
            env={"EKIBEN_GATEWAY_POSTGRES__DSN": pg_dsn},
        ),
        asyncio.to_thread(
            ekiben, "token", "create", "--name", "x", "--data-dir", str(tmp_path / "nowhere"),
            env={"EKIBEN_GATEWAY_POSTGRES__DSN": "postgresql://nobody@127.0.0.1:1/none"},
        ),
    )  # fmt: skip
    assert again.returncode == 1
    assert again.stdout == ""
    assert "already has an API token named 'ops'" in again.stderr
    assert other.returncode == 0, other.stderr
    narrow = other.stdout.strip()
    assert unreachable.returncode == 1
    assert unreachable.stdout == ""
    assert "cannot use the gateway database" in unreachable.stderr

    token_file = tmp_path / "admin-token"
    app = create_app(gateway_settings(nats_url, pg_dsn, token_file))
    runtime: BackendRuntime = app.state.runtime
    async with runtime.running():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            me = await client.get("/api/v1/auth/current", headers={TOKEN: secret})
            assert me.status_code == 200, me.text
            assert me.json()["name"] == "admin"
            tokens = await client.get("/api/v1/api_tokens", headers={TOKEN: secret})
            ops = {t["name"]: t for t in tokens.json()["items"]}
            assert set(ops) == {"ops", "ops2"}
            assert ops["ops2"]["scopes"] == ["read_organization"]
            expires = aware(ops["ops"]["expired_at"]) - datetime.now(UTC)
            assert timedelta(days=6) < expires <= timedelta(days=7)
            audit = await client.get("/api/ekiben/v1/audit", headers={TOKEN: secret})
            assert [r["actor"] for r in audit.json()["items"]] == ["system:cli", "system:cli"]
            refused = await client.post(
                "/api/v1/api_tokens", headers={TOKEN: narrow}, json={"name": "n"}
            )
            assert refused.status_code == 403
    # The command made the admin, so the first start had nothing to bootstrap.
    assert not token_file.exists()
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM gateway.users") == 1
    finally:
        await conn.close()


async def test_a_revoked_token_is_refused_on_the_very_next_call(gateway: Gateway) -> None:
    # A cache that would keep a verified token for five minutes: only the revocation's
    # eviction (TokenCache.forget) can make the next call fail.
    gateway.app.state.token_cache = TokenCache(ttl=300)
    created = await gateway.new_token("short-lived")
    secret = created["token"]
    assert (await gateway.call("GET", "/api/v1/auth/current", secret)).status_code == 200
    assert (await gateway.call("GET", "/api/v1/current_org", secret)).status_code == 200

    revoked = await gateway.call("DELETE", f"/api/v1/api_tokens/{created['uid']}")
    assert revoked.status_code == 200
    assert_error(
        await gateway.call("GET", "/api/v1/auth/current", secret), 401, "'short-lived' was revoked"
    )
    # The admin's own token, cached the same way, is untouched by the eviction.
    assert (await gateway.call("GET", "/api/v1/auth/current")).status_code == 200
