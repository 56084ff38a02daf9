"""Gateway settings (env prefix `EKIBEN_GATEWAY_`)."""

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings


class GatewaySettings(BackendSettings):
    service_name: ClassVar[str] = "gateway"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_GATEWAY_")

    http: HttpSettings = HttpSettings(port=8000)
    # How clients move bento and model bytes: "presigned" straight to S3 (multipart for
    # pushes), or "proxy" streamed through the gateway (for object stores that clients
    # cannot reach).
    transfer_strategy: Literal["presigned", "proxy"] = "presigned"
    # The largest proxied upload accepted (a 413 beyond).
    max_upload_bytes: int = Field(default=64 * 1024**3, ge=1)
    # Where the first start writes the bootstrap admin's API token (mode 0600). Unset: the
    # token is not kept anywhere; create one with `ekiben token create`.
    bootstrap_token_file: Path | None = None
