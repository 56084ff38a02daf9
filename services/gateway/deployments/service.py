"""The deployments feature's logic: the client's bodies in, the deployer's answers out.

Bodies become deployer commands (`shared.contracts.deployer`), and the deployer's
`Deployment` becomes the client's `DeploymentFullSchema`: one revision is one target whose
`bento` is the registry's bento with its repository (or, when the bento has since been
deleted from the registry, the name and version the revision recorded).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.gateway.artifacts.schemas import (
    BentoRepositorySchema,
    BentoWithRepositorySchema,
)
from services.gateway.artifacts.schemas import (
    CreatorSchema as ArtifactCreator,
)
from services.gateway.deployments.schemas import (
    ClusterConfigSchema,
    ClusterFullSchema,
    ClusterSchema,
    CreatorSchema,
    DeploymentConfigSchema,
    DeploymentFullSchema,
    DeploymentRevisionSchema,
    DeploymentTargetSchema,
    EnvItemSchema,
    GpuConfigSchema,
    IngressSchema,
    InstanceTypeConfigSchema,
    InstanceTypeSchema,
    KubeEventSchema,
    ResourceItemSchema,
    ResourcesSchema,
    ScalingSchema,
    SecretContentSchema,
    SecretItemSchema,
    SecretSchema,
    ServiceConfigSchema,
    UpdateDeploymentBody,
)
from services.gateway.identity.schemas import OrganizationSchema
from services.gateway.schemas import LabelSchema
from shared.bus.rpc import invalid_input
from shared.contracts import deployer as dep
from shared.contracts.registry import Label
from shared.errors import InvalidInput


def split_tag(tag: str) -> tuple[str, str]:
    name, sep, version = tag.partition(":")
    if not sep or not name or not version:
        raise InvalidInput(f"bento {tag!r}: expected NAME:VERSION")
    return name, version


def config_from_body(body: UpdateDeploymentBody) -> dep.DeploymentConfig:
    """The client's configuration keys as a deployer config (a 422 names the bad field)."""
    services: dict[str, Any] = {}
    for key, service in (body.services or {}).items():
        entry: dict[str, Any] = {
            "instance_type": service.instance_type or None,
            "envs": [
                {"name": e.name, "value": e.value or ""}
                for e in service.envs or []
                if e is not None
            ],
            "deployment_strategy": service.deployment_strategy or None,
            "config_overrides": service.config_overrides or {},
        }
        if service.scaling is not None:
            scaling: dict[str, int] = {}
            if service.scaling.min_replicas is not None:
                scaling["min_replicas"] = service.scaling.min_replicas
            if service.scaling.max_replicas is not None:
                scaling["max_replicas"] = service.scaling.max_replicas
            if "min_replicas" in scaling and "max_replicas" not in scaling:
                scaling["max_replicas"] = max(scaling["min_replicas"], 1)
            entry["scaling"] = scaling
            policy = service.scaling.policy or {}
            if policy.get("metrics") or policy.get("behavior"):
                entry["config_overrides"].setdefault("autoscaling", {}).update(
                    {k: policy[k] for k in ("metrics", "behavior") if policy.get(k)}
                )
        services[key] = entry
    fields = {
        "access_authorization": bool(body.access_authorization),
        "envs": [{"name": e.name, "value": e.value or ""} for e in body.envs or []],
        "labels": [{"key": label.key, "value": label.value} for label in body.labels or []],
        "secrets": list(body.secrets or []),
        "services": services,
    }
    if body.ingress is not None:
        fields["ingress"] = {
            "enabled": body.ingress.enabled,
            "host": (body.ingress.host or "").strip() or None,
            "tls_secret_name": (body.ingress.tls_secret_name or "").strip() or None,
        }
    try:
        return dep.DeploymentConfig.model_validate(fields)
    except ValidationError as exc:
        raise invalid_input(exc) from exc


def _creator(name: str | None) -> CreatorSchema:
    return CreatorSchema(name=name or "")


def cluster_schema(cluster: dep.Cluster | None, name: str, organization: str) -> ClusterSchema:
    now = datetime.now(UTC)
    if cluster is None:  # the deployment's cluster has not announced itself (yet, or any more)
        return ClusterSchema(
            uid=f"cluster-{name}", created_at=now, updated_at=None, deleted_at=None, name=name,
            description="", organization_name=organization, creator=_creator("ekiben"),
            is_first=True, alive=False,
        )  # fmt: skip
    return ClusterSchema(
        uid=f"cluster-{cluster.name}",
        created_at=cluster.first_seen_at,
        updated_at=cluster.last_seen_at,
        deleted_at=None,
        name=cluster.name,
        description=cluster.description,
        organization_name=organization,
        creator=_creator("ekiben"),
        # True keeps the client's admin links short (no ?cluster=&namespace=).
        is_first=True,
        kube_namespace=cluster.namespace,
        first_seen_at=cluster.first_seen_at,
        last_seen_at=cluster.last_seen_at,
        alive=cluster.alive(now),
    )


def synthetic_bento(revision: dep.Revision) -> BentoWithRepositorySchema:
    """The bento as the revision recorded it, when the registry no longer has it."""
    bento = revision.bento
    creator = ArtifactCreator(name=revision.created_by or "")
    repository = BentoRepositorySchema(
        uid=f"bento-repository-{bento.name}", created_at=revision.created_at, updated_at=None,
        deleted_at=None, name=bento.name, labels=[], description="", creator=creator,
        latest_bento=None, n_bentos=None,
    )  # fmt: skip
    return BentoWithRepositorySchema(
        uid=f"bento-{bento.name}-{bento.version}", created_at=revision.created_at,
        updated_at=None, deleted_at=None, name=bento.version, labels=[], description="",
        version=bento.version, image_build_status="", upload_status="success",
        upload_finished_reason="", presigned_upload_url="", presigned_download_url="",
        transmission_strategy="proxy", upload_id=None, upload_started_at=None,
        upload_finished_at=None, build_at=revision.created_at, size_bytes=0, creator=creator,
        manifest={"entry_service": bento.entry_service or "", "services": [
            {"name": s} for s in bento.services
        ], "envs": []},
        repository=repository,
    )  # fmt: skip


def config_schema(config: dep.DeploymentConfig) -> DeploymentConfigSchema:
    services = {}
    for key, service in config.services.items():
        services[key] = ServiceConfigSchema(
            instance_type=service.instance_type,
            scaling=ScalingSchema(
                min_replicas=service.scaling.min_replicas,
                max_replicas=service.scaling.max_replicas,
            ),
            envs=[EnvItemSchema(name=e.name, value=e.value) for e in service.envs] or None,
            deployment_strategy=service.deployment_strategy,
            config_overrides=service.config_overrides,
        )
    return DeploymentConfigSchema(
        access_authorization=config.access_authorization,
        envs=[EnvItemSchema(name=e.name, value=e.value) for e in config.envs],
        labels=[LabelSchema(key=label.key, value=label.value) for label in config.labels],
        secrets=list(config.secrets),
        services=services,
        ingress=IngressSchema(**config.ingress.model_dump()) if config.ingress else None,
    )


def revision_schema(
    deployment: dep.Deployment, revision: dep.Revision, bento: BentoWithRepositorySchema | None
) -> DeploymentRevisionSchema:
    creator = _creator(revision.created_by)
    target = DeploymentTargetSchema(
        uid=f"{revision.uid}-main", created_at=revision.created_at, updated_at=None,
        deleted_at=None, name="main", labels=[], creator=creator,
        config=config_schema(revision.config), bento=bento or synthetic_bento(revision),
        kube_resource_uid=None, kube_resource_version=None,
    )  # fmt: skip
    active = revision.number == deployment.latest_revision.number
    return DeploymentRevisionSchema(
        uid=revision.uid, created_at=revision.created_at, updated_at=None, deleted_at=None,
        name=str(revision.number), labels=[], creator=creator,
        status="active" if active else "inactive", targets=[target],
        number=revision.number, source=revision.source,
    )  # fmt: skip


def deployment_schema(
    deployment: dep.Deployment,
    cluster: dep.Cluster | None,
    bento: BentoWithRepositorySchema | None,
) -> DeploymentFullSchema:
    return DeploymentFullSchema(
        uid=deployment.uid,
        created_at=deployment.created_at,
        updated_at=deployment.updated_at,
        deleted_at=None,
        name=deployment.name,
        labels=[LabelSchema(key=label.key, value=label.value) for label in deployment.labels],
        status=deployment.status.value,
        kube_namespace=deployment.namespace,
        creator=_creator(deployment.created_by),
        cluster=cluster_schema(cluster, deployment.cluster, deployment.organization),
        latest_revision=revision_schema(deployment, deployment.latest_revision, bento),
        manifest=None,
        urls=deployment.urls,
        status_reason=deployment.status_reason,
        status_message=deployment.status_message,
    )


def kube_event_schema(event: dep.KubeEvent) -> KubeEventSchema:
    return KubeEventSchema(**event.model_dump())


def cluster_full_schema(
    cluster: dep.Cluster, organization: OrganizationSchema
) -> ClusterFullSchema:
    summary = cluster_schema(cluster, cluster.name, organization.name)
    return ClusterFullSchema(
        **summary.model_dump(),
        organization=organization,
        config=ClusterConfigSchema(default_deployment_kube_namespace=cluster.namespace),
        resource_instances=[instance_type_schema(t, cluster.name) for t in cluster.instance_types],
    )


def instance_type_schema(item: dep.InstanceType, cluster: str) -> InstanceTypeSchema:
    now = datetime(2026, 1, 1, tzinfo=UTC)  # instance types come from settings: no history
    resources = ResourceItemSchema(
        cpu=item.cpu, memory=item.memory, gpu=str(item.gpu) if item.gpu else None
    )
    return InstanceTypeSchema(
        uid=f"{cluster}-{item.name}", created_at=now, updated_at=None, deleted_at=None,
        name=item.name, labels=[], display_name=item.display_name or item.name,
        description=item.description,
        config=InstanceTypeConfigSchema(
            group=item.group, resources=ResourcesSchema(requests=resources, limits=resources),
            price=item.price, node_selectors=item.node_selector,
            gpu_config=GpuConfigSchema(type=item.gpu_type or "", memory="")
            if item.gpu else None,
        ),
    )  # fmt: skip


def secret_schema(secret: dep.OrgSecret, cluster: ClusterSchema) -> SecretSchema:
    return SecretSchema(
        uid=secret.uid, created_at=secret.created_at, updated_at=secret.updated_at,
        deleted_at=None, name=secret.name, labels=[], description=secret.description,
        creator=_creator(secret.created_by),
        content=SecretContentSchema(items=[SecretItemSchema(key=k) for k in secret.keys]),
        cluster=cluster,
    )  # fmt: skip


def label_filters(q: str | None) -> list[Label]:
    """`label:k=v` terms of the client's `q` (`bentoml deployment list --label k=v`)."""
    labels = []
    for term in (q or "").split():
        key, sep, value = term.partition(":")
        if sep and key == "label":
            label_key, _, label_value = value.partition("=")
            if not label_key:
                raise InvalidInput(f"q: {term!r} names no label")
            labels.append(Label(key=label_key, value=label_value))
        elif sep:
            raise InvalidInput(f"q: unknown filter {key!r} (deployments filter by label:k=v)")
    return labels


def search_words(q: str | None, search: str | None) -> str | None:
    words = [w for w in (q or "").split() if ":" not in w]
    if search:
        words.insert(0, search)
    return " ".join(words) or None
