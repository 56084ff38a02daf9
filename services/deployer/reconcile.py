"""The BentoDeployment reconciler: the Bento it names and its children, made to converge.

`reconcile(key)` is level-based (see shared/kube): every pass reads the BentoDeployment,
the Bento it names and its children from the watch caches, and converges:

1. No BentoDeployment: if the deployment was being terminated, it is now `terminated`.
2. Made through the API but no longer in the database (deleted): remove it.
3. Terminating: remove it (the owner references take the children along).
4. No Bento yet: ask for a build once (`build.requested`, through the outbox), report
   `image-building` (or `image-build-failed` once `build.failed` said so) and wait: the
   Bento watch brings the key back.
5. Not written by the API (kubectl, GitOps): record it as a deployment, or a new spec as a
   new revision (source "cluster"), once per generation.
6. Render the children (render.py) and apply each one whose manifest changed (server-side
   apply under the field manager, skipped by hash against the cache: an idle pass writes
   nothing); remove children no longer rendered.
7. Read the children back into a status (`observe`), write the BentoDeployment's status
   (conditions with observedGeneration) only when it changed, and report it to the
   deployer's database, which emits `deployment.status_changed` once per change.

Status is pushed: the controller (controller.py) watches Deployments, Pods and the rest, so
a replica that becomes ready reaches `deployment.status_changed` within one reconcile, not a
polling period.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import Gauge

from services.deployer.render import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    Child,
    Observed,
    RenderError,
    RenderOptions,
    observe,
    render,
    urls,
)
from services.deployer.repository import DeploymentRow
from services.deployer.service import STOPPED, DeployerService
from services.deployer.settings import DeployerSettings
from services.deployer.spec import SECRET_PREFIX
from shared.contracts import deployer as dep
from shared.contracts.deployer import DEPLOYMENT_LABEL, ORGANIZATION_LABEL, SERVICE_LABEL
from shared.contracts.vocabulary import DeploymentStatus
from shared.errors import EkibenError, PermanentError
from shared.kube import EventRecorder, Objects, Result, Watcher, owner_reference
from shared.kube.conditions import set_condition
from shared.kube.kinds import (
    BENTO_DEPLOYMENT,
    DEPLOYMENT,
    HORIZONTAL_POD_AUTOSCALER,
    INGRESS,
    SECRET,
    SERVICE,
    Kind,
)
from shared.kube.objects import is_deleting
from shared.kube.watch import ObjectKey
from shared.logging import get_logger

log = get_logger(__name__)

DEPLOYMENT_STATUS = Gauge(
    "ekiben_deployment_status",
    "1 for the status each deployment is in, 0 for the others",
    ["namespace", "deployment", "status"],
)
UID_ANNOTATION = "ekiben.dev/deployment-uid"
CHILD_KINDS: tuple[Kind, ...] = (DEPLOYMENT, SERVICE, HORIZONTAL_POD_AUTOSCALER, INGRESS)


def options_from(settings: DeployerSettings, namespace: str) -> RenderOptions:
    ingress = settings.ingress
    return RenderOptions(
        namespace=namespace,
        image_pull_secret=settings.image_pull_secret,
        ingress_enabled=ingress.enabled,
        ingress_class=ingress.class_name,
        domain_suffix=ingress.domain_suffix,
        ingress_path=ingress.path,
        tls_secret_name=ingress.tls_secret_name,
        ingress_annotations=ingress.annotations,
    )


def bento_target(bento: dict[str, Any]) -> dep.BentoTarget:
    """A Bento resource as the revision of a GitOps deployment records it."""
    spec = bento.get("spec") or {}
    name, _, version = str(spec.get("tag", "")).partition(":")
    return dep.BentoTarget(
        name=name,
        version=version,
        services=[str(s["name"]) for s in spec.get("services") or [] if s.get("name")],
        entry_service=spec.get("entryService") or None,
    )


def set_metric(namespace: str, name: str, status: DeploymentStatus | None) -> None:
    for value in DeploymentStatus:
        if status is None:
            with contextlib.suppress(KeyError):
                DEPLOYMENT_STATUS.remove(namespace, name, value.value)
        else:
            DEPLOYMENT_STATUS.labels(namespace, name, value.value).set(float(value is status))


class DeploymentReconciler:
    """The reconcile of one cluster's BentoDeployments; it reads the controller's caches."""

    def __init__(
        self,
        *,
        service: DeployerService,
        objects: Objects,
        recorder: EventRecorder,
        settings: DeployerSettings,
        bds: Sequence[Watcher],
        bentos: Sequence[Watcher],
        children: Mapping[Kind, Sequence[Watcher]],
        pods: Sequence[Watcher],
    ) -> None:
        self.service = service
        self.objects = objects
        self.recorder = recorder
        self.settings = settings
        self.cluster = settings.cluster_name
        # The controller's watches, only read here (their `known` caches).
        self.bds = bds
        self.bentos = bentos
        self.children = children
        self.pods = pods

    # --- the loop body ------------------------------------------------------------------

    async def reconcile(self, key: ObjectKey) -> Result | None:  # noqa: PLR0911 - a return per way out
        namespace, name = key
        bd = self._cached(self.bds, key)
        if bd is None:
            return await self._gone(key)
        row = await self.service.find(self.cluster, namespace, name)
        metadata = bd["metadata"]
        made_by_api = UID_ANNOTATION in (metadata.get("annotations") or {})
        if row is None and made_by_api:
            # Deleted through the API: the event's handler removes it too; either is enough.
            await self.objects.delete(BENTO_DEPLOYMENT, key, uid=metadata["uid"])
            return None
        if row is not None and row.status in STOPPED:
            if not is_deleting(bd):
                await self.objects.delete(BENTO_DEPLOYMENT, key, uid=metadata["uid"])
            await self._report(bd, row, DeploymentStatus.TERMINATING, "Terminated",
                               "stopping the workloads")  # fmt: skip
            return None
        if is_deleting(bd):
            return None
        if row is not None and self._changed_on_cluster(bd, row):
            # The cache may be behind this deployer's own write (sync_from_database applied
            # a generation the watch has not brought yet): that is no edit on the cluster.
            # The API server says which; when it is, its watch event brings the key back.
            live = await self.objects.get(BENTO_DEPLOYMENT, key)
            if live is None or not self._changed_on_cluster(live, row):
                return None
            bd, metadata = live, live["metadata"]
        bento = self._cached(self.bentos, (namespace, str(bd["spec"]["bento"])))
        if bento is None:
            return await self._wait_for_bento(bd, row)
        if row is None or self._changed_on_cluster(bd, row):
            organization = (metadata.get("labels") or {}).get(
                ORGANIZATION_LABEL, self.settings.default_organization
            )
            row = await self.service.record_cluster_spec(
                self.cluster, bd, bento_target(bento), organization
            )
        await self._secrets(bd, row)
        options = options_from(self.settings, namespace)
        try:
            children = render(bd, bento, options, owner_reference(bd))
        except RenderError as exc:
            raise PermanentError(str(exc), reason=exc.reason) from exc
        await self._apply(bd, children)
        observed = observe(
            children,
            {
                c.name: self._cached(self.children[DEPLOYMENT], (namespace, c.name))
                for c in children
            },
            self._pods(namespace, name),
            settled=_settled(bd),
        )
        image = str((bento.get("spec") or {}).get("image", ""))
        await self._write_status(bd, observed, image=image, url=next(iter(urls(bd, options)), ""))
        await self._report(
            bd, row, observed.status, observed.reason, observed.message, urls=urls(bd, options),
            ready=observed.ready, desired=observed.replicas,
        )  # fmt: skip
        return None

    async def on_permanent(self, key: ObjectKey, exc: EkibenError) -> None:
        """A BentoDeployment that cannot be deployed as it is: `failed`, its reason."""
        bd = self._cached(self.bds, key)
        if bd is None:
            return
        reason = str(getattr(exc, "reason", None) or exc.code)
        observed = Observed(DeploymentStatus.FAILED, reason, str(exc))
        await self._write_status(bd, observed, image="", url="")
        row = await self.service.find(self.cluster, *key)
        if row is not None:
            await self._report(bd, row, DeploymentStatus.FAILED, reason, str(exc))

    # --- steps --------------------------------------------------------------------------

    def _changed_on_cluster(self, bd: dict[str, Any], row: DeploymentRow) -> bool:
        """A spec change not made through the API: kubectl edited the BentoDeployment."""
        known = row.revision.kube_generation
        return known is not None and int(bd["metadata"].get("generation") or 0) != known

    async def _wait_for_bento(self, bd: dict[str, Any], row: DeploymentRow | None) -> Result | None:
        bento_name = bd["spec"]["bento"]
        if row is not None and row.revision.build_failed_reason:
            status, reason = DeploymentStatus.IMAGE_BUILD_FAILED, "BuildFailed"
            failure = row.revision.build_failed_reason
            message = f"the image of bento {bento_name} could not be built: {failure}"
        else:
            if row is not None:
                await self.service.request_build(row)
            status, reason = DeploymentStatus.IMAGE_BUILDING, "BentoNotFound"
            message = f"waiting for the image of bento {bento_name} (Bento {bento_name})"
        observed = Observed(status, reason, message)
        await self._write_status(bd, observed, image="", url="")
        if row is not None:
            await self._report(bd, row, status, reason, message)
        return None

    async def _secrets(self, bd: dict[str, Any], row: DeploymentRow) -> None:
        """The organization secrets the spec names, as Secrets in its namespace."""
        names = [
            str((source.get("secretRef") or {}).get("name", "")).removeprefix(SECRET_PREFIX)
            for source in bd["spec"].get("envFrom") or []
            if str((source.get("secretRef") or {}).get("name", "")).startswith(SECRET_PREFIX)
        ]
        if not names:
            return
        data = await self.service.secret_data(row.organization, names)
        namespace = bd["metadata"]["namespace"]
        for secret, values in data.items():
            manifest = {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {
                    "name": f"{SECRET_PREFIX}{secret}", "namespace": namespace,
                    "labels": {MANAGED_BY_LABEL: MANAGED_BY, ORGANIZATION_LABEL: row.organization},
                },
                "type": "Opaque",
                "stringData": values,
            }  # fmt: skip
            # A read by name (the deployer may not list Secrets), a write only on a change.
            await self.objects.apply_if_changed(SECRET, manifest)

    async def _apply(self, bd: dict[str, Any], children: list[Child]) -> None:
        namespace = bd["metadata"]["namespace"]
        wanted = {(c.kind, c.name) for c in children}
        for child in children:
            live = self._cached(self.children[child.kind], (namespace, child.name))
            await self.objects.apply_if_changed(child.kind, child.manifest, live=live)
        for kind in CHILD_KINDS:
            for obj in self._owned(kind, bd):
                name = obj["metadata"]["name"]
                if (kind, name) not in wanted:
                    await self.objects.delete(kind, (namespace, name), uid=obj["metadata"]["uid"])

    async def _write_status(
        self, bd: dict[str, Any], observed: Observed, *, image: str, url: str
    ) -> None:
        key = (bd["metadata"]["namespace"], bd["metadata"]["name"])
        changed: list[tuple[str, str]] = []

        def mutate(obj: dict[str, Any]) -> dict[str, Any]:
            generation = int(obj["metadata"].get("generation") or 0)
            status = copy.deepcopy(obj.get("status") or {})
            if status.get("phase") != observed.status.value:
                changed.append((observed.reason, observed.message))
            status.update(
                observedGeneration=generation, phase=observed.status.value, image=image, url=url,
                replicas=observed.replicas, readyReplicas=observed.ready,
                services=observed.services,
            )  # fmt: skip
            conditions = status.setdefault("conditions", [])
            found = observed.status not in (
                DeploymentStatus.IMAGE_BUILDING, DeploymentStatus.IMAGE_BUILD_FAILED
            )  # fmt: skip
            set_condition(conditions, "BentoFound", found, "Found" if found else observed.reason,
                          "" if found else observed.message, generation)  # fmt: skip
            available = observed.status is DeploymentStatus.RUNNING
            set_condition(conditions, "Available", available, observed.reason or "Unknown",
                          observed.message, generation)  # fmt: skip
            progressing = observed.status in (
                DeploymentStatus.DEPLOYING, DeploymentStatus.IMAGE_BUILDING
            )  # fmt: skip
            set_condition(conditions, "Progressing", progressing, observed.reason or "Unknown",
                          observed.message, generation)  # fmt: skip
            return status

        written = await self.objects.update_status(BENTO_DEPLOYMENT, key, mutate)
        if written is not None and changed:
            reason, message = changed[-1]
            warn = observed.status in (
                DeploymentStatus.FAILED, DeploymentStatus.UNHEALTHY,
                DeploymentStatus.IMAGE_BUILD_FAILED,
            )  # fmt: skip
            record = self.recorder.warning if warn else self.recorder.normal
            try:
                await record(written, reason, message)
            except Exception as exc:  # noqa: BLE001 - an Event is advice, never a failure
                log.warning("deployer.event.failed", error=repr(exc))

    async def _report(
        self, bd: dict[str, Any], row: DeploymentRow, status: DeploymentStatus, reason: str,
        message: str, *, urls: list[str] | None = None, ready: int = 0, desired: int = 0,
    ) -> None:  # fmt: skip
        metadata = bd["metadata"]
        set_metric(metadata["namespace"], metadata["name"], status)
        changed = await self.service.record_status(
            self.cluster, metadata["namespace"], metadata["name"], status, reason, message,
            urls=urls, ready=ready, desired=desired,
            generation=int(metadata.get("generation") or 0),
        )  # fmt: skip
        if changed:
            log.info(
                "deployer.status.changed", deployment=metadata["name"], status=status.value,
                reason=reason, previous=row.status.value,
            )  # fmt: skip

    async def _gone(self, key: ObjectKey) -> Result | None:
        namespace, name = key
        row = await self.service.find(self.cluster, namespace, name)
        if row is None:
            set_metric(namespace, name, None)
            return None
        # Not in the cache is not gone: an object just written by the API side may not have
        # reached the watch yet. One read by name decides.
        if await self.objects.get(BENTO_DEPLOYMENT, key) is not None:
            return Result(requeue_after=0.2)
        if row.status in STOPPED:
            if self._cached_children(namespace, name):
                return Result(requeue_after=1.0)  # the garbage collector is still at work
            set_metric(namespace, name, DeploymentStatus.TERMINATED)
            await self.service.record_status(
                self.cluster, namespace, name, DeploymentStatus.TERMINATED, "Terminated",
                "the workloads are stopped",
            )  # fmt: skip
            return None
        # Deleted with kubectl while the API still has it: the record stays, terminated.
        set_metric(namespace, name, DeploymentStatus.TERMINATED)
        await self.service.record_status(
            self.cluster, namespace, name, DeploymentStatus.TERMINATED, "Deleted",
            "the BentoDeployment was deleted on the cluster",
        )  # fmt: skip
        return None

    # --- the caches ---------------------------------------------------------------------

    @staticmethod
    def _cached(watchers: Iterable[Watcher], key: ObjectKey) -> dict[str, Any] | None:
        for watcher in watchers:
            found = watcher.known.get(key)
            if found is not None:
                return found
        return None

    def _owned(self, kind: Kind, bd: dict[str, Any]) -> list[dict[str, Any]]:
        uid = bd["metadata"]["uid"]
        namespace = bd["metadata"]["namespace"]
        return [
            obj
            for watcher in self.children[kind]
            for key, obj in watcher.known.items()
            if key[0] == namespace
            and any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _pods(self, namespace: str, name: str) -> dict[str, list[dict[str, Any]]]:
        """The deployment's pods by their service label (see render.observe)."""
        by_service: dict[str, list[dict[str, Any]]] = {}
        for watcher in self.pods:
            for key, pod in watcher.known.items():
                labels = pod["metadata"].get("labels") or {}
                if key[0] == namespace and labels.get(DEPLOYMENT_LABEL) == name:
                    by_service.setdefault(labels.get(SERVICE_LABEL, ""), []).append(pod)
        return by_service

    def _cached_children(self, namespace: str, name: str) -> list[dict[str, Any]]:
        return [
            obj
            for obj in itertools.chain.from_iterable(
                w.known.values() for w in self.children[DEPLOYMENT]
            )
            if obj["metadata"].get("namespace") == namespace
            and (obj["metadata"].get("labels") or {}).get(DEPLOYMENT_LABEL) == name
        ]


def _settled(bd: dict[str, Any]) -> bool:
    """Whether the BentoDeployment's status says running, about its present generation."""
    status = bd.get("status") or {}
    generation = int(bd["metadata"].get("generation") or 0)
    return status.get("phase") == DeploymentStatus.RUNNING.value and (
        int(status.get("observedGeneration") or -1) == generation
    )
