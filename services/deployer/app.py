"""Wiring of the deployer service: runtime, routers, subscribers."""

from __future__ import annotations

from fastapi import FastAPI

from services.deployer.settings import DeployerSettings
from shared.service import BackendRuntime, backend_app, bootstrap

MIGRATIONS = None  # the service's own tables arrive with its feature work


def create_runtime(settings: DeployerSettings) -> BackendRuntime:
    tracer_provider = bootstrap(settings)
    return BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)


def create_app(settings: DeployerSettings | None = None) -> FastAPI:
    settings = settings or DeployerSettings()
    runtime = create_runtime(settings)
    return backend_app(runtime, title="Ekiben deployer")
