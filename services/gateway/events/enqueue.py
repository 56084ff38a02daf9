"""From the event stream to webhook deliveries: in stream order, in batches, exactly once.

The durable JetStream consumer `gateway-webhooks` is read by one gateway replica at a
time, and what it reads is written in batches:

1. a transaction takes `pg_try_advisory_xact_lock`; a replica that does not get it is on
   standby and tries again a second later (the lock is free the moment its holder's
   transaction or connection ends, so another takes over at once when a gateway dies);
2. holding it, the replica fetches the next messages: the first as soon as it arrives,
   then at once whatever the stream already holds behind it (up to `BATCH`);
3. in that same transaction the events are recorded as processed (`processed_first_time`,
   the batch form of `processed_once`) and the deliveries of those seen for the first time
   are inserted (`service.queue_deliveries`), a few statements per batch; then it
   commits, then it acks.

Why not `runtime.subscribe`: one transaction per event costs a commit (a WAL flush) per
event, so under load the queue fell seconds behind a 50 events/s stream; a batch costs one.
And why the lock: deliveries of one subject go out in stream order only if they are
*inserted* in stream order, which two replicas fetching at once would not guarantee; with
the lock held from fetch to commit, batches commit in the order they were fetched. A
gateway killed after its commit and before its acks gets nothing doubled: the messages
come back after `ack_wait`, and `processed_once` makes them no-ops. A batch whose
transaction fails is nak'ed with a backoff and retried without limit (the events are
well-formed; what failed is the database), so no event is dropped during an outage.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from services.gateway.events import service
from services.gateway.settings import GatewaySettings
from shared.db import Connection, Pool
from shared.events import (
    EVENT_STREAM,
    EVENT_SUBJECT_PREFIX,
    AnyEvent,
    decode_event,
    organization_of,
)
from shared.events.organization import NoOrganizationError
from shared.logging import get_logger
from shared.outbox import processed_first_time
from shared.tasks import stop_tasks

log = get_logger(__name__)

BATCH = 256
LOCK = "ekiben.gateway.webhooks.enqueue"
STANDBY_SECONDS = 1.0
FETCH_SECONDS = 1.0


class DeliveryQueue:
    def __init__(self, pool: Pool, js: JetStreamContext, settings: GatewaySettings) -> None:
        self._pool = pool
        self._js = js
        self._settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._psub: JetStreamContext.PullSubscription | None = None
        self._failures = 0

    async def start(self) -> None:
        nats = self._settings.nats
        self._psub = await self._js.pull_subscribe(
            f"{EVENT_SUBJECT_PREFIX}.>",
            durable=service.WEBHOOK_CONSUMER,
            stream=EVENT_STREAM,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=nats.ack_wait_seconds,
                max_ack_pending=BATCH * 4,
                max_deliver=-1,  # see the module docstring
                description="webhook deliveries of every event (services/gateway/events)",
            ),
        )
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="webhook-enqueue")

    async def stop(self) -> None:
        """Stop by event (nats-py may swallow a cancel while it flushes), then unsubscribe."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), FETCH_SECONDS + 5)
            await stop_tasks([self._task], grace=5.0)
            self._task = None
        if self._psub is not None:
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not await self.pass_once():
                    await self._pause(STANDBY_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - outlives outages of PostgreSQL or NATS
                log.warning("gateway.webhooks.enqueue_error", error=repr(exc))
                await self._pause(1.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def pass_once(self) -> bool:
        """One batch, if this replica holds the lock; False when it is on standby."""
        assert self._psub is not None
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                locked = await conn.fetchval("SELECT pg_try_advisory_xact_lock(hashtext($1))", LOCK)
                if not locked:
                    return False
                messages = await self._fetch(self._psub)
                if not messages:
                    return True
                try:
                    async with conn.transaction():  # a savepoint: a failure leaves the lock
                        queued = await self._apply(conn, messages)
                except Exception as exc:  # noqa: BLE001 - nak'ed and retried
                    await self._retry(messages, exc)
                    return True
            # Committed: now the acks. A crash before them only brings no-op redeliveries.
            for message in messages:
                with contextlib.suppress(Exception):
                    await message.ack()
        self._failures = 0
        if queued:
            log.debug("gateway.webhooks.queued", events=len(messages), deliveries=queued)
        return True

    async def _fetch(self, psub: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            first = await psub.fetch(1, timeout=FETCH_SECONDS)
        except TimeoutError:
            return []
        behind = first[-1].metadata.num_pending or 0
        if not behind:
            return first
        # The stream holds this many already: a fetch of them returns at once.
        try:
            more = await psub.fetch(min(behind, BATCH - 1), timeout=FETCH_SECONDS)
        except TimeoutError:
            more = []
        return first + more

    async def _apply(self, conn: Connection, messages: list[Msg]) -> int:
        events: list[tuple[AnyEvent, int]] = []
        for message in messages:
            try:
                event = decode_event(message.data)
                organization_of(event)
            except (ValidationError, NoOrganizationError) as exc:
                # Not an event anyone can be sent: other consumers dead-letter it; here it
                # is skipped (and acked with the batch, so it is not read again).
                log.error(  # noqa: TRY400 - the reason is the message; no traceback to show
                    "gateway.webhooks.skipped",
                    stream_sequence=message.metadata.sequence.stream,
                    error=str(exc)[:300],
                )
                continue
            events.append((event, message.metadata.sequence.stream))
        new = await processed_first_time(
            conn, service.WEBHOOK_CONSUMER, [event.id for event, _ in events]
        )
        # A redelivered event (its id already processed) queues nothing again.
        fresh = [(event, seq) for event, seq in events if event.id in new]
        return await service.queue_deliveries(conn, fresh, self._settings.webhooks)

    async def _retry(self, messages: list[Msg], exc: Exception) -> None:
        self._failures += 1
        backoff = self._settings.nats.backoff_seconds or [1.0]
        delay = backoff[min(self._failures - 1, len(backoff) - 1)]
        log.warning(
            "gateway.webhooks.enqueue_retry",
            events=len(messages),
            delay=delay,
            error=repr(exc),
        )
        for message in messages:
            with contextlib.suppress(Exception):
                await message.nak(delay=delay)
