"""A relay that dies by SIGKILL after publishing a batch and before marking it sent.

Run as `python relay_crash.py NATS_URL PG_DSN SCHEMA` by test_outbox.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from shared.bus import create_broker, ensure_streams
from shared.db import create_pool
from shared.outbox import OutboxRelay
from shared.settings import NatsSettings


async def main(nats_url: str, dsn: str, schema: str) -> None:
    settings = NatsSettings(url=nats_url)
    broker = create_broker(settings, service="relay-crash")
    await broker.connect()
    await ensure_streams(broker.connection.jetstream(), settings)
    pool = await create_pool(dsn, schema=schema)

    async def die(event_ids: list[str]) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    relay = OutboxRelay(pool, broker, schema=schema, after_publish=die)
    await relay.drain_once()
    raise SystemExit("the relay should have been killed")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
