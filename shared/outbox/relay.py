"""The outbox relay: from committed rows to JetStream, at least once, in order.

Published rows and processed-event records are kept for `retention_seconds` (long past
JetStream's duplicate window and any redelivery), then pruned by the relay that holds the
drain lock, at most once per `prune_interval_seconds`, in small batches.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from faststream.nats import NatsBroker
from opentelemetry import propagate, trace

from shared.db import Connection
from shared.events import EVENT_STREAM
from shared.logging import get_logger
from shared.tasks import stop_tasks
from shared.telemetry import OUTBOX_BACKLOG, OUTBOX_DELAY, OUTBOX_PUBLISHED

log = get_logger(__name__)
tracer = trace.get_tracer(__name__)

# A test hook: called after a batch is published and before it is marked sent.
AfterPublish = Callable[[list[str]], Awaitable[None]]


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        broker: NatsBroker,
        *,
        schema: str,
        batch_size: int = 200,
        safety_poll_seconds: float = 5.0,
        after_publish: AfterPublish | None = None,
        retention_seconds: float = 7 * 24 * 3600.0,
        prune_interval_seconds: float = 600.0,
    ) -> None:
        self._pool = pool
        self._broker = broker
        self._schema = schema
        self._channel = f"{schema}_outbox"
        self._batch_size = batch_size
        self._safety_poll = safety_poll_seconds
        self._after_publish = after_publish
        self._retention = retention_seconds
        self._prune_interval = prune_interval_seconds
        self._last_prune = float("-inf")
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._listener: Connection | None = None

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self, grace: float = 10.0) -> None:
        """Let a batch in flight finish (publish and mark), then stop."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                await stop_tasks([self._task], grace=5.0)
            self._task = None
        await self._close_listener()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if isinstance(listener, PoolConnectionProxy):
            try:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(self._channel, self._notified)
            finally:
                with contextlib.suppress(Exception):
                    await self._pool.release(listener)

    async def _listen(self) -> None:
        if self._listener is None or self._listener.is_closed():
            listener = await self._pool.acquire()
            await listener.add_listener(self._channel, self._notified)
            self._listener = listener

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._listen()
                # Drain until a pass finds nothing, then sleep until notified.
                self._wake.clear()
                while not self._stopping and await self.drain_once():
                    pass
                loop = asyncio.get_running_loop()
                if not self._stopping and loop.time() - self._last_prune >= self._prune_interval:
                    self._last_prune = loop.time()
                    await self.prune()
                if not self._stopping:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._safety_poll)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the relay outlives outages of PG or NATS
                log.warning("outbox.relay.error", schema=self._schema, error=repr(exc))
                await self._close_listener()
                await asyncio.sleep(1.0)

    async def prune(self, batch: int = 5000) -> int:
        """Drop published rows and processed-event records older than the retention."""
        removed = 0
        async with self._pool.acquire() as conn:
            for sql in (
                """DELETE FROM outbox WHERE id IN (
                       SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1)
                       ORDER BY id LIMIT $2)""",
                """DELETE FROM processed_events WHERE ctid IN (
                       SELECT ctid FROM processed_events
                       WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)""",
            ):
                while True:
                    status = await conn.execute(sql, self._retention, batch)
                    count = int(status.rsplit(" ", 1)[-1])
                    removed += count
                    if count < batch or self._stopping:
                        break
        if removed:
            log.info("outbox.pruned", schema=self._schema, rows=removed)
        return removed

    async def drain_once(self) -> int:
        """Publish one batch; returns how many rows it published (0: nothing to do)."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One relay at a time keeps the order; the others find the lock taken and wait
            # for their next wake-up.
            if not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", f"ekiben.outbox.{self._schema}"
            ):
                return 0
            rows = await conn.fetch(
                """SELECT id, event_id, event_type, subject, payload, headers, created_at
                   FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1""",
                self._batch_size,
            )
            if not rows:
                OUTBOX_BACKLOG.labels(self._schema).set(0)
                return 0
            await asyncio.gather(*(self._publish(row) for row in rows))
            if self._after_publish is not None:
                await self._after_publish([row["event_id"] for row in rows])
            await conn.execute(
                "UPDATE outbox SET published_at = now(), attempts = attempts + 1"
                " WHERE id = ANY($1::bigint[])",
                [row["id"] for row in rows],
            )
            # Counting costs a scan: only when this batch was full and more may be waiting.
            backlog = 0
            if len(rows) == self._batch_size:
                backlog = await conn.fetchval(
                    "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                )
            OUTBOX_BACKLOG.labels(self._schema).set(backlog)
        return len(rows)

    async def _publish(self, row: asyncpg.Record) -> None:
        headers: dict[str, str] = dict(row["headers"] or {})
        # The span continues the trace of the request that wrote the row.
        parent = propagate.extract(headers)
        with tracer.start_as_current_span(
            f"outbox publish {row['event_type']}", context=parent, kind=trace.SpanKind.PRODUCER
        ):
            headers["Nats-Msg-Id"] = row["event_id"]
            headers["Ce-Type"] = row["event_type"]
            await self._broker.publish(
                row["payload"],  # a dict: FastStream sends it as application/json
                row["subject"],
                headers=headers,
                stream=EVENT_STREAM,
                correlation_id=row["event_id"],
            )
        OUTBOX_PUBLISHED.labels(self._schema, row["event_type"]).inc()
        OUTBOX_DELAY.labels(self._schema).observe(
            (datetime.now(UTC) - row["created_at"]).total_seconds()
        )
