"""The common shape of a running service: its connections, lifespan and HTTP app.

`BackendRuntime` owns what a bus service needs: the asyncpg pool (schema migrated at
start), the FastStream broker (streams ensured, subscribers started), the outbox relay and
the consumer-lag gauge. A service adds its own resources (an S3 client, a Kubernetes
client, a background loop) as async context managers with `runtime.resource(...)`.

The lifecycle, in order, so that nothing is served before what it needs exists:

1. migrate the schema, open the pool, connect to NATS, ensure the streams;
2. enter the service's resources in the order they were added, then start the relay;
3. only then serve: event subscribers, then request/reply responders;
4. on stop, the reverse: stop taking commands and events, let those in flight finish,
   exit the resources in reverse order (a failure is logged with its stack and the
   others still close), stop the relay, close NATS and the pool.

A command sent to a replica that is still starting therefore finds no responder there
(another replica answers, or the caller gets a clean "did not answer"), never a handler
whose S3 client does not exist yet.
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
from shared.db import create_pool
from shared.db.migrations import migrate as migrate_schema
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

# What a service adds to its lifecycle: an async context manager (see `resource`).
Resource = contextlib.AbstractAsyncContextManager[Any]


@contextlib.asynccontextmanager
async def _logged_exit(resource: Resource) -> AsyncIterator[None]:
    """Enter `resource`; a failure while exiting it is logged, and the stop goes on."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(resource)
        yield
        try:
            await stack.aclose()
        except Exception:
            log.exception("service.resource_stop_failed", resource=repr(resource))


class hooks(contextlib.AbstractAsyncContextManager[None]):  # noqa: N801 - reads as a function
    """A resource made of a start and a stop coroutine function (either may be absent).

    Reusable: a runtime that runs twice (a restart in a test) starts and stops it twice.
    """

    def __init__(
        self,
        start: Callable[[], Awaitable[object]] | None = None,
        stop: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._start, self._stop = start, stop

    async def __aenter__(self) -> None:
        if self._start is not None:
            await self._start()

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stop is not None:
            await self._stop()

    def __repr__(self) -> str:
        names = [getattr(f, "__qualname__", repr(f)) for f in (self._start, self._stop) if f]
        return f"hooks({', '.join(names)})"


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
    return await migrate_schema(
        settings.postgres.dsn.get_secret_value(),
        settings.schema_name,
        migrations_dir,
        settings.service_name,
    )


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
        self._resources: list[Resource] = []
        self._background: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            raise Unavailable(f"{self.service}: database not connected")
        return self._pool

    def resource(self, resource: Resource) -> None:
        """Enter `resource` (an async context manager) before serving; exit it at stop.

        Resources are entered in the order they are added and exited in reverse, so a
        background loop added after the client it uses stops before that client closes.
        """
        self._resources.append(resource)

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
        async with contextlib.AsyncExitStack() as stack:
            self._pool = await create_pool(
                settings.postgres.dsn.get_secret_value(),
                schema=settings.schema_name,
                min_size=settings.postgres.pool_min_size,
                max_size=settings.postgres.pool_max_size,
            )
            stack.push_async_callback(self._close_pool)
            stack.push_async_callback(self.broker.stop)
            await self.broker.connect()
            await ensure_streams(self.broker.connection.jetstream(), settings.nats)
            self.relay = OutboxRelay(
                self._pool,
                self.broker,
                schema=settings.schema_name,
                retention_seconds=settings.outbox_retention_hours * 3600,
            )
            await self.relay.start()
            stack.push_async_callback(self.relay.stop)
            for resource in self._resources:
                await stack.enter_async_context(_logged_exit(resource))
            self._stopping.clear()
            lag = watch_consumer_lag(
                self.broker.connection.jetstream(), self.consumers(), self._stopping
            )
            self._background.append(asyncio.create_task(lag, name=f"{self.service}-lag"))
            stack.push_async_callback(self._stop_background)
            # Serve last: everything a handler reaches exists from here on.
            await self.broker.start()
            stack.push_async_callback(self._stop_subscribers)
            await self.responders.start(self.broker.connection)
            # Stop taking commands first; those in flight still reach what they need.
            stack.push_async_callback(self.responders.stop)
            log.info("service.started", consumers=self.consumers())
            yield self
        log.info("service.stopped")

    async def _stop_subscribers(self) -> None:
        for subscriber in self.broker.subscribers:
            try:
                await subscriber.stop()
            except Exception:
                log.exception("service.subscriber_stop_failed")

    async def _stop_background(self) -> None:
        self._stopping.set()
        await stop_tasks(self._background, grace=5.0)
        self._background.clear()

    async def _close_pool(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

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
