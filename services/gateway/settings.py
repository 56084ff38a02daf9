"""Gateway settings (env prefix `EKIBEN_GATEWAY_`)."""

from typing import ClassVar

from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings


class GatewaySettings(BackendSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_GATEWAY_")

    http: HttpSettings = HttpSettings(port=8000)
