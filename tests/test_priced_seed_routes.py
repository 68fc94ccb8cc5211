"""Seed 004 prices ``list-posts`` and ``health`` (0 credits): they are in the catalogue,
the operator can price them, and a price above 0 is debited with a receipt, on the action
route and on ``GET /list-posts`` alike; ``GET /health`` stays the free, unauthenticated
probe. Bad input and a short balance change nothing."""

from __future__ import annotations

from test_webhooks_posts import run_listing

from async_support import burst
from conftest import ADMIN, bearer, ledger_sum


def _catalogue(client, key):
    resp = client.simulate_get("/zapier/v1/actions", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    return {a["name"]: a for a in resp.json["data"]["items"]}


def _price(client, name, credits):
    resp = client.simulate_put(f"/admin/prices/{name}", headers=ADMIN, json={"credits": credits})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"] == {"action": name, "credits": credits}


def test_listed_at_zero_and_free_by_default(client, make_account):
    account_id, key = make_account(credits=5)
    listed = _catalogue(client, key)
    assert listed["health"]["credits"] == 0 and listed["list-posts"]["credits"] == 0
    assert listed["health"]["async"] is False
    assert [f["key"] for f in listed["health"]["inputFields"]] == ["client_reference_id"]
    fields = {f["key"]: f for f in listed["list-posts"]["inputFields"]}
    assert set(fields) >= {"startDate", "endDate", "contentType", "postFormat", "searchText",
                           "customTags", "contentLabel", "pageNo", "itemsPerPage", "limit",
                           "cursor"}
    assert fields["itemsPerPage"]["maximum"] == 100 and not fields["pageNo"]["required"]
    # every action lists the fields every action accepts; asynchronous ones callback_url
    for name, action in listed.items():
        keys = [f["key"] for f in action["inputFields"]]
        assert "client_reference_id" in keys, name
        assert ("callback_url" in keys) == action["async"], name

    health = client.simulate_post("/zapier/v1/health", headers=bearer(key), json={})
    assert health.status_code == 200, health.text
    assert health.json["data"] == {"status": "ok"}
    assert health.json["meta"]["action"] == "health"
    assert "txnReceipt" not in health.json["meta"] and "creditsUsed" not in health.json["meta"]
    assert "X-RateLimit-Remaining" in health.headers

    listed_posts = client.simulate_post("/zapier/v1/list-posts", headers=bearer(key), json={})
    assert listed_posts.status_code == 200, listed_posts.text
    assert listed_posts.json["data"]["itemList"] == [] and listed_posts.json["data"]["next"] is None
    got = client.simulate_get("/list-posts", headers=bearer(key))
    assert got.status_code == 200 and got.json["meta"]["action"] == "list-posts"
    assert "txnReceipt" not in got.json["meta"]
    assert ledger_sum(account_id) == (5, 5)


def test_operator_price_is_debited_with_a_receipt(client, make_account):
    account_id, key = make_account(credits=5)
    _price(client, "list-posts", 2)
    _price(client, "health", 1)
    listed = _catalogue(client, key)
    assert listed["list-posts"]["credits"] == 2 and listed["health"]["credits"] == 1

    got = client.simulate_get("/list-posts", headers=bearer(key))
    assert got.status_code == 200, got.text
    meta = got.json["meta"]
    assert meta["creditsUsed"] == 2 and meta["availableCredit"] == 3
    assert meta["txnReceipt"].startswith("txn_")
    receipt = client.simulate_get(f"/zapier/v1/receipts/{meta['txnReceipt']}",
                                  headers=bearer(key))
    assert receipt.status_code == 200, receipt.text
    assert receipt.json["data"]["action"] == "list-posts"
    assert receipt.json["data"]["amount"] == -2

    posted = client.simulate_post("/zapier/v1/list-posts", headers=bearer(key), json={})
    assert posted.status_code == 200 and posted.json["meta"]["availableCredit"] == 1
    health = client.simulate_post("/zapier/v1/health", headers=bearer(key), json={})
    assert health.status_code == 200 and health.json["meta"]["availableCredit"] == 0
    assert ledger_sum(account_id) == (0, 0)

    # Broke: refused, nothing charged, nothing written
    for resp in (client.simulate_get("/list-posts", headers=bearer(key)),
                 client.simulate_post("/zapier/v1/list-posts", headers=bearer(key), json={}),
                 client.simulate_post("/zapier/v1/health", headers=bearer(key), json={})):
        assert resp.status_code == 403, resp.text
        assert resp.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert ledger_sum(account_id) == (0, 0)
    # The load balancers' probe is never charged and needs no credential
    probe = client.simulate_get("/health")
    assert probe.status_code == 200 and probe.text == "OK"


def test_idempotent_priced_list_posts_charges_once(client, make_account):
    account_id, key = make_account(credits=10)
    _price(client, "list-posts", 3)
    headers = {**bearer(key), "Idempotency-Key": "poll-1"}
    first = client.simulate_post("/zapier/v1/list-posts", headers=headers, json={"limit": 5})
    again = client.simulate_post("/zapier/v1/list-posts", headers=headers, json={"limit": 5})
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json["meta"]["txnReceipt"] == first.json["meta"]["txnReceipt"]
    other = client.simulate_post("/zapier/v1/list-posts", headers=headers, json={"limit": 6})
    assert other.status_code == 422 and other.json["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert ledger_sum(account_id) == (7, 7)


def test_bad_input_changes_nothing(client, make_account):
    account_id, key = make_account(credits=10)
    _price(client, "list-posts", 1)
    for body, field in (({"pageNo": 0}, "pageNo"), ({"itemsPerPage": 101}, "itemsPerPage"),
                        ({"limit": "5"}, "limit"), ({"startDate": "yesterday"}, "startDate"),
                        ({"endDate": "2024-01-01 10:00"}, "endDate"),
                        ({"customTags": "tech"}, "customTags"), ({"nope": 1}, "nope"),
                        ({"cursor": "not-a-cursor"}, "cursor")):
        resp = client.simulate_post("/zapier/v1/list-posts", headers=bearer(key), json=body)
        assert resp.status_code == 400, (body, resp.text)
        error = resp.json["error"]
        assert error["code"] == "INVALID_REQUEST" and error["statusCode"] == 400
        assert any(field in (d.get("field") or "") for d in error.get("details", [])) or \
            field in error["message"], (body, error)
    for query in ("pageNo=0", "itemsPerPage=500", "startDate=", "cursor=zzz"):
        resp = client.simulate_get("/list-posts", query_string=query, headers=bearer(key))
        assert resp.status_code == 400, (query, resp.text)
    bad_health = client.simulate_post("/zapier/v1/health", headers=bearer(key), json={"x": 1})
    assert bad_health.status_code == 400
    assert ledger_sum(account_id) == (10, 10)


def test_post_action_pages_like_the_get_route(lclient, lconfig, make_account, images):
    _, key = make_account(credits=200)
    _, other = make_account(credits=100)
    run_listing(lclient, key, images, wait=0, custom_tags=["tech", "sale"],
                content_label="featured")
    run_listing(lclient, key, images, wait=0, custom_tags=["home"])
    run_listing(lclient, other, images, wait=0, custom_tags=["tech"])
    burst(lconfig)

    def post(k, **body):
        resp = lclient.simulate_post("/zapier/v1/list-posts", json=body, headers=bearer(k))
        assert resp.status_code == 200, resp.text
        return resp.json["data"]

    def get(k, **params):
        resp = lclient.simulate_get("/list-posts", params=params, headers=bearer(k))
        assert resp.status_code == 200, resp.text
        return resp.json["data"]

    everything = post(key)
    assert len(everything["itemList"]) == 4
    assert everything["itemList"] == get(key)["itemList"]
    assert [i["urn"] for i in post(key, customTags=["tech"])["itemList"]] == \
        [i["urn"] for i in get(key, customTags="tech")["itemList"]]
    assert len(post(key, contentLabel="featured", customTags=["tech", "sale"])["itemList"]) == 2
    assert post(key, startDate="2999-01-01T00:00:00Z")["itemList"] == []
    page2 = post(key, pageNo=2, itemsPerPage=3)
    assert len(page2["itemList"]) == 1 and page2["currentPage"] == 2 and page2["totalPages"] == 2

    # next is the GET route's full URL with the same filters: following it continues
    first = post(key, limit=3, contentType="product-listing")
    assert first["next"].startswith("http://gateway.test/list-posts?")
    assert "contentType=product-listing" in first["next"] and "limit=3" in first["next"]
    query = first["next"].split("?", 1)[1]
    rest = lclient.simulate_get("/list-posts", query_string=query, headers=bearer(key))
    assert rest.status_code == 200, rest.text
    assert rest.json["data"]["next"] is None
    seen = {i["urn"] for i in first["itemList"]} | {i["urn"] for i in rest.json["data"]["itemList"]}
    assert seen == {i["urn"] for i in everything["itemList"]}
    cursor = query.split("cursor=")[1]
    assert post(key, limit=3, cursor=cursor)["itemList"] == rest.json["data"]["itemList"]
    # another tenant's posts never show, and its cursor position means nothing here
    assert len(post(other)["itemList"]) == 2
