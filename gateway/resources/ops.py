"""Operations routes: liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import falcon
from rq import Queue

from gateway import metrics
from gateway.envelope import error, meta
from gateway.middleware import NONE
from jobs import engine, queries
from jobs.queues import expand_queues, gpu_queue, queue_name
from metering import db


class Health:
    """Liveness: plain ``OK`` without touching the database (seed 004)."""

    auth = NONE
    uses_db = False
    openapi_tag = "Operations"
    openapi_responses = {"get": {"200": {"description": "The text OK",
                                         "content": {"text/plain": {"schema": {
                                             "type": "string", "const": "OK"}}}}}}

    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "OK"


class Ready:
    """Readiness (CONTRACT 8): the database and Redis answer and every queue the product
    needs has a live worker; otherwise 503, still in the envelope, with ``Retry-After``.

    Needed queues: ``cpu`` and ``webhooks`` always, and each configured model's
    ``gpu.<id>``. A worker is live while its RQ heartbeat is fresh
    (``jobs.engine.live_workers``)."""

    auth = NONE
    uses_db = False
    openapi_tag = "Operations"

    def __init__(self, redis, config=None, models=()):
        self.redis, self.config, self.models = redis, config, models or ()

    def needed_queues(self) -> list[str]:
        return ["cpu", "webhooks", *(gpu_queue(m.id) for m in self.models)]

    def on_get(self, req, resp):
        checks = {"database": _check(db.ping), "redis": _check(self.redis.ping)}
        if checks["redis"]["ok"]:
            checks["workers"] = _check(self._workers)
        else:
            checks["workers"] = {"ok": False, "error": "RedisUnavailable"}
        if all(check["ok"] for check in checks.values()):
            resp.media = {"success": True, "data": {"status": "ready", "checks": checks},
                          "meta": meta(req)}
            return
        if checks["database"]["ok"] and checks["redis"]["ok"]:
            missing = ", ".join(checks["workers"].get("missing", ()))
            message = f"No live worker serves: {missing}" if missing else \
                "The workers could not be checked"
        else:
            message = "A backend service is down"
        resp.status = falcon.HTTP_503
        resp.set_header("Retry-After", str(RETRY_AFTER_S))
        body = error(req, "SERVICE_UNAVAILABLE", message, 503)
        body["data"] = {"status": "unavailable", "checks": checks}
        resp.media = body

    def _workers(self) -> dict:
        """Live workers per needed queue; not ok when one of them has none."""
        per_queue, count = engine.live_workers(self.redis, self.config, self.needed_queues())
        missing = [name for name, n in per_queue.items() if not n]
        return {"ok": not missing, "count": count, "queues": per_queue, "missing": missing}


RETRY_AFTER_S = 5


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
    openapi_responses = {"get": {"200": {
        "description": "Prometheus text exposition format",
        "content": {"text/plain; version=1.0.0": {"schema": {"type": "string"}}}}}}

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
    """This OpenAPI 3.1 document (gateway.openapi), built from the route table."""

    auth = NONE
    uses_db = False
    openapi_tag = "Operations"
    openapi_responses = {"get": {"200": {
        "description": "The OpenAPI 3.1 document (plain JSON, not the envelope)",
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"const": "3.1.0"}, "info": {"type": "object"},
                           "paths": {"type": "object"}}}}}}}}

    def __init__(self, build):
        self.build = build

    def on_get(self, req, resp):
        resp.media = self.build(req)
