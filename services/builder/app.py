"""Wiring of the builder service: runtime, commands, subscribers, the operator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from services.builder import api, handlers
from services.builder.controller import BuilderController
from services.builder.service import BuildService
from services.builder.settings import BuilderSettings
from shared.db import Pool
from shared.service import BackendRuntime, backend_app, bootstrap, hooks

MIGRATIONS = Path(__file__).parent / "migrations"


def create_runtime(settings: BuilderSettings) -> tuple[BackendRuntime, BuilderController]:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    pool: Callable[[], Pool] = lambda: runtime.pool  # noqa: E731 - read at call time
    service = BuildService(pool, runtime.rpc, settings)
    controller = BuilderController(settings, service)
    api.register(runtime, service)
    handlers.register(runtime, service, settings)
    # After the pool and NATS (the reconciler uses both), before serving events.
    if settings.controller_enabled:
        runtime.resource(hooks(start=controller.start, stop=controller.stop))
        runtime.readiness["kubernetes"] = controller.ready
    return runtime, controller


def create_app(settings: BuilderSettings | None = None) -> FastAPI:
    runtime, _ = create_runtime(settings or BuilderSettings())
    return backend_app(runtime, title="Ekiben builder")
