"""shared.kube.leader on a real Lease: one replica reconciles at a time, and hands over.

Short timings (lease 4 s, renew deadline 3 s, retry 1 s) keep the tests quick; the
assertions are about order and overlap, with generous bounds for a loaded machine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from shared.devstack.kube import KubeControlPlane
from shared.kube.controller import Controller
from shared.kube.events import micro_time
from shared.kube.kinds import LEASE
from shared.kube.leader import JITTER, LeaderElector
from shared.kube.objects import Objects
from shared.kube.watch import ObjectKey
from tests.k8s import leader_child
from tests.k8s.support import create_request, request_watcher, until

pytestmark = pytest.mark.k8s

ROOT = Path(__file__).parents[2]
LEASE_NAME = "ekiben-test"
Interval = tuple[float, float]


class Replica:
    """An in-process Controller behind a LeaderElector, recording its reconcile intervals."""

    def __init__(self, api: client.ApiClient, namespace: str, identity: str) -> None:
        self.intervals: list[Interval] = []
        self.controller = Controller(
            f"leader-{identity}", self.reconcile, resync_seconds=leader_child.RESYNC_SECONDS
        )
        self.controller.watch(request_watcher(api, namespace))
        self.elector = LeaderElector(
            api,
            name=LEASE_NAME,
            namespace=namespace,
            identity=identity,
            lease_duration=leader_child.LEASE_DURATION,
            renew_deadline=leader_child.RENEW_DEADLINE,
            retry_period=leader_child.RETRY_PERIOD,
        )
        self.task: asyncio.Task[None] | None = None

    async def reconcile(self, key: ObjectKey) -> None:
        began = time.time()
        await asyncio.sleep(leader_child.RECONCILE_SECONDS)
        self.intervals.append((began, time.time()))

    def start(self) -> None:
        self.task = asyncio.create_task(self.elector.run(self.controller.run))

    async def stop(self) -> None:
        self.elector.stop()
        assert self.task is not None
        async with asyncio.timeout(15):
            await self.task


def overlaps(a: list[Interval], b: list[Interval]) -> list[tuple[Interval, Interval]]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


def read_intervals(path: Path, *, killed_at: float) -> list[Interval]:
    """Intervals from the child's log; a reconcile cut short by SIGKILL ends at the kill."""
    intervals: list[Interval] = []
    start: float | None = None
    for line in path.read_text().splitlines() if path.exists() else []:
        word, _, stamp = line.partition(" ")
        if word == "start":
            start = float(stamp)
        elif word == "end" and start is not None:
            intervals.append((start, float(stamp)))
            start = None
    if start is not None:
        intervals.append((start, killed_at))
    return intervals


def started_count(path: Path) -> int:
    return path.read_text().count("start ") if path.exists() else 0


@pytest.fixture
def child_process(
    kube_control_plane: KubeControlPlane, kube_namespace: str, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    out = tmp_path / "child-reconciles.log"
    with (tmp_path / "child-output.log").open("wb") as output:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.k8s.leader_child",
                str(kube_control_plane.kubeconfig_path),
                kube_namespace,
                LEASE_NAME,
                "child",
                str(out),
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def test_a_killed_leader_is_replaced_within_the_lease_and_never_overlapped(
    kube_api: client.ApiClient,
    kube_namespace: str,
    child_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    await create_request(objects, kube_namespace, "work")
    proc, out = child_process
    await until(lambda: started_count(out) >= 1, timeout=60, what="the child to lead")

    follower = Replica(kube_api, kube_namespace, "parent")
    follower.start()
    try:
        # The child keeps reconciling (resyncs every 0.2 s) while we campaign in vain.
        mark = started_count(out)
        await until(
            lambda: follower.elector.holder == "child", what="the follower to see the Lease"
        )
        await until(lambda: started_count(out) >= mark + 10, what="the child to keep working")
        assert follower.intervals == []
        assert not follower.elector.is_leader

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.time()
        await until(lambda: follower.intervals, timeout=30, what="the follower to take over")
        took = follower.intervals[0][0] - killed_at
    finally:
        await follower.stop()

    child = read_intervals(out, killed_at=killed_at)
    assert len(child) >= 10
    assert overlaps(child, follower.intervals) == []
    # Expiry is measured from the follower's last sight of a renewal (at most a retry period
    # before the kill), then up to one retry period (with jitter) until its next attempt.
    retry = leader_child.RETRY_PERIOD * (1 + JITTER)
    assert took <= leader_child.LEASE_DURATION + 2 * retry + 1.5, took


async def test_a_clean_stop_releases_the_lease_for_an_immediate_takeover(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    await create_request(objects, kube_namespace, "work")
    first = Replica(kube_api, kube_namespace, "first")
    second = Replica(kube_api, kube_namespace, "second")
    first.start()
    try:
        await until(lambda: first.intervals, what="the first replica to lead")
        second.start()
        await until(lambda: second.elector.holder == "first", what="the second to see the Lease")
        mark = len(first.intervals)
        await until(lambda: len(first.intervals) >= mark + 10, what="the first to keep working")
        assert second.intervals == []

        await first.stop()
        stopped_at = time.time()
        assert not first.elector.is_leader
        await until(lambda: second.intervals, what="the second to take over")
        took = second.intervals[0][0] - stopped_at
        assert second.elector.is_leader
        lease = await objects.get(LEASE, (kube_namespace, LEASE_NAME))
        assert lease is not None
        assert lease["spec"]["holderIdentity"] == "second"
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        for replica in (first, second):
            if replica.task is not None and not replica.task.done():
                await replica.stop()
    assert overlaps(first.intervals, second.intervals) == []
    # Released, not expired: about one retry period, far less than the 4 s lease.
    assert took < leader_child.LEASE_DURATION - 0.5, took
    lease = await objects.get(LEASE, (kube_namespace, LEASE_NAME))
    assert lease is not None
    assert not lease["spec"].get("holderIdentity")  # the second released it too


async def test_a_leader_that_sees_another_holder_stops_at_once_and_campaigns_again(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    await create_request(objects, kube_namespace, "work")
    replica = Replica(kube_api, kube_namespace, "victim")
    replica.start()
    try:
        await until(lambda: replica.intervals, what="the replica to lead")
        # Another process takes the Lease over (as after a long pause of this one).
        lease = await objects.get(LEASE, (kube_namespace, LEASE_NAME))
        assert lease is not None
        lease["spec"]["holderIdentity"] = "intruder"
        lease["spec"]["renewTime"] = micro_time()
        await objects.replace(LEASE, lease)
        stolen_at = time.time()
        await until(lambda: not replica.elector.is_leader, what="the replica to step down")
        stepped_down = time.time() - stolen_at
        await asyncio.sleep(0.1)  # let a cancelled reconcile unwind
        last_end = max(end for _, end in replica.intervals)
        count = len(replica.intervals)
        # The intruder never renews: after its lease runs out the replica leads again.
        await until(lambda: replica.elector.terms == 2, timeout=30, what="a second term")
        await until(lambda: len(replica.intervals) > count, what="reconciles in the second term")
        second_term = replica.intervals[count][0]
    finally:
        await replica.stop()
    # Its next renewal (one retry period later) sees the intruder, and it stops then rather
    # than at its renew deadline (at least 2 s after the takeover here).
    assert stepped_down < leader_child.RETRY_PERIOD * 1.8, stepped_down
    assert last_end < stolen_at + stepped_down + 0.5
    assert second_term - stolen_at >= leader_child.LEASE_DURATION - 0.5


def test_invalid_timings_are_refused(kube_api: client.ApiClient) -> None:
    candidate = {"name": "x", "namespace": "y", "identity": "z"}
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(kube_api, **candidate, lease_duration=4, renew_deadline=4, retry_period=1)
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(kube_api, **candidate, lease_duration=4, renew_deadline=1, retry_period=1)
    with pytest.raises(ValueError, match="whole number"):
        LeaderElector(kube_api, **candidate, lease_duration=4.5)
