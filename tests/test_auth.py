"""Credentials, keys and signup (CONTRACT 2 and 10) through the real app, PostgreSQL and
Redis: every accepted credential form, the 401 codes, key lifecycle (shown once, listed
without secrets, stored hashed, revoked at once on every process) and signup."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
import requests
from falcon.testing import TestClient

from conftest import ADMIN, bearer, ledger_sum, make_app
from metering import db as dbmod
from metering.models import Account
from oauth.keys import hash_key
from oauth.models import ApiKey

ME = "/zapier/v1/me"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _basic(key, password=""):
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


def _assert_401(resp, code):
    assert resp.status_code == 401, resp.text
    body = resp.json
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["statusCode"] == 401
    assert body["meta"]["requestId"] == resp.headers["X-Request-ID"]
    assert "WWW-Authenticate" in resp.headers


def _username():
    return "u" + uuid.uuid4().hex[:10]


# --- credential forms ----------------------------------------------------------------


@pytest.mark.parametrize("form", ["bearer", "basic", "basic-with-password", "bare",
                                  "x-api-key", "bearer-lowercase"])
def test_every_credential_form_identifies_the_account(client, make_account, form):
    account_id, key = make_account(credits=7)
    headers = {
        "bearer": {"Authorization": f"Bearer {key}"},
        "bearer-lowercase": {"Authorization": f"bearer {key}"},
        "basic": {"Authorization": _basic(key)},
        "basic-with-password": {"Authorization": _basic(key, "ignored")},
        "bare": {"Authorization": key},
        "x-api-key": {"X-API-Key": key},
    }[form]
    resp = client.simulate_get(ME, headers=headers)
    assert resp.status_code == 200, resp.text
    data = resp.json["data"]
    assert data["id"] == account_id
    assert data["balance"] == 7
    assert data["plan"] == "default"
    assert data["credential"]["kind"] == "api_key"
    assert data["credential"]["id"].startswith("key_")
    assert data["limits"] == {"perMinute": 60, "perDay": 1000}
    # every authenticated response carries the rate-limit headers (CONTRACT 3)
    assert int(resp.headers["X-RateLimit-Limit"]) >= 1


def test_me_reports_the_username_and_key_id(client):
    username = _username()
    created = client.simulate_post("/admin/accounts", headers=ADMIN,
                                   json={"username": username, "credits": 3})
    key = created.json["data"]["api_key"]
    listed = client.simulate_get("/api/key/list", headers=bearer(key)).json["data"]["items"]
    resp = client.simulate_get(ME, headers=bearer(key))
    assert resp.json["data"]["username"] == username
    assert resp.json["data"]["credential"]["id"] == listed[0]["keyId"]


# --- 401 codes -----------------------------------------------------------------------


def test_no_credentials_is_missing_auth_header(client):
    _assert_401(client.simulate_get(ME), "MISSING_AUTH_HEADER")
    _assert_401(client.simulate_get(ME, headers={"Authorization": "   "}), "MISSING_AUTH_HEADER")


@pytest.mark.parametrize("value", ["Digest abc", "Token x", "Negotiate YWJj", "HOBA foo=bar"])
def test_other_schemes_are_unsupported(client, make_account, value):
    _assert_401(client.simulate_get(ME, headers={"Authorization": value}),
                "UNSUPPORTED_AUTH_SCHEME")


def test_unsupported_scheme_even_with_a_valid_key(client, make_account):
    _, key = make_account()
    _assert_401(client.simulate_get(ME, headers={"Authorization": f"Token {key}"}),
                "UNSUPPORTED_AUTH_SCHEME")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer gwk_" + "x" * 32},
    {"Authorization": "Bearer not-a-key-at-all"},
    {"Authorization": "gwk_unknownunknownunknown"},
    {"X-API-Key": "gwk_unknownunknownunknown"},
    {"Authorization": "Basic !!!not-base64!!!"},
    {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe\xfd").decode()},
    {"Authorization": "Basic " + base64.b64encode(b":").decode()},
    {"Authorization": "Bearer gwk_x", "X-API-Key": "ignored"},
], ids=["unknown-bearer", "not-a-key", "unknown-bare", "unknown-x-api-key", "basic-garbage",
        "basic-not-utf8", "basic-empty-user", "bearer-wins-over-x-api-key"])
def test_unknown_or_malformed_credentials_fail(client, headers):
    _assert_401(client.simulate_get(ME, headers=headers), "AUTH_FAILED")


def test_401_does_not_touch_the_rate_limit_or_credits(client, make_account):
    account_id, key = make_account(credits=2)
    resp = client.simulate_post("/zapier/v1/echo", json={"message": "x"},
                                headers=bearer(key + "tampered"))
    _assert_401(resp, "AUTH_FAILED")
    assert "X-RateLimit-Limit" not in resp.headers
    assert ledger_sum(account_id) == (2, 2)


# --- revocation ------------------------------------------------------------------------


def test_revoked_key_fails_on_the_very_next_request(client, make_account):
    account_id, key = make_account(credits=5)
    second = client.simulate_post("/api/key/generate", headers=bearer(key),
                                  json={"description": "zapier"})
    assert second.status_code == 201
    other = second.json["data"]["apiKey"]
    key_id = second.json["data"]["keyId"]
    assert client.simulate_get(ME, headers=bearer(other)).status_code == 200

    revoked = client.simulate_delete(f"/api/key/{key_id}/revoke", headers=bearer(key))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json["data"]["keyId"] == key_id
    assert revoked.json["data"]["active"] is False
    assert ISO_MS.match(revoked.json["data"]["revokedAt"])

    for headers in (bearer(other), {"X-API-Key": other}, {"Authorization": _basic(other)},
                    {"Authorization": other}):
        _assert_401(client.simulate_get(ME, headers=headers), "AUTH_FAILED")
    _assert_401(client.simulate_post("/zapier/v1/echo", json={"message": "x"},
                                     headers=bearer(other)), "AUTH_FAILED")
    assert ledger_sum(account_id) == (5, 5)
    # the account's other key is untouched; revoking again is harmless
    assert client.simulate_get(ME, headers=bearer(key)).status_code == 200
    again = client.simulate_delete(f"/api/key/{key_id}/revoke", headers=bearer(key))
    assert again.status_code == 200
    assert again.json["data"]["revokedAt"] == revoked.json["data"]["revokedAt"]


def test_a_key_can_revoke_itself(client, make_account):
    _, key = make_account()
    key_id = client.simulate_get(ME, headers=bearer(key)).json["data"]["credential"]["id"]
    assert client.simulate_delete(f"/api/key/{key_id}/revoke",
                                  headers=bearer(key)).status_code == 200
    _assert_401(client.simulate_get(ME, headers=bearer(key)), "AUTH_FAILED")


def test_revocation_reaches_every_gunicorn_worker(server):
    http = requests.Session()
    created = http.post(server + "/admin/accounts", headers=ADMIN,
                        json={"username": _username(), "credits": 0})
    assert created.status_code == 201, created.text
    key = created.json()["data"]["api_key"]
    victim = http.post(server + "/api/key/generate", headers=bearer(key),
                       json={"description": "to revoke"}).json()["data"]
    # warm both workers with the key (fresh connections spread over the workers)
    for _ in range(16):
        assert requests.get(server + ME, headers=bearer(victim["apiKey"]),
                            timeout=10).status_code == 200

    resp = http.delete(f"{server}/api/key/{victim['keyId']}/revoke", headers=bearer(key))
    assert resp.status_code == 200, resp.text

    statuses = []
    for i in range(40):
        session = requests if i % 2 else http  # new connections and a kept-alive one
        r = session.get(server + ME, headers=bearer(victim["apiKey"]), timeout=10)
        statuses.append(r.status_code)
        assert r.json()["error"]["code"] == "AUTH_FAILED"
    assert statuses == [401] * 40
    # the account's first key still works on every worker
    assert all(requests.get(server + ME, headers=bearer(key), timeout=10).status_code == 200
               for _ in range(6))


# --- key routes ------------------------------------------------------------------------


def test_generate_with_an_idempotency_key_makes_one_key(client, make_account):
    """A retried key creation makes no second key; its replay never shows the secret."""
    account_id, key = make_account()
    headers = {**bearer(key), "Idempotency-Key": "zap-run-7"}
    first = client.simulate_post("/api/key/generate", headers=headers,
                                 json={"description": "n8n"})
    assert first.status_code == 201, first.text
    again = client.simulate_post("/api/key/generate", headers=headers,
                                 json={"description": "n8n"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json["data"]["keyId"] == first.json["data"]["keyId"]
    assert again.json["data"]["prefix"] == first.json["data"]["prefix"]
    assert "apiKey" not in again.json["data"]
    assert first.json["data"]["apiKey"] not in again.text
    other = client.simulate_post("/api/key/generate", headers=headers,
                                 json={"description": "another"})
    assert other.status_code == 422 and other.json["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
    bad = client.simulate_post("/api/key/generate", json={"description": 5},
                               headers={**bearer(key), "Idempotency-Key": "zap-run-8"})
    assert bad.status_code == 400
    # the refused request freed its key: the same key with a good body makes a key
    fresh = client.simulate_post("/api/key/generate", json={"description": "ok"},
                                 headers={**bearer(key), "Idempotency-Key": "zap-run-8"})
    assert fresh.status_code == 201 and "idempotent-replayed" not in fresh.headers
    listed = client.simulate_get("/api/key/list", headers=bearer(key)).json["data"]["items"]
    assert len(listed) == 3  # the account's first key, the replayed one, the fresh one


def test_generate_shows_the_key_once_and_list_never_does(client, make_account):
    account_id, key = make_account()
    resp = client.simulate_post("/api/key/generate", headers=bearer(key),
                                json={"description": "make.com scenario"})
    assert resp.status_code == 201, resp.text
    data = resp.json["data"]
    secret = data["apiKey"]
    assert secret.startswith("gwk_") and len(secret) >= 30
    assert data["description"] == "make.com scenario"
    assert data["keyId"].startswith("key_")
    assert ISO_MS.match(data["createdAt"])
    assert secret.startswith(data["prefix"]) and len(data["prefix"]) < len(secret) - 16

    # the new key works; its last use is recorded
    assert client.simulate_get(ME, headers=bearer(secret)).json["data"]["id"] == account_id

    listed = client.simulate_get("/api/key/list", headers=bearer(key))
    assert listed.status_code == 200
    items = listed.json["data"]["items"]
    assert len(items) == 2  # the account's first key and the new one
    by_id = {item["keyId"]: item for item in items}
    item = by_id[data["keyId"]]
    assert item["prefix"] == data["prefix"]
    assert item["description"] == "make.com scenario"
    assert item["active"] is True and item["revokedAt"] is None
    assert ISO_MS.match(item["lastUsedAt"])
    for text in (secret, key, hash_key(secret), hash_key(key)):
        assert text not in listed.text
    for item in items:
        assert "apiKey" not in item and "key_hash" not in item and "hash" not in item


def test_key_description_is_optional_and_bounded(client, make_account):
    _, key = make_account()
    resp = client.simulate_post("/api/key/generate", headers=bearer(key))
    assert resp.status_code == 201
    assert resp.json["data"]["description"] == ""
    resp = client.simulate_post("/api/key/generate", headers=bearer(key),
                                json={"description": "d" * 256})
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "INVALID_REQUEST"
    assert resp.json["error"]["details"][0]["field"] == "description"
    resp = client.simulate_post("/api/key/generate", headers=bearer(key),
                                json={"description": 5})
    assert resp.status_code == 400


def test_key_routes_need_a_credential(client):
    _assert_401(client.simulate_get("/api/key/list"), "MISSING_AUTH_HEADER")
    _assert_401(client.simulate_post("/api/key/generate", json={}), "MISSING_AUTH_HEADER")
    _assert_401(client.simulate_delete("/api/key/key_x/revoke"), "MISSING_AUTH_HEADER")


def test_one_account_cannot_revoke_or_see_anothers_key(client, make_account):
    _, alice = make_account()
    _, mallory = make_account()
    alice_key_id = client.simulate_get(ME, headers=bearer(alice)).json["data"]["credential"]["id"]

    resp = client.simulate_delete(f"/api/key/{alice_key_id}/revoke", headers=bearer(mallory))
    assert resp.status_code == 404
    assert resp.json["error"]["code"] == "NOT_FOUND"
    assert resp.json["error"]["statusCode"] == 404
    assert alice_key_id not in resp.text
    # the same answer as a key id that does not exist at all
    missing = client.simulate_delete("/api/key/key_doesnotexist/revoke", headers=bearer(mallory))
    assert missing.status_code == 404
    assert missing.json["error"]["message"] == resp.json["error"]["message"]

    assert client.simulate_get(ME, headers=bearer(alice)).status_code == 200
    listed = client.simulate_get("/api/key/list", headers=bearer(mallory)).json["data"]["items"]
    assert alice_key_id not in {item["keyId"] for item in listed}


def test_keys_are_stored_only_as_hashes(client, make_account):
    account_id, key = make_account()
    secret = client.simulate_post("/api/key/generate", headers=bearer(key),
                                  json={"description": "hashed"}).json["data"]["apiKey"]
    with dbmod.connection():
        rows = list(ApiKey.select().where(ApiKey.account == account_id).dicts())
    assert len(rows) == 2
    stored = {row["key_hash"] for row in rows}
    assert stored == {hash_key(key), hash_key(secret)}
    for row in rows:
        for value in row.values():
            if isinstance(value, str):
                assert key not in value and secret not in value
        assert len(row["key_hash"]) == 64 and row["key_hash"] not in (key, secret)
        assert len(row["prefix"]) <= 10


# --- signup ----------------------------------------------------------------------------


def test_signup_creates_an_account_with_a_key_and_the_signup_grant(client):
    username = _username()
    resp = client.simulate_post("/api/account/create",
                                json={"username": username, "password": "correct horse"})
    assert resp.status_code == 201, resp.text
    body = resp.json
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {"id", "username", "api_key"}
    assert data["username"] == username and data["id"].startswith("acct_")
    key = data["api_key"]

    me = client.simulate_get(ME, headers=bearer(key)).json["data"]
    assert me["id"] == data["id"] and me["balance"] == 10 and me["plan"] == "default"

    ledger = client.simulate_get("/zapier/v1/credits/transactions", headers=bearer(key))
    items = ledger.json["data"]["items"]
    assert len(items) == 1
    assert items[0]["type"] == "grant" and items[0]["amount"] == 10
    assert items[0]["balanceAfter"] == 10 and items[0]["txnReceipt"].startswith("txn_")
    assert ledger_sum(data["id"]) == (10, 10)


def test_signup_password_is_an_argon2_hash(client):
    username = _username()
    password = "s3cret-password-" + uuid.uuid4().hex[:6]
    resp = client.simulate_post("/api/account/create",
                                json={"username": username, "password": password})
    assert resp.status_code == 201
    with dbmod.connection():
        stored = Account.get(Account.username == username).password_hash
    assert stored.startswith("$argon2")
    assert password not in stored
    assert password not in resp.text


def test_duplicate_username_is_conflict(client):
    username = _username()
    first = client.simulate_post("/api/account/create",
                                 json={"username": username, "password": "password-1"})
    assert first.status_code == 201
    again = client.simulate_post("/api/account/create",
                                 json={"username": username, "password": "password-2"})
    assert again.status_code == 409
    assert again.json["error"]["code"] == "CONFLICT"
    assert again.json["error"]["statusCode"] == 409
    with dbmod.connection():
        assert Account.select().where(Account.username == username).count() == 1
        account_id = Account.get(Account.username == username).id
    assert ledger_sum(account_id) == (10, 10)  # the failed signup granted nothing


@pytest.mark.parametrize("body,field", [
    ({"password": "long enough"}, "username"),
    ({"username": "ab", "password": "long enough"}, "username"),
    ({"username": "has space", "password": "long enough"}, "username"),
    ({"username": "_leading", "password": "long enough"}, "username"),
    ({"username": "x" * 65, "password": "long enough"}, "username"),
    ({"username": 12345, "password": "long enough"}, "username"),
    ({"username": "validname"}, "password"),
    ({"username": "validname", "password": "short"}, "password"),
    ({"username": "validname", "password": "p" * 257}, "password"),
    ({"username": "validname", "password": 12345678}, "password"),
])
def test_bad_username_or_password_is_invalid_request(client, body, field):
    resp = client.simulate_post("/api/account/create", json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json["error"]
    assert error["code"] == "INVALID_REQUEST" and error["statusCode"] == 400
    assert {d["field"] for d in error["details"]} == {field}
    assert all(d["problem"] for d in error["details"])
    with dbmod.connection():
        assert not Account.select().where(Account.username == "validname").exists()


def test_signup_can_be_closed(config, schema):
    closed = TestClient(make_app(config.replace(signup_open=False)))
    resp = closed.simulate_post("/api/account/create",
                                json={"username": _username(), "password": "long enough"})
    assert resp.status_code == 403
    assert resp.json["error"]["code"] == "FORBIDDEN"
    assert resp.json["error"]["statusCode"] == 403
    with dbmod.connection():
        assert Account.select().count() == 0


def test_signup_is_limited_per_client_address(config, schema):
    limited = TestClient(make_app(config.replace(signup_per_hour=2)))

    def signup(addr="10.1.2.3"):
        return limited.simulate_post("/api/account/create", remote_addr=addr,
                                     json={"username": _username(), "password": "long enough"})

    assert signup().status_code == 201
    assert signup().status_code == 201
    refused = signup()
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "RATE_LIMITED"
    assert refused.json["error"]["statusCode"] == 429
    retry = refused.headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= 3600
    with dbmod.connection():
        assert Account.select().count() == 2
    # another client address has its own allowance
    assert signup("10.9.9.9").status_code == 201
