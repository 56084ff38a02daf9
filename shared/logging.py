"""Structured logs: JSON lines with bound context (service, request id, event id, ...).

Call `configure_logging` once at start-up; everywhere else `get_logger(__name__)` and bind
context with `structlog.contextvars.bind_contextvars` so it follows the task.
Event names read like `registry.upload.completed`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from opentelemetry import trace


def _add_trace_ids(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        event_dict["trace_id"] = format(span.trace_id, "032x")
        event_dict["span_id"] = format(span.span_id, "016x")
    return event_dict


def configure_logging(service: str, *, level: str = "INFO", json: bool = True) -> None:
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
        structlog.processors.format_exc_info,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        # No caching: a cached logger keeps the processors of the configuration it first
        # met, so a later `configure` (another service in the same process, a test's
        # `capture_logs`) would never reach it. The lookup it saves is cheap.
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries that use the standard logging module (uvicorn, faststream, asyncpg) go to
    # stderr too, at warning level unless asked otherwise.
    logging.basicConfig(
        stream=sys.stderr, level=max(logging.WARNING, logging.getLevelName(level.upper()))
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
