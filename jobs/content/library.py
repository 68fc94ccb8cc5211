"""The content library: what callers upload and what actions produce, one list per account.

An upload is *staged* first: streamed to a temp file under ``DATA_DIR/staging`` while its
SHA-256 and size are counted (over the size limit it stops reading and is refused), then
inspected (``jobs.content.inspect``: the real type from the bytes, images decoded under
the pixel limit and re-encoded without EXIF/GPS, videos probed). Nothing is stored or
charged until then, so every refusal leaves no blob, no row and no debit.

``Library.commit`` runs inside the upload action's transaction, after its debit: it locks
the owner's account row, checks the quota, writes the blob once per account (identical
bytes are stored once: blobs are keyed ``<account>/<sha256>``) and the item's rows. A
refusal there raises, and the debit rolls back with the rows. The checksum is of the
stored bytes (for images, the cleaned re-encoding), so a download can be verified
against it (seed 003's ``getFile`` does unless ``skipChecksum``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from peewee import fn

from core.clock import SYSTEM, Clock, utcnow
from core.errors import DomainError, Forbidden, InvalidRequest, NotFound, PayloadTooLarge
from core.ids import new_id
from core.timefmt import iso
from jobs import views
from jobs.content import inspect
from jobs.content.links import LinkSigner
from jobs.content.models import (
    Blob,
    Collaboration,
    ContentDaily,
    ContentItem,
    ContentVersion,
    PlanStorage,
)
from jobs.content.storage import CHUNK, BlobStore, Chunks
from metering import ledger
from metering.db import write_transaction
from metering.models import Account

MIB = 1024 * 1024
OWNER, READ, WRITE = "owner", "read", "write"
MAX_TAGS, MAX_TAG_LENGTH, MAX_DESCRIPTION = 32, 64, 4000


class ChecksumFailed(DomainError):
    """Stored bytes no longer match their checksum: answered 500, never served."""

    code = "INTERNAL_ERROR"


@dataclasses.dataclass
class Staged:
    """An upload's bytes on local disk, hashed and inspected, not yet stored or charged."""

    path: str
    size: int
    sha256: str
    content_type: str
    kind: str  # image | video
    filename: str = ""
    width: int | None = None
    height: int | None = None
    duration: float | None = None

    @property
    def fingerprint(self) -> str:
        """What an idempotency key's request hash takes from the file: its checksum."""
        return self.sha256

    def discard(self) -> None:
        Path(self.path).unlink(missing_ok=True)


def _staging(config) -> Path:
    folder = Path(config.data_dir) / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _too_large(limit, field) -> PayloadTooLarge:
    return PayloadTooLarge(f"The file is over the {limit}-byte upload limit",
                           details=[{"field": field, "problem": f"must be at most {limit} bytes"}])


def stage_stream(config, stream, *, filename="", max_bytes=None, field="file") -> Staged:
    """Copy ``stream`` (anything with ``read(n)``) to a staged file, hashing as it goes;
    over ``max_bytes`` (the plan's upload limit) it stops reading and refuses."""
    limit = max_bytes or config.storage.upload_max_bytes
    fd, tmp = tempfile.mkstemp(dir=_staging(config), prefix="up-")
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit, field)
                digest.update(chunk)
                out.write(chunk)
        return _inspect(config, tmp, size, digest.hexdigest(), filename, field)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stage_path(config, path, *, filename="", field="file", max_bytes=None) -> Staged:
    """Stage a file already on local disk (a completed resumable upload): it is moved, not
    copied, and hashed once."""
    size = os.path.getsize(path)
    limit = max_bytes or config.storage.upload_max_bytes
    if size > limit:
        Path(path).unlink(missing_ok=True)
        raise _too_large(limit, field)
    fd, tmp = tempfile.mkstemp(dir=_staging(config), prefix="up-")
    os.close(fd)
    try:
        shutil.move(str(path), tmp)
        return _inspect(config, tmp, size, _sha256_file(tmp), filename, field)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def stage_url(config, url, *, policy, filename="", field="file_url", max_bytes=None) -> Staged:
    """Fetch ``url`` under the outbound rule (CONTRACT 6: no private or loopback address
    unless configured, redirects re-checked) straight to a staged file, with the upload
    limits: automation platforms hand files over as URLs."""
    from jobs import outbound

    limit = max_bytes or config.storage.upload_max_bytes
    fd, tmp = tempfile.mkstemp(dir=_staging(config), prefix="up-")
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            def sink(chunk):
                nonlocal size
                size += len(chunk)
                digest.update(chunk)
                out.write(chunk)

            result = outbound.fetch(url, policy=policy, field=field, max_bytes=limit,
                                    sink=sink, deadline_s=300.0,
                                    too_large=lambda: _too_large(limit, field))
        name = filename or os.path.basename(result.final_url.split("?")[0].split("#")[0])
        return _inspect(config, tmp, size, digest.hexdigest(), name, field)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _inspect(config, tmp, size, sha, filename, field) -> Staged:
    if size == 0:
        raise InvalidRequest("The file is empty", details=[{"field": field,
                                                            "problem": "must not be empty"}])
    media = inspect.clean(tmp, max_pixels=config.storage.upload_max_pixels, field=field)
    if media.kind == "image":  # re-encoded without metadata: the stored bytes are new
        size, sha = os.path.getsize(tmp), _sha256_file(tmp)
    return Staged(path=tmp, size=size, sha256=sha, content_type=media.content_type,
                  kind=media.kind, filename=_safe_filename(filename, media.ext),
                  width=media.width, height=media.height, duration=media.duration)


def _safe_filename(name, ext) -> str:
    """The caller's file name without folders or control characters, its extension set to
    the sniffed type's (a ``.jpg`` that is a PNG is served as ``.png``)."""
    base = os.path.basename(str(name or "").replace("\\", "/"))
    base = "".join(c for c in base if c.isprintable())[:200].strip() or "file"
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return f"{stem or 'file'}.{ext}"


def set_plan_storage(plan, upload_max_bytes, quota_bytes) -> PlanStorage:
    """Set a plan's upload limit and quota (None: the deployment's default)."""
    from metering.models import Plan
    from metering.plans import DEFAULT_PLAN

    if plan != DEFAULT_PLAN and not Plan.select().where(Plan.name == plan).exists():
        raise NotFound(f"No plan {plan!r}; create it with PUT /admin/plans/{plan} first")
    with write_transaction():
        (PlanStorage.insert(plan=plan, upload_max_bytes=upload_max_bytes,
                            quota_bytes=quota_bytes, updated_at=utcnow())
         .on_conflict(conflict_target=[PlanStorage.plan],
                      update={PlanStorage.upload_max_bytes: upload_max_bytes,
                              PlanStorage.quota_bytes: quota_bytes,
                              PlanStorage.updated_at: utcnow()})
         .execute())
    return PlanStorage.get_by_id(plan)


def parse_tags(value, field="tags") -> list[str]:
    """Seed 002's comma-separated tags (or a JSON list): trimmed, deduplicated, bounded."""
    if value is None or value == "":
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
        raise InvalidRequest("tags must be a comma-separated string",
                             details=[{"field": field, "problem": "must be a string"}])
    tags = list(dict.fromkeys(t.strip() for t in items if t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG_LENGTH for t in tags):
        raise InvalidRequest(f"At most {MAX_TAGS} tags of {MAX_TAG_LENGTH} characters",
                             details=[{"field": field, "problem": "too many or too long"}])
    return tags


def check_description(value, field="description") -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidRequest(f"description must be text of at most {MAX_DESCRIPTION} characters",
                             details=[{"field": field, "problem": "too long or not text"}])
    return value


class Library:
    def __init__(self, config, store: BlobStore, *, clock: Clock = SYSTEM, ids=new_id):
        self.config = config
        self.store = store
        self.clock = clock
        self.ids = ids
        # Workers and web share one public base (PUBLIC_BASE_URL, else the bind address).
        self.base_url = views.base_url(config)
        self.links = LinkSigner.from_config(config)

    # --- money and space -------------------------------------------------------------

    @staticmethod
    def started_mib(size_bytes: int) -> int:
        return max(1, math.ceil(size_bytes / MIB))

    def limits(self, account_id) -> tuple[int, int]:
        """``(largest upload, storage quota)`` in bytes for the account's plan."""
        storage = self.config.storage
        row = (PlanStorage.select().join(Account, on=(Account.plan == PlanStorage.plan))
               .where(Account.id == account_id).first())
        if row is None:
            return storage.upload_max_bytes, storage.quota_bytes
        return (row.upload_max_bytes if row.upload_max_bytes is not None
                else storage.upload_max_bytes,
                row.quota_bytes if row.quota_bytes is not None else storage.quota_bytes)

    def upload_limit(self, account_id) -> int:
        return self.limits(account_id)[0]

    def usage_bytes(self, account_id) -> int:
        return int(Blob.select(fn.COALESCE(fn.SUM(Blob.size), 0))
                   .where(Blob.account == account_id).scalar() or 0)

    def quota_left(self, account_id) -> int:
        return self.limits(account_id)[1] - self.usage_bytes(account_id)

    def check_quota(self, account_id, staged: Staged) -> None:
        """Refuse when the bytes would not fit; identical bytes already held are free."""
        if Blob.get_or_none(Blob.account == account_id, Blob.sha256 == staged.sha256):
            return
        limit, quota = self.limits(account_id)
        if staged.size > limit:
            raise _too_large(limit, "file")
        left = quota - self.usage_bytes(account_id)
        if staged.size > left:
            raise PayloadTooLarge(
                f"The file ({staged.size} bytes) is over the storage quota: "
                f"{max(left, 0)} of {quota} bytes left",
                details=[{"field": "file", "problem": "over the storage quota"}])

    # --- access ----------------------------------------------------------------------

    def get_for(self, viewer_id, content_id, need=READ) -> ContentItem:
        """The item if ``viewer_id`` may ``need`` it (owner, or a collaborator with read or
        write); an item the viewer cannot see at all is 404, as if it did not exist, and
        one it may see but not change is 403."""
        item = ContentItem.get_or_none(ContentItem.id == str(content_id)[:40])
        if item is None:
            raise NotFound("No such content")
        if item.account_id == viewer_id:
            return item
        share = Collaboration.get_or_none(Collaboration.content == item.id,
                                          Collaboration.collaborator == viewer_id)
        if share is None:
            raise NotFound("No such content")
        if need == OWNER or (need == WRITE and share.permissions != WRITE):
            raise Forbidden(f"Your collaboration on this content does not allow this "
                            f"({share.permissions} access)")
        return item

    def permission(self, item, viewer_id) -> str:
        if item.account_id == viewer_id:
            return OWNER
        share = Collaboration.get_or_none(Collaboration.content == item.id,
                                          Collaboration.collaborator == viewer_id)
        return share.permissions if share else READ

    # --- writing ---------------------------------------------------------------------

    def commit(self, uploader_id, staged: Staged, *, content_id=None, description=None,
               tags=None, receipt=None, source=ContentItem.UPLOAD, composition_uid=None,
               custom_metadata=None, item_id=None) -> ContentItem:
        """Store ``staged`` as a new item, or as the next version of ``content_id``; call
        inside a write transaction (the upload's, after its debit). Raises before writing
        anything when the quota would be exceeded."""
        item = None
        if content_id:
            item = self.get_for(uploader_id, content_id, WRITE)
            item = ledger.for_update(ContentItem.select().where(ContentItem.id == item.id)).get()
        owner = item.account_id if item else uploader_id
        # The owner's row lock serialises every upload into one account, so two uploads
        # that together exceed the quota cannot both pass the check.
        ledger.for_update(Account.select().where(Account.id == owner)).get()
        self.check_quota(owner, staged)
        return self._write(owner, uploader_id, staged, item, description=description,
                           tags=tags, receipt=receipt, source=source,
                           composition_uid=composition_uid, custom_metadata=custom_metadata,
                           item_id=item_id)

    def _write(self, owner, uploader_id, staged, item, *, description=None, tags=None,
               receipt=None, source=ContentItem.UPLOAD, composition_uid=None,
               custom_metadata=None, item_id=None) -> ContentItem:
        """The blob (once per owner) and the item's rows; the caller holds the owner's
        row lock, inside a write transaction."""
        now = self.clock.now()
        if Blob.get_or_none(Blob.account == owner, Blob.sha256 == staged.sha256) is None:
            Blob.create(account=owner, sha256=staged.sha256, size=staged.size,
                        content_type=staged.content_type, created_at=now)
            self.store.put_file(f"{owner}/{staged.sha256}", staged.path, staged.content_type)
        fields = dict(kind=staged.kind, content_type=staged.content_type,
                      filename=staged.filename, sha256=staged.sha256, size=staged.size,
                      width=staged.width, height=staged.height, duration=staged.duration,
                      updated_at=now)
        if item is None:
            item = ContentItem.create(
                id=item_id or self.ids("cnt", 12), account=owner, source=source,
                composition_uid=composition_uid, version=1,
                description=check_description(description),
                tags=json.dumps(parse_tags(tags)),
                custom_metadata=json.dumps(custom_metadata or {}), created_at=now, **fields)
        else:
            item.version += 1
            for name, value in fields.items():
                setattr(item, name, value)
            if description is not None:
                item.description = check_description(description)
            if tags is not None:
                item.tags = json.dumps(parse_tags(tags))
            item.save()
        ContentVersion.create(content=item.id, number=item.version, created_by=uploader_id,
                              txn_receipt=receipt, created_at=now,
                              **{k: v for k, v in fields.items() if k not in
                                 ("kind", "updated_at")})
        return item

    def save_output(self, account_id, composition_uid, name, *, data=None, path=None):
        """An action's or project run's output as a content item of ``account_id``:
        ``{"url": the signed URL callers get (valid OUTPUT_LINK_SECONDS), "contentId"}``,
        or None when it is not an image or video (JSON results stay plain output files).

        Outputs were paid for by their action, so they are never refused for the quota
        (they count in usage) and cost nothing more. Our own encodings carry no camera
        metadata, so they are stored as written, not re-encoded."""
        tmp = None
        if path is None:  # bytes in memory: staged to a file the store can read
            fd, tmp = tempfile.mkstemp(dir=_staging(self.config), prefix="out-")
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            path = tmp
        try:
            try:
                ctype = inspect.sniff(path)
            except DomainError:
                return None
            kind = ctype.split("/")[0]
            width = height = None
            if kind == "image":
                from PIL import Image

                with Image.open(path) as img:
                    width, height = img.size
            staged = Staged(path=str(path), size=os.path.getsize(path),
                            sha256=_sha256_file(path), content_type=ctype, kind=kind,
                            filename=_safe_filename(name, inspect.ALLOWED[ctype]),
                            width=width, height=height)
            with write_transaction():
                ledger.for_update(Account.select().where(Account.id == account_id)).get()
                item = self._write(account_id, account_id, staged, None,
                                   source=ContentItem.OUTPUT, composition_uid=composition_uid)
            return {"url": self.link(item, self.config.storage.output_link_seconds)[0],
                    "contentId": item.id}
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def update_metadata(self, viewer_id, content_id, *, description=None, tags=None):
        item = self.get_for(viewer_id, content_id, WRITE)
        if description is not None:
            item.description = check_description(description)
        if tags is not None:
            item.tags = json.dumps(parse_tags(tags))
        item.updated_at = self.clock.now()
        item.save()
        return item

    def delete(self, viewer_id, content_id) -> list[str]:
        """Delete an item the viewer owns (inside a transaction) and the blob rows no
        version references any more; returns the blob keys to remove from the store once
        the transaction has committed (``remove_blobs``)."""
        item = self.get_for(viewer_id, content_id, OWNER)
        shas = {v.sha256 for v in ContentVersion.select(ContentVersion.sha256)
                .where(ContentVersion.content == item.id)} | {item.sha256}
        Collaboration.delete().where(Collaboration.content == item.id).execute()
        ContentDaily.delete().where(ContentDaily.content == item.id).execute()
        ContentVersion.delete().where(ContentVersion.content == item.id).execute()
        item.delete_instance()
        gone = []
        for sha in sorted(shas):
            still = (ContentVersion.select().join(ContentItem)
                     .where(ContentItem.account == item.account_id,
                            ContentVersion.sha256 == sha).exists())
            if not still:
                Blob.delete().where(Blob.account == item.account_id,
                                    Blob.sha256 == sha).execute()
                gone.append(f"{item.account_id}/{sha}")
        return gone

    def remove_blobs(self, keys) -> None:
        for key in keys:
            self.store.delete(key)

    # --- reading ---------------------------------------------------------------------

    def visible(self, viewer_id):
        """Items the viewer owns or has been given, newest first."""
        shared = Collaboration.select(Collaboration.content).where(
            Collaboration.collaborator == viewer_id)
        return ContentItem.select().where((ContentItem.account == viewer_id)
                                          | (ContentItem.id.in_(shared)))

    def version_of(self, item, number=None) -> ContentVersion:
        number = item.version if number is None else number
        version = ContentVersion.get_or_none(ContentVersion.content == item.id,
                                             ContentVersion.number == number)
        if version is None:
            raise NotFound(f"No version {number} of this content")
        return version

    def open(self, item, *, sha256=None, start=0, end=None, verify=False) -> Chunks:
        """The stored bytes of ``item`` (its newest version, or the blob ``sha256``); with
        ``verify`` the whole blob is hashed first and a mismatch is never served."""
        sha = sha256 or item.sha256
        key = f"{item.account_id}/{sha}"
        if verify:
            digest = hashlib.sha256()
            for chunk in self.store.read(key):
                digest.update(chunk)
            if digest.hexdigest() != sha:
                raise ChecksumFailed("The stored file failed its checksum check")
        return self.store.read(key, start, end)

    def link(self, item, ttl_s: int, *, base_url=None, sha256=None) -> tuple[str, int]:
        """A signed link to these bytes of ``item`` that anyone may open for ``ttl_s``
        seconds; returns ``(url, expires at in unix seconds)``."""
        exp = int(self.clock.now().replace(tzinfo=dt.UTC).timestamp()) + int(ttl_s)
        base = self.base_url if base_url is None else base_url
        return self.links.url(base, item.id, sha256 or item.sha256, exp, item.filename), exp

    def usage(self, account_id) -> dict:
        used = self.usage_bytes(account_id)
        upload_max, quota = self.limits(account_id)
        counts = {kind: n for kind, n in (
            ContentItem.select(ContentItem.kind, fn.COUNT(ContentItem.id))
            .where(ContentItem.account == account_id).group_by(ContentItem.kind).tuples())}
        return {"userId": account_id, "bytesUsed": used, "quotaBytes": quota,
                "bytesAvailable": max(quota - used, 0), "uploadMaxBytes": upload_max,
                "percentUsed": round(100.0 * used / quota, 2) if quota else 100.0,
                "itemCount": sum(counts.values()),
                "byType": {"image": counts.get("image", 0), "video": counts.get("video", 0)}}

    def item_json(self, item, viewer_id, base_url=None) -> dict:
        base_url = self.base_url if base_url is None else base_url
        return {
            "id": item.id, "contentId": item.id, "userId": item.account_id, "type": item.kind,
            "fileName": item.filename, "contentType": item.content_type, "size": item.size,
            "checksum": {"sha256": item.sha256}, "description": item.description,
            "tags": json.loads(item.tags), "version": item.version,
            "width": item.width, "height": item.height, "duration": item.duration,
            "source": item.source, "compositionUid": item.composition_uid,
            "customMetadata": json.loads(item.custom_metadata or "{}"),
            "permissions": self.permission(item, viewer_id),
            "url": f"{base_url}/content/{item.id}/download",
            "createdAt": iso(item.created_at), "updatedAt": iso(item.updated_at),
        }

    @staticmethod
    def version_json(version) -> dict:
        return {"version": version.number, "size": version.size,
                "checksum": {"sha256": version.sha256}, "contentType": version.content_type,
                "fileName": version.filename, "width": version.width,
                "height": version.height, "duration": version.duration,
                "createdBy": version.created_by, "txnReceipt": version.txn_receipt,
                "createdAt": iso(version.created_at)}

