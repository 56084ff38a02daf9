"""Outbox latency benchmark: commit -> consumer handler, against a raw JetStream baseline.

What it measures
----------------
*Outbox path* (what Ekiben services do): a transaction calls `write_event` and commits;
the `OutboxRelay` of a `BackendRuntime` is woken by the insert trigger's NOTIFY, reads the
row and publishes it with `Nats-Msg-Id`; the durable pull consumer registered with
`runtime.subscribe` (shared/bus/consumer.py) fetches it and calls the handler.

    latency = t1 - t0
    t0 = time.perf_counter() right after the transaction that called write_event commits
    t1 = time.perf_counter() at the first line of the consumer's handler

*Raw baseline* (the floor JetStream itself gives): nats-py publishes the same JSON body,
with the same `Nats-Msg-Id` header, to a file-backed stream and awaits the PubAck; a raw
nats-py durable pull consumer (explicit ack, `fetch(batch=1)`) receives it.

    t0 = time.perf_counter() right after `js.publish` returns, i.e. after the PubAck
    t1 = time.perf_counter() when `fetch` hands the message to the consumer loop

Both t0s are "the moment the producer's write is durable and acknowledged" (PostgreSQL
COMMIT returned / JetStream PubAck returned), so the two latencies are comparable: each is
the time from "the producer may tell its caller it is done" to "a consumer can act". Events
are matched by event id (the outbox event id, which is also the `Nats-Msg-Id`). A raw
message can reach the consumer before its PubAck reaches the producer (the server acks the
publish and serves the waiting pull request at about the same time), so raw latencies are
tiny and may be <= 0. For context the report also gives
both paths with t0 taken *before* the write (outbox: before acquiring a connection for the
transaction; raw: before the publish call), which includes the commit / PubAck itself.

A diagnostic third run uses a raw pull consumer with the fetch parameters of
shared/bus/consumer.py (`batch=16, timeout=1.0`), to separate the cost of the consumer's
fetch strategy from the cost of the outbox (relay) itself. The outbox run is also split in
two stages using the JetStream store time of each message (server wall clock, same host):
commit -> stored in the stream (the relay) and stored -> handler (the consumer). The
handlers only record the time: what is measured is delivery, not a handler's own work.
"cpu/ev" is this Python process's CPU time per event (ms) during a run: producer, relay and
consumer for the outbox, publisher and consumer for raw (the servers' CPU is not counted).

How events are sent (latency, not queueing)
-------------------------------------------
Latency runs are open-loop and paced: event i is sent at start + i / rate (default 50
events/s), one at a time; the producer awaits its own commit / PubAck but never waits for
consumption. The rate must stay under what one sequential producer sustains, or the run
measures queueing: with fsync on, a commit costs a WAL flush, and on a small, busy machine
one writer may manage only ~80-300 commits/s. A send that falls behind its slot goes at
once; the "late" column counts them, and more than a few percent late means the rate is
too high for the machine (lower `--rate`). A few warm-up events, not measured, precede
each run. `--rate 0` sends back to back instead.

Throughput runs are separate: N events sent back to back by one sequential producer
(awaiting each commit / PubAck, not consumption); throughput = N / (last handler receipt -
first send). Their latencies include queueing and are reported only as context.

Run
---
    .venv/bin/python benchmarks/outbox_latency.py                 # N=2000, fsync on
    .venv/bin/python benchmarks/outbox_latency.py --events 500 --rate 50 --fast-pg --json

It starts its own NATS (JetStream) and PostgreSQL (shared/devstack/servers.py) on free
loopback ports in a temporary directory and stops them at the end. PostgreSQL runs with
fsync on (`durable=True`, like production) unless `--fast-pg`. The target is "outbox p99
under 25 ms"; a missed target is reported, not an error: the exit status is nonzero only
when the benchmark itself fails (a server does not start, events are lost, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import nats
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.bus import Delivery
from shared.devstack.servers import RunningServer, start_nats, start_postgres
from shared.events import EVENT_STREAM, AnyEvent, ArtifactRef, BentoPushed
from shared.logging import configure_logging
from shared.outbox import write_event
from shared.service import BackendRuntime
from shared.settings import BackendSettings, NatsSettings, PostgresSettings

TARGET_P99_MS = 25.0
CONSUMER = "bench-latency"
# The fetch parameters shared/bus/consumer.py gives FastStream's PullSub.
SHARED_FETCH_BATCH = 16
SHARED_FETCH_TIMEOUT = 1.0


class BenchSettings(BackendSettings):
    """A throwaway bus service (schema `bench`), like tests/fixtures/runtime.py's probe."""

    service_name: ClassVar[str] = "bench"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_BENCH_")


def make_event(i: int) -> BentoPushed:
    return BentoPushed(
        source="/ekiben/bench",
        subject=f"bentos/default/iris:v{i}",
        data={
            "artifact": ArtifactRef(organization="default", name="iris", version=f"v{i}"),
            "size_bytes": 10,
            "object_key": f"bentos/iris/v{i}.bento",
        },
    )


# --- recording -------------------------------------------------------------------------


@dataclass
class Recorder:
    """Send and receive times of one run, matched by event id."""

    ids: set[str]
    started: dict[str, float] = field(default_factory=dict)  # id -> perf, before the write
    sent: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (perf, wall)
    received: dict[str, tuple[float, float, int]] = field(default_factory=dict)  # + seq
    duplicates: int = 0
    unknown: int = 0  # deliveries of events from an earlier run (redeliveries)
    first_send: float | None = None
    all_received: asyncio.Event = field(default_factory=asyncio.Event)

    def sending(self) -> None:
        if self.first_send is None:
            self.first_send = time.perf_counter()

    def starting(self, event_id: str) -> None:
        self.started[event_id] = time.perf_counter()

    def sent_now(self, event_id: str) -> None:
        self.sent[event_id] = (time.perf_counter(), time.time())

    def received_now(self, event_id: str, stream_seq: int) -> None:
        t1, wall = time.perf_counter(), time.time()
        if event_id not in self.ids:
            self.unknown += 1
            return
        if event_id in self.received:
            self.duplicates += 1
            return
        self.received[event_id] = (t1, wall, stream_seq)
        if len(self.received) == len(self.ids):
            self.all_received.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_received.wait(), seconds)
        missing = len(self.ids) - len(self.received)
        if missing:
            raise RuntimeError(f"{missing} of {len(self.ids)} events not received in {seconds}s")

    def latencies_ms(self) -> list[float]:
        # A raw message can reach the consumer before its PubAck reaches the producer: such a
        # latency is <= 0, and kept (it is what the definition gives).
        return [
            (t1 - self.sent[event_id][0]) * 1000.0
            for event_id, (t1, _, _) in self.received.items()
            if event_id in self.sent
        ]

    def from_start_ms(self) -> list[float]:
        """Latencies from before the producer's write (BEGIN / publish call) instead."""
        return [
            (t1 - self.started[event_id]) * 1000.0
            for event_id, (t1, _, _) in self.received.items()
            if event_id in self.started
        ]


@dataclass
class Pacing:
    sent: int
    late: int
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time from the first send to the last receipt


async def send_paced(
    n: int, rate: float, send: Callable[[int], Awaitable[None]], recorder: Recorder
) -> Pacing:
    """Call `send(i)` for i < n, one at a time, event i at start + i / rate (0: no pacing)."""
    start = time.perf_counter()
    late = 0
    for i in range(n):
        if rate > 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i:
                late += 1
        recorder.sending()
        await send(i)
    return Pacing(sent=n, late=late, seconds=time.perf_counter() - start)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    if len(values) == 1:
        v = values[0]
        return {"p50": v, "p90": v, "p99": v, "max": v, "mean": v, "min": v}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "p50": q[49],
        "p90": q[89],
        "p99": q[98],
        "max": max(values),
        "mean": statistics.fmean(values),
        "min": min(values),
    }


async def stored_times(js: JetStreamContext, stream: str, seqs: list[int]) -> dict[int, float]:
    """JetStream's store time (wall clock, seconds) of each message."""
    out: dict[int, float] = {}
    for seq in seqs:
        msg = await js.get_msg(stream, seq)
        if msg.time is not None:
            out[seq] = msg.time.timestamp()
    return out


async def stages(js: JetStreamContext, stream: str, rec: Recorder) -> dict[str, dict[str, float]]:
    """Split each latency at the stream's store time: producer side and consumer side."""
    stored = await stored_times(js, stream, [seq for _, _, seq in rec.received.values()])
    write_to_store, store_to_handler = [], []
    for event_id, (_, t1_wall, seq) in rec.received.items():
        if seq not in stored or event_id not in rec.sent:
            continue
        write_to_store.append((stored[seq] - rec.sent[event_id][1]) * 1000.0)
        store_to_handler.append((t1_wall - stored[seq]) * 1000.0)
    return {
        "t0_to_stored_ms": summary(write_to_store),
        "stored_to_handler_ms": summary(store_to_handler),
    }


def run_result(
    rec: Recorder, pacing: Pacing, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    lat = rec.latencies_ms()
    last_receipt = max(t1 for t1, _, _ in rec.received.values())
    elapsed = last_receipt - (rec.first_send or last_receipt)
    return {
        "events": len(lat),
        "latency_ms": summary(lat),
        "from_write_start_ms": summary(rec.from_start_ms()),
        "send_seconds": pacing.seconds,
        "send_rate_per_s": pacing.sent / pacing.seconds if pacing.seconds else None,
        "late_sends": pacing.late,
        "end_to_end_seconds": elapsed,
        "throughput_per_s": len(lat) / elapsed if elapsed > 0 else None,
        "process_cpu_ms_per_event": pacing.cpu_seconds * 1000.0 / len(lat) if lat else None,
        "duplicates": rec.duplicates,
        "stray_deliveries": rec.unknown,
        **(extra or {}),
    }


# --- outbox path -----------------------------------------------------------------------


async def bench_outbox(nats_url: str, pg_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    settings = BenchSettings(
        nats=NatsSettings(url=nats_url),
        postgres=PostgresSettings(dsn=SecretStr(pg_dsn)),
    )
    runtime = BackendRuntime(settings, migrations_dir=None)
    current: list[Recorder] = [Recorder(ids=set())]

    async def on_event(event: AnyEvent, delivery: Delivery) -> None:
        current[0].received_now(event.id, delivery.stream_sequence)

    runtime.subscribe(consumer=CONSUMER, handler=on_event, events=[BentoPushed])
    counter = iter(range(10**9))

    async def run(n: int, rate: float) -> tuple[Recorder, Pacing]:
        events = [make_event(next(counter)) for _ in range(n)]
        rec = Recorder(ids={e.id for e in events})
        current[0] = rec

        async def send(i: int) -> None:
            rec.starting(events[i].id)
            async with runtime.pool.acquire() as conn:
                async with conn.transaction():
                    await write_event(conn, events[i])
                # t0: the COMMIT has returned (before the pool's reset query on release).
                rec.sent_now(events[i].id)

        cpu = time.process_time()
        pacing = await send_paced(n, rate, send, rec)
        await rec.wait(args.drain_timeout)
        pacing.cpu_seconds = time.process_time() - cpu
        return rec, pacing

    async with runtime.running():
        await asyncio.sleep(0.5)  # the pull subscription is up and idle
        if args.warmup:
            await run(args.warmup, args.rate)
        rec, pacing = await run(args.events, args.rate)
        js = runtime.broker.connection.jetstream()
        latency = run_result(rec, pacing, await stages(js, EVENT_STREAM, rec))
        rec, pacing = await run(args.throughput_events, 0)
        throughput = run_result(rec, pacing)
    return {"latency_run": latency, "throughput_run": throughput}


# --- raw JetStream path ----------------------------------------------------------------


async def bench_raw(
    nats_url: str, args: argparse.Namespace, *, name: str, batch: int, fetch_timeout: float
) -> dict[str, Any]:
    nc: NatsClient = await nats.connect(nats_url, name=f"bench-{name}")
    js = nc.jetstream()
    stream = f"BENCH_{name.upper()}"
    subject = f"bench.{name}.bento.pushed"
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"bench.{name}.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=NatsSettings().duplicate_window_seconds,
        )
    )
    psub = await js.pull_subscribe(
        subject,
        durable=f"bench-{name}",
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30.0,
            max_ack_pending=SHARED_FETCH_BATCH * 16,
        ),
    )
    current: list[Recorder] = [Recorder(ids=set())]

    async def consume() -> None:
        while True:
            try:
                msgs = await psub.fetch(batch=batch, timeout=fetch_timeout)
            except TimeoutError:
                # Not only nats.errors.TimeoutError: an idle batch fetch can also end in a
                # bare asyncio.TimeoutError (nats-py's _fetch_n, deadline spent).
                continue
            for msg in msgs:
                event_id = (msg.headers or {}).get("Nats-Msg-Id", "")
                current[0].received_now(event_id, msg.metadata.sequence.stream)
                await msg.ack()

    consumer = asyncio.create_task(consume(), name=f"bench-{name}-consumer")
    counter = iter(range(10**9))

    async def run(n: int, rate: float) -> tuple[Recorder, Pacing]:
        events = [make_event(next(counter)) for _ in range(n)]
        rec = Recorder(ids={e.id for e in events})
        current[0] = rec
        bodies = [e.model_dump_json().encode() for e in events]

        async def send(i: int) -> None:
            headers = {"Nats-Msg-Id": events[i].id, "Ce-Type": events[i].type}
            rec.starting(events[i].id)
            await js.publish(subject, bodies[i], headers=headers)
            rec.sent_now(events[i].id)  # t0: the PubAck has arrived

        cpu = time.process_time()
        pacing = await send_paced(n, rate, send, rec)
        await rec.wait(args.drain_timeout)
        pacing.cpu_seconds = time.process_time() - cpu
        return rec, pacing

    try:
        await asyncio.sleep(0.5)
        if args.warmup:
            await run(args.warmup, args.rate)
        rec, pacing = await run(args.events, args.rate)
        latency = run_result(rec, pacing, await stages(js, stream, rec))
        result: dict[str, Any] = {"latency_run": latency}
        if batch == 1:
            rec, pacing = await run(args.throughput_events, 0)
            result["throughput_run"] = run_result(rec, pacing)
        return result
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await nc.close()


# --- orchestration ---------------------------------------------------------------------


async def run_all(
    args: argparse.Namespace, nats_server: RunningServer, pg_server: RunningServer
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    results["outbox"] = await bench_outbox(nats_server.url, pg_server.url, args)
    results["raw"] = await bench_raw(nats_server.url, args, name="raw", batch=1, fetch_timeout=1.0)
    if args.diagnostics:
        results["raw_shared_fetch"] = await bench_raw(
            nats_server.url,
            args,
            name="rawb16",
            batch=SHARED_FETCH_BATCH,
            fetch_timeout=SHARED_FETCH_TIMEOUT,
        )
    return results


def ratios(outbox: dict[str, float], raw: dict[str, float]) -> dict[str, float | None]:
    return {k: (outbox[k] / raw[k] if raw.get(k) else None) for k in ("p50", "p90", "p99", "max")}


def build_report(args: argparse.Namespace, results: dict[str, Any], load: Any) -> dict[str, Any]:
    outbox_lat = results["outbox"]["latency_run"]["latency_ms"]
    raw_lat = results["raw"]["latency_run"]["latency_ms"]
    return {
        "config": {
            "events": args.events,
            "warmup": args.warmup,
            "rate_per_s": args.rate,
            "throughput_events": args.throughput_events,
            "postgres_fsync": not args.fast_pg,
            "shared_fetch": {"batch": SHARED_FETCH_BATCH, "timeout_s": SHARED_FETCH_TIMEOUT},
        },
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": load[0],
            "loadavg_after": load[1],
        },
        "results": results,
        "ratio_outbox_over_raw": ratios(outbox_lat, raw_lat),
        "ratio_outbox_over_raw_from_write_start": ratios(
            results["outbox"]["latency_run"]["from_write_start_ms"],
            results["raw"]["latency_run"]["from_write_start_ms"],
        ),
        "target": {
            "p99_ms": TARGET_P99_MS,
            "outbox_p99_ms": outbox_lat["p99"],
            "met": outbox_lat["p99"] < TARGET_P99_MS,
        },
    }


def _fmt(value: float | None, spec: str = "8.2f") -> str:
    return "       -" if value is None else format(value, spec)


def print_report(report: dict[str, Any]) -> None:
    cfg, host, res = report["config"], report["host"], report["results"]
    rate = f"paced at {cfg['rate_per_s']:g}/s" if cfg["rate_per_s"] else "back to back"
    print(
        f"Outbox latency benchmark: N={cfg['events']} {rate}, warm-up {cfg['warmup']}, "
        f"PostgreSQL fsync={'on' if cfg['postgres_fsync'] else 'off'}"
    )
    before, after = host["loadavg_before"], host["loadavg_after"]
    print(
        f"host: {host['cpus']} CPUs, load avg before {before[0]:.2f} {before[1]:.2f}, "
        f"after {after[0]:.2f} {after[1]:.2f} (1/5 min)"
    )
    print()
    header = f"{'latency, ms':<46}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}{'late':>6}{'cpu/ev':>8}"
    print(header)
    print("-" * len(header))
    rows = [
        ("outbox  commit -> handler", res["outbox"]["latency_run"]),
        ("raw     PubAck -> fetch(batch=1)", res["raw"]["latency_run"]),
    ]
    if "raw_shared_fetch" in res:
        fetch = cfg["shared_fetch"]
        label = f"diag    PubAck -> fetch(batch={fetch['batch']}, timeout={fetch['timeout_s']:g}s)"
        rows.append((label, res["raw_shared_fetch"]["latency_run"]))
    for label, run in rows:
        s = run["latency_ms"]
        print(
            f"{label:<46}{_fmt(s['p50'])}{_fmt(s['p90'])}{_fmt(s['p99'])}{_fmt(s['max'])}"
            f"{run['late_sends']:>6}{_fmt(run['process_cpu_ms_per_event'])}"
        )
    r = report["ratio_outbox_over_raw"]
    print(f"{'ratio outbox / raw':<46}{_fmt(r['p50'])}{_fmt(r['p90'])}{_fmt(r['p99'])}")
    print()
    print("the same with t0 taken before the producer's write (its commit / PubAck included):")
    for label, run in (
        ("outbox  BEGIN -> handler", res["outbox"]["latency_run"]),
        ("raw     publish call -> fetch(batch=1)", res["raw"]["latency_run"]),
    ):
        s = run["from_write_start_ms"]
        print(f"{label:<46}{_fmt(s['p50'])}{_fmt(s['p90'])}{_fmt(s['p99'])}{_fmt(s['max'])}")
    r = report["ratio_outbox_over_raw_from_write_start"]
    print(f"{'ratio outbox / raw':<46}{_fmt(r['p50'])}{_fmt(r['p90'])}{_fmt(r['p99'])}")
    print()
    print("where the time goes (split at the JetStream store time):")
    stage_rows = [("outbox", res["outbox"]), ("raw", res["raw"])]
    if "raw_shared_fetch" in res:
        stage_rows.append(("diag", res["raw_shared_fetch"]))
    for name, block in stage_rows:
        run = block["latency_run"]
        a, b = run["t0_to_stored_ms"], run["stored_to_handler_ms"]
        # For raw runs t0 (the PubAck) comes after the store: that stage is not shown.
        first = (
            f"commit -> stored  p50 {_fmt(a['p50'], '7.2f')}  p99 {_fmt(a['p99'], '7.2f')}"
            if name == "outbox"
            else " " * 41
        )
        print(
            f"  {name:<7}{first}   stored -> handler  p50 {_fmt(b['p50'], '7.2f')}"
            f"  p99 {_fmt(b['p99'], '7.2f')}"
        )
    print()
    print(f"throughput ({cfg['throughput_events']} events, one sequential producer, no pacing):")
    for name in ("outbox", "raw"):
        run = res[name]["throughput_run"]
        s = run["latency_ms"]
        print(
            f"  {name:<7}{_fmt(run['throughput_per_s'], '8.1f')} events/s end to end "
            f"(producer {run['send_rate_per_s']:.1f}/s; latency incl. queueing "
            f"p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms)"
        )
    print()
    t = report["target"]
    verdict = "MET" if t["met"] else "MISSED"
    print(f"target: outbox p99 < {t['p99_ms']:g} ms: {verdict} (p99 = {t['outbox_p99_ms']:.2f} ms)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Outbox commit -> consumer latency vs raw JetStream (see module docstring)."
    )
    parser.add_argument("--events", type=int, default=2000, help="measured events per run")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured events first")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="events/s in latency runs (0: back to back)"
    )
    parser.add_argument(
        "--throughput-events", type=int, default=None, help="events in throughput runs (=N)"
    )
    parser.add_argument(
        "--fast-pg", action="store_true", help="PostgreSQL with fsync off (default: on)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--no-diagnostics",
        dest="diagnostics",
        action="store_false",
        help="skip the raw run with the shared consumer's fetch parameters",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=60.0, help="seconds to wait for the last events"
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.warmup < 0 or args.rate < 0:
        parser.error("--events must be >= 1, --warmup and --rate >= 0")
    if args.throughput_events is None:
        args.throughput_events = args.events
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Library logs (structlog, FastStream) go to stderr, warnings and up, away from the report.
    configure_logging("bench", level="WARNING", json=False)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ekiben-bench-") as tmp:
        servers: list[RunningServer] = []
        try:
            nats_server = start_nats(Path(tmp) / "nats")
            servers.append(nats_server)
            pg_server = start_postgres(Path(tmp) / "postgres", durable=not args.fast_pg)
            servers.append(pg_server)
            print(
                f"servers up: {nats_server.url} ({nats_server.started_in:.1f}s), "
                f"{pg_server.url} ({pg_server.started_in:.1f}s)",
                file=sys.stderr,
            )
            results = asyncio.run(run_all(args, nats_server, pg_server))
        except Exception as exc:
            traceback.print_exc()
            print(f"benchmark failed: {exc!r}", file=sys.stderr)
            return 1
        finally:
            for server in reversed(servers):
                server.stop()
    report = build_report(args, results, (load_before, os.getloadavg()))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
