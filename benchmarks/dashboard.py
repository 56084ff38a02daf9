"""Dashboard benchmark: first paint of /bentos with 10,000 versions and of /deployments with
200 deployments, event-to-screen latency.

What it measures (one run, in Debian's Chromium driven by Playwright)
---------------------------------------------------------------------
`ekiben up` runs on free ports in a temporary directory (the admin's password set from
the settings). 10,000 bento versions (100 repositories of 100) are written straight into
the registry's tables, the one shortcut: the API would take minutes to create them and the
pages read them through the API like any other.

- **First paint of /bentos**: a signed-in page navigates to `/bentos` (newest first, 20 a
  page, out of 10,000); `first-contentful-paint` from the browser's Paint Timing, over
  `--loads` loads (the first is a warm-up), and the time to the page's first byte (the
  dashboard asking the gateway who the session is, then for the page of versions).
  Beside it, in the same run: the raw cost of the data, `GET /api/v1/bentos?count=20`
  on the gateway with an API token (httpx), and the first paint of `/login`, a page that
  calls nothing. Target: p95 < 500 ms.
- **First paint of /deployments**: `--deployments` deployments (200): one created through
  the API (`POST /api/v2/deployments`, on a seeded bento), the rest copies of its row and
  revision written into the deployer's tables (the same shortcut as the versions). The
  page (20 a page, with the deploy form and the cluster list) is loaded like /bentos;
  beside it, the raw `GET /api/v2/deployments?all=true&count=20`. Target: p95 < 500 ms.
- **Event to screen**: `/events` is open and subscribed (EventSource -> the dashboard's
  /live -> the gateway's SSE). `--events` `model.pushed` events are published to
  JetStream, paced; a MutationObserver stamps each one's arrival in the feed
  (performance.timeOrigin + performance.now(), the same clock as time.time() here).
  Beside it, the raw floor: an SSE reader on the gateway in this process, timed the same
  way. Target: p99 < 1 s.

Run
---
    .venv/bin/python benchmarks/dashboard.py                 # 10,000 versions, 200 events
    .venv/bin/python benchmarks/dashboard.py --versions 2000 --deployments 50 --events 50 --json

A missed target is reported, not an error: the exit status is nonzero only when the
benchmark itself fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.events.types import ArtifactPushedData, ArtifactRef, ModelPushed  # noqa: E402
from tests.integration.test_up import Up  # noqa: E402

PASSWORD = "benchmark password"
CHROMIUM = os.environ.get("EKIBEN_CHROMIUM", "/usr/bin/chromium")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values),
    }


async def seed(dsn: str, versions: int) -> None:
    """`versions` bento versions in 100-version repositories, straight into the tables."""
    per_repo = 100
    repos = max(1, -(-versions // per_repo))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET search_path TO registry")
        await conn.execute(
            """INSERT INTO repositories (kind, organization, name, created_by)
               SELECT 'bento', 'default', 'bench-' || r, 'admin' FROM generate_series(1, $1) r""",
            repos,
        )
        await conn.execute(
            """INSERT INTO versions (repository_id, kind, organization, repository, version,
                                     manifest, labels, size_bytes, build_at, created_by,
                                     created_at, upload_status, object_key)
               SELECT r.id, 'bento', 'default', r.name, 'v' || g,
                      jsonb_build_object('service', 'service:Svc', 'entry_service', 'Svc'),
                      jsonb_build_object('team', 'team-' || (g % 7)), 1000 + g * 17,
                      now(), 'admin', now() - make_interval(secs => g), 'success',
                      'bench/' || r.name || '/' || g
               FROM repositories r, generate_series(1, $1) g
               WHERE r.name LIKE 'bench-%'
               LIMIT $2""",
            per_repo,
            versions,
        )
    finally:
        await conn.close()


async def seed_deployments(dsn: str, gateway: str, token: str, count: int) -> int:
    """One deployment through the API, then `count - 1` copies of its rows in SQL."""
    async with httpx.AsyncClient(timeout=60) as client:
        made = await client.post(
            f"{gateway}/api/v2/deployments",
            json={"bento": "bench-1:v1", "name": "bench-dep-0"},
            headers={"X-YATAI-API-TOKEN": token},
        )
        made.raise_for_status()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET search_path TO deployer")
        await conn.execute(
            """WITH src AS (SELECT * FROM deployments WHERE name = 'bench-dep-0'),
                    made AS (
                      INSERT INTO deployments (organization, name, cluster, namespace,
                                               created_by, status, labels, urls, created_at)
                      SELECT src.organization, 'bench-dep-' || g, src.cluster, src.namespace,
                             src.created_by, 'running', src.labels, src.urls,
                             now() - make_interval(secs => g)
                      FROM src, generate_series(1, $1) g
                      RETURNING id)
               INSERT INTO revisions (deployment_id, number, bento, config, spec, source,
                                      created_by)
               SELECT made.id, 1, r.bento, r.config, r.spec, r.source, r.created_by
               FROM made, revisions r JOIN src ON r.deployment_id = src.id""",
            count - 1,
        )
        total: int = await conn.fetchval("SELECT count(*) FROM deployments")
    finally:
        await conn.close()
    return total


async def sign_in(page: Page, base: str) -> None:
    await page.goto(f"{base}/login")
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(f"{base}/")


async def first_paint(page: Page, url: str, server: list[float] | None = None) -> float:
    """First contentful paint after navigating to `url`; the time to the response's first
    byte (the server's share) is appended to `server`."""
    await page.goto(url, wait_until="load")
    if server is not None:
        ttfb = await page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return n.responseStart - n.requestStart; }"
        )
        server.append(float(ttfb))
    value = await page.evaluate(
        """() => new Promise((resolve) => {
              const find = () => performance.getEntriesByName("first-contentful-paint")[0];
              const hit = find();
              if (hit) return resolve(hit.startTime);
              new PerformanceObserver((list) => {
                const e = list.getEntriesByName("first-contentful-paint")[0];
                if (e) resolve(e.startTime);
              }).observe({type: "paint", buffered: true});
            })"""
    )
    return float(value)


def model_event(version: str) -> ModelPushed:
    return ModelPushed(
        source="/ekiben/benchmark",
        subject=f"models/default/bench-live:{version}",
        data=ArtifactPushedData(
            artifact=ArtifactRef(organization="default", name="bench-live", version=version),
            size_bytes=1,
            object_key=f"bench/{version}",
        ),
    )


async def raw_sse(gateway: str, token: str, count: int, stamps: dict[str, float]) -> None:
    """The floor: the gateway's SSE read here, each event stamped when parsed."""
    headers = {"X-YATAI-API-TOKEN": token}
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream(
            "GET", f"{gateway}/api/ekiben/v1/events", headers=headers,
            params={"types": "model.pushed"},
        ) as response,
    ):  # fmt: skip
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                stamps[event["data"]["artifact"]["version"]] = time.time()
                if len(stamps) >= count:
                    return


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="ekiben-bench-dashboard-"))
    up = Up(root / "data", env={"EKIBEN_GATEWAY_SESSIONS__INITIAL_ADMIN_PASSWORD": PASSWORD})
    urls, _ = up.start(timeout=120)
    report: dict[str, Any] = {"loadavg_before": os.getloadavg()}
    try:
        state = up.state()
        token = (root / "data" / "admin-token").read_text().strip()
        begin = time.perf_counter()
        await seed(str(state["postgres_dsn"]), args.versions)
        report["seed_seconds"] = time.perf_counter() - begin
        gateway, dashboard = urls["gateway"], urls["dashboard"]
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"{gateway}/api/v1/bentos", headers={"X-YATAI-API-TOKEN": token}
            )
            report["versions_listed"] = answer.json()["total"]
            raw = []
            for _ in range(args.loads):
                start = time.perf_counter()
                listed = await client.get(
                    f"{gateway}/api/v1/bentos",
                    params={"count": "20", "q": "sort:created_at-desc"},
                    headers={"X-YATAI-API-TOKEN": token},
                )
                listed.raise_for_status()
                raw.append((time.perf_counter() - start) * 1000)
        report["api_list_ms"] = summary(raw[1:])
        report["deployments_seeded"] = await seed_deployments(
            str(state["postgres_dsn"]), gateway, token, args.deployments
        )
        async with httpx.AsyncClient() as client:
            raw = []
            for _ in range(args.loads):
                start = time.perf_counter()
                listed = await client.get(
                    f"{gateway}/api/v2/deployments",
                    params={"all": "true", "count": "20"},
                    headers={"X-YATAI-API-TOKEN": token},
                )
                listed.raise_for_status()
                raw.append((time.perf_counter() - start) * 1000)
            report["deployments_listed"] = listed.json()["total"]
        report["api_deployments_ms"] = summary(raw[1:])

        async with async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await sign_in(page, dashboard)
            ttfb: list[float] = []
            paints = [
                await first_paint(page, f"{dashboard}/bentos", ttfb) for _ in range(args.loads)
            ]
            report["bentos_first_paint_ms"] = summary(paints[1:])
            report["bentos_first_byte_ms"] = summary(ttfb[1:])
            ttfb = []
            paints = [
                await first_paint(page, f"{dashboard}/deployments", ttfb) for _ in range(args.loads)
            ]
            report["deployments_first_paint_ms"] = summary(paints[1:])
            report["deployments_first_byte_ms"] = summary(ttfb[1:])
            login_context = await browser.new_context()
            login_page = await login_context.new_page()
            plain = [await first_paint(login_page, f"{dashboard}/login") for _ in range(args.loads)]
            report["login_first_paint_ms"] = summary(plain[1:])

            # Event to screen.
            await page.goto(f"{dashboard}/events?type=model.pushed")
            await page.wait_for_selector("[data-live-feed][data-state=live]")
            await page.evaluate(
                """() => { window.__seen = {};
                    const list = document.querySelector("[data-items]");
                    new MutationObserver((changes) => {
                      const now = performance.timeOrigin + performance.now();
                      for (const c of changes) for (const n of c.addedNodes) {
                        const text = n.textContent || "";
                        const m = text.match(/bench-live:(\\S+)/);
                        if (m) window.__seen[m[1]] = now;
                      }
                    }).observe(list, {childList: true}); }"""
            )
            raw_stamps: dict[str, float] = {}
            reader = asyncio.create_task(raw_sse(gateway, token, args.events, raw_stamps))
            await asyncio.sleep(1.0)  # the raw reader connected
            nc = await nats.connect(str(state["nats_url"]))
            sent: dict[str, float] = {}
            try:
                js = nc.jetstream()
                for i in range(args.events):
                    event = model_event(f"e{i}-{uuid.uuid4().hex[:6]}")
                    sent[event.data.artifact.version] = time.time()
                    await js.publish(
                        event.nats_subject,
                        event.model_dump_json().encode(),
                        headers={"Nats-Msg-Id": event.id},
                    )
                    await asyncio.sleep(1 / args.rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader, timeout=15)
                deadline = time.monotonic() + 15
                seen: dict[str, float] = {}
                while time.monotonic() < deadline:
                    seen = await page.evaluate("window.__seen")
                    if len(seen) >= len(sent):
                        break
                    await asyncio.sleep(0.2)
            finally:
                reader.cancel()
                await nc.close()
            screen = [(seen[v] / 1000 - t) * 1000 for v, t in sent.items() if v in seen]
            floor = [(raw_stamps[v] - t) * 1000 for v, t in sent.items() if v in raw_stamps]
            report["event_to_screen_ms"] = summary(screen) if screen else {}
            report["event_to_raw_sse_ms"] = summary(floor) if floor else {}
            report["events_missing_on_screen"] = len(sent) - len(screen)
            await browser.close()
    finally:
        report["loadavg_after"] = os.getloadavg()
        up.stop()
        shutil.rmtree(root, ignore_errors=True)
    return report


def show(report: dict[str, Any]) -> None:
    before, after = report["loadavg_before"], report["loadavg_after"]
    print(f"load average before {before[0]:.2f}, after {after[0]:.2f} (2 cores shared)")
    print(f"seeded {report['versions_listed']} bento versions in {report['seed_seconds']:.1f}s")
    print()
    header = f"{'':<44}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"
    print(header)
    print("-" * len(header))
    rows = [
        ("/bentos first contentful paint (ms)", "bentos_first_paint_ms"),
        ("  of which the page's first byte (ms)", "bentos_first_byte_ms"),
        ("  raw: GET /api/v1/bentos?count=20 (ms)", "api_list_ms"),
        ("  raw: /login first contentful paint (ms)", "login_first_paint_ms"),
        ("/deployments first contentful paint (ms)", "deployments_first_paint_ms"),
        ("  of which the page's first byte (ms)", "deployments_first_byte_ms"),
        ("  raw: GET /api/v2/deployments?count=20 (ms)", "api_deployments_ms"),
        ("event -> on screen in /events (ms)", "event_to_screen_ms"),
        ("  raw: event -> gateway SSE reader (ms)", "event_to_raw_sse_ms"),
    ]
    for label, key in rows:
        s = report.get(key) or {}
        if s:
            print(f"{label:<44}{s['p50']:>8.0f}{s['p95']:>8.0f}{s['p99']:>8.0f}{s['max']:>8.0f}")
    paint, login = report["bentos_first_paint_ms"], report["login_first_paint_ms"]
    screen, floor = report.get("event_to_screen_ms") or {}, report.get("event_to_raw_sse_ms") or {}
    print()
    print(
        f"/bentos p95 first paint {paint['p95']:.0f} ms (target < 500 ms:"
        f" {'met' if paint['p95'] < 500 else 'MISSED'});"
        f" {paint['p50'] / login['p50']:.2f}x the paint of a page that calls nothing"
    )
    deploys = report["deployments_first_paint_ms"]
    print(
        f"/deployments ({report['deployments_listed']} deployments) p95 first paint"
        f" {deploys['p95']:.0f} ms (target < 500 ms:"
        f" {'met' if deploys['p95'] < 500 else 'MISSED'});"
        f" {deploys['p50'] / login['p50']:.2f}x the paint of a page that calls nothing"
    )
    if screen and floor:
        print(
            f"event to screen p99 {screen['p99']:.0f} ms (target < 1000 ms:"
            f" {'met' if screen['p99'] < 1000 else 'MISSED'}); the dashboard's relay and the"
            f" browser add {screen['p50'] - floor['p50']:.0f} ms at p50 over the raw SSE"
            f" reader; {report['events_missing_on_screen']} events missing"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=21, help="page loads (first: warm-up)")
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)


if __name__ == "__main__":
    main()
