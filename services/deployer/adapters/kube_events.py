"""A deployment's Kubernetes Events: what happened to its BentoDeployment and its children.

The Events worth showing are about the BentoDeployment itself (the deployer's own, on a
condition transition) and about what it made: the Deployments, Services, autoscalers and
Ingresses labelled `ekiben.dev/deployment=<name>`, their Pods (same label, from the pod
template) and the ReplicaSets between (named `<Deployment>-<pod-template-hash>`, found by
name so the deployer needs no access to ReplicaSets). Events are listed once per namespace
through the core API, which shows both `events.k8s.io` Events (the controllers') and
core ones (the kubelet's, the scheduler's), and filtered here by `involvedObject`.

`related` and `event_item` are pure, for unit tests; `DeploymentEvents` does the reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from shared.contracts import deployer as dep
from shared.errors import Unavailable
from shared.kube.kinds import (
    BENTO_DEPLOYMENT,
    CORE_EVENT,
    DEPLOYMENT,
    HORIZONTAL_POD_AUTOSCALER,
    INGRESS,
    POD,
    SERVICE,
    Kind,
)
from shared.kube.objects import Objects, api_message

# What the deployer labels with the deployment's name, and can list.
LABELLED: tuple[Kind, ...] = (DEPLOYMENT, SERVICE, HORIZONTAL_POD_AUTOSCALER, INGRESS, POD)

ObjectRef = tuple[str, str]  # (kind, name)


def related(kind: str, name: str, owned: set[ObjectRef]) -> bool:
    """Whether an Event about `kind/name` is about the deployment whose objects are `owned`."""
    if (kind, name) in owned:
        return True
    if kind == "ReplicaSet":  # <deployment>-<hash>, the hash without a dash
        parent, sep, _ = name.rpartition("-")
        return bool(sep) and (DEPLOYMENT.kind, parent) in owned
    return False


def _first(*values: Any) -> Any:
    return next((v for v in values if v), None)


def event_item(raw: dict[str, Any]) -> dep.KubeEvent:
    """A core/v1 Event in the API's words; a series (events.k8s.io) counts its repeats."""
    metadata = raw.get("metadata") or {}
    series = raw.get("series") or {}
    involved = raw.get("involvedObject") or {}
    source = raw.get("source") or {}
    created = metadata.get("creationTimestamp")
    return dep.KubeEvent(
        type=str(raw.get("type") or "Normal"),
        reason=str(raw.get("reason") or ""),
        message=str(raw.get("message") or raw.get("note") or ""),
        count=max(1, int(_first(series.get("count"), raw.get("count"), 1))),
        first_seen=_first(raw.get("firstTimestamp"), raw.get("eventTime"), created),
        last_seen=_first(
            series.get("lastObservedTime"), raw.get("lastTimestamp"), raw.get("eventTime"),
            created,
        ),
        object_kind=str(involved.get("kind") or ""),
        object_name=str(involved.get("name") or ""),
        source=str(
            _first(raw.get("reportingComponent"), source.get("component"),
                   raw.get("reportingController"), "")
        ),
    )  # fmt: skip


def deployment_events(
    raw_events: Iterable[dict[str, Any]], owned: set[ObjectRef], limit: int
) -> list[dep.KubeEvent]:
    """The Events about `owned`, the most recently seen first, at most `limit`."""
    items = [
        event_item(raw)
        for raw in raw_events
        if related(
            str((raw.get("involvedObject") or {}).get("kind") or ""),
            str((raw.get("involvedObject") or {}).get("name") or ""),
            owned,
        )
    ]

    def seen(item: dep.KubeEvent) -> float:
        when = item.last_seen or item.first_seen
        return when.timestamp() if when else float("-inf")

    return sorted(items, key=seen, reverse=True)[:limit]


class DeploymentEvents:
    """Reads the Events of one deployment in its namespace (any deployer replica can)."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    async def owned(self, namespace: str, name: str) -> set[ObjectRef]:
        selector = f"{dep.DEPLOYMENT_LABEL}={name}"
        listed = await asyncio.gather(
            *(self.objects.list(kind, namespace, label_selector=selector) for kind in LABELLED)
        )
        owned = {(BENTO_DEPLOYMENT.kind, name)}
        for kind, objects in zip(LABELLED, listed, strict=True):
            owned.update((kind.kind, str(obj["metadata"]["name"])) for obj in objects)
        return owned

    async def list(self, namespace: str, name: str, limit: int) -> list[dep.KubeEvent]:
        try:
            owned, raw = await asyncio.gather(
                self.owned(namespace, name), self.objects.list(CORE_EVENT, namespace)
            )
        except ApiException as exc:
            raise Unavailable(
                f"the Kubernetes API refused the events of {namespace}/{name}: {api_message(exc)}"
            ) from exc
        return deployment_events(raw, owned, limit)
