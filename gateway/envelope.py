"""The success/error envelope of CONTRACT section 1, used by every JSON response."""

from __future__ import annotations

import datetime as dt

import falcon


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and ``Z``; stored datetimes are naive UTC."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def meta(req, **extra) -> dict:
    out = {"timestamp": iso(dt.datetime.now(dt.UTC)), "requestId": req.context.request_id}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def ok(req, resp, data, status=200, **meta_extra):
    resp.status = falcon.code_to_http_status(status)
    resp.media = {"success": True, "data": data, "meta": meta(req, **meta_extra)}


def error(req, code, message, status, details=None) -> dict:
    err = {"message": message, "code": code, "statusCode": status}
    if details:
        err["details"] = details
    return {"success": False, "error": err, "meta": meta(req)}
