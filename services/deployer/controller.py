"""The deployer as a Kubernetes operator: watches, the work queue, the Lease.

Wiring only (the logic is in reconcile.py, the manifests in render.py): BentoDeployments in
the watched namespaces are the primary kind; the Bentos they name, the Deployments,
Services, HPAs and Ingresses they own and the Pods labelled with their name map back to
them. Watching the children is what pushes status: a replica that becomes ready reaches
`deployment.status_changed` within one reconcile, not a polling period. One replica
reconciles at a time: the one holding the Lease `ekiben-deployer` (`lease_name`) in the
deployer's home namespace. Each term begins with a pass making every BentoDeployment of
this cluster what the database says (a cluster rebuilt, an event missed).

Any replica may write a BentoDeployment for the API (the event handlers run everywhere):
`sync_from_database` applies what the database says under the API's own field manager,
which the leader's watch sees, and enqueues it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from kubernetes_asyncio import client

from services.deployer.reconcile import UID_ANNOTATION, DeploymentReconciler
from services.deployer.render import MANAGED_BY, MANAGED_BY_LABEL
from services.deployer.repository import DeploymentRow
from services.deployer.service import STOPPED, DeployerService
from services.deployer.settings import DeployerSettings
from shared.contracts import deployer as dep
from shared.contracts.deployer import DEPLOYMENT_LABEL, ORGANIZATION_LABEL
from shared.errors import Unavailable
from shared.kube import Controller, EventRecorder, LeaderElector, Objects, Watcher, api_client
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
from shared.tasks import stop_tasks

log = get_logger(__name__)

API_FIELD_MANAGER = "ekiben-api"
_MANAGED = f"{MANAGED_BY_LABEL}={MANAGED_BY}"


def identity(settings: DeployerSettings) -> str:
    return settings.identity or f"{socket.gethostname()}-{settings.cluster_name}"


class DeploymentController:
    """One cluster's controller of BentoDeployments (the namespaces its settings name)."""

    def __init__(self, settings: DeployerSettings, service: DeployerService) -> None:
        self.settings = settings
        self.cluster = settings.cluster_name
        self.service = service
        self.api: client.ApiClient | None = None
        self.objects: Objects | None = None
        self.api_objects: Objects | None = None
        # None while stopped: the event handlers wait (a TemporaryError) until it starts.
        self.controller: Controller | None = None
        self.elector: LeaderElector | None = None
        self.reconciler: DeploymentReconciler | None = None
        self._task: asyncio.Task[None] | None = None
        self.bds: list[Watcher] = []
        self.bentos: list[Watcher] = []
        self.children: dict[Kind, list[Watcher]] = {}
        self.pods: list[Watcher] = []

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        self.api = api = await api_client(settings.kube)
        self.objects = Objects(api, field_manager=settings.field_manager)
        # The BentoDeployment's spec is written on behalf of API users under its own
        # manager: kubectl's fields and the API's never collide with the controller's.
        self.api_objects = Objects(api, field_manager=API_FIELD_MANAGER)
        recorder = EventRecorder(api, controller=MANAGED_BY, instance=settings.cluster_name)
        self._watchers(api)
        self.reconciler = DeploymentReconciler(
            service=self.service,
            objects=self.objects,
            recorder=recorder,
            settings=settings,
            bds=self.bds,
            bentos=self.bentos,
            children=self.children,
            pods=self.pods,
        )
        controller = Controller(
            "deployer",
            self.reconciler.reconcile,
            workers=settings.workers,
            resync_seconds=settings.resync_seconds,
            on_permanent=self.reconciler.on_permanent,
        )
        for watcher in self.bds:
            controller.watch(watcher, name="bentodeployments")
        for watcher in self.bentos:
            controller.watch(watcher, mapper=self._referencing, retry_failed=True, name="bentos")
        owner: Mapper = owned_by(BENTO_DEPLOYMENT.api_version, BENTO_DEPLOYMENT.kind)
        for kind, watchers in self.children.items():
            for watcher in watchers:
                controller.watch(watcher, mapper=owner, name=kind.plural)
        for watcher in self.pods:
            controller.watch(watcher, mapper=labelled(DEPLOYMENT_LABEL), name="pods")
        self.controller = controller
        self.elector = LeaderElector(
            api,
            name=settings.lease_name,
            namespace=settings.kube.namespace,
            identity=identity(settings),
        )
        self._task = asyncio.create_task(self.elector.run(self._lead), name="deployer-leader")

    async def stop(self) -> None:
        if self.elector is not None:
            self.elector.stop()
        if self._task is not None:
            await stop_tasks([self._task], grace=15.0)
        if self.api is not None:
            await self.api.close()
        self.controller, self.api, self.elector, self._task = None, None, None, None

    async def _lead(self) -> None:
        """One leadership term: the controller, and a pass making every BentoDeployment of
        this cluster what the database says (a cluster rebuilt, an event missed)."""
        controller = self.controller
        assert controller is not None
        running = asyncio.create_task(controller.run(), name="deployer-controller")
        try:
            await controller.wait_synced()
            try:
                for row in await self.service.cluster_deployments(self.cluster):
                    await self.sync_from_database(row.namespace, row.name)
            except Exception:  # the events and resyncs converge what this pass could not
                log.exception("deployer.resync_from_database.failed")
            await running
        finally:
            await stop_tasks([running], grace=15.0)

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.elector.is_leader

    async def ready(self) -> None:
        """Readiness: a follower is ready; a leader once its watches are listed."""
        if self.controller is None:
            raise Unavailable("the controller is not started")
        if self.leading and not self.controller.healthy:
            raise Unavailable(self.controller.last_error or "watches not synced")

    # --- watches ---------------------------------------------------------------------

    def _watchers(self, api: client.ApiClient) -> None:
        """The watches of one run, over the namespaces the settings name ([""]: all)."""
        crs = client.CustomObjectsApi(api)
        apps = client.AppsV1Api(api)
        core = client.CoreV1Api(api)
        autoscaling = client.AutoscalingV2Api(api)
        networking = client.NetworkingV1Api(api)
        namespaces = self.settings.kube.namespaces

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
        self.children = {
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

    def _referencing(self, bento: dict[str, Any]) -> list[ObjectKey]:
        """The mapper of the Bento watch: the BentoDeployments naming that Bento."""
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
        objects, api_objects, controller = self.objects, self.api_objects, self.controller
        if objects is None or api_objects is None or controller is None:
            raise Unavailable("the deployer is not connected to Kubernetes")
        row = await self.service.find(self.cluster, namespace, name)
        key = (namespace, name)
        if row is None or row.status in STOPPED:
            live = await objects.get(BENTO_DEPLOYMENT, key)
            if live is not None and (
                row is not None or UID_ANNOTATION in (live["metadata"].get("annotations") or {})
            ):
                await objects.delete(BENTO_DEPLOYMENT, key, uid=live["metadata"]["uid"])
            if row is not None:
                controller.enqueue(key)
            return
        manifest = bento_deployment_manifest(row)
        live = await objects.get(BENTO_DEPLOYMENT, key)
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
        applied = await api_objects.apply(BENTO_DEPLOYMENT, manifest)
        await self.service.applied(row, int(applied["metadata"].get("generation") or 1))
        controller.enqueue(key)


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
