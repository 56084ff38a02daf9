"""The test harness: real NATS (JetStream), PostgreSQL and SeaweedFS on loopback.

Each server starts once per session on free ports under pytest's temporary directory and
is torn down by PID at the end. Tests are isolated from each other: each gets a fresh
PostgreSQL database (`pg_dsn`) and empty JetStream streams (`nats_url`). When a server
cannot start, tests that need it skip, or fail when EKIBEN_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.js.errors import NotFoundError

from shared.contracts.deployer import CLUSTER_BUCKET
from shared.devstack.process import StartupError
from shared.devstack.servers import (
    RunningServer,
    S3Server,
    start_nats,
    start_postgres,
    start_seaweedfs,
)
from shared.events import DLQ_STREAM, EVENT_STREAM
from tests.fixtures.report import report
from tests.fixtures.require import unavailable


@pytest.fixture(scope="session")
def nats_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[RunningServer]:
    try:
        server = start_nats(tmp_path_factory.mktemp("nats"))
    except StartupError as exc:
        unavailable(f"NATS did not start: {exc}")
    report(pytestconfig, f"nats {server.url} ready in {server.started_in:.2f}s")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[RunningServer]:
    # Not under pytest's own temporary tree: as root, PostgreSQL runs as another account,
    # and every pytest session resets that tree to mode 0700, which would lock it out.
    data_dir = Path(tempfile.mkdtemp(prefix="ekiben-test-pg-"))
    try:
        server = start_postgres(data_dir, durable=False)
    except StartupError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        unavailable(f"PostgreSQL did not start: {exc}")
    report(pytestconfig, f"postgres {server.url} ready in {server.started_in:.2f}s")
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[S3Server]:
    try:
        server = start_seaweedfs(tmp_path_factory.mktemp("s3"))
    except StartupError as exc:
        unavailable(f"SeaweedFS did not start: {exc}")
    report(pytestconfig, f"s3 {server.url} ready in {server.started_in:.2f}s")
    yield server
    server.stop()


@pytest.fixture
async def pg_dsn(postgres_server: RunningServer) -> AsyncIterator[str]:
    """A fresh, empty database for this test; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield postgres_server.url.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(postgres_server.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def nats_url(nats_server: RunningServer) -> str:
    """The NATS server with Ekiben's streams (and their consumers) removed."""
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        # The deployers' cluster directory is a key-value bucket (a stream underneath).
        for stream in (EVENT_STREAM, DLQ_STREAM, f"KV_{CLUSTER_BUCKET}"):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()
    return nats_server.url


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = set(asyncio.all_tasks())
    yield
    for _ in range(40):
        leaked = {t for t in asyncio.all_tasks() - before if not t.done()}
        leaked.discard(asyncio.current_task())
        if not leaked:
            return
        await asyncio.sleep(0.05)
    names = sorted(t.get_name() + ": " + repr(t.get_coro()) for t in leaked)
    pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")
