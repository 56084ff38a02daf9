"""`ekiben up`: the whole stack starts, is ready, stops cleanly, and keeps its data."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import IO

import aioboto3
import asyncpg
import httpx
import nats
import pytest

from services.stack import Endpoints, Stack, registry_url
from shared.devstack.oci import start_oci_registry
from shared.devstack.process import tcp_open
from shared.events import EVENT_STREAM
from tests.integration.test_outbox import pushed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).parents[2]
# What `ekiben up` prints on stdout once ready, in this order.
URL_LINES = ("gateway", "dashboard", "registry", "kubeconfig")


class Up:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 60.0) -> tuple[dict[str, str], float]:
        begin = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(self.data_dir),
             "--gateway-port", "0", "--dashboard-port", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=self._stderr(), text=True,
            env={**os.environ, **self.env},
        )  # fmt: skip
        urls: dict[str, str] = {}
        assert self.proc.stdout is not None
        while set(urls) != set(URL_LINES):
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=30)
                err = self.stderr_path.read_text()[-3000:]
                raise AssertionError(f"ekiben up exited {self.proc.returncode}:\n{err}")
            self.lines.append(line)
            name, _, url = line.strip().partition(": ")
            if name in URL_LINES:
                urls[name] = url
            assert time.monotonic() - begin < timeout, "not ready in time"
        return urls, time.monotonic() - begin

    @property
    def stderr_path(self) -> Path:
        return self.data_dir.parent / "ekiben-up.stderr"

    def _stderr(self) -> IO[str]:
        # A file, not a pipe nobody reads: a full pipe would block the stack.
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        return self.stderr_path.open("a")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def state(self) -> dict[str, object]:
        state: dict[str, object] = json.loads((self.data_dir / "stack.json").read_text())
        return state


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Outside pytest's temporary tree, which each pytest session resets to mode 0700: as
    # root, the embedded PostgreSQL runs as another account that must reach its files.
    path = Path(tempfile.mkdtemp(prefix="ekiben-test-up-"))
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


async def test_up_starts_ready_stops_cleanly_and_restarts_with_data(
    data_dir: Path, pytestconfig: pytest.Config
) -> None:
    up = Up(data_dir)
    urls, seconds = up.start()
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"ekiben up: ready in {seconds:.1f}s")
    event = pushed("v1")
    try:
        assert [line.partition(":")[0] for line in up.lines] == list(URL_LINES)
        state = up.state()
        service_urls: dict[str, str] = state["urls"]  # type: ignore[assignment]
        assert set(service_urls) == {"registry", "builder", "deployer", "gateway", "dashboard"}
        assert state["registry"] == urls["registry"]
        assert state["registry_url"] == f"http://{urls['registry']}"
        # The embedded control plane: its kubeconfig works for kubectl (and the builder).
        assert state["kubeconfig"] == urls["kubeconfig"]
        assert "current-context" in Path(urls["kubeconfig"]).read_text()
        async with httpx.AsyncClient() as client:
            for name, url in service_urls.items():
                ready = await client.get(f"{url}/readyz")
                assert ready.status_code == 200, (name, ready.text)
            # The OCI registry the builder pushes to answers the distribution API.
            v2 = await client.get(f"http://{urls['registry']}/v2/")
            assert v2.status_code == 200, v2.text
            # The health page is public; every other page asks to sign in first.
            page = await client.get(f"{urls['dashboard']}/health")
            assert page.status_code == 200
            assert page.text.count('<tr class="ready">') == 4
            home = await client.get(urls["dashboard"])
            assert home.status_code == 303
            assert home.headers["location"] == "/login?next=/"

        # Data in all three stores: an event (NATS + the gateway's log in PostgreSQL), a blob.
        nc = await nats.connect(str(state["nats_url"]))
        await nc.jetstream().publish(
            event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
        )
        await nc.close()
        dsn = str(state["postgres_dsn"])
        deadline = time.monotonic() + 10
        while not await _logged(dsn, event.id):
            assert time.monotonic() < deadline, "the gateway did not log the event"
            await asyncio.sleep(0.1)
        async with _s3(str(state["s3_endpoint"])) as s3:
            await s3.put_object(Bucket="ekiben", Key="probe.txt", Body=b"kept")
    finally:
        code = up.stop()
    assert code == 0
    gateway_port = int(urls["gateway"].rsplit(":", 1)[1])
    assert not tcp_open("127.0.0.1", gateway_port)
    assert not (up.data_dir / "stack.json").exists()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(up.data_dir)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == [], "children left running after stop"

    # Restart on the same data directory: everything is still there.
    again = Up(up.data_dir)
    again_urls, _ = again.start()
    try:
        # Image references name the registry's port: it stays the same.
        assert again_urls["registry"] == urls["registry"]
        state = again.state()
        assert await _logged(str(state["postgres_dsn"]), event.id)
        nc = await nats.connect(str(state["nats_url"]))
        info = await nc.jetstream().stream_info(EVENT_STREAM)
        await nc.close()
        assert info.state.messages == 1
        async with _s3(str(state["s3_endpoint"])) as s3:
            body = await (await s3.get_object(Bucket="ekiben", Key="probe.txt"))["Body"].read()
        assert body == b"kept"
    finally:
        assert again.stop() == 0


async def test_up_uses_an_external_registry_when_given_one(data_dir: Path) -> None:
    registry = start_oci_registry(data_dir.parent / "external-registry")
    try:
        up = Up(data_dir, env={"EKIBEN_REGISTRY_URL": registry.host})
        urls, _ = up.start()
        try:
            assert urls["registry"] == registry.host
            assert up.state()["registry_url"] == registry.url
            assert not (data_dir / "oci-registry").exists(), "no embedded registry"
        finally:
            assert up.stop() == 0
    finally:
        registry.stop()


def test_the_builder_is_configured_with_the_registry(tmp_path: Path) -> None:
    """What `ekiben up` hands the builder: push target, layer store, docker.io mirror."""
    stack = Stack(tmp_path, gateway_port=0, dashboard_port=0)
    endpoints = Endpoints(
        "nats://n", "postgresql://p", "http://s3", "a", "s", "b", "http://r:1", "/k/config"
    )
    env, _ = stack.service_environment(endpoints)
    assert env["EKIBEN_BUILDER_KUBE__KUBECONFIG"] == "/k/config"
    assert env["EKIBEN_BUILDER_KUBE__NAMESPACE"] == "ekiben"
    assert env["EKIBEN_BUILDER_BACKEND"] == "local"
    assert env["EKIBEN_BUILDER_REGISTRY__URL"] == "http://r:1"
    assert env["EKIBEN_BUILDER_CONTAINERS__STATE_DIR"] == str(tmp_path / "builder")
    assert json.loads(env["EKIBEN_BUILDER_CONTAINERS__MIRRORS"]) == {"docker.io": ["r:1"]}
    assert registry_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert registry_url("registry.example.com") == "https://registry.example.com"
    assert registry_url("http://10.0.0.1:5000/") == "http://10.0.0.1:5000"


async def _logged(dsn: str, event_id: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval("SELECT 1 FROM gateway.event_log WHERE event_id = $1", event_id)
        )
    finally:
        await conn.close()


def _s3(endpoint: str):  # type: ignore[no-untyped-def]
    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="ekiben",
        aws_secret_access_key="ekiben-secret",
    )


def _differs(read: Callable[[], int], old: int) -> bool:
    return read() != old


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.1)


async def test_a_killed_service_is_restarted_and_one_that_cannot_stay_up_stops_the_stack(
    data_dir: Path,
) -> None:
    up = Up(data_dir)
    urls, _ = up.start()
    token = (data_dir / "admin-token").read_text().strip()

    def said(text: str) -> bool:
        return text in up.stderr_path.read_text()

    def registry_pid() -> int:
        pids: dict[str, int] = up.state()["pids"]  # type: ignore[assignment]
        return pids["registry"]

    try:
        before: dict[str, int] = up.state()["pids"]  # type: ignore[assignment]
        os.kill(before["registry"], signal.SIGKILL)
        _wait_for(lambda: said("registry exited with -9; restarting in 1s (restart 1)"), "notice")
        _wait_for(lambda: said("registry ready again (restart 1)"), "the restarted registry")
        after: dict[str, int] = up.state()["pids"]  # type: ignore[assignment]
        assert after["registry"] != before["registry"]
        assert {n: p for n, p in after.items() if n != "registry"} == {
            n: p for n, p in before.items() if n != "registry"
        }  # nothing else was touched
        # The gateway reaches the new registry: a call that is a registry command.
        async with httpx.AsyncClient(timeout=30) as client:
            listed = await client.get(
                f"{urls['gateway']}/api/v1/bentos", headers={"X-YATAI-API-TOKEN": token}
            )
        assert listed.status_code == 200, listed.text
        assert up.proc is not None
        assert up.proc.poll() is None

        # A service that keeps dying (5 exits within a minute) stops the stack.
        for restart in range(2, 6):
            pid = registry_pid()
            os.kill(pid, signal.SIGKILL)
            if restart < 5:
                notice = f"(restart {restart})\n"
                _wait_for(partial(said, notice), f"restart {restart}")
                _wait_for(partial(_differs, registry_pid, pid), f"registry {restart} started")
        _wait_for(lambda: up.proc is not None and up.proc.poll() is not None, "the stop")
        assert said("registry exited with -9, 5 times within 60s: it cannot stay up")
    finally:
        code = up.stop()
    assert code == 1
    leftovers = subprocess.run(
        ["pgrep", "-f", str(up.data_dir)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == [], "children left running after stop"
