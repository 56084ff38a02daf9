"""Wiring of the registry service: runtime, object store, commands, the blob janitor."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.registry import api
from services.registry.adapters.s3 import BlobStore
from services.registry.settings import RegistrySettings
from shared.service import BackendRuntime, backend_app, bootstrap

MIGRATIONS = Path(__file__).parent / "migrations"


def create_runtime(settings: RegistrySettings) -> tuple[BackendRuntime, BlobStore]:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    blobs = BlobStore(settings.s3)
    registry = api.register(runtime, blobs)

    async def open_blobs() -> None:
        await blobs.__aenter__()
        await blobs.ensure_bucket()

    async def close_blobs() -> None:
        await blobs.__aexit__(None, None, None)

    # Start hooks run in order, stop hooks in reverse: the janitor starts after the store
    # is open and stops before it closes.
    runtime.on_start(open_blobs)
    runtime.on_start(registry.janitor.start)
    runtime.on_stop(close_blobs)
    runtime.on_stop(registry.janitor.stop)
    runtime.readiness["s3"] = blobs.ping
    return runtime, blobs


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    runtime, _ = create_runtime(settings or RegistrySettings())
    return backend_app(runtime, title="Ekiben registry")
