"""The deployer against a real API server with kwok nodes, real NATS and PostgreSQL.

A deployment made through the deployer's commands becomes a BentoDeployment, its
children roll out on simulated nodes, and its status reaches the database and
`deployment.status_changed`; an idle controller sends no writes; a kubectl-applied
BentoDeployment shows up as a deployment with a revision; terminate and delete clean up;
two deployers for two clusters never cross.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from kubernetes_asyncio import client

from services.deployer.app import Deployer, create_runtime
from services.deployer.settings import DeployerKubeSettings, IngressSettings
from shared.contracts import deployer as dep
from shared.contracts.builder import bento_resource_name
from shared.contracts.registry import Scope
from shared.contracts.vocabulary import DeploymentStatus
from shared.devstack.kube import KubeControlPlane
from shared.errors import NotFound, Unavailable
from shared.kube.kinds import (
    BENTO,
    BENTO_DEPLOYMENT,
    CORE_EVENT,
    DEPLOYMENT,
    HORIZONTAL_POD_AUTOSCALER,
    INGRESS,
    SERVICE,
)
from shared.kube.objects import Objects
from tests.fixtures.events import stored_events
from tests.fixtures.stack import deployer_settings

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(240)]

SCOPE = Scope(organization="default", actor="alice")
IRIS = dep.BentoTarget(name="iris", version="v1", services=["Iris"], entry_service="Iris")


def bento(namespace: str, tag: str = "iris:v1", services: list[dict[str, Any]] | None = None,
          ) -> dict[str, Any]:  # fmt: skip
    name, version = tag.split(":")
    return {
        "apiVersion": BENTO.api_version,
        "kind": BENTO.kind,
        "metadata": {"name": bento_resource_name("default", name, version), "namespace": namespace},
        "spec": {
            "tag": tag,
            # Never pulled: kwok only pretends to run it.
            "image": f"registry.invalid/ekiben/{name}:{version}",
            "entryService": (services or [{"name": "Iris"}])[0]["name"],
            "services": services or [{"name": "Iris"}],
        },
    }


@contextlib.asynccontextmanager
async def running_deployer(
    plane: KubeControlPlane, nats_url: str, pg_dsn: str, namespace: str, cluster: str = "default"
) -> AsyncIterator[Deployer]:
    settings = deployer_settings(
        nats_url, pg_dsn, cluster=cluster, controller_enabled=True, namespace=namespace,
        kube=DeployerKubeSettings(kubeconfig=plane.kubeconfig_path, namespace=namespace),
        ingress=IngressSettings(domain_suffix="apps.example.test", class_name="nginx"),
        identity=f"test-{cluster}",
    )  # fmt: skip
    deployer = create_runtime(settings)
    async with deployer.runtime.running():
        controller = deployer.controller
        assert controller is not None
        await until(lambda: controller.leading, what="the Lease")
        assert controller.controller is not None
        await asyncio.wait_for(controller.controller.wait_synced(), 30)
        yield deployer


async def until(predicate: Callable[[], object], *, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def status_of(deployer: Deployer, name: str) -> DeploymentStatus:
    found = await deployer.runtime.rpc.call(
        dep.GET_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name=name)
    )
    return found.status


def count_writes(deployer: Deployer) -> list[tuple[str, str]]:
    """Record every write the deployer's Kubernetes client sends from now on (but the
    Lease's renewals)."""
    assert deployer.controller is not None
    assert deployer.controller.api is not None
    api = deployer.controller.api
    original = api.call_api
    writes: list[tuple[str, str]] = []

    def counting(resource_path: str, method: str, *args: Any, **kwargs: Any) -> Any:
        # The Lease renewal is leader election's heartbeat, not a reconcile's write.
        if method != "GET" and "/leases/" not in resource_path:
            writes.append((method, resource_path))
        return original(resource_path, method, *args, **kwargs)

    api.call_api = counting  # type: ignore[method-assign]
    return writes


async def test_a_deployment_rolls_out_reports_status_and_stays_idle(
    full_cluster: KubeControlPlane,
    kube_api: client.ApiClient,
    kube_namespace: str,
    nats_url: str,
    pg_dsn: str,
) -> None:
    objects = Objects(kube_api, field_manager="test")
    async with running_deployer(full_cluster, nats_url, pg_dsn, kube_namespace) as deployer:
        rpc = deployer.runtime.rpc
        # No Bento yet: the deployment waits in image-building and asks for a build once.
        await rpc.call(
            dep.CREATE_DEPLOYMENT,
            dep.CreateDeployment(
                scope=SCOPE, name="iris", bento=IRIS,
                config=dep.DeploymentConfig(
                    envs=[dep.EnvVar(name="MODE", value="prod")],
                    services={"Iris": dep.ServiceConfig(
                        instance_type="cpu.small",
                        scaling=dep.Scaling(min_replicas=2, max_replicas=4),
                    )},
                ),
            ),
        )  # fmt: skip

        async def building() -> bool:
            return await status_of(deployer, "iris") is DeploymentStatus.IMAGE_BUILDING

        await until(building, what="image-building")
        requested = await stored_events(nats_url, "build.requested")
        assert len(requested) == 1
        assert requested[0]["data"]["namespace"] == kube_namespace
        assert requested[0]["data"]["cluster"] == "default"
        assert requested[0]["data"]["bento"]["name"] == "iris"

        # The builder's part, played by the test: the Bento appears.
        await objects.create(BENTO, bento(kube_namespace))

        async def running() -> bool:
            return await status_of(deployer, "iris") is DeploymentStatus.RUNNING

        await until(running, timeout=90, what="running")
        key = (kube_namespace, "iris-iris")
        deployment = await objects.get(DEPLOYMENT, key)
        assert deployment is not None
        bd = await objects.get(BENTO_DEPLOYMENT, (kube_namespace, "iris"))
        assert bd is not None
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == bd["metadata"]["uid"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.invalid/ekiben/iris:v1"
        assert container["command"][:6] == [
            "python", "-m", "bentoml_cli._internal.start", "start-http-server",
            "--service-name", "Iris",
        ]  # fmt: skip
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert {"name": "MODE", "value": "prod"} in container["env"]
        assert container["resources"]["requests"] == {"cpu": "500m", "memory": "1Gi"}
        hpa = await objects.get(HORIZONTAL_POD_AUTOSCALER, key)
        assert hpa is not None
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
        assert await objects.get(SERVICE, key) is not None
        ingress = await objects.get(INGRESS, key)
        assert ingress is not None
        assert ingress["spec"]["ingressClassName"] == "nginx"
        host = ingress["spec"]["rules"][0]["host"]
        assert host == f"iris-{kube_namespace}.apps.example.test"
        managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
        assert "ekiben-deployer" in managers
        # The BentoDeployment's status: phase, conditions about this generation.
        bd = await objects.get(BENTO_DEPLOYMENT, (kube_namespace, "iris"))
        assert bd is not None
        assert bd["status"]["phase"] == "running"
        conditions = {c["type"]: c for c in bd["status"]["conditions"]}
        assert conditions["Available"]["status"] == "True"
        assert conditions["Available"]["observedGeneration"] == bd["metadata"]["generation"]
        found = await rpc.call(dep.GET_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name="iris"))
        assert found.urls == [f"http://{host}/"]

        # Each status once, in order, as deployment.status_changed.
        async def changes() -> list[str]:
            events = await stored_events(nats_url, "deployment.status_changed")
            return [e["data"]["status"] for e in events]

        await until(lambda: _ends_with(changes(), "running"), what="the running event")
        seen = await changes()
        assert seen[0] == "image-building"
        assert seen[-1] == "running"
        assert "deploying" in seen
        assert len(seen) == len(set(seen)), seen  # once per change

        # Settled: the autoscaler's minimum (2) is up and the status says so. Until then the
        # second pod coming up is a real status change (its ready count), not idleness.
        async def all_ready() -> bool:
            found = await objects.get(BENTO_DEPLOYMENT, (kube_namespace, "iris"))
            status = (found or {}).get("status") or {}
            return bool(status.get("replicas") == 2 and status.get("readyReplicas") == 2)

        await until(all_ready, timeout=90, what="both replicas ready in the status")
        # Idle: a resync of everything sends no write at all.
        writes = count_writes(deployer)
        assert deployer.controller is not None
        queue = deployer.controller.controller
        assert queue is not None
        for watcher in deployer.controller.bds:
            for known in list(watcher.known):
                queue.enqueue(known)
        await asyncio.sleep(2.0)
        await until(lambda: not queue.queue.processing, what="idle")
        assert writes == [], writes

        # An update is applied: a new revision, the HPA follows.
        await rpc.call(
            dep.UPDATE_DEPLOYMENT,
            dep.UpdateDeployment(
                scope=SCOPE, name="iris", bento=IRIS,
                config=dep.DeploymentConfig(services={"Iris": dep.ServiceConfig(
                    scaling=dep.Scaling(min_replicas=1, max_replicas=3)
                )}),
            ),
        )  # fmt: skip

        async def scaled() -> bool:
            live = await objects.get(HORIZONTAL_POD_AUTOSCALER, key)
            return live is not None and live["spec"]["maxReplicas"] == 3

        await until(scaled, what="the HPA to follow the update")

        # A rollback to revision 1 restores its workloads: the autoscaler's bounds, the
        # container's resources.
        rolled = await rpc.call(
            dep.ROLLBACK_DEPLOYMENT, dep.Rollback(scope=SCOPE, name="iris", revision=1)
        )
        assert rolled.latest_revision.number == 3

        async def restored() -> bool:
            live = await objects.get(HORIZONTAL_POD_AUTOSCALER, key)
            deployed = await objects.get(DEPLOYMENT, key)
            if live is None or deployed is None:
                return False
            resources = deployed["spec"]["template"]["spec"]["containers"][0].get("resources")
            return (live["spec"]["minReplicas"], live["spec"]["maxReplicas"]) == (2, 4) and (
                resources or {}
            ).get("requests") == {"cpu": "500m", "memory": "1Gi"}

        await until(restored, what="revision 1's workloads")

        # Terminate: the workloads go, the record stays.
        await rpc.call(dep.TERMINATE_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name="iris"))

        async def terminated() -> bool:
            return await status_of(deployer, "iris") is DeploymentStatus.TERMINATED

        await until(terminated, timeout=90, what="terminated")
        assert await objects.get(BENTO_DEPLOYMENT, (kube_namespace, "iris")) is None
        # Delete: everything goes.
        await rpc.call(dep.DELETE_DEPLOYMENT, dep.DeploymentRef(scope=SCOPE, name="iris"))
        assert await deployer.runtime.pool.fetchval("SELECT count(*) FROM deployments") == 0


async def _ends_with(values: Awaitable[list[str]], last: str) -> bool:
    found = await values
    return bool(found) and found[-1] == last


async def test_a_kubectl_applied_bento_deployment_appears_in_the_api(
    full_cluster: KubeControlPlane,
    kube_api: client.ApiClient,
    kube_namespace: str,
    nats_url: str,
    pg_dsn: str,
) -> None:
    kubectl = Objects(kube_api, field_manager="kubectl")
    async with running_deployer(full_cluster, nats_url, pg_dsn, kube_namespace) as deployer:
        await kubectl.create(BENTO, bento(kube_namespace))
        manifest: dict[str, Any] = {
            "apiVersion": BENTO_DEPLOYMENT.api_version,
            "kind": BENTO_DEPLOYMENT.kind,
            "metadata": {"name": "gitops", "namespace": kube_namespace},
            "spec": {
                "bento": bento_resource_name("default", "iris", "v1"),
                "services": [{"name": "Iris", "replicas": 2}],
                "envs": [{"name": "FROM", "value": "git"}],
            },
        }
        await kubectl.apply(BENTO_DEPLOYMENT, manifest)

        async def listed() -> list[dep.Deployment]:
            page = await deployer.runtime.rpc.call(
                dep.LIST_DEPLOYMENTS, dep.ListDeployments(scope=SCOPE)
            )
            return page.items

        async def appeared() -> bool:
            return [d.name for d in await listed()] == ["gitops"]

        await until(appeared, what="the GitOps deployment in the API")
        (found,) = await listed()
        assert found.latest_revision.source == "cluster"
        assert found.latest_revision.bento.tag == "iris:v1"
        assert found.latest_revision.config.services["Iris"].scaling.min_replicas == 2
        assert found.created_by == "kubernetes"

        async def running() -> bool:
            return await status_of(deployer, "gitops") is DeploymentStatus.RUNNING

        await until(running, timeout=90, what="running")
        # A change with kubectl is a new revision, recorded once.
        manifest["spec"]["services"] = [{"name": "Iris", "replicas": 1}]
        await kubectl.apply(BENTO_DEPLOYMENT, manifest)

        async def second() -> bool:
            return (await listed())[0].latest_revision.number == 2

        await until(second, what="revision 2")
        await asyncio.sleep(1.0)
        revisions = await deployer.runtime.rpc.call(
            dep.LIST_REVISIONS, dep.ListRevisions(scope=SCOPE, name="gitops")
        )
        assert [r.number for r in revisions.items] == [2, 1]
        # The API's own fields and kubectl's live side by side: no fight.
        live = await kubectl.get(BENTO_DEPLOYMENT, (kube_namespace, "gitops"))
        assert live is not None
        assert live["spec"]["envs"] == [{"name": "FROM", "value": "git"}]


async def test_two_deployers_for_two_clusters_never_cross(
    full_cluster: KubeControlPlane,
    kube_api: client.ApiClient,
    kube_namespace: str,
    nats_url: str,
    pg_dsn: str,
) -> None:
    objects = Objects(kube_api, field_manager="test")
    core = client.CoreV1Api(kube_api)
    west_ns = f"{kube_namespace}-w"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=west_ns)))
    try:
        await objects.create(BENTO, bento(kube_namespace))
        await objects.create(BENTO, bento(west_ns))
        async with (
            running_deployer(full_cluster, nats_url, pg_dsn, kube_namespace, "east") as east,
            running_deployer(full_cluster, nats_url, pg_dsn, west_ns, "west") as west,
        ):
            listed = await east.runtime.rpc.call(dep.LIST_CLUSTERS, dep.ListClusters(scope=SCOPE))
            assert [c.name for c in listed.items] == ["east", "west"]
            await east.runtime.rpc.call(
                dep.CREATE_DEPLOYMENT,
                dep.CreateDeployment(scope=SCOPE, cluster="east", name="e1", bento=IRIS),
            )
            await west.runtime.rpc.call(
                dep.CREATE_DEPLOYMENT,
                dep.CreateDeployment(scope=SCOPE, cluster="west", name="w1", bento=IRIS),
            )

            async def both_running() -> bool:
                return (
                    await status_of(east, "e1") is DeploymentStatus.RUNNING
                    and await status_of(east, "w1") is DeploymentStatus.RUNNING
                )

            await until(both_running, timeout=90, what="both running")
            east_bds = await objects.list(BENTO_DEPLOYMENT, namespace=kube_namespace)
            west_bds = await objects.list(BENTO_DEPLOYMENT, namespace=west_ns)
            assert [b["metadata"]["name"] for b in east_bds] == ["e1"]
            assert [b["metadata"]["name"] for b in west_bds] == ["w1"]
            for d in (await east.runtime.rpc.call(
                dep.LIST_DEPLOYMENTS, dep.ListDeployments(scope=SCOPE)
            )).items:  # fmt: skip
                assert (d.name, d.cluster) in {("e1", "east"), ("w1", "west")}
    finally:
        await core.delete_namespace(west_ns)


async def test_a_deployments_kubernetes_events_and_its_ingress(
    full_cluster: KubeControlPlane,
    kube_api: client.ApiClient,
    kube_namespace: str,
    nats_url: str,
    pg_dsn: str,
) -> None:
    """The per-cluster events command answers the Events of the deployment's own objects
    (the controllers' and the test's), none of another object's; the ingress host and TLS
    secret asked for reach the Ingress, and an update that names no ingress keeps them."""
    objects = Objects(kube_api, field_manager="test")
    async with running_deployer(full_cluster, nats_url, pg_dsn, kube_namespace) as deployer:
        rpc = deployer.runtime.rpc
        await objects.create(BENTO, bento(kube_namespace))
        ingress = dep.IngressConfig(host="iris.example.com", tls_secret_name="iris-tls")
        await rpc.call(
            dep.CREATE_DEPLOYMENT,
            dep.CreateDeployment(
                scope=SCOPE, name="iris", bento=IRIS, config=dep.DeploymentConfig(ingress=ingress)
            ),
        )

        async def running() -> bool:
            return await status_of(deployer, "iris") is DeploymentStatus.RUNNING

        await until(running, timeout=90, what="running")
        made = await objects.get(INGRESS, (kube_namespace, "iris-iris"))
        assert made is not None
        assert made["spec"]["rules"][0]["host"] == "iris.example.com"
        assert made["spec"]["tls"] == [{"hosts": ["iris.example.com"], "secretName": "iris-tls"}]

        def core_event(kind: str, name: str, reason: str, count: int) -> dict[str, Any]:
            return {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{name}.{reason.lower()}", "namespace": kube_namespace},
                "involvedObject": {"kind": kind, "name": name, "namespace": kube_namespace},
                "reason": reason, "message": f"<b>{reason}</b> of {name}", "type": "Warning",
                "count": count, "source": {"component": "test"},
                "firstTimestamp": "2026-12-02T06:00:00Z", "lastTimestamp": "2026-12-02T06:00:00Z",
            }  # fmt: skip

        await objects.create(CORE_EVENT, core_event("BentoDeployment", "iris", "Tested", 3))
        await objects.create(CORE_EVENT, core_event("Pod", "someone-else", "Elsewhere", 1))
        command = dep.deployment_events_command("default")
        ask = dep.ListDeploymentEvents(scope=SCOPE, cluster="default", name="iris")

        async def with_controllers() -> list[dep.KubeEvent] | None:
            items = (await rpc.call(command, ask)).items
            kinds = {e.object_kind for e in items}
            return items if {"BentoDeployment", "Deployment"} <= kinds else None

        await until(with_controllers, what="the Deployment's events (the controller-manager's)")
        items = (await rpc.call(command, ask)).items
        assert all(e.object_name != "someone-else" for e in items)
        tested = next(e for e in items if e.reason == "Tested")
        assert (tested.type, tested.count, tested.source) == ("Warning", 3, "test")
        assert tested.message == "<b>Tested</b> of iris"  # as written: escaping is the page's
        scaled = [e for e in items if e.object_kind == "Deployment"]
        assert all(e.object_name == "iris-iris" for e in scaled)
        assert {e.object_kind for e in items} <= {
            "BentoDeployment", "Deployment", "ReplicaSet", "Pod", "Service",
            "HorizontalPodAutoscaler", "Ingress",
        }  # fmt: skip
        with pytest.raises(NotFound):
            await rpc.call(command, ask.model_copy(update={"name": "nothing"}))
        with pytest.raises(Unavailable):  # no deployer of that cluster runs
            await rpc.call(
                dep.deployment_events_command("elsewhere"),
                ask.model_copy(update={"cluster": "elsewhere"}),
                timeout=2.0,
            )

        # The bentoml client knows no ingress: its update keeps the one set.
        updated = await rpc.call(
            dep.UPDATE_DEPLOYMENT,
            dep.UpdateDeployment(
                scope=SCOPE, name="iris", bento=IRIS, config=dep.DeploymentConfig()
            ),
        )
        assert updated.latest_revision.config.ingress == ingress
        assert updated.latest_revision.spec["ingress"]["host"] == "iris.example.com"
