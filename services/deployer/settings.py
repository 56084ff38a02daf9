"""Deployer settings (env prefix `EKIBEN_DEPLOYER_`, `__` between nested sections).

A deployer runs for exactly one cluster, `cluster_name`: it announces that cluster (with
its instance types and default namespace) on NATS every `heartbeat_seconds`, and acts only
on deployments of that cluster. The cluster's credentials are the deployer's own (its
kubeconfig or its pod's service account); nothing about them is ever stored elsewhere.

- `kube.watch_namespaces` (`EKIBEN_DEPLOYER_KUBE__WATCH_NAMESPACES`, JSON): the namespaces
  whose BentoDeployments it reconciles; empty: `kube.namespace` only; `["*"]`: all.
- `namespace`: where deployments made through the API go; unset: the first watched one.
- `image_pull_secret` (`EKIBEN_DEPLOYER_IMAGE_PULL_SECRET`): added to every bento pod.
- `ingress`: the class, domain suffix and TLS of the Ingress of each entry service.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from shared.contracts.deployer import ClusterName, InstanceType
from shared.settings import BackendSettings, HttpSettings, KubeSettings


class DeployerKubeSettings(KubeSettings):
    watch_namespaces: list[str] = Field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        """The namespaces to watch; [""] means every namespace."""
        if "*" in self.watch_namespaces:
            return [""]
        return list(self.watch_namespaces) or [self.namespace]


class IngressSettings(BaseModel):
    enabled: bool = True
    class_name: str | None = None
    # Hosts are <deployment>-<namespace>.<domain_suffix>; without a suffix an Ingress gets
    # no host (it matches every host of its class).
    domain_suffix: str | None = None
    path: str = "/"
    tls_secret_name: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


def _default_instance_types() -> list[InstanceType]:
    return [
        InstanceType(
            name="cpu.small", display_name="Small", description="0.5 CPU, 1 GiB",
            cpu="500m", memory="1Gi",
        ),
        InstanceType(
            name="cpu.medium", display_name="Medium", description="1 CPU, 2 GiB",
            cpu="1", memory="2Gi",
        ),
        InstanceType(
            name="cpu.large", display_name="Large", description="2 CPU, 4 GiB",
            cpu="2", memory="4Gi",
        ),
        InstanceType(
            name="gpu.t4.1", display_name="1 x T4", description="4 CPU, 16 GiB, 1 NVIDIA T4",
            group="gpu", cpu="4", memory="16Gi", gpu=1, gpu_type="nvidia-tesla-t4",
        ),
    ]  # fmt: skip


class DeployerSettings(BackendSettings):
    service_name: ClassVar[str] = "deployer"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_DEPLOYER_")

    http: HttpSettings = HttpSettings(port=8003)
    kube: DeployerKubeSettings = DeployerKubeSettings()
    # Whether this process runs the controller (off: only commands and the API side).
    controller_enabled: bool = True
    cluster_name: ClusterName = "default"
    cluster_description: str = ""
    namespace: str | None = None
    image_pull_secret: str | None = None
    instance_types: list[InstanceType] = Field(default_factory=_default_instance_types)
    # The instance type a service gets when the client names none.
    default_instance_type: str | None = None
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    ingress: IngressSettings = IngressSettings()
    # BentoDeployments applied with kubectl name no organization: they join this one.
    default_organization: str = "default"
    workers: int = Field(default=4, ge=1)
    resync_seconds: float = Field(default=600.0, gt=0)
    lease_name: str = "ekiben-deployer"
    field_manager: str = "ekiben-deployer"
    # Pod identity for the Lease (the chart sets POD_NAME through the downward API).
    identity: str | None = None

    @property
    def deploy_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        first = self.kube.namespaces[0]
        return first or self.kube.namespace
