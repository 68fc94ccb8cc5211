"""The blob store contract, run on both backends: the filesystem under ``DATA_DIR/blobs``
and S3 on a real SeaweedFS (the session's ``seaweed`` server). The library and the HTTP
layer rely on these answers being the same whichever backend a deployment picks."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest
import requests

from core.config import Config, ConfigError
from core.errors import NotFound
from jobs.content.storage import CHUNK, make_store

# 2.5 MiB of non-repeating bytes: reads cross chunk boundaries, ranges land mid-chunk.
PAYLOAD = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(81920))[
    : 2 * CHUNK + CHUNK // 2]


@pytest.fixture(params=["fs", "s3"])
def store(request, config):
    cfg = config if request.param == "fs" else request.getfixturevalue("s3config")
    store = make_store(cfg)
    assert store.kind == request.param
    return store


@pytest.fixture(scope="module")
def payload_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("blobs") / "payload.bin"
    path.write_bytes(PAYLOAD)
    return path


def new_key():
    return f"acc_{uuid.uuid4().hex[:10]}/{hashlib.sha256(uuid.uuid4().bytes).hexdigest()}"


def read_all(store, key, start=0, end=None):
    chunks = list(store.read(key, start, end))
    assert all(0 < len(c) <= CHUNK for c in chunks)
    return b"".join(chunks)


def test_put_exists_size_read_delete(store, payload_file):
    key = new_key()
    assert not store.exists(key) and store.size(key) is None
    store.put_file(key, str(payload_file), "application/octet-stream")
    assert store.exists(key) and store.size(key) == len(PAYLOAD)
    assert read_all(store, key) == PAYLOAD
    # Ranges are HTTP's: end inclusive, an end past the size clamped, a start past it empty.
    last = len(PAYLOAD) - 1
    for start, end in [(0, 0), (10, 19), (CHUNK - 3, CHUNK + 2), (CHUNK + 5, None),
                       (last, last), (last - 4, last + 1000)]:
        stop = len(PAYLOAD) if end is None else end + 1
        assert read_all(store, key, start, end) == PAYLOAD[start:stop], (start, end)
    assert read_all(store, key, len(PAYLOAD) + 10) == b""
    with pytest.raises(ValueError):
        store.read(key, 20, 10)
    store.delete(key)
    assert not store.exists(key) and store.size(key) is None
    store.delete(key)  # a missing blob: no error
    with pytest.raises(NotFound):  # raised by read itself, before any byte is streamed
        store.read(key)


def test_put_is_idempotent_and_leaves_no_temp_files(store, payload_file, tmp_path):
    key = new_key()
    store.put_file(key, str(payload_file), "application/octet-stream")
    store.put_file(key, str(payload_file), "application/octet-stream")
    assert store.size(key) == len(PAYLOAD) and read_all(store, key) == PAYLOAD
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    other = new_key()
    store.put_file(other, str(empty), "application/octet-stream")
    assert store.size(other) == 0 and read_all(store, other) == b""
    if store.kind == "fs":
        assert sorted(os.listdir(store.root / key.split("/")[0])) == [key.split("/")[1]]
    reader = store.read(key)  # an unread download releases its file or body on close
    reader.close()
    assert list(reader) == []


def test_unsafe_keys_are_refused(store, payload_file):
    for key in ("../escape", "/abs/key", "acc/../x", "acc//x", "acc/x y", ""):
        with pytest.raises(ValueError):
            store.put_file(key, str(payload_file), "image/png")
        with pytest.raises(ValueError):
            store.read(key)


def test_presigned_url(store, tmp_path):
    key = new_key()
    path = tmp_path / "photo.png"
    path.write_bytes(PAYLOAD[:5000])
    store.put_file(key, str(path), "image/png")
    url = store.presigned_url(key, 60, 'my "photo".png')
    if store.kind == "fs":
        assert url is None  # the gateway streams fs blobs itself
        return
    resp = requests.get(url, timeout=10)  # no credentials: the signature is the grant
    assert resp.status_code == 200 and resp.content == PAYLOAD[:5000]
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Disposition"].startswith('inline; filename="my _photo_.png"')
    assert requests.get(url.split("?")[0], timeout=10).status_code in (401, 403)


def test_storage_config_from_env():
    default = Config.from_env({}).storage
    assert (default.backend, default.s3_bucket, default.s3_region, default.presign_seconds,
            default.upload_max_bytes, default.quota_bytes,
            default.upload_max_pixels) == ("fs", "gateway", "us-east-1", 0, 100 * 1024 ** 2,
                                           1024 ** 3, 40_000_000)
    s3 = Config.from_env({"STORAGE_BACKEND": "S3", "S3_ENDPOINT_URL": "http://127.0.0.1:9/",
                          "S3_SECRET_KEY": "hush", "S3_PRESIGN_SECONDS": "300",
                          "UPLOAD_MAX_BYTES": "1000"}).storage
    assert (s3.backend, s3.s3_endpoint_url, s3.presign_seconds, s3.upload_max_bytes) == (
        "s3", "http://127.0.0.1:9", 300, 1000)
    assert "hush" not in repr(s3)
    for env in ({"STORAGE_BACKEND": "ftp"}, {"S3_ENDPOINT_URL": "ftp://x"},
                {"UPLOAD_MAX_BYTES": "0"}, {"S3_PRESIGN_SECONDS": "-1"}):
        with pytest.raises(ConfigError):
            Config.from_env(env)
