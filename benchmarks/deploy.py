"""Deployer benchmark: status push latency, create -> running, and writes while idle.

What it measures (each beside a raw baseline measured in the same run)
----------------------------------------------------------------------
1. **Status push**: a change on the cluster -> `deployment.status_changed` on NATS.
   The change is the deployment's Bento disappearing and coming back (image-building, then
   running again: two status changes per cycle, each caused by one API write).

       t0 = just after the API server answered the write (DELETE or POST of the Bento)
       t1 = when a core NATS subscriber on ekiben.events.deployment.status_changed gets
            the event for that deployment with the expected status

   The path: watch event -> work queue -> reconcile (caches, render, status write) ->
   PostgreSQL commit with the outbox row -> relay (NOTIFY) -> JetStream -> subscriber.
   *Raw baseline*: the same writes seen by a bare `Watcher` on Bentos (t1 = the watch event),
   the floor any watch-driven controller stands on. Yatai polls every 60 s.

2. **Create -> running** on kwok nodes, for 1 deployment and for N at once (default 50):
   t0 before the create commands (over NATS, as the gateway sends them), t1 when the
   deployment's `running` status_changed arrives. *Raw baseline*: the same number of plain
   Deployments created straight on the API server until each is Available (what kwok and
   the controller-manager cost with no Ekiben at all).

3. **Writes while idle**: with M deployments (default 200) running, every write request the
   deployer's Kubernetes client sends during an idle period, with every key enqueued again
   at its start (a full resync, what the periodic resync does every 10 min). The Lease's
   renewals (leader election's heartbeat) are counted apart. Target: 0.

Run
---
    .venv/bin/python benchmarks/deploy.py                          # 200 changes, 50, 200, 60 s
    .venv/bin/python benchmarks/deploy.py --changes 40 --burst 10 --idle-deployments 50 --idle 20

It starts NATS, PostgreSQL (fsync off) and a Kubernetes control plane with kwok nodes
(tests/k8s/build.sh must have built it) in a temporary directory and stops them at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
from kubernetes_asyncio import client
from pydantic import SecretStr

from services.deployer.app import Deployer, create_runtime
from services.deployer.settings import DeployerKubeSettings, DeployerSettings
from shared.contracts import deployer as dep
from shared.contracts.builder import bento_resource_name
from shared.contracts.registry import Scope
from shared.devstack.kube import KubeControlPlane, crd_paths
from shared.devstack.servers import start_nats, start_postgres
from shared.events import subject_for
from shared.kube.client import api_client_from_kubeconfig
from shared.kube.kinds import BENTO, DEPLOYMENT, NAMESPACE
from shared.kube.objects import Objects
from shared.kube.watch import Watcher
from shared.settings import NatsSettings, PostgresSettings, TelemetrySettings

SCOPE = Scope(organization="default", actor="bench")
NAMESPACE_NAME = "bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.50), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def bento(tag: str) -> dict[str, Any]:
    name, version = tag.split(":")
    return {
        "apiVersion": BENTO.api_version,
        "kind": BENTO.kind,
        "metadata": {
            "name": bento_resource_name("default", name, version),
            "namespace": NAMESPACE_NAME,
        },
        "spec": {"tag": tag, "image": f"registry.invalid/{name}:{version}",
                 "entryService": "Svc", "services": [{"name": "Svc"}]},
    }  # fmt: skip


class StatusFeed:
    """deployment.status_changed events as they arrive on NATS (core subscription)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []  # (t, deployment, status)
        self.changed = asyncio.Event()

    async def handler(self, msg: Any) -> None:
        event = json.loads(msg.data)
        data = event["data"]
        self.arrivals.append((time.perf_counter(), data["deployment"]["name"], data["status"]))
        self.changed.set()

    async def wait_for(self, name: str, status: str, after: float, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            for t, who, what in self.arrivals:
                if t >= after and who == name and what == status:
                    return t
            self.changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                mine = [
                    (round(t - after, 3), what) for t, who, what in self.arrivals if who == name
                ]
                raise TimeoutError(f"{name} never became {status} (seen: {mine})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@contextlib.asynccontextmanager
async def servers(workdir: Path) -> AsyncIterator[tuple[str, str, KubeControlPlane]]:
    nats_server = start_nats(workdir / "nats")
    pg = start_postgres(workdir / "pg", durable=False)
    plane = KubeControlPlane.start(workdir / "k8s")
    try:
        plane.apply_crds(crd_paths())
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE DATABASE bench")
        await conn.close()
        yield nats_server.url, pg.url.rsplit("/", 1)[0] + "/bench", plane
    finally:
        plane.stop()
        pg.stop()
        nats_server.stop()


async def create(deployer: Deployer, name: str, tag: str) -> None:
    bento_name, version = tag.split(":")
    target = dep.BentoTarget(name=bento_name, version=version, services=["Svc"],
                             entry_service="Svc")  # fmt: skip
    await deployer.runtime.rpc.call(
        dep.CREATE_DEPLOYMENT, dep.CreateDeployment(scope=SCOPE, name=name, bento=target)
    )


async def raw_rollout(objects: Objects, apps: client.AppsV1Api, count: int, prefix: str) -> float:
    """Plain Deployments created at once until each is Available: the seconds it took."""
    began = time.perf_counter()
    names = [f"{prefix}-{i}" for i in range(count)]
    for name in names:
        labels = {"app": name}
        await objects.create(DEPLOYMENT, {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE_NAME, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/raw:1"}]},
            }},
        })  # fmt: skip
    pending = set(names)
    while pending:
        listed = await apps.list_namespaced_deployment(NAMESPACE_NAME)
        for item in listed.items:
            conditions = {c.type: c.status for c in item.status.conditions or []}
            if (
                item.metadata.name in pending
                and conditions.get("Available") == "True"
                and (item.status.ready_replicas or 0) >= 1
            ):
                pending.discard(item.metadata.name)
        await asyncio.sleep(0.05)
    took = time.perf_counter() - began
    # Their pods would take room on the kwok nodes (110 pods each) from what follows.
    for name in names:
        await objects.delete(DEPLOYMENT, (NAMESPACE_NAME, name))
    return took


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="ekiben-bench-deploy-") as tmp:
        async with servers(Path(tmp)) as (nats_url, dsn, plane):
            api = await api_client_from_kubeconfig(plane.kubeconfig_path)
            objects = Objects(api, field_manager="bench")
            apps = client.AppsV1Api(api)
            await objects.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                             "metadata": {"name": NAMESPACE_NAME}})  # fmt: skip
            settings = DeployerSettings(
                nats=NatsSettings(url=nats_url),
                postgres=PostgresSettings(dsn=SecretStr(dsn), pool_max_size=20),
                cluster_name="bench",
                namespace=NAMESPACE_NAME,
                kube=DeployerKubeSettings(
                    kubeconfig=plane.kubeconfig_path, namespace=NAMESPACE_NAME
                ),
                workers=4,
                telemetry=TelemetrySettings(log_level="WARNING"),
            )
            deployer = create_runtime(settings)
            feed = StatusFeed()
            nc = await nats.connect(nats_url)
            await nc.subscribe(subject_for("deployment.status_changed"), cb=feed.handler)
            async with deployer.runtime.running():
                kube = deployer.controller
                assert kube is not None
                while not kube.leading or kube.controller is None:
                    await asyncio.sleep(0.05)
                await kube.controller.wait_synced()

                # --- 2. create -> running --------------------------------------------
                await objects.create(BENTO, bento("svc:v1"))
                for label, count in (("one", 1), ("burst", args.burst)):
                    began = time.perf_counter()
                    names = [f"c{label}-{i}" for i in range(count)]
                    await asyncio.gather(*(create(deployer, n, "svc:v1") for n in names))
                    done = await asyncio.gather(*(
                        feed.wait_for(n, "running", began, 300) for n in names
                    ))  # fmt: skip
                    raw = await raw_rollout(objects, apps, count, f"raw{label}")
                    results[f"create_to_running_{count}"] = {
                        "ekiben_s": round(max(done) - began, 2),
                        "ekiben_p50_s": round(pct([t - began for t in done], 0.5), 2),
                        "raw_deployments_s": round(raw, 2),
                    }

                # --- 1. status push latency ------------------------------------------
                await objects.create(BENTO, bento("flip:v1"))
                await create(deployer, "flip", "flip:v1")
                await feed.wait_for("flip", "running", 0, 120)
                raw_watch = Watcher(
                    client.CustomObjectsApi(api).list_namespaced_custom_object,
                    BENTO.group, BENTO.version, NAMESPACE_NAME, BENTO.plural,
                )  # fmt: skip
                seen: dict[tuple[str, str], float] = {}

                async def watch_raw() -> None:
                    async for event in raw_watch:
                        if event.type in ("ADDED", "DELETED"):
                            seen[(event.key[1], event.type)] = time.perf_counter()

                watch_task = asyncio.create_task(watch_raw())
                await asyncio.sleep(1.0)
                key = (NAMESPACE_NAME, bento_resource_name("default", "flip", "v1"))
                ekiben: list[float] = []
                floor: list[float] = []
                for _ in range(args.changes // 2):
                    seen.clear()
                    await objects.delete(BENTO, key)
                    t0 = time.perf_counter()
                    t1 = await feed.wait_for("flip", "image-building", t0, 60)
                    ekiben.append(t1 - t0)
                    floor.append(seen.get((key[1], "DELETED"), t1) - t0)
                    await objects.create(BENTO, bento("flip:v1"))
                    t0 = time.perf_counter()
                    t1 = await feed.wait_for("flip", "running", t0, 60)
                    ekiben.append(t1 - t0)
                    floor.append(seen.get((key[1], "ADDED"), t1) - t0)
                watch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch_task
                results["status_push"] = {"ekiben": summary(ekiben), "raw_watch": summary(floor)}

                # --- 3. writes while idle ----------------------------------------------
                existing = args.burst + 2
                more = max(0, args.idle_deployments - existing)
                began = time.perf_counter()
                names = [f"idle-{i}" for i in range(more)]
                for chunk in range(0, len(names), 20):
                    part = names[chunk : chunk + 20]
                    await asyncio.gather(*(create(deployer, n, "svc:v1") for n in part))
                await asyncio.gather(*(feed.wait_for(n, "running", began, 600) for n in names))
                controller = kube.controller
                await asyncio.sleep(3.0)
                while controller.queue.processing or len(controller.queue):
                    await asyncio.sleep(0.1)
                assert kube.api is not None
                original = kube.api.call_api
                writes: list[tuple[str, str]] = []
                lease_writes = 0

                def counting(path: str, method: str, *a: Any, **kw: Any) -> Any:
                    nonlocal lease_writes
                    if method != "GET":
                        if "/leases/" in path:
                            lease_writes += 1
                        else:
                            writes.append((method, path))
                    return original(path, method, *a, **kw)

                kube.api.call_api = counting  # type: ignore[method-assign, assignment]
                keys = [k for w in kube.bds for k in w.known]
                for k in keys:
                    controller.enqueue(k)
                await asyncio.sleep(args.idle)
                kube.api.call_api = original  # type: ignore[method-assign]
                results["idle"] = {
                    "deployments": len(keys),
                    "seconds": args.idle,
                    "full_resyncs": 1,
                    "writes": len(writes),
                    "lease_renewals": lease_writes,
                    "examples": writes[:5],
                }
            await nc.close()
            await api.close()
    results["load_after"] = os.getloadavg()
    return results


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C, so the servers are stopped by the finally blocks."""
    import signal  # noqa: PLC0415

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def main() -> None:
    _stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--idle-deployments", type=int, default=200)
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    push = results["status_push"]
    e, r = push["ekiben"], push["raw_watch"]
    print(
        f"status push over {e['n']} changes: p50 {e['p50_ms']} ms, p99 {e['p99_ms']} ms"
        f" (raw watch p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms;"
        f" ratio p99 {e['p99_ms'] / max(r['p99_ms'], 0.001):.1f}x; Yatai polls every 60 s)"
    )
    for key in sorted(k for k in results if k.startswith("create_to_running_")):
        c = results[key]
        print(
            f"{key.replace('_', ' ')}: {c['ekiben_s']} s (p50 {c['ekiben_p50_s']} s);"
            f" raw Deployments {c['raw_deployments_s']} s;"
            f" ratio {c['ekiben_s'] / max(c['raw_deployments_s'], 0.001):.1f}x"
        )
    idle = results["idle"]
    print(
        f"idle: {idle['writes']} writes to the API server in {idle['seconds']:.0f} s with"
        f" {idle['deployments']} deployments and a full resync (target 0);"
        f" {idle['lease_renewals']} Lease renewals apart"
    )
    print(f"load average before {results['load_before']}, after {results['load_after']}")


if __name__ == "__main__":
    main()
