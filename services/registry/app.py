"""Wiring of the registry service: runtime, object store, commands, the blob janitor."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.registry import api
from services.registry.adapters.s3 import BlobStore
from services.registry.settings import RegistrySettings
from shared.service import BackendRuntime, backend_app, bootstrap, hooks

MIGRATIONS = Path(__file__).parent / "migrations"


def create_runtime(settings: RegistrySettings) -> tuple[BackendRuntime, BlobStore]:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    blobs = BlobStore(settings.s3)
    registry = api.register(runtime, blobs)

    # Entered in order, exited in reverse: the store opens (and its bucket exists) before
    # anything is served, and the janitor stops before the store closes.
    runtime.resource(blobs)
    runtime.resource(hooks(start=blobs.ensure_bucket))
    runtime.resource(hooks(start=registry.janitor.start, stop=registry.janitor.stop))
    runtime.readiness["s3"] = blobs.ping
    return runtime, blobs


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    runtime, _ = create_runtime(settings or RegistrySettings())
    return backend_app(runtime, title="Ekiben registry")
