"""Kubernetes Events about the objects a controller manages: what `kubectl describe` shows.

An Event (events.k8s.io/v1) says that something happened to an object: `type` Normal or
Warning, a CamelCase `reason` (`BuildStarted`, `BentoNotFound`), a `note` for people, the
`action` taken, and who reported it (`reportingController` such as `ekiben.dev/builder`,
`reportingInstance` such as the pod name). The dashboard and `kubectl describe` read them.

Repeats do not pile up: the recorder remembers the Events it created, and a repeat of the
same (object, type, reason, message) within `window` seconds of the previous occurrence bumps
that Event's `series` (`count`, `lastObservedTime`) instead of creating another. The memory
is a bounded LRU; after a restart, or once the server has expired the Event (one hour by
default), a repeat simply starts a new one.

Events are informative, best effort: a failure to record one is logged, never raised into
the reconcile that reported it. One controller reconciles one key at a time, so two records
of the same repeat never race.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.kube.kinds import EVENT
from shared.kube.objects import Objects
from shared.logging import get_logger

log = get_logger(__name__)

EventType = Literal["Normal", "Warning"]
NOTE_LIMIT = 1024  # bytes, the API server's limit for a new Event's note


def micro_time(now: dt.datetime | None = None) -> str:
    """A metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Recorded:
    namespace: str
    name: str
    count: int
    last_seen: float


class EventRecorder:
    """Records Events for one controller instance (see the module)."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        controller: str,
        instance: str,
        window: float = 600.0,
        cache_size: int = 4096,
    ) -> None:
        self.controller = controller
        self.instance = instance[:128]
        self.window = window
        self.cache_size = cache_size
        self._objects = Objects(api, field_manager=controller.replace("/", "-"))
        self._recent: OrderedDict[tuple[str, ...], _Recorded] = OrderedDict()
        # For tests and debugging: what the last calls did.
        self.created = 0
        self.bumped = 0
        self.failures = 0

    async def normal(self, obj: dict[str, Any], reason: str, message: str, **kw: Any) -> None:
        await self.record(obj, "Normal", reason, message, **kw)

    async def warning(self, obj: dict[str, Any], reason: str, message: str, **kw: Any) -> None:
        await self.record(obj, "Warning", reason, message, **kw)

    async def record(
        self,
        obj: dict[str, Any],
        type_: EventType,
        reason: str,
        message: str,
        *,
        action: str = "Reconcile",
    ) -> None:
        """Record (or bump) an Event about `obj`; never raises for an API failure."""
        metadata = obj.get("metadata") or {}
        regarding = {
            "apiVersion": obj.get("apiVersion", ""),
            "kind": obj.get("kind", ""),
            "name": metadata.get("name", ""),
            "namespace": metadata.get("namespace", ""),
            "uid": metadata.get("uid", ""),
            "resourceVersion": metadata.get("resourceVersion", ""),
        }
        regarding = {k: v for k, v in regarding.items() if v}
        namespace = regarding.get("namespace") or "default"  # cluster-scoped objects
        note = _truncate(message, NOTE_LIMIT)
        identity = (
            regarding.get("uid") or f"{regarding.get('kind')}/{namespace}/{regarding.get('name')}",
            type_,
            reason,
            note,
        )
        try:
            previous = self._recent.get(identity)
            now = time.monotonic()
            recent = previous is not None and now - previous.last_seen <= self.window
            if previous is not None and recent and await self._bump(previous):
                previous.last_seen = now
                self._recent.move_to_end(identity)
                self.bumped += 1
                return
            created = await self._create(regarding, namespace, type_, reason, note, action)
            self._remember(identity, _Recorded(namespace, created, 1, now))
            self.created += 1
        except Exception as exc:  # noqa: BLE001 - Events are best effort (see the module)
            self.failures += 1
            log.warning(
                "kube.event.failed",
                reason=reason,
                object=f"{regarding.get('kind')} {namespace}/{regarding.get('name')}",
                error=repr(exc)[:300],
            )

    async def _create(
        self,
        regarding: dict[str, Any],
        namespace: str,
        type_: EventType,
        reason: str,
        note: str,
        action: str,
    ) -> str:
        base = str(regarding.get("name") or "event")[:200]
        body = {
            "apiVersion": EVENT.api_version,
            "kind": EVENT.kind,
            "metadata": {"name": f"{base}.{uuid.uuid4().hex[:16]}", "namespace": namespace},
            "eventTime": micro_time(),
            "type": type_,
            "reason": reason[:128],
            "note": note,
            "action": action[:128],
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "regarding": regarding,
        }
        created = await self._objects.create(EVENT, body)
        return str(created["metadata"]["name"])

    async def _bump(self, recorded: _Recorded) -> bool:
        """Count one more occurrence; False when the Event is gone (expired)."""
        count = recorded.count + 1
        patch = {"series": {"count": count, "lastObservedTime": micro_time()}}
        try:
            await self._objects.patch(EVENT, (recorded.namespace, recorded.name), patch)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        recorded.count = count
        return True

    def _remember(self, identity: tuple[str, ...], recorded: _Recorded) -> None:
        self._recent[identity] = recorded
        self._recent.move_to_end(identity)
        while len(self._recent) > self.cache_size:
            self._recent.popitem(last=False)


def _truncate(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."
