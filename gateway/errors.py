"""The one place where errors become HTTP: domain errors by code, Falcon's own errors by
status, backend outages (database, Redis) as 503 ``SERVICE_UNAVAILABLE``, and anything
else as a logged, generic ``INTERNAL_ERROR``. Every 503 carries ``Retry-After`` (the
error's own, else ``RETRY_AFTER_UNAVAILABLE`` seconds)."""

from __future__ import annotations

import logging

import falcon
import peewee
import redis.exceptions as redis_errors

from core.errors import DomainError, RangeNotSatisfiable
from gateway.envelope import error

log = logging.getLogger("gateway.errors")

STATUS = {
    "MISSING_ACTION": 400, "INVALID_ACTION": 404, "INVALID_REQUEST": 400, "UNAUTHORIZED": 401,
    "MISSING_AUTH_HEADER": 401, "UNSUPPORTED_AUTH_SCHEME": 401, "AUTH_FAILED": 401,
    "FORBIDDEN": 403, "INSUFFICIENT_CREDITS": 403, "NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409, "IDEMPOTENCY_IN_PROGRESS": 409, "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415, "RANGE_NOT_SATISFIABLE": 416, "IDEMPOTENCY_KEY_REUSED": 422,
    "RATE_LIMITED": 429,
    "PRECONDITION_FAILED": 412, "GONE": 410, "LOCKED": 423, "CHECKSUM_MISMATCH": 460,
    "INTERNAL_ERROR": 500, "SERVICE_UNAVAILABLE": 503, "GATEWAY_TIMEOUT": 504,
}

# Falcon raises its own HTTPErrors for routing, methods and media; name them by status.
CODE_FOR_STATUS = {
    400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 411: "INVALID_REQUEST",
    413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "INVALID_REQUEST",
    429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT",
}


RETRY_AFTER_UNAVAILABLE = 5  # seconds, on a 503 that names no time of its own

# Backend outages, not bugs: a lost or refused database connection, and Redis down, hung,
# loading, read-only or out of memory (RQ raises redis-py's errors as they are).
UNAVAILABLE = (
    peewee.OperationalError, peewee.InterfaceError,
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError, redis_errors.ClusterDownError, redis_errors.TryAgainError,
)


def _send(req, resp, code, message, status, details=None, headers=None):
    # 460 is the tus checksum extension's own status; Falcon knows no reason phrase for it
    resp.status = "460 Checksum Mismatch" if status == 460 else falcon.code_to_http_status(
        status)
    # Headers a resource's protocol puts on every answer, errors included (tus:
    # Tus-Resumable); a resource sets them in req.context.protocol_headers.
    for name, value in (getattr(req.context, "protocol_headers", None) or {}).items():
        resp.set_header(name, value)
    resp.media = error(req, code, message, status, details)
    resp.content_type = falcon.MEDIA_JSON
    for name, value in (headers or {}).items():
        resp.set_header(name, value)


def handle_domain(req, resp, ex: DomainError, params):
    headers = {"Retry-After": str(int(ex.retry_after))} if ex.retry_after else None
    if ex.code in ("AUTH_FAILED", "MISSING_AUTH_HEADER", "UNSUPPORTED_AUTH_SCHEME"):
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="gateway"'}
    if isinstance(ex, RangeNotSatisfiable):  # RFC 9110 15.5.17: say how long it is
        headers = {**(headers or {}), "Content-Range": f"bytes */{ex.size}"}
    _send(req, resp, ex.code, ex.message, STATUS.get(ex.code, 500), ex.details, headers)


def handle_http(req, resp, ex: falcon.HTTPError, params):
    status = ex.status_code
    code = CODE_FOR_STATUS.get(status, "INTERNAL_ERROR" if status >= 500 else "INVALID_REQUEST")
    if isinstance(ex, falcon.MediaMalformedError):
        message = "Malformed JSON body"
    elif status == 404:
        message = "No such route"
    elif status == 405:
        message = f"Method {req.method} is not allowed here"
    else:
        message = ex.description or ex.title or "Request error"
    headers = {k: v for k, v in (ex.headers or {}).items() if k.lower() in ("allow", "retry-after")}
    _send(req, resp, code, message, status, headers=headers)


def handle_unavailable(req, resp, ex: Exception, params):
    request_id = getattr(req.context, "request_id", "-")
    log.error("backend unavailable request_id=%s: %s", request_id, type(ex).__name__)
    _send(req, resp, "SERVICE_UNAVAILABLE", "A backend service is unavailable", 503)


def handle_unexpected(req, resp, ex: Exception, params):
    if _unavailable_cause(ex) is not None:  # an outage wrapped in another exception
        handle_unavailable(req, resp, ex, params)
        return
    request_id = getattr(req.context, "request_id", "-")
    log.exception("unhandled error request_id=%s", request_id)
    _send(req, resp, "INTERNAL_ERROR", "Internal error; quote the request id to support", 500)


def _unavailable_cause(ex):
    """The first outage in ``ex``'s chain of causes, else None."""
    seen = set()
    while ex is not None and id(ex) not in seen:
        if isinstance(ex, UNAVAILABLE):
            return ex
        seen.add(id(ex))
        ex = ex.__cause__ or ex.__context__
    return None


class RenderBody:
    """Serialize the body while a failure can still become an envelope: Falcon renders
    ``resp.media`` after the last middleware, and a failure there (a lone surrogate, a
    non-JSON value) is sent as a 500 with an empty body. Rendered here, it reaches
    ``handle_unexpected``, whose envelope replaces the body. Added last, it runs first."""

    def process_response(self, req, resp, resource, req_succeeded):
        resp.render_body()  # Falcon keeps the rendered bytes; nothing is serialized twice


class RetryAfterOn503:
    """Every 503 carries ``Retry-After``, also one a resource answers itself (readiness)."""

    def process_response(self, req, resp, resource, req_succeeded):
        if resp.status_code == 503 and not resp.get_header("Retry-After"):
            resp.set_header("Retry-After", str(RETRY_AFTER_UNAVAILABLE))


def install(app: falcon.App):
    app.add_middleware(RetryAfterOn503())
    app.add_middleware(RenderBody())
    # Falcon picks the most specific handler by class, so the order here does not matter.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(UNAVAILABLE, handle_unavailable)
    app.add_error_handler(falcon.HTTPError, handle_http)
    app.add_error_handler(DomainError, handle_domain)
