"""Consumers: redelivery after a crash, bounded retries, the dead-letter subject."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import nats
import structlog
from prometheus_client import REGISTRY

from shared.bus import Delivery
from shared.errors import InvalidInput
from shared.events import DLQ_STREAM, AnyEvent, BentoPushed, dlq_subject_for, subject_for
from shared.service import BackendRuntime
from tests.fixtures.events import stored_messages
from tests.fixtures.runtime import probe_settings
from tests.integration.test_outbox import pushed, wait_for

HERE = Path(__file__).parent


async def publish_raw(nats_url: str, subject: str, body: bytes, msg_id: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(subject, body, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def dead_letters(nats_url: str) -> list[tuple[str, dict[str, str], bytes]]:
    return [
        (msg.subject or "", dict(msg.headers or {}), msg.data or b"")
        for msg in await stored_messages(nats_url, DLQ_STREAM)
    ]


def dead_lettered_count(consumer: str, event_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "ekiben_events_dead_lettered_total", {"consumer": consumer, "event_type": event_type}
    )
    return value or 0.0


async def test_consumer_that_crashes_mid_handling_gets_the_message_again(
    nats_url: str, pg_dsn: str
) -> None:
    event = pushed("v1")
    # A consumer process receives the event and dies (SIGKILL) before acking it.
    crashed = subprocess.run(
        [sys.executable, str(HERE / "consumer_crash.py"), nats_url, pg_dsn],
        input=event.model_dump_json(),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(HERE.parents[1])},
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr[-3000:]

    # The same durable consumer, restarted, gets it again once ack_wait has passed.
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn, ack_wait=1.0), migrations_dir=None)
    deliveries: list[tuple[str, int]] = []

    async def handle(received: AnyEvent, delivery: Delivery) -> None:
        deliveries.append((received.id, delivery.attempt))

    runtime.subscribe(consumer="probe-crashy", handler=handle, events=[BentoPushed])
    async with runtime.running():
        await wait_for(lambda: bool(deliveries), timeout=15)
    assert deliveries == [(event.id, 2)]


async def test_poison_message_lands_on_dead_letter_subject_after_max_deliver(
    nats_url: str, pg_dsn: str
) -> None:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn, max_deliver=3), migrations_dir=None)
    attempts: list[int] = []

    async def always_fails(event: AnyEvent, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("cannot handle this one")

    runtime.subscribe(consumer="probe-poison", handler=always_fails, events=[BentoPushed])
    event = pushed("v1")
    before = dead_lettered_count("probe-poison", "bento.pushed")
    with structlog.testing.capture_logs() as logs:
        async with runtime.running():
            await publish_raw(
                nats_url, subject_for(event.type), event.model_dump_json().encode(), event.id
            )
            await wait_for(lambda: any(e["event"] == "bus.consumer.dead_lettered" for e in logs))
            await asyncio.sleep(0.3)  # no fourth attempt may follow

    assert attempts == [1, 2, 3]
    [(subject, headers, body)] = await dead_letters(nats_url)
    assert subject == dlq_subject_for("probe-poison", "bento.pushed")
    assert headers["Ekiben-Dlq-Reason"] == "max_deliver"
    assert headers["Ekiben-Dlq-Attempts"] == "3"
    assert "cannot handle this one" in headers["Ekiben-Dlq-Detail"]
    assert BentoPushed.model_validate_json(body) == event
    [line] = [e for e in logs if e["event"] == "bus.consumer.dead_lettered"]
    assert line["consumer"] == "probe-poison"
    assert line["log_level"] == "error"
    assert dead_lettered_count("probe-poison", "bento.pushed") == before + 1


async def test_undecodable_message_is_dead_lettered_without_retries(
    nats_url: str, pg_dsn: str
) -> None:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)
    calls: list[str] = []

    async def handle(event: AnyEvent, delivery: Delivery) -> None:
        calls.append(event.id)

    runtime.subscribe(consumer="probe-decode", handler=handle, events=[BentoPushed])
    async with runtime.running():
        await publish_raw(nats_url, subject_for("bento.pushed"), b'{"type": "bento.pushed"}', "x1")
        await wait_for(lambda: dead_lettered_count("probe-decode", "bento.pushed") >= 1)
    assert calls == []
    [(_, headers, body)] = await dead_letters(nats_url)
    assert headers["Ekiben-Dlq-Reason"] == "undecodable"
    assert headers["Ekiben-Dlq-Attempts"] == "1"
    assert body == b'{"type": "bento.pushed"}'


async def test_bad_input_error_is_dead_lettered_at_once(nats_url: str, pg_dsn: str) -> None:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn), migrations_dir=None)
    attempts: list[int] = []

    async def rejects(event: AnyEvent, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise InvalidInput("bento has no services")

    runtime.subscribe(consumer="probe-reject", handler=rejects, events=[BentoPushed])
    event = pushed("v1")
    async with runtime.running():
        await publish_raw(
            nats_url, subject_for(event.type), event.model_dump_json().encode(), event.id
        )
        await wait_for(lambda: dead_lettered_count("probe-reject", "bento.pushed") >= 1)
    assert attempts == [1]
    [(_, headers, _)] = await dead_letters(nats_url)
    assert headers["Ekiben-Dlq-Reason"] == "invalid"
    assert headers["Ekiben-Dlq-Detail"] == "bento has no services"


async def test_transient_failure_is_retried_then_succeeds(nats_url: str, pg_dsn: str) -> None:
    runtime = BackendRuntime(probe_settings(nats_url, pg_dsn, max_deliver=5), migrations_dir=None)
    attempts: list[int] = []

    async def flaky(event: AnyEvent, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt < 3:
            raise ConnectionError("dependency blinked")

    runtime.subscribe(consumer="probe-flaky", handler=flaky, events=[BentoPushed])
    event = pushed("v1")
    async with runtime.running():
        await publish_raw(
            nats_url, subject_for(event.type), event.model_dump_json().encode(), event.id
        )
        await wait_for(lambda: attempts[-1:] == [3])
        await asyncio.sleep(0.3)
    assert attempts == [1, 2, 3]
    assert await dead_letters(nats_url) == []
