"""Wiring of the deployer service: runtime, commands, the cluster heartbeat, the controller.

Order at start (resources are entered in order, stopped in reverse): the cluster is
announced, then the Kubernetes client and the controller come up, the controller running
only while this replica holds the Lease (`ekiben-deployer`); event subscribers start after
all of that (the runtime serves last), so a handler always finds the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from kubernetes_asyncio import client

from services.deployer import api, handlers
from services.deployer.adapters.clusters import ClusterDirectory, Heartbeat
from services.deployer.controller import DeploymentController
from services.deployer.service import DeployerService
from services.deployer.settings import DeployerSettings
from shared.contracts.deployer import Cluster
from shared.errors import Unavailable
from shared.kube import LeaderElector, api_client
from shared.logging import get_logger
from shared.service import BackendRuntime, backend_app, bootstrap, hooks
from shared.tasks import stop_tasks

MIGRATIONS = Path(__file__).parent / "migrations"
log = get_logger(__name__)


class KubeSide(contextlib.AbstractAsyncContextManager[None]):
    """The Kubernetes client, the controller and its leader election, for one run."""

    def __init__(self, settings: DeployerSettings, service: DeployerService) -> None:
        self.settings = settings
        self.service = service
        self.api: client.ApiClient | None = None
        self.controller: DeploymentController | None = None
        self.elector: LeaderElector | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        settings = self.settings
        self.api = await api_client(settings.kube)
        self.controller = DeploymentController(settings, self.api, self.service)
        self.elector = LeaderElector(
            self.api,
            name=settings.lease_name,
            namespace=settings.kube.namespace,
            identity=identity(settings),
        )
        self._task = asyncio.create_task(self.elector.run(self._lead), name="deployer-leader")

    async def _lead(self) -> None:
        """One leadership term: the controller, and a pass making every BentoDeployment of
        this cluster what the database says (a cluster rebuilt, an event missed)."""
        controller = self.controller
        assert controller is not None
        running = asyncio.create_task(controller.controller.run(), name="deployer-controller")
        try:
            await controller.controller.wait_synced()
            try:
                for row in await self.service.cluster_deployments(self.settings.cluster_name):
                    await controller.sync_from_database(row.namespace, row.name)
            except Exception:  # the events and resyncs converge what this pass could not
                log.exception("deployer.resync_from_database.failed")
            await running
        finally:
            await stop_tasks([running], grace=15.0)

    async def __aexit__(self, *exc_info: object) -> None:
        if self.elector is not None:
            self.elector.stop()
        if self._task is not None:
            await stop_tasks([self._task], grace=15.0)
        if self.api is not None:
            await self.api.close()
        self.controller, self.api, self.elector, self._task = None, None, None, None

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.elector.is_leader

    async def ready(self) -> None:
        """Readiness: a follower is ready; a leader once its watches are listed."""
        if self.controller is None:
            raise Unavailable("the controller is not started")
        if self.leading and not self.controller.controller.healthy:
            raise Unavailable(self.controller.controller.last_error or "watches not synced")


@dataclass
class Deployer:
    """What `create_runtime` built, for tests and the app."""

    runtime: BackendRuntime
    service: DeployerService
    clusters: ClusterDirectory
    heartbeat: Heartbeat
    kube: KubeSide | None = None


def identity(settings: DeployerSettings) -> str:
    return settings.identity or f"{socket.gethostname()}-{settings.cluster_name}"


def announcement(settings: DeployerSettings) -> Cluster:
    now = datetime.now(UTC)
    return Cluster(
        name=settings.cluster_name,
        description=settings.cluster_description,
        namespace=settings.deploy_namespace,
        instance_types=settings.instance_types,
        deployer=identity(settings),
        first_seen_at=now,
        last_seen_at=now,
        heartbeat_seconds=settings.heartbeat_seconds,
    )


def create_runtime(settings: DeployerSettings) -> Deployer:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    clusters = ClusterDirectory(lambda: runtime.broker.connection)
    service = api.register(runtime, clusters)
    heartbeat = Heartbeat(clusters, lambda: announcement(settings), settings.heartbeat_seconds)
    runtime.resource(hooks(start=heartbeat.start, stop=heartbeat.stop))
    kube = None
    if settings.controller_enabled:
        kube = KubeSide(settings, service)
        runtime.resource(kube)
        runtime.readiness["kubernetes"] = kube.ready
        handlers.register(runtime, settings.cluster_name, service, lambda: kube.controller)
        api.register_cluster(runtime, settings.cluster_name, service, lambda: kube.api)
    return Deployer(
        runtime=runtime, service=service, clusters=clusters, heartbeat=heartbeat, kube=kube
    )


def create_app(settings: DeployerSettings | None = None) -> FastAPI:
    deployer = create_runtime(settings or DeployerSettings())
    return backend_app(deployer.runtime, title="Ekiben deployer")
