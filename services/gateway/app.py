"""Wiring of the gateway: runtime, routers, subscribers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.gateway import handlers
from services.gateway.settings import GatewaySettings
from shared.service import BackendRuntime, backend_app, bootstrap

MIGRATIONS = Path(__file__).parent / "migrations"


def create_runtime(settings: GatewaySettings) -> BackendRuntime:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    handlers.register(runtime)
    return runtime


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    return backend_app(create_runtime(settings), title="Ekiben gateway")
