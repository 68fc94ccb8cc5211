"""Asynchronous actions end to end: generate-product-listing on real RQ workers, the job
lifecycle (wait, 202, polling, SSE, cancel), and money following the outcome."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import time

from falcon.testing import TestClient
from PIL import Image

from async_support import burst, poll, start_worker
from conftest import bearer, ledger_sum, make_app
from core.clock import SystemClock, utcnow
from metering import db as dbmod

PRICE = 25


def listing(client, key, url, wait=0, **extra):
    body = {"product_name": "Wireless Gaming Mouse", "product_image_url": url,
            "product_description": "High DPI gaming mouse", "vendor": "TechCo", **extra}
    return client.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                params={"wait": str(wait)}, headers=bearer(key))


def refunds_of(account_id, receipt):
    from metering.models import LedgerEntry

    with dbmod.connection():
        return list(LedgerEntry.select().where(
            (LedgerEntry.account == account_id) & (LedgerEntry.refund_of == receipt)))


def test_listing_completes_within_the_wait(lclient, make_account, images, worker):
    account_id, key = make_account(credits=100)
    resp = listing(lclient, key, images.url + "/product.png", wait=30)
    assert resp.status_code == 200, resp.text
    body = resp.json
    comp = body["data"]["composition"]
    assert comp["status"] == "completed" and comp["progress"] == 100
    assert body["meta"]["creditsUsed"] == PRICE and body["meta"]["ttl"] == 120000
    assert body["meta"]["availableCredit"] == 75
    assert comp["txnReceipt"] == body["meta"]["txnReceipt"]
    kinds = {o["kind"]: o for o in comp["outputs"]}
    assert set(kinds) >= {"main", "banner"}
    for output in comp["outputs"]:
        assert output["type"] == "image" and output["url"].startswith("http://gateway.test/")
        path = output["url"][len("http://gateway.test"):]
        got = lclient.simulate_get(path)
        assert got.status_code == 200
        fmt = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[output["format"]]
        assert got.headers["content-type"].startswith("image/")
        img = Image.open(io.BytesIO(got.content))
        assert img.format == fmt and img.size == (output["width"], output["height"])
    assert kinds["main"]["width"] == kinds["main"]["height"]
    assert ledger_sum(account_id) == (75, 75)


def test_listing_202_then_poll_and_sse(lclient, lconfig, make_account, images):
    account_id, key = make_account(credits=100)
    resp = listing(lclient, key, images.url + "/product.png", wait=0)
    assert resp.status_code == 202
    comp = resp.json["data"]["composition"]
    assert comp["status"] == "queued" and comp["progress"] == 0 and comp["queuePosition"] == 1
    assert resp.json["data"]["links"]["status"].endswith(f"/zapier/v1/compositions/{comp['uid']}")
    assert resp.headers["location"] == resp.json["data"]["links"]["status"]
    burst(lconfig)
    done = poll(lclient, key, comp["uid"])
    assert done["status"] == "completed" and len(done["outputs"]) >= 2
    events = lclient.simulate_get(f"/zapier/v1/compositions/{comp['uid']}/events",
                                  headers=bearer(key))
    assert events.headers["content-type"].startswith("text/event-stream")
    assert "event: end" in events.text
    last = json.loads(events.text.strip().split("data: ")[-1])
    assert last["status"] == "completed"


def test_sse_streams_progress_live(lclient, lconfig, make_account, images, worker):
    import threading

    account_id, key = make_account(credits=100)
    resp = listing(lclient, key, images.url + "/product.png", wait=0)
    uid = resp.json["data"]["composition"]["uid"]
    seen = {}

    def read():
        seen["text"] = lclient.simulate_get(f"/zapier/v1/compositions/{uid}/events",
                                            headers=bearer(key)).text

    reader = threading.Thread(target=read)
    reader.start()
    reader.join(30)
    text = seen["text"]
    assert text.count("event: ") >= 2 and "event: end" in text
    assert '"status": "completed"' in text.split("event: end")[1]


def test_failure_is_refunded_once(lclient, lconfig, make_account, images):
    account_id, key = make_account(credits=60)
    for path in ("/missing", "/text"):
        resp = listing(lclient, key, images.url + path, wait=0)
        assert resp.status_code == 202
        burst(lconfig)
        comp = poll(lclient, key, resp.json["data"]["composition"]["uid"])
        assert comp["status"] == "failed" and comp["error"]["message"]
        assert comp["refundReceipt"].startswith("txn_") and comp["outputs"] == []
        rows = refunds_of(account_id, comp["txnReceipt"])
        assert len(rows) == 1 and rows[0].amount == PRICE
    assert ledger_sum(account_id) == (60, 60)


def test_cancel_before_start_refunds_and_job_is_skipped(lclient, lconfig, make_account, images):
    account_id, key = make_account(credits=30)
    uid = listing(lclient, key, images.url + "/product.png").json["data"]["composition"]["uid"]
    resp = lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=bearer(key))
    assert resp.status_code == 200
    comp = resp.json["data"]["composition"]
    assert comp["status"] == "cancelled" and comp["refundReceipt"]
    again = lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=bearer(key))
    assert again.status_code == 409 and again.json["error"]["code"] == "CONFLICT"
    burst(lconfig)  # the queued RQ job runs, finds the composition cancelled, does nothing
    assert poll(lclient, key, uid)["status"] == "cancelled"
    assert len(refunds_of(account_id, comp["txnReceipt"])) == 1
    assert ledger_sum(account_id) == (30, 30)


def test_expired_in_queue_is_refunded(lconfig, make_account, images, schema):
    short = lconfig.replace(job_ttl_s=1)
    client = TestClient(make_app(short))
    account_id, key = make_account(credits=30)
    resp = listing(client, key, images.url + "/product.png")
    assert resp.json["meta"]["ttl"] == 1000
    burst(short, clock=SystemClock(offset=dt.timedelta(seconds=1.3)))  # the worker is late
    comp = poll(client, key, resp.json["data"]["composition"]["uid"])
    assert comp["status"] == "failed" and comp["error"]["code"] == "EXPIRED"
    assert len(refunds_of(account_id, comp["txnReceipt"])) == 1
    assert ledger_sum(account_id) == (30, 30)


def test_killed_worker_is_detected_and_refunded(lclient, lconfig, make_account, images):
    from gateway.services import install_worker_runtime
    from jobs import engine

    account_id, key = make_account(credits=30)
    uid = listing(lclient, key, images.url + "/slow").json["data"]["composition"]["uid"]
    proc = start_worker(lconfig, queues="cpu")
    try:
        poll(lclient, key, uid, until=("running",))
        time.sleep(0.3)
    finally:  # the whole worker dies at once, its RQ scheduler child included
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    install_worker_runtime(lconfig)
    later = utcnow() + dt.timedelta(seconds=2)  # three missed heartbeats of 0.5 s
    assert engine.reap(now=later) == 1
    assert engine.reap(now=later) == 0  # a second reaper finds nothing to do
    comp = poll(lclient, key, uid)
    assert comp["status"] == "failed" and comp["error"]["code"] == "WORKER_LOST"
    assert len(refunds_of(account_id, comp["txnReceipt"])) == 1
    # RQ may run the abandoned job again: it must neither charge nor refund twice.
    assert engine.run_composition(uid) == "skipped"
    assert ledger_sum(account_id) == (30, 30)


def test_cancel_while_running_stops_and_refunds(lclient, lconfig, make_account, images, worker):
    account_id, key = make_account(credits=30)
    uid = listing(lclient, key, images.url + "/slow").json["data"]["composition"]["uid"]
    poll(lclient, key, uid, until=("running",))
    resp = lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=bearer(key))
    assert resp.status_code == 200
    comp = poll(lclient, key, uid, timeout=30)
    # The stop takes effect at the next checkpoint, when the slow download ends.
    assert comp["status"] == "cancelled" and comp["refundReceipt"]
    assert ledger_sum(account_id) == (30, 30)


def test_bad_input_charges_nothing(lclient, client, make_account, images):
    account_id, key = make_account(credits=30)
    cases = [
        ({"product_name": "x"}, "product_image_url"),
        ({"product_name": "x", "product_image_url": "ftp://example.com/a.png"},
         "product_image_url"),
        ({"product_name": "x", "product_image_url": "http://10.0.0.1/a.png"},
         "product_image_url"),
        ({"product_name": "x", "product_image_url": "http://169.254.169.254/latest"},
         "product_image_url"),
        ({"product_name": "x", "product_image_url": images.url + "/product.png",
          "callback_url": "http://192.168.1.1/hook"}, "callback_url"),
    ]
    for body, field in cases:
        resp = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                     headers=bearer(key))
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json["error"]["code"] == "INVALID_REQUEST"
        assert field in {d["field"] for d in resp.json["error"].get("details", [])}
    # Without the allow-list, loopback is refused too.
    resp = client.simulate_post("/zapier/v1/generate-product-listing", headers=bearer(key),
                                json={"product_name": "x",
                                      "product_image_url": images.url + "/product.png"})
    assert resp.status_code == 400
    from jobs.models import Composition

    with dbmod.connection():
        assert Composition.select().where(Composition.account == account_id).count() == 0
    assert ledger_sum(account_id) == (30, 30)


def test_idempotent_async_call_replays_the_same_composition(lclient, lconfig, make_account,
                                                            images):
    account_id, key = make_account(credits=100)
    headers = {**bearer(key), "Idempotency-Key": "listing-1"}
    body = {"product_name": "Mouse", "product_image_url": images.url + "/product.png"}
    first = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                  params={"wait": "0"}, headers=headers)
    second = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                   params={"wait": "0"}, headers=headers)
    assert second.headers["idempotent-replayed"] == "true"
    uid = first.json["data"]["composition"]["uid"]
    assert second.json["data"]["composition"]["uid"] == uid
    assert second.json["meta"]["txnReceipt"] == first.json["meta"]["txnReceipt"]
    assert first.status_code == second.status_code == 202
    burst(lconfig)
    # After the job ended a replay still answers the first answer's status (CONTRACT 5),
    # showing the composition as it is now: its outputs, and where to poll.
    third = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                  params={"wait": "30"}, headers=headers)
    assert third.status_code == 202 and third.headers["idempotent-replayed"] == "true"
    assert third.json["data"]["composition"]["status"] == "completed"
    assert third.json["data"]["composition"]["outputs"]
    assert third.headers["location"].endswith(f"/zapier/v1/compositions/{uid}")
    assert third.json["meta"]["txnReceipt"] == first.json["meta"]["txnReceipt"]
    assert ledger_sum(account_id) == (75, 75)


def test_replay_of_an_async_call_that_ended_within_its_wait_is_200(lclient, make_account,
                                                                   images, worker):
    """The first answer was 200 (the job ended during the wait): so is every replay, at
    once, with the same receipt and no second job or debit."""
    from jobs.models import Composition

    account_id, key = make_account(credits=100)
    headers = {**bearer(key), "Idempotency-Key": "listing-200"}
    body = {"product_name": "Mouse", "product_image_url": images.url + "/product.png"}
    first = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                  params={"wait": "30"}, headers=headers)
    assert first.status_code == 200, first.text
    for wait in ("0", "30"):
        again = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                      params={"wait": wait}, headers=headers)
        assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
        assert again.json["data"]["composition"] == first.json["data"]["composition"]
        assert again.json["meta"]["txnReceipt"] == first.json["meta"]["txnReceipt"]
        assert "location" not in again.headers
    with dbmod.connection():
        assert Composition.select().where(Composition.account == account_id).count() == 1
    assert ledger_sum(account_id) == (75, 75)


def test_wait_parameter_validation(lclient, make_account, images):
    _, key = make_account(credits=30)
    for wait in ("-1", "61", "abc"):
        resp = lclient.simulate_post("/zapier/v1/generate-product-listing",
                                     params={"wait": wait}, headers=bearer(key),
                                     json={"product_name": "x",
                                           "product_image_url": images.url + "/product.png"})
        assert resp.status_code == 400 and resp.json["error"]["code"] == "INVALID_REQUEST"
    resp = lclient.simulate_post("/zapier/v1/generate-product-listing",
                                 headers={**bearer(key), "Prefer": "respond-async, wait=0"},
                                 json={"product_name": "x",
                                       "product_image_url": images.url + "/product.png"})
    assert resp.status_code == 202


def test_other_tenant_cannot_see_or_cancel(lclient, make_account, images):
    _, key = make_account(credits=30)
    _, other = make_account(credits=30)
    uid = listing(lclient, key, images.url + "/product.png").json["data"]["composition"]["uid"]
    for resp in (lclient.simulate_get(f"/zapier/v1/compositions/{uid}", headers=bearer(other)),
                 lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel",
                                       headers=bearer(other)),
                 lclient.simulate_get(f"/zapier/v1/compositions/{uid}/events",
                                      headers=bearer(other))):
        assert resp.status_code == 404 and resp.json["error"]["code"] == "NOT_FOUND"


def test_echo_async_cancel_mid_run_refunds(lclient, make_account, worker):
    account_id, key = make_account(credits=5)
    resp = lclient.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                 json={"message": "hi", "delay_ms": 5000}, headers=bearer(key))
    assert resp.status_code == 202 and resp.json["meta"]["ttl"] == 60000
    uid = resp.json["data"]["composition"]["uid"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        comp = lclient.simulate_get(f"/zapier/v1/compositions/{uid}",
                                    headers=bearer(key)).json["data"]["composition"]
        if comp["progress"] > 0:
            break
        time.sleep(0.05)
    assert comp["status"] == "running" and 0 < comp["progress"] < 100
    lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=bearer(key))
    comp = poll(lclient, key, uid)
    assert comp["status"] == "cancelled" and comp["refundReceipt"]
    assert comp["error"]["code"] == "CANCELLED"
    assert ledger_sum(account_id) == (5, 5)


def test_echo_async_completes_with_json_output(lclient, make_account, worker):
    _, key = make_account(credits=5)
    resp = lclient.simulate_post("/zapier/v1/echo-async", params={"wait": "20"},
                                 json={"message": "hello"}, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    [output] = resp.json["data"]["composition"]["outputs"]
    got = lclient.simulate_get(output["url"][len("http://gateway.test"):])
    assert got.headers["content-type"] == "application/json" and got.json == {"message": "hello"}


def test_sse_through_gunicorn_streams_live_and_keeps_serving(server, make_account, worker):
    """Under gunicorn (gthread) an open event stream holds one thread, not the process:
    progress arrives as it happens and other requests are answered meanwhile."""
    import requests

    _, key = make_account(credits=5)
    headers = {"Authorization": f"Bearer {key}"}
    uid = requests.post(server + "/zapier/v1/echo-async?wait=0", headers=headers,
                        json={"message": "live", "delay_ms": 2000}).json()["data"][
        "composition"]["uid"]
    events, during = [], []
    with requests.get(f"{server}/zapier/v1/compositions/{uid}/events", headers=headers,
                      stream=True, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data: "):
                events.append((time.monotonic(), json.loads(line[6:])))
                if len(during) < 2:
                    started = time.monotonic()
                    me = requests.get(server + "/zapier/v1/me", headers=headers, timeout=5)
                    during.append((me.status_code, time.monotonic() - started))
    statuses = [e[1]["status"] for e in events]
    progress = [e[1]["progress"] for e in events]
    assert statuses[-1] == "completed" and progress == sorted(progress)
    assert len([s for s in statuses if s == "running"]) >= 3  # live steps, not one final dump
    assert events[-1][0] - events[0][0] > 1.0  # spread over the job's run time
    assert all(code == 200 and took < 2 for code, took in during)


def test_compositions_list_newest_first_with_filters(lclient, lconfig, make_account, images):
    _, key = make_account(credits=100)
    _, other = make_account(credits=100)
    uids = [listing(lclient, key, images.url + path).json["data"]["composition"]["uid"]
            for path in ("/product.png", "/missing", "/product.png")]
    listing(lclient, other, images.url + "/product.png")
    burst(lconfig)

    def get(k, **params):
        resp = lclient.simulate_get("/zapier/v1/compositions", params=params, headers=bearer(k))
        assert resp.status_code == 200, resp.text
        return resp.json["data"]

    everything = get(key)
    assert [c["uid"] for c in everything["items"]] == uids[::-1]
    assert all(c["id"] == c["uid"] for c in everything["items"])
    assert [c["uid"] for c in get(key, status="failed")["items"]] == [uids[1]]
    first = get(key, limit="2")
    assert first["next"] and len(first["items"]) == 2
    rest = get(key, limit="2", cursor=first["next"].split("cursor=")[1])
    assert [c["uid"] for c in first["items"] + rest["items"]] == uids[::-1]
    assert rest["next"] is None
    assert len(get(other)["items"]) == 1
    bad = lclient.simulate_get("/zapier/v1/compositions", params={"status": "nope"},
                               headers=bearer(key))
    assert bad.status_code == 400
