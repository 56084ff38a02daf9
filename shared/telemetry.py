"""OpenTelemetry tracing and Prometheus metrics, set up once per process.

Traces: spans for HTTP (FastAPI's native OpenTelemetry support, configured in
`shared.service.HTTP_TELEMETRY`), NATS (FastStream's telemetry
middleware, which carries the W3C `traceparent` in message headers) and PostgreSQL
(asyncpg instrumentation). The OTLP exporter is off unless an endpoint is configured.
Metrics: prometheus_client's default registry, served at `/metrics` by every service.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
)
from prometheus_client import Counter, Gauge, Histogram

from shared.settings import TelemetrySettings

_provider: TracerProvider | None = None


class _RecordWhenExported(Sampler):
    """Record spans only once something exports them.

    With no exporter, every span is a cheap non-recording one: trace ids are still made
    and propagated (logs and NATS headers carry them), but nothing is collected for
    nobody, which cost about a third of a small request's CPU. Adding an exporter or a
    processor switches to the configured ratio.
    """

    def __init__(self) -> None:
        self.delegate: Sampler = ALWAYS_OFF

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return self.delegate.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return f"RecordWhenExported({self.delegate.get_description()})"


_sampler = _RecordWhenExported()


def setup_tracing(
    service: str, settings: TelemetrySettings, *, extra_processor: SpanProcessor | None = None
) -> TracerProvider:
    """The process's tracer provider (created once; later calls add processors only)."""
    global _provider  # noqa: PLW0603 - one provider per process is the OpenTelemetry model
    if _provider is None:
        _provider = TracerProvider(
            resource=Resource.create({"service.name": f"ekiben-{service}"}), sampler=_sampler
        )
        if settings.otlp_endpoint:
            _sampler.delegate = ParentBasedTraceIdRatio(settings.sample_ratio)
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            _provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint))
            )
        trace.set_tracer_provider(_provider)
        AsyncPGInstrumentor().instrument(tracer_provider=_provider)  # type: ignore[no-untyped-call]
    if extra_processor is not None:
        _sampler.delegate = ParentBasedTraceIdRatio(settings.sample_ratio)
        _provider.add_span_processor(extra_processor)
    return _provider


def current_trace_headers() -> dict[str, str]:
    """The W3C trace context of the current span, to store beside an outbox row."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


# --- metrics shared by every service ---------------------------------------------------

HTTP_REQUESTS = Counter(
    "ekiben_http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "ekiben_http_request_duration_seconds",
    "HTTP request duration",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
HTTP_IN_FLIGHT = Gauge("ekiben_http_requests_in_flight", "HTTP requests in flight", ["service"])
OUTBOX_BACKLOG = Gauge("ekiben_outbox_backlog", "Outbox rows not yet published", ["service"])
OUTBOX_PUBLISHED = Counter(
    "ekiben_outbox_published_total", "Outbox events published", ["service", "event_type"]
)
OUTBOX_DELAY = Histogram(
    "ekiben_outbox_publish_delay_seconds",
    "From commit of the outbox row to the JetStream ack",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)
CONSUMER_LAG = Gauge(
    "ekiben_consumer_pending_messages", "Messages not yet delivered to a consumer", ["consumer"]
)
CONSUMER_ACK_PENDING = Gauge(
    "ekiben_consumer_ack_pending_messages", "Delivered messages awaiting an ack", ["consumer"]
)
EVENTS_HANDLED = Counter(
    "ekiben_events_handled_total",
    "Events handled by consumers",
    ["consumer", "event_type", "outcome"],
)
EVENTS_DEAD_LETTERED = Counter(
    "ekiben_events_dead_lettered_total",
    "Events moved to the dead-letter subject after max_deliver attempts",
    ["consumer", "event_type"],
)
