"""REST hooks, callbacks and list-posts: signed deliveries verified independently
(the ``standardwebhooks`` package), retries, 410 unsubscribe, filters, paging, isolation."""

from __future__ import annotations

import time

from standardwebhooks import Webhook

from async_support import Receiver, burst, start_worker, stop_worker
from conftest import bearer


def run_listing(client, key, images, wait=30, **extra):
    body = {"product_name": "Desk Lamp", "product_image_url": images.url + "/product.png",
            **extra}
    resp = client.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                params={"wait": str(wait)}, headers=bearer(key))
    assert resp.status_code in (200, 202), resp.text
    return resp.json["data"]["composition"]


def verify(secret, request):
    headers = {k.lower(): v for k, v in request["headers"].items()}
    return Webhook(secret).verify(request["body"], headers)


def test_hook_delivery_signed_and_post_created(lclient, make_account, images, worker):
    _, key = make_account(credits=100)
    done = Receiver()
    posts = Receiver()
    try:
        first = lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json={
            "target_url": done.url + "/done", "event": "composition.completed"})
        assert first.status_code == 201
        secret = first.json["data"]["secret"]
        assert secret.startswith("whsec_")
        second = lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json={
            "target_url": posts.url + "/posts", "event": "post.created"})
        assert "secret" not in second.json["data"]  # shown once
        listed = lclient.simulate_get("/zapier/v1/hooks", headers=bearer(key)).json["data"]
        assert len(listed["items"]) == 2

        comp = run_listing(lclient, key, images)
        assert comp["status"] == "completed"
        [delivery] = done.wait_for(1)
        payload = verify(secret, delivery)
        assert payload["type"] == "composition.completed"
        assert payload["data"]["composition"]["uid"] == comp["uid"]
        got = posts.wait_for(len(comp["outputs"]))
        assert {verify(secret, r)["data"]["post"]["deliverable"]["url"] for r in got} == \
            {o["url"] for o in comp["outputs"]}
    finally:
        done.close()
        posts.close()


def test_retries_keep_webhook_id_and_410_unsubscribes(lclient, make_account, images, worker):
    _, key = make_account(credits=100)
    flaky = Receiver(statuses=[500, 503, 200])
    gone = Receiver(statuses=[410])
    try:
        secret = lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json={
            "target_url": flaky.url, "event": "composition.completed"}).json["data"]["secret"]
        hook_gone = lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json={
            "target_url": gone.url, "event": "composition.completed"}).json["data"]["id"]
        run_listing(lclient, key, images)
        attempts = flaky.wait_for(3)
        assert [r["status"] for r in attempts] == [500, 503, 200]
        ids = {r["headers"]["webhook-id"] for r in attempts}
        assert len(ids) == 1
        for r in attempts:
            verify(secret, r)
        gone.wait_for(1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            hooks = lclient.simulate_get("/zapier/v1/hooks", headers=bearer(key)).json["data"]
            if hook_gone not in {h["id"] for h in hooks["items"]}:
                break
            time.sleep(0.1)
        assert hook_gone not in {h["id"] for h in hooks["items"]}
    finally:
        flaky.close()
        gone.close()


def test_callback_url_gets_the_final_composition(lclient, make_account, images, worker):
    _, key = make_account(credits=100)
    target = Receiver()
    try:
        secret = lclient.simulate_post("/zapier/v1/hooks/secret/rotate",
                                       headers=bearer(key)).json["data"]["secret"]
        comp = run_listing(lclient, key, images, callback_url=target.url + "/resume/abc")
        [request] = target.wait_for(1)
        assert request["path"] == "/resume/abc"
        payload = verify(secret, request)
        assert payload["data"]["composition"]["uid"] == comp["uid"]
        assert payload["data"]["composition"]["status"] == "completed"
    finally:
        target.close()


def test_hook_validation_and_isolation(lclient, make_account):
    _, key = make_account()
    _, other = make_account()
    bad = [({"target_url": "http://10.1.2.3/x", "event": "composition.completed"}, "target_url"),
           ({"target_url": "ftp://example.com", "event": "composition.completed"}, "target_url"),
           ({"target_url": "http://127.0.0.1:9/x", "event": "nope"}, "event")]
    for body, field in bad:
        resp = lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json=body)
        assert resp.status_code == 400
        assert field in {d["field"] for d in resp.json["error"]["details"]}
    hook = lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json={
        "target_url": "http://127.0.0.1:9/x", "event": "credits.low"}).json["data"]["id"]
    resp = lclient.simulate_delete(f"/zapier/v1/hooks/{hook}", headers=bearer(other))
    assert resp.status_code == 404
    listed = lclient.simulate_get("/zapier/v1/hooks", headers=bearer(other)).json["data"]
    assert listed["items"] == []
    resp = lclient.simulate_delete(f"/zapier/v1/hooks/{hook}", headers=bearer(key))
    assert resp.status_code == 200


def test_credits_low_fires_once_per_crossing(lclient, lconfig, make_account, admin_headers):
    account_id, key = make_account(credits=5)
    target = Receiver()
    proc = start_worker(lconfig, queues="webhooks")
    try:
        lclient.simulate_post("/zapier/v1/hooks", headers=bearer(key), json={
            "target_url": target.url, "event": "credits.low"})
        assert lclient.simulate_put("/zapier/v1/credits/low-threshold", headers=bearer(key),
                                    json={"threshold": 3}).status_code == 200
        for _ in range(4):  # 4, 3, 2 (crossing), 1
            assert lclient.simulate_post("/zapier/v1/echo", json={"message": "x"},
                                         headers=bearer(key)).status_code == 200
        lclient.simulate_post(f"/admin/accounts/{account_id}/credits", json={"amount": 10},
                              headers=admin_headers)
        for _ in range(9):  # 10 (re-armed) ... 2 (second crossing)
            lclient.simulate_post("/zapier/v1/echo", json={"message": "x"}, headers=bearer(key))
        target.wait_for(2)
        time.sleep(0.5)  # a third, wrong delivery would arrive in this time
        assert [b["data"]["balance"] for b in target.bodies()] == [2, 2]
    finally:
        target.close()
        stop_worker(proc)


def test_list_posts_filters_paging_and_isolation(lclient, lconfig, make_account, images):
    _, key = make_account(credits=200)
    _, other = make_account(credits=100)
    run_listing(lclient, key, images, wait=0, custom_tags=["tech", "sale"],
                content_label="featured")
    run_listing(lclient, key, images, wait=0, custom_tags=["home"], vendor="LampCo")
    run_listing(lclient, other, images, wait=0, custom_tags=["tech"])
    burst(lconfig)

    def get(k, **params):
        resp = lclient.simulate_get("/list-posts", params=params, headers=bearer(k))
        assert resp.status_code == 200, resp.text
        return resp.json["data"]

    everything = get(key)
    assert everything["catalogName"] == "Compiled Posts"
    items = everything["itemList"]
    assert len(items) == 4 and everything["totalPages"] == 1
    assert [i["createdAt"] for i in items] == sorted((i["createdAt"] for i in items), reverse=True)
    for item in items:
        assert item["urn"] == item["id"] and item["urn"].startswith("post_")
        for field in ("cardPoster", "deliverable", "platform", "postFormat", "contentType",
                      "customTags", "contentLabel", "createdAt", "updatedAt"):
            assert field in item
    assert len(get(key, customTags="tech")["itemList"]) == 2
    assert len(get(key, contentLabel="featured")["itemList"]) == 2
    assert len(get(key, postFormat="square")["itemList"]) == 2
    assert len(get(key, searchText="lampco")["itemList"]) == 2
    assert len(get(key, contentType="product-listing")["itemList"]) == 4
    assert get(key, contentType="blog")["itemList"] == []
    assert get(key, startDate="2999-01-01T00:00:00Z")["itemList"] == []
    assert len(get(key, endDate="2999-01-01")["itemList"]) == 4
    page2 = get(key, pageNo="2", itemsPerPage="3")
    assert len(page2["itemList"]) == 1 and page2["totalPages"] == 2 and page2["currentPage"] == 2
    first = get(key, limit="3")
    assert first["next"].startswith("http://gateway.test/list-posts?")
    cursor = first["next"].split("cursor=")[1]
    rest = get(key, limit="3", cursor=cursor)
    assert rest["next"] is None
    assert {i["urn"] for i in first["itemList"]} | {i["urn"] for i in rest["itemList"]} == \
        {i["urn"] for i in items}
    assert len(get(other)["itemList"]) == 2
    resp = lclient.simulate_get("/list-posts", params={"startDate": "yesterday"},
                                headers=bearer(key))
    assert resp.status_code == 400 and resp.json["error"]["details"][0]["field"] == "startDate"


def test_list_posts_dates_are_rfc3339_and_never_empty(lclient, make_account):
    """The document says date-time or date: an empty value or another ISO 8601 spelling
    is a 400 naming the field, not "no filter"."""
    _, key = make_account(credits=0)
    for name in ("startDate", "endDate"):
        for bad in ("", "20240101", "2024-01-01 10:00:00", "2024-01-01T10:00:00"):
            resp = lclient.simulate_get("/list-posts", query_string=f"{name}={bad}",
                                        headers=bearer(key))
            assert resp.status_code == 400, (name, bad)
            assert resp.json["error"]["details"][0]["field"] == name
        for good in ("2024-01-01", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00.5%2B02:00"):
            resp = lclient.simulate_get("/list-posts", query_string=f"{name}={good}",
                                        headers=bearer(key))
            assert resp.status_code == 200, (name, good, resp.text)
