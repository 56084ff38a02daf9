"""Wiring of the gateway: runtime, identity bootstrap, routers, subscribers."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.gateway.adapters.transfer import Transfers
from services.gateway.artifacts import api as artifacts
from services.gateway.audit import api as audit_api
from services.gateway.builds import api as builds_api
from services.gateway.deployments import api as deployments_api
from services.gateway.events import api as events_api
from services.gateway.events import handlers
from services.gateway.events.runtime import Subscriptions
from services.gateway.identity import api as identity_api
from services.gateway.identity import service as identity
from services.gateway.sessions import api as sessions_api
from services.gateway.sessions import service as sessions
from services.gateway.settings import GatewaySettings
from shared.service import BackendRuntime, backend_app, bootstrap, hooks

MIGRATIONS = Path(__file__).parent / "migrations"


def create_runtime(
    settings: GatewaySettings, transfers: Transfers
) -> tuple[BackendRuntime, Subscriptions]:
    tracer_provider = bootstrap(settings)
    runtime = BackendRuntime(settings, migrations_dir=MIGRATIONS, tracer_provider=tracer_provider)
    handlers.register(runtime)
    runtime.resource(hooks(stop=transfers.aclose))

    async def bootstrap_identity() -> None:
        # Once per database: the first admin and a token to reach the API with.
        await identity.bootstrap(runtime.pool, settings.bootstrap_token_file)
        # Every start until the first admin has a password: set it, or a setup URL.
        await sessions.ensure_first_admin_password(runtime.pool, settings.sessions)

    runtime.resource(hooks(start=bootstrap_identity))
    # The SSE hub and the webhook worker: after the pool and NATS, stopped before them.
    subscriptions = Subscriptions(runtime, settings)
    subscriptions.register()
    return runtime, subscriptions


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    transfers = Transfers()
    runtime, subscriptions = create_runtime(settings, transfers)
    app = backend_app(
        runtime,
        title="Ekiben gateway",
        routers=[
            identity_api.router,
            sessions_api.router,
            audit_api.router,
            artifacts.bentos,
            artifacts.models,
            events_api.router,
            builds_api.router,
            deployments_api.deployments,
            deployments_api.clusters,
            deployments_api.secrets,
        ],
    )
    # Routes reach the runtime through app.state. Set here, not only in the lifespan, so an
    # app driven without its lifespan (a test running `runtime.running()` itself) works too.
    app.state.runtime = runtime
    app.state.transfers = transfers
    app.state.subscriptions = subscriptions
    return app
