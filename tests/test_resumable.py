"""Resumable uploads (tus 1.0.0) through the real app and a real gunicorn: creation, HEAD,
PATCH in pieces, an interrupted PATCH resumed, wrong offsets and checksums, expiry, two
concurrent PATCHes, termination, isolation; charged once, when the last byte arrives."""

from __future__ import annotations

import base64
import hashlib
import io
import select
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from falcon.testing import TestClient
from PIL import Image

from conftest import ADMIN, bearer, ledger_sum, make_app, start_gunicorn
from core.clock import ManualClock

TUS = {"Tus-Resumable": "1.0.0"}


def png(width=120, height=120, seed=1) -> bytes:
    rnd = __import__("random").Random(seed)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3)).save(out, "PNG")
    return out.getvalue()


def b64(text) -> str:
    return base64.b64encode(text.encode()).decode()


def create(client, key, length, **meta):
    headers = {**bearer(key), **TUS, "Upload-Length": str(length)}
    if meta:
        headers["Upload-Metadata"] = ",".join(f"{k} {b64(v)}" for k, v in meta.items())
    resp = client.simulate_post("/uploads", headers=headers)
    assert resp.status_code == 201, resp.text
    return urlsplit(resp.headers["location"]).path


def patch(client, key, path, offset, body, **headers):
    return client.simulate_request("PATCH", path, body=body, headers={
        **bearer(key), **TUS, "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream", **headers})


def head(client, key, path):
    return client.simulate_head(path, headers={**bearer(key), **TUS})


@pytest.fixture
def clocked(lconfig, schema):
    clock = ManualClock()
    return TestClient(make_app(lconfig, clock=clock)), clock


def test_upload_in_pieces_with_checksums_then_charged_once(clocked, make_account):
    client, _ = clocked
    acct, key = make_account(credits=10)
    data = png()
    path = create(client, key, len(data), filename="tile.png", tags="a,b")
    state = head(client, key, path)
    assert state.status_code == 200 and state.headers["upload-offset"] == "0"
    assert state.headers["upload-length"] == str(len(data))
    assert state.headers["tus-resumable"] == "1.0.0" and state.headers["upload-expires"]
    third = len(data) // 3
    digest = hashlib.sha1(data[:third]).digest()  # noqa: S324 (the tus spec's algorithm)
    sha1 = base64.b64encode(digest).decode()
    first = patch(client, key, path, 0, data[:third], **{"Upload-Checksum": f"sha1 {sha1}"})
    assert first.status_code == 204 and first.headers["upload-offset"] == str(third)
    assert ledger_sum(acct) == (10, 10)  # nothing charged before the last byte
    second = patch(client, key, path, third, data[third:2 * third])
    assert second.headers["upload-offset"] == str(2 * third)
    last = patch(client, key, path, 2 * third, data[2 * third:])
    assert last.status_code == 204, last.text
    cid = last.headers["upload-content-id"]
    assert last.headers["x-txn-receipt"].startswith("txn_")
    assert ledger_sum(acct) == (9, 9)
    item = client.simulate_get(f"/content/{cid}", headers=bearer(key)).json["data"]
    assert item["fileName"] == "tile.png" and item["tags"] == ["a", "b"]
    got = client.simulate_get(f"/content/{cid}/download", headers=bearer(key)).content
    assert hashlib.sha256(got).hexdigest() == item["checksum"]["sha256"]
    done = head(client, key, path)  # the result stays visible to a client that lost it
    assert done.headers["upload-content-id"] == cid
    again = patch(client, key, path, len(data), b"")
    assert again.status_code == 204 and ledger_sum(acct) == (9, 9)


def test_protocol_refusals(clocked, make_account):
    client, clock = clocked
    acct, key = make_account(credits=10)
    _, other_key = make_account(credits=10)
    data = png(60, 60, seed=2)
    path = create(client, key, len(data))
    no_version = client.simulate_head(path, headers=bearer(key))
    assert no_version.status_code == 412 and no_version.headers["tus-version"] == "1.0.0"
    assert no_version.headers["tus-resumable"] == "1.0.0"
    wrong_type = client.simulate_request("PATCH", path, body=data, headers={
        **bearer(key), **TUS, "Upload-Offset": "0", "Content-Type": "image/png"})
    assert wrong_type.status_code == 415
    assert patch(client, key, path, 5, data).status_code == 409
    bad = base64.b64encode(hashlib.sha1(b"other").digest()).decode()  # noqa: S324
    mismatch = patch(client, key, path, 0, data[:100], **{"Upload-Checksum": f"sha1 {bad}"})
    assert mismatch.status_code == 460 and mismatch.json["error"]["code"] == "CHECKSUM_MISMATCH"
    assert head(client, key, path).headers["upload-offset"] == "0"
    algo = patch(client, key, path, 0, data[:10], **{"Upload-Checksum": "crc32 AAAA"})
    assert algo.status_code == 400
    over = patch(client, key, path, 0, data + b"extra")
    assert over.status_code == 413 and head(client, key, path).headers["upload-offset"] == "0"
    for method in ("HEAD", "PATCH", "DELETE"):  # another account's upload does not exist
        resp = client.simulate_request(method, path, body=b"x", headers={
            **bearer(other_key), **TUS, "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream"})
        assert resp.status_code == 404, method
    too_big = client.simulate_post("/uploads", headers={
        **bearer(key), **TUS, "Upload-Length": str(10 ** 12)})
    assert too_big.status_code == 413
    no_length = client.simulate_post("/uploads", headers={**bearer(key), **TUS})
    assert no_length.status_code == 400
    clock.advance(24 * 3600 + 1)
    assert head(client, key, path).status_code == 410
    assert head(client, key, path).status_code == 404  # and then it is gone
    fresh = create(client, key, len(data))
    gone = client.simulate_delete(fresh, headers={**bearer(key), **TUS})
    assert gone.status_code == 204 and head(client, key, fresh).status_code == 404
    assert ledger_sum(acct) == (10, 10)


def test_a_refused_completion_charges_nothing_and_leaves_nothing(clocked, make_account):
    client, _ = clocked
    acct, key = make_account(credits=10)
    data = b"%PDF-1.7 " + bytes(500)
    path = create(client, key, len(data), filename="doc.png")
    resp = patch(client, key, path, 0, data)
    assert resp.status_code == 415 and resp.json["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert head(client, key, path).status_code == 404
    assert ledger_sum(acct) == (10, 10)
    listed = client.simulate_get("/content/list", headers=bearer(key)).json["data"]
    assert listed["items"] == []


@pytest.fixture(scope="module")
def gunicorn(lconfig, schema):
    proc, url = start_gunicorn(lconfig, workers=2, threads=4)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_interrupted_patch_resumes_and_concurrent_patch_is_locked(gunicorn, client,
                                                                 make_account):
    # the polling below may send many PATCHes on a busy machine: no rate limit may refuse them
    assert client.simulate_put("/admin/plans/tus-poll", headers=ADMIN,
                               json={"perMinute": 100000, "perDay": 1000000}).status_code == 200
    acct, key = make_account(credits=10, plan="tus-poll")
    data = png(200, 200, seed=3)
    headers = {**bearer(key), **TUS}
    made = requests.post(gunicorn + "/uploads", timeout=10,
                         headers={**headers, "Upload-Length": str(len(data))})
    assert made.status_code == 201, made.text
    url = gunicorn + urlsplit(made.headers["location"]).path
    # A client that dies mid-body: it promised all the bytes, sent half and hung up.
    half = len(data) // 2
    host, port = urlsplit(gunicorn).hostname, urlsplit(gunicorn).port
    with socket.create_connection((host, port), timeout=10) as sock:
        request = (f"PATCH {urlsplit(url).path} HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
                   f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                   f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n")
        sock.sendall(request.encode() + data[:half])
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):  # the server answers once it has seen the end
            pass
    offset = int(requests.head(url, headers=headers, timeout=10).headers["upload-offset"])
    assert offset == half

    def probe():  # a PATCH one byte past the offset: 423 while locked, else 409, no append
        return requests.patch(url, data=b"x", timeout=10, headers={
            **headers, "Upload-Offset": str(offset + 1),
            "Content-Type": "application/offset+octet-stream"})

    # The interrupted PATCH's handler lets go of the lock just after it answered: wait for
    # that (a tus client would retry its 423), so the lock below is the first PATCH's.
    deadline = time.monotonic() + 60
    while (locked := probe()).status_code == 423:
        assert time.monotonic() < deadline, "the interrupted PATCH never released the lock"
        threading.Event().wait(0.05)
    assert locked.status_code == 409, locked.text
    # Two PATCHes at once: the first holds the lock while its body is still arriving. It is
    # sent on a raw socket, so the test holds back the rest of its body and can see, without
    # blocking, whether the server has already answered it.
    rest, path = data[offset:], urlsplit(url).path

    def open_first():  # the headers and the first 1000 bytes now, the rest on release
        sock = socket.create_connection((host, port), timeout=30)
        sock.sendall((f"PATCH {path} HTTP/1.1\r\nHost: {host}\r\n"
                      f"Authorization: Bearer {key}\r\nTus-Resumable: 1.0.0\r\n"
                      f"Upload-Offset: {offset}\r\n"
                      f"Content-Type: application/offset+octet-stream\r\n"
                      f"Content-Length: {len(rest)}\r\nConnection: close\r\n\r\n"
                      ).encode() + rest[:1000])
        return sock

    def answer(sock):  # the whole answer (the server closes after it)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines)
        return int(status.split()[1]), {k.lower(): v for k, v in fields.items()}, body

    # Until the first PATCH holds the lock. The probe names an offset one past the upload's:
    # while the lock is free it is 409 and appends nothing; while it is held, 423, since the
    # lock is taken before the offset is compared. The probe holds the lock itself for a
    # moment, so a first PATCH that arrives just then is refused 423 with nothing appended:
    # like a tus client, it is sent again. Polled for up to a minute: on a loaded CI machine
    # the first PATCH's handler can take seconds to be scheduled.
    deadline = time.monotonic() + 60
    first = open_first()
    while (second := probe()).status_code != 423:
        assert second.status_code == 409, second.text
        if select.select([first], [], [], 0)[0]:  # answered before its body was all sent
            status, _, body = answer(first)
            assert status == 423, body
            first.close()
            first = open_first()
        assert time.monotonic() < deadline, "the first PATCH never held the lock"
        threading.Event().wait(0.05)
    assert second.json()["error"]["code"] == "LOCKED"
    with first:
        first.sendall(rest[1000:])
        status, fields, body = answer(first)
    assert status == 204, body
    assert fields["upload-content-id"].startswith("cnt_")
    assert int(fields["upload-offset"]) == len(data)
    assert ledger_sum(acct) == (9, 9)
