"""Credits (CONTRACT 4 and 7): balance, ledger pages, receipts, refunds, the ledger invariant.

Everything goes through the real app, PostgreSQL and Redis; the refund race runs real
threads against the session's gunicorn (two worker processes).
"""

from __future__ import annotations

import threading
from urllib.parse import parse_qs, urlsplit

import requests

from conftest import ADMIN, bearer, ledger_sum

TXNS = "/zapier/v1/credits/transactions"


def _grant(client, account_id, amount, reason="test"):
    resp = client.simulate_post(f"/admin/accounts/{account_id}/credits",
                                json={"amount": amount, "reason": reason}, headers=ADMIN)
    return resp


def _echo(client, key, message="hi", headers=None):
    return client.simulate_post("/zapier/v1/echo", json={"message": message},
                                headers={**bearer(key), **(headers or {})})


def _follow(client, key, url):
    """GET a ``data.next`` URL (http://gateway.test/...) against the in-process app."""
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("http", "gateway.test")
    return client.simulate_get(parts.path, query_string=parts.query, headers=bearer(key))


def _all_pages(client, key, first_query):
    resp = client.simulate_get(TXNS, query_string=first_query, headers=bearer(key))
    pages = []
    while True:
        assert resp.status_code == 200, resp.text
        pages.append(resp.json["data"])
        nxt = resp.json["data"]["next"]
        if nxt is None:
            return pages
        resp = _follow(client, key, nxt)


# --- balance ---------------------------------------------------------------------------


def test_balance_matches_grants_and_debits(client, make_account):
    account_id, key = make_account(credits=7)
    resp = client.simulate_get("/zapier/v1/credits", headers=bearer(key))
    assert resp.status_code == 200
    assert resp.json["success"] is True
    assert resp.json["data"]["balance"] == 7
    assert resp.json["data"]["availableCredit"] == 7

    assert _echo(client, key).status_code == 200
    assert _grant(client, account_id, 10).status_code == 201
    resp = client.simulate_get("/zapier/v1/credits", headers=bearer(key))
    assert resp.json["data"]["balance"] == 16
    assert ledger_sum(account_id) == (16, 16)


def test_credits_needs_a_caller(client):
    resp = client.simulate_get("/zapier/v1/credits")
    assert resp.status_code == 401
    assert resp.json["success"] is False


# --- transactions: order, paging, filters ------------------------------------------------


def test_transactions_newest_first_with_views(client, make_account):
    account_id, key = make_account(credits=0)
    for amount in (5, 6, 7):
        assert _grant(client, account_id, amount, reason=f"r{amount}").status_code == 201
    debit = _echo(client, key, "x").json["meta"]["txnReceipt"]

    resp = client.simulate_get(TXNS, headers=bearer(key))
    assert resp.status_code == 200
    data = resp.json["data"]
    assert data["next"] is None
    items = data["items"]
    assert [i["amount"] for i in items] == [-1, 7, 6, 5]
    assert [i["balanceAfter"] for i in items] == [17, 18, 11, 5]
    assert [i["type"] for i in items] == ["debit", "grant", "grant", "grant"]
    first = items[0]
    assert first["id"] == first["txnReceipt"] == debit
    assert first["action"] == "echo" and first["refundOf"] is None
    assert first["createdAt"].endswith("Z")
    assert items[1]["reason"] == "r7"
    assert all(i["txnReceipt"].startswith("txn_") for i in items)


def test_cursor_pagination_sees_every_row_once_in_order(client, make_account):
    account_id, key = make_account(credits=0)
    n = 23
    for amount in range(1, n + 1):
        assert _grant(client, account_id, amount).status_code == 201

    pages = _all_pages(client, key, "limit=5")
    assert [len(p["items"]) for p in pages] == [5, 5, 5, 5, 3]
    seen = [i["amount"] for p in pages for i in p["items"]]
    assert seen == list(range(n, 0, -1))  # newest first, each exactly once
    receipts = [i["txnReceipt"] for p in pages for i in p["items"]]
    assert len(set(receipts)) == n
    for page in pages[:-1]:
        query = parse_qs(urlsplit(page["next"]).query)
        assert query["limit"] == ["5"] and len(query["cursor"]) == 1

    # rows written while paging do not shift the pages already being walked
    first = client.simulate_get(TXNS, query_string="limit=10", headers=bearer(key)).json["data"]
    assert _grant(client, account_id, 1000).status_code == 201
    rest = _follow(client, key, first["next"]).json["data"]
    assert [i["amount"] for i in first["items"] + rest["items"]] == list(range(n, 3, -1))


def test_limit_default_and_maximum(client, make_account):
    account_id, key = make_account(credits=0)
    for _ in range(55):
        assert _grant(client, account_id, 1).status_code == 201
    page = client.simulate_get(TXNS, headers=bearer(key)).json["data"]
    assert len(page["items"]) == 50
    assert page["next"].startswith("http://gateway.test/zapier/v1/credits/transactions?")
    assert len(_follow(client, key, page["next"]).json["data"]["items"]) == 5

    page = client.simulate_get(TXNS, query_string="limit=100", headers=bearer(key)).json["data"]
    assert len(page["items"]) == 55 and page["next"] is None


def test_bad_limit_and_cursor_are_invalid_request(client, make_account):
    _, key = make_account(credits=1)
    for query in ("limit=0", "limit=101", "limit=-3", "limit=abc", "cursor=%%%not-a-cursor",
                  "cursor=Zm9vOmJhcg", "type=bogus"):
        resp = client.simulate_get(TXNS, query_string=query, headers=bearer(key))
        assert resp.status_code == 400, query
        err = resp.json["error"]
        assert err["code"] == "INVALID_REQUEST" and err["statusCode"] == 400, query
        assert resp.json["success"] is False
        assert "Traceback" not in resp.text


def test_type_filter_and_next_keeps_it(client, make_account):
    account_id, key = make_account(credits=0)
    for amount in range(1, 8):
        assert _grant(client, account_id, amount).status_code == 201
    debits = [_echo(client, key, f"m{i}").json["meta"]["txnReceipt"] for i in range(4)]

    pages = _all_pages(client, key, "type=debit&limit=3")
    items = [i for p in pages for i in p["items"]]
    assert [i["txnReceipt"] for i in items] == debits[::-1]
    assert all(i["type"] == "debit" for i in items)
    assert parse_qs(urlsplit(pages[0]["next"]).query)["type"] == ["debit"]

    grants = client.simulate_get(TXNS, query_string="type=grant", headers=bearer(key))
    assert [i["amount"] for i in grants.json["data"]["items"]] == list(range(7, 0, -1))
    none = client.simulate_get(TXNS, query_string="type=refund", headers=bearer(key))
    assert none.status_code == 200 and none.json["data"] == {"items": [], "next": None}


# --- receipts and tenant isolation ------------------------------------------------------


def test_receipt_owner_sees_it_others_get_plain_not_found(client, make_account):
    a_id, a_key = make_account(credits=5)
    _, b_key = make_account(credits=5)
    receipt = _echo(client, a_key).json["meta"]["txnReceipt"]

    mine = client.simulate_get(f"/zapier/v1/receipts/{receipt}", headers=bearer(a_key))
    assert mine.status_code == 200
    assert mine.json["data"]["txnReceipt"] == receipt
    assert mine.json["data"]["type"] == "debit" and mine.json["data"]["amount"] == -1
    assert mine.json["data"]["balanceAfter"] == 4

    theirs = client.simulate_get(f"/zapier/v1/receipts/{receipt}", headers=bearer(b_key))
    unknown = client.simulate_get("/zapier/v1/receipts/txn_" + "0" * 24, headers=bearer(b_key))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json["error"] == unknown.json["error"]
    assert theirs.json["error"]["code"] == "NOT_FOUND"
    assert theirs.json["error"]["statusCode"] == 404
    assert set(theirs.json) == set(unknown.json) == {"success", "error", "meta"}
    assert set(theirs.json["meta"]) == set(unknown.json["meta"])
    assert receipt not in theirs.text and a_id not in theirs.text

    b_rows = client.simulate_get(TXNS, query_string="limit=100", headers=bearer(b_key))
    b_receipts = {i["txnReceipt"] for i in b_rows.json["data"]["items"]}
    a_rows = client.simulate_get(TXNS, query_string="limit=100", headers=bearer(a_key))
    a_receipts = {i["txnReceipt"] for i in a_rows.json["data"]["items"]}
    assert receipt in a_receipts and receipt not in b_receipts
    assert not a_receipts & b_receipts
    assert len(b_receipts) == 1  # only b's own starting grant


def test_cursor_from_another_account_shows_only_own_rows(client, make_account):
    a_id, a_key = make_account(credits=0)
    for amount in range(1, 6):
        _grant(client, a_id, amount)
    _, b_key = make_account(credits=3)
    a_next = client.simulate_get(TXNS, query_string="limit=2", headers=bearer(a_key))
    cursor = parse_qs(urlsplit(a_next.json["data"]["next"]).query)["cursor"][0]
    resp = client.simulate_get(TXNS, query_string=f"cursor={cursor}", headers=bearer(b_key))
    assert resp.status_code == 200
    assert all(i["amount"] == 3 for i in resp.json["data"]["items"])


# --- refunds ------------------------------------------------------------------------------


def test_refund_is_applied_once_under_20_concurrent_admin_calls(client, make_account, server):
    account_id, key = make_account(credits=10)
    receipt = _echo(client, key).json["meta"]["txnReceipt"]
    assert ledger_sum(account_id) == (9, 9)

    barrier = threading.Barrier(20)
    results = []
    lock = threading.Lock()

    def refund():
        with requests.Session() as s:
            barrier.wait()
            r = s.post(f"{server}/admin/receipts/{receipt}/refund", json={"reason": "race"},
                       headers=ADMIN, timeout=30)
        with lock:
            results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=refund) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(results) == 20
    statuses = sorted(s for s, _ in results)
    assert statuses.count(201) == 1 and statuses.count(200) == 19, statuses
    refund_ids = {body["data"]["txnReceipt"] for _, body in results}
    assert len(refund_ids) == 1
    created = [body["data"] for s, body in results if s == 201][0]
    assert created["created"] is True and created["refundOf"] == receipt
    assert created["type"] == "refund" and created["amount"] == 1
    assert all(body["data"]["created"] is False for s, body in results if s == 200)

    assert ledger_sum(account_id) == (10, 10)
    refunds = client.simulate_get(TXNS, query_string="type=refund", headers=bearer(key))
    rows = refunds.json["data"]["items"]
    assert len(rows) == 1 and rows[0]["refundOf"] == receipt

    again = client.simulate_post(f"/admin/receipts/{receipt}/refund", json={}, headers=ADMIN)
    assert again.status_code == 200 and again.json["data"]["txnReceipt"] == created["txnReceipt"]
    assert ledger_sum(account_id) == (10, 10)


def test_refund_of_non_debit_or_unknown_receipt_is_404(client, make_account):
    account_id, key = make_account(credits=5)
    grant = _grant(client, account_id, 3).json["data"]["txnReceipt"]
    debit = _echo(client, key).json["meta"]["txnReceipt"]
    refund = client.simulate_post(f"/admin/receipts/{debit}/refund", json={}, headers=ADMIN)
    assert refund.status_code == 201
    refund_id = refund.json["data"]["txnReceipt"]

    for receipt in (grant, refund_id, "txn_" + "f" * 24):
        resp = client.simulate_post(f"/admin/receipts/{receipt}/refund", json={}, headers=ADMIN)
        assert resp.status_code == 404, receipt
        assert resp.json["error"]["code"] == "NOT_FOUND"
    assert ledger_sum(account_id) == (8, 8)


def test_refund_needs_admin_key(client, make_account):
    account_id, key = make_account(credits=5)
    debit = _echo(client, key).json["meta"]["txnReceipt"]
    resp = client.simulate_post(f"/admin/receipts/{debit}/refund", json={}, headers=bearer(key))
    assert resp.status_code in (401, 403)
    assert resp.json["success"] is False
    assert ledger_sum(account_id) == (4, 4)


# --- the ledger invariant, insufficient credits, free actions ----------------------------


def test_ledger_invariant_across_grants_adjustments_debits_refunds(client, make_account):
    account_id, key = make_account(credits=4)
    receipts = []
    for _ in range(3):
        resp = _echo(client, key)
        assert resp.status_code == 200
        receipts.append(resp.json["meta"]["txnReceipt"])
    assert _grant(client, account_id, 20, reason="top-up").status_code == 201
    adj = _grant(client, account_id, -5, reason="correction")
    assert adj.status_code == 201
    assert adj.json["data"]["type"] == "adjustment" and adj.json["data"]["balanceAfter"] == 16
    for receipt in receipts[:2]:
        resp = client.simulate_post(f"/admin/receipts/{receipt}/refund", json={}, headers=ADMIN)
        assert resp.status_code == 201
    for _ in range(2):
        assert _echo(client, key).status_code == 200

    # an adjustment that would go below zero changes nothing
    too_much = _grant(client, account_id, -1000)
    assert too_much.status_code == 403
    assert too_much.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    zero = _grant(client, account_id, 0)
    assert zero.status_code == 400 and zero.json["error"]["code"] == "INVALID_REQUEST"

    expected = 4 - 3 + 20 - 5 + 2 - 2
    assert ledger_sum(account_id) == (expected, expected)
    rows = client.simulate_get(TXNS, query_string="limit=100", headers=bearer(key))
    items = rows.json["data"]["items"]
    assert sum(i["amount"] for i in items) == expected
    assert items[0]["balanceAfter"] == expected
    assert len(items) == 1 + 3 + 1 + 1 + 2 + 2
    balance = client.simulate_get("/zapier/v1/credits", headers=bearer(key))
    assert balance.json["data"]["balance"] == expected


def test_insufficient_credits_writes_nothing(client, make_account):
    account_id, key = make_account(credits=0)
    resp = _echo(client, key)
    assert resp.status_code == 403
    err = resp.json["error"]
    assert err["code"] == "INSUFFICIENT_CREDITS" and err["statusCode"] == 403
    assert "creditsUsed" not in resp.json["meta"] and "txnReceipt" not in resp.json["meta"]
    assert ledger_sum(account_id) == (0, 0)
    rows = client.simulate_get(TXNS, headers=bearer(key)).json["data"]["items"]
    assert rows == []

    # at the exact price it goes through; one more is refused again
    _grant(client, account_id, 1)
    assert _echo(client, key).status_code == 200
    assert _echo(client, key).status_code == 403
    assert ledger_sum(account_id) == (0, 0)
    assert len(client.simulate_get(TXNS, headers=bearer(key)).json["data"]["items"]) == 2


def test_free_action_estimate_cost_writes_no_ledger_row(client, make_account):
    account_id, key = make_account(credits=3)
    resp = client.simulate_post("/zapier/v1/estimate-cost", json={"action": "echo"},
                                headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json["data"] == {"action": "echo", "credits": 1, "availableCredit": 3,
                                 "affordable": True}
    meta = resp.json["meta"]
    assert meta["action"] == "estimate-cost"
    for field in ("txnReceipt", "creditsUsed", "availableCredit"):
        assert field not in meta
    assert ledger_sum(account_id) == (3, 3)
    assert len(client.simulate_get(TXNS, headers=bearer(key)).json["data"]["items"]) == 1

    # the operator's price applies at once, and a balance below it is not affordable
    price = client.simulate_put("/admin/prices/echo", json={"credits": 5}, headers=ADMIN)
    assert price.status_code == 200
    resp = client.simulate_post("/zapier/v1/estimate-cost", json={"action": "echo"},
                                headers=bearer(key))
    assert resp.json["data"]["credits"] == 5 and resp.json["data"]["affordable"] is False

    broke_id, broke_key = make_account(credits=0)
    resp = client.simulate_post("/zapier/v1/estimate-cost", json={"action": "estimate-cost"},
                                headers=bearer(broke_key))
    assert resp.status_code == 200
    assert resp.json["data"]["credits"] == 0 and resp.json["data"]["affordable"] is True
    assert ledger_sum(broke_id) == (0, 0)

    unknown = client.simulate_post("/zapier/v1/estimate-cost", json={"action": "nope"},
                                   headers=bearer(key))
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "INVALID_ACTION"
