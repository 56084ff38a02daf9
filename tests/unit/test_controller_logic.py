"""shared.kube.controller driven by `enqueue` alone: outcomes, retries, stop. No server.

The watch-driven behaviour (bursts, generations, resync, mapped events) is in
tests/k8s/test_controller.py, against the real API server.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from prometheus_client import REGISTRY

from shared.errors import InvalidInput, PermanentError, TemporaryError
from shared.kube.controller import Controller, Result
from shared.kube.watch import ObjectKey

KEY: ObjectKey = ("ns", "a")


async def until(predicate: object, timeout: float = 5.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_success_requeue_after_and_metrics() -> None:
    calls: list[float] = []

    async def reconcile(key: ObjectKey) -> Result | None:
        calls.append(time.monotonic())
        return Result(requeue_after=0.2) if len(calls) == 1 else None

    controller = Controller("unit-requeue", reconcile, workers=1)
    async with controller.running():
        controller.enqueue(KEY)
        await until(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.18
    assert sample("ekiben_reconcile_total", controller="unit-requeue", outcome="requeue") == 1
    assert sample("ekiben_reconcile_total", controller="unit-requeue", outcome="success") == 1


async def test_temporary_errors_back_off_then_succeed_and_the_backoff_is_forgotten() -> None:
    calls: list[float] = []

    async def reconcile(key: ObjectKey) -> None:
        calls.append(time.monotonic())
        if len(calls) <= 4:
            raise RuntimeError("flaky")

    controller = Controller("unit-backoff", reconcile, backoff_base=0.1, backoff_max=5.0)
    async with controller.running():
        controller.enqueue(KEY)
        await until(lambda: len(calls) == 5)
        assert controller.queue.retries(KEY) == 0  # forgotten on success
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    # Backoff 0.1 * 2**n, shortened by up to half: each gap at least its minimum. (The
    # first includes rendering the traceback, slow in tests: the k8s test compares gaps.)
    for n, gap in enumerate(gaps):
        assert gap >= 0.1 * 2**n * 0.5 * 0.95, gaps
    assert sample("ekiben_workqueue_retries_total", controller="unit-backoff") == 4


async def test_a_temporary_error_with_a_delay_waits_that_long() -> None:
    calls: list[float] = []

    async def reconcile(key: ObjectKey) -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TemporaryError("build running", delay=0.3, reason="BuildRunning")

    controller = Controller("unit-delay", reconcile, backoff_base=0.01)
    async with controller.running():
        controller.enqueue(KEY)
        await until(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.28


@pytest.mark.parametrize(
    "error", [PermanentError("bad spec", reason="InvalidSpec"), InvalidInput("x")]
)
async def test_a_permanent_error_is_recorded_and_waits_for_an_explicit_enqueue(
    error: Exception,
) -> None:
    calls: list[ObjectKey] = []
    hooked: list[tuple[ObjectKey, str]] = []

    async def reconcile(key: ObjectKey) -> None:
        calls.append(key)
        raise error

    async def on_permanent(key: ObjectKey, exc: Exception) -> None:
        hooked.append((key, str(exc)))

    name = f"unit-permanent-{type(error).__name__}"
    controller = Controller(name, reconcile, backoff_base=0.01, on_permanent=on_permanent)
    async with controller.running():
        controller.enqueue(KEY)
        await until(lambda: controller.is_failed(KEY))
        await asyncio.sleep(0.2)  # a retry (0.01 s backoff) would have come by now
        assert calls == [KEY]
        assert hooked == [(KEY, str(error))]
        controller.enqueue(KEY)  # an outside signal asks again
        await until(lambda: len(calls) == 2)
    assert sample("ekiben_reconcile_total", controller=name, outcome="permanent") == 2


async def test_a_failing_permanent_hook_turns_into_a_retry() -> None:
    calls: list[ObjectKey] = []
    hook_calls: list[ObjectKey] = []

    async def reconcile(key: ObjectKey) -> None:
        calls.append(key)
        raise PermanentError("bad")

    async def on_permanent(key: ObjectKey, exc: Exception) -> None:
        hook_calls.append(key)
        if len(hook_calls) == 1:
            raise RuntimeError("could not write the Failed condition")

    controller = Controller("unit-hook", reconcile, backoff_base=0.02, on_permanent=on_permanent)
    async with controller.running():
        controller.enqueue(KEY)
        await until(lambda: controller.is_failed(KEY))
    assert len(calls) == 2
    assert len(hook_calls) == 2


async def test_one_key_is_never_reconciled_twice_at_once_but_keys_run_in_parallel() -> None:
    running: set[ObjectKey] = set()
    overlaps: list[ObjectKey] = []
    peak = 0
    done = 0

    async def reconcile(key: ObjectKey) -> None:
        nonlocal peak, done
        if key in running:
            overlaps.append(key)
        running.add(key)
        peak = max(peak, len(running))
        await asyncio.sleep(0.05)
        running.discard(key)
        done += 1

    controller = Controller("unit-parallel", reconcile, workers=4)
    async with controller.running():
        for _ in range(5):
            for name in "abcd":
                controller.enqueue(("ns", name))
            await asyncio.sleep(0.01)
        await until(lambda: done >= 8 and len(controller.queue) == 0 and not running)
    assert overlaps == []
    assert peak >= 2


async def test_stop_waits_for_an_in_flight_reconcile_within_the_grace() -> None:
    finished: list[ObjectKey] = []
    started = asyncio.Event()

    async def reconcile(key: ObjectKey) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(key)

    controller = Controller("unit-stop", reconcile, stop_grace=5.0)
    await controller.start()
    controller.enqueue(KEY)
    await started.wait()
    await controller.stop()
    assert finished == [KEY]


async def test_run_cancelled_cancels_in_flight_reconciles_at_once() -> None:
    started = asyncio.Event()
    cancelled: list[ObjectKey] = []

    async def reconcile(key: ObjectKey) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(key)
            raise

    controller = Controller("unit-run", reconcile, stop_grace=30.0)
    task = asyncio.create_task(controller.run())
    controller.enqueue(KEY)
    await started.wait()
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - began < 2.0
    assert cancelled == [KEY]
    assert not controller.healthy
