"""Wiring of the deployer service: runtime, commands, the cluster heartbeat, the controller."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI

from services.deployer import api
from services.deployer.adapters.clusters import ClusterDirectory, Heartbeat
from services.deployer.service import DeployerService
from services.deployer.settings import DeployerSettings
from shared.contracts.deployer import Cluster
from shared.service import BackendRuntime, backend_app, bootstrap, hooks

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass
class Deployer:
    """What `create_runtime` built, for tests and the app."""

    runtime: BackendRuntime
    service: DeployerService
    clusters: ClusterDirectory
    heartbeat: Heartbeat


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
    return Deployer(runtime=runtime, service=service, clusters=clusters, heartbeat=heartbeat)


def create_app(settings: DeployerSettings | None = None) -> FastAPI:
    deployer = create_runtime(settings or DeployerSettings())
    return backend_app(deployer.runtime, title="Ekiben deployer")
