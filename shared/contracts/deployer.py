"""Commands the deployer answers: deployments, their revisions, clusters, organization secrets.

The gateway turns the client's v2 deployment API (`bentoml deployment ...`) into these. A
deployment belongs to an organization and runs on one cluster, in one namespace; each change
of what it runs is an immutable, numbered **revision** (the bento plus the per-service
configuration, and the `BentoDeployment` spec rendered from them). Rollback makes a new
revision that copies an earlier one.

Clusters are not registered: a deployer runs for one cluster (its settings name it) and
announces itself on NATS with a heartbeat (`CLUSTER_BUCKET`, a JetStream key-value bucket
keyed by cluster name). What announced itself is what `list_clusters` answers; no kubeconfig
or cluster credential is ever stored.

Every validation a create or an update needs (cluster, instance types, scaling bounds, env
names, secrets, the name) happens in the deployer's service in one place, before anything
is written, so a refused request leaves nothing behind.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from shared.contracts.command import Command
from shared.contracts.registry import Label, Page, Scope, TagPart
from shared.contracts.vocabulary import DeploymentStatus
from shared.text import StorableText

SERVICE = "deployer"

# The key-value bucket deployers announce their cluster in (key: the cluster name).
CLUSTER_BUCKET = "ekiben-clusters"

# A deployment's name is the BentoDeployment's name: a DNS label short enough to prefix the
# names of its children (the CRD allows 40).
DEPLOYMENT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_DEPLOYMENT_NAME = 40
# A cluster's name is the key it is announced under, and a label value: a DNS label.
CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_CLUSTER_NAME = 63
# What Kubernetes accepts as an environment variable name (corev1.EnvVar, the CRD's pattern).
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# Organization secrets become Kubernetes Secrets: their names are DNS subdomains.
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_SECRET_NAME = 40
# An Ingress host, as the CRD's `spec.ingress.host` accepts it (a wildcard first label too),
# and a TLS Secret's name (a DNS subdomain): checked here so a bad one is a 422, not a
# BentoDeployment the API server refuses later.
INGRESS_HOST = re.compile(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
MAX_DNS_NAME = 253

# Labels on every BentoDeployment the API writes and on every child the deployer renders.
ORGANIZATION_LABEL = "ekiben.dev/organization"
DEPLOYMENT_LABEL = "ekiben.dev/deployment"
SERVICE_LABEL = "ekiben.dev/service"
REVISION_ANNOTATION = "ekiben.dev/revision"


def _rule(
    pattern: re.Pattern[str], what: str, *, max_length: int | None = None, shown: int | None = None
) -> Callable[[str], str]:
    """One naming rule: `pattern` and a length limit, refused as "VALUE is not a valid WHAT"."""

    def check(value: str) -> str:
        if (max_length is not None and len(value) > max_length) or not pattern.match(value):
            raise ValueError(f"{value[:shown]!r} is not a valid {what}")
        return value

    return check


_DNS_LABEL_RULE = (
    "lowercase letters, digits and '-', starting and ending with a letter or digit, at most"
)
DeploymentName = Annotated[str, AfterValidator(_rule(
    DEPLOYMENT_NAME, f"deployment name: {_DNS_LABEL_RULE} {MAX_DEPLOYMENT_NAME} characters",
    max_length=MAX_DEPLOYMENT_NAME,
))]  # fmt: skip
_cluster_rule = _rule(
    CLUSTER_NAME, f"cluster name: {_DNS_LABEL_RULE} {MAX_CLUSTER_NAME} characters",
    max_length=MAX_CLUSTER_NAME,
)  # fmt: skip
ClusterName = Annotated[str, AfterValidator(_cluster_rule)]
EnvName = Annotated[str, AfterValidator(_rule(
    ENV_NAME,
    "environment variable name: letters, digits, '_', '-' and '.', not starting with a digit",
))]  # fmt: skip
SecretName = Annotated[str, AfterValidator(_rule(
    SECRET_NAME,
    f"secret name: lowercase letters, digits and '-', at most {MAX_SECRET_NAME} characters",
    max_length=MAX_SECRET_NAME,
))]  # fmt: skip
IngressHost = Annotated[str, AfterValidator(_rule(
    INGRESS_HOST,
    "ingress host: lowercase DNS labels separated by dots (for example iris.example.com,"
    " or *.example.com)",
    max_length=MAX_DNS_NAME, shown=80,
))]  # fmt: skip
TlsSecretName = Annotated[str, AfterValidator(_rule(
    DNS_SUBDOMAIN,
    "TLS secret name: a Kubernetes Secret's name, lowercase letters, digits, '-' and '.'",
    max_length=MAX_DNS_NAME, shown=80,
))]  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Command(StorableText, _Model):
    """A command's request: strict, and only text PostgreSQL can store."""


# --- configuration (what a revision holds) ------------------------------------------------


class EnvVar(_Model):
    name: EnvName
    value: str = Field(default="", max_length=32 * 1024)


class Scaling(_Model):
    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=1, ge=0, le=1000)


class ServiceConfig(_Model):
    """One BentoML service's settings, as the client's `services.<name>` carries them."""

    instance_type: str | None = Field(default=None, max_length=128)
    scaling: Scaling = Field(default_factory=Scaling)
    envs: list[EnvVar] = Field(default_factory=list, max_length=256)
    deployment_strategy: (
        Literal["RollingUpdate", "Recreate", "RampedSlowRollout", "BestEffortControlledRollout"]
        | None
    ) = None
    # Passed through to the BentoDeployment's per-service entry (resources, extraPodSpec,
    # extraPodMetadata, autoscaling metrics/behavior), for what the client has no flag for.
    config_overrides: dict[str, Any] = Field(default_factory=dict)


class IngressConfig(_Model):
    """The entry service's Ingress (the BentoDeployment's `spec.ingress`), beyond the client.

    `host` None: the deployer's `<name>-<namespace>.<domain suffix>`; `tls_secret_name`
    None: the deployer's default TLS Secret, if it has one.
    """

    enabled: bool = True
    host: IngressHost | None = None
    tls_secret_name: TlsSecretName | None = None

    @model_validator(mode="after")
    def _tls_needs_ingress(self) -> IngressConfig:
        if self.tls_secret_name and not self.enabled:
            raise ValueError("ingress: a TLS secret needs the ingress enabled")
        return self


class DeploymentConfig(_Model):
    """What the client's `config` holds (`targets[0].config` in its answers)."""

    access_authorization: bool = False
    envs: list[EnvVar] = Field(default_factory=list, max_length=256)
    labels: list[Label] = Field(default_factory=list, max_length=64)
    secrets: list[SecretName] = Field(default_factory=list, max_length=64)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    # None: the deployer's default Ingress on a create; on an update (the bentoml client
    # knows no ingress), what the previous revision had.
    ingress: IngressConfig | None = None


class BentoTarget(_Model):
    """The bento a revision runs, as the registry knows it (the gateway looked it up)."""

    name: TagPart
    version: TagPart
    # From the bento's manifest: every service, and the one that takes outside traffic.
    services: list[str] = Field(default_factory=list, max_length=64)
    entry_service: str | None = None

    @property
    def tag(self) -> str:
        return f"{self.name}:{self.version}"


# --- what the deployer returns ------------------------------------------------------------


class Revision(_Model):
    uid: str
    number: int
    bento: BentoTarget
    config: DeploymentConfig
    spec: dict[str, Any]
    # "api": written through the API; "cluster": read from a BentoDeployment applied on
    # the cluster (GitOps); "rollback": a copy of an earlier revision.
    source: Literal["api", "cluster", "rollback"]
    created_by: str | None
    created_at: datetime


class Deployment(_Model):
    uid: str
    organization: str
    name: str
    cluster: str
    namespace: str
    created_by: str | None
    status: DeploymentStatus
    status_reason: str | None = None
    status_message: str | None = None
    labels: list[Label]
    urls: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime | None
    status_updated_at: datetime | None = None
    latest_revision: Revision


class InstanceType(_Model):
    """A size a cluster offers (`--instance-type`), from its deployer's settings."""

    name: str = Field(min_length=1, max_length=128)
    display_name: str = ""
    description: str = ""
    group: str = "cpu"
    price: str = ""
    cpu: str | None = None
    memory: str | None = None
    gpu: int = Field(default=0, ge=0)
    gpu_type: str | None = None
    gpu_resource_name: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)


class Cluster(_Model):
    """A cluster as its deployer last announced it."""

    name: str
    description: str = ""
    namespace: str
    instance_types: list[InstanceType] = Field(default_factory=list)
    deployer: str = Field(default="", description="The announcing deployer's identity")
    first_seen_at: datetime
    last_seen_at: datetime
    heartbeat_seconds: float = 10.0

    def alive(self, now: datetime, *, missed: int = 3) -> bool:
        """Whether a heartbeat came within `missed` periods."""
        return (now - self.last_seen_at).total_seconds() <= self.heartbeat_seconds * missed


class SecretItem(_Model):
    key: EnvName
    value: str = Field(default="", max_length=64 * 1024)


class OrgSecret(_Model):
    """An organization secret: keys only leave the deployer, never values."""

    uid: str
    organization: str
    name: str
    description: str
    keys: list[str]
    created_by: str | None
    created_at: datetime
    updated_at: datetime | None


# --- commands -----------------------------------------------------------------------------


class CreateDeployment(_Command):
    scope: Scope
    cluster: ClusterName | None = None  # None: the one cluster, or the one named "default"
    name: DeploymentName | None = None  # None: the deployer picks one from the bento's name
    bento: BentoTarget
    config: DeploymentConfig = Field(default_factory=DeploymentConfig)


class UpdateDeployment(_Command):
    scope: Scope
    cluster: ClusterName | None = None
    name: str
    bento: BentoTarget
    config: DeploymentConfig = Field(default_factory=DeploymentConfig)


class DeploymentRef(_Command):
    scope: Scope
    cluster: ClusterName | None = None
    name: str = Field(min_length=1, max_length=253)


class Rollback(DeploymentRef):
    revision: int = Field(ge=1)


class ListDeployments(_Command):
    scope: Scope
    cluster: ClusterName | None = None
    labels: list[Label] = Field(default_factory=list)
    search: str | None = Field(default=None, max_length=255)
    statuses: list[DeploymentStatus] = Field(default_factory=list)
    creator: str | None = None
    start: int = Field(default=0, ge=0)
    count: int = Field(default=20, ge=1, le=1000)


class ListRevisions(DeploymentRef):
    pass


class ListClusters(_Command):
    scope: Scope


class ClusterRef(_Command):
    scope: Scope
    cluster: ClusterName | None = None


class ListDeploymentEvents(_Command):
    """The Kubernetes Events of a deployment's BentoDeployment and of what it made.

    Sent to `deployment_events_command(cluster)`: only a deployer of that cluster can read
    its API server, so unlike the other commands this one has a subject per cluster.
    """

    scope: Scope
    cluster: ClusterName
    name: str = Field(min_length=1, max_length=253)
    limit: int = Field(default=100, ge=1, le=1000)


class KubeEvent(_Model):
    """One core/v1 Event, as `kubectl describe` shows it."""

    type: str = Field(description="Normal or Warning")
    reason: str
    message: str
    count: int = Field(ge=1)
    first_seen: datetime | None
    last_seen: datetime | None
    object_kind: str
    object_name: str
    source: str = Field(description="The controller or component that reported it")


class KubeEvents(_Model):
    items: list[KubeEvent]


class InstanceTypes(_Model):
    cluster: str
    items: list[InstanceType]


class Clusters(_Model):
    items: list[Cluster]


class Revisions(_Model):
    items: list[Revision]


class CreateSecret(_Command):
    scope: Scope
    name: SecretName
    description: str = Field(default="", max_length=4096)
    items: list[SecretItem] = Field(min_length=1, max_length=256)


class UpdateSecret(_Command):
    scope: Scope
    name: SecretName
    description: str | None = Field(default=None, max_length=4096)
    items: list[SecretItem] | None = Field(default=None, min_length=1, max_length=256)


class SecretRef(_Command):
    scope: Scope
    name: str = Field(min_length=1, max_length=253)


class ListSecrets(_Command):
    scope: Scope
    search: str | None = Field(default=None, max_length=255)
    start: int = Field(default=0, ge=0)
    count: int = Field(default=20, ge=1, le=1000)


CREATE_DEPLOYMENT = Command(SERVICE, "deployment.create", CreateDeployment, Deployment)
UPDATE_DEPLOYMENT = Command(SERVICE, "deployment.update", UpdateDeployment, Deployment)
GET_DEPLOYMENT = Command(SERVICE, "deployment.get", DeploymentRef, Deployment)
LIST_DEPLOYMENTS = Command(SERVICE, "deployment.list", ListDeployments, Page[Deployment])
TERMINATE_DEPLOYMENT = Command(SERVICE, "deployment.terminate", DeploymentRef, Deployment)
DELETE_DEPLOYMENT = Command(SERVICE, "deployment.delete", DeploymentRef, Deployment)
ROLLBACK_DEPLOYMENT = Command(SERVICE, "deployment.rollback", Rollback, Deployment)
LIST_REVISIONS = Command(SERVICE, "revision.list", ListRevisions, Revisions)
LIST_CLUSTERS = Command(SERVICE, "cluster.list", ListClusters, Clusters)
LIST_INSTANCE_TYPES = Command(SERVICE, "instance_type.list", ClusterRef, InstanceTypes)
CREATE_SECRET = Command(SERVICE, "secret.create", CreateSecret, OrgSecret)
UPDATE_SECRET = Command(SERVICE, "secret.update", UpdateSecret, OrgSecret)
GET_SECRET = Command(SERVICE, "secret.get", SecretRef, OrgSecret)
LIST_SECRETS = Command(SERVICE, "secret.list", ListSecrets, Page[OrgSecret])
DELETE_SECRET = Command(SERVICE, "secret.delete", SecretRef, OrgSecret)


def deployment_events_command(cluster: str) -> Command[ListDeploymentEvents, KubeEvents]:
    """`event.list.<cluster>`: answered by that cluster's deployers only (not in COMMANDS,
    which every deployer answers)."""
    return Command(
        SERVICE, f"event.list.{_cluster_rule(cluster)}", ListDeploymentEvents, KubeEvents
    )


COMMANDS: tuple[Command[Any, Any], ...] = (
    CREATE_DEPLOYMENT,
    UPDATE_DEPLOYMENT,
    GET_DEPLOYMENT,
    LIST_DEPLOYMENTS,
    TERMINATE_DEPLOYMENT,
    DELETE_DEPLOYMENT,
    ROLLBACK_DEPLOYMENT,
    LIST_REVISIONS,
    LIST_CLUSTERS,
    LIST_INSTANCE_TYPES,
    CREATE_SECRET,
    UPDATE_SECRET,
    GET_SECRET,
    LIST_SECRETS,
    DELETE_SECRET,
)
