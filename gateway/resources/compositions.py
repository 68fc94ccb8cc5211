"""Asynchronous results: list, one composition (with waiting), SSE events, cancel, output
files. The composition JSON is ``jobs.views.composition_json`` (via ``common.composition_view``).

Waits and streams hold a server thread each, so both take a slot of
``metering.concurrency.WaitSlots`` first: a wait over the cap answers the current state at
once, a stream over the cap is 429 ``RATE_LIMITED``. Reading a composition never needs
Redis; with Redis down a wait answers the current state and a stream 503."""

from __future__ import annotations

import json
import time

from core.errors import InvalidRequest, NotFound, RateLimited, ServiceUnavailable
from gateway.envelope import ok
from gateway.middleware import NONE
from gateway.resources.common import (
    MAX_LIMIT,
    STATUSES,
    answer,
    composition_view,
    int_param,
    next_url,
    once,
    send_event_stream,
    wait_for,
    wait_seconds,
)
from jobs import engine, events, queries
from jobs.content.models import ContentItem
from jobs.models import Composition
from jobs.storage import content_type
from jobs.workflows import executor
from metering.concurrency import FULL

STREAM_RETRY_AFTER = 5  # seconds: when a refused stream may try again
STREAM_MAX_S = 3600  # a stream never outlives an hour
KEEPALIVE_S = 15  # a comment line this often keeps proxies from closing an idle stream
RUN_PROJECT = "run-project"  # cancelled through the workflow executor (nodes + settle)


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

    def __init__(self, config, redis, slots):
        self.config, self.redis, self.slots = config, redis, slots

    def on_get(self, req, resp, uid):
        seconds = wait_seconds(req, 0)
        comp = wait_for(self.slots, self.redis, self.config.redis_prefix, req.context.caller,
                        uid, seconds)
        answer(req, resp, comp, self.config, self.redis)


class CompositionCancel:
    """Cancel: queued ends now with a refund; running stops at its next checkpoint (a
    project run ends at once: its nodes stop, and what did not complete is refunded)."""

    scope = "actions:run"

    openapi_tag = "Compositions"
    openapi_idempotent = True

    def __init__(self, config, redis, clock):
        self.config, self.redis, self.clock = config, redis, clock

    def on_post(self, req, resp, uid):
        account_id = req.context.caller.account_id
        action = engine.get(account_id, uid).action  # NOT_FOUND before a key is claimed

        def cancel():
            if action == RUN_PROJECT:  # the executor settles it
                executor.cancel(account_id, uid, self.redis, self.config.redis_prefix,
                                now=self.clock.now(), config=self.config)
            else:
                engine.cancel(account_id, uid, self.redis, self.config.redis_prefix,
                              now=self.clock.now())
            comp = engine.get(account_id, uid)
            return 200, {"composition": composition_view(comp, req, self.config,
                                                         self.redis)}, None

        # A retried cancel with its key replays the first answer, not 409 "already ended".
        once(req, resp, "cancel", {"uid": uid}, cancel, clock=self.clock, config=self.config)


class CompositionEvents:
    """Server-Sent Events: the current state, then every change, until the composition ends.

    An open stream holds a server thread and a wait slot (per credential and in all): over
    the cap it is refused with 429 ``RATE_LIMITED`` and ``Retry-After``; with Redis down
    (no events to stream) 503 ``SERVICE_UNAVAILABLE`` with ``Retry-After``. Both are
    answered before the stream starts, as envelopes. An ended composition streams its
    ``end`` event without a slot or Redis."""

    scope = "actions:read"

    openapi_tag = "Compositions"
    openapi_responses = {"get": {
        "200": {"description": "text/event-stream: `event: progress` per change, then "
                               "`event: end`, each with the composition as `data`",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        "429": {"description": "RATE_LIMITED: too many open streams and waits (or requests); "
                               "see Retry-After",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Error"}}}},
        "503": {"description": "SERVICE_UNAVAILABLE: no progress events (Redis is down); "
                               "poll the composition; see Retry-After",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Error"}}}},
        "default": {"description": "Error envelope (see error.code)",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Error"}}}}}}

    def __init__(self, config, redis, slots):
        self.config, self.redis, self.slots = config, redis, slots

    def on_get(self, req, resp, uid):
        caller = req.context.caller
        comp = engine.get(caller.account_id, uid)  # 404 before the stream starts
        lease = listener = None
        if comp.status not in Composition.FINAL:
            lease = self.slots.acquire(caller.rate_key)
            if lease.reason == FULL:
                raise RateLimited(_full_message(lease.scope, self.slots),
                                  retry_after=STREAM_RETRY_AFTER)
            if not lease.held:
                raise ServiceUnavailable(UNAVAILABLE_MESSAGE, retry_after=STREAM_RETRY_AFTER)
            try:  # subscribe before the first read, so no change is missed
                listener = events.Listener(self.redis, self.config.redis_prefix, uid)
            except events.Unavailable:
                lease.release()
                raise ServiceUnavailable(UNAVAILABLE_MESSAGE,
                                         retry_after=STREAM_RETRY_AFTER) from None
        send_event_stream(resp, self._stream(req, caller.account_id, uid, listener, lease),
                          listener, lease)

    def _stream(self, req, account_id, uid, listener, lease):
        last = None
        deadline = time.monotonic() + STREAM_MAX_S
        while time.monotonic() < deadline:
            try:
                comp = queries.read_composition(account_id, uid)
            except NotFound:  # gone (an operator removed it): nothing more to say
                return
            data = composition_view(comp, req, self.config, self.redis)
            if listener is not None and comp.status == Composition.RUNNING:
                # per-step events run ahead of the row
                data["progress"] = max(comp.progress, min(99, listener.progress))
            if (comp.status, data["progress"]) != last:
                last = (comp.status, data["progress"])
                final = comp.status in Composition.FINAL
                yield (f"event: {'end' if final else 'progress'}\nid: {data['progress']}\n"
                       f"data: {json.dumps(data)}\n\n").encode()
                if final:
                    return
            if listener is None:  # ended before the stream started; nothing to listen to
                return
            lease.renew()
            try:
                woke = listener.wait(KEEPALIVE_S)
            except events.Unavailable:  # Redis went away: end; the client reconnects later
                yield f"retry: {STREAM_RETRY_AFTER * 1000}\n\n".encode()
                return
            if not woke:
                yield b": keep-alive\n\n"


UNAVAILABLE_MESSAGE = ("Progress events are unavailable right now; poll "
                       "GET /zapier/v1/compositions/{uid} instead")


def _full_message(scope, slots) -> str:
    if scope == "credential":
        return (f"This credential already has {slots.per_credential} open streams or waits; "
                "close one or poll GET /zapier/v1/compositions/{uid}")
    return "The server has no free stream slots; retry later or poll the composition"


class OutputFile:
    """A composition's output file that is not a content item (a JSON result, a project
    run's intermediate node output), at an unguessable URL. Images and videos an action
    or run hands back are content items behind signed links (``/links/...``) instead,
    and are not served here."""

    auth = NONE
    openapi_tag = "Compositions"
    openapi_responses = {"get": {
        "200": {"description": "The file's bytes with its Content-Type (JSON results are "
                               "application/json); cached as immutable",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
        "404": {"description": "NOT_FOUND: no such output (or one served as a content item)",
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Error"}}}},
        "default": {"description": "Error envelope (see error.code)",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Error"}}}}}}

    def __init__(self, storage):
        self.storage = storage

    def on_get(self, req, resp, uid, name):
        path = self.storage.path(uid, name)
        if path is None or ContentItem.select().where(
                ContentItem.composition_uid == uid, ContentItem.filename == name).exists():
            raise NotFound("No such output")
        resp.content_type = content_type(name)
        resp.set_header("Cache-Control", "public, max-age=31536000, immutable")
        resp.stream = open(path, "rb")  # noqa: SIM115 (Falcon closes the stream)
        resp.content_length = path.stat().st_size

