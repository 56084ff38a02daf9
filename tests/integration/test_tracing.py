"""Trace context flows from an HTTP request, through the outbox and NATS, to the consumer."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.bus import Delivery
from shared.events import AnyEvent, BentoPushed
from shared.outbox import write_event
from shared.service import BackendRuntime, backend_app, bootstrap
from tests.fixtures.runtime import probe_settings
from tests.integration.test_outbox import pushed, wait_for


async def test_trace_flows_from_http_request_through_event_into_consumer_span(
    nats_url: str, pg_dsn: str
) -> None:
    settings = probe_settings(nats_url, pg_dsn)
    exporter = InMemorySpanExporter()
    provider = bootstrap(settings, span_processor=SimpleSpanProcessor(exporter))
    runtime = BackendRuntime(settings, migrations_dir=None, tracer_provider=provider)
    seen: dict[str, int] = {}

    async def handle(event: AnyEvent, delivery: Delivery) -> None:
        seen[event.id] = trace.get_current_span().get_span_context().trace_id

    runtime.subscribe(consumer="probe-traced", handler=handle, events=[BentoPushed])
    router = APIRouter()

    @router.post("/emit")
    async def emit(request: Request) -> dict[str, str]:
        event = pushed("v1")
        async with runtime.pool.acquire() as conn, conn.transaction():
            await write_event(conn, event)
        return {"id": event.id}

    app = backend_app(runtime, title="probe", routers=[router])
    async with runtime.running():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            response = await client.post("/emit")
        event_id = response.json()["id"]
        await wait_for(lambda: event_id in seen)

    spans = exporter.get_finished_spans()
    [http_span] = [s for s in spans if s.name == "POST /emit"]
    request_trace = http_span.context.trace_id
    assert seen[event_id] == request_trace
    # The chain: the HTTP server span, the outbox publish, the NATS publish and process spans,
    # and the INSERT into the outbox, all in one trace.
    in_trace = {s.name for s in spans if s.context.trace_id == request_trace}
    assert "outbox publish bento.pushed" in in_trace
    assert any("INSERT" in name for name in in_trace), in_trace
    assert any(name.endswith("process") for name in in_trace), in_trace
