"""Blob storage of the content library: one interface, a filesystem and an S3 backend.

A blob is immutable bytes under a key ``<account>/<sha256>`` (the library names it), so a
put of an existing key writes the same bytes again and is safe to repeat. Both backends
answer the same calls the same way, so the library and the HTTP layer never ask which one
they hold: ``read`` serves HTTP ``Range`` semantics (``end`` inclusive, clamped to the
size), in chunks of at most 1 MiB so a download never holds a file in memory, and opens
the blob before it returns, so a missing blob is ``NotFound`` before any byte is sent.
"""

from __future__ import annotations

import abc
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from core.errors import NotFound

CHUNK = 1024 * 1024
# Keys are the library's own ``<account>/<sha256>``; anything else (``..``, absolute
# paths, odd characters) is refused so a key can never leave the store's folder.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
SAFE_KEY = re.compile(rf"^{_SEGMENT}(/{_SEGMENT}){{0,3}}$")


def check_key(key: str) -> str:
    if not isinstance(key, str) or not SAFE_KEY.match(key) or ".." in key:
        raise ValueError(f"unsafe blob key {key!r}")
    return key


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range {start}-{end}")


def content_disposition(filename: str | None) -> str:
    """``inline`` with the filename both as plain ASCII and RFC 5987 UTF-8, so any name
    (quotes, non-ASCII) survives without breaking the header."""
    if not filename:
        return "inline"
    plain = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_"
                    for c in filename)
    return f"inline; filename=\"{plain}\"; filename*=UTF-8''{quote(filename, safe='')}"


class Chunks:
    """The bytes of one read: an iterator of chunks with a ``close`` that releases the open
    file or HTTP body even if nobody iterates (WSGI servers call ``close`` on a response
    iterable; a generator that never started would not run its ``finally``)."""

    def __init__(self, source, remaining: int | None):
        self._source = source  # has .read(n) and .close()
        self._remaining = remaining  # None: until the source ends

    def __iter__(self) -> Chunks:
        return self

    def __next__(self) -> bytes:
        want = CHUNK if self._remaining is None else min(CHUNK, self._remaining)
        data = self._source.read(want) if want > 0 else b""
        if not data:
            self.close()
            raise StopIteration
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def close(self) -> None:
        source, self._source = self._source, _Empty
        source.close()


class _Empty:
    @staticmethod
    def read(_n):
        return b""

    @staticmethod
    def close():
        return None


class BlobStore(abc.ABC):
    """What both backends implement; see the module docstring for the shared rules. The
    abstract methods are the interface: a backend missing one fails when it is built."""

    kind: str = ""

    @abc.abstractmethod
    def put_file(self, key: str, path: str, content_type: str) -> None:
        """Store the file at ``path`` as ``key`` (the same bytes again when it exists)."""

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    @abc.abstractmethod
    def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None when there is no such blob."""

    @abc.abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (inclusive, clamped) in chunks of at most 1 MiB;
        ``NotFound`` before any byte when there is no such blob."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob; a blob already gone is not an error."""

    def presigned_url(self, key: str, expires_s: int, filename: str | None) -> str | None:
        return None


class FileBlobStore(BlobStore):
    """Blobs as files under ``DATA_DIR/blobs/<account>/<sha256>``."""

    kind = "fs"

    def __init__(self, root):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, path: str, content_type: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A temp file in the same folder and one rename: a reader sees the old blob or the
        # whole new one, never a half-written file, and a crash leaves only a dot-file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int = 0, end: int | None = None) -> Chunks:
        _check_range(start, end)
        try:
            # Closed by Chunks.close when the read ends or the response is dropped.
            handle = open(self._path(key), "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise NotFound("The content's bytes were not found") from None
        handle.seek(start)
        return Chunks(handle, None if end is None else end - start + 1)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore(BlobStore):
    """Blobs as objects ``<account>/<sha256>`` of one bucket, through boto3 (path-style
    addressing, so any S3-compatible server works without wildcard DNS)."""

    kind = "s3"

    def __init__(self, storage):
        import boto3
        from botocore.config import Config as BotoConfig

        self.bucket = storage.s3_bucket
        # One client per store: boto3 clients are thread-safe (sessions are not), and the
        # store lives as long as the process's services.
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=storage.s3_endpoint_url or None,
            aws_access_key_id=storage.s3_access_key or None,
            aws_secret_access_key=storage.s3_secret_key or None,
            region_name=storage.s3_region,
            config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"},
                              connect_timeout=5, read_timeout=60,
                              retries={"max_attempts": 3, "mode": "standard"}))
        self.region = storage.s3_region
        self._bucket_ready = False
        self._lock = threading.Lock()

    @staticmethod
    def _status(exc) -> int:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)

    @staticmethod
    def _code(exc) -> str:
        return str(exc.response.get("Error", {}).get("Code") or "")

    def _ensure_bucket(self) -> None:
        """Create the bucket on the first write if it is missing, not at start-up: a web
        process that only reads (or an S3 briefly down) must still boot."""
        if self._bucket_ready:
            return
        from botocore.exceptions import ClientError

        with self._lock:
            if self._bucket_ready:
                return
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if self._status(exc) != 404:
                    raise
                kwargs = {} if self.region == "us-east-1" else {
                    "CreateBucketConfiguration": {"LocationConstraint": self.region}}
                try:
                    self.client.create_bucket(Bucket=self.bucket, **kwargs)
                except ClientError as create_exc:  # another process made it meanwhile
                    if self._code(create_exc) not in ("BucketAlreadyOwnedByYou",
                                                      "BucketAlreadyExists"):
                        raise
            self._bucket_ready = True

    def put_file(self, key: str, path: str, content_type: str) -> None:
        self._ensure_bucket()
        # upload_file streams from disk and switches to a multipart upload for large files.
        self.client.upload_file(str(path), self.bucket, check_key(key),
                                ExtraArgs={"ContentType": content_type})

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if self._status(exc) == 404:
                return None
            raise
        return int(head["ContentLength"])

    def read(self, key: str, start: int = 0, end: int | None = None) -> Chunks:
        from botocore.exceptions import ClientError

        _check_range(start, end)
        kwargs = {"Bucket": self.bucket, "Key": check_key(key)}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            obj = self.client.get_object(**kwargs)
        except ClientError as exc:
            if self._status(exc) == 404:
                raise NotFound("The content's bytes were not found") from None
            if self._status(exc) == 416:  # start past the end: no bytes, as on fs
                return Chunks(_Empty, 0)
            raise
        return Chunks(obj["Body"], None)

    def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too: deleting twice is not an error.
        self.client.delete_object(Bucket=self.bucket, Key=check_key(key))

    def presigned_url(self, key: str, expires_s: int, filename: str | None) -> str | None:
        params = {"Bucket": self.bucket, "Key": check_key(key),
                  "ResponseContentDisposition": content_disposition(filename)}
        return self.client.generate_presigned_url("get_object", Params=params,
                                                  ExpiresIn=int(expires_s))


def make_store(config) -> BlobStore:
    """The store ``config.storage.backend`` names (``fs``: ``DATA_DIR/blobs``)."""
    storage = config.storage
    if storage.backend == "s3":
        return S3BlobStore(storage)
    return FileBlobStore(Path(config.data_dir) / "blobs")
