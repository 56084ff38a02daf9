"""Which services exist and how each is built: the one table the CLI and `ekiben up` read."""

from __future__ import annotations

import gc
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.settings import ServiceSettings


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    settings_path: str  # "module:Class"
    env_prefix: str
    owns_data: bool

    def settings_class(self) -> type[ServiceSettings]:
        module, _, attr = self.settings_path.partition(":")
        cls: type[ServiceSettings] = getattr(importlib.import_module(module), attr)
        return cls

    def create_app(self, settings: ServiceSettings | None = None) -> FastAPI:
        module = importlib.import_module(f"services.{self.name}.app")
        app: FastAPI = module.create_app(settings)
        return app

    def import_app_module(self) -> None:
        importlib.import_module(f"services.{self.name}.app")

    def serve(self, *, host: str | None = None, port: int | None = None) -> None:
        """Build the app from the environment and serve it until SIGINT/SIGTERM."""
        import uvicorn  # noqa: PLC0415 - heavy, only when serving

        settings = self.settings_class()()
        app = self.create_app(settings)
        # What is alive now (modules, routes, models) lives as long as the process: out of
        # the collector's sight, full collections stop walking it in the middle of requests.
        gc.collect()
        gc.freeze()
        uvicorn.run(
            app,
            host=host or settings.http.host,
            port=port if port is not None else settings.http.port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )


SERVICES: dict[str, ServiceEntry] = {
    entry.name: entry
    for entry in (
        ServiceEntry(
            "registry", "services.registry.settings:RegistrySettings", "EKIBEN_REGISTRY_", True
        ),
        ServiceEntry(
            "builder", "services.builder.settings:BuilderSettings", "EKIBEN_BUILDER_", True
        ),
        ServiceEntry(
            "deployer", "services.deployer.settings:DeployerSettings", "EKIBEN_DEPLOYER_", True
        ),
        ServiceEntry(
            "gateway", "services.gateway.settings:GatewaySettings", "EKIBEN_GATEWAY_", True
        ),
        ServiceEntry(
            "dashboard", "services.dashboard.settings:DashboardSettings", "EKIBEN_DASHBOARD_", False
        ),
    )
}
