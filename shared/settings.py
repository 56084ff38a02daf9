"""Typed settings: one class per service, sections for each dependency.

Every service reads its configuration from environment variables with its own prefix and
`__` between nested sections, e.g. `EKIBEN_REGISTRY_POSTGRES__DSN` or
`EKIBEN_GATEWAY_NATS__URL`. Nothing else in the code base reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("registry", "builder", "deployer", "gateway", "dashboard")


class NatsSettings(BaseModel):
    url: str = "nats://127.0.0.1:4222"
    # JetStream's de-duplication window: a re-published outbox row with the same event id
    # inside this window is dropped by the server.
    duplicate_window_seconds: float = Field(default=120.0, gt=0)
    # Consumer redelivery: attempts before a message is dead-lettered, and the waits between.
    max_deliver: int = Field(default=5, ge=1)
    backoff_seconds: list[float] = Field(default_factory=lambda: [0.2, 1.0, 5.0, 15.0])
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    request_timeout_seconds: float = Field(default=10.0, gt=0)


class PostgresSettings(BaseModel):
    dsn: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/ekiben")
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)


class S3Settings(BaseModel):
    endpoint_url: str | None = "http://127.0.0.1:8333"
    # The endpoint clients outside the cluster reach the store at: presigned URLs name this
    # host (a signature covers the host, so it cannot be rewritten afterwards). Unset: the
    # same as endpoint_url.
    public_endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str = "ekiben"
    secret_access_key: SecretStr = SecretStr("ekiben-secret")
    bucket: str = "ekiben"
    presigned_url_expiry_seconds: int = Field(default=3600, ge=60, le=7 * 24 * 3600)


class KubeSettings(BaseModel):
    # None: in-cluster configuration (the service account of the pod).
    kubeconfig: Path | None = None
    namespace: str = "ekiben"


class TelemetrySettings(BaseModel):
    log_level: str = "INFO"
    log_json: bool = True
    # OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces. Off when empty.
    otlp_endpoint: str | None = None
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)


class ServiceSettings(BaseSettings):
    """What every service has: an HTTP listener, logs and traces."""

    service_name: ClassVar[str]
    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    http: HttpSettings = HttpSettings()
    telemetry: TelemetrySettings = TelemetrySettings()


class BackendSettings(ServiceSettings):
    """A service on the bus that owns data: NATS, and its own schema in PostgreSQL."""

    nats: NatsSettings = NatsSettings()
    postgres: PostgresSettings = PostgresSettings()
    # Published outbox rows and processed-event records are kept this long, then pruned.
    outbox_retention_hours: float = Field(default=7 * 24, gt=0)

    @property
    def schema_name(self) -> str:
        return self.service_name
