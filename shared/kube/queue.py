"""A per-key work queue: what stands between a controller's triggers and its workers.

Triggers (watch events, resyncs, bus events) say *which* object to look at, never *what*
changed, so the queue holds keys, and a key is either in it or not. The rules are client-go's
`workqueue`:

- A key is **dirty** while it waits to be processed and **processing** while a worker holds
  it (between `get()` and `done(key)`).
- `add(key)` of a dirty key does nothing: twenty events before a worker is free are one pass.
- `add(key)` of a processing key marks it dirty but does not hand it out: no two workers ever
  hold the same key. `done(key)` puts it back in line once, so the change that arrived during
  the pass is seen by a pass that starts after it.
- `add_after(key, delay)` parks the key until the delay has passed, then adds it. A parked key
  keeps its earliest time: a later, longer `add_after` does not postpone it, and an `add`
  meanwhile does not cancel it (a spare pass costs a reconcile, never correctness).
- `add_rate_limited(key)` is `add_after` with a per-key exponential backoff:
  `min(cap, base * 2**failures)`, shortened by up to `jitter` (a fraction of at most 0.5, so
  each delay is at least the one before it until the cap). `forget(key)` resets the count; a
  controller forgets a key when its reconcile succeeds.
- `get()` waits for the next ready key; `shutdown()` wakes every waiter with `QueueShutDown`
  and refuses further adds. Unlike client-go's, a shut-down queue hands out nothing more: the
  keys left behind are simply reconciled again by whoever runs next (a resync lists them all).

No task runs behind the queue: waiters sleep until the next parked key is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """The queue was shut down: a worker should return."""


class WorkQueue(Generic[K]):
    """De-duplicating, delaying, rate-limiting queue of keys (see the module)."""

    def __init__(
        self,
        *,
        backoff_base: float = 0.5,
        backoff_max: float = 300.0,
        jitter: float = 0.5,
        rng: random.Random | None = None,
    ) -> None:
        if backoff_base <= 0 or backoff_max < backoff_base:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        if not 0 <= jitter <= 0.5:
            raise ValueError("jitter is a fraction in [0, 0.5]")
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.jitter = jitter
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._parked: dict[K, float] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._shut_down = False

    # --- state ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Keys ready to be handed out now, parked ones whose time has come included.

        The depth a metric reports; it changes nothing, so a scrape from any thread is safe.
        """
        now = time.monotonic()
        return len(self._ready) + sum(1 for at in list(self._parked.values()) if at <= now)

    @property
    def parked(self) -> int:
        """Keys waiting for a delay to pass."""
        return len(self._parked)

    @property
    def processing(self) -> int:
        return len(self._processing)

    @property
    def shutting_down(self) -> bool:
        return self._shut_down

    def retries(self, key: K) -> int:
        """How many rate-limited adds `key` had since it was last forgotten."""
        return self._failures.get(key, 0)

    # --- adding ---------------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._wake_one()

    def add_after(self, key: K, delay: float) -> None:
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        at = time.monotonic() + delay
        current = self._parked.get(key)
        if current is not None and current <= at:
            return
        earliest = self._next_due()
        self._parked[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        if earliest is None or at < earliest:
            self._wake_one()  # a sleeping waiter must shorten its sleep

    def add_rate_limited(self, key: K) -> float:
        """Park `key` for its next backoff delay; returns the delay in seconds."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = min(self.backoff_max, self.backoff_base * 2.0 ** min(failures, 62))
        delay *= 1.0 - self.jitter * self._rng.random()
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """Reset `key`'s backoff (it does not remove a parked or queued key)."""
        self._failures.pop(key, None)

    # --- handing out ----------------------------------------------------------------

    async def get(self) -> K:
        """The next ready key, now marked processing; call `done(key)` when finished."""
        while True:
            self._promote()
            if self._shut_down:
                raise QueueShutDown
            if self._ready:
                key = self._ready.popleft()
                self._dirty.discard(key)
                self._processing.add(key)
                return key
            due = self._next_due()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait((waiter,), timeout=timeout)
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken for a key we will not take: pass it on
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):  # already popped by a wake-up
                    self._waiters.remove(waiter)

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut_down:
            self._ready.append(key)
            self._wake_one()

    def shutdown(self) -> None:
        self._shut_down = True
        self._ready.clear()
        self._dirty.clear()
        self._parked.clear()
        self._heap.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # --- internals ------------------------------------------------------------------

    def _promote(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            at, _, key = heapq.heappop(self._heap)
            if self._parked.get(key) == at:  # else a stale entry, superseded by an earlier time
                del self._parked[key]
                self.add(key)

    def _next_due(self) -> float | None:
        while self._heap:
            at, _, key = self._heap[0]
            if self._parked.get(key) == at:
                return at
            heapq.heappop(self._heap)
        return None

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
