"""From what the client asks for to a `BentoDeployment` spec, and back (pure functions).

A revision holds both: the client's configuration (`DeploymentConfig`, what `bentoml
deployment get` prints back) and the spec the deployer applies. `spec_from_config` is the
API's way; `config_from_spec` reads a BentoDeployment applied with kubectl (GitOps) back
into the client's words, so it shows in the API like any other revision.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from shared.contracts import deployer as dep
from shared.contracts.builder import bento_resource_name

# Organization secrets are Kubernetes Secrets of this name in the deployment's namespace.
SECRET_PREFIX = "ekiben-secret-"  # noqa: S105 - a name prefix, not a secret
# The service key the client uses for a bento whose manifest names no entry service.
DEFAULT_SERVICE_KEY = "apiserver"
# Per-service overrides the client may pass through `config_overrides`.
OVERRIDE_KEYS = ("resources", "extraPodSpec", "extraPodMetadata", "envFrom", "replicas")


def secret_object_name(secret: str) -> str:
    return f"{SECRET_PREFIX}{secret}"


def service_name_for(key: str, bento: dep.BentoTarget) -> str:
    """The bento service a config key names ("apiserver" is the entry service)."""
    if key == DEFAULT_SERVICE_KEY and key not in bento.services:
        return bento.entry_service or (bento.services[0] if bento.services else key)
    return key


def _resources(instance: dep.InstanceType) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    if instance.cpu:
        requests["cpu"] = instance.cpu
    if instance.memory:
        requests["memory"] = instance.memory
    limits = dict(requests)
    if instance.gpu:
        limits["gpu"] = instance.gpu
        requests["gpu"] = instance.gpu
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    if instance.gpu and instance.gpu_resource_name != "nvidia.com/gpu":
        out["gpuResourceName"] = instance.gpu_resource_name
    return out


def _envs(envs: list[dep.EnvVar]) -> list[dict[str, str]]:
    # The CRD's envs are a map keyed by name: the last value of a repeated name wins.
    by_name = {env.name: env.value for env in envs}
    return [{"name": name, "value": value} for name, value in by_name.items()]


def _ingress(ingress: dep.IngressConfig | None) -> dict[str, Any]:
    if ingress is None:
        return {"enabled": True}
    out: dict[str, Any] = {"enabled": ingress.enabled}
    if ingress.host:
        out["host"] = ingress.host
    if ingress.tls_secret_name:
        out["tls"] = {"secretName": ingress.tls_secret_name}
    return out


def ingress_from_spec(spec: dict[str, Any]) -> dep.IngressConfig:
    """`spec.ingress` in the API's words (the CRD's default: no Ingress)."""
    ingress = spec.get("ingress") or {}
    enabled = bool(ingress.get("enabled", False))
    try:
        return dep.IngressConfig(
            enabled=enabled,
            host=ingress.get("host") or None,
            tls_secret_name=(ingress.get("tls") or {}).get("secretName") or None,
        )
    except ValidationError:  # a TLS Secret name the CRD lets through but the API would not
        return dep.IngressConfig(enabled=enabled)


def spec_from_config(  # noqa: PLR0912 - one branch per optional spec field
    organization: str,
    bento: dep.BentoTarget,
    config: dep.DeploymentConfig,
    instance_types: dict[str, dep.InstanceType],
) -> dict[str, Any]:
    """The BentoDeployment spec of a revision (validated input: see the service)."""
    spec: dict[str, Any] = {
        "bento": bento_resource_name(organization, bento.name, bento.version),
        "ingress": _ingress(config.ingress),
    }
    if bento.entry_service and (not bento.services or bento.entry_service in bento.services):
        spec["entryService"] = bento.entry_service
    if config.labels:
        spec["labels"] = {label.key: label.value for label in config.labels}
    if config.envs:
        spec["envs"] = _envs(config.envs)
    if config.secrets:
        spec["envFrom"] = [{"secretRef": {"name": secret_object_name(s)}} for s in config.secrets]
    services = []
    for key, service in config.services.items():
        entry: dict[str, Any] = {"name": service_name_for(key, bento)}
        scaling = service.scaling
        entry["autoscaling"] = {
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
        }
        overrides = copy.deepcopy(service.config_overrides)
        autoscaling_extra = overrides.pop("autoscaling", None)
        if isinstance(autoscaling_extra, dict):
            for field in ("metrics", "behavior"):
                if field in autoscaling_extra:
                    entry["autoscaling"][field] = autoscaling_extra[field]
        if service.instance_type:
            entry["resources"] = _resources(instance_types[service.instance_type])
        if service.envs:
            entry["envs"] = _envs(service.envs)
        for field in OVERRIDE_KEYS:
            if field in overrides:
                entry[field] = overrides[field]
        if service.deployment_strategy:
            entry.setdefault("extraPodMetadata", {}).setdefault("annotations", {})[
                "ekiben.dev/deployment-strategy"
            ] = service.deployment_strategy
        services.append(entry)
    if services:
        spec["services"] = sorted(services, key=lambda s: s["name"])
    return spec


def config_from_spec(spec: dict[str, Any]) -> dep.DeploymentConfig:
    """The client's view of a spec written by someone else (kubectl, GitOps)."""
    services: dict[str, dep.ServiceConfig] = {}
    for entry in spec.get("services") or []:
        autoscaling = entry.get("autoscaling") or spec.get("autoscaling") or {}
        replicas = entry.get("replicas", spec.get("replicas", 1))
        minimum = int(autoscaling.get("minReplicas", replicas if not autoscaling else 1))
        maximum = int(autoscaling.get("maxReplicas", minimum))
        services[str(entry["name"])] = dep.ServiceConfig(
            scaling=dep.Scaling(min_replicas=minimum, max_replicas=max(maximum, minimum)),
            envs=[
                dep.EnvVar(name=e["name"], value=str(e.get("value", "")))
                for e in entry.get("envs") or []
                if "value" in e
            ],
        )
    secrets = []
    for source in spec.get("envFrom") or []:
        name = str((source.get("secretRef") or {}).get("name", ""))
        if name.startswith(SECRET_PREFIX):
            secrets.append(name.removeprefix(SECRET_PREFIX))
    return dep.DeploymentConfig(
        envs=[
            dep.EnvVar(name=e["name"], value=str(e.get("value", "")))
            for e in spec.get("envs") or []
            if "value" in e
        ],
        labels=[{"key": k, "value": v} for k, v in (spec.get("labels") or {}).items()],
        secrets=secrets,
        services=services,
        ingress=ingress_from_spec(spec),
    )
