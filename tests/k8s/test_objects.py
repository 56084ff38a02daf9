"""shared.kube.objects against the real API server: apply, apply-if-changed, status, finalizers."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.devstack.kube import KubeControlPlane
from shared.errors import TemporaryError
from shared.kube.conditions import get_condition, set_condition
from shared.kube.kinds import BENTO_REQUEST, CONFIG_MAP
from shared.kube.objects import APPLIED_HASH_ANNOTATION, Objects, owner_reference
from tests.k8s.support import RequestLog, counted_api, create_request, retag

pytestmark = pytest.mark.k8s


@pytest.fixture
async def counted(
    kube_control_plane: KubeControlPlane,
) -> AsyncIterator[tuple[Objects, RequestLog]]:
    async with counted_api(kube_control_plane.kubeconfig_path) as (api, log):
        yield Objects(api, field_manager="ekiben-test"), log


def config_map(namespace: str, name: str = "cfg", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "x"}},
        "data": data,
    }


async def test_get_create_list_delete(kube_api: client.ApiClient, kube_namespace: str) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    key = (kube_namespace, "cfg")
    assert await objects.get(CONFIG_MAP, key) is None
    created = await objects.create(CONFIG_MAP, config_map(kube_namespace, x="1"))
    assert created["metadata"]["uid"]
    listed = await objects.list(CONFIG_MAP, kube_namespace, label_selector="app=x", page_size=1)
    assert [(o["kind"], o["metadata"]["name"]) for o in listed] == [("ConfigMap", "cfg")]
    with pytest.raises(ApiException) as info:
        await objects.create(CONFIG_MAP, config_map(kube_namespace))
    assert info.value.status == 409
    assert await objects.delete(CONFIG_MAP, key, propagation="Background")
    assert await objects.get(CONFIG_MAP, key) is None
    assert not await objects.delete(CONFIG_MAP, key)


async def test_server_side_apply_owns_fields_under_its_field_manager(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    applied = await objects.apply(CONFIG_MAP, config_map(kube_namespace, x="1", y="2"))
    managers = {(m["manager"], m["operation"]) for m in applied["metadata"]["managedFields"]}
    assert ("ekiben-test", "Apply") in managers
    # Someone else adds a field; our next apply drops a field of ours and keeps theirs.
    other = Objects(kube_api, field_manager="someone-else")
    await other.patch(CONFIG_MAP, (kube_namespace, "cfg"), {"data": {"z": "3"}})
    again = await objects.apply(CONFIG_MAP, config_map(kube_namespace, x="1"))
    assert again["data"] == {"x": "1", "z": "3"}


async def test_apply_if_changed_sends_no_write_when_the_desired_state_is_live(
    counted: tuple[Objects, RequestLog], kube_namespace: str
) -> None:
    objects, log = counted
    desired = config_map(kube_namespace, x="1")

    live, changed = await objects.apply_if_changed(CONFIG_MAP, desired)
    assert changed
    assert log.methods() == ["GET", "PATCH"]
    assert live["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
    assert "annotations" not in desired["metadata"] or not desired["metadata"]["annotations"]

    log.clear()
    again, changed = await objects.apply_if_changed(CONFIG_MAP, copy.deepcopy(desired))
    assert not changed
    assert log.methods() == ["GET"]  # a read, no write
    assert again["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]

    log.clear()
    _, changed = await objects.apply_if_changed(CONFIG_MAP, desired, live=again)
    assert not changed
    assert log.calls == []  # with the live object from a cache: no request at all

    log.clear()
    updated, changed = await objects.apply_if_changed(
        CONFIG_MAP, config_map(kube_namespace, x="2"), live=again
    )
    assert changed
    assert log.methods() == ["PATCH"]
    assert updated["data"] == {"x": "2"}


def _condition_setter(reason: str) -> Any:
    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        status = obj.get("status") or {}
        set_condition(
            status.setdefault("conditions", []),
            "ImageBuilding",
            "True",
            reason,
            "job is running",
            obj["metadata"]["generation"],
        )
        return status

    return mutate


async def test_update_status_survives_a_409_conflict(
    counted: tuple[Objects, RequestLog], kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects, log = counted
    await create_request(objects, kube_namespace, "iris")
    key = (kube_namespace, "iris")
    someone_else = Objects(kube_api, field_manager="someone-else")
    set_running = _condition_setter("JobRunning")
    seen_versions: list[str] = []

    async def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        seen_versions.append(obj["metadata"]["resourceVersion"])
        if len(seen_versions) == 1:
            # The object changes between our read and our write.
            await retag(someone_else, kube_namespace, "iris", "svc:v2")
        result: dict[str, Any] = set_running(obj)
        return result

    log.clear()
    written = await objects.update_status(BENTO_REQUEST, key, mutate)
    assert written is not None
    assert len(seen_versions) == 2
    assert seen_versions[0] != seen_versions[1]
    # GET, PUT (409), GET, PUT: the second write carried the new resourceVersion.
    assert log.methods() == ["GET", "PUT", "GET", "PUT"]
    live = await objects.get(BENTO_REQUEST, key)
    assert live is not None
    assert live["spec"]["bentoTag"] == "svc:v2"  # the other writer's change survives
    condition = get_condition(live["status"]["conditions"], "ImageBuilding")
    assert condition is not None
    assert condition["reason"] == "JobRunning"
    assert condition["observedGeneration"] == 2

    # The same status again: read, compare, no write.
    log.clear()
    await objects.update_status(BENTO_REQUEST, key, set_running)
    assert log.methods() == ["GET"]
    assert await objects.update_status(BENTO_REQUEST, (kube_namespace, "nope"), set_running) is None


async def test_update_status_gives_up_after_repeated_conflicts(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    await create_request(objects, kube_namespace, "busy")
    tags = iter(f"svc:v{n}" for n in range(10, 20))
    set_running = _condition_setter("JobRunning")

    async def always_racing(obj: dict[str, Any]) -> dict[str, Any]:
        await retag(objects, kube_namespace, "busy", next(tags))
        result: dict[str, Any] = set_running(obj)
        return result

    with pytest.raises(TemporaryError, match="conflicts"):
        await objects.update_status(
            BENTO_REQUEST, (kube_namespace, "busy"), always_racing, attempts=3
        )


async def test_finalizers_are_added_and_removed_without_losing_anothers(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    obj = await create_request(objects, kube_namespace, "fin")
    key = (kube_namespace, "fin")
    # Another controller adds its finalizer after we read: our stale copy must not erase it.
    await objects.patch(BENTO_REQUEST, key, {"metadata": {"finalizers": ["other.dev/keep"]}})
    added = await objects.add_finalizer(BENTO_REQUEST, obj, "ekiben.dev/cleanup")
    assert added["metadata"]["finalizers"] == ["other.dev/keep", "ekiben.dev/cleanup"]
    assert await objects.add_finalizer(BENTO_REQUEST, added, "ekiben.dev/cleanup") is added

    await objects.delete(BENTO_REQUEST, key)
    deleting = await objects.get(BENTO_REQUEST, key)
    assert deleting is not None
    assert deleting["metadata"]["deletionTimestamp"]
    kept = await objects.remove_finalizer(BENTO_REQUEST, added, "ekiben.dev/cleanup")
    assert kept is not None
    assert kept["metadata"]["finalizers"] == ["other.dev/keep"]
    gone = await objects.remove_finalizer(BENTO_REQUEST, kept, "other.dev/keep")
    assert gone is None or not gone["metadata"].get("finalizers")
    assert await objects.get(BENTO_REQUEST, key) is None


async def test_owner_references_let_the_garbage_collector_find_children(
    kube_api: client.ApiClient, kube_namespace: str
) -> None:
    objects = Objects(kube_api, field_manager="ekiben-test")
    owner = await create_request(objects, kube_namespace, "parent")
    child = config_map(kube_namespace, "child", x="1")
    child["metadata"]["ownerReferences"] = [owner_reference(owner)]
    created = await objects.apply(CONFIG_MAP, child)
    [ref] = created["metadata"]["ownerReferences"]
    assert ref["uid"] == owner["metadata"]["uid"]
    assert ref["controller"] is True
