"""Dashboard settings (env prefix `EKIBEN_DASHBOARD_`).

The dashboard keeps no state: it is a client of the gateway's HTTP API.
"""

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import HttpSettings, ServiceSettings


class DashboardSettings(ServiceSettings):
    service_name: ClassVar[str] = "dashboard"
    model_config = SettingsConfigDict(env_prefix="EKIBEN_DASHBOARD_")

    http: HttpSettings = HttpSettings(port=8080)
    gateway_url: str = "http://127.0.0.1:8000"
    # The services whose /readyz the health page shows, by name.
    service_urls: dict[str, str] = Field(
        default_factory=lambda: {
            "gateway": "http://127.0.0.1:8000",
            "registry": "http://127.0.0.1:8001",
            "builder": "http://127.0.0.1:8002",
            "deployer": "http://127.0.0.1:8003",
        }
    )
