"""The success/error envelope of CONTRACT section 1, used by every JSON response."""

from __future__ import annotations

import datetime as dt

import falcon

from core.timefmt import iso


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
