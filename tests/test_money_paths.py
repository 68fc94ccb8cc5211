"""No charge without an answer (issue 10): every path where money moves ends in an envelope
that matches the ledger, and an ``Idempotency-Key`` never pins a failure the caller was
told to retry.

- A result that cannot be sent (a lone UTF-16 surrogate) rolls its debit back and answers
  a 500 envelope; the key stays free, so a retry is not a replayed empty 500.
- An async call while the queue is down charges nothing (or refunds, if the queue fails
  after the commit) and leaves its key free for a retry that really runs.
- Admin credit grants and refunds honour ``Idempotency-Key`` like action calls.

Everything goes through the real app, PostgreSQL and Redis; the unreachable and the full
queue are real redis-servers (stopped, or with ``maxmemory 1``).
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import requests
from falcon.testing import TestClient

import metering.db
from actions.registry import Action, Registry
from actions.shipped import ACTIONS
from async_support import burst, poll
from conftest import ADMIN, PrivateRedis, bearer, ledger_sum, make_app
from core.clock import utcnow
from metering import idempotency
from metering.models import IdempotencyRecord, LedgerEntry

ECHO = "/zapier/v1/echo"
ECHO_ASYNC = "/zapier/v1/echo-async"


def _records(account_id):
    with metering.db.connection():
        return list(IdempotencyRecord.select().where(IdempotencyRecord.account == account_id))


def _ledger(account_id):
    with metering.db.connection():
        return [(r.kind, r.amount, r.receipt, r.refund_of) for r in LedgerEntry.select()
                .where(LedgerEntry.account == account_id).order_by(LedgerEntry.id)]


def _assert_envelope(resp, status, code):
    assert resp.status_code == status, (resp.status_code, resp.content)
    assert resp.content, "an empty body: the envelope was lost"
    body = resp.json
    assert body["success"] is False
    assert body["error"]["code"] == code and body["error"]["statusCode"] == status
    assert body["meta"]["requestId"] == resp.headers["X-Request-ID"]
    assert "txnReceipt" not in body["meta"] and "creditsUsed" not in body["meta"]
    return body


# --- results that cannot be sent ----------------------------------------------------------


def _unsendable(ctx, data):
    return {"text": "half a pair: \ud800"}  # legal in Python and as a JSON escape; not UTF-8


TEST_ACTIONS = (
    Action(name="test-unsendable", title="Unsendable (test)", description="test only",
           price=2, fields=(), perform=_unsendable),
    Action(name="test-unsendable-free", title="Unsendable, free (test)",
           description="test only", price=0, fields=(), perform=_unsendable),
)


@pytest.fixture(scope="module")
def uclient(config, schema):
    """The app with the shipped actions plus two whose result is a lone surrogate."""
    registry = Registry()
    for action in ACTIONS + TEST_ACTIONS:
        registry.register(action)
    return TestClient(make_app(config, registry=registry))


def test_unsendable_result_rolls_back_the_debit_and_answers_an_envelope(uclient, make_account):
    account_id, key = make_account(credits=5)
    path = "/zapier/v1/test-unsendable"
    headers = {**bearer(key), "Idempotency-Key": "unsendable-1"}
    first = uclient.simulate_post(path, json={}, headers=headers)
    _assert_envelope(first, 500, "INTERNAL_ERROR")
    assert ledger_sum(account_id) == (5, 5)
    assert [row[0] for row in _ledger(account_id)] == ["grant"]  # no debit, no refund
    assert _records(account_id) == []  # the claim was released, nothing stored to replay

    # the same request with the same key runs again (and fails again): not a replay
    again = uclient.simulate_post(path, json={}, headers=headers)
    _assert_envelope(again, 500, "INTERNAL_ERROR")
    assert "Idempotent-Replayed" not in again.headers
    # and without a key, a retry is not another charge either
    bare = uclient.simulate_post(path, json={}, headers=bearer(key))
    _assert_envelope(bare, 500, "INTERNAL_ERROR")
    assert ledger_sum(account_id) == (5, 5)
    assert _records(account_id) == []

    # the key was never pinned: a working request under it runs and is charged once
    ok = uclient.simulate_post(ECHO, json={"message": "fine"}, headers=headers)
    assert ok.status_code == 200 and "Idempotent-Replayed" not in ok.headers
    assert ledger_sum(account_id) == (4, 4)


def test_unencodable_body_without_a_charge_still_gets_an_envelope(uclient, make_account):
    """The free path writes nothing; the render guard in gateway/errors.py still turns a
    body Falcon cannot encode into an envelope instead of an empty 500."""
    account_id, key = make_account(credits=1)
    resp = uclient.simulate_post("/zapier/v1/test-unsendable-free", json={},
                                 headers=bearer(key))
    _assert_envelope(resp, 500, "INTERNAL_ERROR")
    # with a key, the record would have to be stored: refused in the transaction too
    keyed = uclient.simulate_post("/zapier/v1/test-unsendable-free", json={},
                                  headers={**bearer(key), "Idempotency-Key": "free-1"})
    _assert_envelope(keyed, 500, "INTERNAL_ERROR")
    assert _records(account_id) == []
    assert ledger_sum(account_id) == (1, 1)


def test_lone_surrogate_in_echo_is_400_and_charges_nothing(client, make_account):
    """The original attack: ``{"message":"\\ud800"}`` is valid JSON text but not Unicode."""
    account_id, key = make_account(credits=3)
    raw = b'{"message":"\\ud800"}'
    headers = {**bearer(key), "Content-Type": "application/json",
               "Idempotency-Key": "surrogate-1"}
    for _ in range(2):  # a retry is the same clean refusal, never a replayed empty 500
        resp = client.simulate_post(ECHO, body=raw, headers=headers)
        body = _assert_envelope(resp, 400, "INVALID_REQUEST")
        assert "Idempotent-Replayed" not in resp.headers
        assert body["error"].get("details"), body
    # paired surrogates (a real astral character) are fine and echoed back intact
    paired = client.simulate_post(ECHO, body=b'{"message":"\\ud83d\\ude00"}',
                                  headers={**bearer(key), "Content-Type": "application/json"})
    assert paired.status_code == 200, paired.text
    assert paired.json["data"]["message"] == "\U0001F600"
    assert ledger_sum(account_id) == (2, 2)
    assert _records(account_id) == []


# --- the queue is down ----------------------------------------------------------------------


@pytest.fixture
def stopped_redis():
    """The URL of a redis-server that was started and then killed: nothing listens."""
    server = PrivateRedis().start()
    server.kill()
    return server.url


@pytest.fixture
def full_redis():
    """A live redis-server that answers PING but refuses every write (maxmemory 1)."""
    server = PrivateRedis("--maxmemory", "1", "--maxmemory-policy", "noeviction").start()
    yield server.url
    server.kill()


def _post_async(client, key, body, idem):
    return client.simulate_post(ECHO_ASYNC, json=body, query_string="wait=0",
                                headers={**bearer(key), "Idempotency-Key": idem})


def _retry_really_runs(lclient, lconfig, account_id, key, body, idem):
    """The same request, same key, on a gateway whose queue works: a fresh 202 and a job
    that a worker runs to completion, charged once; a later duplicate replays it."""
    retry = _post_async(lclient, key, body, idem)
    assert retry.status_code == 202, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    uid = retry.json["data"]["composition"]["uid"]
    burst(lconfig)
    comp = poll(lclient, key, uid)
    assert comp["status"] == "completed", comp
    replay = _post_async(lclient, key, body, idem)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json["data"]["composition"]["uid"] == uid
    assert replay.json["meta"]["txnReceipt"] == retry.json["meta"]["txnReceipt"]
    return uid


def test_async_call_while_queue_is_unreachable_charges_nothing_and_frees_the_key(
        lconfig, lclient, schema, make_account, stopped_redis):
    down = TestClient(make_app(lconfig.replace(redis_url=stopped_redis)))
    account_id, key = make_account(credits=5)
    body = {"message": "run me later"}
    for _ in range(2):  # a retry while it is still down is the same 503, not a replay
        resp = _post_async(down, key, body, "job-1")
        err = _assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")["error"]
        assert err["message"] == "The job queue is unavailable; nothing was charged"
        assert resp.headers["Retry-After"].isdigit()
        assert "Idempotent-Replayed" not in resp.headers
    assert [row[0] for row in _ledger(account_id)] == ["grant"]  # as the message says
    assert ledger_sum(account_id) == (5, 5)
    assert _records(account_id) == []

    _retry_really_runs(lclient, lconfig, account_id, key, body, "job-1")
    assert ledger_sum(account_id) == (4, 4)
    assert [row[0] for row in _ledger(account_id)] == ["grant", "debit"]


def test_queue_failing_after_the_debit_refunds_says_so_and_frees_the_key(
        lconfig, lclient, schema, make_account, full_redis):
    """PING answers but the enqueue is refused after the debit committed: the composition
    fails, the debit is refunded and the record discarded in one transaction."""
    full = TestClient(make_app(lconfig.replace(redis_url=full_redis)))
    account_id, key = make_account(credits=5)
    body = {"message": "queue full"}
    resp = _post_async(full, key, body, "job-2")
    err = _assert_envelope(resp, 503, "SERVICE_UNAVAILABLE")["error"]
    rows = _ledger(account_id)
    assert [row[0] for row in rows] == ["grant", "debit", "refund"]
    (_, _, debit, _), (_, amount, refund, refund_of) = rows[1], rows[2]
    assert amount == 1 and refund_of == debit
    assert err["message"] == \
        f"The job queue is unavailable; the debit was refunded (receipt {refund})"
    assert ledger_sum(account_id) == (5, 5)
    assert _records(account_id) == []
    failed = lclient.simulate_get("/zapier/v1/compositions", query_string="status=failed",
                                  headers=bearer(key)).json["data"]["items"]
    assert [(c["error"]["code"], c["refundReceipt"]) for c in failed] == \
        [("QUEUE_UNAVAILABLE", refund)]

    uid = _retry_really_runs(lclient, lconfig, account_id, key, body, "job-2")
    assert uid != failed[0]["uid"]
    assert ledger_sum(account_id) == (4, 4)
    assert [row[0] for row in _ledger(account_id)] == ["grant", "debit", "refund", "debit"]


# --- admin money changes honour Idempotency-Key --------------------------------------------


def _grant(client, account_id, body, idem=None):
    headers = dict(ADMIN)
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return client.simulate_post(f"/admin/accounts/{account_id}/credits", json=body,
                                headers=headers)


def test_admin_grant_with_a_key_is_granted_once(client, make_account):
    account_id, key = make_account(credits=0)
    body = {"amount": 50, "reason": "goodwill"}
    first = _grant(client, account_id, body, idem="grant-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    for _ in range(3):
        again = _grant(client, account_id, body, idem="grant-1")
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json["data"] == first.json["data"]
    assert ledger_sum(account_id) == (50, 50)

    reused = _grant(client, account_id, {"amount": 500, "reason": "goodwill"}, idem="grant-1")
    _assert_envelope(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    # the same key on another account is another request
    other_id, _ = make_account(credits=0)
    other = _grant(client, other_id, body, idem="grant-1")
    assert other.status_code == 201 and "Idempotent-Replayed" not in other.headers
    # an admin's key never collides with the account's own keys (separate namespace)
    echo = client.simulate_post(ECHO, json={"message": "m"},
                                headers={**bearer(key), "Idempotency-Key": "grant-1"})
    assert echo.status_code == 200 and "Idempotent-Replayed" not in echo.headers
    # without a key, every grant is a grant (as before)
    assert _grant(client, account_id, body).status_code == 201
    assert ledger_sum(account_id) == (99, 99) and ledger_sum(other_id) == (50, 50)


def test_failed_admin_grant_releases_the_key(client, make_account):
    account_id, _ = make_account(credits=3)
    refused = _grant(client, account_id, {"amount": -10}, idem="adjust-1")
    _assert_envelope(refused, 403, "INSUFFICIENT_CREDITS")
    invalid = _grant(client, account_id, {"amount": "ten"}, idem="adjust-2")
    _assert_envelope(invalid, 400, "INVALID_REQUEST")
    assert _records(account_id) == []
    missing = _grant(client, "acc_nonexistent", {"amount": 1}, idem="adjust-3")
    _assert_envelope(missing, 404, "NOT_FOUND")
    bad_key = _grant(client, account_id, {"amount": 1}, idem="tab\there")
    _assert_envelope(bad_key, 400, "INVALID_REQUEST")
    # the same key (and the same request) now really runs
    ok = _grant(client, account_id, {"amount": -2}, idem="adjust-1")
    assert ok.status_code == 201 and "Idempotent-Replayed" not in ok.headers
    assert ledger_sum(account_id) == (1, 1)


def test_admin_refund_with_a_key_replays_the_first_answer(client, make_account):
    account_id, key = make_account(credits=5)
    debit = client.simulate_post(ECHO, json={"message": "m"}, headers=bearer(key))
    receipt = debit.json["meta"]["txnReceipt"]
    path = f"/admin/receipts/{receipt}/refund"
    headers = {**ADMIN, "Idempotency-Key": "refund-1"}
    first = client.simulate_post(path, json={"reason": "sorry"}, headers=headers)
    assert first.status_code == 201 and first.json["data"]["created"] is True
    again = client.simulate_post(path, json={"reason": "sorry"}, headers=headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json["data"] == first.json["data"]
    reused = client.simulate_post(path, json={"reason": "other"}, headers=headers)
    _assert_envelope(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    # without a key the refund is still never made twice (the ledger's own rule)
    bare = client.simulate_post(path, json={}, headers=ADMIN)
    assert bare.status_code == 200 and bare.json["data"]["created"] is False
    assert ledger_sum(account_id) == (5, 5)
    # the record lives with the refunded account, in the admin namespace
    assert [r.key for r in _records(account_id)] == [idempotency.scoped_key("admin",
                                                                            "refund-1")]
    unknown = client.simulate_post("/admin/receipts/txn_nope/refund", json={},
                                   headers=headers)
    _assert_envelope(unknown, 404, "NOT_FOUND")


def test_admin_grant_in_progress_is_409(client, make_account):
    account_id, _ = make_account(credits=0)
    body = {"amount": 7}
    path = f"/admin/accounts/{account_id}/credits"
    with metering.db.connection():  # the first request, still running in another process
        idempotency.claim(account_id, idempotency.scoped_key("admin", "slow-grant"),
                          idempotency.request_hash("POST", path, body), now=utcnow(),
                          ttl_s=86400, lock_s=30)
    busy = _grant(client, account_id, body, idem="slow-grant")
    _assert_envelope(busy, 409, "IDEMPOTENCY_IN_PROGRESS")
    assert 1 <= int(busy.headers["Retry-After"]) <= 30
    assert ledger_sum(account_id) == (0, 0)
    # the lock of a crashed first request expires; then the grant is made, once
    with metering.db.connection():
        IdempotencyRecord.update(locked_until=utcnow() - dt.timedelta(seconds=1)).execute()
    taken = _grant(client, account_id, body, idem="slow-grant")
    assert taken.status_code == 201 and "Idempotent-Replayed" not in taken.headers
    assert ledger_sum(account_id) == (7, 7)


def test_concurrent_duplicate_admin_grants_grant_once(client, make_account, server):
    account_id, _ = make_account(credits=0)
    body = {"amount": 10, "reason": "race"}
    barrier = threading.Barrier(20)
    results, lock = [], threading.Lock()

    def call():
        with requests.Session() as s:
            barrier.wait()
            r = s.post(f"{server}/admin/accounts/{account_id}/credits", json=body, timeout=30,
                       headers={**ADMIN, "Idempotency-Key": "race-grant"})
        with lock:
            results.append(r)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    statuses = sorted(r.status_code for r in results)
    assert len(results) == 20 and set(statuses) <= {201, 409}, statuses
    granted = [r for r in results if r.status_code == 201]
    assert sum(r.headers.get("Idempotent-Replayed") != "true" for r in granted) == 1
    assert len({r.json()["data"]["txnReceipt"] for r in granted}) == 1
    for r in results:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "IDEMPOTENCY_IN_PROGRESS"
            assert r.headers["Retry-After"].isdigit()
    assert ledger_sum(account_id) == (10, 10)
    assert [row[0] for row in _ledger(account_id)] == ["grant"]
