"""HTTP basics every service shares: errors as JSON, health, metrics, request ids."""

from __future__ import annotations

import httpx
from fastapi import APIRouter
from pydantic import BaseModel

from shared.errors import NotFound
from shared.service import create_http_app
from shared.settings import TelemetrySettings
from shared.telemetry import current_trace_headers, setup_tracing
from tests.fixtures.runtime import ProbeSettings


class Body(BaseModel):
    count: int


def probe_app() -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/missing")
    async def missing() -> None:
        raise NotFound("bento iris:v1 not found")

    @router.get("/crash")
    async def crash() -> None:
        raise RuntimeError("secret=hunter2 in a stack trace")

    @router.post("/typed")
    async def typed(body: Body) -> Body:
        return body

    async def broken() -> None:
        raise ConnectionError("down")

    async def fine() -> None:
        return None

    app = create_http_app(
        ProbeSettings(), title="probe", routers=[router], readiness={"db": fine, "s3": broken}
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://probe")


async def test_errors_are_json_with_a_code_and_never_a_stack_trace() -> None:
    async with probe_app() as client:
        missing = await client.get("/missing")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": {"code": "not_found", "message": "bento iris:v1 not found"}
        }

        crash = await client.get("/crash", headers={"X-Request-Id": "req-1"})
        assert crash.status_code == 500
        assert crash.json() == {
            "error": {"code": "internal", "message": "internal error", "request_id": "req-1"}
        }
        assert "hunter2" not in crash.text

        invalid = await client.post("/typed", json={"count": "many"})
        assert invalid.status_code == 422
        assert invalid.json()["error"]["code"] == "invalid"
        assert invalid.json()["error"]["message"].startswith("body.count:")


async def test_readiness_names_the_failing_dependency() -> None:
    async with probe_app() as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        checks = ready.json()["checks"]
        assert checks["db"] == "ok"
        assert checks["s3"].startswith("failed: ConnectionError")


async def test_requests_are_counted_by_route_and_carry_a_request_id() -> None:
    async with probe_app() as client:
        response = await client.get("/missing")
        assert len(response.headers["x-request-id"]) == 32
        metrics = (await client.get("/metrics")).text
    assert (
        'ekiben_http_requests_total{method="GET",route="/missing",service="probe",status="404"}'
        in metrics
    )
    assert "ekiben_http_request_duration_seconds_bucket" in metrics


async def test_the_callers_trace_context_reaches_what_the_request_publishes() -> None:
    """Handlers stamp the current trace on outbox rows and NATS messages: it must be the
    caller's when a `traceparent` came in, and a fresh one per request otherwise."""
    setup_tracing("probe", TelemetrySettings())  # what every service's bootstrap does
    router = APIRouter()

    @router.get("/trace")
    async def trace_headers() -> dict[str, str]:
        return current_trace_headers()

    app = create_http_app(ProbeSettings(), title="probe", routers=[router])
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
        carried = await client.get(
            "/trace", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        )
        fresh = [(await client.get("/trace")).json()["traceparent"] for _ in range(2)]
    assert carried.json()["traceparent"].split("-")[1] == trace_id
    fresh_ids = {header.split("-")[1] for header in fresh}
    assert len(fresh_ids) == 2
    assert not fresh_ids & {trace_id, "0" * 32}
