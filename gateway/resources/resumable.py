"""Resumable uploads over HTTP: the tus 1.0.0 protocol (core, creation, checksum,
expiration, termination), for large videos and flaky links (docs/CONTENT.md).

``POST /uploads`` creates an upload (``Upload-Length``, ``Upload-Metadata`` with
``filename``, ``description``, ``tags``, ``content_id``); ``PATCH /uploads/{id}`` appends at
``Upload-Offset``; ``HEAD`` tells the offset to resume from; ``DELETE`` ends it. The charge
(the ``upload`` action, per started MiB) happens in the PATCH that brings the last byte;
its answer's content id and receipt come back as headers, and on ``HEAD`` afterwards.
Every answer carries ``Tus-Resumable``; errors are envelopes like everywhere else.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from email.utils import format_datetime

from core.errors import (
    Conflict,
    DomainError,
    InvalidRequest,
    PayloadTooLarge,
    PreconditionFailed,
)
from core.errors import UnsupportedMediaType as Unsupported
from gateway.resources.common import base_url, body_stream
from jobs.content import library as lib
from jobs.content import resumable

VERSION = "1.0.0"
EXTENSIONS = "creation,checksum,expiration,termination"
OFFSET_TYPE = "application/offset+octet-stream"
ERROR = {"description": "Error envelope (see error.code)",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _tus(status, description) -> dict:
    """tus answers carry no body: the state is in headers (Location, Upload-Offset, ...)."""
    return {status: {"description": description}, "default": ERROR}


RESPONSES = {
    "post": _tus("201", "Created: Location is the upload's URL; Upload-Expires says until when"),
    "head": _tus("200", "Upload-Offset and Upload-Length of the upload"),
    "patch": _tus("204", "Stored: Upload-Offset is the new offset (at the end, the upload is "
                         "charged and Upload-Content-Id and X-Txn-Receipt name the item)"),
    "delete": _tus("204", "Abandoned: the bytes and state are removed"),
    "options": _tus("204", "Tus-Version, Tus-Extension, Tus-Max-Size and Tus-Checksum-Algorithm"),
}
# The tus headers (Tus-Resumable, Upload-Length, Upload-Offset, Upload-Checksum,
# Upload-Metadata) are described in the operations' text, not as OpenAPI parameters: the
# protocol answers their absence with its own statuses (412, 409, 460), which a schema
# check of "required" parameters would call wrong.


def _http_date(when) -> str:
    return format_datetime(when.replace(tzinfo=dt.UTC), usegmt=True)


class _Tus:
    scope = "actions:run"
    openapi_tag = "Content"
    openapi_responses = RESPONSES

    def __init__(self, deps):
        self.deps, self.config, self.library = deps, deps.config, deps.library
        self.uploads = resumable.Uploads(deps.config, deps.redis, deps.clock, deps.ids)

    def _begin(self, req, resp):
        """Every answer, errors too, says the protocol version; a request for another one
        is 412 with the versions this server speaks."""
        req.context.protocol_headers = {"Tus-Resumable": VERSION}
        resp.set_header("Tus-Resumable", VERSION)
        if req.get_header("Tus-Resumable") != VERSION:
            req.context.protocol_headers["Tus-Version"] = VERSION
            raise PreconditionFailed(f"Send Tus-Resumable: {VERSION}")

    def _state(self, resp, upload):
        resp.set_header("Upload-Offset", str(upload.offset))
        resp.set_header("Upload-Expires", _http_date(upload.expires_at))
        resp.set_header("Cache-Control", "no-store")
        if upload.result:
            answer = json.loads(upload.result)
            resp.set_header("Upload-Content-Id", answer["data"]["contentId"])
            if answer["meta"].get("txnReceipt"):
                resp.set_header("X-Txn-Receipt", answer["meta"]["txnReceipt"])


class TusUploads(_Tus):
    """Create a resumable upload (tus creation extension); OPTIONS tells what this server
    supports. Nothing is charged until the upload completes.

    Headers: Tus-Resumable: 1.0.0 (else 412), Upload-Length (bytes, required), and
    Upload-Metadata (filename, description, tags, content_id as base64 values). 201 with
    Location and Upload-Expires."""

    openapi_body = {"post": {}}  # no body: the upload's size and metadata are headers

    def on_options(self, req, resp):
        """What this tus server supports (no credential needed by the protocol, but the
        route is authenticated like the rest)."""
        resp.status = "204 No Content"
        for name, value in (("Tus-Resumable", VERSION), ("Tus-Version", VERSION),
                            ("Tus-Extension", EXTENSIONS),
                            ("Tus-Max-Size", str(self.library.upload_limit(
                                req.context.caller.account_id))),
                            ("Tus-Checksum-Algorithm", ",".join(resumable.ALGORITHMS))):
            resp.set_header(name, value)

    def on_post(self, req, resp):
        self._begin(req, resp)
        account_id = req.context.caller.account_id
        if req.get_header("Upload-Defer-Length"):
            raise InvalidRequest("Upload-Defer-Length is not supported; send Upload-Length")
        length = resumable.parse_length(req.get_header("Upload-Length"))
        if length == 0:
            raise InvalidRequest("Upload-Length: an upload needs at least one byte",
                                 details=[{"field": "Upload-Length", "problem": "must be > 0"}])
        meta = resumable.parse_metadata(req.get_header("Upload-Metadata"))
        lib.check_description(meta.get("description"))
        lib.parse_tags(meta.get("tags"))
        owner = account_id
        if meta.get("content_id"):
            owner = self.library.get_for(account_id, meta["content_id"], lib.WRITE).account_id
        limit = self.library.upload_limit(account_id)
        if length > limit:
            raise PayloadTooLarge(f"Upload-Length {length} is over the {limit}-byte limit",
                                  details=[{"field": "Upload-Length",
                                            "problem": f"must be at most {limit}"}])
        left = self.library.quota_left(owner)
        if length > left:  # a fast refusal; the completion checks again under the lock
            raise PayloadTooLarge(f"Upload-Length {length} is over the storage quota "
                                  f"({max(left, 0)} bytes left)",
                                  details=[{"field": "Upload-Length",
                                            "problem": "over the storage quota"}])
        upload = self.uploads.create(account_id, length, meta, meta.get("content_id"))
        resp.status = "201 Created"
        resp.location = f"{base_url(req, self.config)}/uploads/{upload.id}"
        self._state(resp, upload)


class TusUpload(_Tus):
    """One resumable upload: HEAD its offset, PATCH bytes at Upload-Offset
    (application/offset+octet-stream, optional Upload-Checksum), DELETE to abandon it.

    Every request sends Tus-Resumable: 1.0.0 (else 412). PATCH: Upload-Offset must be the
    upload's (else 409), Upload-Checksum 'sha1|md5|sha256 <base64>' (mismatch 460); the
    PATCH that completes the upload charges it and answers Upload-Content-Id and
    X-Txn-Receipt. A concurrent PATCH is 423."""

    openapi_media = OFFSET_TYPE
    openapi_body = {"patch": {}}  # any bytes

    def on_head(self, req, resp, upload_id):
        self._begin(req, resp)
        upload = self.uploads.get(req.context.caller.account_id, upload_id)
        resp.set_header("Upload-Length", str(upload.length))
        if upload.metadata:
            resp.set_header("Upload-Metadata", ",".join(
                f"{k} {_b64(v)}" for k, v in json.loads(upload.metadata).items()))
        self._state(resp, upload)

    def on_patch(self, req, resp, upload_id):
        self._begin(req, resp)
        caller = req.context.caller
        upload = self.uploads.get(caller.account_id, upload_id)
        if (req.content_type or "").split(";")[0].strip().lower() != OFFSET_TYPE:
            raise Unsupported(f"Send the bytes as Content-Type: {OFFSET_TYPE}")
        offset = resumable.parse_offset(req.get_header("Upload-Offset"))
        checksum = resumable.parse_checksum(req.get_header("Upload-Checksum"))
        with self.uploads.lock(upload):
            upload = self.uploads.get(caller.account_id, upload_id)  # as of the lock
            if offset != upload.offset:
                raise Conflict(f"Upload-Offset {offset} is not the upload's offset "
                               f"{upload.offset}; HEAD it and resume from there")
            if upload.result is None:
                self.uploads.append(upload, body_stream(req), req.content_length, checksum)
                if upload.offset == upload.length:
                    self._complete(req, caller, upload)
        resp.status = "204 No Content"
        self._state(resp, upload)

    def _complete(self, req, caller, upload):
        """The last byte arrived: stage, inspect and charge it as an upload. A refusal
        (type, pixels, quota, credits) ends the upload: nothing stays and nothing is
        charged."""
        meta = json.loads(upload.metadata or "{}")
        try:
            staged = lib.stage_path(self.config, self.uploads.path(upload),
                                    filename=meta.get("filename") or "")
            body = {k: meta[k] for k in ("description", "tags", "content_id") if meta.get(k)}
            outcome = self.deps.actions.run(
                caller, "upload", body, idempotency_key=f"tus-{upload.id}",
                request_id=req.context.request_id, method="PATCH", path=req.path,
                private={"_staged": staged})
        except DomainError:
            self.uploads.remove(upload)
            raise
        self.uploads.finish(upload, {"data": outcome.data, "meta": outcome.meta})

    def on_delete(self, req, resp, upload_id):
        """Abandon an upload (tus termination): its bytes and state are removed."""
        self._begin(req, resp)
        upload = self.uploads.get(req.context.caller.account_id, upload_id)
        with self.uploads.lock(upload):
            self.uploads.remove(upload)
        resp.status = "204 No Content"


def _b64(value) -> str:
    return base64.b64encode(str(value).encode()).decode()
