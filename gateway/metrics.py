"""Prometheus metrics. Under gunicorn ``PROMETHEUS_MULTIPROC_DIR`` is set before import
(``gateway serve`` does it) so every worker process's samples are aggregated."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

REQUESTS = Counter("gateway_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("gateway_request_seconds", "HTTP request latency", ["route", "method"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
DEBITS = Counter("gateway_debits_total", "Successful debits", ["action"])
CREDITS_DEBITED = Counter("gateway_credits_debited_total", "Credits debited", ["action"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by a rate limit")
RATE_LIMIT_FAIL_OPEN = Counter("gateway_ratelimit_fail_open_total",
                               "Requests let through because Redis was unreachable")
IDEMPOTENT_REPLAYS = Counter("gateway_idempotent_replays_total", "Idempotent replays served")


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(DEFAULT_REGISTRY), CONTENT_TYPE_LATEST
