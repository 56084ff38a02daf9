"""The JSON of the v2 deployment API, key for key what the bentoml 1.4.40 client reads.

The client structures these with cattrs into `bentoml/_internal/cloud/schemas/schemasv2.py`
(deployments) and `schemasv1.py` (clusters, instance types, secrets): a field without a
default there is a key that must be here. A target's `bento` carries its `repository` (the
client's `get` prints `repository.name:version`), a revision and a target are full resources,
`creator` is never null on a deployment.
"""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from services.gateway.artifacts.schemas import BentoWithRepositorySchema
from services.gateway.identity.schemas import OrganizationSchema
from services.gateway.schemas import LabelSchema, ResourceSchema


class CreatorSchema(BaseModel):
    """The client's UserSchema (v1): four keys, all required."""

    name: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""


class ClusterSchema(ResourceSchema):
    resource_type: str = "cluster"
    description: str
    organization_name: str
    creator: CreatorSchema
    is_first: bool | None = None
    # Beyond the client: what the deployer announced.
    kube_namespace: str = ""
    last_seen_at: AwareDatetime | None = None
    first_seen_at: AwareDatetime | None = None
    alive: bool = True


class EnvItemSchema(BaseModel):
    name: str
    value: str


class ScalingSchema(BaseModel):
    min_replicas: int | None = None
    max_replicas: int | None = None
    policy: dict[str, Any] | None = None


class ServiceConfigSchema(BaseModel):
    instance_type: str | None = None
    scaling: ScalingSchema | None = None
    envs: list[EnvItemSchema] | None = None
    deployment_strategy: str | None = None
    extras: dict[str, Any] | None = None
    cold_start_timeout: int | None = None
    config_overrides: dict[str, Any] = Field(default_factory=dict)


class IngressSchema(BaseModel):
    """Beyond the client: the entry service's Ingress."""

    enabled: bool = True
    host: str | None = Field(default=None, description="None: the deployer's default host")
    tls_secret_name: str | None = Field(
        default=None, description="A Secret in the deployment's namespace; None: the default"
    )


class DeploymentConfigSchema(BaseModel):
    access_authorization: bool = False
    envs: list[EnvItemSchema] | None = None
    labels: list[LabelSchema] | None = None
    secrets: list[str] | None = None
    services: dict[str, ServiceConfigSchema] = Field(default_factory=dict)
    canary: dict[str, Any] | None = None
    # Beyond the client (None: the deployer's default Ingress).
    ingress: IngressSchema | None = None


class DeploymentTargetSchema(ResourceSchema):
    resource_type: str = "deployment_target"
    creator: CreatorSchema | None
    config: DeploymentConfigSchema | None
    bento: BentoWithRepositorySchema | None
    kube_resource_uid: str | None = None
    kube_resource_version: str | None = None


class DeploymentRevisionSchema(ResourceSchema):
    resource_type: str = "deployment_revision"
    creator: CreatorSchema | None
    status: str
    targets: list[DeploymentTargetSchema | None]
    # Beyond the client: the revision's number and where it came from.
    number: int = 0
    source: str = "api"


class DeploymentManifestSchema(BaseModel):
    dev: bool = False
    routing: dict[str, Any] | None = None


class DeploymentSchema(ResourceSchema):
    resource_type: str = "deployment"
    status: str
    kube_namespace: str
    creator: CreatorSchema
    cluster: ClusterSchema
    latest_revision: DeploymentRevisionSchema | None
    manifest: DeploymentManifestSchema | None = None
    # Beyond the client: why the status is what it is (an image pull error, a crash loop).
    status_reason: str | None = None
    status_message: str | None = None


class DeploymentFullSchema(DeploymentSchema):
    urls: list[str] = Field(default_factory=list)


class RevisionListSchema(BaseModel):
    items: list[DeploymentRevisionSchema]


class KubeEventSchema(BaseModel):
    """A Kubernetes Event about the deployment's BentoDeployment or one of its objects."""

    type: str = Field(description="Normal or Warning")
    reason: str
    message: str
    count: int
    first_seen: AwareDatetime | None
    last_seen: AwareDatetime | None
    object_kind: str = Field(description="BentoDeployment, Deployment, Pod, ...")
    object_name: str
    source: str = Field(description="The controller or component that reported it")


class KubeEventListSchema(BaseModel):
    items: list[KubeEventSchema] = Field(description="The most recently seen first")


class ResourceItemSchema(BaseModel):
    cpu: str | None = None
    memory: str | None = None
    gpu: str | None = None
    custom: dict[str, str] | None = None


class ResourcesSchema(BaseModel):
    requests: ResourceItemSchema | None = None
    limits: ResourceItemSchema | None = None


class GpuConfigSchema(BaseModel):
    type: str
    memory: str


class InstanceTypeConfigSchema(BaseModel):
    group: str
    resources: ResourcesSchema
    price: str
    node_selectors: dict[str, str] = Field(default_factory=dict)
    gpu_config: GpuConfigSchema | None = None


class InstanceTypeSchema(ResourceSchema):
    resource_type: str = "resource_instance"
    display_name: str
    description: str
    config: InstanceTypeConfigSchema


class ClusterConfigSchema(BaseModel):
    default_deployment_kube_namespace: str


class ClusterFullSchema(ClusterSchema):
    """`GET /api/v1/clusters/{name}`: the cluster with its organization and instance types."""

    organization: OrganizationSchema
    # Never the cluster's credentials: only its deployer holds them.
    kube_config: str = ""
    config: ClusterConfigSchema
    grafana_root_path: str = ""
    resource_instances: list[InstanceTypeSchema]


class SecretItemSchema(BaseModel):
    key: str
    sub_path: str | None = None
    # Never the value: secrets are write-only through the API.
    value: str | None = None


class SecretContentSchema(BaseModel):
    type: str = "env"
    items: list[SecretItemSchema]
    path: str | None = None
    stage: str | None = None


class SecretSchema(ResourceSchema):
    resource_type: str = "secret"
    description: str
    creator: CreatorSchema
    content: SecretContentSchema
    cluster: ClusterSchema


# --- request bodies ---------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EnvBody(_Body):
    name: str
    value: str | None = ""


class LabelBody(_Body):
    key: str
    value: str = ""


class ScalingBody(_Body):
    min_replicas: int | None = None
    max_replicas: int | None = None
    policy: dict[str, Any] | None = None


class ServiceBody(_Body):
    instance_type: str | None = None
    scaling: ScalingBody | None = None
    envs: list[EnvBody | None] | None = None
    deployment_strategy: str | None = None
    extras: dict[str, Any] | None = None
    cold_start_timeout: int | None = None
    config_overrides: dict[str, Any] | None = None


class IngressBody(_Body):
    enabled: bool = True
    host: str | None = Field(default=None, max_length=253)
    tls_secret_name: str | None = Field(default=None, max_length=253)


class UpdateDeploymentBody(_Body):
    """The client's UpdateDeploymentSchema: every key is sent, nulls included (`ingress`,
    which the client does not know, left out: an update keeps the one set)."""

    bento: str = Field(min_length=1, max_length=200)
    access_authorization: bool | None = False
    envs: list[EnvBody] | None = None
    labels: list[LabelBody] | None = None
    secrets: list[str] | None = None
    services: dict[str, ServiceBody] | None = None
    canary: dict[str, Any] | None = None
    ingress: IngressBody | None = None


class CreateDeploymentBody(UpdateDeploymentBody):
    name: str | None = None
    dev: bool | None = False


class RollbackBody(_Body):
    revision: int = Field(ge=1)


class SecretItemBody(_Body):
    key: str
    value: str | None = ""
    sub_path: str | None = None


class SecretContentBody(_Body):
    type: str = "env"
    items: list[SecretItemBody]
    path: str | None = None


class CreateSecretBody(_Body):
    name: str
    description: str | None = ""
    content: SecretContentBody


class UpdateSecretBody(_Body):
    description: str | None = None
    content: SecretContentBody | None = None
