"""The one place where errors become HTTP: domain errors by code, Falcon's own errors by
status, and anything else as a logged, generic ``INTERNAL_ERROR``."""

from __future__ import annotations

import logging

import falcon

from core.errors import DomainError
from gateway.envelope import error

log = logging.getLogger("gateway.errors")

STATUS = {
    "MISSING_ACTION": 400, "INVALID_ACTION": 404, "INVALID_REQUEST": 400, "UNAUTHORIZED": 401,
    "MISSING_AUTH_HEADER": 401, "UNSUPPORTED_AUTH_SCHEME": 401, "AUTH_FAILED": 401,
    "FORBIDDEN": 403, "INSUFFICIENT_CREDITS": 403, "NOT_FOUND": 404, "METHOD_NOT_ALLOWED": 405,
    "CONFLICT": 409, "IDEMPOTENCY_IN_PROGRESS": 409, "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415, "IDEMPOTENCY_KEY_REUSED": 422, "RATE_LIMITED": 429,
    "INTERNAL_ERROR": 500, "SERVICE_UNAVAILABLE": 503, "GATEWAY_TIMEOUT": 504,
}

# Falcon raises its own HTTPErrors for routing, methods and media; name them by status.
CODE_FOR_STATUS = {
    400: "INVALID_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 411: "INVALID_REQUEST",
    413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 422: "INVALID_REQUEST",
    429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT",
}


def _send(req, resp, code, message, status, details=None, headers=None):
    resp.status = falcon.code_to_http_status(status)
    resp.media = error(req, code, message, status, details)
    resp.content_type = falcon.MEDIA_JSON
    for name, value in (headers or {}).items():
        resp.set_header(name, value)


def handle_domain(req, resp, ex: DomainError, params):
    headers = {"Retry-After": str(int(ex.retry_after))} if ex.retry_after else None
    if ex.code in ("AUTH_FAILED", "MISSING_AUTH_HEADER", "UNSUPPORTED_AUTH_SCHEME"):
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="gateway"'}
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


def handle_unexpected(req, resp, ex: Exception, params):
    request_id = getattr(req.context, "request_id", "-")
    if _is_unavailable(ex):
        log.error("backend unavailable request_id=%s: %s", request_id, type(ex).__name__)
        _send(req, resp, "SERVICE_UNAVAILABLE", "A backend service is unavailable", 503,
              headers={"Retry-After": "5"})
        return
    log.exception("unhandled error request_id=%s", request_id)
    _send(req, resp, "INTERNAL_ERROR", "Internal error; quote the request id to support", 500)


def _is_unavailable(ex) -> bool:
    """Lost database connections are outages, not bugs: answer 503 so callers retry."""
    import peewee

    return isinstance(ex, peewee.OperationalError | peewee.InterfaceError)


def install(app: falcon.App):
    # Falcon picks the most specific handler by class, so the order here does not matter.
    app.add_error_handler(Exception, handle_unexpected)
    app.add_error_handler(falcon.HTTPError, handle_http)
    app.add_error_handler(DomainError, handle_domain)
