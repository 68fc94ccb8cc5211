"""Every helper more than one resource uses: JSON bodies, list paging, public URLs, views,
and the composition answer (wait, view, 200/202) shared by the action, composition and
AIMG routes. Resources import from here, never from each other."""

from __future__ import annotations

import functools
import json
import re
import time
from urllib.parse import urlencode

from core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from core.timefmt import iso
from gateway.envelope import ok
from jobs import engine, events, views
from jobs.models import Composition

MAX_LIMIT = 100
MAX_WAIT_S = 60
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+)")


def json_body(req) -> dict:
    """The request body as a JSON object; an empty body is ``{}``."""
    if req.content_length and (req.content_type or "").split(";")[0].strip().lower() not in (
            "", "application/json"):
        raise UnsupportedMediaType("Send the body as JSON with Content-Type: application/json")
    try:
        body = _chunked_json(req) if _is_chunked(req) else req.get_media(default_when_empty={})
    except RecursionError:  # the JSON parser gives up on very deep nesting
        raise InvalidRequest("The JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    field = _nul_field(body)
    if field is not None:  # PostgreSQL text cannot hold NUL: refuse it here, not with a 500
        raise InvalidRequest("Strings must not contain NUL characters",
                             details=[{"field": field, "problem": "must not contain NUL"}])
    return body


def _is_chunked(req) -> bool:
    return req.content_length is None and \
        "chunked" in (req.get_header("Transfer-Encoding") or "").lower()


def _chunked_json(req):
    """A chunked body (no Content-Length): read it, up to the size limit, and parse it.

    Falcon reads only up to Content-Length, so without this a chunked body would look
    empty and an action could run on input the caller never meant."""
    limit = req.context.max_body
    raw = req.stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes")
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Malformed JSON body") from None


def _nul_field(body):
    """The dotted path of the first string (or key) holding a NUL character, else None.

    Iterative, so a deeply nested body cannot exhaust the stack."""
    stack = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "body"
            continue
        items = value.items() if isinstance(value, dict) else \
            enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            here = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return here
            stack.append((here, item))
    return None


def int_param(req, name, default, minimum=1, maximum=None) -> int:
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer",
                             details=[{"field": name, "problem": "must be an integer"}]) from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum else f">= {minimum}"
        raise InvalidRequest(f"{name} must be {bound}",
                             details=[{"field": name, "problem": f"must be {bound}"}])
    return value


def base_url(req, config) -> str:
    """``PUBLIC_BASE_URL`` when set, else this request's own base (see ``jobs.views.base_url``)."""
    return views.base_url(config, req.prefix)


def next_url(req, config, cursor) -> str | None:
    """The full URL of the next page (n8n and Make follow it without expressions)."""
    if cursor is None:
        return None
    params = {k: v for k, v in req.params.items() if k != "cursor"}
    params["cursor"] = cursor
    return f"{base_url(req, config)}{req.path}?{urlencode(params, doseq=True)}"


def ledger_view(entry) -> dict:
    return {
        "id": entry.receipt,
        "txnReceipt": entry.receipt,
        "type": entry.kind,
        "amount": entry.amount,
        "balanceAfter": entry.balance_after,
        "action": entry.action,
        "reason": entry.reason or None,
        "refundOf": entry.refund_of,
        "requestId": entry.request_id,
        "createdAt": iso(entry.created_at),
    }


def key_view(row) -> dict:
    return {
        "keyId": row.id,
        "prefix": row.prefix,
        "description": row.description,
        "createdAt": iso(row.created_at),
        "lastUsedAt": iso(row.last_used_at),
        "revokedAt": iso(row.revoked_at),
        "active": row.revoked_at is None,
    }


def account_view(account) -> dict:
    return {"id": account.id, "username": account.username, "credits": account.balance,
            "plan": account.plan, "createdAt": iso(account.created_at)}


# --- compositions: wait, view, answer (actions, compositions and AIMG routes) ---------------


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


def composition_view(comp, req, config, redis) -> dict:
    """The composition JSON (``jobs.views.composition_json``) with this request's base URL
    and, while queued, its live queue position."""
    return views.composition_json(comp, base_url(req, config),
                                  queue_position=functools.partial(engine.queue_position, redis))


def answer(req, resp, comp, config, redis, **meta):
    """200 when the composition ended, 202 while it is queued or running."""
    data = composition_view(comp, req, config, redis)
    status = 200 if comp.status in Composition.FINAL else 202
    if status == 202:
        resp.set_header("Location", data["links"]["status"])
        resp.set_header("Retry-After", "2")
    ok(req, resp, {"composition": data, "links": data["links"]}, status, **meta)
