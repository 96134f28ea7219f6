"""The coordinator's Prometheus metrics, defined once per process.

With several processes serving one port (``fedrec serve --workers N``), each process
writes its samples to ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` sums them
(prometheus_client's multiprocess mode); that variable must be set before this module
is first imported, which ``fedrec serve`` does.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = [
    "AGGREGATION_SECONDS",
    "BACKGROUND_ERRORS",
    "DATABASE_ERRORS",
    "HTTP_REQUESTS",
    "HTTP_REQUEST_BYTES",
    "HTTP_REQUEST_SECONDS",
    "HTTP_RESPONSE_BYTES",
    "LONG_POLLS",
    "REQUESTS_SHED",
    "ROUNDS",
    "UPLOADS_ACCEPTED",
    "UPLOADS_REFUSED",
    "UPLOADS_REPLAYED",
    "PrometheusObserver",
    "exposition",
    "process_exiting",
]

ROUNDS = Counter(
    "fedrec_rounds", "Rounds by event: opened, closed (aggregated) or failed.", ["event"]
)
AGGREGATION_SECONDS = Histogram(
    "fedrec_aggregation_seconds",
    "Time to aggregate a round into a new version (read updates, combine, store).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
UPLOADS_ACCEPTED = Counter("fedrec_uploads_accepted", "Updates accepted (new, 201).")
UPLOADS_REPLAYED = Counter(
    "fedrec_uploads_replayed", "Uploads of bytes already accepted (200, the same receipt)."
)
UPLOADS_REFUSED = Counter(
    "fedrec_uploads_refused",
    "Uploads refused, by the problem type's slug (e.g. round-closed, invalid-update).",
    ["reason"],
)
HTTP_REQUESTS = Counter(
    "fedrec_http_requests",
    "Requests answered, by route template (not raw path), method and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "fedrec_http_request_duration_seconds",
    "Time to answer a request, by route template and method (long-polls included).",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_REQUEST_BYTES = Counter(
    "fedrec_http_request_bytes", "Request body bytes received, by route template.", ["route"]
)
HTTP_RESPONSE_BYTES = Counter(
    "fedrec_http_response_bytes", "Response body bytes sent, by route template.", ["route"]
)
LONG_POLLS = Gauge(
    "fedrec_long_polls_held",
    "Long-polls of rounds/current waiting right now.",
    multiprocess_mode="livesum",
)
REQUESTS_SHED = Counter(
    "fedrec_requests_shed",
    "Requests refused with 503 overloaded (FEDREC_MAX_REQUESTS_IN_FLIGHT, "
    "FEDREC_MAX_LONG_POLLS), by kind: request or long-poll.",
    ["kind"],
)
DATABASE_ERRORS = Counter(
    "fedrec_database_errors",
    "Database errors met by requests: conflict (409), retryable (503) or other (500).",
    ["kind"],
)

BACKGROUND_ERRORS = Counter(
    "fedrec_background_errors",
    "Failed runs of the aggregation job or the round timer (retried by the timer; see the "
    "log); database: the failure was a database error.",
    ["database"],
)


class PrometheusObserver:
    """The domain's ``Observer`` as Prometheus counters."""

    def round_opened(self) -> None:
        ROUNDS.labels("opened").inc()

    def round_closed(self, aggregation_seconds: float) -> None:
        ROUNDS.labels("closed").inc()
        AGGREGATION_SECONDS.observe(aggregation_seconds)

    def round_failed(self) -> None:
        ROUNDS.labels("failed").inc()


def process_exiting() -> None:
    """In multiprocess mode: drop this process's live gauges (its long-polls ended)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric of this process, or of all processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
