"""List-then-watch, the way a controller must consume the Kubernetes API.

A bare watch is not enough for a reconciler: it only reports changes after it starts, it ends
whenever the server's `timeoutSeconds` runs out or a connection drops, and a `resourceVersion`
it resumes from may have been compacted away (HTTP 410 Gone). `Watcher` is the informer
protocol of client-go's reflector, without the cache:

1. **List** the collection (in pages), remember the list's `resourceVersion`, and emit every
   object, then a synthetic `SYNCED` event: from here on the consumer has seen the whole state.
2. **Watch** from that `resourceVersion` with `allowWatchBookmarks=true`. Every event, including
   `BOOKMARK` (an object that only carries a fresh `resourceVersion`), moves the resume point
   forward, so a reconnect after a quiet hour does not start from an ancient version.
3. When the watch **ends** (server timeout) reconnect at once from the last `resourceVersion`;
   on a connection error or a 5xx/429 reconnect after an exponential backoff with jitter.
4. On **410 Gone** (from the watch request or as an `ERROR` event, or an expired `continue`
   token while paging) **relist**. The relist is diffed against the objects known so far, so
   the consumer receives `ADDED`/`MODIFIED` for what changed while it was not looking, `DELETED`
   (with the last known object) for what disappeared, and then `SYNCED` again. Nothing is lost
   and unchanged objects are not replayed.

Reconcilers are level-based (they re-read the object they are told about), so the events are a
trigger, not the truth: a replayed `MODIFIED` is harmless, a missed `DELETED` is not, which is
why the relist diff exists.

Objects are plain JSON dicts (the watcher requests raw responses), for custom and built-in
kinds alike; list items get the `apiVersion`/`kind` that list responses leave out.

Usage::

    crs = client.CustomObjectsApi(api)
    watcher = Watcher(crs.list_namespaced_custom_object,
                      "serving.ekiben.dev", "v1alpha1", namespace, "bentodeployments")
    async with aclosing(aiter(watcher)) as events:  # closes the HTTP stream
        async for event in events:
            if event.type != "SYNCED":
                queue.put_nowait(event.key)

Pass `resource_version=` to resume from a stored point without an initial list (a 410 still
falls back to a relist). Other API errors (403, or 404 when a CRD is not installed) propagate:
they need a person, not a retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "SYNCED"]
ObjectKey = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped kinds

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change. For `SYNCED`, `object` is the list's metadata (with `resourceVersion`)."""

    type: EventType
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))

    @property
    def key(self) -> ObjectKey:
        return object_key(self.object)


def object_key(obj: dict[str, Any]) -> ObjectKey:
    metadata = obj.get("metadata", {})
    return (str(metadata.get("namespace", "")), str(metadata.get("name", "")))


class ResourceExpiredError(Exception):
    """The API server no longer has the requested resourceVersion (410 Gone)."""


class TransientWatchError(Exception):
    """A watch or list failed in a way that a later retry can fix."""


class Watcher:
    """An endless, resumable stream of `WatchEvent`s for one collection.

    `list_fn` is a kubernetes_asyncio list method (`CoreV1Api.list_namespaced_pod`,
    `CustomObjectsApi.list_cluster_custom_object`, ...); `args` and `kwargs` are passed to every
    call (namespace, label selectors, ...).
    """

    def __init__(
        self,
        list_fn: Callable[..., Awaitable[Any]],
        *args: Any,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        page_size: int = 500,
        yield_bookmarks: bool = False,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        **kwargs: Any,
    ) -> None:
        self.list_fn = list_fn
        self.args = args
        self.kwargs = kwargs
        self.resource_version = resource_version
        self.timeout_seconds = timeout_seconds
        self.page_size = page_size
        self.yield_bookmarks = yield_bookmarks
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # Counters for logs, metrics and tests.
        self.relists = 0
        self.reconnects = 0
        self._known: dict[ObjectKey, dict[str, Any]] = {}

    @property
    def known(self) -> dict[ObjectKey, dict[str, Any]]:
        """The last state seen of every live object (a read-only view by convention)."""
        return self._known

    def __aiter__(self) -> AsyncGenerator[WatchEvent, None]:
        # A fresh generator per iteration: closing one (aclose) and iterating again resumes
        # from `resource_version` with the objects already known.
        return self._run()

    async def _run(self) -> AsyncGenerator[WatchEvent, None]:
        need_list = self.resource_version is None
        failures = 0
        while True:
            try:
                if need_list:
                    async with aclosing(self._relist()) as listed:
                        async for event in listed:
                            yield event
                    need_list = False
                # aclosing: a consumer that stops at a yield closes the HTTP stream at once.
                async with aclosing(self._watch_once()) as watched:
                    async for event in watched:
                        failures = 0
                        yield event
                # The server closed the stream at timeoutSeconds: the normal end of a watch.
                self.reconnects += 1
            except ResourceExpiredError:
                log.info("watch resourceVersion %s expired; relisting", self.resource_version)
                self.relists += 1
                need_list = True
            except (TimeoutError, aiohttp.ClientError, TransientWatchError) as exc:
                failures += 1
                self.reconnects += 1
                delay = min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
                log.warning("watch interrupted (%r); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> AsyncGenerator[WatchEvent, None]:
        items: list[dict[str, Any]] = []
        continue_token: str | None = None
        while True:
            extra: dict[str, Any] = {"limit": self.page_size}
            if continue_token:
                extra["_continue"] = continue_token
            page = await self._call(**extra)
            list_kind = str(page.get("kind", ""))
            item_kind = list_kind.removesuffix("List") if list_kind.endswith("List") else None
            for item in page.get("items") or []:
                # List items omit apiVersion/kind; watch events carry them. Make both alike.
                if item_kind and "kind" not in item:
                    item["kind"] = item_kind
                if "apiVersion" not in item and "apiVersion" in page:
                    item["apiVersion"] = page["apiVersion"]
                items.append(item)
            metadata = page.get("metadata") or {}
            continue_token = metadata.get("continue") or None
            if not continue_token:
                break

        listed: dict[ObjectKey, dict[str, Any]] = {object_key(item): item for item in items}
        for key, obj in listed.items():
            old = self._known.get(key)
            self._known[key] = obj
            if old is None:
                yield WatchEvent("ADDED", obj)
            elif _uid(old) != _uid(obj):
                # Deleted and recreated under the same name while we were not watching.
                yield WatchEvent("DELETED", old)
                yield WatchEvent("ADDED", obj)
            elif _rv(old) != _rv(obj):
                yield WatchEvent("MODIFIED", obj)
        for key in [k for k in self._known if k not in listed]:
            yield WatchEvent("DELETED", self._known.pop(key))
        self.resource_version = str(metadata["resourceVersion"])
        yield WatchEvent("SYNCED", dict(metadata))

    async def _watch_once(self) -> AsyncGenerator[WatchEvent, None]:
        response = await self._request(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.timeout_seconds,
            # The server ends the stream at timeout_seconds; a read silent for much longer
            # than that means a dead connection.
            _request_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=30, sock_read=self.timeout_seconds + 30
            ),
        )
        async with response:
            await _raise_for_status(response)
            # Read lines by hand: aiohttp's readline() rejects lines over 128 KiB, and one
            # event is one line however large the object is.
            buffer = bytearray()
            async for chunk in response.content.iter_any():
                buffer.extend(chunk)
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        event = self._apply(json.loads(line))
                        if event is not None:
                            yield event

    def _apply(self, raw: dict[str, Any]) -> WatchEvent | None:
        kind = raw.get("type")
        obj: dict[str, Any] = raw.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise ResourceExpiredError(obj.get("message", "410 Gone"))
            if code in _TRANSIENT_STATUS:
                raise TransientWatchError(obj.get("message", f"watch error {code}"))
            raise ApiException(status=code or 0, reason=obj.get("message", "watch error"))
        rv = _rv(obj)
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return WatchEvent("BOOKMARK", obj) if self.yield_bookmarks else None
        if kind in ("ADDED", "MODIFIED"):
            self._known[object_key(obj)] = obj
            return WatchEvent(kind, obj)
        if kind == "DELETED":
            self._known.pop(object_key(obj), None)
            return WatchEvent("DELETED", obj)
        log.warning("ignoring unknown watch event type %r", kind)
        return None

    async def _request(self, **extra: Any) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await self.list_fn(
                *self.args, **self.kwargs, **extra, _preload_content=False
            )
        except ApiException as exc:
            # kubernetes_asyncio reports connection failures as status 0.
            if exc.status == 0:
                raise TransientWatchError(str(exc.reason)) from exc
            raise
        return response

    async def _call(self, **extra: Any) -> dict[str, Any]:
        response = await self._request(**extra)
        async with response:
            await _raise_for_status(response)
            body: dict[str, Any] = json.loads(await response.read())
        return body


async def _raise_for_status(response: aiohttp.ClientResponse) -> None:
    if 200 <= response.status < 300:
        return
    text = await response.text()
    if response.status == 410:
        raise ResourceExpiredError(text)
    if response.status in _TRANSIENT_STATUS:
        raise TransientWatchError(f"{response.status}: {text}")
    raise ApiException(status=response.status, reason=f"{response.reason}: {text}")


def _rv(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("resourceVersion", ""))


def _uid(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("uid", ""))
