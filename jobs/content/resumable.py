"""Resumable uploads (tus 1.0.0: core, creation, checksum, expiration, termination): the
state of each upload and its bytes so far. The HTTP face is gateway/resources/resumable.py.

An upload's bytes are one file ``DATA_DIR/tus/<id>`` (the web processes of one host share
it; behind several hosts, ``DATA_DIR`` must be a shared volume or uploads pinned to a
host); its offset is the row's, advanced only after the bytes are on disk, so a crash
mid-PATCH loses at most that PATCH's unrecorded tail, which the file is cut back to on
the next PATCH. One PATCH at a time per upload: a Redis lock (``SET NX PX`` with a token,
released by compare-and-delete) that any process sees; a second PATCH meanwhile is 423.
Nothing is charged until the last byte arrives; then the file is staged and inspected like
any upload and the ``upload`` action runs (``complete``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import secrets
from pathlib import Path

from core.errors import (
    ChecksumMismatch,
    Gone,
    InvalidRequest,
    Locked,
    NotFound,
    PayloadTooLarge,
)
from jobs.content.models import TusUpload
from metering.db import write_transaction

ALGORITHMS = {"sha1": hashlib.sha1, "md5": hashlib.md5, "sha256": hashlib.sha256}
CHUNK = 1024 * 1024
LOCK_MS = 10 * 60 * 1000  # a PATCH holding the lock longer than this has died
METADATA_KEYS = ("filename", "filetype", "description", "tags", "content_id")
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) else return 0 end")


def _bad(field, problem) -> InvalidRequest:
    return InvalidRequest(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def parse_length(raw) -> int:
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise _bad("Upload-Length", "must be a non-negative integer (Upload-Defer-Length "
                                    "is not supported)")
    return int(raw)


def parse_offset(raw) -> int:
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise _bad("Upload-Offset", "must be a non-negative integer")
    return int(raw)


def parse_metadata(raw) -> dict:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    out = {}
    if not raw:
        return out
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not key or not key.isascii() or " " in value.strip():
            raise _bad("Upload-Metadata", "must be comma-separated 'key base64' pairs")
        try:
            out[key] = base64.b64decode(value.strip(), validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError):
            raise _bad("Upload-Metadata", f"the value of {key} is not base64 UTF-8") from None
    return out


def parse_checksum(raw):
    """``Upload-Checksum: <algorithm> <base64 digest>`` -> (hasher, expected bytes)."""
    if raw is None:
        return None
    algo, _, digest = raw.strip().partition(" ")
    if algo.lower() not in ALGORITHMS:
        raise _bad("Upload-Checksum", f"algorithm must be one of {', '.join(ALGORITHMS)}")
    try:
        expected = base64.b64decode(digest.strip(), validate=True)
    except binascii.Error:
        raise _bad("Upload-Checksum", "the digest must be base64") from None
    return ALGORITHMS[algo.lower()](), expected


class Uploads:
    """Creating, appending to, completing and removing resumable uploads."""

    def __init__(self, config, redis, clock, ids):
        self.config, self.redis, self.clock, self.ids = config, redis, clock, ids
        self.folder = Path(config.data_dir) / "tus"

    def path(self, upload) -> Path:
        return self.folder / upload.id

    def create(self, account_id, length, metadata, content_id=None) -> TusUpload:
        now = self.clock.now()
        self.folder.mkdir(parents=True, exist_ok=True)
        upload = TusUpload.create(
            id=self.ids("tus", 12), account=account_id, length=length, offset=0,
            metadata=json.dumps(metadata), content_id=content_id, created_at=now,
            expires_at=now + dt.timedelta(seconds=self.config.storage.tus_expiry_seconds))
        self.path(upload).touch()
        return upload

    def get(self, account_id, upload_id) -> TusUpload:
        """The caller's upload; another account's or an unknown id is 404, an expired one
        410 (and removed)."""
        upload = TusUpload.get_or_none(TusUpload.id == str(upload_id)[:40],
                                       TusUpload.account == account_id)
        if upload is None:
            raise NotFound("No such upload")
        if upload.result is None and upload.expires_at <= self.clock.now():
            self.remove(upload)
            raise Gone("This upload has expired; start a new one")
        return upload

    def remove(self, upload) -> None:
        TusUpload.delete().where(TusUpload.id == upload.id).execute()
        self.path(upload).unlink(missing_ok=True)

    def lock(self, upload):
        """A context manager holding the upload's lock, or ``Locked`` (423) now."""
        key = f"{self.config.redis_prefix}:tus:lock:{upload.id}"
        token = secrets.token_hex(8)
        if not self.redis.set(key, token, nx=True, px=LOCK_MS):
            raise Locked("Another PATCH of this upload is in progress; retry when it ends")
        redis = self.redis

        class _Held:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                redis.eval(_RELEASE, 1, key, token)
                return False

        return _Held()

    def append(self, upload, stream, content_length, checksum) -> int:
        """Append this PATCH's body at the upload's offset; returns the new offset.

        The file is first cut back to the recorded offset (bytes a dead PATCH wrote but
        never recorded). Bytes past ``Upload-Length`` are refused with nothing appended;
        a checksum mismatch (460) appends nothing; a body cut short by the client keeps
        what arrived (without a checksum to check it against), so the client can ``HEAD``
        and resume."""
        start, room = upload.offset, upload.length - upload.offset
        if content_length is not None and content_length > room:
            raise PayloadTooLarge(f"The body is {content_length} bytes; only {room} remain of "
                                  f"the upload's {upload.length}")
        path = self.path(upload)
        written, cut_short = 0, False
        hasher = checksum[0] if checksum else None
        with open(path, "r+b" if path.exists() else "w+b") as out:
            out.truncate(start)
            out.seek(start)
            try:
                while content_length is None or written < content_length:
                    want = CHUNK if content_length is None else min(CHUNK,
                                                                    content_length - written)
                    chunk = stream.read(want)
                    if not chunk:
                        cut_short = content_length is not None
                        break
                    if written + len(chunk) > room:
                        out.truncate(start)
                        raise PayloadTooLarge(f"The body goes past the upload's "
                                              f"{upload.length} bytes")
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                    written += len(chunk)
            except (OSError, ValueError):  # the client went away mid-body
                cut_short = True
            if checksum and (cut_short or hasher.digest() != checksum[1]):
                out.truncate(start)
                if cut_short:
                    raise _bad("body", "ended before Content-Length; nothing was kept")
                raise ChecksumMismatch("The body does not match Upload-Checksum; nothing "
                                       "was appended")
            out.flush()
            os.fsync(out.fileno())
        offset = start + written
        with write_transaction():
            TusUpload.update(offset=offset).where(TusUpload.id == upload.id,
                                                  TusUpload.offset == start).execute()
        upload.offset = offset
        return offset

    def finish(self, upload, answer: dict) -> None:
        with write_transaction():
            TusUpload.update(result=json.dumps(answer)).where(
                TusUpload.id == upload.id).execute()
        upload.result = json.dumps(answer)

    def reap_expired(self) -> int:
        """Remove unfinished uploads past their expiry (rows and files); finished ones are
        kept until then too, so a HEAD can still show the result, then removed."""
        rows = list(TusUpload.select().where(TusUpload.expires_at <= self.clock.now()))
        for upload in rows:
            self.remove(upload)
        return len(rows)
