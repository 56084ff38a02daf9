"""With controllers, a scheduler and kwok nodes, workloads really roll out (no container runs)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Any

import pytest
from kubernetes_asyncio import client

from shared.devstack.kube import KubeControlPlane
from shared.kube.watch import Watcher

pytestmark = pytest.mark.k8s


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            # Never pulled: kwok only pretends to run it.
                            "name": "app",
                            "image": "registry.invalid/app:1",
                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def rolled_out(deploy: dict[str, Any]) -> bool:
    """What `kubectl rollout status` waits for: every replica updated, available, no old ones."""
    status, wanted = deploy.get("status", {}), deploy["spec"]["replicas"]
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return (
        conditions.get("Available") == "True"
        and status.get("observedGeneration") == deploy["metadata"]["generation"]
        and status.get("updatedReplicas") == wanted
        and status.get("replicas") == wanted
        and status.get("availableReplicas") == wanted
    )


async def test_deployment_rolls_out_on_simulated_nodes(
    full_cluster: KubeControlPlane, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    await apps.create_namespaced_deployment(kube_namespace, deployment("web", 3))

    watcher = Watcher(
        apps.list_namespaced_deployment, kube_namespace, field_selector="metadata.name=web"
    )
    async with asyncio.timeout(60), aclosing(aiter(watcher)) as events:
        async for event in events:
            if event.type in ("ADDED", "MODIFIED") and rolled_out(event.object):
                break

    replica_sets = await apps.list_namespaced_replica_set(kube_namespace)
    assert len(replica_sets.items) == 1
    assert replica_sets.items[0].status.ready_replicas == 3
    pods = (await core.list_namespaced_pod(kube_namespace)).items
    assert len(pods) == 3
    nodes = {node.metadata.name for node in (await core.list_node()).items}
    for pod in pods:
        assert pod.spec.node_name in nodes  # bound by the scheduler
        assert pod.status.phase == "Running"  # reported by kwok
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == "True"


async def test_rolling_update_replaces_the_replica_set(
    full_cluster: KubeControlPlane, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    await apps.create_namespaced_deployment(kube_namespace, deployment("api", 2))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "x/app:2"}]}}}}
    watcher = Watcher(
        apps.list_namespaced_deployment, kube_namespace, field_selector="metadata.name=api"
    )
    patched = False
    async with asyncio.timeout(60), aclosing(aiter(watcher)) as events:
        async for event in events:
            if event.type not in ("ADDED", "MODIFIED") or not rolled_out(event.object):
                continue
            if not patched:
                await apps.patch_namespaced_deployment("api", kube_namespace, patch)
                patched = True
            elif event.object["metadata"]["generation"] == 2:
                break
    replica_sets = (await apps.list_namespaced_replica_set(kube_namespace)).items
    assert sorted(rs.spec.replicas for rs in replica_sets) == [0, 2]


async def test_hpa_v2_is_accepted_and_picked_up_by_the_controller(
    full_cluster: KubeControlPlane, kube_api: client.ApiClient, kube_namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    autoscaling = client.AutoscalingV2Api(kube_api)
    await apps.create_namespaced_deployment(kube_namespace, deployment("scaled", 1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "scaled"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "scaled"},
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80},
                    },
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
        },
    }
    created = await autoscaling.create_namespaced_horizontal_pod_autoscaler(kube_namespace, hpa)
    assert created.spec.max_replicas == 5
    assert created.spec.behavior.scale_down.stabilization_window_seconds == 60

    # The HPA controller enforces minReplicas even without a metrics API.
    async with asyncio.timeout(60):
        while True:
            scale = await apps.read_namespaced_deployment_scale("scaled", kube_namespace)
            if scale.spec.replicas == 2:
                break
            await asyncio.sleep(0.5)
    # The controller scales first and writes its status after: wait for the condition.
    async with asyncio.timeout(60):
        while True:
            current = await autoscaling.read_namespaced_horizontal_pod_autoscaler_status(
                "scaled", kube_namespace
            )
            if {c.type for c in current.status.conditions or []} >= {"AbleToScale"}:
                break
            await asyncio.sleep(0.5)
