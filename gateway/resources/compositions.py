"""Asynchronous results: list, one composition (with waiting), SSE events, cancel, output
files. The composition JSON is ``jobs.views.composition_json`` (via ``common.composition_view``)."""

from __future__ import annotations

import json
import time

from core.errors import InvalidRequest, NotFound
from gateway.envelope import ok
from gateway.middleware import NONE
from gateway.resources.common import (
    MAX_LIMIT,
    STATUSES,
    answer,
    composition_view,
    int_param,
    next_url,
    wait_for,
    wait_seconds,
)
from jobs import engine, events, queries
from jobs.models import Composition
from jobs.storage import content_type


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
        items = [{**composition_view(c, req, self.config, self.redis), "id": c.uid} for c in rows]
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

    def __init__(self, config, redis, clock):
        self.config, self.redis, self.clock = config, redis, clock

    def on_post(self, req, resp, uid):
        comp = engine.cancel(req.context.caller.account_id, uid, self.redis,
                             self.config.redis_prefix, now=self.clock.now())
        ok(req, resp, {"composition": composition_view(comp, req, self.config, self.redis)})


class CompositionEvents:
    """Server-Sent Events: the current state, then every change, until the composition ends."""

    scope = "actions:read"

    openapi_tag = "Compositions"

    def __init__(self, config, redis):
        self.config, self.redis = config, redis

    def on_get(self, req, resp, uid):
        account_id = req.context.caller.account_id
        engine.get(account_id, uid)  # 404 before the stream starts
        queries.release_connection()  # the stream reads on short connections; don't pin one
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")
        resp.stream = self._stream(req, account_id, uid)

    def _stream(self, req, account_id, uid):
        last = None
        deadline = time.monotonic() + 3600  # a stream never outlives an hour
        with events.Listener(self.redis, self.config.redis_prefix, uid) as listener:
            while time.monotonic() < deadline:
                comp = queries.read_composition(account_id, uid)
                data = composition_view(comp, req, self.config, self.redis)
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

