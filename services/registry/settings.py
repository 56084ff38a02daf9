"""Registry settings (env prefix `EKIBEN_REGISTRY_`)."""

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings, S3Settings


class RegistrySettings(BackendSettings):
    service_name: ClassVar[str] = "registry"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_REGISTRY_")

    http: HttpSettings = HttpSettings(port=8001)
    s3: S3Settings = S3Settings()
    # An upload with no finish by the time the last URL handed out for it expires
    # (`s3.presigned_url_expiry_seconds` after it was signed) plus this grace is abandoned:
    # the version is marked failed and its partial object and multipart upload removed.
    upload_grace_seconds: int = Field(default=300, ge=0)
    # How often the background task retries object-store deletions and sweeps abandoned
    # uploads (it also wakes at once after every commit that queues a deletion).
    janitor_poll_seconds: float = Field(default=30.0, gt=0)
