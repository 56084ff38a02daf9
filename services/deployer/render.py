"""What a BentoDeployment should own, and what its children say about it (pure functions).

`render(bd, bento, options)` turns a BentoDeployment and the Bento it names into the child
manifests, per BentoML service of the bento: a Deployment, a Service and (with autoscaling)
an autoscaling/v2 HorizontalPodAutoscaler; and an Ingress for the entry service. Services of
a multi-service bento reach each other the way BentoML serves one service of a bento: each
pod runs `python -m bentoml_cli._internal.start start-http-server --service-name NAME
--depends DEP=URL ...`, with the URL of each dependency's Service.

`observe(...)` reads the children back (Deployments and their pods, from the watch caches)
into the client's status words, with the reason when something is wrong (an image that
cannot be pulled, a crash loop, a pod that cannot be scheduled).

Everything here is a function of its arguments: unit tests call them directly, and the
controller applies what they return (see controller.py).
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.contracts.deployer import DEPLOYMENT_LABEL, ORGANIZATION_LABEL, SERVICE_LABEL
from shared.contracts.vocabulary import DeploymentStatus
from shared.kube.kinds import DEPLOYMENT, HORIZONTAL_POD_AUTOSCALER, INGRESS, SERVICE, Kind

MANAGED_BY = "ekiben-deployer"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
COMPONENT_LABEL = "app.kubernetes.io/component"
# The selector the bentoml client's `--wait` uses to find image-builder pods (Yatai's).
YATAI_REPOSITORY_LABEL = "yatai.ai/bento-repository"
YATAI_BENTO_LABEL = "yatai.ai/bento"
STRATEGY_ANNOTATION = "ekiben.dev/deployment-strategy"
PORT = 3000
BENTO_PATH = "/home/bentoml/bento"
SHM = "/dev/shm"  # noqa: S108 - shared memory for the bento (PyTorch data loaders), not temp files
MAX_NAME = 63
_NOT_DNS = re.compile(r"[^a-z0-9-]+")

DEFAULT_METRICS = [
    {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
    }
]
STRATEGIES: dict[str, dict[str, Any]] = {
    "RollingUpdate": {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    },
    "Recreate": {"type": "Recreate"},
    "RampedSlowRollout": {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    },
    "BestEffortControlledRollout": {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "20%"},
    },
}
# Pod-spec fields of extraPodSpec copied as they are.
_POD_FIELDS = (
    "serviceAccountName", "schedulerName", "priorityClassName", "runtimeClassName",
    "nodeSelector", "tolerations", "affinity", "topologySpreadConstraints",
)  # fmt: skip


@dataclass(frozen=True)
class RenderOptions:
    """What the deployer's settings add to every rendering."""

    namespace: str
    image_pull_secret: str | None = None
    ingress_enabled: bool = True
    ingress_class: str | None = None
    domain_suffix: str | None = None
    ingress_path: str = "/"
    tls_secret_name: str | None = None
    ingress_annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BentoService:
    name: str
    dependencies: tuple[str, ...] = ()
    # What the service declares (the Bento's services[].resources): the container's default.
    resources: dict[str, Any] | None = None


@dataclass(frozen=True)
class Child:
    kind: Kind
    manifest: dict[str, Any]
    service: str

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


class RenderError(ValueError):
    """The BentoDeployment asks for something the Bento does not have."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- names ---------------------------------------------------------------------------------


def dns_part(value: str) -> str:
    return _NOT_DNS.sub("-", value.lower()).strip("-") or "x"


def child_name(deployment: str, service: str) -> str:
    """`<deployment>-<service>`: a DNS-1035 label (a Service name), hashed when too long."""
    name = f"{deployment}-{dns_part(service)}"
    if not name[0].isalpha():
        name = f"d{name}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(f"{deployment}/{service}".encode()).hexdigest()[:8]
    return f"{name[: MAX_NAME - 9].rstrip('-')}-{digest}"


def bento_services(bento: dict[str, Any]) -> list[BentoService]:
    spec = bento.get("spec") or {}
    services = [
        BentoService(
            str(s["name"]), tuple(str(d) for d in s.get("dependencies") or ()), s.get("resources")
        )
        for s in spec.get("services") or []
        if s.get("name")
    ]
    if not services:
        services = [BentoService(str(spec.get("entryService") or "apiserver"))]
    return services


def entry_service(bd: dict[str, Any], bento: dict[str, Any]) -> str:
    spec = bd.get("spec") or {}
    named = spec.get("entryService") or (bento.get("spec") or {}).get("entryService")
    return str(named) if named else bento_services(bento)[0].name


# --- merging the spec's defaults with a service's overrides ------------------------------------


def _service_entry(bd_spec: dict[str, Any], name: str) -> dict[str, Any]:
    for entry in bd_spec.get("services") or []:
        if entry.get("name") == name:
            return dict(entry)
    return {}


def _merged_envs(*lists: Iterable[dict[str, Any]] | None) -> list[dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}
    for envs in lists:
        for env in envs or ():
            kept = {k: v for k, v in env.items() if k in ("name", "value", "valueFrom")}
            by_name[str(env["name"])] = kept
    return list(by_name.values())


def _resource_list(raw: dict[str, Any] | None, gpu_name: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key == "gpu":
            if value:
                out[gpu_name] = str(value)
        elif key == "custom":
            out.update({k: str(v) for k, v in (value or {}).items()})
        elif key == "ephemeralStorage":
            out["ephemeral-storage"] = str(value)
        else:
            out[key] = str(value)
    return out


def container_resources(resources: dict[str, Any] | None) -> dict[str, Any]:
    """The CRD's resources (gpu, custom, ephemeralStorage) as a container's requirements."""
    resources = resources or {}
    gpu_name = str(resources.get("gpuResourceName") or "nvidia.com/gpu")
    out = {}
    for part in ("requests", "limits"):
        rendered = _resource_list(resources.get(part), gpu_name)
        if rendered:
            out[part] = rendered
    # Extended resources (GPUs) must be requested as limits; a request alone is refused.
    requests, limits = out.get("requests", {}), out.setdefault("limits", {})
    for key, value in requests.items():
        if "/" in key and key not in limits:
            limits[key] = value
    if not limits:
        out.pop("limits")
    return out


# --- rendering -------------------------------------------------------------------------------


def _labels(bd: dict[str, Any], service: str) -> dict[str, str]:
    metadata = bd["metadata"]
    labels = {
        **(bd.get("spec", {}).get("labels") or {}),
        MANAGED_BY_LABEL: MANAGED_BY,
        DEPLOYMENT_LABEL: metadata["name"],
        SERVICE_LABEL: dns_part(service),
        COMPONENT_LABEL: dns_part(service),
    }
    organization = (metadata.get("labels") or {}).get(ORGANIZATION_LABEL)
    if organization:
        labels[ORGANIZATION_LABEL] = organization
    return labels


def _selector(bd: dict[str, Any], service: str) -> dict[str, str]:
    return {DEPLOYMENT_LABEL: bd["metadata"]["name"], SERVICE_LABEL: dns_part(service)}


def _meta(
    name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any],
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {
        "name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner],
    }  # fmt: skip
    if annotations:
        meta["annotations"] = annotations
    return meta


def service_url(bd: dict[str, Any], service: str) -> str:
    """Where the other services of the deployment reach `service` (its Service, port 3000)."""
    name = child_name(bd["metadata"]["name"], service)
    return f"http://{name}.{bd['metadata']['namespace']}.svc:{PORT}"


def command(bd: dict[str, Any], service: BentoService, *, single: bool) -> list[str]:
    argv = ["python", "-m", "bentoml_cli._internal.start", "start-http-server"]
    if not single or service.name != "apiserver":
        argv += ["--service-name", service.name]
    for dependency in service.dependencies:
        argv += ["--depends", f"{dependency}={service_url(bd, dependency)}"]
    # The port comes from BENTOML_PORT (the env below), so a pod template run elsewhere
    # (podman on the host network) can move it without editing the command.
    return [*argv, "--host", "0.0.0.0", BENTO_PATH]  # noqa: S104 - in a pod


def _probe(path: str, **extra: Any) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **extra}


def pod_template(
    bd: dict[str, Any], bento: dict[str, Any], service: BentoService, options: RenderOptions,
    *, single: bool,
) -> dict[str, Any]:  # fmt: skip
    spec = bd.get("spec") or {}
    entry = _service_entry(spec, service.name)
    pod_meta = _merge_metadata(spec.get("extraPodMetadata"), entry.get("extraPodMetadata"))
    pod_extra = {**(spec.get("extraPodSpec") or {}), **(entry.get("extraPodSpec") or {})}
    metadata = bd["metadata"]
    env = [
        {"name": "PORT", "value": str(PORT)},
        {"name": "BENTOML_PORT", "value": str(PORT)},
        {"name": "EKIBEN_DEPLOYMENT", "value": metadata["name"]},
        {"name": "EKIBEN_DEPLOYMENT_NAMESPACE", "value": metadata["namespace"]},
        {"name": "EKIBEN_SERVICE", "value": service.name},
    ]
    env = _merged_envs(env, spec.get("envs"), entry.get("envs"))
    container: dict[str, Any] = {
        "name": "bento",
        "image": (bento.get("spec") or {}).get("image", ""),
        "command": command(bd, service, single=single),
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "startupProbe": _probe("/livez", periodSeconds=5, failureThreshold=120),
        "livenessProbe": _probe("/livez", periodSeconds=10, failureThreshold=3),
        "readinessProbe": _probe("/readyz", periodSeconds=5, failureThreshold=3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": SHM}],
    }
    env_from = [*(spec.get("envFrom") or []), *(entry.get("envFrom") or [])]
    if env_from:
        container["envFrom"] = env_from
    # The deployment's word for the service, else its own default, else what the bento declares.
    resources = container_resources(
        entry.get("resources") or spec.get("resources") or service.resources
    )
    if resources:
        container["resources"] = resources
    container["volumeMounts"] += list(pod_extra.get("volumeMounts") or [])
    pod_spec: dict[str, Any] = {
        "containers": [container, *copy.deepcopy(pod_extra.get("containers") or [])],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
            *copy.deepcopy(pod_extra.get("volumes") or []),
        ],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "enableServiceLinks": False,
    }
    for key in _POD_FIELDS:
        if key in pod_extra:
            pod_spec[key] = copy.deepcopy(pod_extra[key])
    pull = [
        *((bento.get("spec") or {}).get("imagePullSecrets") or []),
        *(pod_extra.get("imagePullSecrets") or []),
    ]
    if options.image_pull_secret:
        pull.append({"name": options.image_pull_secret})
    names = list(dict.fromkeys(str(p["name"]) for p in pull if p.get("name")))
    if names:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in names]
    bento_tag = str((bento.get("spec") or {}).get("tag", ""))
    repository, _, version = bento_tag.partition(":")
    labels = {
        **(pod_meta.get("labels") or {}),
        **_labels(bd, service.name),
        YATAI_REPOSITORY_LABEL: dns_part(repository) if repository else "",
        YATAI_BENTO_LABEL: dns_part(version) if version else "",
    }
    template_meta: dict[str, Any] = {"labels": {k: v for k, v in labels.items() if v}}
    if pod_meta.get("annotations"):
        template_meta["annotations"] = dict(pod_meta["annotations"])
    return {"metadata": template_meta, "spec": pod_spec}


def _merge_metadata(*parts: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"labels": {}, "annotations": {}}
    for part in parts:
        for key in ("labels", "annotations"):
            out[key].update((part or {}).get(key) or {})
    return out


def _autoscaling(spec: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
    if "autoscaling" in entry:
        return dict(entry["autoscaling"])
    if "replicas" in entry:
        return None  # a fixed count for this service overrides the default autoscaler
    return dict(spec["autoscaling"]) if spec.get("autoscaling") else None


def render(
    bd: dict[str, Any], bento: dict[str, Any], options: RenderOptions, owner: dict[str, Any]
) -> list[Child]:
    """Every child `bd` should have, given its Bento; raises RenderError on a bad spec."""
    spec = bd.get("spec") or {}
    namespace = bd["metadata"]["namespace"]
    services = bento_services(bento)
    known = {s.name for s in services}
    for entry in spec.get("services") or []:
        if entry.get("name") not in known:
            raise RenderError(
                "UnknownService",
                f"spec.services names {entry.get('name')!r}, which bento"
                f" {bento['metadata']['name']} does not have (it has {', '.join(sorted(known))})",
            )
    entry_name = entry_service(bd, bento)
    if entry_name not in known:
        raise RenderError("UnknownService", f"entry service {entry_name!r} is not in the bento")
    single = len(services) == 1
    children: list[Child] = []
    for service in services:
        name = child_name(bd["metadata"]["name"], service.name)
        labels = _labels(bd, service.name)
        entry = _service_entry(spec, service.name)
        autoscaling = _autoscaling(spec, entry)
        annotations = (
            _merge_metadata(spec.get("extraPodMetadata"), entry.get("extraPodMetadata"))
        )["annotations"]
        strategy = STRATEGIES.get(str(annotations.get(STRATEGY_ANNOTATION, "RollingUpdate")))
        deployment_spec: dict[str, Any] = {
            "selector": {"matchLabels": _selector(bd, service.name)},
            "template": pod_template(bd, bento, service, options, single=single),
            "strategy": strategy or STRATEGIES["RollingUpdate"],
            "revisionHistoryLimit": 3,
        }
        if autoscaling is None:
            deployment_spec["replicas"] = int(entry.get("replicas", spec.get("replicas", 1)))
        meta_annotations = dict(spec.get("annotations") or {})
        children.append(Child(DEPLOYMENT, {
            "apiVersion": DEPLOYMENT.api_version, "kind": DEPLOYMENT.kind,
            "metadata": _meta(name, namespace, labels, owner, meta_annotations),
            "spec": deployment_spec,
        }, service.name))  # fmt: skip
        children.append(Child(SERVICE, {
            "apiVersion": SERVICE.api_version, "kind": SERVICE.kind,
            "metadata": _meta(name, namespace, labels, owner, meta_annotations),
            "spec": {
                "type": "ClusterIP",
                "selector": _selector(bd, service.name),
                "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        }, service.name))  # fmt: skip
        if autoscaling is not None:
            hpa_spec: dict[str, Any] = {
                "scaleTargetRef": {
                    "apiVersion": DEPLOYMENT.api_version, "kind": DEPLOYMENT.kind, "name": name,
                },
                "minReplicas": int(autoscaling.get("minReplicas", 1)),
                "maxReplicas": int(autoscaling["maxReplicas"]),
                "metrics": autoscaling.get("metrics") or DEFAULT_METRICS,
            }  # fmt: skip
            if autoscaling.get("behavior"):
                hpa_spec["behavior"] = autoscaling["behavior"]
            children.append(Child(HORIZONTAL_POD_AUTOSCALER, {
                "apiVersion": HORIZONTAL_POD_AUTOSCALER.api_version,
                "kind": HORIZONTAL_POD_AUTOSCALER.kind,
                "metadata": _meta(name, namespace, labels, owner),
                "spec": hpa_spec,
            }, service.name))  # fmt: skip
        if service.name == entry_name:
            ingress = render_ingress(bd, name, labels, options, owner)
            if ingress is not None:
                children.append(Child(INGRESS, ingress, service.name))
    return children


def ingress_host(bd: dict[str, Any], options: RenderOptions) -> str | None:
    ingress = (bd.get("spec") or {}).get("ingress") or {}
    if ingress.get("host"):
        return str(ingress["host"])
    if options.domain_suffix:
        metadata = bd["metadata"]
        return f"{metadata['name']}-{metadata['namespace']}.{options.domain_suffix}"
    return None


def render_ingress(
    bd: dict[str, Any], service_name: str, labels: dict[str, str], options: RenderOptions,
    owner: dict[str, Any],
) -> dict[str, Any] | None:  # fmt: skip
    ingress = (bd.get("spec") or {}).get("ingress") or {}
    if not ingress.get("enabled") or not options.ingress_enabled:
        return None
    host = ingress_host(bd, options)
    path = str(ingress.get("path") or options.ingress_path or "/")
    rule: dict[str, Any] = {
        "http": {
            "paths": [{
                "path": path, "pathType": "Prefix",
                "backend": {"service": {"name": service_name, "port": {"name": "http"}}},
            }]
        }
    }  # fmt: skip
    if host:
        rule["host"] = host
    spec: dict[str, Any] = {"rules": [rule]}
    class_name = ingress.get("ingressClassName") or options.ingress_class
    if class_name:
        spec["ingressClassName"] = class_name
    secret = (ingress.get("tls") or {}).get("secretName") or options.tls_secret_name
    if secret and host:
        spec["tls"] = [{"hosts": [host], "secretName": secret}]
    annotations = {**options.ingress_annotations, **(ingress.get("annotations") or {})}
    metadata = bd["metadata"]
    return {
        "apiVersion": INGRESS.api_version,
        "kind": INGRESS.kind,
        "metadata": _meta(
            service_name, metadata["namespace"], {**labels, **(ingress.get("labels") or {})},
            owner, annotations,
        ),
        "spec": spec,
    }  # fmt: skip


def urls(bd: dict[str, Any], options: RenderOptions) -> list[str]:
    ingress = (bd.get("spec") or {}).get("ingress") or {}
    host = ingress_host(bd, options)
    if not ingress.get("enabled") or not options.ingress_enabled or not host:
        return []
    tls = (ingress.get("tls") or {}).get("secretName") or options.tls_secret_name
    path = str(ingress.get("path") or options.ingress_path or "/")
    return [f"{'https' if tls else 'http'}://{host}{path}"]


# --- observing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the children say: a status in the client's words, and the numbers behind it."""

    status: DeploymentStatus
    reason: str
    message: str
    replicas: int = 0
    ready: int = 0
    services: list[dict[str, Any]] = field(default_factory=list)


_PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CRASHES = {"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
            "RunContainerError"}  # fmt: skip


_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def pod_problem(pods: Iterable[dict[str, Any]]) -> tuple[str, str] | None:
    """The first reason a pod of these is not running: (reason, message), or None."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            text = f"{pod['metadata']['name']}: {reason}: {waiting.get('message', '')}".strip()
            if reason in _PULL_FAILURES:
                return "ImagePullFailed", text
            if reason in _CRASHES:
                return "CrashLoop", text
        for condition in status.get("conditions") or []:
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable"
            ):
                return "Unschedulable", f"{pod['metadata']['name']}: {condition.get('message', '')}"
    return None


def _only_starting(pods: Iterable[dict[str, Any]]) -> bool:
    """Whether every pod that is not ready is one still coming up (pending, or its
    containers being created), not one that ran and stopped answering its readiness probe."""
    for pod in pods:
        status = pod.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        if conditions.get("Ready") == "True" or status.get("phase") == "Pending":
            continue
        states = [c.get("state") or {} for c in status.get("containerStatuses") or []]
        if states and all((s.get("waiting") or {}).get("reason") in _STARTING for s in states):
            continue
        return False
    return True


def observe(
    children: list[Child],
    live_deployments: Mapping[str, dict[str, Any] | None],
    pods: dict[str, list[dict[str, Any]]],
    *,
    settled: bool = False,
) -> Observed:
    """The deployment's status from its Deployments (by name) and their pods (by their
    `ekiben.dev/service` label, `dns_part(service)`).

    `settled`: the BentoDeployment was running at its present generation. A Deployment
    whose newest generation its controller has not observed yet is a rollout in flight,
    unless the deployment was settled and the Deployment's last observed rollout was
    complete: then it stays running until the controller has looked. Most often only the
    replicas changed (an autoscaler, `kubectl scale`), which is no rollout; a changed
    template (a rebuilt image, a hand edit put back) shows as a rollout as soon as the
    controller has observed it, milliseconds later, and its watch event brings it here.

    Replicas being added or removed by an autoscaler keep the reason `Running` (the
    message says `scaling`): a routine scale is no status change to announce.
    """
    replicas = ready = 0
    services = []
    rolling = False
    unhealthy: list[str] = []
    scaling: list[str] = []
    problem: tuple[str, str] | None = None
    for child in children:
        if child.kind is not DEPLOYMENT:
            continue
        live = live_deployments.get(child.name)
        status = (live or {}).get("status") or {}
        wanted = int(((live or {}).get("spec") or {}).get("replicas", 1))
        have = int(status.get("readyReplicas") or 0)
        replicas += wanted
        ready += have
        services.append({
            "name": child.service, "deployment": child.name, "replicas": wanted,
            "readyReplicas": have, "availableReplicas": int(status.get("availableReplicas") or 0),
            "podSelector": child.manifest["spec"]["selector"]["matchLabels"],
        })  # fmt: skip
        if live is None:
            rolling = True
            continue
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing") or {}
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return Observed(
                DeploymentStatus.FAILED, "ProgressDeadlineExceeded",
                f"{child.name}: {progressing.get('message', 'the rollout did not progress')}",
                replicas, ready, services,
            )  # fmt: skip
        current = status.get("observedGeneration") == (live.get("metadata") or {}).get("generation")
        # The rollout is complete when the Deployment controller says its newest
        # ReplicaSet is available; until then replicas coming and going are progress.
        complete = (current or settled) and progressing.get("reason") == "NewReplicaSetAvailable"
        available = (conditions.get("Available") or {}).get("status") == "True"
        service_pods = pods.get(dns_part(child.service), [])
        if not complete:
            rolling = True
        elif not available and not (have and _only_starting(service_pods)):
            unhealthy.append(child.name)
        elif have < wanted:  # the replicas not ready yet are being added (an autoscaler)
            scaling.append(child.name)
        problem = problem or pod_problem(service_pods)
    if problem is not None and problem[0] in ("ImagePullFailed", "CrashLoop"):
        status = DeploymentStatus.UNHEALTHY if ready else DeploymentStatus.FAILED
        return Observed(status, problem[0], problem[1], replicas, ready, services)
    if rolling or (problem is not None):
        reason, message = problem or ("Deploying", f"{ready}/{replicas} replicas ready")
        return Observed(DeploymentStatus.DEPLOYING, reason, message, replicas, ready, services)
    if unhealthy:
        return Observed(
            DeploymentStatus.UNHEALTHY, "ReplicasUnavailable",
            f"not every replica is ready: {', '.join(unhealthy)} ({ready}/{replicas})",
            replicas, ready, services,
        )  # fmt: skip
    if scaling:  # available, with replicas being added (the autoscaler's doing)
        return Observed(
            DeploymentStatus.RUNNING, "Running",
            f"{ready}/{replicas} replicas ready ({', '.join(scaling)} scaling)",
            replicas, ready, services,
        )  # fmt: skip
    return Observed(
        DeploymentStatus.RUNNING, "Running", f"{ready}/{replicas} replicas ready", replicas, ready,
        services,
    )  # fmt: skip
