"""The dashboard's HTTP side against a real gateway (served over loopback): cookies, CSRF,
redirects, the relayed event stream. The browser tests (tests/browser) cover the pages."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import nats
import pytest

from services.dashboard.adapters.gateway import SESSION_HEADER
from services.dashboard.app import create_app
from services.dashboard.settings import DashboardSettings
from shared.bus.rpc import RpcServer
from shared.contracts import builder
from shared.contracts.vocabulary import BuildStatus
from shared.devstack.servers import S3Server
from shared.errors import NotFound
from tests.e2e.test_client_schemas import deployment_body
from tests.fixtures.manifests import bento_manifest
from tests.fixtures.pushing import Recorder, push
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


# --- a build's live log, the deployment page, a guest's view ---------------------------


async def sign_in(client: httpx.AsyncClient, username: str, password: str) -> None:
    csrf = await login_form(client)
    signed = await client.post(
        "/login", data={"csrf": csrf, "username": username, "password": password}
    )
    assert signed.status_code == 303, signed.text


def form_token(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


class LoggingBuilder:
    """The builder's two log commands on the real bus, for one build whose lines the test
    releases one by one: what the gateway's log stream reads while a build runs."""

    def __init__(self) -> None:
        now = datetime.now(UTC)
        self.build = builder.Build(
            id="b-1", organization="default", bento_name="iris", bento_version="v1",
            status=BuildStatus.BUILDING, trigger="push", image_repository="registry.test/iris",
            image_tag="t1", backend="local", namespace="default", created_at=now,
            started_at=now,
        )  # fmt: skip
        self.lines: list[str] = []
        self.finished = False
        self.server = RpcServer()
        self.server.add(builder.GET_BUILD, self.get)
        self.server.add(builder.READ_LOGS, self.read)

    async def get(self, req: builder.GetBuild) -> builder.Build:
        if req.id != self.build.id:
            raise NotFound(f"build {req.id} not found")
        return self.build

    async def read(self, req: builder.ReadLogs) -> builder.BuildLogs:
        lines = [
            builder.LogLine(seq=n, line=text)
            for n, text in enumerate(self.lines, start=1)
            if n > req.after
        ]
        return builder.BuildLogs(build=self.build, lines=lines, finished=self.finished)


async def test_a_builds_log_follows_live_through_the_dashboard_as_plain_text(
    stack: Stack, dashboard: httpx.AsyncClient
) -> None:
    fake = LoggingBuilder()
    nc = await nats.connect(stack.nats_url)
    await fake.server.start(nc)
    try:
        assert (await dashboard.get("/builds/b-1/log")).status_code == 401
        await sign_in(dashboard, "dana", PASSWORD)
        page = await dashboard.get("/builds/b-1")
        assert page.status_code == 200
        assert 'data-build-log data-src="/builds/b-1/log"' in page.text
        assert (await dashboard.get("/builds/nope")).status_code == 404
        missing = await dashboard.get("/builds/nope/log")
        assert missing.status_code == 404
        assert "build nope not found" in missing.text

        fake.lines.append("step 1: <script>alert(1)</script>")
        async with dashboard.stream("GET", "/builds/b-1/log") as log:
            assert log.status_code == 200
            assert log.headers["content-type"].startswith("text/plain")
            chunks = log.aiter_text()
            # The first line arrives while the build still runs: the stream follows it.
            first = await asyncio.wait_for(anext(chunks), 10)
            assert first == "step 1: <script>alert(1)</script>\n"
            fake.lines.append("step 2")
            assert await asyncio.wait_for(anext(chunks), 10) == "step 2\n"
            fake.finished = True
            rest = "".join([chunk async for chunk in chunks])  # ends with the build
            assert rest == ""
        fake.lines.append("step 3")
        whole = await dashboard.get("/builds/b-1/log", params={"follow": "false"})
        assert whole.text.splitlines() == [
            "step 1: <script>alert(1)</script>", "step 2", "step 3",
        ]  # fmt: skip
    finally:
        await fake.server.stop()
        await nc.close()


@pytest.fixture
async def deploying(
    nats_url: str, pg_dsn: str, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Stack]:
    """A stack with a deployer (no Kubernetes side), a bento, a developer and a guest."""
    async with running_stack(
        nats_url, pg_dsn, s3_server, tmp_path / "admin-token", serve_http=True, deployer=True
    ) as running:
        await push(Recorder(running), "bento", "iris", "v1", bento_manifest())
        for name, role in (("dana", "developer"), ("gus", "guest")):
            made = await running.call("POST", "/api/v1/users", json={"name": name, "role": role})
            assert made.status_code == 200, made.text
            done = await running.call(
                "PUT", f"/api/ekiben/v1/users/{name}/password", json={"password": PASSWORD}
            )
            assert done.status_code == 200, done.text
        yield running


async def test_the_deployment_page_round_trips_the_ingress_and_shows_why_events_are_missing(
    deploying: Stack,
) -> None:
    app = create_app(DashboardSettings(gateway_url=deploying.url))
    async with served(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await sign_in(client, "dana", PASSWORD)
        listing = await client.get("/deployments")
        assert 'name="ingress_enabled" type="checkbox" value="1" checked' in listing.text
        fields = {
            "csrf": form_token(listing), "bento": "iris:v1", "name": "iris",
            "ingress_enabled": "1", "ingress_host": "iris.example.com",
            "ingress_tls_secret": "iris-tls",
        }  # fmt: skip
        bad = await client.post("/deployments", data={**fields, "ingress_host": "not a host"})
        assert bad.status_code == 422
        assert "not a valid ingress host" in bad.text
        made = await client.post("/deployments", data=fields)
        assert made.status_code == 303, made.text
        api = await deploying.call("GET", "/api/v2/deployments/iris")
        config = api.json()["latest_revision"]["targets"][0]["config"]
        assert config["ingress"] == {
            "enabled": True, "host": "iris.example.com", "tls_secret_name": "iris-tls",
        }  # fmt: skip
        page = await client.get(made.headers["location"])
        assert page.status_code == 200
        assert 'name="ingress_host" value="iris.example.com"' in page.text
        assert 'name="ingress_tls_secret" value="iris-tls"' in page.text
        # No deployer with a Kubernetes side for the cluster: the page says so and stands.
        assert "Kubernetes events" in page.text
        assert "cannot be read now" in page.text
        # The section the page's script draws again when the deployment changes: the same
        # words, without the page around them, and only for a signed-in viewer.
        section = await client.get("/deployments/default/iris/events")
        assert section.status_code == 200
        assert "cannot be read now" in section.text
        assert "<html" not in section.text
        assert 'data-live-events data-src="/deployments/default/iris/events"' in page.text
        async with httpx.AsyncClient(base_url=url, timeout=30) as stranger:
            refused = await stranger.get("/deployments/default/iris/events")
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/login")
        events = await deploying.call("GET", "/api/ekiben/v1/deployments/iris/events")
        assert events.status_code == 503
        assert "event.list.default" in events.json()["error"]["message"]
        assert (
            await deploying.call("GET", "/api/ekiben/v1/deployments/no/events")
        ).status_code == 404
        too_many = await deploying.call(
            "GET", "/api/ekiben/v1/deployments/iris/events", params={"limit": "0"}
        )
        assert too_many.status_code == 422
        # Edited without the ingress ticked: the new revision has none.
        edit = {**fields, "csrf": form_token(page), "ingress_tls_secret": ""}
        del edit["ingress_enabled"]
        edited = await client.post("/deployments/default/iris", data=edit)
        assert edited.status_code == 303, edited.text
        api = await deploying.call("GET", "/api/v2/deployments/iris")
        config = api.json()["latest_revision"]["targets"][0]["config"]
        assert config["ingress"]["enabled"] is False
    await app.state.http.aclose()


WRITES = ("Terminate", "Roll back", "Delete…", "Edit the deployment", "Deploy this revision")


async def test_a_guest_sees_no_write_buttons_and_the_api_refuses_the_writes(
    deploying: Stack,
) -> None:
    body = deployment_body("iris:v1", "iris") | {"secrets": None}
    assert (await deploying.call("POST", "/api/v2/deployments", json=body)).status_code == 200
    update = await deploying.call("PUT", "/api/v2/deployments/iris", json=body)
    assert update.status_code == 200  # revision 2: a rollback target
    app = create_app(DashboardSettings(gateway_url=deploying.url))
    async with (
        served(app) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as guest,
        httpx.AsyncClient(base_url=url, timeout=30) as developer,
    ):
        await sign_in(developer, "dana", PASSWORD)
        seen = (await developer.get("/deployments/default/iris")).text
        assert all(word in seen for word in WRITES)  # what the guest must not see

        await sign_in(guest, "gus", PASSWORD)
        page = await guest.get("/deployments/default/iris")
        assert page.status_code == 200
        assert '<span class="role">guest</span>' in page.text
        assert [word for word in WRITES if word in page.text] == []
        assert '<form method="post" action="/deployments/default/iris' not in page.text
        # Posted anyway (a forged form, an old tab): the gateway refuses each write.
        csrf = form_token(page)  # the sign-out form's: valid for this session
        for path, extra in [
            ("/deployments/default/iris/terminate", {}),
            ("/deployments/default/iris/rollback", {"revision": "1"}),
            ("/deployments/default/iris/delete", {}),
            ("/deployments/default/iris", {"bento": "iris:v1", "ingress_enabled": "1"}),
        ]:
            refused = await guest.post(path, data={"csrf": csrf, **extra})
            assert refused.status_code == 403, (path, refused.text)
    await app.state.http.aclose()
    # And straight at the API, with a session of the guest's own.
    session = await deploying.client.post(
        "/api/ekiben/v1/sessions", json={"username": "gus", "password": PASSWORD}
    )
    assert session.status_code in (200, 201), session.text
    as_guest = {SESSION_HEADER: session.json()["session"]}
    for method, path, json_body in [
        ("PUT", "/api/v2/deployments/iris", body),
        ("POST", "/api/v2/deployments/iris/terminate", None),
        ("POST", "/api/ekiben/v1/deployments/iris/rollback", {"revision": 1}),
        ("DELETE", "/api/v2/deployments/iris", None),
        ("POST", "/api/v2/deployments", body | {"name": "other"}),
    ]:
        answer = await deploying.client.request(method, path, json=json_body, headers=as_guest)
        assert answer.status_code == 403, (method, path, answer.text)
    still = await deploying.call("GET", "/api/v2/deployments/iris")
    assert still.json()["status"] != "terminated"
    assert still.json()["latest_revision"]["number"] == 2
