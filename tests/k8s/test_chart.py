"""The chart against a real kube-apiserver: everything it renders is accepted, and its RBAC is
enough and no more.

Acceptance: `helm template --include-crds` with the default, the external-everything and the
all-namespaces values, every object sent as a server-side apply with `dryRun=All` (the
Prometheus Operator's own CRDs applied first, taken from its Go module, so ServiceMonitor,
PodMonitor and PrometheusRule are validated by their real schemas), in namespaces that enforce
and warn on the `restricted` Pod Security Standard: a warning about any pod template fails.

RBAC: the chart's ServiceAccounts, Roles and RoleBindings created for real; tokens from the
TokenRequest API for the builder's, the deployer's and the gateway's accounts; then what each
may and may not do, asked with SelfSubjectAccessReview and done with real requests (a 403 for
what is outside its role), and the controllers' own client code (`shared.kube.api_client` in
its in-cluster mode, with a service-account directory holding the token) taking its Lease,
listing its resources and writing Events. The real controllers doing their whole work with
these tokens: tests/k8s/test_chart_controllers.py.

helm: `helm install --wait`, `upgrade` and `uninstall` of the chart on the test cluster,
whose kwok nodes run the pods (the migration hook Job completes first).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from shared.devstack.kube import KubeControlPlane
from shared.kube import EventRecorder, LeaderElector, Objects, api_client
from shared.kube.kinds import BENTO_REQUEST, DEPLOYMENT, LEASE
from shared.settings import KubeSettings
from tests.deploy.tools import helm_binary, operator_crds, render, run

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(300)]

VALUES = {
    "defaults": (),
    "external": ("ci/external-values.yaml",),
    "all-namespaces": ("ci/all-namespaces-values.yaml",),
}
WATCHED = ("ml-team-a", "ml-team-b")  # named by ci/external-values.yaml
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    warnings: list[str]


class Api:
    """Plain HTTP to the API server, as the admin or as a bearer token."""

    def __init__(self, plane: KubeControlPlane, token: str | None = None) -> None:
        self.plane = plane
        self.token = token
        if token is None:
            self.context = plane.ssl_context()
        else:
            self.context = ssl.create_default_context(cafile=str(plane.pki.ca_cert))

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> Answer:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.plane.server_url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                return Answer(
                    response.status,
                    json.loads(response.read() or b"{}"),
                    response.headers.get_all("Warning") or [],
                )
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, json.loads(exc.read() or b"{}"), [])

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = self.call(method, path, body)
        assert 200 <= answer.status < 300, f"{method} {path}: {answer.status} {answer.body}"
        return answer.body


class Discovery:
    """apiVersion + kind -> the REST collection, from the server's discovery documents."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.cache: dict[str, dict[str, tuple[str, bool]]] = {}

    def collection(self, api_version: str, kind: str, namespace: str | None) -> str:
        if api_version not in self.cache:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            resources = self.api.ok("GET", base)["resources"]
            self.cache[api_version] = {
                r["kind"]: (f"{base}/{{ns}}{r['name']}", r["namespaced"])
                for r in resources
                if "/" not in r["name"]
            }
        template, namespaced = self.cache[api_version][kind]
        prefix = f"namespaces/{namespace}/" if namespaced else ""
        return template.replace("{ns}", prefix)


@pytest.fixture(scope="module")
def helm() -> Path:
    return helm_binary()


@pytest.fixture(scope="module")
def admin(kube_control_plane: KubeControlPlane) -> Api:
    plane = kube_control_plane
    # ServiceMonitor, PodMonitor, PrometheusRule: the operator's real schemas.
    plane.apply_crds(operator_crds(), timeout=60)
    api = Api(plane)
    for namespace in WATCHED:
        if api.call("GET", f"/api/v1/namespaces/{namespace}").status == 404:
            api.ok("POST", "/api/v1/namespaces", namespace_manifest(namespace))
    return api


def namespace_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": RESTRICTED},
    }


def restrict(api: Api, namespace: str) -> None:
    api.call(
        "PATCH",
        f"/api/v1/namespaces/{namespace}",
        {"metadata": {"labels": RESTRICTED}},
        content_type="application/merge-patch+json",
    )


def apply(
    api: Api, discovery: Discovery, doc: dict[str, Any], namespace: str, *, dry_run: bool
) -> Answer:
    meta = doc["metadata"]
    collection = discovery.collection(
        doc["apiVersion"], doc["kind"], meta.get("namespace", namespace)
    )
    query = "fieldManager=ekiben-chart-test&force=true" + ("&dryRun=All" if dry_run else "")
    return api.call(
        "PATCH",
        f"{collection}/{meta['name']}?{query}",
        doc,
        content_type="application/apply-patch+yaml",
    )


# --- everything rendered is accepted ----------------------------------------------------------


@pytest.mark.parametrize("values", list(VALUES))
def test_the_api_server_accepts_every_rendered_object(
    helm: Path, admin: Api, kube_namespace: str, values: str
) -> None:
    restrict(admin, kube_namespace)
    docs = render(helm, *VALUES[values], namespace=kube_namespace, include_crds=True)
    discovery = Discovery(admin)
    kinds: set[str] = set()
    for doc in docs:
        answer = apply(admin, discovery, doc, kube_namespace, dry_run=True)
        where = f"{doc['kind']} {doc['metadata']['name']}"
        assert answer.status in (200, 201), f"{where}: {answer.status} {answer.body}"
        assert answer.warnings == [], f"{where}: {answer.warnings}"
        kinds.add(doc["kind"])
    assert "CustomResourceDefinition" in kinds
    assert "Deployment" in kinds
    if values == "external":
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Ingress"} <= kinds


@pytest.mark.parametrize(
    ("sets", "kind", "field"),
    [
        (
            ("metrics.podMonitor.enabled=true", "metrics.podMonitor.interval=30 seconds"),
            "PodMonitor",
            "interval",
        ),
        (("gateway.service.type=Loadbalancer",), "Service", "spec.type"),
    ],
)
def test_the_dry_run_refuses_what_the_schemas_refuse(
    helm: Path, admin: Api, kube_namespace: str, sets: tuple[str, ...], kind: str, field: str
) -> None:
    """The controls for the test above: a wrong value reaches the real validation."""
    docs = render(helm, namespace=kube_namespace, sets=sets)
    doc = next(d for d in docs if d["kind"] == kind)
    answer = apply(admin, Discovery(admin), doc, kube_namespace, dry_run=True)
    assert answer.status == 422, answer.body
    assert field in answer.body["message"]


def test_the_restricted_profile_would_warn_about_a_weaker_pod(
    helm: Path, admin: Api, kube_namespace: str
) -> None:
    """The control for the test above: the same Deployment with one promise broken warns."""
    restrict(admin, kube_namespace)
    docs = render(helm, namespace=kube_namespace)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "allowPrivilegeEscalation"
    ] = True
    answer = apply(admin, Discovery(admin), deployment, kube_namespace, dry_run=True)
    assert answer.status in (200, 201)
    assert any("allowPrivilegeEscalation" in w for w in answer.warnings), answer.warnings


# --- RBAC: enough and no more ------------------------------------------------------------------


@dataclass
class Installed:
    namespace: str
    tokens: dict[str, str]  # component -> service-account token
    accounts: dict[str, str]  # component -> service-account name


@pytest.fixture
def installed(helm: Path, admin: Api, kube_namespace: str) -> Installed:
    """The chart's accounts and RBAC really created (default values: the release namespace
    is the watched one), a registry Secret and another Secret, and a token per account."""
    docs = render(
        helm,
        namespace=kube_namespace,
        sets=(
            "imageRegistry.url=https://registry.example.com",
            "imageRegistry.dockerConfigSecret=regcred",
        ),
    )
    discovery = Discovery(admin)
    accounts: dict[str, str] = {}
    for doc in docs:
        if doc["kind"] in {"ServiceAccount", "Role", "RoleBinding"}:
            answer = apply(admin, discovery, doc, kube_namespace, dry_run=False)
            assert answer.status in (200, 201), answer.body
            if doc["kind"] == "ServiceAccount":
                accounts[doc["metadata"]["labels"]["app.kubernetes.io/component"]] = doc[
                    "metadata"
                ]["name"]
    secrets = f"/api/v1/namespaces/{kube_namespace}/secrets"
    admin.ok("POST", secrets, {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred"},
        "stringData": {".dockerconfigjson": '{"auths": {"registry.example.com": {}}}'},
    })  # fmt: skip
    admin.ok("POST", secrets, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "someone-elses"},
        "stringData": {"password": "not for the builder"},
    })  # fmt: skip
    tokens = {}
    for name in ("builder", "deployer", "gateway"):
        review = admin.ok(
            "POST",
            f"/api/v1/namespaces/{kube_namespace}/serviceaccounts/{accounts[name]}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 3600}},
        )  # fmt: skip
        tokens[name] = review["status"]["token"]
    return Installed(kube_namespace, tokens, accounts)


def may(api: Api, verb: str, resource: str, *, group: str = "", namespace: str | None,
        name: str = "", subresource: str = "") -> bool:  # fmt: skip
    attributes = {"verb": verb, "group": group, "resource": resource, "name": name,
                  "subresource": subresource}  # fmt: skip
    if namespace is not None:
        attributes["namespace"] = namespace
    review = api.ok(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
         "spec": {"resourceAttributes": attributes}},
    )  # fmt: skip
    return bool(review["status"]["allowed"])


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "build", "image": "quay.io/buildah/stable:v1.38.1", "args": ["true"]},
        ]}}},
    }  # fmt: skip


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "bento", "image": "example.com/bento:1"}]},
        }},
    }  # fmt: skip


def test_the_builder_may_build_and_nothing_else(admin: Api, installed: Installed) -> None:
    ns = installed.namespace
    builder = Api(admin.plane, installed.tokens["builder"])
    # What it needs, asked of the authorizer...
    for verb, resource, group, sub, name in [
        ("watch", "bentorequests", "resources.ekiben.dev", "", ""),
        ("create", "bentorequests", "resources.ekiben.dev", "", ""),  # builds it announces
        ("update", "bentorequests", "resources.ekiben.dev", "status", ""),
        ("create", "bentos", "resources.ekiben.dev", "", ""),
        ("patch", "bentos", "resources.ekiben.dev", "", ""),
        ("create", "jobs", "batch", "", ""),
        ("delete", "jobs", "batch", "", ""),
        ("create", "events", "events.k8s.io", "", ""),
        ("create", "leases", "coordination.k8s.io", "", ""),
        ("update", "leases", "coordination.k8s.io", "", "ekiben-builder"),
    ]:
        assert may(
            builder, verb, resource, group=group, namespace=ns, subresource=sub, name=name
        ), f"the builder cannot {verb} {resource}/{sub}"
    # ... and what it must not do.
    for verb, resource, group, namespace, name in [
        ("create", "deployments", "apps", ns, ""),
        ("create", "pods", "", ns, ""),
        ("list", "secrets", "", ns, ""),
        # Not even the registry's: it reaches the pods as a mounted volume (the kubelet's).
        ("get", "secrets", "", ns, "regcred"),
        ("get", "secrets", "", ns, "someone-elses"),
        ("delete", "bentos", "resources.ekiben.dev", ns, ""),  # its request's GC does it
        ("get", "secrets", "", "kube-system", "regcred"),
        ("list", "bentorequests", "resources.ekiben.dev", None, ""),
        ("create", "bentodeployments", "serving.ekiben.dev", ns, ""),
        ("update", "leases", "coordination.k8s.io", ns, "ekiben-deployer"),
        ("create", "jobs", "batch", "default", ""),
    ]:
        assert not may(builder, verb, resource, group=group, namespace=namespace, name=name), (
            f"the builder may {verb} {resource} {name} in {namespace}"
        )
    # Real requests: its Job is created; a Deployment and other Secrets are refused.
    created = builder.call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job("build-1"))
    assert created.status == 201, created.body
    refused = builder.call("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("x"))
    assert refused.status == 403, refused.body
    assert builder.call("GET", f"/api/v1/namespaces/{ns}/secrets/regcred").status == 403
    assert builder.call("GET", f"/api/v1/namespaces/{ns}/secrets/someone-elses").status == 403
    assert builder.call("GET", "/api/v1/secrets").status == 403


def test_the_deployer_may_run_workloads_and_nothing_else(admin: Api, installed: Installed) -> None:
    ns = installed.namespace
    deployer = Api(admin.plane, installed.tokens["deployer"])
    for verb, resource, group, sub in [
        ("watch", "bentodeployments", "serving.ekiben.dev", ""),
        ("update", "bentodeployments", "serving.ekiben.dev", "status"),
        ("get", "bentos", "resources.ekiben.dev", ""),
        ("patch", "deployments", "apps", ""),
        ("create", "services", "", ""),
        ("create", "horizontalpodautoscalers", "autoscaling", ""),
        ("create", "ingresses", "networking.k8s.io", ""),
        ("watch", "pods", "", ""),
        ("create", "secrets", "", ""),
        ("create", "events", "events.k8s.io", ""),
        ("list", "events", "", ""),  # a deployment page's Kubernetes events
    ]:
        assert may(deployer, verb, resource, group=group, namespace=ns, subresource=sub), (
            f"the deployer cannot {verb} {resource}/{sub}"
        )
    for verb, resource, group, namespace in [
        ("list", "secrets", "", None),
        ("list", "secrets", "", ns),
        ("watch", "secrets", "", ns),
        ("create", "jobs", "batch", ns),
        ("create", "bentos", "resources.ekiben.dev", ns),
        ("create", "bentorequests", "resources.ekiben.dev", ns),
        ("delete", "pods", "", ns),
        ("watch", "events", "", ns),
        ("delete", "events", "", ns),
        ("list", "events", "", "kube-system"),
        ("create", "deployments", "apps", "kube-system"),
        ("create", "clusterroles", "rbac.authorization.k8s.io", None),
    ]:
        assert not may(deployer, verb, resource, group=group, namespace=namespace), (
            f"the deployer may {verb} {resource} in {namespace}"
        )
    created = deployer.call(
        "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("iris")
    )
    assert created.status == 201, created.body
    assert deployer.call("GET", "/api/v1/secrets").status == 403
    assert deployer.call("GET", f"/api/v1/namespaces/{ns}/secrets").status == 403
    assert deployer.call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job("j")).status == 403


def test_the_gateway_has_no_kubernetes_access(admin: Api, installed: Installed) -> None:
    gateway = Api(admin.plane, installed.tokens["gateway"])
    ns = installed.namespace
    for verb, resource, group in [
        ("get", "pods", ""), ("list", "secrets", ""), ("get", "configmaps", ""),
        ("list", "bentos", "resources.ekiben.dev"), ("create", "leases", "coordination.k8s.io"),
    ]:  # fmt: skip
        assert not may(gateway, verb, resource, group=group, namespace=ns), f"{verb} {resource}"
    assert gateway.call("GET", f"/api/v1/namespaces/{ns}/pods").status == 403


def service_account_dir(tmp_path: Path, plane: KubeControlPlane, token: str, ns: str) -> Path:
    """What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount."""
    directory = tmp_path / "serviceaccount"
    directory.mkdir(parents=True)
    (directory / "token").write_text(token)
    (directory / "ca.crt").write_bytes(plane.pki.ca_cert.read_bytes())
    (directory / "namespace").write_text(ns)
    return directory


async def test_the_controllers_client_code_works_with_the_chart_tokens(
    admin: Api, installed: Installed, tmp_path: Path
) -> None:
    """shared.kube in its in-cluster mode, as a pod of the chart runs it: each controller
    takes its Lease, lists and watches its kind, records an Event; a step outside is 403."""
    plane, ns = admin.plane, installed.namespace
    port = plane.server_url.rsplit(":", 1)[1]
    environ = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}
    request = admin.ok(
        "POST",
        f"/apis/resources.ekiben.dev/v1alpha1/namespaces/{ns}/bentorequests",
        {"apiVersion": "resources.ekiben.dev/v1alpha1", "kind": "BentoRequest",
         "metadata": {"name": "iris"}, "spec": {"bentoTag": "iris:v1"}},
    )  # fmt: skip
    for name in ("builder", "deployer"):
        directory = service_account_dir(tmp_path / name, plane, installed.tokens[name], ns)
        async with await api_client(
            KubeSettings(kubeconfig=None, namespace=ns),
            service_account_dir=directory,
            environ=environ,
        ) as api:
            elector = LeaderElector(
                api, name=f"ekiben-{name}", namespace=ns, identity=f"{name}-0",
                lease_duration=15, renew_deadline=10, retry_period=2,
            )  # fmt: skip
            leading = asyncio.Event()

            async def lead(leading: asyncio.Event = leading) -> None:
                leading.set()
                await asyncio.Event().wait()

            campaign = asyncio.create_task(elector.run(lead))
            await asyncio.wait_for(leading.wait(), timeout=30)
            objects = Objects(api, field_manager=f"ekiben-{name}")
            lease = await objects.get(LEASE, (ns, f"ekiben-{name}"))
            assert lease is not None
            assert lease["spec"]["holderIdentity"] == f"{name}-0"
            elector.stop()
            await asyncio.wait_for(campaign, timeout=30)
            recorder = EventRecorder(api, controller=f"ekiben.dev/{name}", instance=f"{name}-0")
            if name == "builder":
                listed = await objects.list(BENTO_REQUEST, ns)
                assert [o["metadata"]["name"] for o in listed] == ["iris"]
                await recorder.normal(request, "Building", "building iris:v1")
                with pytest.raises(ApiException) as refused:
                    await objects.list(DEPLOYMENT, ns)
            else:
                applied = await objects.apply(DEPLOYMENT, {**deployment("iris"), "metadata": {
                    "name": "iris", "namespace": ns}})  # fmt: skip
                assert applied["metadata"]["name"] == "iris"
                await recorder.normal(applied, "Deployed", "iris is rolling out")
                with pytest.raises(ApiException) as refused:
                    await objects.list(BENTO_REQUEST, ns)
            assert refused.value.status == 403
            assert (recorder.created, recorder.failures) == (1, 0), name


def test_watching_every_namespace_is_a_cluster_role(
    helm: Path, admin: Api, kube_namespace: str
) -> None:
    """With watchNamespaces ["*"] the builder lists BentoRequests everywhere, and still may
    not touch Deployments anywhere."""
    docs = render(helm, "ci/all-namespaces-values.yaml", namespace=kube_namespace,
                  release=f"all-{kube_namespace[-6:]}")  # fmt: skip
    discovery = Discovery(admin)
    account = ""
    for doc in docs:
        if doc["kind"] in {
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        }:
            assert apply(admin, discovery, doc, kube_namespace, dry_run=False).status in (200, 201)
            if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"].endswith("-builder"):
                account = doc["metadata"]["name"]
    token = admin.ok(
        "POST",
        f"/api/v1/namespaces/{kube_namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    builder = Api(admin.plane, token)
    listed = builder.call("GET", "/apis/resources.ekiben.dev/v1alpha1/bentorequests")
    assert listed.status == 200, listed.body
    assert may(builder, "create", "jobs", group="batch", namespace="default")
    assert not may(builder, "create", "deployments", group="apps", namespace="default")
    assert builder.call("GET", "/api/v1/secrets").status == 403
    for doc in docs:
        if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
            path = discovery.collection(doc["apiVersion"], doc["kind"], None)
            admin.call("DELETE", f"{path}/{doc['metadata']['name']}")


# --- helm itself against the cluster ---------------------------------------------------------


def test_helm_installs_upgrades_and_uninstalls_the_chart(
    helm: Path, admin: Api, full_cluster: KubeControlPlane, kube_namespace: str
) -> None:
    """`helm install --wait` on the test cluster (kwok nodes run the pods): the migration hook
    completes before the services roll out, every Deployment becomes available, an upgrade
    runs the hook again, an uninstall leaves the CRDs (and the custom resources) alone."""
    kubeconfig = str(full_cluster.kubeconfig_path)
    common = ["--kubeconfig", kubeconfig, "--namespace", kube_namespace]
    values = ["--set", "imageRegistry.url=https://registry.example.com"]
    chart = str(Path(__file__).parents[2] / "deploy" / "helm" / "ekiben")

    def helm_run(*args: str) -> str:
        return run([helm, *args, *common], timeout=240)

    installed = helm_run("install", "ekiben", chart, *values, "--wait", "--timeout", "180s")
    assert "STATUS: deployed" in installed
    deployments = admin.ok("GET", f"/apis/apps/v1/namespaces/{kube_namespace}/deployments")
    ready = {
        d["metadata"]["name"]: d["status"].get("availableReplicas") for d in deployments["items"]
    }
    assert ready == {
        f"ekiben-{c}": 2 for c in ("gateway", "registry", "builder", "deployer", "dashboard")
    }
    # The hook Job ran and, succeeded, was deleted (hook-delete-policy).
    jobs = admin.ok("GET", f"/apis/batch/v1/namespaces/{kube_namespace}/jobs")["items"]
    assert jobs == []

    upgraded = helm_run(
        "upgrade", "ekiben", chart, *values, "--set", "defaults.replicas=3", "--wait",
        "--timeout", "180s",
    )  # fmt: skip
    assert "REVISION: 2" in upgraded
    gateway = admin.ok(
        "GET", f"/apis/apps/v1/namespaces/{kube_namespace}/deployments/ekiben-gateway"
    )
    assert gateway["status"]["availableReplicas"] == 3

    helm_run("uninstall", "ekiben", "--wait")
    left = admin.ok("GET", f"/apis/apps/v1/namespaces/{kube_namespace}/deployments")["items"]
    assert left == []
    crd = admin.call(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/bentos.resources.ekiben.dev"
    )
    assert crd.status == 200
