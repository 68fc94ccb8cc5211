"""Webhook endpoints like Stripe's (issue 15): several per account, each signing with its
own secret (checked by the independent ``standardwebhooks`` package at a loopback
receiver), event filters, the per-attempt delivery log, redeliver, test events, secret
rotation with an overlap, tenant isolation, and bad input refused changing nothing."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import requests
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from async_support import Receiver, burst
from conftest import bearer
from core.clock import ManualClock, utcnow

BASE = "/zapier/v1/webhook-endpoints"


def verify(secret, request):
    headers = {k.lower(): v for k, v in request["headers"].items()}
    return Webhook(secret).verify(request["body"], headers)


def refuses(secret, request) -> bool:
    try:
        verify(secret, request)
    except WebhookVerificationError:
        return True
    return False


def create(client, key, url, events, **extra):
    resp = client.simulate_post(BASE, headers=bearer(key),
                                json={"url": url, "events": events, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]


def log_of(client, key, endpoint_id, count, timeout=15, **params):
    """The endpoint's delivery log once it holds ``count`` attempts."""
    deadline = time.monotonic() + timeout
    while True:
        resp = client.simulate_get(f"{BASE}/{endpoint_id}/deliveries", headers=bearer(key),
                                   params=params)
        assert resp.status_code == 200, resp.text
        items = resp.json["data"]["items"]
        if len(items) >= count or time.monotonic() > deadline:
            return items
        time.sleep(0.1)


def test_endpoints_sign_with_their_own_secrets_log_retry_redeliver_and_test(
        lclient, make_account, worker):
    _, key = make_account(credits=3)
    flaky = Receiver(statuses=[500, 200], answer=lambda s: b"oops" if s >= 500 else b"ok")
    quiet, every = Receiver(), Receiver(answer=b"x" * 5000)  # a long answer: bounded excerpt
    try:
        low = create(lclient, key, flaky.url + "/low", ["credits.low"], description="alerts")
        other = create(lclient, key, quiet.url, ["composition.completed"])
        star = create(lclient, key, every.url + "/all", ["*"])
        assert len({low["secret"], other["secret"], star["secret"]}) == 3
        assert low["secret"].startswith("whsec_") and low["enabled"] is True
        listed = lclient.simulate_get(BASE, headers=bearer(key))
        assert listed.status_code == 200 and "X-RateLimit-Limit" in listed.headers
        items = listed.json["data"]["items"]
        assert [i["id"] for i in items] == [star["id"], other["id"], low["id"]]
        assert all("secret" not in i for i in items)  # shown once, at creation
        assert "secret" not in lclient.simulate_get(f"{BASE}/{low['id']}",
                                                    headers=bearer(key)).json["data"]

        # a real event: a debit takes the balance below the threshold -> credits.low
        assert lclient.simulate_put("/zapier/v1/credits/low-threshold", headers=bearer(key),
                                    json={"threshold": 3}).status_code == 200
        assert lclient.simulate_post("/zapier/v1/echo", json={"message": "x"},
                                     headers=bearer(key)).status_code == 200
        first, second = flaky.wait_for(2)
        assert [first["status"], second["status"]] == [500, 200]
        assert first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
        for request in (first, second):
            assert verify(low["secret"], request)["type"] == "credits.low"
            assert refuses(star["secret"], request) and refuses(other["secret"], request)
        [to_star] = every.wait_for(1)
        assert verify(star["secret"], to_star)["data"]["balance"] == 2
        assert refuses(low["secret"], to_star)

        log = log_of(lclient, key, low["id"], 2)
        assert [(a["outcome"], a["responseCode"], a["responseExcerpt"]) for a in log] == \
            [("succeeded", 200, "ok"), ("failed", 500, "oops")]
        msg_id = first["headers"]["webhook-id"]
        assert {a["deliveryId"] for a in log} == {msg_id}
        assert log[1]["nextRetryAt"] is not None and log[0]["nextRetryAt"] is None
        assert all(a["event"] == "credits.low" and a["durationMs"] >= 0 for a in log)
        star_log = log_of(lclient, key, star["id"], 1)
        assert star_log[0]["responseCode"] == 200 and star_log[0]["responseExcerpt"] == "x" * 512
        delivery = lclient.simulate_get(f"{BASE}/{low['id']}/deliveries/{msg_id}",
                                        headers=bearer(key)).json["data"]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 2
        assert delivery["payload"]["type"] == "credits.low"
        assert [a["responseCode"] for a in delivery["attemptLog"]] == [200, 500]

        # redeliver: one more attempt, same webhook-id, signed with the endpoint's secret
        resp = lclient.simulate_post(f"{BASE}/{low['id']}/deliveries/{msg_id}/redeliver",
                                     headers=bearer(key))
        assert resp.status_code == 202, resp.text
        third = flaky.wait_for(3)[2]
        assert third["headers"]["webhook-id"] == msg_id
        assert verify(low["secret"], third) == verify(low["secret"], second)
        log = log_of(lclient, key, low["id"], 3)
        assert log[0]["redelivery"] is True and log[0]["responseCode"] == 200

        # a test event to one endpoint, whatever its filter
        resp = lclient.simulate_post(f"{BASE}/{other['id']}/test", headers=bearer(key))
        assert resp.status_code == 202, resp.text
        test_id = resp.json["data"]["delivery"]["id"]
        [test] = quiet.wait_for(1)
        assert test["headers"]["webhook-id"] == test_id
        assert verify(other["secret"], test)["type"] == "webhook.test"
        assert log_of(lclient, key, other["id"], 1)[0]["event"] == "webhook.test"
        assert len(every.requests) == 1 and len(flaky.requests) == 3  # sent to one only

        # the log pages like every list (CONTRACT 7)
        page = lclient.simulate_get(f"{BASE}/{low['id']}/deliveries", headers=bearer(key),
                                    params={"limit": "2"}).json["data"]
        assert len(page["items"]) == 2 and page["next"].startswith("http://gateway.test/")
        rest = lclient.simulate_get(f"{BASE}/{low['id']}/deliveries", headers=bearer(key),
                                    params={"limit": "2",
                                            "cursor": page["next"].split("cursor=")[1]})
        assert [a["responseCode"] for a in rest.json["data"]["items"]] == [500]
        assert rest.json["data"]["next"] is None
    finally:
        flaky.close()
        quiet.close()
        every.close()


def test_rotation_signs_with_both_secrets_until_the_overlap_ends(lclient, lconfig,
                                                                 make_account):
    _, key = make_account()
    target = Receiver()
    try:
        endpoint = create(lclient, key, target.url, ["credits.low"])
        path = f"{BASE}/{endpoint['id']}"

        def rotate(**body):
            resp = lclient.simulate_post(path + "/rotate-secret", headers=bearer(key),
                                         json=body)
            assert resp.status_code == 201, resp.text
            return resp.json["data"]

        def test_event(clock=None):
            assert lclient.simulate_post(path + "/test", headers=bearer(key)).status_code == 202
            burst(lconfig, queues=("webhooks",), clock=clock)  # a real RQ worker, in process
            return target.requests[-1]

        s1 = endpoint["secret"]
        rolled = rotate(overlap_seconds=3600)
        s2 = rolled["secret"]
        assert s2 != s1 and rolled["previousSecretExpiresAt"] is not None
        request = test_event()
        assert len(request["headers"]["webhook-signature"].split(" ")) == 2
        assert verify(s1, request) and verify(s2, request)  # receivers can switch any time

        s3 = rotate(overlap_seconds=0)["secret"]  # the previous one stops at once
        request = test_event()
        assert verify(s3, request) and refuses(s2, request) and refuses(s1, request)

        s4 = rotate(overlap_seconds=60)["secret"]
        assert verify(s3, test_event()) and verify(s4, target.requests[-1])
        later = ManualClock(utcnow() + dt.timedelta(seconds=120))  # past the overlap
        request = test_event(clock=later)
        assert verify(s4, request) and refuses(s3, request)
        assert rotate()["previousSecretExpiresAt"] is not None  # default overlap: a day
    finally:
        target.close()


def test_the_delivery_log_keeps_the_newest_attempts(lclient, lconfig, make_account):
    """``WEBHOOK_LOG_KEEP`` bounds each endpoint's log; other endpoints keep theirs."""
    _, key = make_account()
    target = Receiver()
    try:
        pruned = create(lclient, key, target.url, ["credits.low"])
        kept = create(lclient, key, target.url, ["credits.low"])
        sent = []
        for endpoint in (kept, pruned, pruned, pruned):
            resp = lclient.simulate_post(f"{BASE}/{endpoint['id']}/test", headers=bearer(key))
            sent.append(resp.json["data"]["delivery"]["id"])
            burst(lconfig.replace(webhook_log_keep=2), queues=("webhooks",))
        assert len(target.requests) == 4
        log = log_of(lclient, key, pruned["id"], 2)
        assert [a["deliveryId"] for a in log] == sent[:0:-1][:2]
        assert [a["deliveryId"] for a in log_of(lclient, key, kept["id"], 1)] == sent[:1]
    finally:
        target.close()


BAD_CREATES = [
    ({"events": ["credits.low"]}, "url"),
    ({"url": "ftp://example.com/x", "events": ["credits.low"]}, "url"),
    ({"url": "http://127.0.0.1:9/x", "events": ["credits.low"]}, "url"),  # loopback
    ({"url": "http://10.1.2.3/x", "events": ["credits.low"]}, "url"),  # private
    ({"url": 5, "events": ["credits.low"]}, "url"),
    ({"url": "https://8.8.8.8/" + "a" * 3000, "events": ["credits.low"]}, "url"),
    ({"url": "https://8.8.8.8/x"}, "events"),
    ({"url": "https://8.8.8.8/x", "events": []}, "events"),
    ({"url": "https://8.8.8.8/x", "events": "credits.low"}, "events"),
    ({"url": "https://8.8.8.8/x", "events": ["nope"]}, "events"),
    ({"url": "https://8.8.8.8/x", "events": ["*"], "enabled": "yes"}, "enabled"),
    ({"url": "https://8.8.8.8/x", "events": ["*"], "description": "d" * 300},
     "description"),
    ({"url": "https://8.8.8.8/x", "events": ["*"], "secret": "whsec_mine"}, "secret"),
]


def test_bad_input_is_refused_and_changes_nothing(client, make_account):
    """Under the default outbound rule (no OUTBOUND_ALLOW_HOSTS): loopback is refused."""
    _, key = make_account()
    for body, field in BAD_CREATES:
        resp = client.simulate_post(BASE, headers=bearer(key), json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json["error"]["code"] == "INVALID_REQUEST"
        assert field in {d["field"] for d in resp.json["error"]["details"]}, body
    resp = client.simulate_post(BASE, headers={**bearer(key), "Content-Type":
                                               "application/json"}, body=b"{nope")
    assert resp.status_code == 400
    assert client.simulate_get(BASE, headers=bearer(key)).json["data"]["items"] == []

    endpoint = create(client, key, "https://8.8.8.8/hook", ["credits.low"])
    path = f"{BASE}/{endpoint['id']}"
    for body, field in [({}, "body"), ({"url": "http://192.168.0.1/"}, "url"),
                        ({"events": ["*", "bad"]}, "events"), ({"enabled": 1}, "enabled"),
                        ({"nope": True}, "nope")]:
        resp = client.simulate_patch(path, headers=bearer(key), json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert field in {d["field"] for d in resp.json["error"]["details"]}
    for body in ({"overlap_seconds": -1}, {"overlap_seconds": "60"},
                 {"overlap_seconds": 10**9}, {"overlap_seconds": True}, {"other": 1}):
        resp = client.simulate_post(path + "/rotate-secret", headers=bearer(key), json=body)
        assert resp.status_code == 400, (body, resp.text)
    unchanged = client.simulate_get(path, headers=bearer(key)).json["data"]
    assert unchanged == {k: v for k, v in endpoint.items() if k != "secret"}
    resp = client.simulate_get(path + "/deliveries", headers=bearer(key),
                               params={"cursor": "garbage"})
    assert resp.status_code == 400
    for limit in ("0", "101", "x"):
        resp = client.simulate_get(path + "/deliveries", headers=bearer(key),
                                   params={"limit": limit})
        assert resp.status_code == 400

    # disabled: nothing is sent, a test event or a redelivery is a conflict
    resp = client.simulate_patch(path, headers=bearer(key), json={"enabled": False,
                                                                  "description": "off"})
    assert resp.status_code == 200 and resp.json["data"]["enabled"] is False
    resp = client.simulate_post(path + "/test", headers=bearer(key))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "CONFLICT"
    assert client.simulate_get(path + "/deliveries", headers=bearer(key)).json["data"][
        "items"] == []


def test_another_accounts_endpoints_and_deliveries_are_404(lclient, lconfig, make_account):
    _, key = make_account()
    _, intruder = make_account()
    target = Receiver()
    try:
        mine = create(lclient, key, target.url, ["credits.low"])
        second = create(lclient, key, target.url, ["credits.low"])
        theirs = create(lclient, intruder, target.url, ["credits.low"])
        path = f"{BASE}/{mine['id']}"
        msg_id = lclient.simulate_post(path + "/test", headers=bearer(key)).json["data"][
            "delivery"]["id"]
        burst(lconfig, queues=("webhooks",))
        assert len(target.wait_for(1)) == 1
        delivery = f"{path}/deliveries/{msg_id}"
        attempts = [
            ("get", path, None), ("patch", path, {"enabled": False}), ("delete", path, None),
            ("post", path + "/rotate-secret", {}), ("post", path + "/test", None),
            ("get", path + "/deliveries", None), ("get", delivery, None),
            ("post", delivery + "/redeliver", None),
            # my delivery under their endpoint, and under my other endpoint
            ("get", f"{BASE}/{theirs['id']}/deliveries/{msg_id}", None),
            ("post", f"{BASE}/{theirs['id']}/deliveries/{msg_id}/redeliver", None),
        ]
        for method, url, body in attempts:
            resp = getattr(lclient, f"simulate_{method}")(url, headers=bearer(intruder),
                                                          json=body)
            assert resp.status_code == 404, (method, url, resp.text)
            assert resp.json["error"]["code"] == "NOT_FOUND"
        resp = lclient.simulate_get(f"{BASE}/{second['id']}/deliveries/{msg_id}",
                                    headers=bearer(key))
        assert resp.status_code == 404
        listed = lclient.simulate_get(BASE, headers=bearer(intruder)).json["data"]["items"]
        assert [e["id"] for e in listed] == [theirs["id"]]
        assert lclient.simulate_get(path, headers=bearer(key)).json["data"]["enabled"] is True
        burst(lconfig, queues=("webhooks",))
        assert len(target.requests) == 1  # nothing was sent for the intruder
        assert len(log_of(lclient, key, mine["id"], 1)) == 1

        assert lclient.simulate_delete(path, headers=bearer(key)).status_code == 200
        assert lclient.simulate_get(path, headers=bearer(key)).status_code == 404
        assert lclient.simulate_get(delivery, headers=bearer(key)).status_code == 404
    finally:
        target.close()


def test_endpoint_limit_holds_under_concurrent_creates(server, client, make_account):
    """16 endpoints per account however many creates race (real threads, two gunicorn
    worker processes)."""
    _, key = make_account()
    codes, lock = [], threading.Lock()

    def create_one(i):
        resp = requests.post(server + BASE, headers=bearer(key), timeout=30,
                             json={"url": f"https://8.8.8.8/{i}", "events": ["*"]})
        with lock:
            codes.append(resp.status_code)

    threads = [threading.Thread(target=create_one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] * 16 + [409] * 8
    listed = client.simulate_get(BASE, headers=bearer(key)).json["data"]["items"]
    assert len(listed) == 16


@pytest.mark.parametrize("path", ["/zapier/v1/hooks", BASE])
def test_scoped_read_routes_answer_the_list_envelope(client, make_account, path):
    """REST hooks and endpoints side by side: both lists work for the same account."""
    _, key = make_account()
    resp = client.simulate_get(path, headers=bearer(key))
    assert resp.status_code == 200 and resp.json["data"] == {"items": [], "next": None}


MIGRATION_SCRIPT = r"""
import sys
from metering import db as dbmod
from gateway import schema
from jobs.models import Delivery, DeliveryAttempt, WebhookEndpoint
from metering.models import Account

dbmod.bind("sqlite:///" + sys.argv[1])
with dbmod.connection() as db:
    from metering import migrations
    migrations.upgrade([m for m in schema.MIGRATIONS if m[0] < 13])
    # the deliveries table as it was before migration 13, with a delivery in it
    db.execute_sql("ALTER TABLE delivery DROP COLUMN endpoint")
    assert not db.table_exists("webhook_endpoint")
    Account.create(id="acc_old", username="old", balance=0)
    db.execute_sql("INSERT INTO delivery (msg_id, account_id, hook, event, target_url, payload,"
                   " attempts, status, created_at) VALUES ('msg_old', 'acc_old', 'hook_1',"
                   " 'credits.low', 'https://8.8.8.8/', '{}', 1, 'delivered', '2026-01-01')")
    assert "endpoint" not in {c.name for c in db.get_columns("delivery")}
    assert schema.upgrade() == [13]
    assert schema.upgrade() == []
    old = Delivery.get(Delivery.msg_id == "msg_old")
    assert old.endpoint is None and old.hook == "hook_1" and old.status == "delivered"
    assert WebhookEndpoint.select().count() == 0 and DeliveryAttempt.select().count() == 0
print("migrated")
"""


def test_migration_13_keeps_an_existing_database_working(tmp_path):
    """On the embedded default (SQLite): a database made before migration 13 gains the
    column and tables, and its deliveries read as before."""
    import subprocess
    import sys

    from conftest import ROOT

    done = subprocess.run([sys.executable, "-c", MIGRATION_SCRIPT, str(tmp_path / "old.db")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("migrated")
