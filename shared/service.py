"""The common shape of a running service: its connections, lifespan and HTTP app.

`BackendRuntime` owns what a bus service needs: the asyncpg pool (schema migrated at
start), the FastStream broker (streams ensured, subscribers started), the outbox relay and
the consumer-lag gauge. Connections are opened in the lifespan and closed in reverse order;
handlers reach them through the runtime object their service module was built with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import APIRouter, FastAPI
from fastapi.telemetry import TelemetryConfig
from faststream.nats import NatsBroker
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from shared.bus import (
    EventHandler,
    RpcClient,
    RpcServer,
    create_broker,
    ensure_streams,
    subscribe_events,
)
from shared.bus.consumer import watch_consumer_lag
from shared.db import apply_migrations, create_pool
from shared.db.migrations import migrations_for
from shared.errors import Unavailable
from shared.events import Event
from shared.http import (
    ReadinessCheck,
    RequestContextMiddleware,
    health_router,
    install_error_handlers,
)
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.settings import BackendSettings, ServiceSettings
from shared.tasks import stop_tasks
from shared.telemetry import setup_tracing

log = get_logger(__name__)

Hook = Callable[[], Awaitable[None]]


def bootstrap(
    settings: ServiceSettings, *, span_processor: SpanProcessor | None = None
) -> TracerProvider:
    """Logging and tracing for this process, from the service's settings."""
    configure_logging(
        settings.service_name, level=settings.telemetry.log_level, json=settings.telemetry.log_json
    )
    return setup_tracing(settings.service_name, settings.telemetry, extra_processor=span_processor)


async def migrate(settings: BackendSettings, migrations_dir: Path | None) -> list[str]:
    """Apply the schema migrations of one service (what `ekiben migrate` runs)."""
    conn = await asyncpg.connect(settings.postgres.dsn.get_secret_value())
    try:
        return await apply_migrations(
            conn, settings.schema_name, migrations_for(migrations_dir, settings.service_name)
        )
    finally:
        await conn.close()


class BackendRuntime:
    """PostgreSQL + NATS + outbox for one service; see the module docstring."""

    def __init__(
        self,
        settings: BackendSettings,
        *,
        migrations_dir: Path | None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.migrations_dir = migrations_dir
        self.broker: NatsBroker = create_broker(
            settings.nats, service=self.service, tracer_provider=tracer_provider
        )
        self.rpc = RpcClient(
            lambda: self.broker.connection, timeout=settings.nats.request_timeout_seconds
        )
        # Commands this service answers (`responders.add`), served while it runs.
        self.responders = RpcServer()
        self._pool: asyncpg.Pool[Any] | None = None
        self.relay: OutboxRelay | None = None
        self.readiness: dict[str, ReadinessCheck] = {
            "postgres": self._check_postgres,
            "nats": self._check_nats,
        }
        self._consumers: list[str] = []
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self._background: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise Unavailable(f"{self.service}: database not connected")
        return self._pool

    def on_start(self, hook: Hook) -> None:
        self._on_start.append(hook)

    def on_stop(self, hook: Hook) -> None:
        self._on_stop.append(hook)

    def subscribe(
        self,
        *,
        consumer: str,
        handler: EventHandler,
        events: Sequence[type[Event]] | None = None,
    ) -> None:
        """A durable consumer of `events` (all when None); see `shared.bus.consumer`."""
        subscribe_events(
            self.broker,
            consumer=consumer,
            handler=handler,
            settings=self.settings.nats,
            events=events,
        )
        self._consumers.append(consumer)

    def consumers(self) -> list[str]:
        return list(self._consumers)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BackendRuntime]:
        settings = self.settings
        await migrate(settings, self.migrations_dir)
        self._pool = await create_pool(
            settings.postgres.dsn.get_secret_value(),
            schema=settings.schema_name,
            min_size=settings.postgres.pool_min_size,
            max_size=settings.postgres.pool_max_size,
        )
        try:
            await self.broker.connect()
            await ensure_streams(self.broker.connection.jetstream(), settings.nats)
            await self.broker.start()
            await self.responders.start(self.broker.connection)
            self.relay = OutboxRelay(self._pool, self.broker, schema=settings.schema_name)
            await self.relay.start()
            self._stopping.clear()
            lag = watch_consumer_lag(
                self.broker.connection.jetstream(), self.consumers(), self._stopping
            )
            self._background.append(asyncio.create_task(lag, name=f"{self.service}-lag"))
            for hook in self._on_start:
                await hook()
            log.info("service.started", consumers=self.consumers())
            yield self
        finally:
            # Stop taking commands first; those in flight still reach what they need.
            await self.responders.stop()
            for hook in reversed(self._on_stop):
                with contextlib.suppress(Exception):
                    await hook()
            self._stopping.set()
            await stop_tasks(self._background, grace=5.0)
            self._background.clear()
            if self.relay is not None:
                await self.relay.stop()
            await self.broker.stop()
            await self._pool.close()
            self._pool = None
            log.info("service.stopped")

    async def _check_postgres(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def _check_nats(self) -> None:
        if not await self.broker.ping(timeout=1.0):
            raise Unavailable("NATS does not answer")
        await self.broker.connection.jetstream().account_info()


_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

# FastAPI's own OpenTelemetry support: one server span per request, continuing the caller's
# W3C trace context (so handlers stamp it on outbox rows and NATS messages), on the global
# provider that `bootstrap` sets up. Metrics stay with prometheus_client (`/metrics`) and
# logs with structlog; per-dependency spans cost more than they tell at this size.
HTTP_TELEMETRY: TelemetryConfig = {
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "exclude": lambda scope: scope.get("path") in _PROBES,
}


def create_http_app(
    settings: ServiceSettings,
    *,
    title: str,
    routers: Sequence[APIRouter] = (),
    readiness: Mapping[str, ReadinessCheck] | None = None,
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
    docs: bool = True,
) -> FastAPI:
    app = FastAPI(
        title=title,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        telemetry=HTTP_TELEMETRY,
    )
    install_error_handlers(app)
    app.include_router(health_router(readiness or {}))
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestContextMiddleware, service=settings.service_name)
    return app


def backend_app(
    runtime: BackendRuntime,
    *,
    title: str,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The FastAPI app of a bus service: its lifespan runs the runtime."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            app.state.runtime = runtime
            yield

    return create_http_app(
        runtime.settings,
        title=title,
        routers=routers,
        readiness=runtime.readiness,
        lifespan=lifespan,
    )
