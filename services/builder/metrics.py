"""The builder's Prometheus metrics (names the chart's rules and dashboards use)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BUILDS_FINISHED = Counter(
    "ekiben_build_finished_total",
    "Builds that ended, by backend and outcome (succeeded, failed, found: image existed)",
    ["backend", "outcome"],
)
BUILD_DURATION = Histogram(
    "ekiben_build_duration_seconds",
    "From the start of a build attempt to its image pushed (or its failure)",
    ["backend", "outcome"],
    buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
BUILDS_IN_PROGRESS = Gauge(
    "ekiben_build_in_progress", "Builds running now on this builder", ["backend"]
)
