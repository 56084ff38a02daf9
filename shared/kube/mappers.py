"""From an event about one object to the keys of the objects whose reconcile it concerns.

A controller reconciles one kind (its primary: BentoRequest, BentoDeployment) but must look
again when something it depends on changes. A mapper is a plain function from the changed
object to primary keys, given to `Controller.watch(watcher, mapper=...)`:

- **owned children** (Deployments, Services, HPAs, Ingresses, Jobs, a Bento built for a
  request) point at their parent in `metadata.ownerReferences`: `parents_of`, or
  `owned_by(api_version, kind)` as a mapper;
- **labelled children** carry the parent's name in a label: `labelled(label)`;
- **referenced objects** are named in the primary's spec (a BentoDeployment's `spec.bento`
  names a Bento): `referenced_by(primary_watcher, reference)` finds the primaries in the
  same namespace whose reference matches, from that watcher's cache.

Mappers run on the controller's watch task for every event: they must be quick and must not
do I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from shared.kube.watch import ObjectKey, Watcher

Mapper = Callable[[dict[str, Any]], Iterable[ObjectKey]]


def parents_of(
    obj: dict[str, Any], *, api_version: str, kind: str, controller_only: bool = False
) -> list[ObjectKey]:
    """Keys of `obj`'s owners of this kind (any version of the group matches).

    Owners live in the child's namespace (or are cluster-scoped: namespace "").
    """
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace", ""))
    group = api_version.rpartition("/")[0]
    keys: list[ObjectKey] = []
    for ref in metadata.get("ownerReferences") or []:
        if ref.get("kind") != kind or str(ref.get("apiVersion", "")).rpartition("/")[0] != group:
            continue
        if controller_only and not ref.get("controller"):
            continue
        key = (namespace, str(ref.get("name", "")))
        if key[1] and key not in keys:
            keys.append(key)
    return keys


def owned_by(api_version: str, kind: str, *, controller_only: bool = False) -> Mapper:
    """A mapper to the owners of kind `kind` (see `parents_of`)."""

    def mapper(obj: dict[str, Any]) -> list[ObjectKey]:
        return parents_of(obj, api_version=api_version, kind=kind, controller_only=controller_only)

    return mapper


def labelled(label: str) -> Mapper:
    """A mapper to the primary named by `label` on the object, in the object's namespace."""

    def mapper(obj: dict[str, Any]) -> list[ObjectKey]:
        metadata = obj.get("metadata") or {}
        name = (metadata.get("labels") or {}).get(label)
        return [(str(metadata.get("namespace", "")), str(name))] if name else []

    return mapper


def referenced_by(
    primary: Watcher, reference: Callable[[dict[str, Any]], str | Iterable[str] | None]
) -> Mapper:
    """A mapper to the primaries whose `reference(primary_obj)` names the changed object.

    `primary` is the controller's primary watcher; its cache is scanned (a linear pass, fine
    for the hundreds of objects a namespace holds).
    """

    def mapper(obj: dict[str, Any]) -> list[ObjectKey]:
        metadata = obj.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        name = str(metadata.get("name", ""))
        keys: list[ObjectKey] = []
        for key, candidate in primary.known.items():
            if key[0] != namespace:
                continue
            names = reference(candidate)
            if names is None:
                continue
            if name == names or (not isinstance(names, str) and name in names):
                keys.append(key)
        return keys

    return mapper
