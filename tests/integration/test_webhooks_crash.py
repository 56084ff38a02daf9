"""The gateway SIGKILLed with webhook deliveries pending: after a restart none is lost.

The gateway runs as `ekiben serve gateway` in a child process. Its receiver is down, so
deliveries pile up and are being retried when the process is killed; more events arrive
while no gateway runs. After a restart (and the receiver's return) every event arrives,
in order per subject, each queued once per endpoint; a repeat, if any, carries the same
`webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx

from tests.fixtures.subscriptions import Receiver, eventually, free_port, publish, pushed

ROOT = Path(__file__).parents[2]


@contextlib.contextmanager
def gateway_process(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "gateway"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the gateway exited"
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{url}/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def test_gateway_killed_with_deliveries_pending_loses_nothing(
    nats_url: str, pg_dsn: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token_file = tmp_path / "token"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EKIBEN_GATEWAY_HTTP__PORT": str(port),
        "EKIBEN_GATEWAY_NATS__URL": nats_url,
        "EKIBEN_GATEWAY_NATS__ACK_WAIT_SECONDS": "2",
        "EKIBEN_GATEWAY_POSTGRES__DSN": pg_dsn,
        "EKIBEN_GATEWAY_BOOTSTRAP_TOKEN_FILE": str(token_file),
        "EKIBEN_GATEWAY_TELEMETRY__LOG_LEVEL": "WARNING",
        "EKIBEN_GATEWAY_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "EKIBEN_GATEWAY_WEBHOOKS__RETRY_BASE_SECONDS": "0.05",
        "EKIBEN_GATEWAY_WEBHOOKS__RETRY_MAX_SECONDS": "0.3",
        "EKIBEN_GATEWAY_WEBHOOKS__MAX_ATTEMPTS": "1000",
        "EKIBEN_GATEWAY_WEBHOOKS__LEASE_SECONDS": "2",
    }
    log = tmp_path / "gateway.log"
    receiver = Receiver()  # down: its port refuses connections until it starts
    db = await asyncpg.connect(pg_dsn)
    try:

        async def count(sql: str) -> int:
            value: int = await db.fetchval(sql)
            return value

        async def at_least(sql: str, n: int) -> bool:
            return await count(sql) >= n

        with gateway_process(env, log) as first:
            await eventually(lambda: ready(url, first), 60, "the gateway ready")
            async with httpx.AsyncClient(base_url=url) as client:
                created = await client.post(
                    "/api/ekiben/v1/webhooks",
                    json={"url": receiver.url, "types": ["bento.*"]},
                    headers={"X-YATAI-API-TOKEN": token_file.read_text().strip()},
                )
            assert created.status_code == 201, created.text
            receiver.secret = created.json()["secret"]
            before = [pushed("default", f"m{i % 4}", f"v{i}") for i in range(20)]
            await publish(nats_url, before)
            await eventually(
                lambda: at_least("SELECT count(*) FROM gateway.webhook_deliveries", 20),
                what="the deliveries queued",
            )
            await eventually(
                lambda: at_least("SELECT count(*) FROM gateway.webhook_attempts", 8),
                what="attempts failing",
            )
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        assert (
            await count("SELECT count(*) FROM gateway.webhook_deliveries WHERE status = 'pending'")
            == 20
        )

        # Events keep coming while no gateway runs; the receiver comes back.
        after = [pushed("default", f"m{i % 4}", f"w{i}") for i in range(10)]
        await publish(nats_url, after)
        await receiver.start()
        with gateway_process(env, log) as second:
            await eventually(lambda: ready(url, second), 60, "the gateway ready again")
            events = before + after
            await eventually(
                lambda: len(set(receiver.event_ids())) == len(events), 60, "every event received"
            )
            await eventually(
                lambda: at_least(
                    "SELECT count(*) FROM gateway.webhook_deliveries WHERE status = 'succeeded'",
                    len(events),
                ),
                what="every delivery recorded as done",
            )
        assert sorted(set(receiver.event_ids())) == sorted(e.id for e in events)
        assert receiver.bad_signatures == []
        # Queued once per endpoint and event, whatever was redelivered inside the gateway.
        assert await count("SELECT count(*) FROM gateway.webhook_deliveries") == len(events)
        # In order per subject, and any repeat has the id of its first copy.
        expected: dict[str, list[str]] = defaultdict(list)
        for event in events:
            expected[event.subject or ""].append(event.id)
        first_seen: dict[str, list[str]] = defaultdict(list)
        ids: dict[str, str] = {}
        for received in receiver.received:
            event_id = received.event["id"]
            assert ids.setdefault(event_id, received.webhook_id) == received.webhook_id
            if event_id not in first_seen[received.event["subject"]]:
                first_seen[received.event["subject"]].append(event_id)
        assert first_seen == expected
    finally:
        await db.close()
        await receiver.stop()
        await asyncio.sleep(0)
