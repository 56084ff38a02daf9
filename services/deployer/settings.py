"""Deployer settings (env prefix `EKIBEN_DEPLOYER_`)."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings, KubeSettings


class DeployerSettings(BackendSettings):
    service_name: ClassVar[str] = "deployer"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_DEPLOYER_")

    http: HttpSettings = HttpSettings(port=8003)
    kube: KubeSettings = KubeSettings()
