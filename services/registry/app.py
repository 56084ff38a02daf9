"""Wiring of the registry service: runtime, object store, routers, subscribers."""

from __future__ import annotations

from fastapi import FastAPI

from services.registry.adapters.s3 import BlobStore
from services.registry.settings import RegistrySettings
from shared.service import BackendRuntime, backend_app, bootstrap

MIGRATIONS = None  # the registry's own tables arrive with the registry feature work


def create_runtime(settings: RegistrySettings) -> tuple[BackendRuntime, BlobStore]:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    blobs = BlobStore(settings.s3)

    async def open_blobs() -> None:
        await blobs.__aenter__()
        await blobs.ensure_bucket()

    async def close_blobs() -> None:
        await blobs.__aexit__(None, None, None)

    runtime.on_start(open_blobs)
    runtime.on_stop(close_blobs)
    runtime.readiness["s3"] = blobs.ping
    return runtime, blobs


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    runtime, _ = create_runtime(settings or RegistrySettings())
    return backend_app(runtime, title="Ekiben registry")
