"""Operations routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import falcon
from rq import Queue, Worker

from gateway import metrics
from gateway.envelope import error, meta
from gateway.middleware import NONE
from jobs import queries
from jobs.queues import expand_queues, queue_name
from metering import db


class Health:
    """Liveness: plain ``OK`` without touching the database (seed 004)."""

    auth = NONE
    uses_db = False
    openapi_tag = "Operations"

    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "OK"


class Ready:
    """Readiness: database and Redis must answer; 503 (still in the envelope) when one does not."""

    auth = NONE
    uses_db = False
    openapi_tag = "Operations"

    def __init__(self, redis):
        self.redis = redis

    def on_get(self, req, resp):
        checks = {"database": _check(db.ping), "redis": _check(self.redis.ping)}
        workers = _check(lambda: _worker_count(self.redis))
        checks["workers"] = workers
        healthy = checks["database"]["ok"] and checks["redis"]["ok"]
        if healthy:
            resp.media = {"success": True, "data": {"status": "ready", "checks": checks},
                          "meta": meta(req)}
        else:
            resp.status = falcon.HTTP_503
            body = error(req, "SERVICE_UNAVAILABLE", "A backend service is down", 503)
            body["data"] = {"status": "unavailable", "checks": checks}
            resp.media = body


def _worker_count(redis):
    return {"count": Worker.count(connection=redis)}


def _check(fn) -> dict:
    try:
        detail = fn()
    except Exception as exc:  # a failing backend is the answer, not an error
        return {"ok": False, "error": type(exc).__name__}
    out = {"ok": True}
    if isinstance(detail, dict):
        out.update(detail)
    return out


class Metrics:
    """Prometheus text: requests, latency, debits, rate limiting (all gunicorn processes),
    plus queue depths (Redis) and compositions by action and status (database)."""

    auth = NONE
    openapi_tag = "Operations"

    def __init__(self, redis=None, config=None, models=None):
        self.redis, self.config, self.models = redis, config, models

    def on_get(self, req, resp):
        state = None
        if self.redis is not None:
            state = metrics.StateCollector(self._queue_depths, queries.composition_counts)
        resp.data, resp.content_type = metrics.render(state)

    def _queue_depths(self) -> dict:
        names = expand_queues(["cpu", "gpu", "webhooks"], self.models or ())
        pipe = self.redis.pipeline()
        for name in names:
            pipe.llen(Queue.redis_queue_namespace_prefix + queue_name(self.config, name))
        return dict(zip(names, pipe.execute(), strict=True))


class OpenAPI:
    auth = NONE
    uses_db = False
    openapi_tag = "Operations"

    def __init__(self, build):
        self.build = build

    def on_get(self, req, resp):
        resp.media = self.build(req)
