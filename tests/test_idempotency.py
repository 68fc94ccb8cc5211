"""Idempotency keys (CONTRACT 5) through the real app, PostgreSQL and Redis.

Concurrent duplicates run real threads against the session's gunicorn (two worker
processes); time-dependent behaviour (lock takeover, 24-hour expiry) uses a second app
built with an injected clock over the same stores.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading

import requests
from falcon.testing import TestClient

import metering.db
from conftest import ADMIN, ROOT, bearer, ledger_sum, make_app
from core.clock import SystemClock, utcnow
from metering import idempotency
from metering.models import IdempotencyRecord

ECHO = "/zapier/v1/echo"


def _post(client, key, body, idem=None, path=ECHO):
    headers = bearer(key)
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return client.simulate_post(path, json=body, headers=headers)


def _debits(client, key):
    resp = client.simulate_get("/zapier/v1/credits/transactions", query_string="type=debit",
                               headers=bearer(key))
    assert resp.status_code == 200
    return [i["txnReceipt"] for i in resp.json["data"]["items"]]


def _records(account_id):
    with metering.db.connection():
        return list(IdempotencyRecord.select().where(IdempotencyRecord.account == account_id))


def _shifted(config, delta):
    """An app over the same stores whose clock runs ``delta`` ahead of (or behind) real time."""
    return TestClient(make_app(config, clock=SystemClock(offset=delta)))


# --- sequential replay ------------------------------------------------------------------


def test_replay_returns_the_first_answer_and_debits_once(client, make_account):
    account_id, key = make_account(credits=5)
    body = {"message": "once", "uppercase": True}
    first = _post(client, key, body, idem="order-1")
    assert first.status_code == 200
    assert "Idempotent-Replayed" not in first.headers
    assert first.json["meta"]["creditsUsed"] == 1 and first.json["meta"]["availableCredit"] == 4

    for _ in range(3):
        again = _post(client, key, body, idem="order-1")
        assert again.status_code == first.status_code
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert again.json["data"] == first.json["data"] == {
            "message": "once", "length": 4, "uppercase": "ONCE"}
        for field in ("txnReceipt", "creditsUsed", "availableCredit", "action"):
            assert again.json["meta"][field] == first.json["meta"][field]
        assert again.json["meta"]["requestId"] != first.json["meta"]["requestId"]

    assert _debits(client, key) == [first.json["meta"]["txnReceipt"]]
    assert ledger_sum(account_id) == (4, 4)

    # a new key is a new request
    other = _post(client, key, body, idem="order-2")
    assert other.status_code == 200 and "Idempotent-Replayed" not in other.headers
    assert other.json["meta"]["txnReceipt"] != first.json["meta"]["txnReceipt"]
    assert ledger_sum(account_id) == (3, 3)


def test_same_key_different_body_is_422_and_debits_nothing(client, make_account):
    account_id, key = make_account(credits=5)
    assert _post(client, key, {"message": "a"}, idem="k").status_code == 200
    for body in ({"message": "b"}, {"message": "a", "uppercase": True}):
        resp = _post(client, key, body, idem="k")
        assert resp.status_code == 422
        err = resp.json["error"]
        assert err["code"] == "IDEMPOTENCY_KEY_REUSED" and err["statusCode"] == 422
        assert "txnReceipt" not in resp.json["meta"]
    # the same key on another action (another path) is another request too
    resp = _post(client, key, {"action": "echo"}, idem="k", path="/zapier/v1/estimate-cost")
    assert resp.status_code == 422
    assert ledger_sum(account_id) == (4, 4)
    assert len(_debits(client, key)) == 1


# --- concurrent duplicates across processes ---------------------------------------------


def test_30_concurrent_duplicates_debit_exactly_once(client, make_account, server):
    account_id, key = make_account(credits=100)
    body = {"message": "race"}
    barrier = threading.Barrier(30)
    results = []
    lock = threading.Lock()

    def call():
        with requests.Session() as s:
            barrier.wait()
            r = s.post(server + ECHO, json=body, timeout=30,
                       headers={**bearer(key), "Idempotency-Key": "race-key"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=call) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 30
    ok = [r for r in results if r.status_code == 200]
    busy = [r for r in results if r.status_code == 409]
    assert len(ok) + len(busy) == 30, sorted(r.status_code for r in results)
    assert ok, "at least the first request must succeed"
    receipts = {r.json()["meta"]["txnReceipt"] for r in ok}
    assert len(receipts) == 1
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in ok) == 1
    for r in busy:
        assert r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
        assert r.headers["Retry-After"].isdigit() and int(r.headers["Retry-After"]) >= 1

    assert ledger_sum(account_id) == (99, 99)
    assert _debits(client, key) == list(receipts)
    # after the race, a late duplicate is a clean replay
    late = _post(client, key, body, idem="race-key")
    assert late.status_code == 200 and late.headers["Idempotent-Replayed"] == "true"
    assert late.json["meta"]["txnReceipt"] in receipts


# --- in progress, lock takeover ---------------------------------------------------------


def _claim(account_id, key, body, *, lock_s, now=None):
    with metering.db.connection():
        return idempotency.claim(
            account_id, key, idempotency.request_hash("POST", ECHO, body),
            now=now or utcnow(), ttl_s=24 * 3600, lock_s=lock_s)


def test_in_progress_claim_answers_409_with_retry_after(client, make_account):
    account_id, key = make_account(credits=5)
    body = {"message": "slow"}
    record_id = _claim(account_id, "busy", body, lock_s=60)
    assert isinstance(record_id, int)

    resp = _post(client, key, body, idem="busy")
    assert resp.status_code == 409
    assert resp.json["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
    assert resp.json["error"]["statusCode"] == 409
    retry = resp.headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= 60

    # a different request under the busy key is still a reuse, not a wait
    assert _post(client, key, {"message": "other"}, idem="busy").status_code == 422
    assert ledger_sum(account_id) == (5, 5)
    assert _debits(client, key) == []


def test_expired_lock_is_taken_over(client, make_account, config):
    account_id, key = make_account(credits=5)
    body = {"message": "orphan"}
    _claim(account_id, "orphan", body, lock_s=30)  # a process that crashed mid-request

    assert _post(client, key, body, idem="orphan").status_code == 409
    later = _shifted(config, dt.timedelta(seconds=31))
    resp = _post(later, key, body, idem="orphan")
    assert resp.status_code == 200, resp.text
    assert "Idempotent-Replayed" not in resp.headers
    receipt = resp.json["meta"]["txnReceipt"]

    replay = _post(client, key, body, idem="orphan")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json["meta"]["txnReceipt"] == receipt
    assert ledger_sum(account_id) == (4, 4)
    assert _debits(client, key) == [receipt]


# --- client_reference_id, per-account keys, release on failure, key format --------------


def test_client_reference_id_works_like_the_header(client, make_account):
    account_id, key = make_account(credits=5)
    body = {"message": "zap", "client_reference_id": "zap-run-42"}
    first = _post(client, key, body)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    again = _post(client, key, body)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["meta"]["txnReceipt"] == first.json["meta"]["txnReceipt"]
    assert again.json["data"] == first.json["data"]

    changed = _post(client, key, {**body, "message": "zap!"})
    assert changed.status_code == 422
    assert changed.json["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"

    other = _post(client, key, {**body, "client_reference_id": "zap-run-43"})
    assert other.status_code == 200 and "Idempotent-Replayed" not in other.headers
    assert ledger_sum(account_id) == (3, 3)

    # the longest reference the schema accepts is honoured too
    long_ref = {"message": "long", "client_reference_id": "r" * 255}
    assert _post(client, key, long_ref).status_code == 200
    assert _post(client, key, long_ref).headers.get("Idempotent-Replayed") == "true"
    assert ledger_sum(account_id) == (2, 2)

    # the same rules as the header: printable ASCII, at most 255 characters
    for bad in ("tab\there", "r" * 256):
        resp = _post(client, key, {"message": "m", "client_reference_id": bad})
        assert resp.status_code == 400, repr(bad)
        assert resp.json["error"]["code"] == "INVALID_REQUEST"
        assert [d["field"] for d in resp.json["error"]["details"]] == ["client_reference_id"]
    # a header key equal to a reference is a different key (separate namespaces)
    hdr = _post(client, key, {"message": "zap", "client_reference_id": "zap-run-42"},
                idem="zap-run-42")
    assert hdr.status_code == 200 and "Idempotent-Replayed" not in hdr.headers
    assert ledger_sum(account_id) == (1, 1)


def test_keys_are_per_account(client, make_account):
    a_id, a_key = make_account(credits=5)
    b_id, b_key = make_account(credits=5)
    body = {"message": "shared"}
    a = _post(client, a_key, body, idem="same-key")
    b = _post(client, b_key, body, idem="same-key")
    assert a.status_code == b.status_code == 200
    assert "Idempotent-Replayed" not in a.headers and "Idempotent-Replayed" not in b.headers
    assert a.json["meta"]["txnReceipt"] != b.json["meta"]["txnReceipt"]
    assert ledger_sum(a_id) == (4, 4) and ledger_sum(b_id) == (4, 4)
    # each account's record binds its own body: b's key is now bound to b's request
    assert _post(client, b_key, {"message": "x"}, idem="same-key").status_code == 422
    assert _post(client, a_key, body, idem="same-key").headers["Idempotent-Replayed"] == "true"


def test_failed_request_releases_the_key(client, make_account):
    account_id, key = make_account(credits=0)
    body = {"message": "retry me"}
    refused = _post(client, key, body, idem="pay-1")
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert _records(account_id) == []

    grant = client.simulate_post(f"/admin/accounts/{account_id}/credits",
                                 json={"amount": 2}, headers=ADMIN)
    assert grant.status_code == 201
    ok = _post(client, key, body, idem="pay-1")
    assert ok.status_code == 200 and "Idempotent-Replayed" not in ok.headers
    assert ledger_sum(account_id) == (1, 1)

    invalid = _post(client, key, {"uppercase": "yes"}, idem="pay-2")
    assert invalid.status_code == 400 and invalid.json["error"]["code"] == "INVALID_REQUEST"
    fixed = _post(client, key, body, idem="pay-2")
    assert fixed.status_code == 200 and "Idempotent-Replayed" not in fixed.headers
    assert ledger_sum(account_id) == (0, 0)
    assert len(_debits(client, key)) == 2


def test_key_format_is_checked(client, make_account):
    account_id, key = make_account(credits=5)
    for bad in ("k" * 256, "tab\there", "bell\x07", "caf\u00e9"):
        resp = _post(client, key, {"message": "m"}, idem=bad)
        assert resp.status_code == 400, repr(bad)
        err = resp.json["error"]
        assert err["code"] == "INVALID_REQUEST"
        assert "txnReceipt" not in resp.json["meta"]
    assert ledger_sum(account_id) == (5, 5)

    longest = "k" * 255
    assert _post(client, key, {"message": "m"}, idem=longest).status_code == 200
    again = _post(client, key, {"message": "m"}, idem=longest)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _post(client, key, {"message": "m"}, idem="with spaces ~!@#").status_code == 200
    assert ledger_sum(account_id) == (3, 3)


# --- 24-hour retention ------------------------------------------------------------------


def test_records_expire_after_24_hours(client, make_account, config):
    account_id, key = make_account(credits=5)
    body = {"message": "daily"}
    first = _post(client, key, body, idem="daily")
    assert first.status_code == 200

    almost = _post(_shifted(config, dt.timedelta(hours=23)), key, body, idem="daily")
    assert almost.headers.get("Idempotent-Replayed") == "true"

    tomorrow = _shifted(config, dt.timedelta(hours=25))
    fresh = _post(tomorrow, key, body, idem="daily")
    assert fresh.status_code == 200 and "Idempotent-Replayed" not in fresh.headers
    assert fresh.json["meta"]["txnReceipt"] != first.json["meta"]["txnReceipt"]
    # an expired record is not a reuse either: another body under the key runs fresh
    fresh2 = _post(_shifted(config, dt.timedelta(hours=50)), key, {"message": "x"}, idem="daily")
    assert fresh2.status_code == 200 and "Idempotent-Replayed" not in fresh2.headers
    assert ledger_sum(account_id) == (2, 2)
    assert len(_debits(client, key)) == 3


def test_purge_expired_deletes_only_old_records(client, make_account):
    account_id, key = make_account(credits=5)
    for i in range(3):
        assert _post(client, key, {"message": "p"}, idem=f"p{i}").status_code == 200
    assert len(_records(account_id)) == 3

    with metering.db.connection():
        assert idempotency.purge_expired(utcnow()) == 0
        assert idempotency.purge_expired(utcnow() + dt.timedelta(hours=25)) == 3
    assert _records(account_id) == []
    again = _post(client, key, {"message": "p"}, idem="p0")
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert ledger_sum(account_id) == (1, 1)


def test_gateway_cleanup_command_purges_and_prints_count(client, make_account, config):
    account_id, key = make_account(credits=5)
    yesterday = _shifted(config, -dt.timedelta(hours=25))
    for i in range(2):
        assert _post(yesterday, key, {"message": "old"}, idem=f"old{i}").status_code == 200
    assert _post(client, key, {"message": "new"}, idem="new").status_code == 200
    assert len(_records(account_id)) == 3

    env = {**os.environ, "DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url,
           "REDIS_PREFIX": config.redis_prefix, "DATA_DIR": str(config.data_dir),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "cleanup"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "purged 2 expired idempotency records" in proc.stdout

    assert [r.key for r in _records(account_id)] == ["new"]
    replay = _post(client, key, {"message": "new"}, idem="new")
    assert replay.headers["Idempotent-Replayed"] == "true"
    fresh = _post(client, key, {"message": "old"}, idem="old0")
    assert fresh.status_code == 200 and "Idempotent-Replayed" not in fresh.headers
    assert ledger_sum(account_id) == (1, 1)


def test_creating_posts_replay_their_first_answer_without_the_secret(lclient, make_account):
    """CONTRACT 5 on the POSTs that create or change something besides actions: a retried
    hook subscription, webhook endpoint or cancel with its key makes nothing twice; a
    secret shown once is not kept in the record, so the replay comes without it."""
    account_id, key = make_account(credits=5)
    headers = {**bearer(key), "Idempotency-Key": "sub-1"}
    body = {"target_url": "http://127.0.0.1:9/hook", "event": "composition.completed"}
    first = lclient.simulate_post("/zapier/v1/hooks", headers=headers, json=body)
    again = lclient.simulate_post("/zapier/v1/hooks", headers=headers, json=body)
    assert first.status_code == again.status_code == 201, (first.text, again.text)
    assert first.json["data"]["secret"].startswith("whsec_")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json["data"]["id"] == first.json["data"]["id"]
    assert "secret" not in again.json["data"]
    other = lclient.simulate_post("/zapier/v1/hooks", headers=headers,
                                  json={**body, "event": "post.created"})
    assert other.status_code == 422 and other.json["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    listed = lclient.simulate_get("/zapier/v1/hooks", headers=bearer(key)).json["data"]
    assert [h["id"] for h in listed["items"]] == [first.json["data"]["id"]]
    # a refused request releases its key: nothing was made, the right body then works
    bad = lclient.simulate_post("/zapier/v1/hooks", json={"target_url": "ftp://x", "event":
                                "composition.completed"},
                                headers={**bearer(key), "Idempotency-Key": "sub-2"})
    assert bad.status_code == 400
    fixed = lclient.simulate_post("/zapier/v1/hooks", json=body,
                                  headers={**bearer(key), "Idempotency-Key": "sub-2"})
    assert fixed.status_code == 201 and "secret" not in fixed.json["data"]  # not the first

    ep = {"url": "http://127.0.0.1:9/endpoint", "events": ["composition.completed"]}
    made = lclient.simulate_post("/zapier/v1/webhook-endpoints", json=ep,
                                 headers={**bearer(key), "Idempotency-Key": "ep-1"})
    replay = lclient.simulate_post("/zapier/v1/webhook-endpoints", json=ep,
                                   headers={**bearer(key), "Idempotency-Key": "ep-1"})
    assert made.status_code == replay.status_code == 201, made.text
    assert made.json["data"]["secret"] and "secret" not in replay.json["data"]
    assert replay.json["data"]["id"] == made.json["data"]["id"]
    endpoints = lclient.simulate_get("/zapier/v1/webhook-endpoints", headers=bearer(key))
    assert len(endpoints.json["data"]["items"]) == 1

    queued = lclient.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                   json={"message": "hi"}, headers=bearer(key))
    assert queued.status_code == 202, queued.text
    uid = queued.json["data"]["composition"]["uid"]
    cancel = {**bearer(key), "Idempotency-Key": "cancel-1"}
    first_cancel = lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel",
                                         headers=cancel)
    retried = lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=cancel)
    assert first_cancel.status_code == retried.status_code == 200, retried.text
    assert retried.headers.get("Idempotent-Replayed") == "true"
    assert retried.json["data"] == first_cancel.json["data"]
    assert first_cancel.json["data"]["composition"]["status"] == "cancelled"
    unkeyed = lclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=bearer(key))
    assert unkeyed.status_code == 409  # without a key, an ended composition is a conflict
    assert ledger_sum(account_id) == (5, 5)  # the cancel refunded the one credit, once
