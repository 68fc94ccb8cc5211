"""Prometheus metrics. Under gunicorn ``PROMETHEUS_MULTIPROC_DIR`` is set before import
(``gateway serve`` does it) so every worker process's samples are aggregated."""

from __future__ import annotations

import logging
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

# The labelled children of REQUESTS and LATENCY per (route, method, status), bound once:
# ``labels()`` checks and joins its arguments under a lock on every call (~5 us each, the
# largest cost of the metrics on the hot path). Routes are the app's URI templates, so the
# keys are bounded.
_REQUEST_CHILDREN: dict[tuple[str, str, str], tuple] = {}


def count_request(route: str, method: str, status: str, seconds: float) -> None:
    key = (route, method, status)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:  # a race binds the same children twice: harmless
        children = _REQUEST_CHILDREN[key] = (REQUESTS.labels(route, method, status),
                                             LATENCY.labels(route, method))
    children[0].inc()
    children[1].observe(seconds)


# The children of DEBITS and CREDITS_DEBITED per action, bound once (as above); actions
# are the registry's names, so the keys are bounded.
_DEBIT_CHILDREN: dict[str, tuple] = {}


def count_debit(action: str, credits: int) -> None:
    children = _DEBIT_CHILDREN.get(action)
    if children is None:
        children = _DEBIT_CHILDREN[action] = (DEBITS.labels(action),
                                              CREDITS_DEBITED.labels(action))
    children[0].inc()
    children[1].inc(credits)


class StateCollector:
    """Gauges read at scrape time from the stores that own them, not counted in-process:
    queue depths from Redis (every gateway and worker process sees the same queues) and
    composition outcomes from the database (workers are separate processes)."""

    def __init__(self, queue_depths, outcomes):
        self.queue_depths, self.outcomes = queue_depths, outcomes

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        depth = GaugeMetricFamily("gateway_queue_depth", "Jobs waiting in an RQ queue",
                                  labels=["queue"])
        for name, count in self.queue_depths().items():
            depth.add_metric([name], count)
        yield depth
        jobs = GaugeMetricFamily("gateway_compositions", "Compositions by action and status",
                                 labels=["action", "status"])
        for (action, status), count in self.outcomes().items():
            jobs.add_metric([action, status], count)
        yield jobs


def render(state: StateCollector | None = None) -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(DEFAULT_REGISTRY)
    if state is not None:
        extra = CollectorRegistry()
        extra.register(state)
        try:
            body += generate_latest(extra)
        except Exception:  # a store being down must not hide the process metrics
            logging.getLogger(__name__).warning("queue/composition gauges unavailable",
                                                exc_info=True)
    return body, CONTENT_TYPE_LATEST
