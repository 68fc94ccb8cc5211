"""Operations routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import falcon

from gateway import metrics
from gateway.envelope import error, meta
from gateway.middleware import NONE
from metering.db import database


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
        checks = {"database": _check(_db_ping), "redis": _check(self.redis.ping)}
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


def _db_ping():
    opened = database.connect(reuse_if_open=True)
    try:
        database.execute_sql("SELECT 1")
    finally:
        if opened:
            database.close()


def _worker_count(redis):
    from rq import Worker

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
            state = metrics.StateCollector(self._queue_depths, _outcomes)
        resp.data, resp.content_type = metrics.render(state)

    def _queue_depths(self) -> dict:
        from rq import Queue

        from jobs import engine

        names = engine.expand_queues(["cpu", "gpu", "webhooks"], self.models or ())
        pipe = self.redis.pipeline()
        for name in names:
            pipe.llen(Queue.redis_queue_namespace_prefix + engine.queue_name(self.config, name))
        return dict(zip(names, pipe.execute(), strict=True))


def _outcomes() -> dict:
    from peewee import fn

    from jobs.models import Composition

    rows = (Composition.select(Composition.action, Composition.status,
                               fn.COUNT(Composition.uid).alias("n"))
            .group_by(Composition.action, Composition.status).tuples())
    return {(action, status): n for action, status, n in rows}


class OpenAPI:
    auth = NONE
    uses_db = False
    openapi_tag = "Operations"

    def __init__(self, build):
        self.build = build

    def on_get(self, req, resp):
        resp.media = self.build(req)
