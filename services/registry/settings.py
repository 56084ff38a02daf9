"""Registry settings (env prefix `EKIBEN_REGISTRY_`)."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings, S3Settings


class RegistrySettings(BackendSettings):
    service_name: ClassVar[str] = "registry"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_REGISTRY_")

    http: HttpSettings = HttpSettings(port=8001)
    s3: S3Settings = S3Settings()
