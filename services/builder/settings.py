"""Builder settings (env prefix `EKIBEN_BUILDER_`)."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings, KubeSettings


class BuilderSettings(BackendSettings):
    service_name: ClassVar[str] = "builder"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_BUILDER_")

    http: HttpSettings = HttpSettings(port=8002)
    kube: KubeSettings = KubeSettings()
    # Where built images go, e.g. registry.example.com/ekiben.
    image_repository: str = "127.0.0.1:5000/ekiben"
