"""Password bearer tokens (/auth/token, /auth/refresh), the JWT authenticator, and the
account routes (data, settings, usage, self user), through the real app on PostgreSQL
and Redis."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
import uuid

import jwt
import pytest
from falcon.testing import TestClient

from conftest import ADMIN, bearer, make_app
from core.clock import ManualClock

PASSWORD = "correct horse battery"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def user(client):
    """An account with a password: returns (account_id, username, api_key)."""
    username = "s" + uuid.uuid4().hex[:10]
    resp = client.simulate_post("/admin/accounts", headers=ADMIN,
                                json={"username": username, "password": PASSWORD, "credits": 5})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["id"], username, resp.json["data"]["api_key"]


def _login(client, username, password=PASSWORD, *, as_json=False, addr=None):
    extra = {"remote_addr": addr} if addr else {}
    if as_json:
        return client.simulate_post("/auth/token", json={"username": username,
                                                         "password": password}, **extra)
    return client.simulate_post("/auth/token", body=f"username={username}&password={password}",
                                headers=FORM, **extra)


def _refresh(client, token):
    return client.simulate_post("/auth/refresh", json={"refresh_token": token})


def _secret(config):
    return (config.data_dir / "jwt_secret").read_text().strip()


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# --- /auth/token ---------------------------------------------------------------------


def test_token_by_form_and_json_works_on_me(client, user, config):
    account_id, username, _ = user
    for as_json in (False, True):
        resp = _login(client, username, as_json=as_json)
        assert resp.status_code == 200, resp.text
        assert resp.json["success"] is True
        data = resp.json["data"]
        assert data["token_type"] == "bearer"
        assert data["expires_in"] == 3600
        assert data["refresh_token"].startswith("gwr_")
        assert resp.headers["Cache-Control"] == "no-store"
        claims = jwt.decode(data["access_token"], _secret(config), algorithms=["HS256"])
        assert claims["sub"] == account_id and claims["kind"] == "access"
        assert claims["exp"] - claims["iat"] == 3600 and claims["jti"]

        me = client.simulate_get("/zapier/v1/me", headers=bearer(data["access_token"]))
        assert me.status_code == 200, me.text
        assert me.json["data"]["id"] == account_id
        assert me.json["data"]["credential"]["kind"] == "bearer"
        assert me.json["data"]["credential"]["id"] == claims["fam"]
        assert "X-RateLimit-Remaining" in me.headers


def test_secret_file_is_private(client, user, config):
    assert _login(client, user[1]).status_code == 200
    mode = stat.S_IMODE(os.stat(config.data_dir / "jwt_secret").st_mode)
    assert mode == 0o600


def test_wrong_password_and_unknown_user(client, user):
    for name, password in ((user[1], "wrong password!"), ("nobody-" + uuid.uuid4().hex[:6],
                                                          PASSWORD)):
        resp = _login(client, name, password)
        assert resp.status_code == 401
        assert resp.json["error"]["code"] == "AUTH_FAILED"
        assert "access_token" not in resp.text


def test_missing_fields_are_invalid(client):
    resp = client.simulate_post("/auth/token", body="username=abc", headers=FORM)
    assert resp.status_code == 400
    assert resp.json["error"]["details"][0]["field"] == "password"


def test_expired_token_is_rejected(config, schema, user):
    short = config.replace(tokens=dataclasses.replace(config.tokens, access_ttl=1, leeway=0))
    clock = ManualClock()
    client = TestClient(make_app(short, clock=clock))
    data = _login(client, user[1]).json["data"]
    assert data["expires_in"] == 1
    assert client.simulate_get("/zapier/v1/me",
                               headers=bearer(data["access_token"])).status_code == 200
    clock.advance(2.1)
    resp = client.simulate_get("/zapier/v1/me", headers=bearer(data["access_token"]))
    assert resp.status_code == 401
    assert resp.json["error"]["code"] == "AUTH_FAILED"
    # the refresh token still works and gives a fresh access token
    fresh = _refresh(client, data["refresh_token"]).json["data"]["access_token"]
    assert client.simulate_get("/zapier/v1/me", headers=bearer(fresh)).status_code == 200


def test_tampered_tokens_are_rejected(client, user, config):
    token = _login(client, user[1]).json["data"]["access_token"]
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, _secret(config), algorithms=["HS256"])
    other = {**claims, "sub": "acct_someoneelse"}
    sig = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    forged = [
        f"{header}.{_b64(other)}.{signature}",  # changed payload
        f"{header}.{payload}.{sig}",  # changed signature
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",  # alg none
        jwt.encode(claims, "x" * 40, algorithm="HS256"),  # other secret
        jwt.encode(claims, _secret(config), algorithm="HS512"),  # other algorithm
        jwt.encode({**claims, "kind": "refresh"}, _secret(config), algorithm="HS256"),
    ]
    for bad in forged:
        resp = client.simulate_get("/zapier/v1/me", headers=bearer(bad))
        assert resp.status_code == 401, bad
        assert resp.json["error"]["code"] == "AUTH_FAILED"
    assert client.simulate_get("/zapier/v1/me", headers=bearer(token)).status_code == 200


# --- /auth/refresh ---------------------------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_family(config, schema, user):
    clock = ManualClock()
    client = TestClient(make_app(config.replace(
        tokens=dataclasses.replace(config.tokens, refresh_grace=0)), clock=clock))
    first = _login(client, user[1]).json["data"]
    resp = _refresh(client, first["refresh_token"])
    assert resp.status_code == 200, resp.text
    second = resp.json["data"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert client.simulate_get("/zapier/v1/me",
                               headers=bearer(second["access_token"])).status_code == 200
    clock.advance(1.1)

    # the rotated token again: theft suspected, the whole family dies
    reuse = _refresh(client, first["refresh_token"])
    assert reuse.status_code == 401
    assert reuse.json["error"]["code"] == "AUTH_FAILED"
    assert _refresh(client, second["refresh_token"]).status_code == 401
    for token in (first["access_token"], second["access_token"]):
        assert client.simulate_get("/zapier/v1/me", headers=bearer(token)).status_code == 401
    # a new login starts a new, independent session
    again = _login(client, user[1]).json["data"]
    assert client.simulate_get("/zapier/v1/me",
                               headers=bearer(again["access_token"])).status_code == 200


def test_refresh_grace_for_racing_clients(client, user):
    first = _login(client, user[1]).json["data"]
    a = _refresh(client, first["refresh_token"])
    b = _refresh(client, first["refresh_token"])  # within JWT_REFRESH_GRACE (10 s)
    assert a.status_code == 200 and b.status_code == 200
    for resp in (a, b):
        assert _refresh(client, resp.json["data"]["refresh_token"]).status_code == 200


def test_refresh_accepts_form_and_header_and_refuses_junk(client, user):
    data = _login(client, user[1]).json["data"]
    resp = client.simulate_post("/auth/refresh", body=f"refresh_token={data['refresh_token']}",
                                headers=FORM)
    assert resp.status_code == 200, resp.text
    resp = client.simulate_post("/auth/refresh",
                                headers=bearer(resp.json["data"]["refresh_token"]))
    assert resp.status_code == 200, resp.text
    assert _refresh(client, "gwr_" + "x" * 43).status_code == 401
    assert _refresh(client, "junk").status_code == 401
    assert client.simulate_post("/auth/refresh", json={}).status_code == 400
    # seed 001: the access token as the bearer gives a new access token, no refresh token
    access = client.simulate_post("/auth/refresh", headers=bearer(data["access_token"]))
    assert access.status_code == 200, access.text
    assert "refresh_token" not in access.json["data"]


# --- brute force -----------------------------------------------------------------------


def test_login_limited_per_username(config, schema, user):
    client = TestClient(make_app(config.replace(
        logins=dataclasses.replace(config.logins, per_username=3))))
    for i in range(3):
        resp = _login(client, user[1], "bad password", addr=f"10.0.0.{i + 1}")
        assert resp.status_code == 401
    # the right password from yet another address is refused too: the username is locked
    resp = _login(client, user[1], addr="10.0.0.9")
    assert resp.status_code == 429
    assert resp.json["error"]["code"] == "RATE_LIMITED"
    assert int(resp.headers["Retry-After"]) >= 1
    # another username is not affected
    other = client.simulate_post("/admin/accounts", headers=ADMIN, json={
        "username": "o" + uuid.uuid4().hex[:10], "password": PASSWORD}).json["data"]
    assert _login(client, other["username"], addr="10.0.0.9").status_code == 200


def test_login_limited_per_address(config, schema, user):
    client = TestClient(make_app(config.replace(
        logins=dataclasses.replace(config.logins, per_address=4))))
    for i in range(4):
        assert _login(client, f"guess{i}-{uuid.uuid4().hex[:6]}", addr="10.1.1.1") \
            .status_code == 401
    resp = _login(client, user[1], addr="10.1.1.1")
    assert resp.status_code == 429
    assert resp.json["error"]["code"] == "RATE_LIMITED"
    assert int(resp.headers["Retry-After"]) >= 1
    assert _login(client, user[1], addr="10.1.1.2").status_code == 200


def test_a_login_refused_by_one_limit_is_counted_by_neither(config, schema, user):
    """CONTRACT 3: attempts the username limit refuses do not use up the address's."""
    client = TestClient(make_app(config.replace(
        logins=dataclasses.replace(config.logins, per_username=2, per_address=5))))
    for _ in range(2):
        assert _login(client, user[1], "bad password", addr="10.2.2.2").status_code == 401
    for _ in range(6):  # refused for the username: the address window is untouched
        resp = _login(client, user[1], "bad password", addr="10.2.2.2")
        assert resp.status_code == 429 and "username" in resp.json["error"]["message"]
    # 2 of the address's 5 are used: three more usernames get through, the fourth is refused
    for i in range(3):
        assert _login(client, f"guess{i}-{uuid.uuid4().hex[:6]}", addr="10.2.2.2") \
            .status_code == 401
    resp = _login(client, f"late-{uuid.uuid4().hex[:6]}", addr="10.2.2.2")
    assert resp.status_code == 429 and "address" in resp.json["error"]["message"]


# --- account data ----------------------------------------------------------------------


def test_account_data_by_key_bearer_and_password(client, user):
    account_id, username, key = user
    by_key = client.simulate_get("/api/account/data", headers={"Authorization": key})
    assert by_key.status_code == 200, by_key.text
    data = by_key.json["data"]
    assert data["id"] == account_id and data["username"] == username
    assert data["credits"] == 5 and data["usages"] == 0
    assert data["api_key"] is None
    assert [k["prefix"] for k in data["keys"]] == [key[:10]]
    assert "X-RateLimit-Limit" in by_key.headers

    token = _login(client, username).json["data"]["access_token"]
    by_token = client.simulate_post("/api/account/data", headers=bearer(token))
    assert by_token.status_code == 200 and by_token.json["data"]["id"] == account_id

    by_json = client.simulate_post("/api/account/data",
                                   json={"username": username, "password": PASSWORD})
    assert by_json.status_code == 200 and by_json.json["data"]["id"] == account_id
    by_query = client.simulate_get("/api/account/data",
                                   params={"username": username, "password": PASSWORD})
    assert by_query.status_code == 200 and by_query.json["data"]["id"] == account_id

    wrong = client.simulate_post("/api/account/data",
                                 json={"username": username, "password": "nope nope"})
    assert wrong.status_code == 401 and wrong.json["error"]["code"] == "AUTH_FAILED"
    none = client.simulate_get("/api/account/data")
    assert none.status_code == 401 and none.json["error"]["code"] == "MISSING_AUTH_HEADER"
    bad_key = client.simulate_get("/api/account/data", headers=bearer("gwk_nosuchkey"))
    assert bad_key.status_code == 401


# --- settings --------------------------------------------------------------------------


def _set(client, key, setting, value):
    return client.simulate_post("/api/account/settings/set", headers=bearer(key),
                                json={"key": setting, "value": value})


def _get(client, key, setting):
    return client.simulate_get("/api/account/settings/get", headers=bearer(key),
                               params={"key": setting})


def test_settings_set_get_and_isolation(client, make_account):
    _, a = make_account()
    _, b = make_account()
    resp = _set(client, a, "theme", "dark")
    assert resp.status_code == 200, resp.text
    assert resp.json["data"]["message"] == "Setting updated successfully"
    assert _get(client, a, "theme").json["data"]["value"] == "dark"
    assert _set(client, a, "theme", {"mode": "light", "n": [1, 2]}).status_code == 200
    got = client.simulate_post("/api/account/settings/get", headers=bearer(a),
                               json={"key": "theme"})
    assert got.json["data"]["value"] == {"mode": "light", "n": [1, 2]}

    # another account sees nothing of it, and keeps its own value under the same key
    missing = _get(client, b, "theme")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "NOT_FOUND"
    assert _set(client, b, "theme", 7).status_code == 200
    assert _get(client, b, "theme").json["data"]["value"] == 7
    assert _get(client, a, "theme").json["data"]["value"]["mode"] == "light"


def test_settings_limits(client, make_account):
    plan = client.simulate_put("/admin/plans/settings-bulk", headers=ADMIN,
                               json={"perMinute": 1000, "perDay": 10000})
    assert plan.status_code in (200, 201), plan.text
    _, key = make_account(plan="settings-bulk")
    for bad in ("", "x" * 65, "has space", "slash/no", 12):
        resp = _set(client, key, bad, 1)
        assert resp.status_code == 400, bad
        assert resp.json["error"]["details"][0]["field"] == "key"
    big = _set(client, key, "big", "x" * 4100)
    assert big.status_code == 413
    assert big.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert big.json["error"]["details"][0]["field"] == "value"
    missing = client.simulate_post("/api/account/settings/set", headers=bearer(key),
                                   json={"key": "k"})
    assert missing.status_code == 400
    extra = client.simulate_post("/api/account/settings/set", headers=bearer(key),
                                 json={"key": "k", "value": 1, "other": 2})
    assert extra.status_code == 400

    for i in range(100):
        assert _set(client, key, f"k{i}", i).status_code == 200
    over = _set(client, key, "k100", 1)
    assert over.status_code == 400
    assert over.json["error"]["details"][0]["field"] == "key"
    assert _set(client, key, "k5", "overwrite is fine").status_code == 200
    assert _get(client, key, "k5").json["data"]["value"] == "overwrite is fine"


def test_settings_need_credentials(client):
    resp = client.simulate_post("/api/account/settings/set", json={"key": "a", "value": 1})
    assert resp.status_code == 401


# --- usage and self user ---------------------------------------------------------------


def test_usage_counters_after_paid_calls(client, user):
    account_id, username, key = user
    for i in range(3):
        resp = client.simulate_post("/zapier/v1/echo", json={"message": f"m{i}"},
                                    headers=bearer(key))
        assert resp.status_code == 200, resp.text
    data = client.simulate_get("/api/account/data", headers=bearer(key)).json["data"]
    assert data["usages"] == 3 and data["credits"] == 2

    usage = client.simulate_get("/api/usage", headers=bearer(key))
    assert usage.status_code == 200, usage.text
    body = usage.json["data"]
    assert body["days"] == 30 and body["totalCalls"] == 3 and body["totalCredits"] == 3
    assert body["actions"] == [{"action": "echo", "calls": 3, "credits": 3, "refunds": 0,
                                "creditsRefunded": 0, "netCredits": 3}]
    assert client.simulate_get("/api/usage", headers=bearer(key),
                               params={"userId": account_id}).status_code == 200
    assert client.simulate_get("/api/usage", headers=bearer(key),
                               params={"userId": "acct_other"}).status_code == 404


def test_self_user(client, user):
    account_id, username, key = user
    token = _login(client, username).json["data"]["access_token"]
    resp = client.simulate_get("/api/user/self", headers=bearer(token))
    assert resp.status_code == 200, resp.text
    data = resp.json["data"]
    assert data["userID"] == account_id and data["username"] == username
    assert data["isAuthenticated"] is True and data["isAtLeast18Confirmed"] is False
    assert data["tier"] == 0 and data["subscriptions"] == [] and data["itemCount"] == 0
    assert data["credential"]["kind"] == "bearer"
    uuid.UUID(data["sessionID"])
    # the seed's isAtLeast18Confirmed query parameter is remembered
    client.simulate_get("/api/user/self", headers=bearer(key),
                        params={"isAtLeast18Confirmed": "true"})
    again = client.simulate_get("/api/user/self", headers=bearer(key)).json["data"]
    assert again["isAtLeast18Confirmed"] is True
    assert again["sessionID"] != data["sessionID"]  # another credential, another session
