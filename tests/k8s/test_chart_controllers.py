"""The chart's RBAC is enough for the real controllers: the deployer and the builder, each run
with a kubeconfig that authenticates with its chart ServiceAccount's token (server, the
plane's CA and `token:`, exactly what a pod presents), do their whole work on the real API
server, and no request they send is refused; the same token is refused (403) outside its role.

The accounts, Roles and RoleBindings are the chart's, created for real by `installed`
(tests/k8s/test_chart.py, default values with `imageRegistry.dockerConfigSecret=regcred`).

- deployer: a Bento and a kubectl-style BentoDeployment (as admin); the deployer renders the
  Deployment, Service and HPA, the Deployment becomes available on kwok nodes and the
  BentoDeployment's status reaches `running`.
- builder (backend `kubernetes`): a bento pushed with the real `bentoml` client; the builder
  writes its BentoRequest and creates the build Job. The Job's pod is held by a node selector
  that no node matches until the test has pushed the image the build would push; then a kwok
  node with that label appears, the pod "runs" there (kwok completes Job pods), the Job
  controller marks the Job Complete, and the builder, finding the image, applies the Bento.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from services.builder.adapters.buildah import Buildah
from services.builder.adapters.containers import ContainerEnvironment
from services.builder.app import create_runtime as create_builder
from services.builder.settings import BuilderKubeSettings, JobSettings
from services.deployer.app import create_runtime as create_deployer
from services.deployer.settings import DeployerKubeSettings
from shared.contracts.builder import bento_resource_name
from shared.devstack.kube import KWOK_NODE_ANNOTATION, KubeControlPlane
from shared.kube.kinds import BENTO, BENTO_DEPLOYMENT
from shared.kube.objects import Objects
from tests.builder.conftest import BuilderStack, bentoml, build_greeter, builder_stack, login
from tests.fixtures.bentoml import Client, bentoml_client
from tests.fixtures.stack import deployer_settings
from tests.images.conftest import (
    busybox_context,
    busybox_image,
    container_env,
    container_tools,
    oci_registry,
)
from tests.k8s.test_chart import Api, Installed, admin, helm, installed
from tests.k8s.test_deployer import bento, until

__all__ = [
    "admin",
    "bentoml_client",
    "builder_stack",
    "busybox_context",
    "busybox_image",
    "container_env",
    "container_tools",
    "helm",
    "installed",
    "oci_registry",
]

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

GREETER = Path(__file__).parents[1] / "images" / "bento-greeter"
HOLD = "ekiben.dev/test-build-node"  # the build Job's node selector: no node has it at first


def token_kubeconfig(path: Path, plane: KubeControlPlane, token: str, namespace: str) -> Path:
    """A kubeconfig that authenticates with a bearer token only (no client certificate)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "plane", "cluster": {
            "server": plane.server_url, "certificate-authority": str(plane.pki.ca_cert)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {
            "cluster": "plane", "user": "sa", "namespace": namespace}}],
    }  # fmt: skip
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture
def refusals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every request of a kubernetes_asyncio client (the controllers') answered 403."""
    refused: list[tuple[str, str]] = []
    original = client.ApiClient.call_api

    def recording(self: client.ApiClient, resource_path: str, method: str, *args: Any,
                  **kwargs: Any) -> Any:  # fmt: skip
        result = original(self, resource_path, method, *args, **kwargs)
        if not inspect.isawaitable(result):
            return result

        async def checked() -> Any:
            try:
                return await result
            except ApiException as exc:
                if exc.status == 403:
                    refused.append((method, resource_path))
                raise

        return checked()

    monkeypatch.setattr(client.ApiClient, "call_api", recording)
    return refused


def conditions(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in ((obj or {}).get("status") or {}).get("conditions") or []}


async def test_the_deployer_deploys_with_the_chart_token(
    admin: Api,
    installed: Installed,
    full_cluster: KubeControlPlane,
    kube_api: client.ApiClient,
    nats_url: str,
    pg_dsn: str,
    refusals: list[tuple[str, str]],
    tmp_path: Path,
) -> None:
    ns = installed.namespace
    kubeconfig = token_kubeconfig(
        tmp_path / "deployer.kubeconfig", full_cluster, installed.tokens["deployer"], ns
    )
    settings = deployer_settings(
        nats_url, pg_dsn, controller_enabled=True, namespace=ns,
        kube=DeployerKubeSettings(kubeconfig=kubeconfig, namespace=ns),
        image_pull_secret="regcred",  # what the chart sets from imageRegistry.dockerConfigSecret
        identity="chart-deployer-0",
    )  # fmt: skip
    kubectl = Objects(kube_api, field_manager="kubectl")  # the admin
    deployer = create_deployer(settings)
    async with deployer.runtime.running():
        kube = deployer.controller
        assert kube is not None
        await until(lambda: kube.leading, what="the Lease")
        assert kube.controller is not None
        await kube.controller.wait_synced()
        await kubectl.create(BENTO, bento(ns))
        await kubectl.apply(BENTO_DEPLOYMENT, {
            "apiVersion": BENTO_DEPLOYMENT.api_version, "kind": BENTO_DEPLOYMENT.kind,
            "metadata": {"name": "iris", "namespace": ns},
            "spec": {"bento": bento_resource_name("default", "iris", "v1"),
                     "services": [{"name": "Iris", "autoscaling": {
                         "minReplicas": 2, "maxReplicas": 3}}]},
        })  # fmt: skip

        base = f"/namespaces/{ns}"
        path = f"/apis/apps/v1{base}/deployments/iris-iris"

        def available() -> bool:
            answer = admin.call("GET", path)
            return answer.status == 200 and answer.body["status"].get("availableReplicas") == 2

        await until(available, timeout=120, what="both replicas available on kwok nodes")

        async def running() -> bool:
            bd = await kubectl.get(BENTO_DEPLOYMENT, (ns, "iris"))
            status = (bd or {}).get("status") or {}
            return (
                status.get("phase") == "running"
                and status.get("readyReplicas") == 2
                and conditions(bd).get("Available", {}).get("status") == "True"
            )

        await until(running, timeout=60, what="the BentoDeployment running, Available")
        bd = await kubectl.get(BENTO_DEPLOYMENT, (ns, "iris"))
        assert bd is not None
        assert conditions(bd)["Available"]["observedGeneration"] == bd["metadata"]["generation"]
        deployment = admin.ok("GET", path)
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == bd["metadata"]["uid"]
        pod_spec = deployment["spec"]["template"]["spec"]
        assert pod_spec["imagePullSecrets"] == [{"name": "regcred"}]
        managers = {m["manager"] for m in deployment["metadata"]["managedFields"]}
        assert "ekiben-deployer" in managers  # written by the deployer, with its token
        admin.ok("GET", f"/api/v1{base}/services/iris-iris")
        hpa = admin.ok("GET", f"/apis/autoscaling/v2{base}/horizontalpodautoscalers/iris-iris")
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)
        pods = admin.ok("GET", f"/api/v1{base}/pods?labelSelector=app.kubernetes.io/managed-by"
                               "%3Dekiben-deployer")["items"]  # fmt: skip
        assert len(pods) == 2
        assert all(p["spec"]["nodeName"].startswith("kwok-") for p in pods)
        lease = admin.ok("GET", f"/apis/coordination.k8s.io/v1{base}/leases/ekiben-deployer")
        assert lease["spec"]["holderIdentity"] == "chart-deployer-0"
        events = admin.ok("GET", f"/apis/events.k8s.io/v1{base}/events")["items"]
        assert any(e.get("reportingController") == "ekiben-deployer" for e in events), events

    # Nothing the deployer sent was refused; outside its role, the same token is.
    assert refusals == []
    deployer_api = Api(admin.plane, installed.tokens["deployer"])
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "not-mine"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "x", "image": "example.com/x:1"}]}}}}  # fmt: skip
    refused = deployer_api.call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
    assert refused.status == 403, refused.body
    assert deployer_api.call("GET", f"/api/v1/namespaces/{ns}/secrets").status == 403


def kwok_node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    key, value = KWOK_NODE_ANNOTATION
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {key: value},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name, **labels}},
        "status": {"allocatable": capacity, "capacity": capacity},
    }  # fmt: skip


async def test_the_builder_builds_with_the_chart_token(
    admin: Api,
    installed: Installed,
    full_cluster: KubeControlPlane,
    builder_stack: Callable[..., Any],
    bentoml_client: Client,
    busybox_image: str,
    container_env: ContainerEnvironment,
    refusals: list[tuple[str, str]],
    tmp_path: Path,
) -> None:
    ns = installed.namespace
    kubeconfig = token_kubeconfig(
        tmp_path / "builder.kubeconfig", full_cluster, installed.tokens["builder"], ns
    )
    source = tmp_path / "src"
    source.mkdir()
    for name in ("service.py", "bentofile.yaml"):
        (source / name).write_text((GREETER / name).read_text())
    node = f"kwok-build-{ns[-10:]}"
    async with builder_stack(builder=False) as bs:
        bs: BuilderStack  # type: ignore[no-redef]
        settings = bs.settings.model_copy(update={
            "backend": "kubernetes", "policy": "on-push",
            "kube": BuilderKubeSettings(kubeconfig=kubeconfig, namespace=ns, lease_seconds=6),
            # As the chart sets it (EKIBEN_BUILDER_JOB__REGISTRY_SECRET), plus the hold.
            "job": JobSettings(registry_secret="regcred", node_selector={HOLD: ns}),
        })  # fmt: skip
        runtime, controller = create_builder(settings)
        async with runtime.running():
            home = tmp_path / "home"
            await login(bentoml_client, home, bs.stack)
            tag = await build_greeter(bentoml_client, home, source)
            await bentoml(bentoml_client, home, "push", tag)  # on-push: a build
            name, version = tag.split(":")
            resource = bento_resource_name("default", name, version)
            jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"

            async def job_created() -> list[dict[str, Any]]:
                found: list[dict[str, Any]] = admin.ok("GET", jobs)["items"]
                return found

            await until(job_created, timeout=60, what="the build Job")
            (job,) = admin.ok("GET", jobs)["items"]
            managers = {m["manager"] for m in job["metadata"]["managedFields"]}
            assert "ekiben-builder" in managers, managers  # (the Job controller writes status)
            owner = job["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"]) == ("BentoRequest", resource)
            volumes = job["spec"]["template"]["spec"]["volumes"]
            assert any((v.get("secret") or {}).get("secretName") == "regcred" for v in volumes)
            request = await bs.request(resource)
            assert request is not None
            written = {m["manager"] for m in request["metadata"]["managedFields"]}
            assert "ekiben-builder" in written  # the builder wrote its BentoRequest
            (build,) = await bs.builds()
            assert build["status"] == "building"

            # What the Job would push; then a node for it to run on (kwok completes it).
            pushed = await Buildah(container_env).push(
                busybox_image,
                f"{build['image_repository']}:{build['image_tag']}",
                tls_verify=False,
            )
            admin.ok("POST", "/api/v1/nodes", kwok_node(node, {HOLD: ns}))
            try:

                async def published() -> bool:
                    return await bs.bento(resource) is not None

                await until(published, timeout=120, what="the Bento")
                done = await bs.build_done(build["id"], timeout=30)
            finally:
                admin.call("DELETE", f"/api/v1/nodes/{node}")
            finished = admin.ok("GET", f"{jobs}/{job['metadata']['name']}")
            assert conditions(finished)["Complete"]["status"] == "True"
            assert done["status"] == "succeeded", done
            assert done["reason"] == "ImagePushed"
            assert done["digest"] == pushed
            published_bento = await bs.bento(resource)
            assert published_bento is not None
            assert published_bento["spec"]["image"] == f"{build['image_repository']}@{pushed}"
            bento_managers = {m["manager"] for m in published_bento["metadata"]["managedFields"]}
            assert "ekiben-builder" in bento_managers

            async def succeeded() -> bool:
                request = await bs.request(resource)
                return ((request or {}).get("status") or {}).get("phase") == "succeeded"

            await until(succeeded, timeout=30, what="the BentoRequest succeeded")
            assert controller.reconciler is not None
            assert controller.reconciler.recorder.failures == 0  # its Events were accepted
            assert controller.reconciler.recorder.created >= 2

    # Nothing the builder sent was refused; outside its role, the same token is.
    assert refusals == []
    builder_api = Api(admin.plane, installed.tokens["builder"])
    refused = builder_api.call(
        "POST", f"/apis/serving.ekiben.dev/v1alpha1/namespaces/{ns}/bentodeployments",
        {"apiVersion": BENTO_DEPLOYMENT.api_version, "kind": BENTO_DEPLOYMENT.kind,
         "metadata": {"name": "not-mine"}, "spec": {"bento": resource}},
    )  # fmt: skip
    assert refused.status == 403, refused.body
    assert builder_api.call("GET", f"/api/v1/namespaces/{ns}/pods").status == 403
