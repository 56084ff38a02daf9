"""shared.kube.controller against the real API server: bursts, backoff, permanent errors,
mapped children, resync, and a watch that cannot start."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from kubernetes_asyncio import client
from prometheus_client import REGISTRY

from shared.errors import EkibenError, PermanentError, TemporaryError
from shared.kube.conditions import set_condition
from shared.kube.controller import Controller
from shared.kube.kinds import BENTO_REQUEST, CONFIG_MAP
from shared.kube.mappers import labelled, owned_by
from shared.kube.objects import Objects, owner_reference
from shared.kube.watch import ObjectKey, Watcher
from tests.k8s.support import create_request, request_watcher, retag, until

pytestmark = pytest.mark.k8s


@pytest.fixture
def objects(kube_api: client.ApiClient) -> Objects:
    return Objects(kube_api, field_manager="ekiben-test")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_burst_of_changes_is_reconciled_once_per_burst(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    await create_request(objects, kube_namespace, "burst")
    key = (kube_namespace, "burst")
    seen: list[str] = []

    async def reconcile(key: ObjectKey) -> None:
        obj = await objects.get(BENTO_REQUEST, key)
        seen.append(obj["spec"]["bentoTag"] if obj else "")
        await asyncio.sleep(0.5)  # what a real pass spends rendering, applying, writing status

    watcher = request_watcher(kube_api, kube_namespace)
    controller = Controller("test-burst", reconcile, workers=4, resync_seconds=None)
    controller.watch(watcher)
    async with controller.running():
        await until(lambda: seen == ["svc:v1"], what="the initial reconcile")
        await until(lambda: controller.queue.processing == 0)

        patched = await asyncio.gather(
            *(retag(objects, kube_namespace, "burst", f"svc:v{n}") for n in range(2, 22))
        )
        final = await objects.get(BENTO_REQUEST, key)
        assert final is not None
        final_rv = final["metadata"]["resourceVersion"]
        assert final_rv == max((p["metadata"]["resourceVersion"] for p in patched), key=int)

        def settled() -> bool:
            # Every event delivered, nothing queued, nothing running.
            delivered = watcher.known[key]["metadata"]["resourceVersion"] == final_rv
            queue = controller.queue
            return delivered and not len(queue) and not queue.parked and not queue.processing

        await until(settled, what="the burst to settle")
    burst = seen[1:]
    assert 1 <= len(burst) <= 3, burst  # 20 changes, not 20 reconciles
    assert burst[-1] == final["spec"]["bentoTag"]


async def test_a_temporary_error_retries_with_growing_backoff_until_it_succeeds(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    await create_request(objects, kube_namespace, "flaky")
    attempts: list[float] = []

    async def reconcile(key: ObjectKey) -> None:
        assert await objects.get(BENTO_REQUEST, key) is not None
        attempts.append(time.monotonic())
        if len(attempts) <= 4:
            raise TemporaryError("the registry did not answer", reason="RegistryUnreachable")

    controller = Controller(
        "test-backoff", reconcile, resync_seconds=None, backoff_base=0.2, backoff_max=10.0
    )
    controller.watch(request_watcher(kube_api, kube_namespace))
    async with controller.running():
        await until(lambda: len(attempts) == 5, what="the fifth attempt")
        await asyncio.sleep(0.3)  # a spurious extra retry would land here
        assert controller.queue.retries((kube_namespace, "flaky")) == 0  # forgotten on success
    assert len(attempts) == 5
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 0.2 * 2**n seconds, shortened by up to half (so a gap is 1 to 4 times the one before):
    # each gap at least its minimum, each at least twice the one two steps earlier (in
    # theory; scheduling delays only lengthen the earlier, shorter one by a little).
    for n, gap in enumerate(gaps):
        assert gap >= 0.2 * 2**n * 0.5 * 0.95, gaps
    assert all(later > earlier * 1.5 for earlier, later in zip(gaps, gaps[2:], strict=False))
    assert gaps[-1] > gaps[0] * 2.5, gaps
    assert metric("ekiben_workqueue_retries_total", controller="test-backoff") == 4
    assert metric("ekiben_reconcile_total", controller="test-backoff", outcome="success") == 1


async def test_a_permanent_error_waits_for_a_spec_change(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    await create_request(objects, kube_namespace, "bad")
    key = (kube_namespace, "bad")
    attempts: list[int | None] = []  # the generation each pass saw (None: gone)

    async def reconcile(key: ObjectKey) -> None:
        obj = await objects.get(BENTO_REQUEST, key)
        attempts.append(obj["metadata"]["generation"] if obj else None)
        if obj is not None and obj["spec"]["bentoTag"] != "svc:fixed":
            raise PermanentError("no such bento", reason="BentoNotFound")

    async def mark_failed(key: ObjectKey, exc: EkibenError) -> None:
        # Writes the status: a MODIFIED event of the same generation, which must not retry.
        def failed(obj: dict[str, Any]) -> dict[str, Any]:
            status = obj.get("status") or {}
            reason = getattr(exc, "reason", "Failed")
            set_condition(
                status.setdefault("conditions", []),
                "BentoAvailable",
                "False",
                reason,
                str(exc),
                obj["metadata"]["generation"],
            )
            return status

        await objects.update_status(BENTO_REQUEST, key, failed)

    watcher = request_watcher(kube_api, kube_namespace)
    controller = Controller(
        "test-permanent", reconcile, resync_seconds=0.2, backoff_base=0.05, on_permanent=mark_failed
    )
    controller.watch(watcher)

    async def quiet_for_resyncs(count: int) -> None:
        target = controller.resyncs + count
        await until(lambda: controller.resyncs >= target, what=f"{count} resyncs")

    async with controller.running():
        await until(lambda: controller.is_failed(key), what="the first failure")
        status_written = await objects.get(BENTO_REQUEST, key)
        assert status_written is not None
        await until(
            lambda: (
                watcher.known[key]["metadata"]["resourceVersion"]
                == status_written["metadata"]["resourceVersion"]
            ),
            what="the status write's own event",
        )
        await quiet_for_resyncs(3)
        assert attempts == [1]  # neither its own status write nor resyncs retried it
        assert controller.skipped >= 3

        await retag(objects, kube_namespace, "bad", "svc:v2")  # a spec change: one retry
        await until(lambda: len(attempts) == 2 and controller.is_failed(key))
        await quiet_for_resyncs(3)
        assert attempts == [1, 2]

        controller.enqueue(key)  # an outside signal (a bento was pushed) asks again
        await until(lambda: len(attempts) == 3 and controller.is_failed(key))
        assert attempts == [1, 2, 2]

        await retag(objects, kube_namespace, "bad", "svc:fixed")
        await until(lambda: len(attempts) == 4 and not controller.is_failed(key))
        assert attempts[-1] == 3

        await retag(objects, kube_namespace, "bad", "svc:broken")
        await until(lambda: len(attempts) == 5 and controller.is_failed(key))
        await objects.delete(BENTO_REQUEST, key)  # deletion clears the failure
        await until(lambda: attempts[-1] is None, what="the reconcile of the deletion")
        assert not controller.is_failed(key)
    assert metric("ekiben_reconcile_total", controller="test-permanent", outcome="permanent") == 4


async def test_a_status_write_does_not_wake_the_reconcile_but_an_annotation_does(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    await create_request(objects, kube_namespace, "quiet")
    key = (kube_namespace, "quiet")
    passes: list[str] = []

    async def reconcile(key: ObjectKey) -> None:
        obj = await objects.get(BENTO_REQUEST, key)
        assert obj is not None

        def ready(live: dict[str, Any]) -> dict[str, Any]:  # a new status on every pass
            return {"image": f"registry.test/pass:{len(passes) + 1}"}

        await objects.update_status(BENTO_REQUEST, key, ready, read=obj)
        passes.append(obj["metadata"]["resourceVersion"])

    watcher = request_watcher(kube_api, kube_namespace)
    controller = Controller("test-status-only", reconcile, resync_seconds=None)
    controller.watch(watcher)

    def delivered(obj: dict[str, Any]) -> bool:
        rv = str(obj["metadata"]["resourceVersion"])
        return str(watcher.known[key]["metadata"]["resourceVersion"]) == rv

    async with controller.running():
        await until(lambda: len(passes) == 1, what="the first pass")
        written = await objects.get(BENTO_REQUEST, key)
        assert written is not None
        assert written["status"] == {"image": "registry.test/pass:1"}
        await until(lambda: delivered(written), what="the status write's own event")
        await asyncio.sleep(0.3)  # a reconcile woken by it would have started
        assert passes == [passes[0]]
        assert controller.status_only >= 1

        annotated = await objects.patch(
            BENTO_REQUEST, key, {"metadata": {"annotations": {"ekiben.dev/rebuild": "1"}}}
        )
        await until(lambda: len(passes) == 2, what="the pass the annotation asks for")
        assert int(passes[1]) >= int(annotated["metadata"]["resourceVersion"])
        await asyncio.sleep(0.3)
        assert len(passes) == 2  # and its status write, again, woke nobody


async def test_events_of_owned_and_labelled_children_reconcile_the_parent(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    owner = await create_request(objects, kube_namespace, "parent")
    await create_request(objects, kube_namespace, "other")
    core = client.CoreV1Api(kube_api)
    reconciled: list[str] = []

    async def reconcile(key: ObjectKey) -> None:
        reconciled.append(key[1])

    controller = Controller("test-mapped", reconcile, resync_seconds=None)
    controller.watch(request_watcher(kube_api, kube_namespace))
    owned = Watcher(core.list_namespaced_config_map, kube_namespace, label_selector="t=owned")
    controller.watch(owned, mapper=owned_by(BENTO_REQUEST.api_version, "BentoRequest"))
    tagged = Watcher(core.list_namespaced_config_map, kube_namespace, label_selector="t=tagged")
    controller.watch(tagged, mapper=labelled("ekiben.dev/request"))

    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": kube_namespace,
            "labels": {"t": "owned"},
            "ownerReferences": [owner_reference(owner)],
        },
        "data": {"step": "0"},
    }
    await objects.create(CONFIG_MAP, child)
    async with controller.running():
        async with asyncio.timeout(20):
            await controller.wait_synced()
        queue = controller.queue
        await until(
            lambda: (
                set(reconciled) == {"other", "parent"} and not len(queue) and not queue.processing
            ),
            what="the initial reconciles",
        )
        reconciled.clear()

        await objects.patch(CONFIG_MAP, (kube_namespace, "child"), {"data": {"step": "1"}})
        await until(lambda: reconciled == ["parent"], what="the owner's reconcile")

        labelled_child = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "tagged",
                "namespace": kube_namespace,
                "labels": {"t": "tagged", "ekiben.dev/request": "other"},
            },
        }
        await objects.create(CONFIG_MAP, labelled_child)
        await until(lambda: reconciled == ["parent", "other"], what="the labelled parent")

        await objects.delete(CONFIG_MAP, (kube_namespace, "child"))
        await until(lambda: reconciled == ["parent", "other", "parent"], what="on deletion")
        assert controller.healthy


async def test_resync_enqueues_every_known_primary(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    for name in ("a", "b"):
        await create_request(objects, kube_namespace, name)
    counts = {"a": 0, "b": 0}

    async def reconcile(key: ObjectKey) -> None:
        counts[key[1]] += 1

    controller = Controller("test-resync", reconcile, resync_seconds=0.2)
    controller.watch(request_watcher(kube_api, kube_namespace))
    async with controller.running():
        await until(lambda: min(counts.values()) >= 3, what="three passes each")
        assert controller.resyncs >= 2


async def test_a_watch_that_cannot_start_is_retried_and_reported_not_fatal(
    kube_api: client.ApiClient, kube_namespace: str, objects: Objects
) -> None:
    await create_request(objects, kube_namespace, "ok")
    reconciled: list[ObjectKey] = []

    async def reconcile(key: ObjectKey) -> None:
        reconciled.append(key)

    crs = client.CustomObjectsApi(kube_api)
    missing = Watcher(
        crs.list_namespaced_custom_object, "nope.ekiben.dev", "v1", kube_namespace, "things"
    )
    controller = Controller(
        "test-watch-404", reconcile, resync_seconds=None, watch_backoff_initial=0.1
    )
    controller.watch(request_watcher(kube_api, kube_namespace))
    controller.watch(missing, mapper=labelled("x"), name="things")
    async with controller.running():
        await until(
            lambda: metric("ekiben_watch_failures_total", controller="test-watch-404") >= 3,
            what="the failing watch to be retried",
        )
        assert not controller.healthy
        assert controller.last_error is not None
        assert "404" in controller.last_error
        # The rest of the controller works on.
        await until(lambda: reconciled == [(kube_namespace, "ok")])
