"""Server-sent events from JetStream: one fan-out per process, bounded per reader.

**The hub.** Each gateway process follows `EKIBEN_EVENTS` with one ordered consumer (an
ephemeral, flow-controlled push consumer that nats-py recreates at the right sequence
after a reconnect) from the stream's end at start. Every event it sees goes into a ring
of the last `buffer_events` events, decoded once (type, organization, subject, the JSON
as stored). Readers hold no queue: each keeps a cursor (the stream sequence it has
looked at) and takes what lies after it from the ring, so memory is the ring plus a few
hundred bytes per reader, whatever the readers do.

**A reader** starts at a position: the `Last-Event-ID` or `?after=` it resumes from, the
first event since `?replay=`, or the end of the stream. When that position is older than
the ring holds it first reads JetStream itself, with an ephemeral pull consumer of its
own (`fetch` in batches, so it holds one batch at a time), until it reaches the ring,
then follows the ring. Both are in stream order, and the cursor only moves forward, so
a resumed reader gets every event after its position exactly once.

**A slow reader** (its client does not read) only delays itself: its sends block, its
cursor stays behind. Once it is more than `max_lag_events` positions behind the newest
event, or the ring has moved past its cursor, it is sent `event: overflow` with the last
id it was given, and closed; it resumes from there with `Last-Event-ID`, reading
JetStream until it has caught up. A position older than the stream keeps is a 410 before
the stream starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from datetime import datetime

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from services.gateway.events.metrics import SSE_EVENTS_SENT, SSE_OVERFLOWS, SSE_READERS
from services.gateway.settings import EventStreamSettings
from shared.events import EVENT_STREAM, EVENT_SUBJECT_PREFIX, decode_event, organization_of
from shared.events.organization import NoOrganizationError
from shared.logging import get_logger

log = get_logger(__name__)

ALL_EVENTS = f"{EVENT_SUBJECT_PREFIX}.>"
CATCH_UP_BATCH = 256


@dataclass(frozen=True, slots=True)
class StreamEvent:
    seq: int
    type: str
    organization: str
    subject: str | None
    data: bytes  # the CloudEvents JSON document, as stored


def stream_event(seq: int, data: bytes) -> StreamEvent | None:
    """The event at `seq`, or None for a message that is not a known, tenant-bound event."""
    try:
        event = decode_event(data)
        organization = organization_of(event)
    except (ValidationError, NoOrganizationError):
        return None
    return StreamEvent(seq, event.type, organization, event.subject, data)


Accept = Callable[[StreamEvent], bool]


def frame(event: StreamEvent) -> bytes:
    """One SSE event: `id:` the stream position, `event:` the type, `data:` the document."""
    # The stored JSON is one line; a newline inside would end the SSE field early.
    data = event.data.replace(b"\r", b"").replace(b"\n", b"")
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.seq, event.type.encode(), data)


def control_frame(name: str, payload: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"


class EventHub:
    """The process's one follower of the event stream, and its ring of recent events."""

    def __init__(self, settings: EventStreamSettings) -> None:
        self.settings = settings
        self._ring: deque[StreamEvent] = deque()
        # Every event with a sequence above `floor` and up to `head` has been seen (it is in
        # the ring, or it was not a deliverable event).
        self.floor = 0
        self.head = 0
        self._changed = asyncio.Event()
        self._js: JetStreamContext | None = None
        self._subscription: JetStreamContext.PushSubscription | None = None
        self._closed = False
        self.readers = 0

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the event hub is not started")
        return self._js

    async def start(self, js: JetStreamContext) -> None:
        self._js = js
        self._closed = False
        info = await js.stream_info(EVENT_STREAM)
        self.floor = self.head = info.state.last_seq
        self._subscription = await js.subscribe(
            ALL_EVENTS,
            stream=EVENT_STREAM,
            ordered_consumer=True,
            cb=self._on_message,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=self.head + 1,
            ),
        )

    async def stop(self) -> None:
        self._closed = True
        self._notify()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    @property
    def closed(self) -> bool:
        return self._closed

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _on_message(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.head:
            return  # a repeat after the ordered consumer was reset
        self.publish(seq, msg.data)

    def publish(self, seq: int, data: bytes) -> None:
        event = stream_event(seq, data)
        if event is not None:
            self._ring.append(event)
            while len(self._ring) > self.settings.buffer_events:
                self.floor = self._ring.popleft().seq
        elif not self._ring:
            self.floor = seq  # nothing deliverable held: the floor moves with the head
        self.head = seq
        self._notify()

    def after(self, cursor: int, limit: int) -> list[StreamEvent]:
        """The ring's events after `cursor`, oldest first, at most `limit` of them."""
        newer: list[StreamEvent] = []
        for entry in reversed(self._ring):
            if entry.seq <= cursor:
                break
            newer.append(entry)
        newer.reverse()
        return newer[:limit]

    async def changed(self, timeout: float) -> None:  # noqa: ASYNC109 - a keep-alive tick
        """Wait until a new event arrives (or the hub closes), at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # --- positions -------------------------------------------------------------------------

    async def bounds(self) -> tuple[int, int]:
        """The stream's (first, last) sequence now; first > last when it is empty."""
        info = await self.js.stream_info(EVENT_STREAM)
        return info.state.first_seq, info.state.last_seq

    async def position_at(self, since: datetime) -> int:
        """The cursor just before the first event stored at or after `since`."""
        _, last = await self.bounds()
        psub, name = await _reader_consumer(
            self.js,
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since),
        )
        try:
            info = await psub.consumer_info()
            if not info.num_pending:
                return last  # nothing since then, as of a moment after `last`
            [msg] = await psub.fetch(1, timeout=5.0)
            return msg.metadata.sequence.stream - 1
        finally:
            await _drop(self.js, psub, name)

    # --- one reader ------------------------------------------------------------------------

    async def read(self, cursor: int, accept: Accept) -> AsyncGenerator[bytes, None]:
        """The SSE byte stream of one reader, from after `cursor`, of the events it accepts."""
        settings = self.settings
        self.readers += 1
        SSE_READERS.inc()
        delivered = cursor
        try:
            if cursor < self.floor:
                # Closed at once when the reader goes, which removes its JetStream consumer.
                async with contextlib.aclosing(self._catch_up(cursor, accept)) as history:
                    async for seq, chunk in history:
                        cursor = seq
                        if chunk is not None:
                            delivered = seq
                            yield chunk
            while not self._closed:
                if cursor < self.floor or self.head - cursor > settings.max_lag_events:
                    SSE_OVERFLOWS.inc()
                    yield control_frame(
                        "overflow",
                        {
                            "last_event_id": delivered,
                            "message": "this reader fell too far behind; reconnect with"
                            f" Last-Event-ID: {delivered} to resume",
                        },
                    )
                    return
                batch = self.after(cursor, CATCH_UP_BATCH)
                if not batch:
                    waiting = self._changed
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(waiting.wait(), settings.keepalive_seconds)
                    if not waiting.is_set():
                        yield KEEPALIVE
                    continue
                for entry in batch:
                    cursor = entry.seq
                    if accept(entry):
                        delivered = entry.seq
                        SSE_EVENTS_SENT.inc()
                        yield frame(entry)
                # Nothing newer was in the batch's range: skip to the head, so that a
                # reader whose filter matches little is not counted as lagging.
                if not self.after(cursor, 1):
                    cursor = max(cursor, self.head)
        finally:
            self.readers -= 1
            SSE_READERS.dec()

    async def _catch_up(
        self, cursor: int, accept: Accept
    ) -> AsyncGenerator[tuple[int, bytes | None], None]:
        """Events after `cursor` from JetStream until the ring covers the rest; yields each
        position read, with its frame when the reader accepts it (None otherwise)."""
        psub, name = await _reader_consumer(
            self.js,
            ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=cursor + 1
            ),
        )
        try:
            while cursor < self.floor and not self._closed:
                try:
                    messages = await psub.fetch(CATCH_UP_BATCH, timeout=1.0)
                except TimeoutError:
                    # Nothing left in the stream after the cursor: what the ring lacks below
                    # its floor does not exist.
                    yield max(cursor, self.floor), None
                    return
                for msg in messages:
                    seq = msg.metadata.sequence.stream
                    if seq <= cursor:
                        continue
                    cursor = seq
                    event = stream_event(seq, msg.data)
                    yield seq, frame(event) if event is not None and accept(event) else None
        finally:
            await _drop(self.js, psub, name)


async def _reader_consumer(
    js: JetStreamContext, config: ConsumerConfig
) -> tuple[JetStreamContext.PullSubscription, str]:
    """An ephemeral pull consumer of every event, named here so that it can be deleted by
    name (and by the server after a minute unused, should this process die first)."""
    config.name = f"sse-{uuid.uuid4().hex}"
    config.filter_subject = ALL_EVENTS
    config.ack_policy = AckPolicy.NONE
    config.inactive_threshold = 60.0
    config.mem_storage = True
    await js.add_consumer(EVENT_STREAM, config=config)
    return await js.pull_subscribe_bind(consumer=config.name, stream=EVENT_STREAM), config.name


async def _drop(js: JetStreamContext, psub: JetStreamContext.PullSubscription, name: str) -> None:
    """Remove a reader's consumer now rather than when its inactivity threshold passes."""
    with contextlib.suppress(Exception):
        await psub.unsubscribe()
    for _ in range(3):  # a busy server may time out once
        try:
            await js.delete_consumer(EVENT_STREAM, name)
        except NotFoundError:
            return
        except Exception as exc:  # noqa: BLE001 - retried, then left to the threshold
            log.debug("gateway.sse.consumer_delete_retry", consumer=name, error=repr(exc))
        else:
            return
