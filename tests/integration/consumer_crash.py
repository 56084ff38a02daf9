"""A consumer process that dies (SIGKILL) while handling its first event.

Run as `python consumer_crash.py NATS_URL PG_DSN` with the event JSON on stdin, by
test_consumer.py. It publishes the event, consumes it with durable `probe-crashy` and
kills itself inside the handler, before any ack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import nats

from shared.bus import Delivery
from shared.events import AnyEvent, BentoPushed, decode_event
from shared.service import BackendRuntime
from tests.fixtures.runtime import probe_settings


async def main(nats_url: str, dsn: str) -> None:
    event = decode_event(sys.stdin.read())
    runtime = BackendRuntime(probe_settings(nats_url, dsn, ack_wait=1.0), migrations_dir=None)

    async def die(received: AnyEvent, delivery: Delivery) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    runtime.subscribe(consumer="probe-crashy", handler=die, events=[BentoPushed])
    async with runtime.running():
        nc = await nats.connect(nats_url)
        await nc.jetstream().publish(
            event.nats_subject, event.model_dump_json().encode(), headers={"Nats-Msg-Id": event.id}
        )
        await asyncio.sleep(30)
    raise SystemExit("the consumer should have been killed")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
