"""The content library (seed 002; docs/CONTENT.md): upload, items, metadata, versions,
downloads and storage usage.

Seed 002 passes ``userId`` everywhere; the tenant is always the caller, and another
account's ``userId`` is 404, like another account's ``contentId``. An item shared with the
caller (a collaboration) is readable, and with ``write`` permission also versioned and
re-described, but never deleted or re-shared (403).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlencode

from actions.registry import check_schema
from core.errors import InvalidRequest, NotFound
from core.timefmt import iso
from gateway.envelope import ok
from gateway.middleware import NONE
from gateway.resources.common import (
    BINARY_RESPONSES,
    base_url,
    int_param,
    json_body,
    list_params,
    mark_outcome,
    next_url,
    read_multipart,
    send_content,
)
from jobs.content import library as lib
from jobs.content.models import ContentItem
from metering import cursors
from metering.db import write_transaction

READ, WRITE, RUN = "content:read", "content:write", "actions:run"
USER_ID = {"name": "userId", "in": "query", "required": False,
           "schema": {"type": "string", "maxLength": 40},
           "description": "Seed 002 compatibility: must be your own account id if sent."}
TEXT_FIELDS = ("description", "tags", "content_id", "contentId", "userId", "filename")
UPLOAD_FORM = {"type": "object", "properties": {
    "file": {"type": "string", "format": "binary",
             "description": "The image or video (JPEG, PNG, WebP, GIF, MP4, MOV, WebM); its "
                            "type is read from the bytes."},
    "description": {"type": "string", "maxLength": lib.MAX_DESCRIPTION},
    "tags": {"type": "string", "description": "Comma-separated tags."},
    "content_id": {"type": "string", "description": "Upload as a new version of this item "
                                                    "(contentId is accepted too)."},
    "userId": {"type": "string", "description": "Seed 002: your own account id, if sent."}},
    "required": ["file"]}
METADATA_BODY = {"type": "object", "properties": {
    "description": {"type": "string", "maxLength": lib.MAX_DESCRIPTION},
    "tags": {"type": ["string", "array"], "items": {"type": "string"},
             "description": "Comma-separated tags (or a list)."},
    "userId": {"type": "string"}}, "additionalProperties": False}


def own_user_id(req, value=None):
    """Seed 002's ``userId`` must be the caller's own; another is answered as not found."""
    user_id = value if value is not None else req.get_param("userId")
    if user_id not in (None, "") and user_id != req.context.caller.account_id:
        raise NotFound("No such user")


def answer_outcome(req, resp, outcome, name="upload"):
    mark_outcome(resp, name, outcome)
    ok(req, resp, outcome.data, 201 if outcome.status == 200 else outcome.status,
       **outcome.meta)


class _Content:
    def __init__(self, deps):
        self.deps, self.config, self.library = deps, deps.config, deps.library

    def _json(self, req, item):
        return self.library.item_json(item, req.context.caller.account_id,
                                      base_url(req, self.config))


class Upload(_Content):
    """Upload an image or video (multipart/form-data: file, description, tags).

    Metered like every action: 1 credit per started MiB of the stored file (the `upload`
    action's price), with a receipt in meta. The type is read from the bytes (images:
    JPEG, PNG, WebP, GIF, re-encoded without EXIF/GPS; videos: MP4, MOV, WebM); size,
    quota and pixel limits are checked before anything is stored or charged (413, 415,
    400). Send content_id to add a new version of an item. Honours Idempotency-Key."""

    scope = RUN
    openapi_tag = "Content"
    openapi_media = "multipart/form-data"
    openapi_body = {"post": UPLOAD_FORM}
    openapi_idempotent = True

    def on_post(self, req, resp):
        staged, fields = read_multipart(
            req, self.config, TEXT_FIELDS,
            max_bytes=self.library.upload_limit(req.context.caller.account_id))
        try:
            own_user_id(req, fields.get("userId"))
        except BaseException:
            staged.discard()
            raise
        body = {k: fields[k] for k in ("description", "tags", "filename") if fields.get(k)}
        content_id = fields.get("content_id") or fields.get("contentId")
        if content_id:
            body["content_id"] = content_id
        outcome = self.deps.actions.run(
            req.context.caller, "upload", body,
            idempotency_key=req.get_header("Idempotency-Key"),
            request_id=req.context.request_id, method=req.method, path=req.path,
            private={"_staged": staged})
        answer_outcome(req, resp, outcome)


class ContentList(_Content):
    """Your content and content shared with you, newest first (seed 002).

    `limit` (1-100, default 50) with `offset` as the seed, or `cursor` from data.next; filter
    by `type` (image|video), `source` (upload|output) or `tag`."""

    scope = READ
    openapi_tag = "Content"
    openapi_query = {"get": [
        USER_ID,
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
        {"name": "offset", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": 100000}},
        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "type", "in": "query", "required": False,
         "schema": {"enum": ["image", "video"]}},
        {"name": "source", "in": "query", "required": False,
         "schema": {"enum": ["upload", "output"]}},
        {"name": "tag", "in": "query", "required": False,
         "schema": {"type": "string", "maxLength": 64}}]}

    def on_get(self, req, resp):
        own_user_id(req)
        viewer = req.context.caller.account_id
        limit, cursor = list_params(req)
        query = self.library.visible(viewer)
        kind, source = req.get_param("type"), req.get_param("source")
        if kind is not None:
            if kind not in ("image", "video"):
                raise InvalidRequest("type must be image or video",
                                     details=[{"field": "type", "problem": "image or video"}])
            query = query.where(ContentItem.kind == kind)
        if source is not None:
            if source not in ("upload", "output"):
                raise InvalidRequest("source must be upload or output",
                                     details=[{"field": "source", "problem": "upload or output"}])
            query = query.where(ContentItem.source == source)
        tag = req.get_param("tag")
        if tag:
            query = query.where(ContentItem.tags.contains(f'"{tag}"'))
        total = query.count()
        if req.get_param("offset") is not None and not cursor:
            offset = int_param(req, "offset", 0, 0, 100000)
            rows = list(query.order_by(ContentItem.created_at.desc(), ContentItem.id.desc())
                        .offset(offset).limit(limit + 1))
            more = len(rows) > limit
            rows = rows[:limit]
            nxt = None
            if more:
                params = {**req.params, "offset": str(offset + limit)}
                nxt = f"{base_url(req, self.config)}{req.path}?{urlencode(params, doseq=True)}"
        else:
            rows, token = cursors.page(query, tag="content", created=ContentItem.created_at,
                                       ident=ContentItem.id, limit=limit, cursor=cursor)
            nxt = next_url(req, self.config, token)
        items = [self._json(req, item) for item in rows]
        ok(req, resp, {"items": items, "contents": items, "total": total, "limit": limit,
                       "next": nxt})


class ContentResource(_Content):
    """One content item: its metadata, checksum, size and download URL (seed 002)."""

    scope = {"GET": READ, "DELETE": WRITE}
    openapi_tag = "Content"
    openapi_query = {"get": [USER_ID], "delete": [USER_ID]}

    def on_get(self, req, resp, content_id):
        own_user_id(req)
        item = self.library.get_for(req.context.caller.account_id, content_id)
        if self.deps.analytics is not None:
            self.deps.analytics.count(item.id, "views")
        ok(req, resp, self._json(req, item))

    def on_delete(self, req, resp, content_id):
        """Delete your content item and every version; bytes no other item uses are
        removed and storage usage drops. Collaborators cannot delete (403)."""
        own_user_id(req)
        with write_transaction():
            keys = self.library.delete(req.context.caller.account_id, content_id)
        self.library.remove_blobs(keys)
        ok(req, resp, {"contentId": content_id, "deleted": True, "blobsRemoved": len(keys),
                       "usage": self.library.usage(req.context.caller.account_id)})


class ContentMetadata(_Content):
    """Change an item's description and tags (owner, or a collaborator with write)."""

    scope = WRITE
    openapi_tag = "Content"
    openapi_body = {"put": METADATA_BODY}

    def on_put(self, req, resp, content_id):
        body = json_body(req)
        check_schema(METADATA_BODY, body)
        own_user_id(req, body.get("userId"))
        with write_transaction():
            item = self.library.update_metadata(
                req.context.caller.account_id, content_id,
                description=body.get("description"), tags=body.get("tags"))
        ok(req, resp, self._json(req, item))


class ContentVersions(_Content):
    """Every version of an item, newest first: number, size, checksum, uploader, receipt."""

    scope = READ
    openapi_tag = "Content"
    openapi_query = {"get": [USER_ID]}

    def on_get(self, req, resp, content_id):
        own_user_id(req)
        item = self.library.get_for(req.context.caller.account_id, content_id)
        versions = [self.library.version_json(v) for v in
                    item.versions.order_by(lib.ContentVersion.number.desc())]
        ok(req, resp, {"contentId": item.id, "version": item.version, "versions": versions})


class ContentDownload(_Content):
    """The item's bytes (or those of `version`): Content-Type, Content-Disposition: inline,
    ETag, Range (206) for video scrubbing, If-None-Match (304). `verify=true` checks the
    SHA-256 before sending. Counts a download in the item's analytics."""

    scope = READ
    openapi_tag = "Content"
    openapi_query = {"get": [
        {"name": "version", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 1000000}},
        {"name": "verify", "in": "query", "required": False, "schema": {"type": "boolean"}}]}
    openapi_responses = {"get": BINARY_RESPONSES}

    def on_get(self, req, resp, content_id):
        item = self.library.get_for(req.context.caller.account_id, content_id)
        number = req.get_param("version")
        version = (self.library.version_of(item, int_param(req, "version", 1, 1, 1000000))
                   if number is not None else None)
        verify = req.get_param_as_bool("verify") or False
        if self.deps.analytics is not None and req.method == "GET":
            self.deps.analytics.count(item.id, "downloads")
        if version is None:
            send_content(req, resp, self.library, item, verify=verify)
        else:
            send_content(req, resp, self.library, item, sha256=version.sha256,
                         size=version.size, content_type=version.content_type,
                         filename=version.filename, verify=verify)

    on_head = on_get


class StorageUsage(_Content):
    """Bytes used and left of your storage quota, and items by type (seed 002)."""

    scope = READ
    openapi_tag = "Content"
    openapi_query = {"get": [USER_ID]}

    def on_get(self, req, resp):
        own_user_id(req)
        ok(req, resp, self.library.usage(req.context.caller.account_id))


SHARE_BODY = {"type": "object", "properties": {
    "expiresIn": {"type": "integer", "minimum": 60, "maximum": 365 * 24 * 3600,
                  "default": 7 * 24 * 3600,
                  "description": "Seconds the link stays valid (default 7 days)."},
    "version": {"type": "integer", "minimum": 1,
                "description": "Link this version's bytes (default: the newest)."}},
    "additionalProperties": False}


class ContentShare(_Content):
    """A signed link to the item's bytes that anyone may open until it expires (no API
    key): for a Zap step, an email or a social post. It names these exact bytes: a later
    version needs a new link."""

    scope = READ
    openapi_tag = "Content"
    openapi_body = {"post": SHARE_BODY}

    def on_post(self, req, resp, content_id):
        body = json_body(req)
        check_schema(SHARE_BODY, body)
        item = self.library.get_for(req.context.caller.account_id, content_id)
        sha = item.sha256
        if body.get("version"):
            sha = self.library.version_of(item, body["version"]).sha256
        url, exp = self.library.link(item, body.get("expiresIn", 7 * 24 * 3600),
                                     base_url=base_url(req, self.config), sha256=sha)
        ok(req, resp, {"contentId": item.id, "url": url, "expiresAt": iso_seconds(exp)}, 201)


def iso_seconds(unix: int) -> str:
    return iso(dt.datetime.fromtimestamp(unix, dt.UTC).replace(tzinfo=None))


class ContentLink(_Content):
    """Open a signed link (from POST /content/{content_id}/share, or an action's output
    URL): the bytes, like a download, without an API key. Invalid or expired: 404."""

    auth = NONE
    openapi_tag = "Content"
    openapi_query = {"get": [
        {"name": "v", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "exp", "in": "query", "required": True, "schema": {"type": "integer"}},
        {"name": "sig", "in": "query", "required": True, "schema": {"type": "string"}}]}
    openapi_responses = {"get": BINARY_RESPONSES}

    def on_get(self, req, resp, content_id, name=None):
        sha = req.get_param("v") or ""
        now = self.deps.clock.now().replace(tzinfo=dt.UTC).timestamp()
        if not self.library.links.valid(content_id, sha, req.get_param("exp"),
                                        req.get_param("sig"), now):
            raise NotFound("This link is invalid or has expired")
        item = ContentItem.get_or_none(ContentItem.id == content_id)
        version = None if item is None else (
            lib.ContentVersion.get_or_none(lib.ContentVersion.content == item.id,
                                           lib.ContentVersion.sha256 == sha))
        if version is None:
            raise NotFound("This link is invalid or has expired")  # the item was deleted
        if self.deps.analytics is not None and req.method == "GET":
            self.deps.analytics.count(item.id, "downloads")
        send_content(req, resp, self.library, item, sha256=sha, size=version.size,
                     content_type=version.content_type, filename=version.filename)
        resp.set_header("Cache-Control", "public, max-age=300")  # the link is the secret

    on_head = on_get
