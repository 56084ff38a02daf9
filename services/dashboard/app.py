"""Wiring of the dashboard: an HTTP client of the gateway, no database, no bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from services.dashboard import api
from services.dashboard.settings import DashboardSettings
from shared.service import bootstrap, create_http_app


def create_app(settings: DashboardSettings | None = None) -> FastAPI:
    settings = settings or DashboardSettings()
    bootstrap(settings)
    client = httpx.AsyncClient()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.http = client
        try:
            yield
        finally:
            await client.aclose()

    async def gateway_answers() -> None:
        response = await client.get(f"{settings.gateway_url.rstrip('/')}/healthz", timeout=2.0)
        response.raise_for_status()

    return create_http_app(
        settings,
        title="Ekiben dashboard",
        routers=[api.router],
        readiness={"gateway": gateway_answers},
        lifespan=lifespan,
        docs=False,
    )
