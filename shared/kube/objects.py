"""Reading and writing Kubernetes objects as plain dicts, with the writes a controller needs.

`Objects` is a thin layer over kubernetes_asyncio's `ApiClient.call_api` (its auth, TLS and
connection pool) that speaks JSON dicts for any kind, built-in or custom, given its `Kind`
(shared.kube.kinds). Errors are kubernetes_asyncio's `ApiException` with `status` and the
server's `Status` JSON as `body`, as the generated clients raise them.

Beyond get/list/create/replace/patch/delete, four writes carry a controller's rules:

- **Server-side apply** (`apply`): the desired manifest is sent as an
  `application/apply-patch+yaml` patch under this controller's field manager, with `force`,
  so the server merges it field by field and records who owns what (`managedFields`).
  Fields the manifest leaves out are left to others (an HPA's replicas, a user's labels).
- **Apply only when changed** (`apply_if_changed`): the manifest's hash is stored in the
  `ekiben.dev/applied-hash` annotation; when the live object carries the same hash the
  request is skipped. With `live=` from a watcher's cache an idle reconcile sends nothing.
  The hash tracks *our* desired state: a field someone else changed by hand is corrected the
  next time the desired state changes, not before.
- **Status that survives conflicts** (`update_status`): read, let `mutate(obj)` compute the
  new status, replace `/status` carrying the resourceVersion that was read; a 409 means the
  object moved meanwhile, so read and compute again (a bounded number of times). Nothing is
  written when the status would not change.
- **Finalizers** (`add_finalizer`/`remove_finalizer`): a merge patch of
  `metadata.finalizers` that carries the read resourceVersion, so another controller's
  finalizer added meanwhile is never lost (409, re-read, retry).

`owner_reference` and the pure finalizer helpers sit beside them.
"""

from __future__ import annotations

import builtins
import copy
import hashlib
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from shared.errors import TemporaryError
from shared.kube.conditions import status_differs
from shared.kube.kinds import Kind
from shared.kube.watch import ObjectKey, object_key

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
APPLIED_HASH_ANNOTATION = "ekiben.dev/applied-hash"

Propagation = Literal["Background", "Foreground", "Orphan"]
StatusMutation = Callable[
    [dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any] | None] | None
]

_FETCH: Any = object()  # apply_if_changed: "read the live object yourself"


def is_status(exc: BaseException, *statuses: int) -> bool:
    """Whether `exc` is an API error with one of `statuses`."""
    return isinstance(exc, ApiException) and exc.status in statuses


def api_message(exc: ApiException) -> str:
    """The API server's own words for a refusal (its Status message), else the HTTP reason."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return str(message or exc.reason or exc.status)


class Objects:
    """Object access for one controller; `field_manager` names it in `managedFields`."""

    def __init__(
        self, api: client.ApiClient, *, field_manager: str, request_timeout: float = 30.0
    ) -> None:
        self.api = api
        self.field_manager = field_manager
        self.request_timeout = request_timeout

    # --- plain verbs ----------------------------------------------------------------

    async def get(self, kind: Kind, key: ObjectKey) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", kind.path(*key))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        kind: Kind,
        namespace: str = "",
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> list[dict[str, Any]]:
        """Every matching object (paged), each with its apiVersion and kind."""
        items: list[dict[str, Any]] = []
        query: list[tuple[str, str]] = [("limit", str(page_size))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        continue_token = ""
        while True:
            page_query = [*query, ("continue", continue_token)] if continue_token else query
            page = await self.request("GET", kind.path(namespace), query=page_query)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                items.append(item)
            continue_token = (page.get("metadata") or {}).get("continue") or ""
            if not continue_token:
                return items

    async def create(self, kind: Kind, manifest: dict[str, Any]) -> dict[str, Any]:
        namespace, _ = object_key(manifest)
        return await self.request("POST", kind.path(namespace), body=manifest)

    async def replace(
        self, kind: Kind, manifest: dict[str, Any], *, subresource: str = ""
    ) -> dict[str, Any]:
        """PUT `manifest`; with its `metadata.resourceVersion` this is compare-and-swap."""
        return await self.request(
            "PUT", kind.path(*object_key(manifest), subresource), body=manifest
        )

    async def patch(
        self,
        kind: Kind,
        key: ObjectKey,
        patch: dict[str, Any] | builtins.list[dict[str, Any]],
        *,
        content_type: str = MERGE_PATCH,
        subresource: str = "",
    ) -> dict[str, Any]:
        return await self.request(
            "PATCH", kind.path(*key, subresource), body=patch, content_type=content_type
        )

    async def delete(
        self,
        kind: Kind,
        key: ObjectKey,
        *,
        propagation: Propagation = "Background",
        uid: str | None = None,
    ) -> bool:
        """Delete (children per `propagation`); False when it was already gone.

        With `uid`, only that incarnation is deleted, not a namesake created since.
        """
        body: dict[str, Any] = {"propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", kind.path(*key), body=body)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # --- controller writes ----------------------------------------------------------

    async def apply(
        self, kind: Kind, manifest: dict[str, Any], *, force: bool = True, subresource: str = ""
    ) -> dict[str, Any]:
        """Server-side apply `manifest` (it needs apiVersion, kind and metadata.name)."""
        query = [("fieldManager", self.field_manager)]
        if force:
            query.append(("force", "true"))
        return await self.request(
            "PATCH",
            kind.path(*object_key(manifest), subresource),
            query=query,
            body=manifest,
            content_type=APPLY_PATCH,
        )

    async def apply_if_changed(
        self, kind: Kind, manifest: dict[str, Any], *, live: dict[str, Any] | None = _FETCH
    ) -> tuple[dict[str, Any], bool]:
        """Apply unless the live object already carries this manifest's hash.

        Returns the object and whether a write was sent. `live` is the current object when
        the caller has it (a watcher's cache), None when it is known not to exist; without it
        the object is read first (one GET, no write).
        """
        desired = copy.deepcopy(manifest)
        annotations = desired.setdefault("metadata", {}).setdefault("annotations", {})
        annotations.pop(APPLIED_HASH_ANNOTATION, None)
        digest = manifest_hash(desired)
        if live is _FETCH:
            live = await self.get(kind, object_key(desired))
        if live is not None:
            live_annotations = (live.get("metadata") or {}).get("annotations") or {}
            if live_annotations.get(APPLIED_HASH_ANNOTATION) == digest:
                return live, False
        annotations[APPLIED_HASH_ANNOTATION] = digest
        return await self.apply(kind, desired), True

    async def update_status(
        self,
        kind: Kind,
        key: ObjectKey,
        mutate: StatusMutation,
        *,
        attempts: int = 5,
        read: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Write the status `mutate(obj)` computes, re-reading on 409 conflicts.

        `mutate` gets a fresh copy of the object (sync or async) and returns the whole new
        status, or None for "leave it". Returns the object as written, the live object when
        nothing needed writing, or None when the object does not exist. After `attempts`
        conflicts in a row it raises TemporaryError, which a controller retries with backoff.
        `read` is the object as the caller has just read it: the first try starts from it
        instead of a GET (its resourceVersion makes a stale copy a 409, then a re-read).
        """
        for attempt in range(attempts):
            live = read if attempt == 0 and read is not None else await self.get(kind, key)
            if live is None:
                return None
            proposed = mutate(copy.deepcopy(live))
            status = await proposed if inspect.isawaitable(proposed) else proposed
            if status is None or not status_differs(live.get("status"), status):
                return live
            body = {**live, "status": status}  # metadata carries the resourceVersion read
            try:
                return await self.replace(kind, body, subresource="status")
            except ApiException as exc:
                if exc.status != 409:
                    raise
        raise TemporaryError(
            f"the status of {kind.kind} {key[0]}/{key[1]} kept changing under us "
            f"({attempts} conflicts)",
            reason="StatusConflict",
        )

    async def add_finalizer(
        self, kind: Kind, obj: dict[str, Any], finalizer: str
    ) -> dict[str, Any]:
        """`obj` with `finalizer` added (no request when it is there already)."""
        current: dict[str, Any] | None = obj
        for _ in range(5):
            if current is None:
                raise ApiException(status=404, reason=f"{kind.kind} {object_key(obj)} is gone")
            if has_finalizer(current, finalizer):
                return current
            try:
                return await self._put_finalizers(kind, current, [*_finalizers(current), finalizer])
            except ApiException as exc:
                if exc.status != 409:
                    raise
            current = await self.get(kind, object_key(obj))
        raise TemporaryError(f"finalizers of {kind.kind} {object_key(obj)} kept changing")

    async def remove_finalizer(
        self, kind: Kind, obj: dict[str, Any], finalizer: str
    ) -> dict[str, Any] | None:
        """`obj` without `finalizer` (no request when absent); None when the object is gone."""
        current: dict[str, Any] | None = obj
        for _ in range(5):
            if current is None or not has_finalizer(current, finalizer):
                return current
            remaining = [f for f in _finalizers(current) if f != finalizer]
            try:
                return await self._put_finalizers(kind, current, remaining)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                if exc.status != 409:
                    raise
            current = await self.get(kind, object_key(obj))
        raise TemporaryError(f"finalizers of {kind.kind} {object_key(obj)} kept changing")

    async def _put_finalizers(
        self, kind: Kind, obj: dict[str, Any], finalizers: builtins.list[str]
    ) -> dict[str, Any]:
        # A merge patch replaces the whole list; the resourceVersion makes it conditional.
        metadata = obj.get("metadata") or {}
        patch = {
            "metadata": {"finalizers": finalizers, "resourceVersion": metadata["resourceVersion"]}
        }
        return await self.patch(kind, object_key(obj), patch)

    # --- transport ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: builtins.list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = None,
    ) -> dict[str, Any]:
        """One API request; the JSON answer, or ApiException for a non-2xx status."""
        response = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=request_timeout or self.request_timeout,
        )
        async with response:
            text = await response.text()
            if not 200 <= response.status < 300:
                error = ApiException(status=response.status, reason=response.reason)
                error.body = text
                error.headers = response.headers
                raise error
        answer: dict[str, Any] = json.loads(text) if text else {}
        return answer


# --- pure helpers -----------------------------------------------------------------------


def manifest_hash(manifest: dict[str, Any]) -> str:
    """A stable digest of a manifest (key order does not matter)."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def owner_reference(
    owner: dict[str, Any], *, controller: bool = True, block_owner_deletion: bool = True
) -> dict[str, Any]:
    """An ownerReferences entry naming `owner` (which must have been read: it needs the uid).

    `controller=True` marks the managing owner (at most one per object); with
    `block_owner_deletion` a foreground deletion of the owner waits for this child.
    """
    metadata = owner.get("metadata") or {}
    if not metadata.get("uid"):
        raise ValueError("the owner has no uid: read it from the API server first")
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": block_owner_deletion,
    }


def _finalizers(obj: dict[str, Any]) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def has_finalizer(obj: dict[str, Any], finalizer: str) -> bool:
    return finalizer in _finalizers(obj)


def with_finalizer(obj: dict[str, Any], finalizer: str) -> dict[str, Any]:
    """A copy of `obj` that has `finalizer` (appended once)."""
    out = copy.deepcopy(obj)
    if not has_finalizer(out, finalizer):
        out.setdefault("metadata", {})["finalizers"] = [*_finalizers(out), finalizer]
    return out


def without_finalizer(obj: dict[str, Any], finalizer: str) -> dict[str, Any]:
    """A copy of `obj` without `finalizer`."""
    out = copy.deepcopy(obj)
    if has_finalizer(out, finalizer):
        out["metadata"]["finalizers"] = [f for f in _finalizers(out) if f != finalizer]
    return out


def is_deleting(obj: dict[str, Any]) -> bool:
    """Whether the object is being deleted (it waits for its finalizers)."""
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
