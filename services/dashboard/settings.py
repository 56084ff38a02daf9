"""Dashboard settings (env prefix `EKIBEN_DASHBOARD_`).

The dashboard keeps no state: it is a client of the gateway's HTTP API.
"""

from typing import ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import HttpSettings, ServiceSettings


class DashboardSettings(ServiceSettings):
    service_name: ClassVar[str] = "dashboard"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_DASHBOARD_")

    http: HttpSettings = HttpSettings(port=8080)
    gateway_url: str = "http://127.0.0.1:8000"
    # The gateway's address as people's clients reach it (the `bentoml cloud login` line
    # the token page shows); empty: `gateway_url`.
    public_gateway_url: str = ""
    # The session cookie's Secure flag: "auto" sets it when the page came over HTTPS
    # (directly, or per X-Forwarded-Proto from a proxy in front).
    cookie_secure: Literal["auto", "always", "never"] = "auto"
    # The browser forgets the session cookie after this long; the gateway's own session
    # lifetime and idle limit end the session itself.
    cookie_max_age_seconds: float = Field(default=12 * 3600.0, gt=0)
    # The services whose /readyz the health page shows, by name.
    service_urls: dict[str, str] = Field(
        default_factory=lambda: {
            "gateway": "http://127.0.0.1:8000",
            "registry": "http://127.0.0.1:8001",
            "builder": "http://127.0.0.1:8002",
            "deployer": "http://127.0.0.1:8003",
        }
    )

    @model_validator(mode="after")
    def _public_url(self) -> "DashboardSettings":
        if not self.public_gateway_url:
            self.public_gateway_url = self.gateway_url.rstrip("/")
        return self
