"""Prometheus metrics of event subscriptions (served at the gateway's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SSE_READERS = Gauge("ekiben_sse_readers", "Connected server-sent event readers")
SSE_OVERFLOWS = Counter("ekiben_sse_overflows_total", "Readers cut off for falling too far behind")
SSE_EVENTS_SENT = Counter("ekiben_sse_events_sent_total", "Events written to SSE readers")
WEBHOOK_ATTEMPTS = Counter(
    "ekiben_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (ok, http_error, error)",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "ekiben_webhook_attempt_seconds",
    "Duration of webhook delivery attempts",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_DISABLED = Counter(
    "ekiben_webhook_endpoints_disabled_total", "Endpoints disabled for failing"
)
