"""Operator routes (CONTRACT 10) through the real app, and the same operations through the
``gateway`` command line run as a subprocess against the same PostgreSQL database, with
their effects checked over HTTP."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import uuid

import pytest

from conftest import ADMIN, ROOT, bearer, ledger_sum

ME = "/zapier/v1/me"
ECHO = "/zapier/v1/echo"
GATEWAY = str(ROOT / ".venv" / "bin" / "gateway")
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _name(prefix="u"):
    return prefix + uuid.uuid4().hex[:10]


def _error(resp, status, code):
    assert resp.status_code == status, resp.text
    assert resp.json["success"] is False
    assert resp.json["error"]["code"] == code
    assert resp.json["error"]["statusCode"] == status
    return resp.json["error"]


def _echo(client, key, message="hi"):
    return client.simulate_post(ECHO, json={"message": message}, headers=bearer(key))


def _ledger(client, key):
    resp = client.simulate_get("/zapier/v1/credits/transactions", headers=bearer(key))
    assert resp.status_code == 200
    return resp.json["data"]["items"]


# --- accounts --------------------------------------------------------------------------


def test_admin_creates_an_account_with_credits_and_a_key(client):
    username = _name()
    resp = client.simulate_post("/admin/accounts", headers=ADMIN,
                                json={"username": username, "credits": 12})
    assert resp.status_code == 201, resp.text
    data = resp.json["data"]
    assert data["username"] == username and data["id"].startswith("acct_")
    assert data["credits"] == 12 and data["plan"] == "default"
    assert data["api_key"].startswith("gwk_")
    me = client.simulate_get(ME, headers=bearer(data["api_key"])).json["data"]
    assert me["id"] == data["id"] and me["balance"] == 12
    items = _ledger(client, data["api_key"])
    assert [(i["type"], i["amount"]) for i in items] == [("grant", 12)]
    shown = client.simulate_get(f"/admin/accounts/{data['id']}", headers=ADMIN)
    assert shown.status_code == 200
    assert shown.json["data"]["credits"] == 12 and shown.json["data"]["username"] == username


def test_admin_account_with_password_plan_and_errors(client):
    plan = _name("p")
    assert client.simulate_put(f"/admin/plans/{plan}", headers=ADMIN,
                               json={"perMinute": 7, "perDay": 70}).status_code == 200
    resp = client.simulate_post("/admin/accounts", headers=ADMIN, json={
        "username": _name(), "password": "long enough pw", "plan": plan})
    assert resp.status_code == 201, resp.text
    assert resp.json["data"]["plan"] == plan and resp.json["data"]["credits"] == 0
    me = client.simulate_get(ME, headers=bearer(resp.json["data"]["api_key"])).json["data"]
    assert me["plan"] == plan and me["limits"] == {"perMinute": 7, "perDay": 70}

    taken = resp.json["data"]["username"]
    _error(client.simulate_post("/admin/accounts", headers=ADMIN, json={"username": taken}),
           409, "CONFLICT")
    err = _error(client.simulate_post("/admin/accounts", headers=ADMIN,
                                      json={"username": _name(), "plan": "no-such-plan"}),
                 400, "INVALID_REQUEST")
    assert err["details"][0]["field"] == "plan"
    for bad in ({"username": "x"}, {"username": _name(), "credits": "5"},
                {"username": _name(), "credits": 1.5}, {"username": _name(), "password": "short"}):
        _error(client.simulate_post("/admin/accounts", headers=ADMIN, json=bad),
               400, "INVALID_REQUEST")


# --- credits ---------------------------------------------------------------------------


def test_grant_returns_the_ledger_row(client, make_account):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(f"/admin/accounts/{account_id}/credits", headers=ADMIN,
                                json={"amount": 20, "reason": "goodwill"})
    assert resp.status_code == 201, resp.text
    row = resp.json["data"]
    assert row["txnReceipt"].startswith("txn_") and row["id"] == row["txnReceipt"]
    assert row["amount"] == 20 and row["balanceAfter"] == 25
    assert row["type"] == "grant" and row["reason"] == "goodwill"
    assert ISO_MS.match(row["createdAt"])
    assert ledger_sum(account_id) == (25, 25)
    receipt = client.simulate_get(f"/zapier/v1/receipts/{row['txnReceipt']}", headers=bearer(key))
    assert receipt.status_code == 200 and receipt.json["data"]["amount"] == 20


def test_negative_amount_is_an_adjustment_that_cannot_go_below_zero(client, make_account):
    account_id, key = make_account(credits=10)
    resp = client.simulate_post(f"/admin/accounts/{account_id}/credits", headers=ADMIN,
                                json={"amount": -4, "reason": "correction"})
    assert resp.status_code == 201, resp.text
    assert resp.json["data"]["type"] == "adjustment"
    assert resp.json["data"]["amount"] == -4 and resp.json["data"]["balanceAfter"] == 6

    too_much = client.simulate_post(f"/admin/accounts/{account_id}/credits", headers=ADMIN,
                                    json={"amount": -7})
    _error(too_much, 403, "INSUFFICIENT_CREDITS")
    assert ledger_sum(account_id) == (6, 6)
    assert len(_ledger(client, key)) == 2  # the refused adjustment wrote nothing

    exact = client.simulate_post(f"/admin/accounts/{account_id}/credits", headers=ADMIN,
                                 json={"amount": -6})
    assert exact.status_code == 201 and exact.json["data"]["balanceAfter"] == 0
    assert ledger_sum(account_id) == (0, 0)


@pytest.mark.parametrize("body", [{"amount": 0}, {"amount": 1.5}, {"amount": "5"},
                                  {"amount": True}, {}, {"amount": 5, "reason": 3}])
def test_grant_amount_must_be_a_non_zero_integer(client, make_account, body):
    account_id, _ = make_account(credits=3)
    err = _error(client.simulate_post(f"/admin/accounts/{account_id}/credits", headers=ADMIN,
                                      json=body), 400, "INVALID_REQUEST")
    assert err["details"][0]["field"] in ("amount", "reason")
    assert ledger_sum(account_id) == (3, 3)


def test_out_of_range_integers_are_invalid_requests_not_internal_errors(client, make_account):
    """Numbers past the database columns' range are the caller's mistake: 400, never 500."""
    account_id, _ = make_account(credits=1)
    huge = 10**20
    cases = [
        ("POST", f"/admin/accounts/{account_id}/credits", {"amount": huge}, "amount"),
        ("POST", f"/admin/accounts/{account_id}/credits", {"amount": 2**63 - 1}, "amount"),
        ("POST", f"/admin/accounts/{account_id}/credits", {"amount": -huge}, "amount"),
        ("PUT", "/admin/prices/echo", {"credits": huge}, "credits"),
        ("PUT", "/admin/plans/big", {"perMinute": 3_000_000_000, "perDay": 5}, "perMinute"),
        ("PUT", "/admin/plans/big", {"perMinute": 5, "perDay": huge}, "perDay"),
        ("POST", "/admin/accounts", {"username": _name(), "credits": huge}, "credits"),
    ]
    for method, path, body, field in cases:
        resp = client.simulate_request(method, path, json=body, headers=ADMIN)
        err = _error(resp, 400, "INVALID_REQUEST")
        assert err["details"][0]["field"] == field, (path, body)
    assert ledger_sum(account_id) == (1, 1)
    # the largest allowed grant still works
    resp = client.simulate_post(f"/admin/accounts/{account_id}/credits", headers=ADMIN,
                                json={"amount": 10**12})
    assert resp.status_code == 201 and resp.json["data"]["balanceAfter"] == 10**12 + 1


def test_grant_to_an_unknown_account_is_not_found(client):
    _error(client.simulate_post("/admin/accounts/acct_nope/credits", headers=ADMIN,
                                json={"amount": 5}), 404, "NOT_FOUND")


# --- plans -----------------------------------------------------------------------------


def test_plans_are_set_and_assigned_effective_on_the_next_request(client, make_account):
    account_id, key = make_account()
    plan = _name("p")
    resp = client.simulate_put(f"/admin/plans/{plan}", headers=ADMIN,
                               json={"perMinute": 3, "perDay": 30})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"] == {"name": plan, "perMinute": 3, "perDay": 30}

    assigned = client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN,
                                   json={"plan": plan})
    assert assigned.status_code == 200 and assigned.json["data"]["plan"] == plan
    me = client.simulate_get(ME, headers=bearer(key))
    assert me.json["data"]["plan"] == plan
    assert me.json["data"]["limits"] == {"perMinute": 3, "perDay": 30}
    assert me.headers["X-RateLimit-Limit"] == "3"

    # changing the plan's numbers takes effect on the next request too
    client.simulate_put(f"/admin/plans/{plan}", headers=ADMIN, json={"perMinute": 4, "perDay": 40})
    assert client.simulate_get(ME, headers=bearer(key)).json["data"]["limits"] == {
        "perMinute": 4, "perDay": 40}
    # back to the default plan
    assert client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN,
                               json={"plan": "default"}).status_code == 200
    assert client.simulate_get(ME, headers=bearer(key)).json["data"]["plan"] == "default"


def test_plan_errors(client, make_account):
    account_id, key = make_account()
    err = _error(client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN,
                                     json={"plan": "no-such-plan"}), 400, "INVALID_REQUEST")
    assert err["details"] == [{"field": "plan", "problem": "no such plan"}]
    _error(client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN, json={}),
           400, "INVALID_REQUEST")
    assert client.simulate_get(ME, headers=bearer(key)).json["data"]["plan"] == "default"
    _error(client.simulate_put("/admin/accounts/acct_nope", headers=ADMIN,
                               json={"plan": "default"}), 404, "NOT_FOUND")
    for bad in ({"perMinute": 0, "perDay": 5}, {"perMinute": 5}, {"perMinute": "5", "perDay": 5},
                {"perMinute": 5, "perDay": -1}):
        err = _error(client.simulate_put("/admin/plans/bad", headers=ADMIN, json=bad),
                     400, "INVALID_REQUEST")
        assert err["details"][0]["field"] in ("perMinute", "perDay")


# --- prices ----------------------------------------------------------------------------


def test_price_change_is_effective_on_the_next_request(client, make_account):
    account_id, key = make_account(credits=10)
    resp = client.simulate_put("/admin/prices/echo", headers=ADMIN, json={"credits": 3})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"] == {"action": "echo", "credits": 3}

    paid = _echo(client, key)
    assert paid.status_code == 200
    assert paid.json["meta"]["creditsUsed"] == 3 and paid.json["meta"]["availableCredit"] == 7
    catalogue = client.simulate_get("/zapier/v1/actions", headers=bearer(key)).json["data"]
    assert {a["name"]: a["credits"] for a in catalogue["items"]}["echo"] == 3

    assert client.simulate_put("/admin/prices/echo", headers=ADMIN,
                               json={"credits": 0}).status_code == 200
    free = _echo(client, key)
    assert free.status_code == 200
    assert "txnReceipt" not in free.json["meta"] and "creditsUsed" not in free.json["meta"]
    assert ledger_sum(account_id) == (7, 7)


def test_price_errors(client):
    err = _error(client.simulate_put("/admin/prices/no-such-action", headers=ADMIN,
                                     json={"credits": 1}), 404, "INVALID_ACTION")
    assert "no-such-action" in err["message"]
    for bad in ({"credits": -1}, {"credits": 1.5}, {"credits": "2"}, {}):
        err = _error(client.simulate_put("/admin/prices/echo", headers=ADMIN, json=bad),
                     400, "INVALID_REQUEST")
        assert err["details"][0]["field"] == "credits"


# --- refunds ---------------------------------------------------------------------------


def test_refund_happens_once(client, make_account):
    account_id, key = make_account(credits=4)
    receipt = _echo(client, key).json["meta"]["txnReceipt"]
    assert ledger_sum(account_id) == (3, 3)

    first = client.simulate_post(f"/admin/receipts/{receipt}/refund", headers=ADMIN,
                                 json={"reason": "bad output"})
    assert first.status_code == 201, first.text
    row = first.json["data"]
    assert row["created"] is True and row["type"] == "refund"
    assert row["refundOf"] == receipt and row["amount"] == 1 and row["balanceAfter"] == 4
    assert row["reason"] == "bad output"

    second = client.simulate_post(f"/admin/receipts/{receipt}/refund", headers=ADMIN, json={})
    assert second.status_code == 200
    assert second.json["data"]["created"] is False
    assert second.json["data"]["txnReceipt"] == row["txnReceipt"]
    assert ledger_sum(account_id) == (4, 4)
    assert [i["type"] for i in _ledger(client, key)] == ["refund", "debit", "grant"]


def test_refund_errors(client, make_account):
    account_id, key = make_account(credits=4)
    _error(client.simulate_post("/admin/receipts/txn_nope/refund", headers=ADMIN, json={}),
           404, "NOT_FOUND")
    grant_receipt = _ledger(client, key)[0]["txnReceipt"]  # only debits can be refunded
    _error(client.simulate_post(f"/admin/receipts/{grant_receipt}/refund", headers=ADMIN,
                                json={}), 404, "NOT_FOUND")
    assert ledger_sum(account_id) == (4, 4)


# --- keys ------------------------------------------------------------------------------


def test_admin_key_management(client, make_account):
    account_id, key = make_account(credits=1)
    listed = client.simulate_get(f"/admin/accounts/{account_id}/keys", headers=ADMIN)
    assert listed.status_code == 200
    assert len(listed.json["data"]["items"]) == 1
    assert key not in listed.text

    made = client.simulate_post(f"/admin/accounts/{account_id}/keys", headers=ADMIN,
                                json={"description": "ops issued"})
    assert made.status_code == 201, made.text
    new = made.json["data"]
    assert new["apiKey"].startswith(new["prefix"]) and new["description"] == "ops issued"
    assert client.simulate_get(ME, headers=bearer(new["apiKey"])).json["data"]["id"] == account_id

    listed = client.simulate_get(f"/admin/accounts/{account_id}/keys", headers=ADMIN)
    items = listed.json["data"]["items"]
    assert {i["keyId"] for i in items} >= {new["keyId"]} and len(items) == 2
    assert new["apiKey"] not in listed.text

    revoked = client.simulate_delete(f"/admin/keys/{new['keyId']}", headers=ADMIN)
    assert revoked.status_code == 200
    assert revoked.json["data"]["active"] is False
    _error(client.simulate_get(ME, headers=bearer(new["apiKey"])), 401, "AUTH_FAILED")
    assert client.simulate_get(ME, headers=bearer(key)).status_code == 200

    _error(client.simulate_delete("/admin/keys/key_nope", headers=ADMIN), 404, "NOT_FOUND")
    _error(client.simulate_get("/admin/accounts/acct_nope/keys", headers=ADMIN), 404, "NOT_FOUND")
    _error(client.simulate_post("/admin/accounts/acct_nope/keys", headers=ADMIN, json={}),
           404, "NOT_FOUND")


# --- the command line ------------------------------------------------------------------


def _env(config, **extra):
    env = dict(os.environ)
    env.update({"DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url,
                "REDIS_PREFIX": config.redis_prefix, "DATA_DIR": str(config.data_dir),
                "LOG_LEVEL": "WARNING"})
    env.update(extra)
    return env


def gateway(config, *args, ok=True, env=None):
    proc = subprocess.run([GATEWAY, *args], env=env or _env(config), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def gateway_json(config, *args):
    return json.loads(gateway(config, *args).stdout)


def test_cli_db_upgrade_is_idempotent_on_postgres(config, schema):
    for _ in range(2):
        out = gateway(config, "db", "upgrade").stdout
        assert "schema up to date" in out
        assert re.search(r"schema version \d+", out)
    assert "schema version" in gateway(config, "db", "version").stdout


def test_cli_db_upgrade_on_a_fresh_sqlite_file(tmp_path, config):
    path = tmp_path / "x.db"
    env = _env(config, DATABASE_URL=f"sqlite:///{path}", DATA_DIR=str(tmp_path / "data"))
    first = gateway(config, "db", "upgrade", env=env).stdout
    assert re.search(r"applied \[1, 2", first), first
    version = re.search(r"schema version (\d+)", first).group(1)
    second = gateway(config, "db", "upgrade", env=env).stdout
    assert "schema up to date" in second and f"schema version {version}" in second
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"account", "api_key", "ledger_entry", "plan", "price"} <= tables


def test_cli_operator_commands_take_effect_over_http(client, config):
    name = _name("cli")
    created = gateway_json(config, "accounts", "create", name, "--credits", "5")
    assert created["username"] == name and created["credits"] == 5
    key = created["api_key"]
    me = client.simulate_get(ME, headers=bearer(key)).json["data"]
    assert me["id"] == created["id"] and me["balance"] == 5

    granted = gateway_json(config, "credits", "grant", name, "7")
    assert granted["amount"] == 7 and granted["balanceAfter"] == 12
    assert granted["txnReceipt"].startswith("txn_")
    assert client.simulate_get(ME, headers=bearer(key)).json["data"]["balance"] == 12

    made = gateway_json(config, "keys", "create", name, "--description", "from the shell")
    second_key = made["apiKey"]
    assert client.simulate_get(ME, headers=bearer(second_key)).json["data"]["id"] == created["id"]
    listed = gateway(config, "keys", "list", name).stdout
    rows = json.loads(listed)
    assert {r["keyId"] for r in rows} >= {made["keyId"]} and len(rows) == 2
    assert second_key not in listed and key not in listed

    revoked = gateway_json(config, "keys", "revoke", made["keyId"])
    assert revoked["active"] is False
    _error(client.simulate_get(ME, headers=bearer(second_key)), 401, "AUTH_FAILED")

    plan = _name("p")
    assert gateway_json(config, "plans", "set", plan, "--per-minute", "5", "--per-day", "50") \
        == {"name": plan, "perMinute": 5, "perDay": 50}
    assert gateway_json(config, "accounts", "set-plan", name, plan)["plan"] == plan
    me = client.simulate_get(ME, headers=bearer(key))
    assert me.json["data"]["limits"] == {"perMinute": 5, "perDay": 50}
    assert me.headers["X-RateLimit-Limit"] == "5"

    assert gateway_json(config, "prices", "set", "echo", "2") == {"action": "echo", "credits": 2}
    paid = _echo(client, key)
    assert paid.status_code == 200 and paid.json["meta"]["creditsUsed"] == 2
    assert paid.json["meta"]["availableCredit"] == 10
    assert ledger_sum(created["id"]) == (10, 10)

    refunded = gateway_json(config, "credits", "refund", paid.json["meta"]["txnReceipt"])
    assert refunded["created"] is True and refunded["balanceAfter"] == 12
    again = gateway_json(config, "credits", "refund", paid.json["meta"]["txnReceipt"])
    assert again["created"] is False and again["txnReceipt"] == refunded["txnReceipt"]
    assert client.simulate_get(ME, headers=bearer(key)).json["data"]["balance"] == 12


def test_cli_refusals_exit_non_zero_and_change_nothing(client, config):
    name = _name("cli")
    key = gateway_json(config, "accounts", "create", name, "--credits", "3")["api_key"]
    refused = gateway(config, "credits", "grant", name, "-4", ok=False)
    assert refused.returncode != 0
    assert "INSUFFICIENT_CREDITS" in refused.stderr and "Traceback" not in refused.stderr
    assert gateway(config, "accounts", "create", name, ok=False).returncode != 0
    assert "CONFLICT" in gateway(config, "accounts", "create", name, ok=False).stderr
    assert gateway(config, "accounts", "set-plan", name, "no-such-plan", ok=False).returncode != 0
    assert gateway(config, "prices", "set", "no-such-action", "2", ok=False).returncode != 0
    assert gateway(config, "credits", "grant", "no-such-user", "2", ok=False).returncode != 0
    me = client.simulate_get(ME, headers=bearer(key)).json["data"]
    assert me["balance"] == 3 and me["plan"] == "default"
    assert len(_ledger(client, key)) == 1
