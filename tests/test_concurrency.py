"""No overspend (CONTRACT 4): many concurrent debits from real threads against a real
gunicorn with two worker processes; exactly as many succeed as the balance pays for,
each with its own receipt, and the balance always equals the ledger's sum."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import ADMIN, bearer, ledger_sum
from metering import db as dbmod
from metering.models import LedgerEntry

pytestmark = pytest.mark.slow


def _unthrottle(client, account_ids):
    """A plan far above the burst so only credits decide who gets through."""
    plan = "bulk" + uuid.uuid4().hex[:8]
    resp = client.simulate_put(f"/admin/plans/{plan}", headers=ADMIN,
                               json={"perMinute": 100000, "perDay": 1000000})
    assert resp.status_code == 200, resp.text
    for account_id in account_ids:
        resp = client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN,
                                   json={"plan": plan})
        assert resp.status_code == 200, resp.text


def _burst(url, calls, threads=32):
    """POST every ``(key, body)`` in ``calls`` from ``threads`` threads, released together."""
    local = threading.local()
    barrier = threading.Barrier(threads)

    def post(call):
        key, body = call
        if not hasattr(local, "session"):
            local.session = requests.Session()
            barrier.wait(timeout=20)
        r = local.session.post(url + "/zapier/v1/echo", json=body, headers=bearer(key),
                               timeout=30)
        return key, r.status_code, r.json()

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, calls))


def _debit_rows(account_id):
    with dbmod.connection():
        return list(LedgerEntry.select().where((LedgerEntry.account == account_id)
                                               & (LedgerEntry.kind == "debit")))


def _check_outcome(results, account_id, credits, price):
    successes = [body for _, status, body in results if status == 200]
    refusals = [body for _, status, body in results if status != 200]
    paid = credits // price
    assert len(successes) == paid, [s for _, s, _ in results]
    for body in refusals:
        assert body["success"] is False
        assert body["error"]["code"] == "INSUFFICIENT_CREDITS", body
        assert body["error"]["statusCode"] == 403
        assert "txnReceipt" not in body["meta"]
    receipts = [body["meta"]["txnReceipt"] for body in successes]
    assert len(set(receipts)) == paid
    assert all(r.startswith("txn_") for r in receipts)
    assert all(body["meta"]["creditsUsed"] == price for body in successes)
    # each debit saw its own balance: the balances after are all distinct
    after = sorted(body["meta"]["availableCredit"] for body in successes)
    assert after == sorted(credits - price * (i + 1) for i in range(paid))
    rows = _debit_rows(account_id)
    assert sorted(row.receipt for row in rows) == sorted(receipts)
    assert all(row.amount == -price for row in rows)
    left = credits - paid * price
    assert ledger_sum(account_id) == (left, left)


def test_no_overspend_under_concurrent_debits(client, make_account, server):
    k, n = 25, 300
    account_id, key = make_account(credits=k)
    _unthrottle(client, [account_id])
    results = _burst(server, [(key, {"message": f"m{i}"}) for i in range(n)])
    _check_outcome(results, account_id, k, price=1)
    assert ledger_sum(account_id) == (0, 0)


def test_no_overspend_with_an_operator_price(client, make_account, server):
    price, credits, n = 4, 50, 120  # 12 debits fit; 2 credits are left over
    resp = client.simulate_put("/admin/prices/echo", headers=ADMIN, json={"credits": price})
    assert resp.status_code == 200, resp.text
    try:
        account_id, key = make_account(credits=credits)
        _unthrottle(client, [account_id])
        results = _burst(server, [(key, {"message": f"m{i}"}) for i in range(n)])
        _check_outcome(results, account_id, credits, price)
        assert ledger_sum(account_id) == (2, 2)
    finally:
        resp = client.simulate_put("/admin/prices/echo", headers=ADMIN, json={"credits": 1})
        assert resp.status_code == 200


def test_no_overspend_across_several_accounts_at_once(client, make_account, server):
    budgets = [5, 12, 20, 25, 0]
    accounts = [make_account(credits=c) for c in budgets]
    _unthrottle(client, [account_id for account_id, _ in accounts])
    calls = [(key, {"message": f"{key[-6:]}-{i}"}) for _, key in accounts for i in range(70)]
    random.Random(7).shuffle(calls)
    results = _burst(server, calls)
    assert len(results) == 70 * len(accounts)
    for (account_id, key), credits in zip(accounts, budgets, strict=True):
        mine = [r for r in results if r[0] == key]
        _check_outcome(mine, account_id, credits, price=1)
        assert ledger_sum(account_id) == (0, 0)
    all_receipts = [body["meta"]["txnReceipt"] for _, status, body in results if status == 200]
    assert len(all_receipts) == len(set(all_receipts)) == sum(budgets)
