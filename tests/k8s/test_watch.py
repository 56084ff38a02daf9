"""shared.kube.watch against the real API server: list, resume, reconnect, 410, bookmarks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from shared.kube.watch import Watcher, WatchEvent

pytestmark = pytest.mark.k8s

GROUP, VERSION, PLURAL = "resources.ekiben.dev", "v1alpha1", "bentorequests"


def request_body(name: str, tag: str = "svc:v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BentoRequest",
        "metadata": {"name": name},
        "spec": {"bentoTag": tag},
    }


class Objects:
    """BentoRequests in one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.crs = client.CustomObjectsApi(api)
        self.namespace = namespace

    async def create(self, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self.crs.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, request_body(name)
        )
        return obj

    async def retag(self, name: str, tag: str) -> dict[str, Any]:
        obj: dict[str, Any] = await self.crs.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            {"spec": {"bentoTag": tag}},
            _content_type="application/merge-patch+json",
        )
        return obj

    async def delete(self, name: str) -> None:
        await self.crs.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def watcher(self, **kwargs: Any) -> Watcher:
        return Watcher(
            self.crs.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            **kwargs,
        )


@pytest.fixture
def objects(kube_api: client.ApiClient, kube_namespace: str) -> Objects:
    return Objects(kube_api, kube_namespace)


async def take(events: AsyncIterator[WatchEvent], count: int, timeout: float = 20) -> list[str]:
    """The next `count` events as "TYPE name" strings."""
    out: list[str] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            event = await anext(events)
            out.append(event.type if event.type == "SYNCED" else f"{event.type} {event.key[1]}")
    return out


async def test_lists_then_watches_changes(objects: Objects) -> None:
    await objects.create("a")
    await objects.create("b")
    watcher = objects.watcher(page_size=1)  # pages through the list with continue tokens
    events = aiter(watcher)
    assert sorted(await take(events, 2)) == ["ADDED a", "ADDED b"]
    assert await take(events, 1) == ["SYNCED"]

    await objects.create("c")
    await objects.retag("a", "svc:v2")
    await objects.delete("b")
    assert await take(events, 3) == ["ADDED c", "MODIFIED a", "DELETED b"]
    assert set(watcher.known) == {(objects.namespace, "a"), (objects.namespace, "c")}
    assert watcher.known[(objects.namespace, "a")]["spec"]["bentoTag"] == "svc:v2"
    assert watcher.relists == 0
    await events.aclose()


async def test_resumes_from_a_resource_version_without_listing(objects: Objects) -> None:
    before = await objects.create("old")
    resume_from = before["metadata"]["resourceVersion"]
    await objects.create("new")
    await objects.retag("old", "svc:v2")

    watcher = objects.watcher(resource_version=resume_from)
    events = aiter(watcher)
    # Only what happened after the resume point; no initial list, no SYNCED.
    assert await take(events, 2) == ["ADDED new", "MODIFIED old"]
    assert watcher.relists == 0
    await events.aclose()


async def test_reconnects_when_the_server_ends_the_watch(objects: Objects) -> None:
    watcher = objects.watcher(timeout_seconds=1)
    events = aiter(watcher)
    assert await take(events, 1) == ["SYNCED"]

    async def later() -> None:
        await asyncio.sleep(2.5)  # past two server-side timeouts
        await objects.create("late")

    task = asyncio.create_task(later())
    assert await take(events, 1) == ["ADDED late"]
    await task
    assert watcher.reconnects >= 2
    assert watcher.relists == 0
    await events.aclose()


async def test_bookmarks_advance_the_resume_point(
    objects: Objects, kube_api: client.ApiClient
) -> None:
    watcher = objects.watcher(timeout_seconds=5, yield_bookmarks=True)
    events = aiter(watcher)
    assert await take(events, 1) == ["SYNCED"]
    listed_at = int(watcher.resource_version or 0)
    # Changes elsewhere in the cluster move the global resourceVersion on.
    other = client.CoreV1Api(kube_api)
    await other.create_namespaced_config_map(
        objects.namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="tick"))
    )
    # The watch cache sends a bookmark before the watch times out.
    async with asyncio.timeout(20):
        event = await anext(events)
    assert event.type == "BOOKMARK"
    assert event.object["kind"] == "BentoRequest"
    assert int(event.resource_version) > listed_at
    assert watcher.resource_version == event.resource_version
    await events.aclose()


async def test_relists_on_410_gone_and_reports_what_changed_meanwhile(objects: Objects) -> None:
    await objects.create("kept")
    await objects.create("changed")
    await objects.create("removed")
    watcher = objects.watcher()
    events = aiter(watcher)
    assert len(await take(events, 4)) == 4  # 3 ADDED + SYNCED
    await events.aclose()

    # While nobody watches: one change, one deletion, one creation. Then resume from a
    # resourceVersion the server no longer has (as after a long outage), which is a 410.
    await objects.retag("changed", "svc:v2")
    await objects.delete("removed")
    await objects.create("added")
    watcher.resource_version = "1"

    events = aiter(watcher)
    got = await take(events, 4)
    assert got[-1] == "SYNCED"
    assert sorted(got[:-1]) == ["ADDED added", "DELETED removed", "MODIFIED changed"]
    assert watcher.relists == 1
    assert set(watcher.known) == {
        (objects.namespace, name) for name in ("kept", "changed", "added")
    }
    # And it keeps watching from the relist's resourceVersion.
    await objects.delete("kept")
    assert await take(events, 1) == ["DELETED kept"]
    await events.aclose()
