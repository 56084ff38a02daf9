"""`ekiben events tail`: follow the event stream from a terminal."""

from __future__ import annotations

import asyncio
import sys

import nats
from nats.js.api import DeliverPolicy

from shared.events import EVENT_STREAM, EVENT_SUBJECT_PREFIX, subject_for


async def tail(nats_url: str, *, event_type: str | None, replay: bool) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        subject = subject_for(event_type) if event_type else f"{EVENT_SUBJECT_PREFIX}.>"
        # An ordered consumer: ephemeral, flow-controlled, never acks, gone when we exit.
        sub = await js.subscribe(
            subject,
            stream=EVENT_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL if replay else DeliverPolicy.NEW,
        )
        async for msg in sub.messages:
            sys.stdout.write(msg.data.decode() + "\n")
            sys.stdout.flush()
    except asyncio.CancelledError:
        pass
    finally:
        await nc.close()
