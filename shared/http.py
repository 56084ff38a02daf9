"""What every service's HTTP side has: request ids, metrics, errors, health and metrics routes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import EkibenError
from shared.logging import get_logger
from shared.telemetry import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]


class ErrorBody(BaseModel):
    code: str = Field(description="The error's kind: invalid, unauthorized, not_found, ...")
    message: str = Field(description="What went wrong, for a person")
    details: dict[str, Any] | None = None
    request_id: str | None = Field(default=None, description="Given for internal errors")


class ErrorResponse(BaseModel):
    """The one shape of every error answer: `{"error": {"code", "message", ...}}`."""

    error: ErrorBody


_ERROR_DESCRIPTIONS = {
    400: "Unparseable request",
    401: "No usable API token",
    403: "Not allowed for this token",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request too large",
    422: "Invalid input",
    503: "A dependency is unavailable; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the error answers a route can give."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


class RequestContextMiddleware:
    """Request id in and out, bound to the logs; request counts, durations, in-flight.

    A plain ASGI middleware (not BaseHTTPMiddleware) so streamed bodies pass through
    untouched, which proxied uploads and downloads rely on.
    """

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode()[:128] or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode()))
            await send(message)

        in_flight = HTTP_IN_FLIGHT.labels(self.service)
        in_flight.inc()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                in_flight.dec()
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                method = scope.get("method", "")
                HTTP_REQUESTS.labels(self.service, method, path, str(status)).inc()
                HTTP_DURATION.labels(self.service, method, path).observe(
                    time.perf_counter() - start
                )


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, **extra}}
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map the error taxonomy to JSON responses; nothing leaks a stack trace."""

    async def on_ekiben_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EkibenError)
        response = JSONResponse(status_code=exc.status, content={"error": exc.to_dict()})
        if exc.status == 503:
            response.headers["Retry-After"] = "5"
        return response

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return error_response(422, "invalid", message, details={"errors": errors})

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("http.unhandled_error", path=request.url.path, exc_info=exc)
        return error_response(
            500, "internal", "internal error", request_id=request.state.request_id
        )

    app.add_exception_handler(EkibenError, on_ekiben_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


def health_router(checks: Mapping[str, ReadinessCheck], *, timeout: float = 2.0) -> APIRouter:
    """`/healthz`: the process answers. `/readyz`: every dependency answers. `/metrics`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        async def run(check: ReadinessCheck) -> str:
            try:
                await asyncio.wait_for(check(), timeout)
            except Exception as exc:  # noqa: BLE001 - any failure means not ready
                return f"failed: {type(exc).__name__}: {exc}"[:300]
            return "ok"

        names = list(checks)
        results = dict(
            zip(names, await asyncio.gather(*(run(checks[n]) for n in names)), strict=True)
        )
        ready = all(result == "ok" for result in results.values())
        return JSONResponse(
            status_code=200 if ready else 503,
            content={"status": "ready" if ready else "not ready", "checks": results},
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router
