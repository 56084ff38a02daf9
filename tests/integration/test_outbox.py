"""The outbox end to end: PostgreSQL -> relay -> JetStream -> durable consumer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import nats
import pytest

from shared.bus import Delivery
from shared.events import AnyEvent, ArtifactRef, BentoPushed, subject_for
from shared.outbox import OutboxRelay, processed_once, write_event
from shared.service import BackendRuntime
from tests.fixtures.events import stored_messages
from tests.fixtures.runtime import probe_settings

HERE = Path(__file__).parent


def pushed(version: str) -> BentoPushed:
    return BentoPushed(
        source="/ekiben/test",
        subject=f"bentos/default/iris:{version}",
        data={
            "artifact": ArtifactRef(organization="default", name="iris", version=version),
            "size_bytes": 10,
            "object_key": f"bentos/iris/{version}.bento",
        },
    )


async def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def stream_messages(nats_url: str) -> list[str]:
    """The event ids stored in the events stream, in order."""
    return [(msg.headers or {}).get("Nats-Msg-Id", "") for msg in await stored_messages(nats_url)]


def recording_runtime(nats_url: str, pg_dsn: str) -> tuple[BackendRuntime, Counter[str]]:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)
    effects: Counter[str] = Counter()

    async def apply(event: AnyEvent, delivery: Delivery) -> None:
        async with runtime.pool.acquire() as conn, conn.transaction():
            if await processed_once(conn, "probe-effects", event.id):
                effects[event.id] += 1

    runtime.subscribe(consumer="probe-effects", handler=apply, events=[BentoPushed])
    return runtime, effects


async def test_committed_event_reaches_consumer_once_and_rolled_back_never(
    nats_url: str, pg_dsn: str
) -> None:
    runtime, effects = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        rolled_back, committed = pushed("v1"), pushed("v2")

        async def write_then_fail() -> None:
            async with runtime.pool.acquire() as conn, conn.transaction():
                await write_event(conn, rolled_back)
                raise RuntimeError("abort")

        with pytest.raises(RuntimeError, match="abort"):
            await write_then_fail()
        async with runtime.pool.acquire() as conn, conn.transaction():
            await write_event(conn, committed)

        await wait_for(lambda: committed.id in effects)
        await asyncio.sleep(0.5)  # room for a wrong second delivery to show up
        assert effects == Counter({committed.id: 1})
        assert await stream_messages(nats_url) == [committed.id]
        unpublished = await runtime.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        assert unpublished == 0


async def test_write_event_refuses_to_run_outside_a_transaction(nats_url: str, pg_dsn: str) -> None:
    runtime, _ = recording_runtime(nats_url, pg_dsn)
    async with runtime.running(), runtime.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await write_event(conn, pushed("v1"))


async def test_relay_killed_between_publish_and_mark_republishes_once(
    nats_url: str, pg_dsn: str
) -> None:
    runtime, effects = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        # The in-process relay stays out of the way while a crashing one runs.
        assert runtime.relay is not None
        await runtime.relay.stop()
        event = pushed("v1")
        async with runtime.pool.acquire() as conn, conn.transaction():
            await write_event(conn, event)

        # A relay in another process publishes the row, then is SIGKILLed before marking it.
        crashed = subprocess.run(
            [sys.executable, str(HERE / "relay_crash.py"), nats_url, pg_dsn, "probe"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
            check=False,
        )
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        row = await runtime.pool.fetchrow("SELECT published_at FROM outbox")
        assert row is not None
        assert row["published_at"] is None, "the crash happened before the row was marked"
        await wait_for(lambda: event.id in effects)

        # A restarted relay publishes the same row again; JetStream drops the duplicate.
        restarted = OutboxRelay(runtime.pool, runtime.broker, schema="probe")
        assert await restarted.drain_once() == 1
        await asyncio.sleep(0.5)
        assert await stream_messages(nats_url) == [event.id]
        assert effects == Counter({event.id: 1})
        assert await runtime.pool.fetchval("SELECT published_at IS NOT NULL FROM outbox")


async def test_redelivered_event_has_no_second_effect(nats_url: str, pg_dsn: str) -> None:
    """Even past the duplicate window, a second copy of an event changes nothing."""
    runtime, effects = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        event = pushed("v1")
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            body = event.model_dump_json().encode()
            # Different message ids: JetStream stores both, only the consumer can dedupe.
            await js.publish(subject_for(event.type), body, headers={"Nats-Msg-Id": "a"})
            await js.publish(subject_for(event.type), body, headers={"Nats-Msg-Id": "b"})
        finally:
            await nc.close()
        await wait_for(lambda: event.id in effects)
        await asyncio.sleep(0.5)
        assert effects == Counter({event.id: 1})
        async with runtime.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM processed_events") == 1


async def test_two_relays_publish_each_event_once_in_order(nats_url: str, pg_dsn: str) -> None:
    runtime, effects = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        second = OutboxRelay(runtime.pool, runtime.broker, schema="probe")
        await second.start()
        try:
            events = [pushed(f"v{i}") for i in range(50)]
            for event in events:
                async with runtime.pool.acquire() as conn, conn.transaction():
                    await write_event(conn, event)
            await wait_for(lambda: len(effects) == 50)
        finally:
            await second.stop()
        assert await stream_messages(nats_url) == [e.id for e in events]
        assert set(effects.values()) == {1}


async def test_relay_wakes_on_notify_not_on_poll(nats_url: str, pg_dsn: str) -> None:
    """The safety poll is 5 s; an event still arrives in well under a second."""
    runtime, effects = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        await asyncio.sleep(0.3)  # the relay is idle, waiting
        event = pushed("v1")
        start = asyncio.get_running_loop().time()
        async with runtime.pool.acquire() as conn, conn.transaction():
            await write_event(conn, event)
        await wait_for(lambda: event.id in effects, timeout=4.0)
        assert asyncio.get_running_loop().time() - start < 2.0


async def test_outbox_survives_relay_restart_with_rows_waiting(nats_url: str, pg_dsn: str) -> None:
    """Rows written while no relay runs go out when one starts."""
    settings = probe_settings(nats_url, pg_dsn)
    runtime, effects = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        assert runtime.relay is not None
        await runtime.relay.stop()
        events = [pushed(f"v{i}") for i in range(3)]
        async with runtime.pool.acquire() as conn, conn.transaction():
            for event in events:
                await write_event(conn, event)
        await asyncio.sleep(0.3)
        assert not effects
        await runtime.relay.start()
        await wait_for(lambda: len(effects) == 3)
    conn2 = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        assert (
            await conn2.fetchval("SELECT count(*) FROM probe.outbox WHERE published_at IS NULL")
            == 0
        )
    finally:
        await conn2.close()


async def test_published_rows_and_processed_records_are_pruned_after_the_retention(
    nats_url: str, pg_dsn: str
) -> None:
    runtime, _ = recording_runtime(nats_url, pg_dsn)
    async with runtime.running():
        pool = runtime.pool
        async with pool.acquire() as conn, conn.transaction():
            for version in ("old", "new", "unsent"):
                await write_event(conn, pushed(version))
        # Wait until the relay has published them, then age two of the rows by a fortnight
        # and hold one back as if never published.
        for _ in range(200):
            if not await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                break
            await asyncio.sleep(0.05)
        await pool.execute(
            """UPDATE outbox SET published_at = now() - interval '14 days'
               WHERE payload->'data'->'artifact'->>'version' = 'old'"""
        )
        await pool.execute(
            """UPDATE outbox SET published_at = NULL
               WHERE payload->'data'->'artifact'->>'version' = 'unsent'"""
        )
        await pool.execute(
            """INSERT INTO processed_events (consumer, event_id, processed_at)
               VALUES ('c', 'ancient', now() - interval '14 days'), ('c', 'recent', now())"""
        )
        relay = OutboxRelay(pool, runtime.broker, schema="probe", retention_seconds=7 * 24 * 3600)
        removed = await relay.prune()
        assert removed == 2
        versions = await pool.fetch(
            "SELECT payload->'data'->'artifact'->>'version' AS v FROM outbox ORDER BY id"
        )
        # The unpublished row stays whatever its age: only published rows are pruned.
        assert [row["v"] for row in versions] == ["new", "unsent"]
        kept = await pool.fetch("SELECT event_id FROM processed_events WHERE consumer = 'c'")
        assert [row["event_id"] for row in kept] == ["recent"]


async def test_processed_first_time_is_processed_once_for_a_batch(
    nats_url: str, pg_dsn: str
) -> None:
    from shared.outbox import processed_first_time  # noqa: PLC0415

    runtime, _ = recording_runtime(nats_url, pg_dsn)
    async with runtime.running(), runtime.pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await processed_first_time(conn, "c", ["a"])
        async with conn.transaction():
            assert await processed_first_time(conn, "c", ["a", "b"]) == {"a", "b"}
        async with conn.transaction():
            assert await processed_first_time(conn, "c", ["b", "c", "c"]) == {"c"}
            assert not await processed_once(conn, "c", "a")
        async with conn.transaction():
            assert await processed_first_time(conn, "other", ["a"]) == {"a"}
