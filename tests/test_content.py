"""The content library through the real app: uploads (multipart and by URL) on the
filesystem and on a real SeaweedFS S3 server, checksums, downloads with Range, versions
and dedupe, every refusal leaving nothing behind, the quota under concurrent uploads."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from falcon.testing import TestClient
from PIL import Image
from urllib3 import encode_multipart_formdata

from conftest import bearer, ledger_sum, make_app
from jobs.content.models import Blob, ContentItem, ContentVersion
from metering import db as dbmod

MIB = 1024 * 1024


def png(width=64, height=48, seed=1) -> bytes:
    """A PNG of random pixels (incompressible: about width*height*3 bytes)."""
    rnd = __import__("random").Random(seed)
    img = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def multipart(data: bytes, filename="photo.png", **fields):
    parts = {k: str(v) for k, v in fields.items()}
    parts["file"] = (filename, data, "application/octet-stream")
    body, ctype = encode_multipart_formdata(parts)
    return body, ctype


class FileHost:
    """A loopback file host (the outside world's image URLs): serves what it is given."""

    def __init__(self):
        self.files = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def put(self, path, body) -> str:
        self.files[path] = body
        return self.base + path


@pytest.fixture(scope="module")
def host():
    h = FileHost()
    yield h
    h.server.shutdown()


@pytest.fixture(scope="module", params=["fs", "s3"])
def capp(request, lconfig, schema):
    if request.param == "fs":
        cfg = lconfig
    else:
        cfg = request.getfixturevalue("s3config").replace(outbound_allow_hosts="127.0.0.1")
    app = make_app(cfg)
    app.backend = request.param
    return app


@pytest.fixture
def cclient(capp):
    return TestClient(capp)


def upload(client, key, data, filename="photo.png", headers=None, **fields):
    body, ctype = multipart(data, filename, **fields)
    return client.simulate_post("/upload", body=body,
                                headers={**bearer(key), "Content-Type": ctype, **(headers or {})})


def rows(account_id):
    with dbmod.connection():
        return (ContentItem.select().where(ContentItem.account == account_id).count(),
                Blob.select().where(Blob.account == account_id).count())


def test_multipart_and_url_uploads_verify_checksums(capp, cclient, make_account, host):
    acct, key = make_account(credits=50)
    data = png(300, 300)  # ~270 KB: 1 started MiB
    resp = upload(cclient, key, data, "holiday.jpg", description="beach", tags="summer, sea")
    assert resp.status_code == 201, resp.text
    item, meta = resp.json["data"], resp.json["meta"]
    assert item["type"] == "image" and item["contentType"] == "image/png"
    assert item["fileName"] == "holiday.png"  # the type comes from the bytes, not the name
    assert item["tags"] == ["summer", "sea"] and item["description"] == "beach"
    assert meta["creditsUsed"] == 1 and meta["txnReceipt"].startswith("txn_")
    got = cclient.simulate_get(f"/content/{item['contentId']}/download", headers=bearer(key),
                               params={"verify": "true"})
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == item["checksum"]["sha256"]
    assert got.headers["etag"] == f'"{item["checksum"]["sha256"]}"'
    assert got.headers["content-disposition"].startswith('inline; filename="holiday.png"')
    assert got.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(got.content)).size == (300, 300)

    # By URL (automation platforms): 2.3 MiB is 3 started MiB, and the estimate agrees.
    big = png(900, 900, seed=2)
    url = host.put(f"/{capp.backend}/big.png", big)
    est = cclient.simulate_post("/zapier/v1/upload/estimate", json={"file_url": url},
                                headers=bearer(key))
    assert est.status_code == 200, est.text
    resp = cclient.simulate_post("/zapier/v1/upload", json={"file_url": url, "tags": "a,b"},
                                 headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json["meta"]["creditsUsed"] == est.json["data"]["credits"] == 3
    got = cclient.simulate_get(resp.json["data"]["url"].split("gateway.test")[1],
                               headers=bearer(key))
    assert hashlib.sha256(got.content).hexdigest() == resp.json["data"]["checksum"]["sha256"]
    assert ledger_sum(acct) == (46, 46)
    usage = cclient.simulate_get("/storage/usage", headers=bearer(key)).json["data"]
    assert usage["itemCount"] == 2 and usage["byType"] == {"image": 2, "video": 0}
    assert usage["bytesUsed"] == item["size"] + resp.json["data"]["size"]
    listed = cclient.simulate_get("/content/list", headers=bearer(key),
                                  params={"limit": 1}).json["data"]
    assert len(listed["items"]) == 1 and listed["next"] and listed["total"] == 2
    assert listed["items"][0]["id"] == listed["items"][0]["contentId"]  # CONTRACT 7


def test_range_etag_and_head(cclient, make_account):
    _, key = make_account(credits=5)
    data = png(100, 100, seed=3)
    item = upload(cclient, key, data).json["data"]
    path, size = f"/content/{item['contentId']}/download", item["size"]
    stored = cclient.simulate_get(path, headers=bearer(key)).content
    part = cclient.simulate_get(path, headers={**bearer(key), "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == stored[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{size}"
    tail = cclient.simulate_get(path, headers={**bearer(key), "Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == stored[-7:]
    rest = cclient.simulate_get(path, headers={**bearer(key), "Range": f"bytes={size - 3}-"})
    assert rest.content == stored[-3:]
    past = cclient.simulate_get(path, headers={**bearer(key), "Range": f"bytes={size}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{size}"
    assert past.json["error"]["code"] == "RANGE_NOT_SATISFIABLE"
    same = cclient.simulate_get(path, headers={**bearer(key),
                                               "If-None-Match": f'"{item["checksum"]["sha256"]}"'})
    assert same.status_code == 304 and same.content == b""
    head = cclient.simulate_head(path, headers=bearer(key))
    assert head.status_code == 200 and int(head.headers["content-length"]) == size


def test_exif_and_gps_are_stripped_and_orientation_applied(lclient, make_account):
    _, key = make_account(credits=5)
    img = Image.frombytes("RGB", (40, 20), bytes(range(256)) * 9 + bytes(96))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    exif[0x8825] = {1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPS
    exif[0x010F] = "PhoneMaker"
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif)
    assert Image.open(io.BytesIO(out.getvalue())).getexif().get(0x8825) is not None
    resp = upload(lclient, key, out.getvalue(), "p.jpg")
    assert resp.status_code == 201, resp.text
    item = resp.json["data"]
    assert (item["width"], item["height"]) == (20, 40)
    stored = lclient.simulate_get(f"/content/{item['contentId']}/download", headers=bearer(key))
    clean = Image.open(io.BytesIO(stored.content))
    assert clean.size == (20, 40) and clean.format == "JPEG"
    assert dict(clean.getexif()) == {} and b"PhoneMaker" not in stored.content


def _nothing_left(config, acct, balance):
    assert rows(acct) == (0, 0)
    assert ledger_sum(acct) == (balance, balance)
    staging = os.path.join(config.data_dir, "staging")
    assert not os.path.isdir(staging) or os.listdir(staging) == []


def test_refusals_leave_nothing_behind(lconfig, schema, make_account, host, tmp_path):
    cfg = lconfig.replace(data_dir=str(tmp_path), storage=__import__("dataclasses").replace(
        lconfig.storage, upload_max_bytes=200_000, upload_max_pixels=1_000_000,
        quota_bytes=150_000))
    client = TestClient(make_app(cfg))
    strict = TestClient(make_app(cfg.replace(outbound_allow_hosts="")))
    acct, key = make_account(credits=20)
    other, other_key = make_account(credits=5)
    theirs = upload(client, other_key, png(20, 20)).json["data"]["contentId"]
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")  # a few KB claiming 400 Mpx
    cases = [
        (upload(client, key, b"%PDF-1.4 not an image at all", "x.png"), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        (upload(client, key, b"\x7fELF\x02\x01\x01" + bytes(100), "x.jpg"), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        (upload(client, key, bomb.getvalue(), "bomb.png"), 400, "INVALID_REQUEST"),
        (upload(client, key, png(10, 10)[:60], "cut.png"), 400, "INVALID_REQUEST"),
        (upload(client, key, b"", "empty.png"), 400, "INVALID_REQUEST"),
        (upload(client, key, png(300, 300), "big.png"), 413, "PAYLOAD_TOO_LARGE"),
        (upload(client, key, png(240, 240), "quota.png"), 413, "PAYLOAD_TOO_LARGE"),
        (upload(client, key, png(20, 20), content_id=theirs), 404, "NOT_FOUND"),
        (upload(client, key, png(20, 20), userId=other), 404, "NOT_FOUND"),
        (client.simulate_post("/upload", json={"file": "x"}, headers=bearer(key)), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        (client.simulate_post("/upload", body=encode_multipart_formdata({"tags": "a"})[0],
                              headers={**bearer(key), "Content-Type": encode_multipart_formdata(
                                  {"tags": "a"}, boundary="b0")[1]}), 400, "INVALID_REQUEST"),
        (client.simulate_post("/zapier/v1/upload", json={"file_url": host.put(
            "/big.bin", png(300, 300, seed=9))}, headers=bearer(key)), 413, "PAYLOAD_TOO_LARGE"),
        (client.simulate_post("/zapier/v1/upload", json={"file_url": host.put(
            "/t.txt", b"hello world, plain text")}, headers=bearer(key)), 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        (strict.simulate_post("/zapier/v1/upload", json={"file_url": host.put(
            "/ok.png", png(10, 10))}, headers=bearer(key)), 400, "INVALID_REQUEST"),
        (client.simulate_post("/zapier/v1/upload", json={}, headers=bearer(key)), 400,
         "INVALID_REQUEST"),
    ]
    for resp, status, code in cases:
        assert (resp.status_code, (resp.json.get("error") or {}).get("code")) == (status, code), \
            resp.text
        assert resp.json["error"]["message"]
    _nothing_left(cfg, acct, 20)
    poor, poor_key = make_account(credits=0)
    resp = upload(client, poor_key, png(20, 20))
    assert resp.status_code == 403 and resp.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    _nothing_left(cfg, poor, 0)
    blobs = os.path.join(cfg.data_dir, "blobs")
    assert sorted(os.listdir(blobs)) == [other]  # only the other account's one blob


def test_versions_dedupe_and_delete(cclient, make_account):
    acct, key = make_account(credits=20)
    a, b = png(50, 50, seed=4), png(60, 60, seed=5)
    first = upload(cclient, key, a, "a.png").json["data"]
    second = upload(cclient, key, a, "copy.png").json["data"]  # same bytes: stored once
    assert first["checksum"] == second["checksum"]
    usage = cclient.simulate_get("/storage/usage", headers=bearer(key)).json["data"]
    assert usage["bytesUsed"] == first["size"] and usage["itemCount"] == 2
    v2 = upload(cclient, key, b, "b.png", content_id=first["contentId"])
    assert v2.status_code == 201 and v2.json["data"]["version"] == 2
    versions = cclient.simulate_get(f"/content/{first['contentId']}/versions",
                                    headers=bearer(key)).json["data"]["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["checksum"] == first["checksum"] and versions[0]["createdBy"] == acct
    assert all(v["txnReceipt"].startswith("txn_") for v in versions)
    old = cclient.simulate_get(f"/content/{first['contentId']}/download",
                               headers=bearer(key), params={"version": 1})
    assert hashlib.sha256(old.content).hexdigest() == first["checksum"]["sha256"]
    meta = cclient.simulate_put(f"/content/{first['contentId']}/metadata",
                                json={"description": "new", "tags": "x,y"}, headers=bearer(key))
    assert meta.status_code == 200 and meta.json["data"]["tags"] == ["x", "y"]
    # Deleting the copy keeps the shared bytes (version 1 of the first still uses them).
    gone = cclient.simulate_delete(f"/content/{second['contentId']}", headers=bearer(key))
    assert gone.status_code == 200 and gone.json["data"]["blobsRemoved"] == 0
    gone = cclient.simulate_delete(f"/content/{first['contentId']}", headers=bearer(key))
    assert gone.json["data"]["blobsRemoved"] == 2
    assert gone.json["data"]["usage"]["bytesUsed"] == 0
    assert rows(acct) == (0, 0)
    with dbmod.connection():
        assert ContentVersion.select().count() >= 0
    for path in (f"/content/{first['contentId']}", f"/content/{first['contentId']}/download"):
        assert cclient.simulate_get(path, headers=bearer(key)).status_code == 404


def test_other_accounts_content_is_not_found_everywhere(lclient, make_account):
    _, key = make_account(credits=5)
    _, other_key = make_account(credits=5)
    cid = upload(lclient, key, png(20, 20)).json["data"]["contentId"]
    calls = [lclient.simulate_get(f"/content/{cid}", headers=bearer(other_key)),
             lclient.simulate_get(f"/content/{cid}/download", headers=bearer(other_key)),
             lclient.simulate_get(f"/content/{cid}/versions", headers=bearer(other_key)),
             lclient.simulate_put(f"/content/{cid}/metadata", json={"tags": "x"},
                                  headers=bearer(other_key)),
             lclient.simulate_delete(f"/content/{cid}", headers=bearer(other_key))]
    assert [c.status_code for c in calls] == [404] * 5
    listed = lclient.simulate_get("/content/list", headers=bearer(other_key)).json["data"]
    assert listed["items"] == []


def test_idempotent_upload_replays_and_refuses_another_file(lclient, make_account):
    acct, key = make_account(credits=10)
    headers = {"Idempotency-Key": "up-1"}
    first = upload(lclient, key, png(30, 30, seed=6), headers=headers)
    again = upload(lclient, key, png(30, 30, seed=6), headers=headers)
    assert first.status_code == 201 and again.status_code == 201
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json["data"]["contentId"] == first.json["data"]["contentId"]
    other = upload(lclient, key, png(30, 30, seed=7), headers=headers)
    assert other.status_code == 422 and other.json["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert rows(acct) == (1, 1) and ledger_sum(acct) == (9, 9)


def test_concurrent_uploads_over_the_quota_one_is_refused(lconfig, schema, make_account):
    """Two uploads that fit alone but not together, at once on real threads: the owner's
    row lock makes one wait for the other's commit, so exactly one is refused (and not
    charged)."""
    data1, data2 = png(150, 150, seed=10), png(150, 150, seed=11)
    cfg = lconfig.replace(storage=__import__("dataclasses").replace(
        lconfig.storage, quota_bytes=len(data1) + len(data2) - 1000))
    app = make_app(cfg)
    acct, key = make_account(credits=10)
    results, start = [], threading.Barrier(2)

    def go(data):
        start.wait()
        results.append(upload(TestClient(app), key, data))

    threads = [threading.Thread(target=go, args=(d,)) for d in (data1, data2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [201, 413]
    refused = next(r for r in results if r.status_code == 413)
    assert "quota" in refused.json["error"]["message"]
    assert rows(acct) == (1, 1) and ledger_sum(acct) == (9, 9)


def test_share_links_open_without_a_key_until_they_expire(lconfig, schema, make_account):
    from core.clock import ManualClock

    clock = ManualClock()
    client = TestClient(make_app(lconfig, clock=clock))
    _, key = make_account(credits=5)
    data = png(40, 40, seed=12)
    item = upload(client, key, data).json["data"]
    shared = client.simulate_post(f"/content/{item['contentId']}/share",
                                  json={"expiresIn": 3600}, headers=bearer(key))
    assert shared.status_code == 201, shared.text
    path = shared.json["data"]["url"].split("gateway.test")[1]
    opened = client.simulate_get(path)  # no credential at all
    assert opened.status_code == 200
    assert hashlib.sha256(opened.content).hexdigest() == item["checksum"]["sha256"]
    tampered = path.replace("sig=", "sig=0")
    assert client.simulate_get(tampered).status_code == 404
    other = path.replace(item["contentId"], "cnt_" + "0" * 24)
    assert client.simulate_get(other).status_code == 404
    clock.advance(3601)
    expired = client.simulate_get(path)
    assert expired.status_code == 404 and "expired" in expired.json["error"]["message"]


def test_video_upload_is_probed_and_scrubbable(cclient, make_account):
    from actions.generate_video import mp4

    _, key = make_account(credits=5)
    frames = [Image.new("RGB", (64, 48), (i * 20, 90, 160)) for i in range(12)]
    clip = mp4(frames, 12)
    resp = upload(cclient, key, clip, "clip.bin", tags="video")
    assert resp.status_code == 201, resp.text
    item = resp.json["data"]
    assert (item["type"], item["contentType"], item["fileName"]) == ("video", "video/mp4",
                                                                     "clip.mp4")
    assert (item["width"], item["height"]) == (64, 48) and item["duration"] > 0.5
    path = f"/content/{item['contentId']}/download"
    part = cclient.simulate_get(path, headers={**bearer(key), "Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == clip[100:]
    assert part.headers["content-type"] == "video/mp4"


def test_staging_leftovers_are_swept(lconfig, tmp_path):
    from jobs.content.maintenance import STAGING_MAX_AGE_S, sweep_staging

    cfg = lconfig.replace(data_dir=tmp_path)
    staging = tmp_path / "staging"
    staging.mkdir()
    old, fresh = staging / "up-old", staging / "up-new"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    past = old.stat().st_mtime - STAGING_MAX_AGE_S - 10
    os.utime(old, (past, past))
    assert sweep_staging(cfg) == 1
    assert sorted(p.name for p in staging.iterdir()) == ["up-new"]


def test_limits_per_plan(lclient, make_account, admin_headers):
    plan = "small" + os.urandom(3).hex()
    assert lclient.simulate_put(f"/admin/plans/{plan}", json={"perMinute": 100, "perDay": 1000},
                                headers=admin_headers).status_code == 200
    resp = lclient.simulate_put(f"/admin/plans/{plan}/storage", headers=admin_headers,
                                json={"uploadMaxBytes": 50_000, "quotaBytes": 70_000})
    assert resp.status_code == 200 and resp.json["data"]["quotaBytes"] == 70_000
    missing = lclient.simulate_put("/admin/plans/nope/storage", headers=admin_headers,
                                   json={"quotaBytes": 1})
    assert missing.status_code == 404
    acct, key = make_account(credits=10, plan=plan)
    usage = lclient.simulate_get("/storage/usage", headers=bearer(key)).json["data"]
    assert (usage["uploadMaxBytes"], usage["quotaBytes"]) == (50_000, 70_000)
    big = upload(lclient, key, png(140, 140, seed=20))  # ~59 KB
    assert big.status_code == 413 and "upload limit" in big.json["error"]["message"]
    assert upload(lclient, key, png(100, 100, seed=21)).status_code == 201  # ~30 KB
    full = upload(lclient, key, png(125, 125, seed=22))  # ~47 KB: over the 70 KB quota
    assert full.status_code == 413 and "quota" in full.json["error"]["message"]
    assert rows(acct) == (1, 1) and ledger_sum(acct) == (9, 9)
