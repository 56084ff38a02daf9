"""shared.kube.events against the real API server: Events appear, repeats bump their series."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from shared.kube.events import EventRecorder
from shared.kube.kinds import EVENT
from shared.kube.objects import Objects
from tests.k8s.support import create_request

pytestmark = pytest.mark.k8s


async def events_about(objects: Objects, namespace: str, name: str) -> list[dict[str, Any]]:
    return await objects.list(EVENT, namespace, field_selector=f"regarding.name={name}")


async def test_events_are_recorded_and_repeats_counted(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    request = await create_request(objects, kube_namespace, "iris")
    recorder = EventRecorder(kube_api, controller="ekiben.dev/builder", instance="builder-0")

    await recorder.normal(request, "BuildStarted", "job iris-build started", action="Build")
    for _ in range(2):
        await recorder.warning(request, "BentoNotFound", "no bento svc:v1 in the registry")
    await recorder.warning(request, "BentoNotFound", "no bento svc:v2 in the registry")
    assert (recorder.created, recorder.bumped, recorder.failures) == (3, 1, 0)

    events = await events_about(objects, kube_namespace, "iris")
    by_note = {e["note"]: e for e in events}
    assert set(by_note) == {
        "job iris-build started",
        "no bento svc:v1 in the registry",
        "no bento svc:v2 in the registry",
    }
    started = by_note["job iris-build started"]
    assert started["type"] == "Normal"
    assert started["reason"] == "BuildStarted"
    assert started["action"] == "Build"
    assert started["reportingController"] == "ekiben.dev/builder"
    assert started["reportingInstance"] == "builder-0"
    assert started["regarding"]["uid"] == request["metadata"]["uid"]
    assert started["regarding"]["kind"] == "BentoRequest"
    assert "series" not in started
    repeated = by_note["no bento svc:v1 in the registry"]
    assert repeated["series"]["count"] == 2
    assert by_note["no bento svc:v2 in the registry"].get("series") is None

    await recorder.warning(request, "BentoNotFound", "no bento svc:v1 in the registry")
    events = await events_about(objects, kube_namespace, "iris")
    assert len(events) == 3
    counts = {e["note"]: (e.get("series") or {}).get("count", 1) for e in events}
    assert counts["no bento svc:v1 in the registry"] == 3

    # The core/v1 view (kubectl describe: "x3 over 2s") sees the same series.
    core = client.CoreV1Api(kube_api)
    listed = await core.list_namespaced_event(
        kube_namespace, field_selector="involvedObject.name=iris"
    )
    assert sorted(e.series.count if e.series else 1 for e in listed.items) == [1, 1, 3]


async def test_a_repeat_after_the_window_starts_a_new_event(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    request = await create_request(objects, kube_namespace, "iris")
    recorder = EventRecorder(kube_api, controller="ekiben.dev/builder", instance="b", window=0.0)
    await recorder.normal(request, "Waiting", "waiting for the build")
    await recorder.normal(request, "Waiting", "waiting for the build")
    assert (recorder.created, recorder.bumped) == (2, 0)
    assert len(await events_about(objects, kube_namespace, "iris")) == 2


async def test_a_failure_to_record_is_logged_not_raised(kube_api: client.ApiClient) -> None:
    recorder = EventRecorder(kube_api, controller="ekiben.dev/builder", instance="b")
    ghost = {
        "apiVersion": "resources.ekiben.dev/v1alpha1",
        "kind": "BentoRequest",
        "metadata": {"name": "ghost", "namespace": "no-such-namespace", "uid": "x"},
    }
    await recorder.warning(ghost, "Failed", "nobody will see this")
    assert (recorder.created, recorder.failures) == (0, 1)
