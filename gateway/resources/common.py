"""Every helper more than one resource uses: JSON bodies, list paging, public URLs, views,
and the composition answer (wait, view, 200/202) shared by the action, composition and
AIMG routes. Resources import from here, never from each other."""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import falcon
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from actions.registry import check_schema
from core.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from core.timefmt import iso
from gateway import metrics
from gateway.edge import strict_loads
from gateway.envelope import ok
from jobs import engine, events, queries, views
from jobs.content import library as lib
from jobs.models import Composition
from metering import idempotency
from metering.cursors import MAX_LIMIT, MAX_PAGE_NO

MAX_WAIT_S = 60
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d+)")


def json_body(req) -> dict:
    """The request body as a JSON object; an empty body is ``{}``. Read once per request
    (the body schema check and the responder share it; a chunked stream reads once)."""
    cached = getattr(req.context, "json_body", None)
    if cached is None:
        cached = req.context.json_body = _read_json_body(req)
    return cached


def _read_json_body(req) -> dict:
    if req.content_length and (req.content_type or "").split(";")[0].strip().lower() not in (
            "", "application/json"):
        raise UnsupportedMediaType("Send the body as JSON with Content-Type: application/json")
    try:
        body = _chunked_json(req) if _is_chunked(req) else req.get_media(default_when_empty={})
    except RecursionError:  # the JSON parser gives up on very deep nesting
        raise InvalidRequest("The JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object")
    return body  # NUL and unpaired surrogates were refused by the parser (gateway.edge)


def _is_chunked(req) -> bool:
    return req.content_length is None and \
        "chunked" in (req.get_header("Transfer-Encoding") or "").lower()


def body_stream(req):
    """The request body as a stream: Falcon's bounded stream stops at Content-Length, so a
    chunked body (none) is read from the server's own stream, which ends where it ends."""
    return req.stream if _is_chunked(req) else req.bounded_stream


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
        return strict_loads(raw)  # the same parser as every other JSON body (gateway.edge)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("Malformed JSON body") from None


def read_multipart(req, config, text_fields, *, file_field="file", max_bytes=None):
    """``(staged file, text fields)`` of a multipart/form-data upload, the file streamed to
    a staged temp file part by part (never held in memory); parts not named in
    ``text_fields`` are skipped unread. Refuses a body that is not multipart (415) or has
    no file (400). Shared by ``/upload`` (seed 002) and ``/uploadFile`` (seed 003)."""
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise UnsupportedMediaType("Send the file as multipart/form-data with a `file` part")
    staged, fields = None, {}
    try:
        try:
            for part in req.get_media():
                if part.name == file_field and (part.filename is not None or staged is None):
                    if staged is not None:
                        raise InvalidRequest("Send one file per upload", details=[
                            {"field": file_field, "problem": "sent more than once"}])
                    staged = lib.stage_stream(config, part.stream,
                                              filename=part.secure_filename
                                              if part.filename else "", field=file_field,
                                              max_bytes=max_bytes)
                elif part.name in text_fields:
                    if part.name in fields:  # which one was meant? refuse, as forms do
                        raise InvalidRequest(f"{part.name} was sent more than once", details=[
                            {"field": part.name, "problem": "sent more than once"}])
                    fields[part.name] = part.get_text()
                else:
                    part.stream.exhaust()
        except falcon.MediaMalformedError as exc:
            raise InvalidRequest(f"Malformed multipart body: {exc.description or 'unreadable'}"
                                 ) from None
        if staged is None:
            raise InvalidRequest("file: is required (a multipart part named file)",
                                 details=[{"field": file_field, "problem": "is required"}])
        return staged, fields
    except BaseException:
        if staged is not None:
            staged.discard()
        raise


INT64_MAX = 2**63 - 1  # the widest integer column; every integer parameter stays within it
ASCII_INT = re.compile(r"-?[0-9]{1,19}")  # int() also takes "+", spaces, "_", non-ASCII digits


def parse_int(raw: str, name: str, minimum: int = 1, maximum: int = INT64_MAX) -> int:
    """``raw`` as an integer of ASCII digits within ``minimum``-``maximum``, else 400
    ``INVALID_REQUEST`` naming ``name``: the one integer parser of query parameters."""
    if ASCII_INT.fullmatch(raw) and minimum <= int(raw) <= maximum:
        return int(raw)
    problem = f"must be an integer from {minimum} to {maximum}"
    if not re.fullmatch(r"-?[0-9]+", raw):
        problem += " in ASCII digits"
    raise InvalidRequest(f"{name} {problem}", details=[{"field": name, "problem": problem}])


def int_param(req, name, default, minimum=1, maximum=INT64_MAX) -> int:
    """The query parameter ``name`` (``parse_int``); absent: ``default``. Sent empty
    (``limit=``) it is not an integer: 400, as the OpenAPI document's schema says."""
    raw = req.get_param(name)
    if raw is None:
        return default
    return parse_int(raw, name, minimum, maximum)


def int_schema(minimum=1, maximum=INT64_MAX) -> dict:
    """The OpenAPI schema of an ``int_param``, so the document states the same bounds."""
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


# ``limit`` and ``cursor`` of every list (CONTRACT 7), as parsed and as documented.
LIST_QUERY = [
    {"name": "limit", "in": "query", "required": False,
     "schema": {**int_schema(1, MAX_LIMIT), "default": 50}},
    {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "From the previous page's data.next (which is the full next URL)."},
]


def list_params(req) -> tuple[int, str | None]:
    """``(limit, cursor)`` of a list request: ``limit`` 1-100, default 50."""
    return int_param(req, "limit", 50, 1, MAX_LIMIT), req.get_param("cursor") or None


BINARY_RESPONSES = {
    "200": {"description": "The file's bytes, with its Content-Type, Content-Disposition: "
                           "inline, ETag (its SHA-256) and Accept-Ranges: bytes",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
    "206": {"description": "Partial content: the bytes a Range header asked for",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
    "default": {"description": "Error envelope (see error.code)",
                "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Error"}}}},
}


def send_content(req, resp, library, item, *, sha256=None, size=None, content_type=None,
                 filename=None, verify=False):
    """Answer with stored bytes: ``ETag`` (the SHA-256), ``If-None-Match`` (304), one
    ``Range`` (206; ``If-Range`` honoured; past the end 416), ``Content-Disposition:
    inline``; on the S3 backend with ``S3_PRESIGN_SECONDS`` set, a 302 to a presigned URL
    instead (the bytes then never pass through the gateway). Never reads a whole file
    into memory: the body is the store's chunk iterator."""
    from jobs.content.storage import content_disposition

    sha = sha256 or item.sha256
    size = item.size if size is None else size
    etag = f'"{sha}"'
    resp.set_header("ETag", etag)
    resp.set_header("Accept-Ranges", "bytes")
    resp.set_header("Cache-Control", "private, max-age=3600")
    resp.set_header("X-Content-Type-Options", "nosniff")
    wanted = req.get_header("If-None-Match")
    if wanted and (wanted.strip() == "*" or etag in
                   (t.strip().removeprefix("W/") for t in wanted.split(","))):
        resp.status = "304 Not Modified"  # no Content-Type: a 304 has no content
        return
    resp.set_header("Content-Disposition", content_disposition(filename or item.filename))
    resp.content_type = content_type or item.content_type
    storage = library.config.storage
    if storage.presign_seconds and not verify:
        url = library.store.presigned_url(f"{item.account_id}/{sha}", storage.presign_seconds,
                                          filename or item.filename)
        if url:
            resp.status = "302 Found"
            resp.location = url
            return
    start, end = 0, size - 1
    if_range = req.get_header("If-Range")
    ranged = req.range is not None and req.range_unit == "bytes" and size > 0 and (
        if_range is None or if_range.strip() == etag)
    if ranged:
        first, last = req.range
        if first < 0:  # bytes=-N: the last N bytes
            start = max(size + first, 0)
        else:
            start, end = first, (size - 1 if last < 0 else min(last, size - 1))
        if start >= size:
            from core.errors import RangeNotSatisfiable

            raise RangeNotSatisfiable(size)
        resp.status = "206 Partial Content"
        resp.set_header("Content-Range", f"bytes {start}-{end}/{size}")
    resp.content_length = max(end - start + 1, 0)
    if req.method == "HEAD":
        return
    resp.stream = library.open(item, sha256=sha, start=start, end=end if size else None,
                               verify=verify)


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
    return parse_int(raw, "wait", 0, MAX_WAIT_S)  # ASCII digits: str.isdigit() takes "²"


def wait_for(slots, redis, prefix, caller, uid, seconds) -> Composition:
    """The composition once it ended, or as it is after ``seconds``.

    Nothing to wait for (``seconds`` is 0, or it already ended): one database read, no
    Redis. Otherwise the wait takes one of ``slots`` (``metering.concurrency.WaitSlots``:
    per credential, in all and per process) and listens for progress events. Over a cap,
    or with Redis down, it does not wait: the caller gets the current state at once (a
    202 with ``Retry-After`` and ``Location``) and polls."""
    comp = engine.get(caller.account_id, uid)
    if seconds <= 0 or comp.status in Composition.FINAL:
        return comp
    deadline = time.monotonic() + seconds
    with slots.acquire(caller.rate_key) as lease:
        if not lease.held:
            return comp
        try:
            with events.Listener(redis, prefix, uid) as listener:
                while True:
                    comp = engine.get(caller.account_id, uid)
                    remaining = deadline - time.monotonic()
                    if comp.status in Composition.FINAL or remaining <= 0:
                        return comp
                    lease.renew()
                    listener.wait(min(remaining, 1.0))
        except events.Unavailable:  # Redis went away: the row as it is now
            return engine.get(caller.account_id, uid)


def settle(slots, redis, prefix, caller, outcome, seconds) -> tuple[Composition, int]:
    """An asynchronous outcome's composition and the status to answer (CONTRACT 5).

    A fresh call waits up to ``seconds``: 200 if its job ended in time, else 202; a 200
    is written to the idempotency record, so a replay answers what the first answer said.
    A replay does not wait: it answers the first answer's status, with the composition as
    it is now (outputs and fresh links), so a retry after a lost 202 still learns where to
    poll and a retry after a lost 200 still gets the result."""
    if outcome.replayed:
        return wait_for(slots, redis, prefix, caller, outcome.composition_uid, 0), outcome.status
    comp = wait_for(slots, redis, prefix, caller, outcome.composition_uid, seconds)
    status = 200 if comp.status in Composition.FINAL else 202
    if status == 200 and outcome.record is not None:
        idempotency.settle(outcome.record, 200)
    return comp, status


class QueuePositions:
    """Live queue positions for one request: asked of Redis until it fails once, then
    ``None`` (shown as ``queuePosition: null``), so a list of queued compositions costs at
    most one Redis timeout when Redis is down or hung, and never an error."""

    def __init__(self, redis):
        self.redis, self.down = redis, False

    def __call__(self, uid) -> int | None:
        if self.down:
            return None
        try:
            position = Job.fetch(uid, connection=self.redis).get_position()
        except NoSuchJobError:
            return None
        except (RedisError, OSError):
            self.down = True
            return None
        except Exception:  # an unreadable job: no position, still an answer
            return None
        return None if position is None else position + 1


def composition_view(comp, req, config, redis) -> dict:
    """The composition JSON (``jobs.views.composition_json``) with this request's base URL
    and, while queued, its live queue position (null when Redis cannot say)."""
    positions = getattr(req.context, "queue_positions", None)
    if positions is None:
        positions = req.context.queue_positions = QueuePositions(redis)
    return views.composition_json(comp, base_url(req, config), queue_position=positions)


def answer(req, resp, comp, config, redis, status=None, **meta):
    """200 when the composition ended, 202 while it is queued or running (or ``status``:
    what ``settle`` decided for an action call and its replays)."""
    data = composition_view(comp, req, config, redis)
    if status is None:
        status = 200 if comp.status in Composition.FINAL else 202
    if status == 202:
        resp.set_header("Location", data["links"]["status"])
        resp.set_header("Retry-After", "2")
    ok(req, resp, {"composition": data, "links": data["links"]}, status, **meta)


# --- seed routes: parameters in the body or the query string; page/limit lists -------------

PAGE_QUERY = [
    {"name": "page", "in": "query", "required": False,
     "schema": {**int_schema(1, MAX_PAGE_NO), "default": 1}},
    {"name": "limit", "in": "query", "required": False,
     "schema": {**int_schema(1, MAX_LIMIT), "default": 50}},
]


def seed_params(req, schema: dict) -> dict:
    """A seed route's parameters: the JSON body, with query parameters filling the fields
    the body lacks (each read as its documented type: ``seed=5`` is 5, ``active=true`` is
    true, ``variables={...}`` is JSON), then checked against ``schema`` as one 400."""
    params = dict(json_body(req))
    props = schema.get("properties", {})
    for name, raw in req.params.items():
        if name in props and name not in params:
            params[name] = _query_value(raw, props[name])
    check_schema(schema, params)
    return params


def _query_value(raw, prop):
    kinds = prop.get("type", "string")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if isinstance(raw, list):
        return raw if "array" in kinds else raw[-1]
    if "integer" in kinds and ASCII_INT.fullmatch(raw):
        return int(raw)
    if "number" in kinds and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", raw):
        return float(raw)
    if "boolean" in kinds and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    if "object" in kinds or "array" in kinds:
        try:
            return strict_loads(raw)
        except (ValueError, UnicodeDecodeError):
            return raw  # the schema check names the field
    return raw


def page_params(req) -> tuple[int, int]:
    """``(page, limit)`` of a seed-style list: page from 1, limit 1-100 (default 50, as
    every list: CONTRACT 7)."""
    return (int_param(req, "page", 1, 1, MAX_PAGE_NO),
            int_param(req, "limit", 50, 1, MAX_LIMIT))


def page_answer(req, config, key, items, total, page, limit) -> dict:
    """``{key: items, total, pages, page, limit, next}``; ``next`` is the full URL of the
    next page, or null on the last one."""
    pages = max(1, -(-total // limit))
    nxt = None
    if page < pages:
        params = {k: v for k, v in req.params.items() if k != "page"}
        params["page"] = page + 1
        nxt = f"{base_url(req, config)}{req.path}?{urlencode(params, doseq=True)}"
    return {key: items, "total": total, "pages": pages, "page": page, "limit": limit,
            "next": nxt}


class EventStream:
    """An SSE body (composition and run streams). ``close`` (called by the WSGI server
    when the stream ends or the client goes, even if it was never iterated) closes the
    subscription and gives the wait slot back."""

    def __init__(self, events_iter, listener, lease):
        self._events, self._listener, self._lease = events_iter, listener, lease

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self):
        self._events.close()
        if self._listener is not None:
            self._listener.close()
        if self._lease is not None:
            self._lease.release()


def send_event_stream(resp, events_iter, listener, lease) -> None:
    """Answer with ``events_iter`` as a ``text/event-stream`` body. The request's pooled
    database connection goes back first: a stream lasts minutes and reads on short
    connections of its own, so it must not hold one of the pool's for that long."""
    stream = EventStream(events_iter, listener, lease)
    try:
        queries.release_connection()
    except BaseException:
        stream.close()
        raise
    resp.content_type = "text/event-stream"
    resp.set_header("Cache-Control", "no-cache")
    resp.set_header("X-Accel-Buffering", "no")  # proxies (nginx) must not buffer events
    resp.stream = stream


def mark_outcome(resp, action: str, outcome) -> None:
    """What every paid route says of a run (``actions.runner.Outcome``): a replayed answer
    carries ``Idempotent-Replayed``; a new debit is counted in the debit metrics."""
    if outcome.replayed:
        resp.set_header("Idempotent-Replayed", "true")
        metrics.IDEMPOTENT_REPLAYS.inc()
    elif outcome.meta.get("txnReceipt"):
        metrics.count_debit(action, outcome.meta["creditsUsed"])


def once(req, resp, scope: str, body, work, *, clock, config, secrets=(),
         account_id=None) -> None:
    """Answer a POST that creates or changes something at most once per
    ``Idempotency-Key`` (CONTRACT 5): ``work()`` -> ``(status, data, receipt)`` runs in one
    transaction with the key's record, and the same key with the same request replays the
    first answer with ``Idempotent-Replayed: true`` (another request: 422). Without a key
    it just runs, in a transaction. Keys are the caller's, or ``account_id``'s (an admin
    acting on one).

    ``secrets`` name the fields of ``data`` shown only once (a signing secret): they are
    never written to the idempotency record, so a replay answers without them."""
    shown = {}

    def run():
        status, data, receipt = work()
        shown.update({k: data[k] for k in secrets if k in data})
        return status, {"data": {k: v for k, v in data.items() if k not in secrets}}, receipt

    answer = idempotency.once(
        account_id or req.context.caller.account_id, scope, req.get_header("Idempotency-Key"),
        idempotency.request_hash(req.method, req.path, body), run, now=clock.now(),
        ttl_s=config.idempotency_ttl_s, lock_s=config.idempotency_lock_s)
    if answer.replayed:
        resp.set_header("Idempotent-Replayed", "true")
        metrics.IDEMPOTENT_REPLAYS.inc()
    ok(req, resp, {**answer.body["data"], **shown}, status=answer.status)
