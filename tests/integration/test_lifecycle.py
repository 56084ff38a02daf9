"""A service's lifecycle: nothing served before what it needs exists, a clean reverse stop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from structlog.testing import capture_logs

from services.registry.app import create_runtime
from shared.contracts import registry as reg
from shared.devstack.servers import S3Server
from shared.errors import EkibenError
from shared.service import BackendRuntime, hooks
from tests.fixtures.runtime import probe_settings
from tests.fixtures.stack import registry_settings

SCOPE = reg.Scope(organization="default", actor="alice")
REF = reg.VersionRef(scope=SCOPE, kind=reg.Kind.BENTO, repository="iris", version="v1")


async def test_a_command_sent_while_a_replica_starts_is_answered_correctly_or_not_at_all(
    nats_url: str, pg_dsn: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = registry_settings(nats_url, pg_dsn, s3_server)
    # A version to presign an upload for: presigning needs the S3 client.
    first, _ = create_runtime(settings)
    async with first.running():
        await first.rpc.call(
            reg.CREATE_REPOSITORY,
            reg.CreateRepository(scope=SCOPE, kind=reg.Kind.BENTO, name="iris"),
        )
        await first.rpc.call(
            reg.CREATE_VERSION,
            reg.CreateVersion(scope=SCOPE, kind=reg.Kind.BENTO, repository="iris", version="v1"),
        )

    # A second replica whose object store takes a while to open.
    replica, blobs = create_runtime(settings)
    opened = asyncio.Event()
    gate = asyncio.Event()
    original = type(blobs).__aenter__

    async def slow_open(self: Any) -> Any:
        await gate.wait()
        result = await original(self)
        opened.set()
        return result

    monkeypatch.setattr(type(blobs), "__aenter__", slow_open)
    outcomes: list[str] = []
    stop_calling = asyncio.Event()

    async def keep_calling(caller: BackendRuntime) -> None:
        while not stop_calling.is_set():
            try:
                signed = await caller.rpc.call(reg.PRESIGN_UPLOAD, REF, timeout=0.5)
            except EkibenError as exc:
                outcomes.append(exc.code)
            else:
                assert signed.url.startswith("http")
                outcomes.append("ok")
            await asyncio.sleep(0.02)

    probe = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)
    async with probe.running():
        caller = asyncio.create_task(keep_calling(probe))
        async with contextlib.AsyncExitStack() as stack:
            starting = asyncio.create_task(stack.enter_async_context(replica.running()))
            await asyncio.sleep(1.0)  # the replica is connected, its store not yet open
            assert not starting.done()
            gate.set()
            await asyncio.wait_for(starting, 30)
            assert opened.is_set()
            for _ in range(200):
                if "ok" in outcomes:
                    break
                await asyncio.sleep(0.05)
            stop_calling.set()
            await caller
    # No answer at all while it started (no responder yet), then correct answers; never an
    # internal error from a handler whose S3 client did not exist yet.
    assert "unavailable" in outcomes
    assert "ok" in outcomes
    assert set(outcomes) <= {"unavailable", "ok"}, outcomes


class Recorder(contextlib.AbstractAsyncContextManager[None]):
    def __init__(self, name: str, log: list[str], *, fail_on_exit: bool = False) -> None:
        self.name, self.log, self.fail = name, log, fail_on_exit

    async def __aenter__(self) -> None:
        self.log.append(f"enter {self.name}")

    async def __aexit__(self, *exc: object) -> None:
        self.log.append(f"exit {self.name}")
        if self.fail:
            raise RuntimeError(f"{self.name} could not close")


async def test_resources_open_in_order_close_in_reverse_and_a_failing_stop_is_logged(
    nats_url: str, pg_dsn: str
) -> None:
    order: list[str] = []
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)
    runtime.resource(Recorder("store", order))
    runtime.resource(Recorder("janitor", order, fail_on_exit=True))
    runtime.resource(hooks(start=_noted(order, "start hook"), stop=_noted(order, "stop hook")))
    with capture_logs() as logs:
        async with runtime.running():
            assert order == ["enter store", "enter janitor", "start hook"]
    assert order[3:] == ["stop hook", "exit janitor", "exit store"]
    failed = [entry for entry in logs if entry["event"] == "service.resource_stop_failed"]
    assert len(failed) == 1
    assert "janitor" in failed[0]["resource"] or failed[0]["exc_info"]


def _noted(order: list[str], what: str) -> Any:
    async def note() -> None:
        order.append(what)

    return note
