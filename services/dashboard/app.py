"""Wiring of the dashboard: an HTTP client of the gateway, templates and static files; no
database, no bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.dashboard import api, deployments, health
from services.dashboard import service as ui
from services.dashboard.settings import DashboardSettings
from shared.service import bootstrap, create_http_app

HERE = Path(__file__).parent
# Scripts and styles come from this site only, so an injected tag runs nothing; no frames.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def page_templates() -> Jinja2Templates:
    """The pages' templates, with the helpers and filters they use."""
    pages = Jinja2Templates(directory=HERE / "templates")
    pages.env.globals.update(ui=ui)
    pages.env.filters.update(size=ui.human_size, when=ui.when)
    return pages


def create_app(settings: DashboardSettings | None = None) -> FastAPI:
    settings = settings or DashboardSettings()
    bootstrap(settings)
    # Many pages and one long-lived event stream per open tab share this client.
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=500))
    pages = page_templates()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    async def gateway_answers() -> None:
        response = await client.get(f"{settings.gateway_url.rstrip('/')}/healthz", timeout=2.0)
        response.raise_for_status()

    app = create_http_app(
        settings,
        title="Ekiben dashboard",
        routers=[health.router, deployments.router, api.router],
        readiness={"gateway": gateway_answers},
        lifespan=lifespan,
        docs=False,
    )
    app.state.settings = settings
    app.state.http = client
    app.state.templates = pages
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    api.install(app)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "public, max-age=3600")
        return response

    return app
