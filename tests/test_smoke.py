"""The paid path end to end through the real app, PostgreSQL and Redis."""

from conftest import bearer, ledger_sum


def test_echo_debits_and_returns_receipt(client, make_account):
    account_id, key = make_account(credits=3)
    resp = client.simulate_post("/zapier/v1/echo", json={"message": "hi"}, headers=bearer(key))
    assert resp.status_code == 200
    body = resp.json
    assert body["success"] is True
    assert body["data"]["message"] == "hi"
    meta = body["meta"]
    assert meta["action"] == "echo" and meta["creditsUsed"] == 1
    assert meta["availableCredit"] == 2 and meta["txnReceipt"].startswith("txn_")
    assert resp.headers["X-Request-ID"] == meta["requestId"]
    assert ledger_sum(account_id) == (2, 2)
