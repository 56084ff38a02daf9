"""Gateway settings (env prefix `EKIBEN_GATEWAY_`)."""

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import BackendSettings, HttpSettings


class EventStreamSettings(BaseModel):
    """`GET /api/ekiben/v1/events` (server-sent events); `EKIBEN_GATEWAY_EVENTS__*`."""

    # Recent events each gateway process keeps in memory for its live readers; a reader
    # further back reads JetStream until it is within this window.
    buffer_events: int = Field(default=10_000, ge=16)
    # A live reader more than this many stream positions behind the newest event is sent
    # `event: overflow` and closed; it resumes with Last-Event-ID.
    max_lag_events: int = Field(default=2_000, ge=1)
    # A comment line this often keeps proxies from closing an idle stream.
    keepalive_seconds: float = Field(default=15.0, gt=0)
    # The furthest back `?replay=` may reach.
    max_replay_seconds: float = Field(default=30 * 24 * 3600.0, gt=0)
    # Connected readers at most per process (a 503 beyond).
    max_readers: int = Field(default=1_000, ge=1)


class WebhookSettings(BaseModel):
    """Webhook delivery; `EKIBEN_GATEWAY_WEBHOOKS__*`."""

    # Networks that webhook URLs may reach although they are not public (loopback, private,
    # link-local, ...), as a JSON list of CIDRs: `["10.20.0.0/16"]`. Empty: public only.
    allowed_networks: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    # Encrypts signing secrets at rest (any string; a key is derived from it). Unset: a key
    # is generated once and kept in the database, which still never returns a secret.
    secret_key: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    # What is kept of a receiver's answer (the rest is not read).
    max_response_bytes: int = Field(default=4096, ge=0)
    # Attempts per delivery; between them an exponential backoff with jitter.
    max_attempts: int = Field(default=10, ge=1)
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_seconds: float = Field(default=3600.0, gt=0)
    # An endpoint is disabled (with the reason, until an update re-enables it) once this
    # many deliveries in a row have failed every one of their attempts.
    disable_after_failures: int = Field(default=5, ge=1)
    # Deliveries in flight at once per process, and claimed per database round trip.
    concurrency: int = Field(default=64, ge=1)
    # A claimed delivery whose worker died is claimed again after this long.
    lease_seconds: float = Field(default=60.0, gt=0)
    # Finished deliveries and their attempts are kept this long.
    retention_days: float = Field(default=30.0, gt=0)
    # A poll in case a wake-up notification was missed.
    safety_poll_seconds: float = Field(default=5.0, gt=0)


class SessionSettings(BaseModel):
    """Signing in with a password or a token (the dashboard); `EKIBEN_GATEWAY_SESSIONS__*`."""

    # A session ends this long after sign-in, or after this long unused, whichever first.
    lifetime_hours: float = Field(default=12.0, gt=0)
    idle_minutes: float = Field(default=120.0, gt=0)
    # Failed password sign-ins for one user name within the window, after which further
    # attempts (even right ones) get a 429 until the oldest of them leaves the window.
    max_failures: int = Field(default=5, ge=1)
    failure_window_seconds: float = Field(default=900.0, gt=0)
    # The first admin's password, applied at a start that finds them without one. Unset: a
    # one-time setup URL is logged and written to `setup_url_file` instead.
    initial_admin_password: SecretStr | None = None
    setup_code_hours: float = Field(default=24.0, gt=0)
    setup_url_file: Path | None = None
    # Where the setup URL points (the dashboard's /setup page).
    dashboard_url: str = "http://127.0.0.1:8080"


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
    events: EventStreamSettings = EventStreamSettings()
    webhooks: WebhookSettings = WebhookSettings()
    sessions: SessionSettings = SessionSettings()
