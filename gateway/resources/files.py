"""File routes of seeds 000 and 003 over the content library (docs/CONTENT.md, "Files").

A "file" of these seeds is a content item: its id is the contentId, its bytes the item's
newest version. Seed 000 (``/api/file/get``, ``/api/file/list``) is for accounts, like
``/content/...``. Seed 003's ``/uploadFile``, ``/getFileMetadata`` and ``/removeFile`` are
admin routes (X-Administration-Key): an operator stores a file into a named account
without charging it (like the admin credit grant), optionally under an id of its own
choosing. ``/getFile`` is for front-end clients: an account that may read the item, the
admin key, or a signed link (``v``, ``exp``, ``sig`` of ``POST /content/{id}/share``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import tempfile
from pathlib import Path

import peewee

from core.errors import (
    AuthError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
)
from core.timefmt import iso
from gateway.edge import strict_loads
from gateway.envelope import ok
from gateway.middleware import ADMIN, NONE, AdminGuard, identify_in_resource
from gateway.resources.common import (
    BINARY_RESPONSES,
    PAGE_QUERY,
    base_url,
    int_param,
    page_answer,
    page_params,
    read_multipart,
    seed_params,
    send_content,
)
from jobs.content import inspect
from jobs.content.library import ChecksumFailed
from jobs.content.models import ContentItem, ContentVersion
from jobs.content.storage import content_disposition
from metering.db import write_transaction
from metering.models import Account

READ = "content:read"
MAX_BASE64_BYTES = 10 * 1024 * 1024  # base64 in JSON is for small files
MAX_CUSTOM_METADATA = 16 * 1024  # characters of the customMetadata JSON string
FILE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
RESIZABLE = ("image/png", "image/jpeg", "image/gif", "image/webp")
ID_STR = {"type": "string", "minLength": 1, "maxLength": 40}
ID_BODY = {"type": "object", "required": ["id"], "properties": {"id": ID_STR}}
ID_QUERY = [{"name": "id", "in": "query", "required": True, "schema": ID_STR,
             "description": "The file's id (its contentId)."}]
FILE_BODY = {"type": "object", "required": ["file"], "properties": {
    "file": {**ID_STR, "description": "The file's id (its contentId)."}}}

FILE_METADATA = {"type": "object", "required": [
    "id", "publicUrl", "fileName", "contentType", "fileSize", "createdDate", "checksum",
    "checksumAlgorithm"], "properties": {
    "id": {"type": "string", "description": "The file's id (its contentId)."},
    "publicUrl": {"type": "string", "description": "GET /getFile?id=...: with an account "
                                                   "credential, the admin key or a signed "
                                                   "link's v, exp and sig."},
    "fileName": {"type": "string"}, "contentType": {"type": "string"},
    "fileSize": {"type": "integer"}, "createdDate": {"type": "string", "format": "date-time"},
    "checksum": {"type": "string"}, "checksumAlgorithm": {"enum": ["sha256"]},
    "ownerId": {"type": "string"},
    "customMetadata": {"type": "object", "description": "The gateway's own: the "
                                                        "customMetadata sent at upload."}}}
UPLOAD_FILE_FORM = {"type": "object", "required": ["file", "userId"], "properties": {
    "file": {"type": "string", "format": "binary",
             "description": "The image or video; its type is read from the bytes and its name "
                            "from the part's filename."},
    "id": {"type": "string", "pattern": FILE_ID.pattern,
           "description": "The file's id, chosen by the client (409 if taken); default: "
                          "a generated cnt_... id."},
    "customMetadata": {"type": "string", "description": "A JSON object, as a string."},
    "userId": {"type": "string", "description": "The account that owns the file (the "
                                                "gateway's own, required)."},
    "filename": {"type": "string", "description": "Overrides the part's filename."}}}
GET_FILE_QUERY = [
    *ID_QUERY,
    {"name": "skipChecksum", "in": "query", "required": False, "schema": {"type": "boolean"},
     "description": "Skip the SHA-256 check made before any byte is sent."},
    {"name": "width", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": inspect.MAX_SIDE}},
    {"name": "height", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": inspect.MAX_SIDE}},
    {"name": "mode", "in": "query", "required": False,
     "schema": {"enum": ["fit", "fill"], "default": "fit"}},
    {"name": "fs", "in": "query", "required": False, "schema": {"type": "boolean"},
     "description": "Accepted and ignored: there is no old file server."},
    *({"name": n, "in": "query", "required": False, "schema": {"type": t},
       "description": "A signed link's parameters (POST /content/{content_id}/share)."}
      for n, t in (("v", "string"), ("exp", "integer"), ("sig", "string")))]


def file_metadata(item, base) -> dict:
    """Seed 003's FileMetadata of a content item."""
    return {"id": item.id, "publicUrl": f"{base}/getFile?id={item.id}",
            "fileName": item.filename, "contentType": item.content_type,
            "fileSize": item.size, "createdDate": iso(item.created_at),
            "checksum": item.sha256, "checksumAlgorithm": "sha256",
            "ownerId": item.account_id,
            "customMetadata": strict_loads(item.custom_metadata or "{}")}


def _item(content_id) -> ContentItem:
    item = ContentItem.get_or_none(ContentItem.id == str(content_id)[:40])
    if item is None:
        raise NotFound("No such file")
    return item


class _Files:
    def __init__(self, deps):
        self.deps, self.config, self.library = deps, deps.config, deps.library


# --- seed 000: account routes ----------------------------------------------------------------


class FileGet(_Files):
    """A file's bytes as base64 with its tag and item JSON (seed 000): for files up to
    10 MiB; larger ones are 413 (use GET /content/{content_id}/download). The bytes are
    checked against their SHA-256 as they are read (a mismatch is 500)."""

    scope = READ
    openapi_tag = "Files"
    openapi_query = {"get": [{"name": "file", "in": "query", "required": True,
                              "schema": ID_STR}]}
    openapi_body = {"post": FILE_BODY}

    def on_get(self, req, resp):
        viewer = req.context.caller.account_id
        item = self.library.get_for(viewer, seed_params(req, FILE_BODY)["file"])
        if item.size > MAX_BASE64_BYTES:
            raise PayloadTooLarge(
                f"The file is {item.size} bytes; base64 answers are for files up to "
                f"{MAX_BASE64_BYTES} bytes: use /content/{item.id}/download",
                details=[{"field": "file", "problem": "too large for base64; use "
                          f"/content/{item.id}/download"}])
        digest, parts = hashlib.sha256(), []
        chunks = self.library.open(item)
        try:
            for chunk in chunks:
                digest.update(chunk)
                parts.append(chunk)
        finally:
            chunks.close()
        if digest.hexdigest() != item.sha256:
            raise ChecksumFailed("The stored file failed its checksum check")
        ok(req, resp, {
            "file_id": item.id, "raw": base64.b64encode(b"".join(parts)).decode(),
            "tag": {"type": item.kind, "tags": strict_loads(item.tags),
                    "contentType": item.content_type, "fileName": item.filename},
            "data": self.library.item_json(item, viewer, base_url(req, self.config))})

    on_post = on_get


class FileList(_Files):
    """Your files and those shared with you, newest first (seed 000; page, limit 1-100,
    default 50): each is the content item JSON with ``file_id``."""

    scope = READ
    openapi_tag = "Files"
    openapi_query = {"get": PAGE_QUERY}

    def on_get(self, req, resp):
        page, limit = page_params(req)
        viewer = req.context.caller.account_id
        query = self.library.visible(viewer)
        total = query.count()
        rows = (query.order_by(ContentItem.created_at.desc(), ContentItem.id.desc())
                .offset((page - 1) * limit).limit(limit))
        base = base_url(req, self.config)
        files = [{"file_id": item.id, **self.library.item_json(item, viewer, base)}
                 for item in rows]
        ok(req, resp, page_answer(req, self.config, "files", files, total, page, limit))


# --- seed 003: admin routes ------------------------------------------------------------------


def _custom_metadata(raw):
    if raw is None or raw == "":
        return None
    problem = "must be a JSON object as a string"
    if len(raw) > MAX_CUSTOM_METADATA:
        problem = f"must be at most {MAX_CUSTOM_METADATA} characters"
        value = None
    else:
        try:
            value = strict_loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            value = None
    if not isinstance(value, dict):
        raise InvalidRequest(f"customMetadata {problem}",
                             details=[{"field": "customMetadata", "problem": problem}])
    return value


class UploadFile(_Files):
    """Store a file into an account's library (seed 003; admin). Not charged: an operator's
    upload, like the admin credit grant; the owner's storage quota and upload limit still
    apply (413). ``userId`` names the owner (required; 404 if unknown); ``id`` is a
    client-chosen id (letters, digits, ``_``, ``-``; at most 40; 409 if taken). Answers the
    FileMetadata (201)."""

    auth = ADMIN
    openapi_tag = "Files"
    openapi_media = "multipart/form-data"
    openapi_body = {"post": UPLOAD_FILE_FORM}

    def on_post(self, req, resp):
        staged, fields = read_multipart(req, self.config,
                                        ("id", "customMetadata", "userId", "filename"))
        try:
            user_id, item_id = fields.get("userId") or "", fields.get("id") or None
            if not user_id:
                raise InvalidRequest("userId: is required (the account that owns the file)",
                                     details=[{"field": "userId", "problem": "is required"}])
            if item_id is not None and not FILE_ID.fullmatch(item_id):
                raise InvalidRequest("id must be 1-40 letters, digits, _ or -", details=[
                    {"field": "id", "problem": f"must match {FILE_ID.pattern}"}])
            custom = _custom_metadata(fields.get("customMetadata"))
            if fields.get("filename"):
                staged.filename = inspect_name(fields["filename"], staged.filename)
            if Account.get_or_none(Account.id == user_id[:40]) is None:
                raise NotFound("No such user", details=[{"field": "userId",
                                                         "problem": "no such account"}])
            try:
                with write_transaction():
                    if item_id is not None and ContentItem.get_or_none(
                            ContentItem.id == item_id) is not None:
                        raise Conflict(f"A file with id {item_id!r} already exists")
                    item = self.library.commit(user_id, staged, item_id=item_id,
                                               custom_metadata=custom)
            except peewee.IntegrityError:  # the same id taken by a concurrent upload
                raise Conflict(f"A file with id {item_id!r} already exists") from None
        finally:
            staged.discard()
        ok(req, resp, file_metadata(item, base_url(req, self.config)), 201)


def inspect_name(name, staged_name) -> str:
    """``filename`` with the sniffed type's extension (the staged name's), as uploads do."""
    ext = staged_name.rsplit(".", 1)[-1]
    base = os.path.basename(str(name).replace("\\", "/"))
    base = "".join(c for c in base if c.isprintable())[:200].strip()
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return f"{stem or 'file'}.{ext}"


class GetFileMetadata(_Files):
    """A file's FileMetadata (seed 003; admin), whichever account owns it."""

    auth = ADMIN
    openapi_tag = "Files"
    openapi_query = {"get": ID_QUERY}

    def on_get(self, req, resp):
        item = _item(seed_params(req, ID_BODY)["id"])
        ok(req, resp, file_metadata(item, base_url(req, self.config)))


class RemoveFile(_Files):
    """Delete a file and every version (seed 003; admin); bytes no other item of the owner
    uses are removed from the store."""

    auth = ADMIN
    openapi_tag = "Files"
    openapi_query = {"delete": ID_QUERY}

    def on_delete(self, req, resp):
        item = _item(seed_params(req, ID_BODY)["id"])
        with write_transaction():
            keys = self.library.delete(item.account_id, item.id)
        self.library.remove_blobs(keys)
        ok(req, resp, {"success": True})


# --- seed 003: /getFile for front-end clients ------------------------------------------------


class GetFile(_Files):
    """A file's bytes, inline with its type (seed 003). Authorised by an account credential
    that may read the file (owner or collaborator; scope content:read), the admin key, or
    a signed link's ``v``, ``exp`` and ``sig``. The SHA-256 is checked before any byte is
    sent unless ``skipChecksum`` (a mismatch is 500). ``width``/``height`` with ``mode``
    (``fit``, the default, or ``fill``) answer a resized image (PNG, JPEG, GIF, WebP),
    cached by checksum and size; resized answers skip the checksum check, as the seed
    says. ``fs`` is accepted and ignored."""

    auth = NONE  # three ways in: authenticated here, not by the middleware
    openapi_tag = "Files"
    openapi_query = {"get": GET_FILE_QUERY}
    openapi_responses = {"get": BINARY_RESPONSES}

    def __init__(self, deps):
        super().__init__(deps)
        self.admin_key = self.config.admin_key.encode()
        self.admin_guard = AdminGuard(deps.limiter, self.config)

    def on_get(self, req, resp):
        signed = req.get_param("sig") is not None
        if not signed:
            viewer = self._authenticate(req)
        params = seed_params(req, ID_BODY)
        version, cache = None, "private, max-age=3600"
        if signed:
            item, version = self._signed(req, params["id"])
            cache = "public, max-age=300"  # the link is the secret
        elif viewer is None:  # the admin key
            item = _item(params["id"])
        else:
            item = self.library.get_for(viewer, params["id"])
        width = int_param(req, "width", None, 1, inspect.MAX_SIDE)
        height = int_param(req, "height", None, 1, inspect.MAX_SIDE)
        if self.deps.analytics is not None and req.method == "GET":
            self.deps.analytics.count(item.id, "downloads")
        if width is not None or height is not None:
            self._resized(req, resp, item, version, width, height, req.get_param("mode"))
        else:
            skip = req.get_param_as_bool("skipChecksum") or False
            if version is None:
                send_content(req, resp, self.library, item, verify=not skip)
            else:
                send_content(req, resp, self.library, item, sha256=version.sha256,
                             size=version.size, content_type=version.content_type,
                             filename=version.filename, verify=not skip)
        if resp.status[:3] in ("200", "304"):
            resp.set_header("Cache-Control", cache)

    on_head = on_get

    def _authenticate(self, req) -> str | None:
        """The viewer's account id for an account credential, None for the admin key;
        neither: 401."""
        admin = req.get_header("X-Administration-Key")
        if admin:
            if not self.admin_key:
                raise Forbidden("Admin routes are disabled: no ADMIN_KEY is configured")
            address = self.admin_guard.before(req)
            if not hmac.compare_digest(admin.encode(), self.admin_key):
                self.admin_guard.failed(address)
                raise AuthError("AUTH_FAILED", "Wrong administration key")
            return None
        authorization, api_key = req.get_header("Authorization"), req.get_header("X-API-Key")
        if not authorization and not api_key:
            raise AuthError("MISSING_AUTH_HEADER", "Send an API key (Authorization or "
                                                   "X-API-Key), the X-Administration-Key "
                                                   "header, or a signed link's v, exp and sig")
        return identify_in_resource(req, self.deps.authenticators, self.deps.limiter,
                                    READ).account_id

    def _signed(self, req, content_id):
        """The item and version a valid signed link names; anything else is 404."""
        sha, sig = req.get_param("v") or "", req.get_param("sig") or ""
        now = self.deps.clock.now().replace(tzinfo=dt.UTC).timestamp()
        # compare_digest refuses non-ASCII strings (TypeError): such a sig is simply wrong.
        if sig.isascii() and self.library.links.valid(str(content_id), sha,
                                                      req.get_param("exp"), sig, now):
            item = ContentItem.get_or_none(ContentItem.id == content_id)
            version = None if item is None else ContentVersion.get_or_none(
                ContentVersion.content == item.id, ContentVersion.sha256 == sha)
            if version is not None:
                return item, version
        raise NotFound("This link is invalid or has expired")

    def _resized(self, req, resp, item, version, width, height, mode):
        mode = mode or "fit"
        if mode not in ("fit", "fill"):
            raise InvalidRequest("mode must be fit or fill",
                                 details=[{"field": "mode", "problem": "fit or fill"}])
        if mode == "fill" and (width is None or height is None):
            raise InvalidRequest("mode=fill needs both width and height",
                                 details=[{"field": "mode", "problem": "needs width and height"}])
        sha = version.sha256 if version is not None else item.sha256
        ctype = version.content_type if version is not None else item.content_type
        filename = version.filename if version is not None else item.filename
        if ctype not in RESIZABLE:
            raise InvalidRequest("Only PNG, JPEG, GIF and WebP images can be resized",
                                 details=[{"field": "width", "problem": "not a resizable image"}])
        box = f"{width or ''}x{height or ''}-{mode}"
        etag = f'"{sha}-{box}"'
        resp.set_header("ETag", etag)
        resp.set_header("X-Content-Type-Options", "nosniff")
        wanted = req.get_header("If-None-Match")
        if wanted and (wanted.strip() == "*" or etag in
                       (t.strip().removeprefix("W/") for t in wanted.split(","))):
            resp.status = "304 Not Modified"
            return
        ext = inspect.ALLOWED[ctype]
        path = self._rendition(item, sha, box, ext, width, height, mode)
        stem = filename.rsplit(".", 1)[0] if "." in filename else filename
        resp.content_type = ctype
        resp.set_header("Content-Disposition", content_disposition(f"{stem}-{box}.{ext}"))
        size = path.stat().st_size
        if req.method == "HEAD":
            resp.content_length = size
            return
        resp.set_stream(open(path, "rb"), size)  # noqa: SIM115 - closed by the WSGI server

    def _rendition(self, item, sha, box, ext, width, height, mode) -> Path:
        """The cached rendition, made once. Content-addressed (checksum, box, mode), so it
        is safe to share across accounts: whoever reaches it was allowed the source."""
        folder = Path(self.config.data_dir) / "cache" / "resized"
        path = folder / f"{sha}-{box}.{ext}"
        if path.is_file():
            return path
        folder.mkdir(parents=True, exist_ok=True)
        fd, source = tempfile.mkstemp(dir=folder, prefix=".src-")
        try:
            with os.fdopen(fd, "wb") as out:
                chunks = self.library.open(item, sha256=sha)
                try:
                    for chunk in chunks:
                        out.write(chunk)
                finally:
                    chunks.close()
            data, _ = inspect.resize(source, width, height, mode)
        finally:
            Path(source).unlink(missing_ok=True)
        # A temp file and one rename: a concurrent reader never sees half a rendition.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".out-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
