"""What every service's HTTP side has: request ids, metrics, errors, health and metrics routes."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import (
    BadRequest,
    Conflict,
    EkibenError,
    Forbidden,
    InvalidInput,
    NotFound,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from shared.logging import get_logger
from shared.telemetry import HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS

log = get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query`, `path`, then the field")
    msg: str


class ErrorDetails(BaseModel):
    errors: list[FieldError] = Field(description="Every problem found, the first one first")


class ErrorBody(BaseModel):
    code: str = Field(description="The error's kind: invalid, unauthorized, not_found, ...")
    message: str = Field(description="What went wrong, for a person")
    details: ErrorDetails | None = None
    request_id: str | None = Field(default=None, description="Given for internal errors")


class ErrorResponse(BaseModel):
    """The one shape of every error answer: `{"error": {"code", "message", ...}}`."""

    error: ErrorBody


_ERROR_DESCRIPTIONS = {
    400: "Unparseable request",
    401: "No usable API token",
    403: "Not allowed for this token",
    404: "Not found",
    405: "Method not allowed on this path",
    409: "Conflicts with the current state",
    413: "Request too large",
    422: "Invalid input",
    429: "Too many failed attempts; retry after the `Retry-After` seconds",
    503: "A dependency is unavailable; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries declaring the error answers a route can give."""
    return {
        status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }


_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


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
        given = headers.get(b"x-request-id", b"").decode("latin-1")[:128]
        # Kept in logs and the audit log: printable ASCII only, or one of our own.
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
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


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, **extra}},
        headers=headers,
    )


class RejectUnstorableUrl:
    """A path or query holding a NUL (`%00`) is a 422 before any route sees it.

    The URL's half of `shared.text`'s rule: PostgreSQL cannot store a NUL, and every
    path and query value may end up in a query. Checked once here, after percent-decoding,
    not parameter by parameter.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _url_problem(scope)
            if problem is not None:
                await error_response(422, "invalid", problem)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _url_problem(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path: NUL characters (%00) are not allowed in a URL"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "%00")
                return f"query.{shown}: NUL characters (%00) are not allowed in a URL"
    return None


# The code of each status, as `EkibenError` subclasses name them, for errors raised by
# the framework itself (unknown routes, methods, unparseable bodies).
_CODES = {
    cls.status: cls.code
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, InvalidInput)
}
_CODES |= {405: "method_not_allowed", 500: "internal", 503: Unavailable.code}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_")
    except ValueError:
        return f"http_{status}"


def _http_error_message(request: Request, exc: HTTPException) -> str:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return f"no such route: {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        return f"method {request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    return str(exc.detail)


def install_error_handlers(app: FastAPI) -> None:
    """Map the error taxonomy to JSON responses; nothing leaks a stack trace."""

    async def on_ekiben_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EkibenError)
        response = JSONResponse(status_code=exc.status, content={"error": exc.to_dict()})
        if exc.status == 503:
            response.headers["Retry-After"] = "5"
        if isinstance(exc, TooManyRequests):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        return error_response(422, "invalid", message, details={"errors": errors})

    async def on_http_error(request: Request, exc: Exception) -> Response:
        # Raised by the framework (no route, wrong method, a body it could not read): the
        # same `{"error": ...}` shape as everything else, never `{"detail": ...}`.
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        code = _CODES.get(status) or _phrase(status)
        return error_response(status, code, _http_error_message(request, exc), headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.error("http.unhandled_error", path=request.url.path, exc_info=exc)
        return error_response(
            500, "internal", "internal error", request_id=request.state.request_id
        )

    app.add_exception_handler(EkibenError, on_ekiben_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(HTTPException, on_http_error)
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
