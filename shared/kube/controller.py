"""The controller loop: triggers enqueue keys, workers reconcile them, errors decide retries.

A controller owns one `reconcile(key)` for one primary kind. Everything that may call for a
look at an object only puts its key in a `WorkQueue`:

- **watches** of the primary kind (`controller.watch(watcher)`), a `Watcher` each;
- **mapped watches** of owned or related kinds (`controller.watch(watcher, mapper=...)`,
  see shared.kube.mappers): a Job's change enqueues its BentoRequest;
- **external signals** (`controller.enqueue(key, after=None)`): a service's NATS handler
  calls it when a bento is pushed, so a waiting request is looked at again at once;
- a periodic **resync** that enqueues every primary key the watches know of, so a missed
  signal costs at most one resync period.

A primary's watch event that changes only its status (or other bookkeeping such as
`resourceVersion` and `managedFields`) wakes nobody: the status is the controller's output,
not its input, so its own status writes do not cost it another pass. What counts as a change
is `_intent`: uid, generation, deletion, labels, annotations, finalizers, owners.

`reconcile(key)` is level-based: it re-reads the object and its children and converges; it
never learns which trigger fired, or whether the object was created or updated. `N` workers
run reconciles concurrently, never two of the same key (the queue guarantees it).

What happens after a reconcile (errors are classed by shared.errors, as everywhere):

- returns None or `Result()`: done; the key's backoff is forgotten.
- returns `Result(requeue_after=s)`: done for now, look again in `s` seconds (a build that
  runs, a rollout that progresses).
- raises a **temporary** error (`TemporaryError`, or anything unexpected): requeued after the
  key's exponential backoff with jitter (`backoff_base` .. `backoff_max`), or after the
  `TemporaryError`'s own `delay`. Never a hot loop.
- raises a **permanent** error (`PermanentError`, or a 4xx `EkibenError`): logged as
  `kube.reconcile.failed`, counted, handed to `on_permanent(key, exc)` (which typically
  writes a Failed condition and a Warning Event), and **not retried until the object
  changes**. The controller remembers the generation the failing pass started from and drops
  resyncs and same-generation watch events (such as the status write of `on_permanent`
  itself) until a watch event shows another generation or a deletion, a mapped watch with
  `retry_failed=True` fires (a Bento appeared that a deployment was waiting for), or someone
  calls `enqueue(key)`, which always means "look again".

A watch that fails for good (403 after an RBAC change, 404 because a CRD is not installed)
does not end the controller: it is logged as `kube.watch.failed` and retried with backoff,
and `controller.healthy` turns False (with `last_error`) for a readiness check.

Why not kopf: kopf is well kept and does much of this, but its model is not ours. Its
handlers are per change (`on.create`/`on.update`/`on.delete`, with diffs), and the
bookkeeping behind them (progress, the last handled configuration) is written back to every
object as annotations or status, so an idle operator still writes and every handled change
costs a patch. Leader election uses kopf's own peering CRDs, which we would have to ship. It
brings its own aiohttp API client beside the kubernetes_asyncio one the services use, and has
no notion of an external trigger such as a NATS event short of patching the object. The part
we need is small and well understood (client-go's workqueue and controller-runtime's
reconciler loop), so it is built here on the `Watcher` we already have.

Usage::

    controller = Controller("builder", reconcile, workers=4, on_permanent=mark_failed)
    controller.watch(Watcher(crs.list_namespaced_custom_object, *BENTO_REQUESTS, ns))
    controller.watch(Watcher(batch.list_namespaced_job, ns), mapper=owned_by(...))
    async with controller.running():
        ...  # the service runs; bus handlers call controller.enqueue(key)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

from shared.errors import EkibenError, TemporaryError, is_permanent, retry_delay
from shared.kube.mappers import Mapper
from shared.kube.queue import QueueShutDown, WorkQueue
from shared.kube.watch import ObjectKey, Watcher, WatchEvent
from shared.logging import get_logger
from shared.tasks import stop_tasks

log = get_logger(__name__)

RECONCILES = Counter(
    "ekiben_reconcile_total",
    "Reconciles by outcome: success, requeue, retry (temporary error), permanent",
    ["controller", "outcome"],
)
RECONCILE_DURATION = Histogram(
    "ekiben_reconcile_duration_seconds",
    "Reconcile duration",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge(
    "ekiben_workqueue_depth", "Keys ready to be reconciled, not yet taken", ["controller"]
)
QUEUE_RETRIES = Counter(
    "ekiben_workqueue_retries_total", "Keys requeued after a temporary error", ["controller"]
)
WATCH_FAILURES = Counter(
    "ekiben_watch_failures_total", "Watches that failed and will be retried", ["controller"]
)

# (uid, generation, being deleted): what a watch event must change to retry a failed key.
Signature = tuple[str, Any, bool]


@dataclass(frozen=True, slots=True)
class Result:
    """What a reconcile asks for: nothing more (the default), or another look later."""

    requeue_after: float | None = None


Reconciler = Callable[[ObjectKey], Awaitable[Result | None]]
PermanentHook = Callable[[ObjectKey, EkibenError], Awaitable[None]]


@dataclass(eq=False)
class _Watch:
    watcher: Watcher
    mapper: Mapper | None
    retry_failed: bool
    name: str
    synced: bool = False
    error: str | None = None
    failures: int = 0


class Controller:
    """Triggers, a work queue and workers around one `reconcile(key)` (see the module)."""

    def __init__(
        self,
        name: str,
        reconcile: Reconciler,
        *,
        workers: int = 2,
        resync_seconds: float | None = 600.0,
        backoff_base: float = 0.5,
        backoff_max: float = 300.0,
        on_permanent: PermanentHook | None = None,
        stop_grace: float = 10.0,
        watch_backoff_initial: float = 1.0,
        watch_backoff_max: float = 60.0,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.workers = workers
        self.resync_seconds = resync_seconds
        self.stop_grace = stop_grace
        self.watch_backoff_initial = watch_backoff_initial
        self.watch_backoff_max = watch_backoff_max
        self._reconcile = reconcile
        self._on_permanent = on_permanent
        self._backoff = (backoff_base, backoff_max)
        self.queue: WorkQueue[ObjectKey] = WorkQueue(
            backoff_base=backoff_base, backoff_max=backoff_max
        )
        self._watches: list[_Watch] = []
        self._failed: dict[ObjectKey, Signature | None] = {}
        self._started: dict[ObjectKey, Signature] = {}
        self._intents: dict[ObjectKey, tuple[Any, ...]] = {}
        self._forced: set[ObjectKey] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._watch_tasks: list[asyncio.Task[None]] = []
        self._resync_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._synced = asyncio.Event()
        self._log = log.bind(controller=name)
        # Counters for tests and debugging.
        self.resyncs = 0
        self.skipped = 0
        self.status_only = 0
        QUEUE_DEPTH.labels(controller=name).set_function(lambda: len(self.queue))

    # --- wiring ---------------------------------------------------------------------

    def watch(
        self,
        watcher: Watcher,
        *,
        mapper: Mapper | None = None,
        retry_failed: bool = False,
        name: str | None = None,
    ) -> None:
        """Add a trigger: the primary kind (no mapper) or a related kind (with a mapper).

        `retry_failed`: whether this related kind's events count as a change that retries a
        permanently failed key (True for inputs such as a referenced Bento; False, the
        default, for owned children, whose churn says nothing new about a failed spec).
        """
        if self._workers:
            raise RuntimeError("add watches before the controller starts")
        label = name or _describe(watcher)
        self._watches.append(_Watch(watcher, mapper, retry_failed, label))

    def enqueue(self, key: ObjectKey, *, after: float | None = None) -> None:
        """Ask for a reconcile of `key` (now, or in `after` seconds), even a failed one.

        At least one reconcile starts after this call. Safe to call from any task on the
        controller's event loop, before or after `start()`.
        """
        self._trigger(key, forced=True, after=after)

    # --- state ----------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Running, every watch listed and not failing, every worker alive."""
        return (
            bool(self._workers)
            and not self._stopping.is_set()
            and all(w.synced and w.error is None for w in self._watches)
            and not any(task.done() for task in self._workers)
        )

    @property
    def last_error(self) -> str | None:
        """The latest watch failure, for a readiness check (None once all watches recover)."""
        failing = [w.error for w in self._watches if w.error is not None]
        return failing[-1] if failing else None

    def is_failed(self, key: ObjectKey) -> bool:
        """Whether `key` failed permanently and waits for a change."""
        return key in self._failed

    async def wait_synced(self) -> None:
        """Wait until every watch has listed its collection once (use with a timeout)."""
        await self._synced.wait()

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._workers:
            raise RuntimeError(f"controller {self.name} is already running")
        if self.queue.shutting_down:  # started again (a new leadership term): a fresh queue
            base, cap = self._backoff
            self.queue = WorkQueue(backoff_base=base, backoff_max=cap)
        self._stopping.clear()
        self._failed.clear()
        self._started.clear()
        self._check_synced()
        self._watch_tasks = [
            asyncio.create_task(self._watch_loop(w), name=f"{self.name}-watch-{w.name}")
            for w in self._watches
        ]
        if self.resync_seconds and any(w.mapper is None for w in self._watches):
            self._resync_task = asyncio.create_task(self._resync_loop(), name=f"{self.name}-resync")
        self._workers = [
            asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}")
            for i in range(self.workers)
        ]
        self._log.info("kube.controller.started", workers=self.workers, watches=len(self._watches))

    async def stop(self, *, grace: float | None = None) -> None:
        """Stop the triggers, let in-flight reconciles finish (up to `grace`), then end.

        Watches are cancelled (they sit in a socket read; `aclosing` closes the stream);
        the queue is shut down, so workers take no new key; reconciles still running after
        `grace` are cancelled, with `stop_tasks` as the bound.
        """
        workers, self._workers = self._workers, []
        if not workers:
            return
        grace = self.stop_grace if grace is None else grace
        self._stopping.set()
        await stop_tasks(self._watch_tasks, grace=5.0)
        self._watch_tasks = []
        self.queue.shutdown()
        ours = [*workers, *([self._resync_task] if self._resync_task else [])]
        self._resync_task = None
        _, pending = await asyncio.wait(ours, timeout=grace) if grace > 0 else (set(), set(ours))
        if pending:
            self._log.warning("kube.controller.cancelling", reconciles=len(pending))
            await stop_tasks(pending, grace=5.0)
        for task in ours:
            if task.done() and not task.cancelled() and task.exception() is not None:
                self._log.error("kube.controller.worker_crashed", error=repr(task.exception()))
        self._log.info("kube.controller.stopped")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Controller]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def run(self) -> None:
        """Run until cancelled, for a leader elector or a supervisor task.

        Cancellation means "stop now" (the lease is lost): in-flight reconciles are
        cancelled rather than waited for.
        """
        await self.start()
        try:
            await self._stopping.wait()
        except asyncio.CancelledError:
            await self.stop(grace=0)
            raise
        await self.stop()

    # --- triggers -------------------------------------------------------------------

    def _trigger(self, key: ObjectKey, *, forced: bool, after: float | None = None) -> None:
        if forced:
            self._forced.add(key)
        elif key in self._failed:
            self.skipped += 1
            return
        if after:
            self.queue.add_after(key, after)
        else:
            self.queue.add(key)

    def _on_event(self, watch: _Watch, event: WatchEvent) -> None:
        if event.type == "SYNCED":
            watch.synced = True
            self._check_synced()
            return
        if event.type == "BOOKMARK":
            return
        if watch.mapper is None:
            key = event.key
            if event.type == "DELETED":
                self._failed.pop(key, None)
                self._started.pop(key, None)
                self._intents.pop(key, None)
                self.queue.forget(key)
                self._trigger(key, forced=True)
                return
            intent = _intent(event.object)
            if self._intents.get(key) == intent:
                self.status_only += 1  # our own status write, most often: nothing to do
                return
            self._intents[key] = intent
            self._trigger(key, forced=_signature(event.object) != self._started.get(key))
            return
        try:
            keys = list(watch.mapper(event.object))
        except Exception:  # noqa: BLE001 - a buggy mapper must not end the watch
            self._log.exception("kube.watch.mapper_failed", watch=watch.name)
            return
        for key in keys:
            self._trigger(key, forced=watch.retry_failed)

    def _check_synced(self) -> None:
        if all(w.synced for w in self._watches):
            self._synced.set()

    async def _watch_loop(self, watch: _Watch) -> None:
        while True:
            try:
                async with aclosing(aiter(watch.watcher)) as events:
                    async for event in events:
                        if watch.error is not None and event.type != "BOOKMARK":
                            self._log.info("kube.watch.recovered", watch=watch.name)
                            watch.error, watch.failures = None, 0
                        self._on_event(watch, event)
            except Exception as exc:  # noqa: BLE001 - a watch outlives every failure, loudly
                watch.failures += 1
                watch.synced = False
                watch.error = f"{watch.name}: {_explain(exc)}"
                delay = min(
                    self.watch_backoff_max,
                    self.watch_backoff_initial * 2 ** min(watch.failures - 1, 30),
                ) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                WATCH_FAILURES.labels(controller=self.name).inc()
                self._log.error(
                    "kube.watch.failed",
                    watch=watch.name,
                    status=getattr(exc, "status", None),
                    error=_explain(exc),
                    failures=watch.failures,
                    retry_in=round(delay, 2),
                )
                # Relist on the retry: it reports what changed while we were blind, then
                # SYNCED again, which is what `healthy` waits for.
                watch.watcher.resource_version = None
                if await self._sleep(delay):
                    return

    async def _resync_loop(self) -> None:
        assert self.resync_seconds
        while not await self._sleep(self.resync_seconds * random.uniform(0.9, 1.1)):  # noqa: S311
            for watch in self._watches:
                if watch.mapper is None:
                    for key in list(watch.watcher.known):
                        self._trigger(key, forced=False)
            self.resyncs += 1

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True when the controller stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    # --- workers --------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            try:
                await self._process(key)
            finally:
                self.queue.done(key)

    async def _process(self, key: ObjectKey) -> None:
        forced = key in self._forced
        self._forced.discard(key)
        if key in self._failed and not forced:
            self.skipped += 1  # a stale trigger queued before the failure was recorded
            return
        self._failed.pop(key, None)
        signature = self._known_signature(key)
        if signature is None:
            self._started.pop(key, None)
        else:
            self._started[key] = signature
        began = time.monotonic()
        with structlog.contextvars.bound_contextvars(
            controller=self.name, namespace=key[0], name=key[1]
        ):
            try:
                result = await self._reconcile(key)
            except Exception as exc:  # noqa: BLE001 - every failure is classed, none escapes
                await self._handle_error(key, exc, signature)
            else:
                self.queue.forget(key)
                if result is not None and result.requeue_after is not None:
                    if result.requeue_after > 0:
                        self.queue.add_after(key, result.requeue_after)
                    else:
                        self.queue.add_rate_limited(key)
                    RECONCILES.labels(controller=self.name, outcome="requeue").inc()
                else:
                    RECONCILES.labels(controller=self.name, outcome="success").inc()
            finally:
                RECONCILE_DURATION.labels(controller=self.name).observe(time.monotonic() - began)

    async def _handle_error(
        self, key: ObjectKey, exc: Exception, signature: Signature | None
    ) -> None:
        if is_permanent(exc):
            self.queue.forget(key)
            if self._on_permanent is not None:
                try:
                    await self._on_permanent(key, exc)
                except Exception as hook_error:  # noqa: BLE001 - retried as a temporary error
                    # The failure could not be recorded: try the whole pass again later.
                    self._log.exception("kube.reconcile.hook_failed", error=repr(hook_error))
                    self._retry(key, hook_error)
                    return
            self._failed[key] = signature
            RECONCILES.labels(controller=self.name, outcome="permanent").inc()
            self._log.error(
                "kube.reconcile.failed",
                permanent=True,
                reason=getattr(exc, "reason", exc.code),
                error=str(exc),
                generation=signature[1] if signature else None,
            )
            return
        self._retry(key, exc)

    def _retry(self, key: ObjectKey, exc: Exception) -> None:
        delay = retry_delay(exc)
        if delay is not None and delay > 0:
            self.queue.add_after(key, delay)
        else:
            delay = self.queue.add_rate_limited(key)
        QUEUE_RETRIES.labels(controller=self.name).inc()
        RECONCILES.labels(controller=self.name, outcome="retry").inc()
        if isinstance(exc, TemporaryError):
            self._log.info(
                "kube.reconcile.retry", reason=exc.reason, error=str(exc), retry_in=round(delay, 3)
            )
        else:  # unexpected: a bug or an API error; the first traceback of a streak is kept
            attempt = self.queue.retries(key)
            self._log.warning(
                "kube.reconcile.error",
                error=repr(exc),
                retry_in=round(delay, 3),
                attempt=attempt,
                exc_info=exc if attempt <= 1 else None,
            )

    def _known_signature(self, key: ObjectKey) -> Signature | None:
        for watch in self._watches:
            if watch.mapper is None and (obj := watch.watcher.known.get(key)) is not None:
                return _signature(obj)
        return None


def _signature(obj: dict[str, Any]) -> Signature:
    metadata = obj.get("metadata") or {}
    return (
        str(metadata.get("uid", "")),
        metadata.get("generation"),
        bool(metadata.get("deletionTimestamp")),
    )


def _intent(obj: dict[str, Any]) -> tuple[Any, ...]:
    """What in a primary a reconcile acts on: everything but its status and bookkeeping."""
    metadata = obj.get("metadata") or {}
    return (
        *_signature(obj),
        repr(sorted((metadata.get("labels") or {}).items())),
        repr(sorted((metadata.get("annotations") or {}).items())),
        tuple(metadata.get("finalizers") or ()),
        repr(metadata.get("ownerReferences") or []),
    )


def _describe(watcher: Watcher) -> str:
    fn = getattr(watcher.list_fn, "__name__", "list")
    args = "/".join(str(a) for a in watcher.args)
    return f"{fn}({args})" if args else fn


def _explain(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"HTTP {status}: {str(reason)[:300]}"
    return repr(exc)[:300]
