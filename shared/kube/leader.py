"""Leader election on a coordination.k8s.io/v1 Lease: one replica reconciles at a time.

Two replicas of the deployer must never reconcile at once (both would write the same
children), yet a dead one must be replaced quickly. The protocol is client-go's:

- A **Lease** names its `holderIdentity`, `leaseDurationSeconds` and `renewTime`. Every
  write replaces it carrying the read `resourceVersion`, so of two candidates writing at
  once one gets 409 and loses.
- A **follower** reads the Lease every `retry_period` (with a little jitter). It may take it
  when nobody holds it, or when the record has not changed for `lease_duration` *as measured
  on its own clock* since it first saw that record (clocks of different machines are never
  compared).
- The **leader** renews every `retry_period`. Its leadership is valid until `renew_deadline`
  after the start of its last successful renewal; if no renewal succeeds by then (each
  attempt is cut off at the deadline, so a hung request cannot stretch it) it stops at once.
  Because `renew_deadline < lease_duration`, it stops before any follower can take over. A
  leader that reads another holder in the Lease (it was taken over while this process was
  paused, or by hand) stops at once too.
- On a **clean stop** the leader releases the Lease (empty holder, duration 1 s), so a
  successor takes over within one retry period instead of a whole lease duration. A killed
  leader is replaced about `lease_duration` (plus up to one retry period) after its last
  renewal.

`run(while_leading)` campaigns, runs `while_leading()` as a task while it leads, cancels it
the moment leadership is lost and campaigns again; `stop()` ends it (releasing the Lease).
With a controller: `await elector.run(controller.run)`; `Controller.run` stops its
reconciles immediately when cancelled.

kubernetes_asyncio ships `leaderelection.LeaderElection` with a `LeaseLock`; we read it and
wrote this instead, because working around it would mean replacing most of it: it stamps
`renewTime`/`acquireTime` with naive local time labelled `Z` (wrong by the UTC offset, and
a timestamp whose microseconds are 0 fails to parse and is dropped), turns a float lease
duration into a string that `int()` rejects, never releases the Lease (a clean restart waits
a full lease duration), cancels `onstarted_leading` without awaiting it (a leaked task), lets
non-API errors such as a refused connection escape and end the election, bounds renewals by
wall-clock time (which jumps) and not per request, and never counts `leaseTransitions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Gauge

from shared.kube.events import micro_time
from shared.kube.kinds import LEASE
from shared.kube.objects import Objects
from shared.logging import get_logger
from shared.tasks import stop_tasks

log = get_logger(__name__)

IS_LEADER = Gauge("ekiben_leader", "1 while this process holds the Lease", ["lease"])

JITTER = 0.2  # a follower waits retry_period * [1, 1.2] between attempts


class LeaderElector:
    """Campaigns for one Lease on behalf of `identity` (see the module)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        stop_grace: float = 10.0,
    ) -> None:
        if not isinstance(lease_duration, int) or lease_duration < 1:
            raise ValueError("lease_duration is a whole number of seconds, at least 1")
        if not lease_duration > renew_deadline > (1 + JITTER) * retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > 1.2 * retry_period > 0")
        if not identity:
            raise ValueError("a candidate needs an identity (the pod name)")
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.stop_grace = stop_grace
        self._objects = Objects(api, field_manager="ekiben-leader-election")
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0  # start of the last successful write, monotonic
        self._leading = False
        self._wake = asyncio.Event()
        self._stop = False
        self._log = log.bind(lease=f"{namespace}/{name}", identity=identity)
        self.terms = 0  # how many times this candidate became leader

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the Lease right now (valid until the renew deadline)."""
        return self._leading and time.monotonic() < self._renewed_at + self.renew_deadline

    @property
    def holder(self) -> str | None:
        """The holder in the last Lease record seen."""
        return self._observed[0] if self._observed else None

    def stop(self) -> None:
        """Make `run` return: the leader's task is cancelled and the Lease released."""
        self._stop = True
        self._wake.set()

    async def run(self, while_leading: Callable[[], Awaitable[None]]) -> None:
        """Campaign and run `while_leading()` during every term, until `stop()`.

        Also returns when `while_leading()` returns by itself (after releasing the Lease),
        and re-raises what it raises. Cancelling `run` is a stop too. An elector runs once:
        after `stop()`, `run` returns at once.
        """
        try:
            while not self._stop:
                if not await self._acquire():
                    return
                self.terms += 1
                self._log.info("kube.leader.acquired", term=self.terms)
                task = asyncio.create_task(_as_coroutine(while_leading), name=f"leader-{self.name}")
                task.add_done_callback(lambda _: self._wake.set())
                try:
                    lost = await self._hold(task)
                finally:
                    self._leading = False
                    IS_LEADER.labels(lease=self.name).set(0)
                    if not task.done():
                        await stop_tasks([task], grace=self.stop_grace)
                if lost:
                    self._log.warning("kube.leader.lost", term=self.terms)
                    continue
                if task.done():  # the work ended by itself (or failed): the election ends too
                    error = None if task.cancelled() else task.exception()
                    if error is not None:
                        raise error
                    return
        finally:
            self._leading = False
            await self._release()

    # --- campaigning ----------------------------------------------------------------

    async def _acquire(self) -> bool:
        """Wait until this candidate holds the Lease; False when stopped first."""
        while not self._stop:
            if await self._attempt(deadline=None):
                self._leading = True
                IS_LEADER.labels(lease=self.name).set(1)
                return True
            if await self._pause(self.retry_period * random.uniform(1.0, 1.0 + JITTER)):  # noqa: S311
                return False
        return False

    async def _hold(self, task: asyncio.Task[None]) -> bool:
        """Renew until stopped or the task ends (False), or until the lease is lost (True)."""
        while True:
            if task.done() or await self._pause(self.retry_period) or task.done():
                return False
            deadline = self._renewed_at + self.renew_deadline
            while not await self._attempt(deadline=deadline):
                if self.holder not in ("", self.identity):
                    return True  # someone else holds it now: stop at once, do not wait it out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                if await self._pause(min(self.retry_period, remaining)) or task.done():
                    return False
                if time.monotonic() >= deadline:
                    return True

    async def _pause(self, seconds: float) -> bool:
        """Sleep, or wake early on stop() or the end of the task; True when stopping."""
        self._wake.clear()
        if not self._stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))
        return self._stop

    async def _attempt(self, *, deadline: float | None) -> bool:
        """One try to take or renew the Lease, cut off at `deadline` (monotonic)."""
        started = time.monotonic()
        timeout = self.retry_period * 2 if deadline is None else deadline - started
        if timeout <= 0:
            return False
        try:
            async with asyncio.timeout(timeout):
                won = await self._try_acquire_or_renew()
        except Exception as exc:  # noqa: BLE001 - API, connection, timeout: never end the election
            self._log.warning("kube.leader.attempt_failed", error=repr(exc)[:200])
            return False
        if won:
            self._renewed_at = started
        return won

    async def _try_acquire_or_renew(self) -> bool:
        now = micro_time(dt.datetime.now(dt.UTC))
        key = (self.namespace, self.name)
        lease = await self._objects.get(LEASE, key)
        if lease is None:
            body = {
                "apiVersion": LEASE.api_version,
                "kind": LEASE.kind,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec({}, now, taking_over=True),
            }
            try:
                created = await self._objects.create(LEASE, body)
            except ApiException as exc:
                if exc.status == 409:  # another candidate created it first
                    return False
                raise
            self._observe(created.get("spec") or {})
            return True

        spec: dict[str, Any] = lease.get("spec") or {}
        self._observe(spec)
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or self.lease_duration
        if (
            holder
            and holder != self.identity
            and time.monotonic() < self._observed_at + float(duration)
        ):
            return False  # held by someone else and not expired (on our clock)
        lease["spec"] = self._spec(spec, now, taking_over=holder != self.identity)
        try:
            written = await self._objects.replace(LEASE, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first
                return False
            raise
        self._observe(written.get("spec") or {})
        return True

    def _spec(self, current: dict[str, Any], now: str, *, taking_over: bool) -> dict[str, Any]:
        spec = dict(current)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = self.lease_duration
        spec["renewTime"] = now
        if taking_over or not spec.get("acquireTime"):
            spec["acquireTime"] = now
        if taking_over and current:
            spec["leaseTransitions"] = int(current.get("leaseTransitions") or 0) + 1
        spec.setdefault("leaseTransitions", 0)
        return spec

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (
            spec.get("holderIdentity") or "",
            spec.get("leaseDurationSeconds"),
            spec.get("acquireTime"),
            spec.get("renewTime"),
            spec.get("leaseTransitions"),
        )
        if record != self._observed:
            self._observed = record
            self._observed_at = time.monotonic()

    async def _release(self) -> None:
        """Give the Lease up if we hold it, so a successor need not wait for it to expire."""
        try:
            async with asyncio.timeout(max(self.retry_period, 2.0)):
                lease = await self._objects.get(LEASE, (self.namespace, self.name))
                spec = (lease or {}).get("spec") or {}
                if lease is None or spec.get("holderIdentity") != self.identity:
                    return
                now = micro_time(dt.datetime.now(dt.UTC))
                released = {k: v for k, v in spec.items() if k != "holderIdentity"}
                released.update(leaseDurationSeconds=1, renewTime=now, acquireTime=now)
                lease["spec"] = released
                await self._objects.replace(LEASE, lease)
        except Exception as exc:  # noqa: BLE001 - best effort: the lease expires anyway
            self._log.warning("kube.leader.release_failed", error=repr(exc)[:200])
            return
        self._log.info("kube.leader.released")


async def _as_coroutine(fn: Callable[[], Awaitable[None]]) -> None:
    await fn()
