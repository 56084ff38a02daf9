"""Durable event consumers: explicit ack, bounded redelivery, a dead-letter subject.

A handler gets a decoded, typed event and a `Delivery` (which attempt this is). What
happens next depends only on how the handler ends:

- it returns: the message is acked;
- it raises a permanent error (`PermanentError` or any 4xx `EkibenError`, see
  `shared.errors.is_permanent`): retrying cannot help, so the message goes to the
  dead-letter subject at once;
- it raises anything else: the message is nak'ed with the next backoff delay (or the
  `delay` a `TemporaryError` names), and after `max_deliver` attempts it goes to the
  dead-letter subject;
- the process dies mid-handling: no ack arrives, and JetStream redelivers after `ack_wait`.

A message that does not decode as any known event goes to the dead-letter subject too.
Dead-lettering is a JetStream publish to `ekiben.dlq.<consumer>.<type>` (its own stream)
with the original body and headers plus the reason, a structured log line and a metric;
then the original is terminated so it is never retried again.

Handlers must be idempotent (see `shared.outbox.processed_once`): a redelivery after a
crash between the effect and the ack must be a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from shared.bus.broker import message_itself
from shared.errors import is_permanent, retry_delay
from shared.events import (
    EVENT_STREAM,
    EVENT_SUBJECT_PREFIX,
    AnyEvent,
    Event,
    decode_event,
    dlq_subject_for,
    subject_for,
)
from shared.logging import get_logger
from shared.settings import NatsSettings
from shared.telemetry import (
    CONSUMER_ACK_PENDING,
    CONSUMER_LAG,
    EVENTS_DEAD_LETTERED,
    EVENTS_HANDLED,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Delivery:
    consumer: str
    attempt: int
    max_attempts: int
    stream_sequence: int
    subject: str

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


EventHandler = Callable[[AnyEvent, Delivery], Awaitable[None]]


def _consumer_config(
    consumer: str, subjects: list[str], settings: NatsSettings, max_ack_pending: int
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer,
        ack_policy=JsAckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        max_deliver=settings.max_deliver,
        ack_wait=settings.ack_wait_seconds,
        max_ack_pending=max_ack_pending,
        filter_subjects=subjects,
    )


def subscribe_events(
    broker: NatsBroker,
    *,
    consumer: str,
    handler: EventHandler,
    settings: NatsSettings,
    events: Sequence[type[Event]] | None = None,
    batch_size: int = 16,
    description: str | None = None,
) -> None:
    """Register a durable pull consumer named `consumer` for `events` (all when None)."""
    subjects = (
        [subject_for(cls.event_type) for cls in events] if events else [f"{EVENT_SUBJECT_PREFIX}.>"]
    )
    config = _consumer_config(consumer, subjects, settings, max_ack_pending=batch_size * 16)

    async def consume(msg: NatsMessage) -> None:
        await _handle_one(msg, consumer=consumer, handler=handler, settings=settings, js=broker)

    broker.subscriber(
        stream=JStream(EVENT_STREAM, declare=False),
        durable=consumer,
        config=config,
        pull_sub=PullSub(batch_size=batch_size, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        decoder=message_itself,
        title=consumer,
        description=description or handler.__doc__,
    )(consume)


async def _handle_one(
    msg: NatsMessage,
    *,
    consumer: str,
    handler: EventHandler,
    settings: NatsSettings,
    js: NatsBroker,
) -> None:
    raw = msg.raw_message
    meta = raw.metadata
    delivery = Delivery(
        consumer=consumer,
        attempt=meta.num_delivered,
        max_attempts=settings.max_deliver,
        stream_sequence=meta.sequence.stream,
        subject=raw.subject,
    )
    event_type = raw.subject.removeprefix(f"{EVENT_SUBJECT_PREFIX}.")
    try:
        event = decode_event(raw.data)
    except ValidationError as exc:
        await _dead_letter(msg, js, delivery, event_type, "undecodable", str(exc)[:2000])
        return

    bound = log.bind(consumer=consumer, event_id=event.id, event_type=event.type)
    try:
        await handler(event, delivery)
    except Exception as exc:  # noqa: BLE001 - every failure is classed, none escapes
        if is_permanent(exc):
            EVENTS_HANDLED.labels(consumer, event.type, "rejected").inc()
            await _dead_letter(msg, js, delivery, event.type, exc.code, exc.message)
            return
        await _retry_or_dead_letter(msg, js, delivery, event.type, exc, settings, bound)
    else:
        await msg.ack()
        EVENTS_HANDLED.labels(consumer, event.type, "ok").inc()


async def _retry_or_dead_letter(
    msg: NatsMessage,
    js: NatsBroker,
    delivery: Delivery,
    event_type: str,
    exc: BaseException,
    settings: NatsSettings,
    bound: Any,
) -> None:
    if delivery.is_last_attempt:
        EVENTS_HANDLED.labels(delivery.consumer, event_type, "failed").inc()
        await _dead_letter(msg, js, delivery, event_type, "max_deliver", repr(exc)[:2000])
        return
    backoff = settings.backoff_seconds or [1.0]
    delay = retry_delay(exc)
    if delay is None:
        delay = backoff[min(delivery.attempt - 1, len(backoff) - 1)]
    EVENTS_HANDLED.labels(delivery.consumer, event_type, "retry").inc()
    bound.warning(
        "bus.consumer.retry",
        attempt=delivery.attempt,
        max_attempts=delivery.max_attempts,
        delay=delay,
        error=repr(exc),
    )
    await msg.nack(delay=delay)


async def _dead_letter(
    msg: NatsMessage,
    broker: NatsBroker,
    delivery: Delivery,
    event_type: str,
    reason: str,
    detail: str,
) -> None:
    raw = msg.raw_message
    headers = {k: v for k, v in (raw.headers or {}).items() if k != "Nats-Msg-Id"}
    headers.update(
        {
            # Deduplicated: dead-lettering the same delivery twice keeps one copy.
            "Nats-Msg-Id": f"{delivery.consumer}:{delivery.stream_sequence}",
            "Ekiben-Dlq-Consumer": delivery.consumer,
            "Ekiben-Dlq-Reason": reason,
            "Ekiben-Dlq-Detail": detail.replace("\n", " ")[:1000],
            "Ekiben-Dlq-Attempts": str(delivery.attempt),
            "Ekiben-Original-Subject": delivery.subject,
            "Ekiben-Original-Sequence": str(delivery.stream_sequence),
        }
    )
    await broker.connection.jetstream().publish(
        dlq_subject_for(delivery.consumer, event_type or "unknown"), raw.data, headers=headers
    )
    await msg.reject()
    EVENTS_DEAD_LETTERED.labels(delivery.consumer, event_type).inc()
    log.error(
        "bus.consumer.dead_lettered",
        consumer=delivery.consumer,
        event_type=event_type,
        reason=reason,
        detail=detail[:500],
        attempts=delivery.attempt,
        stream_sequence=delivery.stream_sequence,
    )


async def watch_consumer_lag(
    js: JetStreamContext,
    consumers: Sequence[str],
    stop: asyncio.Event,
    *,
    interval: float = 5.0,
) -> None:
    """Keep the pending/ack-pending gauges of `consumers` current until `stop` is set.

    Stopped by an event, not by cancellation: nats-py swallows a CancelledError that lands
    while it flushes a request, and a loop relying on cancel() would then run forever.
    """
    while not stop.is_set():
        for name in consumers:
            with contextlib.suppress(Exception):
                info = await js.consumer_info(EVENT_STREAM, name)
                CONSUMER_LAG.labels(name).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(name).set(info.num_ack_pending or 0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
