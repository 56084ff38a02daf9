"""shared.kube.queue: client-go's work queue semantics, without a server."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

from shared.kube.queue import QueueShutDown, WorkQueue


async def next_key(queue: WorkQueue[str], timeout: float = 2.0) -> str:
    async with asyncio.timeout(timeout):
        return await queue.get()


async def nothing_within(queue: WorkQueue[str], seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await queue.get()
    except TimeoutError:
        return True
    return False


async def test_a_key_added_while_queued_is_kept_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(20):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await next_key(queue) == "a"
    assert await next_key(queue) == "b"
    assert len(queue) == 0


async def test_a_key_added_while_processing_is_requeued_once_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await next_key(queue) == "a"
    for _ in range(5):
        queue.add("a")
    # Not handed out to a second worker while the first still holds it.
    assert await nothing_within(queue, 0.05)
    queue.done("a")
    assert await next_key(queue) == "a"
    queue.done("a")
    assert await nothing_within(queue, 0.05)


async def test_done_without_a_new_add_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await next_key(queue) == "a"
    queue.done("a")
    assert len(queue) == 0
    assert await nothing_within(queue, 0.05)


async def test_waiters_each_get_a_different_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    queue.add("a")
    queue.add("b")
    queue.add("c")
    async with asyncio.timeout(2):
        got = await asyncio.gather(*waiters)
    assert sorted(got) == ["a", "b", "c"]


async def test_add_after_delays_and_keeps_the_earliest_time() -> None:
    queue: WorkQueue[str] = WorkQueue()
    began = time.monotonic()
    queue.add_after("a", 0.3)
    queue.add_after("a", 5.0)  # later: does not postpone
    assert queue.parked == 1
    assert len(queue) == 0
    assert await next_key(queue) == "a"
    elapsed = time.monotonic() - began
    assert 0.25 <= elapsed < 2.0
    queue.done("a")

    queue.add_after("b", 5.0)
    queue.add_after("b", 0.05)  # earlier: wins, and wakes the waiter sleeping for 5 s
    began = time.monotonic()
    assert await next_key(queue) == "b"
    assert time.monotonic() - began < 1.0


async def test_a_waiter_already_sleeping_wakes_for_an_earlier_parked_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("late", 10.0)
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.02)
    queue.add_after("soon", 0.05)
    async with asyncio.timeout(2):
        assert await waiter == "soon"


async def test_rate_limited_backoff_grows_with_jitter_is_capped_and_forgotten() -> None:
    queue: WorkQueue[str] = WorkQueue(
        backoff_base=1.0, backoff_max=30.0, jitter=0.5, rng=random.Random(7)
    )
    delays = [queue.add_rate_limited("a") for _ in range(8)]
    for n, delay in enumerate(delays):
        full = min(30.0, 2.0**n)
        assert full * 0.5 <= delay <= full
    # With jitter of at most a half, a delay is never shorter than the one before, until the
    # cap (1, 2, 4, 8, 16, then 30: six uncapped steps, the sixth the first capped one).
    growing = delays[:6]
    assert all(b >= a for a, b in itertools.pairwise(growing))
    assert delays[-1] <= 30.0
    assert queue.retries("a") == 8
    queue.forget("a")
    assert queue.retries("a") == 0
    assert 0.5 <= queue.add_rate_limited("a") <= 1.0


async def test_rate_limited_keys_come_back_after_their_delay() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff_base=0.05, backoff_max=0.05, jitter=0.0)
    queue.add_rate_limited("a")
    assert len(queue) == 0
    assert await next_key(queue) == "a"


async def test_shutdown_wakes_waiters_and_refuses_adds() -> None:
    queue: WorkQueue[str] = WorkQueue()
    waiters = [asyncio.create_task(queue.get()) for _ in range(2)]
    await asyncio.sleep(0)
    queue.shutdown()
    for waiter in waiters:
        with pytest.raises(QueueShutDown):
            await waiter
    queue.add("a")
    queue.add_after("b", 0.01)
    assert len(queue) == 0
    assert queue.parked == 0
    with pytest.raises(QueueShutDown):
        await queue.get()


async def test_a_cancelled_waiter_passes_its_wake_up_on() -> None:
    queue: WorkQueue[str] = WorkQueue()
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    async with asyncio.timeout(2):
        assert await second == "a"
    with pytest.raises(asyncio.CancelledError):
        await first


def test_invalid_backoff_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="backoff"):
        WorkQueue(backoff_base=0)
    with pytest.raises(ValueError, match="backoff"):
        WorkQueue(backoff_base=2, backoff_max=1)
    with pytest.raises(ValueError, match="jitter"):
        WorkQueue(jitter=0.9)
