"""The deployer's request/reply API: every command of `shared.contracts.deployer`.

The gateway calls these over NATS (`ekiben.rpc.deployer.<command>`); any deployer replica
answers (they share one database), whichever cluster it runs for: the command only records
the change, and the event it emits reaches the cluster's own deployer.
"""

from __future__ import annotations

from collections.abc import Callable

from kubernetes_asyncio import client

from services.deployer.adapters.clusters import ClusterDirectory
from services.deployer.adapters.kube_events import DeploymentEvents
from services.deployer.service import DeployerService
from shared.contracts import deployer as dep
from shared.db import Pool
from shared.errors import Unavailable
from shared.kube.objects import Objects
from shared.service import BackendRuntime


def register(runtime: BackendRuntime, clusters: ClusterDirectory) -> DeployerService:
    """Answer every deployer command on `runtime`'s broker."""
    pool: Callable[[], Pool] = lambda: runtime.pool  # noqa: E731 - read at call time
    service = DeployerService(pool, clusters)
    answer = runtime.responders.add
    answer(dep.CREATE_DEPLOYMENT, service.create_deployment)
    answer(dep.UPDATE_DEPLOYMENT, service.update_deployment)
    answer(dep.GET_DEPLOYMENT, service.get_deployment)
    answer(dep.LIST_DEPLOYMENTS, service.list_deployments)
    answer(dep.TERMINATE_DEPLOYMENT, service.terminate_deployment)
    answer(dep.DELETE_DEPLOYMENT, service.delete_deployment)
    answer(dep.ROLLBACK_DEPLOYMENT, service.rollback_deployment)
    answer(dep.LIST_REVISIONS, service.list_revisions)
    answer(dep.LIST_CLUSTERS, service.list_clusters)
    answer(dep.LIST_INSTANCE_TYPES, service.list_instance_types)
    answer(dep.CREATE_SECRET, service.create_secret)
    answer(dep.UPDATE_SECRET, service.update_secret)
    answer(dep.GET_SECRET, service.get_secret)
    answer(dep.LIST_SECRETS, service.list_secrets)
    answer(dep.DELETE_SECRET, service.delete_secret)
    missing = set(dep.COMMANDS) - set(runtime.responders.commands)
    if missing:
        raise RuntimeError(f"deployer commands without a handler: {sorted(map(str, missing))}")
    return service


def register_cluster(
    runtime: BackendRuntime,
    cluster: str,
    service: DeployerService,
    api_client: Callable[[], client.ApiClient | None],
) -> None:
    """Answer the commands only this cluster's deployers can: its Kubernetes Events."""

    async def events(req: dep.ListDeploymentEvents) -> dep.KubeEvents:
        found = await service.get_deployment(
            dep.DeploymentRef(scope=req.scope, cluster=req.cluster, name=req.name)
        )
        api = api_client()
        if api is None:
            raise Unavailable("the deployer's Kubernetes client is not started yet")
        reader = DeploymentEvents(Objects(api, field_manager="ekiben-deployer-reader"))
        return dep.KubeEvents(items=await reader.list(found.namespace, found.name, req.limit))

    runtime.responders.add(dep.deployment_events_command(cluster), events)
