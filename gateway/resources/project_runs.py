"""Project runs (seed 000): ``/api/project/runs/*``. See docs/PROJECTS.md.

A run is the ``run-project`` action: estimate and run go through the same
``ActionService`` as ``POST /zapier/v1/run-project`` (same plan, price, debit and
Idempotency-Key), and every read comes from the run record (``jobs.workflows.runs``),
whose composition holds status and money. The event log is ``RunEvent`` rows: a stream
sends them in order with their row id as the SSE ``id``, so a client resumes with
``Last-Event-ID`` and misses nothing. Redis only wakes streams up.

A reader that finds the composition ended but the run not yet settled (its final event
unwritten, e.g. after a ttl expiry) settles it (``executor.settle``, idempotent).
"""

from __future__ import annotations

import json
import time

from core.errors import Conflict, RateLimited, ServiceUnavailable
from gateway.envelope import ok
from gateway.resources.common import (
    PAGE_QUERY,
    base_url,
    int_schema,
    mark_outcome,
    page_answer,
    page_params,
    parse_int,
    seed_params,
    send_event_stream,
    wait_for,
    wait_seconds,
)
from jobs import events
from jobs.models import Composition
from jobs.workflows import executor, projects, runs
from metering import ledger
from metering.concurrency import FULL
from metering.db import database

ACTION = "run-project"
ACTION_PATH = f"/zapier/v1/{ACTION}"  # one Idempotency-Key namespace with the action route
FINAL_EVENTS = ("run.completed", "run.failed", "run.cancelled")
STREAM_RETRY_AFTER = 5
STREAM_MAX_S = 3600
KEEPALIVE_S = 15
READ, RUN = "actions:read", "actions:run"

ERROR = {"description": "Error envelope (see error.code)",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
LIMITED = {"description": "RATE_LIMITED: too many open streams and waits (or requests); "
                          "see Retry-After",
           "headers": {"Retry-After": {"schema": {"type": "integer"}}},
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
UNAVAILABLE = {"description": "SERVICE_UNAVAILABLE: no event wake-ups (Redis is down); poll "
                              "the run; see Retry-After",
               "headers": {"Retry-After": {"schema": {"type": "integer"}}},
               "content": {"application/json": {"schema": {
                   "$ref": "#/components/schemas/Error"}}}}


def _header(description, schema_type="string"):
    return {"description": description, "schema": {"type": schema_type}}


# The envelope's meta of a charged stream (it has no envelope to carry it)
RUN_HEADERS = {
    "X-Run-ID": _header("The run (its record: Location)"),
    "Location": _header("The run record's URL"),
    "X-Txn-Receipt": _header("The debit's receipt (absent when nothing was charged)"),
    "X-Credits-Used": _header("Credits debited", "integer"),
    "X-Available-Credit": _header("The balance after the debit (with X-Txn-Receipt)",
                                  "integer"),
    "X-TTL": _header("Milliseconds the run may take before it is failed and refunded",
                     "integer"),
}


def _sse_responses(method, description, headers=None) -> dict:
    return {method: {
        "200": {"description": description,
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                **({"headers": headers} if headers else {})},
        "429": LIMITED, "503": UNAVAILABLE, "default": ERROR}}


RUN_ID_QUERY = {"name": "project_id", "in": "query", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 40},
                "description": "Only this project's runs."}
LAST_EVENT_QUERY = {"name": "last_event_id", "in": "query", "required": False,
                    "schema": int_schema(0), "description": "Resume after this event id "
                                                            "(also the Last-Event-ID header)."}
LAST_EVENT_HEADER = {"name": "Last-Event-ID", "in": "header", "required": False,
                     "schema": int_schema(0)}
WAIT_QUERY = {"name": "wait", "in": "query", "required": False,
              "description": "Seconds to wait for the run to end (0-60; also Prefer: wait=N).",
              "schema": int_schema(0, 60)}
RETRY_BODY = {"type": "object", "properties": {
    "from": {"enum": ["failed", "start"], "default": "failed",
             "description": "failed: reuse the outputs of the nodes that completed (cached, "
                            "free); start: run every node again."},
    "callback_url": {"type": "string", "format": "uri", "maxLength": 2048,
                     "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}},
    "additionalProperties": False}


def _short(fn, *args):
    """One read on a connection opened for it, so a long stream pins no pooled one."""
    with database.connection_context():
        return fn(*args)


def sse(event) -> bytes:
    """One RunEvent as an SSE message: its row id, its type, its data."""
    return f"id: {event.id}\nevent: {event.event}\ndata: {event.data}\n\n".encode()


def _settled(account_id, uid) -> tuple[bool, bool]:
    """``(ended, settled)``; an ended, unsettled run is settled here (idempotent)."""
    comp, run, _ = runs.get_run(account_id, uid)
    ended = comp.status in Composition.FINAL
    if ended and not run.settled:
        executor.settle(uid)
        return True, False
    return ended, bool(run.settled)


def event_stream(account_id, uid, after, listener, lease):
    """The run's events after ``after`` until its final event. Without a listener (the run
    had ended before the stream began, or Redis failed) it sends what is there and ends."""
    deadline = time.monotonic() + STREAM_MAX_S
    while time.monotonic() < deadline:
        batch = _short(runs.events_after, uid, after)
        for event in batch:
            after = event.id
            yield sse(event)
            if event.event in FINAL_EVENTS:
                return
        if batch:
            continue
        ended, settled = _short(_settled, account_id, uid)
        if ended and not settled:
            continue  # just settled: its final event is there now
        if ended or listener is None:
            if listener is None and not ended:
                yield f"retry: {STREAM_RETRY_AFTER * 1000}\n\n".encode()
            return
        lease.renew()
        try:
            woke = listener.wait(KEEPALIVE_S)
        except events.Unavailable:  # Redis went away: resume later with Last-Event-ID
            yield f"retry: {STREAM_RETRY_AFTER * 1000}\n\n".encode()
            return
        if not woke:
            yield b": keep-alive\n\n"


def _full_message(scope, slots) -> str:
    if scope == "credential":
        return (f"This credential already has {slots.per_credential} open streams or waits; "
                "close one or poll GET /api/project/runs/{run_id}")
    return "The server has no free stream slots; retry later or poll the run"


UNAVAILABLE_MESSAGE = ("Run events are unavailable right now; poll "
                       "GET /api/project/runs/{run_id} instead")


class _Runs:
    def __init__(self, deps):
        self.deps, self.config, self.redis = deps, deps.config, deps.redis
        self.slots, self.clock, self.service = deps.wait_slots, deps.clock, deps.actions
        self.prefix = deps.config.redis_prefix

    def _record(self, req, account_id, uid) -> dict:
        comp, run, nodes = runs.get_run(account_id, uid)
        return runs.run_json(comp, run, nodes, base_url(req, self.config))

    def _lease(self, caller):
        """A wait slot for a stream, or 429 (over the cap) / 503 (Redis down)."""
        lease = self.slots.acquire(caller.rate_key)
        if lease.reason == FULL:
            raise RateLimited(_full_message(lease.scope, self.slots),
                              retry_after=STREAM_RETRY_AFTER)
        if not lease.held:
            raise ServiceUnavailable(UNAVAILABLE_MESSAGE, retry_after=STREAM_RETRY_AFTER)
        return lease

    def _listener(self, uid):
        try:
            return events.Listener(self.redis, self.prefix, uid)
        except events.Unavailable:
            return None

    def _stream(self, resp, account_id, uid, after, listener, lease):
        send_event_stream(resp, event_stream(account_id, uid, after, listener, lease),
                          listener, lease)


class RunEstimate(_Runs):
    """What a run would cost, node by node, without running or charging anything.

    The same plan as the run (same project, variables, seed and cache): send the seed
    to get exactly the charge of a run with that seed; without one a random seed is used
    (returned), so seeded nodes are not cache hits."""

    scope = READ
    openapi_tag = "Project runs"

    def __init__(self, deps):
        super().__init__(deps)
        self.schema = deps.registry.get(ACTION).json_schema()
        self.openapi_body = {"post": self.schema}

    def on_post(self, req, resp):
        account_id = req.context.caller.account_id
        action, data = self.service.prepare(ACTION, seed_params(req, self.schema), account_id)
        credits = self.service.quote(action, data)
        balance = ledger.balance(account_id)
        plan = data["_plan"]
        ok(req, resp, {
            "estimated_cost": credits, "seed": plan["seed"], "variables": plan["variables"],
            "project": {"project_id": data["_project"]["id"],
                        "name": data["_project"]["name"]},
            "nodes": [{"id": n["id"], "type": n["type"], "credits": n["credits"],
                       "status": n["status"]} for n in plan["nodes"]],
            "balance": balance, "affordable": balance >= credits}, action=ACTION)


class RunStart(_Runs):
    """Run a project and stream its events (text/event-stream) until the run ends.

    Charged once at start, exactly the estimate. Problems before the charge (validation,
    credits, Idempotency-Key, stream caps) are JSON error envelopes; after it, the stream:
    `id:` the event id, `event:` its type (run.started, node.cached, node.started,
    node.progress, node.completed, node.failed, then run.completed, run.failed or
    run.cancelled), `data:` JSON. Headers: X-Run-ID, Location (the run record),
    X-Txn-Receipt, X-Credits-Used, X-Available-Credit and X-TTL (the envelope's meta).
    If the connection drops, GET
    /api/project/runs/{run_id}/events with Last-Event-ID resumes it."""

    scope = RUN
    openapi_tag = "Project runs"
    openapi_idempotent = True
    openapi_responses = _sse_responses("post", "text/event-stream of the run's events",
                                       RUN_HEADERS)

    def __init__(self, deps):
        super().__init__(deps)
        self.schema = deps.registry.get(ACTION).json_schema()
        self.openapi_body = {"post": self.schema}

    def on_post(self, req, resp):
        params = seed_params(req, self.schema)
        caller = req.context.caller
        lease = self._lease(caller)  # before the charge: a refused stream costs nothing
        try:
            outcome = self.service.run(
                caller, ACTION, params, idempotency_key=req.get_header("Idempotency-Key"),
                request_id=req.context.request_id, method="POST", path=ACTION_PATH)
        except BaseException:
            lease.release()
            raise
        uid = outcome.composition_uid
        self._headers(req, resp, outcome, uid)
        self._stream(resp, caller.account_id, uid, 0, self._listener(uid), lease)

    def _headers(self, req, resp, outcome, uid):
        mark_outcome(resp, ACTION, outcome)
        resp.set_header("X-Run-ID", uid)
        resp.set_header("Location", f"{base_url(req, self.config)}/api/project/runs/{uid}")
        # A stream has no envelope: its meta (CONTRACT 1) travels as headers.
        if outcome.meta.get("txnReceipt"):
            resp.set_header("X-Txn-Receipt", outcome.meta["txnReceipt"])
            resp.set_header("X-Available-Credit", str(outcome.meta["availableCredit"]))
        resp.set_header("X-Credits-Used", str(outcome.meta.get("creditsUsed", 0)))
        if outcome.meta.get("ttl"):
            resp.set_header("X-TTL", str(outcome.meta["ttl"]))


class RunList(_Runs):
    """Your runs, newest first (project_id narrows; page, limit 1-100, default 50).

    A project_id you cannot see (someone else's private project) is 404."""

    scope = READ
    openapi_tag = "Project runs"
    openapi_query = {"get": [RUN_ID_QUERY, *PAGE_QUERY]}

    def on_get(self, req, resp):
        params = seed_params(req, {"type": "object", "properties": {
            "project_id": RUN_ID_QUERY["schema"]}})
        page, limit = page_params(req)
        account_id = req.context.caller.account_id
        rows, total = runs.list_runs(account_id, params.get("project_id"), page, limit)
        if total == 0 and params.get("project_id"):  # a project you cannot see: 404
            projects.get_visible(account_id, params["project_id"])
        base = base_url(req, self.config)
        ok(req, resp, page_answer(req, self.config, "runs",
                                  [runs.run_json(c, r, n, base) for c, r, n in rows],
                                  total, page, limit))


class RunItem(_Runs):
    """One of your runs: status, progress, per-node states, outputs, money (the source of
    truth; ?wait=N waits up to N seconds for it to end)."""

    scope = READ
    openapi_tag = "Project runs"
    openapi_query = {"get": [WAIT_QUERY]}

    def on_get(self, req, resp, run_id):
        caller = req.context.caller
        seconds = wait_seconds(req, 0)
        runs.get_run(caller.account_id, run_id)  # 404 before any wait
        comp = wait_for(self.slots, self.redis, self.prefix, caller, run_id, seconds)
        if comp.status in Composition.FINAL:
            _settled(caller.account_id, run_id)
        ok(req, resp, self._record(req, caller.account_id, run_id))


class RunEvents(_Runs):
    """Server-Sent Events of one run from the start (or after Last-Event-ID /
    ?last_event_id=) until its final event; an ended run replays its log and ends."""

    scope = READ
    openapi_tag = "Project runs"
    openapi_query = {"get": [LAST_EVENT_QUERY, LAST_EVENT_HEADER]}
    openapi_responses = _sse_responses("get", "text/event-stream: `id:` event id, `event:` "
                                              "type, `data:` JSON")

    def on_get(self, req, resp, run_id):
        caller = req.context.caller
        after = self._after(req)
        comp, run, _ = runs.get_run(caller.account_id, run_id)  # 404 before the stream
        lease = listener = None
        if comp.status not in Composition.FINAL:
            lease = self._lease(caller)
            listener = self._listener(run_id)
            if listener is None:
                lease.release()
                raise ServiceUnavailable(UNAVAILABLE_MESSAGE, retry_after=STREAM_RETRY_AFTER)
        self._stream(resp, caller.account_id, run_id, after, listener, lease)

    @staticmethod
    def _after(req) -> int:
        raw = req.get_param("last_event_id")
        if raw is not None:
            return parse_int(raw, "last_event_id", 0)
        header = req.get_header("Last-Event-ID")
        return 0 if header is None else parse_int(header.strip(), "Last-Event-ID", 0)


class RunCancel(_Runs):
    """Cancel your run: nodes stop, and every node that did not complete is refunded in
    one refund row. A run that already ended is 409 CONFLICT."""

    scope = RUN
    openapi_tag = "Project runs"

    def on_post(self, req, resp, run_id):
        account_id = req.context.caller.account_id
        runs.get_run(account_id, run_id)  # 404 for a composition that is not a run
        executor.cancel(account_id, run_id, self.redis, self.prefix, now=self.clock.now(),
                        config=self.config)
        ok(req, resp, self._record(req, account_id, run_id))


class RunRetry(_Runs):
    """Run an ended run's project again with its seed and variables; 202 the new run.

    from=failed (default) reuses the outputs of the nodes that completed (your cache:
    free), from=start runs every node again. The graph that run ran is run again, even
    if the project was changed or deleted since. Charged like any run."""

    scope = RUN
    openapi_tag = "Project runs"
    openapi_idempotent = True
    openapi_body = {"post": RETRY_BODY}

    def on_post(self, req, resp, run_id):
        params = seed_params(req, RETRY_BODY)
        caller = req.context.caller
        comp, run, _ = runs.get_run(caller.account_id, run_id)
        if comp.status not in Composition.FINAL:
            raise Conflict(f"The run has not ended yet ({comp.status}); cancel it first")
        body = {"project_id": run.project, "seed": run.seed,
                "variables": {k: v for k, v in json.loads(run.variables or "{}").items()
                              if v is not None},
                "use_cache": params.get("from", "failed") == "failed", "retry_of": run_id}
        if params.get("callback_url"):
            body["callback_url"] = params["callback_url"]
        outcome = self.service.run(
            caller, ACTION, body, idempotency_key=req.get_header("Idempotency-Key"),
            request_id=req.context.request_id, method="POST", path=req.path)
        if outcome.replayed:
            resp.set_header("Idempotent-Replayed", "true")
        uid = outcome.composition_uid
        record = self._record(req, caller.account_id, uid)
        resp.set_header("Location", record["links"]["self"])
        ok(req, resp, record, 202, **outcome.meta)
