"""Collaborations, analytics and API usage over the content library, through the real app:
what a read and a write collaborator may do, whose quota pays, isolation on every route,
counts flushed from Redis into PostgreSQL, and the per-day usage from the ledger."""

from __future__ import annotations

import io

from falcon.testing import TestClient
from PIL import Image
from urllib3 import encode_multipart_formdata

from conftest import bearer, ledger_sum, make_app


def png(width, height, seed) -> bytes:
    rnd = __import__("random").Random(seed)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3)).save(out, "PNG")
    return out.getvalue()


def upload(client, key, data, **fields):
    body, ctype = encode_multipart_formdata({**fields, "file": ("f.png", data, "image/png")})
    return client.simulate_post("/upload", body=body,
                                headers={**bearer(key), "Content-Type": ctype})


def share(client, key, cid, who, permissions="read"):
    return client.simulate_post("/collaboration/create", headers=bearer(key), json={
        "contentId": cid, "collaboratorId": who, "permissions": permissions})


def test_permissions_quota_and_isolation(lclient, make_account):
    owner, okey = make_account(credits=20)
    writer, wkey = make_account(credits=20)
    reader, rkey = make_account(credits=20)
    _, skey = make_account(credits=20)  # a stranger
    cid = upload(lclient, okey, png(40, 40, 1)).json["data"]["contentId"]
    w = share(lclient, okey, cid, writer, "write")
    assert w.status_code == 201, w.text
    assert w.json["data"]["permissions"] == "write" and w.json["data"]["role"] == "owner"
    r = share(lclient, okey, cid, reader).json["data"]
    assert share(lclient, okey, cid, reader).status_code == 409
    assert share(lclient, okey, cid, owner).status_code == 400
    assert share(lclient, okey, cid, "acct_nobody").status_code == 404
    assert share(lclient, wkey, cid, reader).status_code == 403  # never re-share
    assert share(lclient, skey, cid, reader).status_code == 404

    # The writer adds a version; its bytes count against the owner's quota.
    v2 = upload(lclient, wkey, png(50, 50, 2), content_id=cid)
    assert v2.status_code == 201 and v2.json["data"]["version"] == 2
    assert v2.json["data"]["userId"] == owner and ledger_sum(writer) == (19, 19)
    usage = lclient.simulate_get("/storage/usage", headers=bearer(okey)).json["data"]
    assert usage["bytesUsed"] > 0 and usage["itemCount"] == 1
    assert lclient.simulate_get("/storage/usage",
                                headers=bearer(wkey)).json["data"]["bytesUsed"] == 0
    meta = lclient.simulate_put(f"/content/{cid}/metadata", json={"tags": "w"},
                                headers=bearer(wkey))
    assert meta.status_code == 200
    # The reader sees it in its list and may read, never write or delete.
    listed = lclient.simulate_get("/content/list", headers=bearer(rkey)).json["data"]["items"]
    assert [i["contentId"] for i in listed] == [cid] and listed[0]["permissions"] == "read"
    assert lclient.simulate_get(f"/content/{cid}/download",
                                headers=bearer(rkey)).status_code == 200
    assert upload(lclient, rkey, png(30, 30, 3), content_id=cid).status_code == 403
    assert lclient.simulate_put(f"/content/{cid}/metadata", json={"tags": "r"},
                                headers=bearer(rkey)).status_code == 403
    assert ledger_sum(reader) == (20, 20)
    for key in (wkey, rkey):
        assert lclient.simulate_delete(f"/content/{cid}", headers=bearer(key)).status_code == 403
    # A stranger: every id of theirs is 404.
    for method, path in (("GET", f"/content/{cid}"), ("GET", f"/content/{cid}/versions"),
                         ("PUT", f"/collaboration/{r['collaborationId']}"),
                         ("DELETE", f"/collaboration/{r['collaborationId']}"),
                         ("GET", f"/analytics?contentId={cid}")):
        path, _, query = path.partition("?")
        resp = lclient.simulate_request(method, path, query_string=query,
                                        json={"permissions": "write"}, headers=bearer(skey))
        assert resp.status_code == 404, (method, path)
    assert lclient.simulate_get("/collaboration/list",
                                headers=bearer(skey)).json["data"]["items"] == []
    # Only the owner changes a share; the collaborator may leave it.
    rid = r["collaborationId"]
    assert lclient.simulate_put(f"/collaboration/{rid}", json={"permissions": "write"},
                                headers=bearer(rkey)).status_code == 403
    up = lclient.simulate_put(f"/collaboration/{rid}", json={"permissions": "write"},
                              headers=bearer(okey))
    assert up.status_code == 200 and up.json["data"]["permissions"] == "write"
    mine = lclient.simulate_get("/collaboration/list", headers=bearer(rkey)).json["data"]
    assert [c["role"] for c in mine["items"]] == ["collaborator"]
    assert [c["id"] for c in mine["items"]] == [c["collaborationId"] for c in mine["items"]]
    assert lclient.simulate_delete(f"/collaboration/{rid}", headers=bearer(rkey)).status_code \
        == 200
    assert lclient.simulate_get(f"/content/{cid}", headers=bearer(rkey)).status_code == 404
    # Deleting the content ends its collaborations too.
    assert lclient.simulate_delete(f"/content/{cid}", headers=bearer(okey)).status_code == 200
    assert lclient.simulate_get("/collaboration/list",
                                headers=bearer(wkey)).json["data"]["items"] == []


def test_analytics_count_views_and_downloads_per_day(lconfig, schema, make_account):
    from core.clock import ManualClock

    clock = ManualClock()
    client = TestClient(make_app(lconfig, clock=clock))
    _, key = make_account(credits=10)
    a = upload(client, key, png(20, 20, 4)).json["data"]["contentId"]
    b = upload(client, key, png(20, 20, 5)).json["data"]["contentId"]
    for _ in range(3):
        client.simulate_get(f"/content/{a}/download", headers=bearer(key))
    client.simulate_get(f"/content/{a}", headers=bearer(key))
    first = client.simulate_get("/analytics", headers=bearer(key)).json["data"]
    assert first["totals"] == {"views": 1, "downloads": 3}
    clock.advance(86400)
    client.simulate_get(f"/content/{a}/download", headers=bearer(key))
    client.simulate_get(f"/content/{b}", headers=bearer(key))
    report = client.simulate_get("/analytics", params={"contentId": a},
                                 headers=bearer(key)).json["data"]
    (item,) = report["items"]
    assert (item["views"], item["downloads"]) == (1, 4) and len(item["days"]) == 2
    assert [d["downloads"] for d in item["days"]] == [3, 1]
    everything = client.simulate_get("/analytics", headers=bearer(key)).json["data"]
    assert everything["totals"] == {"views": 2, "downloads": 4}  # flushed once, not twice


def test_api_usage_per_day(lclient, make_account):
    _, key = make_account(credits=10)
    for _ in range(2):
        lclient.simulate_post("/zapier/v1/echo", json={"message": "x"}, headers=bearer(key))
    upload(lclient, key, png(20, 20, 6))
    data = lclient.simulate_get("/api/usage", headers=bearer(key)).json["data"]
    daily = {(d["action"]): d for d in data["daily"]}
    assert daily["echo"]["calls"] == 2 and daily["echo"]["credits"] == 2
    assert daily["upload"]["calls"] == 1 and len(daily["upload"]["date"]) == 10


def test_two_flushes_at_once_count_once_and_orphans_are_adopted(config, schema, make_account):
    """A second flush runs while the first holds a day's counts (between its read and its
    database write): nothing is added twice; a claim its flusher never finished is taken
    over once it is old enough."""
    import redis as redis_lib

    from conftest import REDIS_BASE
    from core.clock import ManualClock
    from jobs.content import stats
    from jobs.content.models import ContentDaily
    from metering import db as dbmod

    clock = ManualClock()
    client = TestClient(make_app(config, clock=clock))
    _, key = make_account(credits=5)
    cid = upload(client, key, png(8, 8, 7)).json["data"]["contentId"]
    real = redis_lib.Redis.from_url(REDIS_BASE)
    other = stats.Analytics(real, config.redis_prefix, clock)

    class Interleaved:  # the first flusher's Redis: the other flushes right after a read
        def __getattr__(self, name):
            return getattr(real, name)

        def hgetall(self, name):
            out = real.hgetall(name)
            other.flush()
            return out

    first = stats.Analytics(Interleaved(), config.redis_prefix, clock)
    for _ in range(3):
        first.count(cid, "views")
    with dbmod.connection():
        first.flush()
        assert ContentDaily.get(ContentDaily.content == cid).views == 3
        first.count(cid, "views")
        orphan = other._claim(other._key(clock.now().date().isoformat()))
        other.flush()
        assert real.exists(orphan)  # fresh: its flusher may still be storing it
        clock.advance(stats.ADOPT_AFTER_S + 1)
        other.flush()
        assert not real.exists(orphan)
        assert ContentDaily.get(ContentDaily.content == cid).views == 4
