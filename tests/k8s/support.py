"""Helpers for the shared.kube tests: BentoRequests, polling, and counting API requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from shared.kube.client import api_client_from_kubeconfig
from shared.kube.kinds import BENTO_REQUEST
from shared.kube.objects import Objects
from shared.kube.watch import Watcher

GROUP, VERSION, PLURAL = "resources.ekiben.dev", "v1alpha1", "bentorequests"


def bento_request(name: str, tag: str = "svc:v1") -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BentoRequest",
        "metadata": {"name": name},
        "spec": {"bentoTag": tag},
    }


async def create_request(objects: Objects, namespace: str, name: str) -> dict[str, Any]:
    body = bento_request(name)
    body["metadata"]["namespace"] = namespace
    return await objects.create(BENTO_REQUEST, body)


async def retag(objects: Objects, namespace: str, name: str, tag: str) -> dict[str, Any]:
    return await objects.patch(BENTO_REQUEST, (namespace, name), {"spec": {"bentoTag": tag}})


def request_watcher(api: client.ApiClient, namespace: str, **kwargs: Any) -> Watcher:
    crs = client.CustomObjectsApi(api)
    return Watcher(crs.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, **kwargs)


async def until(predicate: Callable[[], object], *, timeout: float = 20.0, what: str = "") -> None:
    """Poll `predicate` every 20 ms until it is truthy, or fail after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what or predicate}"
        ) from None


class RequestLog:
    """The (method, path) of every request an ApiClient sends through `call_api`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @property
    def writes(self) -> list[tuple[str, str]]:
        return [call for call in self.calls if call[0] != "GET"]

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    def clear(self) -> None:
        self.calls.clear()


@asynccontextmanager
async def counted_api(kubeconfig: Path) -> AsyncIterator[tuple[client.ApiClient, RequestLog]]:
    """A fresh ApiClient whose requests are recorded (the generated APIs go through it too)."""
    api = await api_client_from_kubeconfig(kubeconfig)
    log = RequestLog()
    original = api.call_api

    def counting(resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        log.calls.append((method, resource_path))
        return original(resource_path, method, *args, **kwargs)

    api.call_api = counting  # type: ignore[method-assign]
    async with api:
        yield api, log
