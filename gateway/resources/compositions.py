"""Asynchronous results: the composition view, waiting, SSE events, cancel, output files."""

from __future__ import annotations

import json
import re
import time

from core.errors import InvalidRequest, NotFound
from core.timefmt import iso
from gateway.envelope import ok
from gateway.middleware import NONE
from gateway.resources.common import MAX_LIMIT, base_url, int_param, next_url
from jobs import engine, events
from jobs.models import Composition
from jobs.storage import content_type
from metering.db import database

MAX_WAIT_S = 60
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+)")


def wait_seconds(req, default) -> int:
    """``?wait=N`` or ``Prefer: wait=N`` (RFC 7240), 0-60 seconds."""
    raw = req.get_param("wait")
    if raw is None:
        match = PREFER_WAIT.search(req.get_header("Prefer") or "")
        raw = match.group(1) if match else None
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > MAX_WAIT_S:
        raise InvalidRequest(f"wait must be an integer from 0 to {MAX_WAIT_S}",
                             details=[{"field": "wait", "problem": f"0-{MAX_WAIT_S} seconds"}])
    return int(raw)


def wait_for(redis, prefix, account_id, uid, seconds) -> Composition:
    """The composition once it ended, or as it is after ``seconds``."""
    deadline = time.monotonic() + seconds
    with events.Listener(redis, prefix, uid) as listener:
        while True:
            comp = engine.get(account_id, uid)
            remaining = deadline - time.monotonic()
            if comp.status in Composition.FINAL or remaining <= 0:
                return comp
            listener.wait(min(remaining, 1.0))


def view(comp, req, config, redis) -> dict:
    base = base_url(req, config)
    out = {
        "uid": comp.uid, "action": comp.action, "status": comp.status,
        "progress": comp.progress, "outputs": json.loads(comp.outputs),
        "error": json.loads(comp.error) if comp.error else None,
        "txnReceipt": comp.receipt, "refundReceipt": comp.refund_receipt,
        "creditsUsed": comp.credits, "createdAt": iso(comp.created_at),
        "startedAt": iso(comp.started_at), "finishedAt": iso(comp.finished_at),
        "links": {"status": f"{base}/zapier/v1/compositions/{comp.uid}",
                  "events": f"{base}/zapier/v1/compositions/{comp.uid}/events",
                  "cancel": f"{base}/zapier/v1/compositions/{comp.uid}/cancel"},
    }
    if comp.status == Composition.QUEUED:
        out["queuePosition"] = engine.queue_position(redis, comp.uid)
    return out


def answer(req, resp, comp, config, redis, **meta):
    """200 when the composition ended, 202 while it is queued or running."""
    data = view(comp, req, config, redis)
    status = 200 if comp.status in Composition.FINAL else 202
    if status == 202:
        resp.set_header("Location", data["links"]["status"])
        resp.set_header("Retry-After", "2")
    ok(req, resp, {"composition": data, "links": data["links"]}, status, **meta)


class CompositionList:
    """The caller's compositions, newest first (``status`` and ``action`` filters)."""

    scope = "actions:read"
    openapi_tag = "Compositions"
    openapi_query = {"get": [
        {"name": "status", "in": "query", "required": False,
         "schema": {"enum": ["queued", "running", "completed", "failed", "cancelled"]}},
        {"name": "action", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}]}

    def __init__(self, config, redis):
        self.config, self.redis = config, redis

    def on_get(self, req, resp):
        status = req.get_param("status")
        if status is not None and status not in STATUSES:
            raise InvalidRequest("status must be one of " + ", ".join(STATUSES),
                                 details=[{"field": "status", "problem": "unknown status"}])
        rows, cursor = engine.list_compositions(
            req.context.caller.account_id, limit=int_param(req, "limit", 50, 1, MAX_LIMIT),
            cursor=req.get_param("cursor"), status=status, action=req.get_param("action"))
        items = [{**view(c, req, self.config, self.redis), "id": c.uid} for c in rows]
        ok(req, resp, {"items": items, "next": next_url(req, self.config, cursor)})


class CompositionItem:
    """One composition: status, progress, outputs, error and refund receipt."""

    scope = "actions:read"

    openapi_tag = "Compositions"
    openapi_query = {"get": [{"name": "wait", "in": "query", "required": False,
                              "schema": {"type": "integer", "minimum": 0, "maximum": 60}}]}

    def __init__(self, config, redis):
        self.config, self.redis = config, redis

    def on_get(self, req, resp, uid):
        account_id = req.context.caller.account_id
        seconds = wait_seconds(req, 0)
        comp = wait_for(self.redis, self.config.redis_prefix, account_id, uid, seconds)
        answer(req, resp, comp, self.config, self.redis)


class CompositionCancel:
    """Cancel: queued ends now with a refund; running stops at its next checkpoint."""

    scope = "actions:run"

    openapi_tag = "Compositions"

    def __init__(self, config, redis):
        self.config, self.redis = config, redis

    def on_post(self, req, resp, uid):
        comp = engine.cancel(req.context.caller.account_id, uid, self.redis,
                             self.config.redis_prefix)
        ok(req, resp, {"composition": view(comp, req, self.config, self.redis)})


class CompositionEvents:
    """Server-Sent Events: the current state, then every change, until the composition ends."""

    scope = "actions:read"

    openapi_tag = "Compositions"

    def __init__(self, config, redis):
        self.config, self.redis = config, redis

    def on_get(self, req, resp, uid):
        account_id = req.context.caller.account_id
        engine.get(account_id, uid)  # 404 before the stream starts
        database.close()  # the stream re-opens briefly per event; don't pin a pooled conn
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = self._stream(req, account_id, uid)

    def _stream(self, req, account_id, uid):
        last = None
        deadline = time.monotonic() + 3600  # a stream never outlives an hour
        with events.Listener(self.redis, self.config.redis_prefix, uid) as listener:
            while time.monotonic() < deadline:
                with database.connection_context():
                    comp = engine.get(account_id, uid)
                    data = view(comp, req, self.config, self.redis)
                if comp.status == Composition.RUNNING:  # per-step events run ahead of the row
                    data["progress"] = max(comp.progress, min(99, listener.progress))
                if (comp.status, data["progress"]) != last:
                    last = (comp.status, data["progress"])
                    final = comp.status in Composition.FINAL
                    yield (f"event: {'end' if final else 'progress'}\nid: {data['progress']}\n"
                           f"data: {json.dumps(data)}\n\n").encode()
                    if final:
                        return
                if not listener.wait(15):
                    yield b": keep-alive\n\n"


class OutputFile:
    """A composition's output file, public at an unguessable URL like a CDN object."""

    auth = NONE
    uses_db = False
    openapi_tag = "Compositions"

    def __init__(self, storage):
        self.storage = storage

    def on_get(self, req, resp, uid, name):
        path = self.storage.path(uid, name)
        if path is None:
            raise NotFound("No such output")
        resp.content_type = content_type(name)
        resp.set_header("Cache-Control", "public, max-age=31536000, immutable")
        resp.stream = open(path, "rb")  # noqa: SIM115 (Falcon closes the stream)
        resp.content_length = path.stat().st_size

