"""The deployer's pure parts: rendering children, reading them back, specs from configs."""

from __future__ import annotations

from typing import Any

import pytest

from services.deployer.render import (
    RenderError,
    RenderOptions,
    child_name,
    observe,
    pod_problem,
    render,
    urls,
)
from services.deployer.spec import config_from_spec, spec_from_config
from shared.contracts import deployer as dep
from shared.contracts.vocabulary import DeploymentStatus

OWNER = {"apiVersion": "serving.ekiben.dev/v1alpha1", "kind": "BentoDeployment", "name": "d",
         "uid": "u-1", "controller": True, "blockOwnerDeletion": True}  # fmt: skip
OPTIONS = RenderOptions(namespace="ns", domain_suffix="apps.test", image_pull_secret="regcred")


def bd(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.ekiben.dev/v1alpha1",
        "kind": "BentoDeployment",
        "metadata": {"name": "shop", "namespace": "ns", "uid": "u-1", "generation": 1,
                     "labels": {"ekiben.dev/organization": "acme"}},
        "spec": {"bento": "acme-shop-v1", **spec},
    }  # fmt: skip


def bento(*services: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "acme-shop-v1", "namespace": "ns"},
        "spec": {
            "tag": "shop:v1",
            "image": "registry.example/ekiben/shop:v1",
            "entryService": "Front",
            "services": list(services) or [{"name": "Front"}],
            "imagePullSecrets": [{"name": "bento-pull"}],
        },
    }


def by_kind(children: list[Any], kind: str) -> dict[str, dict[str, Any]]:
    return {c.name: c.manifest for c in children if c.kind.kind == kind}


def test_a_multi_service_bento_is_wired_through_bentomls_depends() -> None:
    children = render(
        bd(
            services=[{"name": "Front", "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}],
            ingress={"enabled": True},
        ),
        bento({"name": "Front", "dependencies": ["Model"]}, {"name": "Model"}),
        OPTIONS,
        OWNER,
    )
    deployments = by_kind(children, "Deployment")
    assert set(deployments) == {"shop-front", "shop-model"}
    front = deployments["shop-front"]["spec"]["template"]["spec"]["containers"][0]
    assert front["command"] == [
        "python", "-m", "bentoml_cli._internal.start", "start-http-server",
        "--service-name", "Front", "--depends", "Model=http://shop-model.ns.svc:3000",
        "--host", "0.0.0.0", "/home/bentoml/bento",
    ]  # fmt: skip
    model = deployments["shop-model"]["spec"]["template"]["spec"]["containers"][0]
    assert "--depends" not in model["command"]
    # Only the entry service is exposed; every service has its Service.
    assert set(by_kind(children, "Ingress")) == {"shop-front"}
    assert set(by_kind(children, "Service")) == {"shop-front", "shop-model"}
    hpas = by_kind(children, "HorizontalPodAutoscaler")
    assert set(hpas) == {"shop-front"}  # the model runs a fixed count (none asked for)
    assert hpas["shop-front"]["spec"]["minReplicas"] == 2
    assert "replicas" not in deployments["shop-front"]["spec"]  # the HPA's field
    assert deployments["shop-model"]["spec"]["replicas"] == 1
    for manifest in [*deployments.values(), *hpas.values()]:
        assert manifest["metadata"]["ownerReferences"] == [OWNER]
        assert manifest["metadata"]["labels"]["ekiben.dev/organization"] == "acme"
    pod = deployments["shop-front"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "bento-pull"}, {"name": "regcred"}]
    assert {"name": "BENTOML_PORT", "value": "3000"} in front["env"]
    assert front["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert front["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}


def test_resources_gpu_env_secrets_and_pod_customisation() -> None:
    children = render(
        bd(
            envs=[{"name": "A", "value": "top"}, {"name": "B", "value": "top"}],
            envFrom=[{"secretRef": {"name": "ekiben-secret-hf"}}],
            extraPodSpec={"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "gpu",
                          "operator": "Exists"}], "serviceAccountName": "runner",
                          "containers": [{"name": "sidecar", "image": "busybox"}]},
            extraPodMetadata={"annotations": {"team": "ml"}},
            services=[{"name": "Front", "replicas": 3, "envs": [{"name": "B", "value": "svc"}],
                       "resources": {"requests": {"cpu": "2", "gpu": 1},
                                     "limits": {"memory": "8Gi", "custom": {"foo.io/x": "1"}}}}],
        ),
        bento(),
        OPTIONS,
        OWNER,
    )  # fmt: skip
    deployment = by_kind(children, "Deployment")["shop-front"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["A"] == "top"
    assert env["B"] == "svc"  # the service's value wins
    assert container["envFrom"] == [{"secretRef": {"name": "ekiben-secret-hf"}}]
    assert container["resources"] == {
        "requests": {"cpu": "2", "nvidia.com/gpu": "1"},
        "limits": {"memory": "8Gi", "foo.io/x": "1", "nvidia.com/gpu": "1"},
    }
    assert pod["spec"]["nodeSelector"] == {"pool": "gpu"}
    assert pod["spec"]["serviceAccountName"] == "runner"
    assert [c["name"] for c in pod["spec"]["containers"]] == ["bento", "sidecar"]
    assert pod["metadata"]["annotations"] == {"team": "ml"}
    assert "HorizontalPodAutoscaler" not in {c.kind.kind for c in children}


def test_ingress_host_path_class_and_tls() -> None:
    tls = {"secretName": "shop-tls"}
    spec = {"ingress": {"enabled": True, "host": "shop.example.com", "path": "/api",
                        "ingressClassName": "traefik", "tls": tls}}  # fmt: skip
    ingress = by_kind(render(bd(**spec), bento(), OPTIONS, OWNER), "Ingress")["shop-front"]
    assert ingress["spec"]["ingressClassName"] == "traefik"
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "shop.example.com"
    assert rule["http"]["paths"][0]["path"] == "/api"
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}]
    assert urls(bd(**spec), OPTIONS) == ["https://shop.example.com/api"]
    # The default host comes from the deployer's domain suffix.
    assert urls(bd(ingress={"enabled": True}), OPTIONS) == ["http://shop-ns.apps.test/"]
    assert urls(bd(), OPTIONS) == []


def test_a_service_the_bento_lacks_is_a_permanent_render_error() -> None:
    with pytest.raises(RenderError, match="does not have") as caught:
        render(bd(services=[{"name": "Ghost"}]), bento(), OPTIONS, OWNER)
    assert caught.value.reason == "UnknownService"


def test_child_names_are_dns_labels_even_for_long_or_odd_names() -> None:
    assert child_name("shop", "Front_API") == "shop-front-api"
    long = child_name("a" * 40, "S" * 40)
    assert len(long) <= 63
    assert long != child_name("a" * 40, "S" * 39 + "T")
    assert child_name("1x", "svc")[0].isalpha()


def deployment(name: str, *, ready: int, wanted: int = 1, complete: bool = True,
               available: bool = True) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": name, "generation": 2},
        "spec": {"replicas": wanted},
        "status": {
            "observedGeneration": 2, "replicas": wanted, "updatedReplicas": wanted,
            "readyReplicas": ready, "availableReplicas": ready,
            "conditions": [
                {"type": "Progressing", "status": "True",
                 "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated"},
                {"type": "Available", "status": "True" if available else "False"},
            ],
        },
    }  # fmt: skip


def pod(
    reason: str | None = None, unschedulable: bool = False, phase: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if phase:
        ready = "True" if phase == "Ready" else "False"
        status.update(phase="Running" if phase == "Ready" else phase)
        status["conditions"] = [{"type": "Ready", "status": ready}]
    if reason:
        status["containerStatuses"] = [{"state": {"waiting": {"reason": reason, "message": "m"}}}]
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                 "reason": "Unschedulable", "message": "0/2 nodes"}]  # fmt: skip
    return {"metadata": {"name": "p-1"}, "status": status}


@pytest.mark.parametrize(
    ("live", "pods", "status", "reason"),
    [
        (None, [], DeploymentStatus.DEPLOYING, "Deploying"),
        (deployment("shop-front", ready=0, complete=False), [], DeploymentStatus.DEPLOYING,
         "Deploying"),
        (deployment("shop-front", ready=1), [], DeploymentStatus.RUNNING, "Running"),
        (deployment("shop-front", ready=2, wanted=3), [], DeploymentStatus.RUNNING, "Running"),
        (deployment("shop-front", ready=0, available=False), [], DeploymentStatus.UNHEALTHY,
         "ReplicasUnavailable"),
        # An autoscaler adding a replica: the Deployment is unavailable until it is up.
        (deployment("shop-front", ready=1, wanted=2, available=False),
         [pod(phase="Ready"), pod(phase="Pending")], DeploymentStatus.RUNNING, "Running"),
        (deployment("shop-front", ready=1, wanted=2, available=False),
         [pod(phase="Ready"), pod("ContainerCreating", phase="Running")],
         DeploymentStatus.RUNNING, "Running"),
        # A replica that ran and stopped answering its readiness probe.
        (deployment("shop-front", ready=1, wanted=2, available=False),
         [pod(phase="Ready"), pod(phase="Running")], DeploymentStatus.UNHEALTHY,
         "ReplicasUnavailable"),
        (deployment("shop-front", ready=0, complete=False), [pod("ImagePullBackOff")],
         DeploymentStatus.FAILED, "ImagePullFailed"),
        (deployment("shop-front", ready=1, wanted=2), [pod("CrashLoopBackOff")],
         DeploymentStatus.UNHEALTHY, "CrashLoop"),
        (deployment("shop-front", ready=0, complete=False), [pod(unschedulable=True)],
         DeploymentStatus.DEPLOYING, "Unschedulable"),
    ],
)  # fmt: skip
def test_observe_reads_children_into_the_clients_statuses(
    live: dict[str, Any] | None, pods: list[dict[str, Any]], status: DeploymentStatus, reason: str
) -> None:
    children = [c for c in render(bd(), bento(), OPTIONS, OWNER) if c.kind.kind == "Deployment"]
    observed = observe(children, {"shop-front": live}, {"front": pods})
    assert (observed.status, observed.reason) == (status, reason)


def test_a_scale_the_controller_has_not_observed_is_no_rollout_once_settled() -> None:
    children = [c for c in render(bd(), bento(), OPTIONS, OWNER) if c.kind.kind == "Deployment"]
    # The autoscaler raised the replicas: a new generation, its controller not there yet.
    scaled = deployment("shop-front", ready=1, wanted=2)
    scaled["metadata"]["generation"] = 3
    live = {"shop-front": scaled}
    first = observe(children, live, {"front": []})
    assert first.status is DeploymentStatus.DEPLOYING  # no running status to keep yet
    again = observe(children, live, {"front": []}, settled=True)
    assert (again.status, again.reason) == (DeploymentStatus.RUNNING, "Running")
    assert again.message == "1/2 replicas ready (shop-front scaling)"
    # A rollout its controller has observed is one, settled or not.
    rolling = deployment("shop-front", ready=1, wanted=2, complete=False)
    observed = observe(children, {"shop-front": rolling}, {"front": []}, settled=True)
    assert observed.status is DeploymentStatus.DEPLOYING


def test_pod_problem_names_the_pod() -> None:
    assert pod_problem([pod("ErrImagePull")]) == ("ImagePullFailed", "p-1: ErrImagePull: m")
    assert pod_problem([pod()]) is None


def test_a_config_becomes_a_spec_and_a_gitops_spec_reads_back() -> None:
    target = dep.BentoTarget(name="shop", version="v1", services=["Front"], entry_service="Front")
    types = {"gpu": dep.InstanceType(name="gpu", cpu="4", memory="16Gi", gpu=1)}
    config = dep.DeploymentConfig(
        envs=[dep.EnvVar(name="A", value="1")],
        secrets=["hf"],
        services={"Front": dep.ServiceConfig(
            instance_type="gpu", scaling=dep.Scaling(min_replicas=2, max_replicas=3),
            config_overrides={"autoscaling": {"metrics": [{"type": "Pods"}]}},
        )},
    )  # fmt: skip
    spec = spec_from_config("acme", target, config, types)
    assert spec["bento"] == "acme-shop-v1"
    (service,) = spec["services"]
    assert service["autoscaling"] == {"minReplicas": 2, "maxReplicas": 3,
                                      "metrics": [{"type": "Pods"}]}  # fmt: skip
    assert service["resources"]["limits"]["gpu"] == 1
    back = config_from_spec(spec)
    assert back.secrets == ["hf"]
    assert back.services["Front"].scaling == dep.Scaling(min_replicas=2, max_replicas=3)
    assert back.envs == config.envs


def test_what_the_bento_declares_is_the_default_and_the_deployment_overrides_it() -> None:
    declared = {"name": "Front", "resources": {"requests": {"cpu": "2", "gpu": 1}}}
    (deployment,) = [
        c.manifest for c in render(bd(), bento(declared), OPTIONS, OWNER)
        if c.kind.kind == "Deployment"
    ]  # fmt: skip
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "2", "nvidia.com/gpu": "1"},
        "limits": {"nvidia.com/gpu": "1"},
    }
    given = {"requests": {"cpu": "500m"}}
    (deployment,) = [
        c.manifest for c in render(bd(resources=given), bento(declared), OPTIONS, OWNER)
        if c.kind.kind == "Deployment"
    ]  # fmt: skip
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "500m"}}
