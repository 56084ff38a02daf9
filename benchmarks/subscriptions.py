"""Subscriptions benchmark: outbox commit -> SSE reader, -> webhook receiver, beside raw JetStream.

What it measures (one run)
--------------------------
A producer service (schema `bench`, a `BackendRuntime` with its outbox relay) commits
`bento.pushed` events with `write_event`; the gateway runs as its own process
(`ekiben serve gateway`, as in production). Every event is received three ways at once,
all in this process, so one clock times them all:

- **raw**: a nats-py ordered consumer of `EKIBEN_EVENTS` (the floor: outbox relay plus
  JetStream, nothing of the gateway);
- **sse**: one reader of `GET /api/ekiben/v1/events` (the gateway's hub, its ring, HTTP);
- **webhook**: an aiohttp receiver of one webhook, verifying each Standard Webhooks
  signature (the gateway's durable consumer, the delivery row, the worker's claim, POST).

    latency = t1 - t0
    t0 = time.perf_counter() right after the producer's COMMIT returned
    t1 = time.perf_counter() when the event's JSON was parsed by that receiver

Latency runs are paced (default 50 events/s, open loop, like benchmarks/outbox_latency.py)
after a warm-up. Targets: SSE p99 < 50 ms, webhook p99 < 100 ms.

**Fan-out**: 10 webhooks, each its own receiver (10 aiohttp sites on 10 ports), 1,000
events committed back to back with distinct subjects: throughput = 10,000 deliveries /
(last receipt - first commit). Beside it, the floor of the HTTP part: the same 10,000
POSTs sent straight from one aiohttp client (the worker's) with its concurrency (64).

**Memory**: the gateway's RSS (VmRSS) idle, then with 200 SSE readers connected, and its
peak while 200 events (paced) reach every reader; with the latency from commit to each
reader's receipt.

Run
---
    .venv/bin/python benchmarks/subscriptions.py               # 2,000 events, fsync on
    .venv/bin/python benchmarks/subscriptions.py --events 500 --fast-pg --json

It starts its own NATS and PostgreSQL (shared/devstack/servers.py) on free loopback ports
in a temporary directory and stops everything at the end. A missed target is reported,
not an error: the exit status is nonzero only when the benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import asyncpg
import httpx
import nats
from aiohttp import web
from nats.js.api import DeliverPolicy
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict
from standardwebhooks import Webhook

from shared.devstack.process import free_port
from shared.devstack.servers import RunningServer, start_nats, start_postgres
from shared.events import EVENT_STREAM, EVENT_SUBJECT_PREFIX, ArtifactRef, BentoPushed
from shared.logging import configure_logging
from shared.outbox import write_event
from shared.service import BackendRuntime
from shared.settings import BackendSettings, NatsSettings, PostgresSettings

ROOT = Path(__file__).parents[1]
TOKEN = "X-YATAI-API-TOKEN"
TARGET_SSE_P99_MS = 50.0
TARGET_WEBHOOK_P99_MS = 100.0
FANOUT_RECEIVERS = 10
HTTP_FLOOR_CONCURRENCY = 64


class BenchSettings(BackendSettings):
    service_name: ClassVar[str] = "bench"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_BENCH_")


def make_event(i: int, subject_group: int | None = None) -> BentoPushed:
    name = f"m{i % subject_group}" if subject_group else f"m{i}"
    return BentoPushed(
        source="/ekiben/bench",
        subject=f"bentos/default/{name}:v{i}",
        data={
            "artifact": ArtifactRef(organization="default", name=name, version=f"v{i}"),
            "size_bytes": 10,
            "object_key": f"bentos/{name}/v{i}.bento",
        },
    )


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    if len(values) == 1:
        return dict.fromkeys(("p50", "p90", "p99", "max", "mean"), values[0])
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": q[49],
        "p90": q[89],
        "p99": q[98],
        "max": max(values),
        "mean": statistics.fmean(values),
    }


# --- receipts --------------------------------------------------------------------------


@dataclass
class Receipts:
    """When each way in first saw each event id (perf_counter), and repeats."""

    sent: dict[str, float] = field(default_factory=dict)
    sent_wall: dict[str, float] = field(default_factory=dict)
    got: dict[str, dict[str, float]] = field(default_factory=dict)
    got_wall: dict[str, dict[str, float]] = field(default_factory=dict)
    repeats: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def receive(self, way: str, event_id: str) -> None:
        now, wall = time.perf_counter(), time.time()
        seen = self.got.setdefault(way, {})
        if event_id in seen:
            self.repeats[way] = self.repeats.get(way, 0) + 1
        else:
            seen[event_id] = now
            self.got_wall.setdefault(way, {})[event_id] = wall
        self.changed.set()

    def count(self, way: str, ids: set[str]) -> int:
        seen = self.got.get(way, {})
        return sum(1 for i in ids if i in seen)

    async def wait_all(self, ways: list[str], ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(self.count(w, ids) < len(ids) for w in ways):
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                missing = {w: len(ids) - self.count(w, ids) for w in ways}
                raise RuntimeError(f"events not received in {timeout}s: {missing}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    def latencies_ms(self, way: str, ids: set[str]) -> list[float]:
        seen = self.got.get(way, {})
        return [(seen[i] - self.sent[i]) * 1000.0 for i in ids if i in seen and i in self.sent]


# --- the gateway process ---------------------------------------------------------------


@contextlib.contextmanager
def gateway_process(
    nats_url: str, dsn: str, port: int, token_file: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EKIBEN_GATEWAY_HTTP__PORT": str(port),
        "EKIBEN_GATEWAY_NATS__URL": nats_url,
        "EKIBEN_GATEWAY_POSTGRES__DSN": dsn,
        "EKIBEN_GATEWAY_BOOTSTRAP_TOKEN_FILE": str(token_file),
        "EKIBEN_GATEWAY_TELEMETRY__LOG_LEVEL": "WARNING",
        "EKIBEN_GATEWAY_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "EKIBEN_GATEWAY_WEBHOOKS__SECRET_KEY": "bench-key",
    }
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
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# --- the three ways in -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_consumer(nats_url: str, receipts: Receipts) -> AsyncIterator[None]:
    nc = await nats.connect(nats_url, name="bench-raw")
    js = nc.jetstream()

    async def on_message(msg: Any) -> None:
        receipts.receive("raw", json.loads(msg.data)["id"])

    sub = await js.subscribe(
        f"{EVENT_SUBJECT_PREFIX}.>",
        stream=EVENT_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
        cb=on_message,
    )
    try:
        yield
    finally:
        await sub.unsubscribe()
        await nc.close()


async def sse_reader(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    on_event: Callable[[str], None],
    connected: asyncio.Event,
) -> None:
    """One SSE reader (aiohttp: 200 of them in this process must cost little CPU)."""
    async with session.get(f"{url}/api/ekiben/v1/events", headers={TOKEN: token}) as response:
        response.raise_for_status()
        async for raw in response.content:
            if raw.startswith(b"retry:"):
                connected.set()
            elif raw.startswith(b"data: "):
                on_event(json.loads(raw[6:])["id"])


class Receivers:
    """aiohttp sites on `ports`, each a webhook receiver verifying signatures."""

    def __init__(self, receipts: Receipts, ports: list[int]) -> None:
        self.receipts = receipts
        self.ports = ports
        self.secrets: dict[int, Webhook] = {}
        self.bad = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        port = int(request.match_info["port"])
        try:
            event = self.secrets[port].verify(body, dict(request.headers))
        except Exception:  # a bad signature is counted, not fatal
            self.bad += 1
            return web.Response(status=400)
        self.receipts.receive(f"webhook:{port}", event["id"])
        return web.Response(text="ok")

    async def _floor(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/hook/{port}"

    async def __aenter__(self) -> Receivers:
        app = web.Application()
        app.router.add_post("/hook/{port}", self._handle)
        app.router.add_post("/floor/{port}", self._floor)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        for port in self.ports:
            await web.TCPSite(self._runner, "127.0.0.1", port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- producing -------------------------------------------------------------------------


async def produce(
    runtime: BackendRuntime, events: list[BentoPushed], receipts: Receipts, rate: float
) -> int:
    """Commit `events` one at a time (paced at `rate`/s, 0: back to back); late sends."""
    start = time.perf_counter()
    late = 0
    for i, event in enumerate(events):
        if rate > 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i:
                late += 1
        async with runtime.pool.acquire() as conn:
            async with conn.transaction():
                await write_event(conn, event)
            receipts.sent[event.id] = time.perf_counter()
            receipts.sent_wall[event.id] = time.time()
    return late


async def failures(dsn: str) -> dict[str, int]:
    """Failed attempts so far, by error (a retry waits at least the backoff)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT left(error, 80) AS error, count(*) AS n FROM gateway.webhook_attempts
               WHERE error IS NOT NULL GROUP BY 1 ORDER BY 2 DESC LIMIT 5"""
        )
    finally:
        await conn.close()
    return {row["error"]: row["n"] for row in rows}


async def webhook_stages(
    dsn: str, receipts: Receipts, ids: set[str], ways: list[str]
) -> dict[str, dict[str, float]]:
    """Split the webhook latency at the delivery row's creation and its attempt's record
    (PostgreSQL's clock, the same host's)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT d.event_id, extract(epoch FROM d.created_at) AS queued,
                      a.latency_ms, e.url
               FROM gateway.webhook_deliveries d
               JOIN gateway.webhook_endpoints e ON e.id = d.endpoint_id
               JOIN gateway.webhook_attempts a ON a.delivery_id = d.id AND a.attempt = 1
               WHERE d.event_id = ANY($1::text[])""",
            list(ids),
        )
    finally:
        await conn.close()
    queued, sending, post = [], [], []
    for row in rows:
        event_id = row["event_id"]
        # The receiver's way is named by its port, the last part of the URL.
        got = receipts.got_wall.get(f"webhook:{row['url'].rsplit('/', 1)[-1]}", {})
        if f"webhook:{row['url'].rsplit('/', 1)[-1]}" not in ways or event_id not in got:
            continue
        queued.append((float(row["queued"]) - receipts.sent_wall[event_id]) * 1000)
        sending.append((got[event_id] - float(row["queued"])) * 1000)
        post.append(float(row["latency_ms"]))
    return {
        "commit_to_queued": summary(queued),
        "queued_to_received": summary(sending),
        "post_round_trip": summary(post),
    }


async def http_floor(bodies: list[bytes], urls: list[str]) -> float:
    """Seconds for one aiohttp client (what the gateway's worker uses) to POST every body
    to every URL, 64 at a time: the floor of the HTTP part of a delivery."""
    slots = asyncio.Semaphore(HTTP_FLOOR_CONCURRENCY)
    headers = {"content-type": "application/cloudevents+json", "webhook-id": "floor"}
    connector = aiohttp.TCPConnector(limit=HTTP_FLOOR_CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def post(url: str, body: bytes) -> None:
            async with (
                slots,
                client.post(
                    url.replace("/hook/", "/floor/"), data=body, headers=headers
                ) as response,
            ):
                await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(post(u, b) for b in bodies for u in urls))
        return time.perf_counter() - start


# --- the run ---------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, nats_url: str, dsn: str, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    receipts = Receipts()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token_file = tmp / "token"
    producer = BackendRuntime(
        BenchSettings(
            nats=NatsSettings(url=nats_url), postgres=PostgresSettings(dsn=SecretStr(dsn))
        ),
        migrations_dir=None,
    )
    fan_ports = [free_port() for _ in range(FANOUT_RECEIVERS)]
    latency_port = free_port()
    with gateway_process(nats_url, dsn, port, token_file, tmp / "gateway.log") as gateway:
        async with producer.running(), contextlib.AsyncExitStack() as stack:
            sse = await stack.enter_async_context(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=0),
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
                )
            )
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    timeout=httpx.Timeout(30.0, read=None), limits=httpx.Limits(max_connections=400)
                )
            )
            deadline = time.monotonic() + 90
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{url}/readyz")).status_code == 200:
                        break
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start; see {tmp / 'gateway.log'}")
                await asyncio.sleep(0.1)
            token = token_file.read_text().strip()
            auth = {TOKEN: token}
            await stack.enter_async_context(raw_consumer(nats_url, receipts))
            receivers = await stack.enter_async_context(
                Receivers(receipts, [latency_port, *fan_ports])
            )

            async def add_webhook(port: int) -> str:
                created = await http.post(
                    f"{url}/api/ekiben/v1/webhooks", json={"url": receivers.url(port)}, headers=auth
                )
                created.raise_for_status()
                receivers.secrets[port] = Webhook(created.json()["secret"])
                uid: str = created.json()["uid"]
                return uid

            latency_hook = await add_webhook(latency_port)
            connected = asyncio.Event()
            reader = asyncio.create_task(
                sse_reader(sse, url, token, lambda i: receipts.receive("sse", i), connected)
            )
            await asyncio.wait_for(connected.wait(), 30)
            counter = iter(range(10**9))
            latency_ways = ["raw", "sse", f"webhook:{latency_port}"]

            # Latency: warm-up, then N paced events.
            warm = [make_event(next(counter), 8) for _ in range(args.warmup)]
            await produce(producer, warm, receipts, args.rate)
            await receipts.wait_all(latency_ways, {e.id for e in warm}, args.drain_timeout)
            events = [make_event(next(counter), 8) for _ in range(args.events)]
            cpu = time.process_time()
            late = await produce(producer, events, receipts, args.rate)
            ids = {e.id for e in events}
            await receipts.wait_all(latency_ways, ids, args.drain_timeout)
            stages = await webhook_stages(dsn, receipts, ids, [f"webhook:{latency_port}"])
            results["latency"] = {
                "webhook_stages_ms": stages,
                "events": len(events),
                "late_sends": late,
                "bench_cpu_ms_per_event": (time.process_time() - cpu) * 1000 / len(events),
                **{
                    way.split(":")[0]: summary(receipts.latencies_ms(way, ids))
                    for way in latency_ways
                },
            }

            # Fan-out: 10 endpoints, N back-to-back events with distinct subjects.
            (
                await http.delete(f"{url}/api/ekiben/v1/webhooks/{latency_hook}", headers=auth)
            ).raise_for_status()
            for fan_port in fan_ports:
                await add_webhook(fan_port)
            fan = [make_event(next(counter)) for _ in range(args.fanout_events)]
            fan_ids = {e.id for e in fan}
            fan_ways = [f"webhook:{p}" for p in fan_ports]
            gateway_cpu = cpu_seconds(gateway.pid)
            bench_cpu = time.process_time()
            start = time.perf_counter()
            await produce(producer, fan, receipts, 0)
            produced = time.perf_counter() - start
            await receipts.wait_all(["raw", *fan_ways], fan_ids, args.drain_timeout)
            gateway_cpu = cpu_seconds(gateway.pid) - gateway_cpu
            bench_cpu = time.process_time() - bench_cpu
            last = max(receipts.got[w][i] for w in fan_ways for i in fan_ids)
            last_raw = max(receipts.got["raw"][i] for i in fan_ids)
            deliveries = len(fan) * len(fan_ways)
            failed_attempts = await failures(dsn)
            fan_stages = await webhook_stages(dsn, receipts, fan_ids, fan_ways)
            floor = await http_floor(
                [e.model_dump_json().encode() for e in fan], [receivers.url(p) for p in fan_ports]
            )
            results["fanout"] = {
                "events": len(fan),
                "receivers": len(fan_ways),
                "deliveries": deliveries,
                "producer_seconds": produced,
                "webhook_seconds": last - start,
                "webhook_deliveries_per_s": deliveries / (last - start),
                "raw_events_per_s": len(fan) / (last_raw - start),
                "failed_attempts": failed_attempts,
                "gateway_cpu_seconds": gateway_cpu,
                "bench_cpu_seconds": bench_cpu,
                "stages_ms": fan_stages,
                "http_floor_seconds": floor,
                "http_floor_posts_per_s": deliveries / floor,
                "webhook_latency_ms": summary(
                    [ms for w in fan_ways for ms in receipts.latencies_ms(w, fan_ids)]
                ),
            }
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await reader

            # Memory: 200 readers.
            await asyncio.sleep(1.0)
            idle = rss_bytes(gateway.pid)
            flags = [asyncio.Event() for _ in range(args.readers)]
            got: list[dict[str, float]] = [{} for _ in range(args.readers)]

            def on_reader_event(n: int) -> Callable[[str], None]:
                def record(event_id: str) -> None:
                    got[n].setdefault(event_id, time.perf_counter())
                    receipts.changed.set()

                return record

            readers = [
                asyncio.create_task(sse_reader(sse, url, token, on_reader_event(n), flags[n]))
                for n in range(args.readers)
            ]
            await asyncio.wait_for(asyncio.gather(*(f.wait() for f in flags)), 60)
            await asyncio.sleep(1.0)
            connected_rss = rss_bytes(gateway.pid)
            burst = [make_event(next(counter), 8) for _ in range(args.reader_events)]
            with RssSampler(gateway.pid) as sampler:
                await produce(producer, burst, receipts, args.rate)
                deadline = time.monotonic() + args.drain_timeout
                while any(len(g) < len(burst) for g in got):
                    if time.monotonic() > deadline:
                        raise RuntimeError("not every reader got every event")
                    await asyncio.sleep(0.05)
            fan_latency = [
                (g[e.id] - receipts.sent[e.id]) * 1000.0 for g in got for e in burst if e.id in g
            ]
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            results["readers"] = {
                "readers": args.readers,
                "events": len(burst),
                "rss_idle_mib": idle / 2**20,
                "rss_connected_mib": connected_rss / 2**20,
                "rss_peak_mib": sampler.peak / 2**20,
                "kib_per_reader": (connected_rss - idle) / args.readers / 1024,
                "latency_to_every_reader_ms": summary(fan_latency),
            }
            results["repeats"] = dict(receipts.repeats)
            results["bad_signatures"] = receivers.bad
    return results


def _f(value: float | None, spec: str = "8.2f") -> str:
    return "       -" if value is None else format(value, spec)


def print_report(report: dict[str, Any]) -> None:
    cfg, res = report["config"], report["results"]
    lat = res["latency"]
    print(
        f"Subscriptions benchmark: N={cfg['events']} paced at {cfg['rate']:g}/s, "
        f"warm-up {cfg['warmup']}, PostgreSQL fsync={'on' if cfg['fsync'] else 'off'}, "
        f"{report['host']['cpus']} CPUs"
    )
    before, after = report["host"]["loadavg_before"], report["host"]["loadavg_after"]
    print(
        f"load average (1/5 min) before {before[0]:.2f} {before[1]:.2f},"
        f" after {after[0]:.2f} {after[1]:.2f}: other work on this machine skews the figures"
    )
    print()
    header = f"{'outbox commit -> receiver, ms':<40}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}"
    print(header)
    print("-" * len(header))
    for key, label in (
        ("raw", "raw     JetStream ordered consumer"),
        ("sse", "sse     GET /api/ekiben/v1/events"),
        ("webhook", "webhook signed POST to a receiver"),
    ):
        s = lat[key]
        print(f"{label:<40}{_f(s['p50'])}{_f(s['p90'])}{_f(s['p99'])}{_f(s['max'])}")
    for name, st in lat["webhook_stages_ms"].items():
        label = f"  webhook: {name.replace('_', ' ')}"
        print(
            f"{label:<40}{_f(st.get('p50'))}{_f(st.get('p90'))}{_f(st.get('p99'))}{_f(st.get('max'))}"
        )
    cpu = lat["bench_cpu_ms_per_event"]
    print(f"(late sends {lat['late_sends']}, bench process CPU {cpu:.2f} ms/event)")
    print()
    fan = res["fanout"]
    fl = fan["webhook_latency_ms"]
    print(
        f"fan-out: {fan['events']} events x {fan['receivers']} webhooks ="
        f" {fan['deliveries']} deliveries in {fan['webhook_seconds']:.2f} s:"
        f" {fan['webhook_deliveries_per_s']:.0f} deliveries/s"
    )
    print(f"  commit -> receipt, queueing included: p50 {fl['p50']:.0f} ms, p99 {fl['p99']:.0f} ms")
    st = fan["stages_ms"]
    print(
        f"  of which commit -> queued p50 {st['commit_to_queued']['p50']:.0f} ms,"
        f" queued -> received p50 {st['queued_to_received']['p50']:.0f} ms"
    )
    print(
        f"  gateway CPU {fan['gateway_cpu_seconds']:.1f} s"
        f" ({fan['gateway_cpu_seconds'] * 1000 / fan['deliveries']:.2f} ms/delivery), this"
        f" process (producer, relay, receivers) {fan['bench_cpu_seconds']:.1f} s;"
        f" failed attempts (retried): {fan['failed_attempts'] or 'none'}"
    )
    print(
        f"  beside: raw JetStream {fan['raw_events_per_s']:.0f} events/s"
        f" (producer {fan['producer_seconds']:.2f} s); the same POSTs straight from aiohttp"
        f" ({HTTP_FLOOR_CONCURRENCY} at once): {fan['http_floor_posts_per_s']:.0f}/s"
    )
    print()
    r = res["readers"]
    s = r["latency_to_every_reader_ms"]
    print(
        f"gateway RSS: idle {r['rss_idle_mib']:.0f} MiB, {r['readers']} SSE readers connected "
        f"{r['rss_connected_mib']:.0f} MiB ({r['kib_per_reader']:.0f} KiB/reader), peak while "
        f"{r['events']} events reach every reader {r['rss_peak_mib']:.0f} MiB"
    )
    print(
        f"  commit -> each of {r['readers']} readers: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms"
    )
    print()
    t = report["targets"]
    for name, target, got in (
        ("sse", TARGET_SSE_P99_MS, t["sse_p99_ms"]),
        ("webhook", TARGET_WEBHOOK_P99_MS, t["webhook_p99_ms"]),
    ):
        verdict = "MET" if got < target else "MISSED"
        print(f"target: {name} p99 < {target:g} ms: {verdict} (p99 = {got:.2f} ms)")
    print(f"repeats: {res['repeats'] or 'none'}; bad signatures: {res['bad_signatures']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=2000, help="measured events (latency)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50.0, help="events/s in paced runs")
    parser.add_argument("--fanout-events", type=int, default=1000)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--reader-events", type=int, default=200)
    parser.add_argument("--fast-pg", action="store_true", help="PostgreSQL with fsync off")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("bench", level="WARNING", json=False)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ekiben-bench-") as tmp_name:
        tmp = Path(tmp_name)
        servers: list[RunningServer] = []
        try:
            servers.append(start_nats(tmp / "nats"))
            servers.append(start_postgres(tmp / "postgres", durable=not args.fast_pg))
            results = asyncio.run(run_all(args, servers[0].url, servers[1].url, tmp))
        except Exception as exc:
            traceback.print_exc()
            with contextlib.suppress(OSError):
                print((tmp / "gateway.log").read_text()[-3000:], file=sys.stderr)
            print(f"benchmark failed: {exc!r}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(servers):
                server.stop()
    report = {
        "config": {
            "events": args.events,
            "warmup": args.warmup,
            "rate": args.rate,
            "fsync": not args.fast_pg,
        },
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "results": results,
        "targets": {
            "sse_p99_ms": results["latency"]["sse"]["p99"],
            "webhook_p99_ms": results["latency"]["webhook"]["p99"],
        },
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
