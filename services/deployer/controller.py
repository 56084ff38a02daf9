"""The deployer as a Kubernetes operator: the watches and the work queue of one cluster.

Wiring only (the logic is in reconcile.py, the manifests in render.py): BentoDeployments in
the watched namespaces are the primary kind; the Bentos they name, the Deployments,
Services, HPAs and Ingresses they own and the Pods labelled with their name map back to
them. Watching the children is what pushes status: a replica that becomes ready reaches
`deployment.status_changed` within one reconcile, not a polling period.

The event handlers write the BentoDeployment for the API (`sync_from_database`, under the
API's own field manager) and enqueue it.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from services.deployer.reconcile import UID_ANNOTATION, DeploymentReconciler
from services.deployer.render import MANAGED_BY, MANAGED_BY_LABEL
from services.deployer.repository import DeploymentRow
from services.deployer.service import STOPPED, DeployerService
from services.deployer.settings import DeployerSettings
from shared.contracts import deployer as dep
from shared.contracts.deployer import DEPLOYMENT_LABEL, ORGANIZATION_LABEL
from shared.kube import Controller, EventRecorder, Objects, Watcher
from shared.kube.kinds import (
    BENTO,
    BENTO_DEPLOYMENT,
    DEPLOYMENT,
    HORIZONTAL_POD_AUTOSCALER,
    INGRESS,
    SERVICE,
    Kind,
)
from shared.kube.mappers import Mapper, labelled, owned_by
from shared.kube.watch import ObjectKey
from shared.logging import get_logger

log = get_logger(__name__)

API_FIELD_MANAGER = "ekiben-api"
_MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


class DeploymentController:
    """One cluster's controller of BentoDeployments (the namespaces its settings name)."""

    def __init__(
        self, settings: DeployerSettings, api: client.ApiClient, service: DeployerService
    ) -> None:
        self.settings = settings
        self.cluster = settings.cluster_name
        self.service = service
        self.objects = Objects(api, field_manager=settings.field_manager)
        # The BentoDeployment's spec is written on behalf of API users under its own
        # manager: kubectl's fields and the API's never collide with the controller's.
        self.api_objects = Objects(api, field_manager=API_FIELD_MANAGER)
        recorder = EventRecorder(api, controller=MANAGED_BY, instance=settings.cluster_name)
        crs = client.CustomObjectsApi(api)
        apps = client.AppsV1Api(api)
        core = client.CoreV1Api(api)
        autoscaling = client.AutoscalingV2Api(api)
        networking = client.NetworkingV1Api(api)
        namespaces = settings.kube.namespaces

        def custom(kind: Kind) -> list[Watcher]:
            group, version, plural = kind.group, kind.version, kind.plural
            if namespaces == [""]:
                return [Watcher(crs.list_cluster_custom_object, group, version, plural)]
            return [
                Watcher(crs.list_namespaced_custom_object, group, version, ns, plural)
                for ns in namespaces
            ]

        def builtin(everywhere: Any, per_namespace: Any, **kwargs: Any) -> list[Watcher]:
            if namespaces == [""]:
                return [Watcher(everywhere, **kwargs)]
            return [Watcher(per_namespace, ns, **kwargs) for ns in namespaces]

        self.bds = custom(BENTO_DEPLOYMENT)
        self.bentos = custom(BENTO)
        self.children: dict[Kind, list[Watcher]] = {
            DEPLOYMENT: builtin(
                apps.list_deployment_for_all_namespaces, apps.list_namespaced_deployment,
                label_selector=_MANAGED,
            ),
            SERVICE: builtin(
                core.list_service_for_all_namespaces, core.list_namespaced_service,
                label_selector=_MANAGED,
            ),
            HORIZONTAL_POD_AUTOSCALER: builtin(
                autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces,
                autoscaling.list_namespaced_horizontal_pod_autoscaler,
                label_selector=_MANAGED,
            ),
            INGRESS: builtin(
                networking.list_ingress_for_all_namespaces, networking.list_namespaced_ingress,
                label_selector=_MANAGED,
            ),
        }  # fmt: skip
        self.pods = builtin(
            core.list_pod_for_all_namespaces, core.list_namespaced_pod, label_selector=_MANAGED
        )
        self.reconciler = DeploymentReconciler(
            service=service,
            objects=self.objects,
            recorder=recorder,
            settings=settings,
            bds=self.bds,
            bentos=self.bentos,
            children=self.children,
            pods=self.pods,
        )
        self.controller = Controller(
            "deployer",
            self.reconciler.reconcile,
            workers=settings.workers,
            resync_seconds=settings.resync_seconds,
            on_permanent=self.reconciler.on_permanent,
        )
        for watcher in self.bds:
            self.controller.watch(watcher, name="bentodeployments")
        for watcher in self.bentos:
            self.controller.watch(
                watcher, mapper=self._referencing, retry_failed=True, name="bentos"
            )
        owner: Mapper = owned_by(BENTO_DEPLOYMENT.api_version, BENTO_DEPLOYMENT.kind)
        for kind, watchers in self.children.items():
            for watcher in watchers:
                self.controller.watch(watcher, mapper=owner, name=kind.plural)
        for watcher in self.pods:
            self.controller.watch(watcher, mapper=labelled(DEPLOYMENT_LABEL), name="pods")

    # --- mappers ------------------------------------------------------------------------

    def _referencing(self, bento: dict[str, Any]) -> list[ObjectKey]:
        metadata = bento.get("metadata") or {}
        namespace, name = metadata.get("namespace", ""), metadata.get("name", "")
        return [
            key
            for watcher in self.bds
            for key, bd in watcher.known.items()
            if key[0] == namespace and (bd.get("spec") or {}).get("bento") == name
        ]

    # --- writing the BentoDeployment for the API ------------------------------------------

    async def sync_from_database(self, namespace: str, name: str) -> None:
        """Make the BentoDeployment what the database says (the event handlers call this).

        Level-based like reconcile: whatever event arrived, the latest revision is applied,
        or the object removed when the deployment is stopped or gone.
        """
        row = await self.service.find(self.cluster, namespace, name)
        key = (namespace, name)
        if row is None or row.status in STOPPED:
            live = await self.objects.get(BENTO_DEPLOYMENT, key)
            if live is not None and (
                row is not None or UID_ANNOTATION in (live["metadata"].get("annotations") or {})
            ):
                await self.objects.delete(BENTO_DEPLOYMENT, key, uid=live["metadata"]["uid"])
            if row is not None:
                self.controller.enqueue(key)
            return
        manifest = bento_deployment_manifest(row)
        live = await self.objects.get(BENTO_DEPLOYMENT, key)
        if live is not None and row.revision.source == "cluster":
            return  # the revision was read from this object: writing it back would take
            # kubectl's fields over under the API's field manager
        if (
            live is not None
            and live["metadata"].get("annotations", {}).get(dep.REVISION_ANNOTATION)
            == str(row.revision.number)
            and row.revision.kube_generation is not None
        ):
            return  # already there (a redelivered event)
        applied = await self.api_objects.apply(BENTO_DEPLOYMENT, manifest)
        await self.service.applied(row, int(applied["metadata"].get("generation") or 1))
        self.controller.enqueue(key)


def bento_deployment_manifest(row: DeploymentRow) -> dict[str, Any]:
    revision = row.revision
    return {
        "apiVersion": BENTO_DEPLOYMENT.api_version,
        "kind": BENTO_DEPLOYMENT.kind,
        "metadata": {
            "name": row.name,
            "namespace": row.namespace,
            "labels": {ORGANIZATION_LABEL: row.organization, MANAGED_BY_LABEL: "ekiben"},
            "annotations": {
                UID_ANNOTATION: row.uid,
                dep.REVISION_ANNOTATION: str(revision.number),
            },
        },
        "spec": revision.spec,
    }
