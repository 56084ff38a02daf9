"""Event subscribers of the deployer: what reaches this cluster's deployments.

Each deployer has its own durable consumer (`deployer-<cluster>`) and acts only on events
about its own cluster. Handlers are level-based like the controller: whatever event arrives
(requested, updated, terminated, deleted), the BentoDeployment is made what the database
says now, so a redelivery or an out-of-order event changes nothing.
"""

from __future__ import annotations

from services.deployer.controller import DeploymentController
from services.deployer.render import dns_part
from services.deployer.service import DeployerService
from shared.bus import Delivery
from shared.contracts.builder import bento_resource_name
from shared.errors import TemporaryError
from shared.events import (
    AnyEvent,
    BuildCompleted,
    BuildFailed,
    DeploymentDeleted,
    DeploymentRequested,
    DeploymentTerminated,
    DeploymentUpdated,
)
from shared.logging import get_logger
from shared.service import BackendRuntime

log = get_logger(__name__)

EVENTS = (
    DeploymentRequested,
    DeploymentUpdated,
    DeploymentTerminated,
    DeploymentDeleted,
    BuildFailed,
    BuildCompleted,
)


def consumer_name(cluster: str) -> str:
    return f"deployer-{dns_part(cluster)}"


def register(
    runtime: BackendRuntime,
    cluster: str,
    service: DeployerService,
    controller: DeploymentController,
) -> None:
    async def on_event(event: AnyEvent, delivery: Delivery) -> None:
        running = controller.controller
        if running is None:
            raise TemporaryError("the deployer's Kubernetes side is not started yet")
        if isinstance(
            event,
            DeploymentRequested | DeploymentUpdated | DeploymentTerminated | DeploymentDeleted,
        ):
            ref = event.data.deployment
            if ref.cluster != cluster:
                return  # another cluster's deployer acts on it
            await controller.sync_from_database(ref.namespace, ref.name)
            log.info("deployer.event.applied", type=event.type, deployment=ref.name)
        elif isinstance(event, BuildFailed):
            keys = await service.build_failed(
                cluster, event.data.bento, f"{event.data.reason}: {event.data.message}"
            )
            for key in keys:
                running.enqueue(key)
        elif isinstance(event, BuildCompleted):
            bento = event.data.bento
            name = bento_resource_name(bento.organization, bento.name, bento.version)
            for watcher in controller.bds:
                for key, bd in list(watcher.known.items()):
                    if (bd.get("spec") or {}).get("bento") == name:
                        running.enqueue(key)

    runtime.subscribe(consumer=consumer_name(cluster), handler=on_event, events=EVENTS)
