"""The file routes of seeds 000 and 003 over the content library, through the real app:
admin uploads (custom id, customMetadata, never charged), FileMetadata, getFile by account
key, admin key and signed link, the checksum check, resized renditions and their cache,
removal, and seed 000's base64 get and paged list."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import uuid

import pytest
from falcon.testing import TestClient
from PIL import Image
from urllib3 import encode_multipart_formdata

from conftest import ADMIN, bearer, ledger_sum, make_app

SEED_FIELDS = {"id", "publicUrl", "fileName", "contentType", "fileSize", "createdDate",
               "checksum", "checksumAlgorithm", "ownerId"}


def png(width=64, height=48, seed=1) -> bytes:
    """A PNG of random pixels (unique per seed, so blobs and renditions never collide)."""
    rnd = __import__("random").Random(seed)
    img = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def upload_file(client, data, filename="photo.png", headers=ADMIN, **fields):
    parts = {k: str(v) for k, v in fields.items()}
    parts["file"] = (filename, data, "application/octet-stream")
    body, ctype = encode_multipart_formdata(parts)
    return client.simulate_post("/uploadFile", body=body,
                                headers={**headers, "Content-Type": ctype})


@pytest.fixture(scope="module")
def fapp(lconfig, schema):
    return make_app(lconfig)


@pytest.fixture
def fclient(fapp):
    return TestClient(fapp)


def new_id() -> str:
    return "file-" + uuid.uuid4().hex[:12]


def test_admin_upload_metadata_and_no_charge(fclient, make_account):
    acct, key = make_account(credits=7)
    data, fid = png(200, 120, seed=101), new_id()
    resp = upload_file(fclient, data, "poster.jpg", id=fid, userId=acct,
                       customMetadata=json.dumps({"campaign": "spring", "n": 2}))
    assert resp.status_code == 201, resp.text
    meta = resp.json["data"]
    assert set(meta) >= SEED_FIELDS
    assert meta["id"] == fid and meta["ownerId"] == acct
    assert meta["fileName"] == "poster.png" and meta["contentType"] == "image/png"
    assert meta["checksumAlgorithm"] == "sha256" and meta["fileSize"] > 0
    assert meta["publicUrl"] == f"http://gateway.test/getFile?id={fid}"
    assert meta["customMetadata"] == {"campaign": "spring", "n": 2}
    assert meta["createdDate"].endswith("Z")
    assert ledger_sum(acct) == (7, 7)  # an operator's upload is never charged

    got = fclient.simulate_get("/getFileMetadata", params={"id": fid}, headers=ADMIN)
    assert got.status_code == 200 and got.json["data"] == meta
    assert fclient.simulate_get("/getFileMetadata", params={"id": fid}).status_code == 401
    # The owner sees it in the library as an ordinary item; another account does not.
    _, other = make_account()
    assert fclient.simulate_get(f"/content/{fid}", headers=bearer(other)).status_code == 404
    owned = fclient.simulate_get(f"/content/{fid}", headers=bearer(key))
    assert owned.status_code == 200 and owned.json["data"]["customMetadata"]["n"] == 2

    again = upload_file(fclient, png(10, 10, seed=102), id=fid, userId=acct)
    assert again.status_code == 409, again.text


@pytest.mark.parametrize("fields,status,field", [
    ({}, 400, "userId"),
    ({"userId": "acct_nobody"}, 404, "userId"),
    ({"userId": "ME", "id": "bad id!"}, 400, "id"),
    ({"userId": "ME", "id": "x" * 41}, 400, "id"),
    ({"userId": "ME", "customMetadata": "[1, 2]"}, 400, "customMetadata"),
    ({"userId": "ME", "customMetadata": "{not json"}, 400, "customMetadata"),
])
def test_admin_upload_refusals(fclient, make_account, fields, status, field):
    acct, _ = make_account()
    fields = {k: (acct if v == "ME" else v) for k, v in fields.items()}
    resp = upload_file(fclient, png(8, 8, seed=103), **fields)
    assert resp.status_code == status, resp.text
    assert resp.json["error"]["details"][0]["field"] == field
    assert fclient.simulate_get("/api/file/list",
                                headers=ADMIN).status_code == 401  # not an account route


def test_get_file_by_key_admin_and_signed_link(fapp, fclient, make_account):
    acct, key = make_account()
    _, other = make_account()
    data, fid = png(90, 60, seed=104), new_id()
    assert upload_file(fclient, data, id=fid, userId=acct).status_code == 201
    # The stored bytes are the cleaned re-encoding; their checksum is the file's.
    sha = fclient.simulate_get("/getFileMetadata", params={"id": fid},
                               headers=ADMIN).json["data"]["checksum"]

    by_key = fclient.simulate_get("/getFile", params={"id": fid}, headers=bearer(key))
    assert by_key.status_code == 200, by_key.text
    assert hashlib.sha256(by_key.content).hexdigest() == sha
    assert by_key.headers["content-type"] == "image/png"
    assert by_key.headers["content-disposition"].startswith("inline")
    assert by_key.headers["etag"] == f'"{sha}"'
    assert "x-ratelimit-limit" in by_key.headers  # rate limited like any account route

    by_admin = fclient.simulate_get("/getFile", params={"id": fid}, headers=ADMIN)
    assert by_admin.status_code == 200 and by_admin.content == by_key.content
    wrong = fclient.simulate_get("/getFile", params={"id": fid},
                                 headers={"X-Administration-Key": "nope"})
    assert wrong.status_code == 401

    shared = fclient.simulate_post(f"/content/{fid}/share", json={"expiresIn": 600},
                                   headers=bearer(key))
    assert shared.status_code == 201, shared.text
    query = shared.json["data"]["url"].split("?", 1)[1]
    by_link = fclient.simulate_get("/getFile", query_string=f"id={fid}&{query}")
    assert by_link.status_code == 200 and by_link.content == by_key.content
    assert by_link.headers["cache-control"].startswith("public")
    assert fclient.simulate_get("/getFile", query_string=f"id={fid}&v={sha}&exp=9999999999"
                                "&sig=%F0%AC%BB%89").status_code == 404  # not ASCII
    tampered = query.replace("sig=", "sig=0")
    assert fclient.simulate_get("/getFile",
                                query_string=f"id={fid}&{tampered}").status_code == 404
    # A link signs one item's bytes: it opens no other file.
    other_fid = new_id()
    assert upload_file(fclient, png(20, 20, seed=105), id=other_fid,
                       userId=acct).status_code == 201
    assert fclient.simulate_get("/getFile",
                                query_string=f"id={other_fid}&{query}").status_code == 404

    nothing = fclient.simulate_get("/getFile", params={"id": fid})
    assert nothing.status_code == 401
    assert nothing.json["error"]["code"] == "MISSING_AUTH_HEADER"
    assert fclient.simulate_get("/getFile", params={"id": fid},
                                headers=bearer(other)).status_code == 404
    assert fclient.simulate_get("/getFile", params={"id": "nope"},
                                headers=bearer(key)).status_code == 404
    assert fclient.simulate_get("/getFile", headers=bearer(key)).status_code == 400


def test_checksum_is_verified_unless_skipped(lconfig, fclient, make_account):
    acct, key = make_account()
    fid = new_id()
    assert upload_file(fclient, png(50, 50, seed=106), id=fid, userId=acct).status_code == 201
    sha = fclient.simulate_get("/getFileMetadata", params={"id": fid},
                               headers=ADMIN).json["data"]["checksum"]
    blob = os.path.join(lconfig.data_dir, "blobs", acct, sha)
    with open(blob, "r+b") as f:  # flip one byte: bit rot on the disk
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = fclient.simulate_get("/getFile", params={"id": fid}, headers=bearer(key))
    assert bad.status_code == 500 and bad.json["error"]["code"] == "INTERNAL_ERROR"
    skipped = fclient.simulate_get("/getFile", params={"id": fid, "skipChecksum": "true"},
                                   headers=bearer(key))
    assert skipped.status_code == 200
    assert hashlib.sha256(skipped.content).hexdigest() != sha
    b64 = fclient.simulate_get("/api/file/get", params={"file": fid}, headers=bearer(key))
    assert b64.status_code == 500


def test_resize_fit_and_fill_are_cached(lconfig, fclient, make_account):
    acct, key = make_account()
    fid = new_id()
    assert upload_file(fclient, png(400, 200, seed=107), id=fid, userId=acct).status_code == 201
    sha = fclient.simulate_get("/getFileMetadata", params={"id": fid},
                               headers=ADMIN).json["data"]["checksum"]

    fit = fclient.simulate_get("/getFile", params={"id": fid, "width": 100, "height": 100},
                               headers=bearer(key))
    assert fit.status_code == 200, fit.text
    assert Image.open(io.BytesIO(fit.content)).size == (100, 50)  # inside the box
    assert fit.headers["etag"] == f'"{sha}-100x100-fit"'
    assert fit.headers["content-type"] == "image/png"
    fill = fclient.simulate_get("/getFile", headers=bearer(key), params={
        "id": fid, "width": 100, "height": 100, "mode": "fill"})
    assert Image.open(io.BytesIO(fill.content)).size == (100, 100)  # covering, cropped
    only_w = fclient.simulate_get("/getFile", params={"id": fid, "width": 80},
                                  headers=bearer(key))
    assert Image.open(io.BytesIO(only_w.content)).size == (80, 40)

    cached = os.path.join(lconfig.data_dir, "cache", "resized", f"{sha}-100x100-fit.png")
    before = os.stat(cached)
    again = fclient.simulate_get("/getFile", params={"id": fid, "width": 100, "height": 100},
                                 headers=ADMIN)
    assert again.status_code == 200 and again.content == fit.content
    after = os.stat(cached)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    not_modified = fclient.simulate_get("/getFile", headers={
        **bearer(key), "If-None-Match": fit.headers["etag"]},
        params={"id": fid, "width": 100, "height": 100})
    assert not_modified.status_code == 304

    for params in ({"width": 100, "mode": "fill"}, {"width": 0}, {"width": "²"},
                   {"width": 10, "mode": "stretch"}, {"height": 99999}):
        bad = fclient.simulate_get("/getFile", params={"id": fid, **params},
                                   headers=bearer(key))
        assert bad.status_code == 400, (params, bad.text)


def test_remove_file_then_not_found(lconfig, fclient, make_account):
    acct, key = make_account()
    fid = new_id()
    assert upload_file(fclient, png(30, 30, seed=108), id=fid, userId=acct).status_code == 201
    sha = fclient.simulate_get("/getFileMetadata", params={"id": fid},
                               headers=ADMIN).json["data"]["checksum"]
    assert fclient.simulate_delete("/removeFile", params={"id": fid}).status_code == 401
    gone = fclient.simulate_delete("/removeFile", params={"id": fid}, headers=ADMIN)
    assert gone.status_code == 200 and gone.json["data"] == {"success": True}
    assert not os.path.exists(os.path.join(lconfig.data_dir, "blobs", acct, sha))
    assert fclient.simulate_get("/getFile", params={"id": fid},
                                headers=bearer(key)).status_code == 404
    assert fclient.simulate_get("/getFileMetadata", params={"id": fid},
                                headers=ADMIN).status_code == 404
    assert fclient.simulate_delete("/removeFile", params={"id": fid},
                                   headers=ADMIN).status_code == 404


def test_seed_000_get_base64_and_list_pages(fclient, make_account):
    acct, key = make_account()
    _, other = make_account(credits=5)
    ids = []
    for n in range(3):
        fid = new_id()
        assert upload_file(fclient, png(16, 16, seed=110 + n), f"f{n}.png", id=fid,
                           userId=acct, customMetadata=json.dumps({"n": n})).status_code == 201
        ids.append(fid)
    got = fclient.simulate_get("/api/file/get", params={"file": ids[0]}, headers=bearer(key))
    assert got.status_code == 200, got.text
    body = got.json["data"]
    raw = base64.b64decode(body["raw"])
    assert body["file_id"] == ids[0]
    assert hashlib.sha256(raw).hexdigest() == body["data"]["checksum"]["sha256"]
    assert body["tag"] == {"type": "image", "tags": [], "contentType": "image/png",
                           "fileName": "f0.png"}
    assert body["data"]["contentId"] == ids[0] and body["data"]["customMetadata"] == {"n": 0}
    posted = fclient.simulate_post("/api/file/get", json={"file": ids[0]}, headers=bearer(key))
    assert posted.status_code == 200 and posted.json["data"]["raw"] == body["raw"]
    assert fclient.simulate_get("/api/file/get", params={"file": ids[0]},
                                headers=bearer(other)).status_code == 404
    assert fclient.simulate_get("/api/file/get", headers=bearer(key)).status_code == 400

    # A seed 002 upload (the same multipart reader, charged) is a file too.
    body, ctype = encode_multipart_formdata({"file": ("up.png", png(12, 12, seed=119),
                                                      "application/octet-stream")})
    up = fclient.simulate_post("/upload", body=body,
                               headers={**bearer(other), "Content-Type": ctype})
    assert up.status_code == 201, up.text
    listed = fclient.simulate_get("/api/file/list", headers=bearer(other)).json["data"]
    assert [f["file_id"] for f in listed["files"]] == [up.json["data"]["contentId"]]

    first = fclient.simulate_get("/api/file/list", params={"limit": 2}, headers=bearer(key))
    assert first.status_code == 200, first.text
    page = first.json["data"]
    assert (page["total"], page["pages"], page["page"], page["limit"]) == (3, 2, 1, 2)
    assert [f["file_id"] for f in page["files"]] == [ids[2], ids[1]]  # newest first
    assert [f["id"] for f in page["files"]] == [ids[2], ids[1]]  # CONTRACT 7: a stable id
    assert page["next"].startswith("http://gateway.test/api/file/list?")
    second = fclient.simulate_get("/api/file/list", headers=bearer(key),
                                  query_string=page["next"].split("?", 1)[1]).json["data"]
    assert [f["file_id"] for f in second["files"]] == [ids[0]] and second["next"] is None
    _, third_key = make_account()
    empty = fclient.simulate_get("/api/file/list", headers=bearer(third_key)).json["data"]
    assert empty["files"] == [] and empty["total"] == 0


def test_base64_refuses_large_files(lconfig, schema, make_account, monkeypatch):
    from gateway.resources import files

    monkeypatch.setattr(files, "MAX_BASE64_BYTES", 1000)  # not a 10 MiB fixture file
    client = TestClient(make_app(lconfig))
    acct, key = make_account()
    fid = new_id()
    assert upload_file(client, png(40, 40, seed=120), id=fid, userId=acct).status_code == 201
    resp = client.simulate_get("/api/file/get", params={"file": fid}, headers=bearer(key))
    assert resp.status_code == 413
    assert f"/content/{fid}/download" in resp.json["error"]["message"]
