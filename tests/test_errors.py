"""The error envelope of CONTRACT 1 on every kind of error the gateway produces, through
the real app: status and code agree, meta carries an ISO timestamp and the request id
(also sent as X-Request-ID), field-level details where they apply, and nothing internal
(stack traces, SQL, paths) ever leaks."""

from __future__ import annotations

import json
import re

import pytest
from falcon.testing import TestClient

from conftest import ADMIN, bearer, ledger_sum, make_app

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEAKS = ("Traceback", 'File "', "/work/", "site-packages", ".py", "psycopg2", "peewee",
         "SELECT ", "INSERT ", "UPDATE ")
ECHO = "/zapier/v1/echo"


def assert_error(resp, status, code):
    """The full error envelope; returns the ``error`` object for further checks."""
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json
    assert set(body) == {"success", "error", "meta"}
    assert body["success"] is False
    error = body["error"]
    assert error["code"] == code
    assert error["statusCode"] == status
    assert isinstance(error["message"], str) and error["message"]
    meta = body["meta"]
    assert ISO_MS.match(meta["timestamp"]), meta["timestamp"]
    assert meta["requestId"] == resp.headers["X-Request-ID"]
    for leak in LEAKS:
        assert leak not in resp.text, (leak, resp.text)
    return error


def _details(error):
    return {d["field"]: d["problem"] for d in error["details"]}


# --- routing and methods ---------------------------------------------------------------


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("POST", "/zapier/v2/echo"), ("GET", "/admin"),
    ("GET", "/zapier/v1/echo/extra/deep"), ("DELETE", "/api/key"),
])
def test_unknown_route_is_not_found(client, method, path):
    error = assert_error(client.simulate_request(method, path), 404, "NOT_FOUND")
    assert "details" not in error


def test_unknown_route_needs_no_credentials_and_ignores_bad_ones(client):
    resp = client.simulate_get("/nope", headers={"Authorization": "Digest x"})
    assert_error(resp, 404, "NOT_FOUND")


def test_wrong_method_on_an_action_is_405_with_allow(client, make_account):
    _, key = make_account(credits=1)
    resp = client.simulate_get(ECHO, headers=bearer(key))
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in resp.headers["Allow"]
    assert "GET" not in resp.headers["Allow"].split(", ")


def test_wrong_method_on_health_is_405_with_allow(client):
    resp = client.simulate_delete("/health")
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in resp.headers["Allow"]
    resp = client.simulate_post("/health", json={})
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")


def test_wrong_method_on_key_routes(client, make_account):
    _, key = make_account()
    resp = client.simulate_get("/api/key/key_abc/revoke", headers=bearer(key))
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "DELETE" in resp.headers["Allow"]
    resp = client.simulate_put("/api/key/list", headers=bearer(key), json={})
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")


# --- actions: missing, unknown --------------------------------------------------------


@pytest.mark.parametrize("path", ["/zapier/v1", "/zapier/v1/"])
def test_action_route_without_an_action_is_missing_action(client, make_account, path):
    _, key = make_account(credits=5)
    error = assert_error(client.simulate_post(path, json={"message": "x"}, headers=bearer(key)),
                         400, "MISSING_ACTION")
    assert "action" in error["message"].lower()


def test_unknown_action_is_invalid_action(client, make_account):
    account_id, key = make_account(credits=5)
    error = assert_error(client.simulate_post("/zapier/v1/no-such-action", json={},
                                              headers=bearer(key)), 404, "INVALID_ACTION")
    assert "no-such-action" in error["message"]
    assert ledger_sum(account_id) == (5, 5)


# --- INVALID_REQUEST -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"{bad json", b'{"message": "x",}', b"\xff\xfe", b"nul"])
def test_malformed_json_is_invalid_request(client, make_account, raw):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, body=raw, headers={
        **bearer(key), "Content-Type": "application/json"})
    error = assert_error(resp, 400, "INVALID_REQUEST")
    assert "json" in error["message"].lower()
    assert ledger_sum(account_id) == (5, 5)


@pytest.mark.parametrize("payload", [[], ["message"], "message", 42, None, True])
def test_body_that_is_not_an_object_is_invalid_request(client, make_account, payload):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, body=json.dumps(payload), headers={
        **bearer(key), "Content-Type": "application/json"})
    error = assert_error(resp, 400, "INVALID_REQUEST")
    assert "object" in error["message"].lower()
    assert ledger_sum(account_id) == (5, 5)


@pytest.mark.parametrize("body,expected", [
    ({"message": 5}, {"message": "must be of type string"}),
    ({"message": "x", "uppercase": "yes"}, {"uppercase": "must be of type boolean"}),
    ({}, {"message": "is required"}),
    ({"uppercase": True}, {"message": "is required"}),
    ({"message": ""}, {"message": "must not be empty"}),
    ({"message": "x" * 2001}, {"message": "must be at most 2000 characters"}),
    ({"message": "x", "bogus": 1}, {"bogus": "is not a field of this action"}),
    ({"message": 5, "bogus": 1}, {"message": "must be of type string",
                                  "bogus": "is not a field of this action"}),
    ({"message": "x", "client_reference_id": 7},
     {"client_reference_id": "must be of type string"}),
])
def test_field_problems_are_listed_in_details(client, make_account, body, expected):
    account_id, key = make_account(credits=5)
    error = assert_error(client.simulate_post(ECHO, json=body, headers=bearer(key)),
                         400, "INVALID_REQUEST")
    assert _details(error) == expected
    for detail in error["details"]:
        assert set(detail) == {"field", "problem"}
    assert ledger_sum(account_id) == (5, 5)  # a refused call is never charged


@pytest.mark.parametrize("path,body,field", [
    ("/api/key/generate", '{"description": "a\\u0000b"}', "description"),
    ("/zapier/v1/echo", '{"message": "a\\u0000b"}', "message"),
    ("/zapier/v1/echo", '{"message": "ok", "nested": {"list": ["x", "\\u0000"]}}',
     "nested.list.1"),
])
def test_nul_characters_are_invalid_request_not_internal_error(client, make_account, path,
                                                               body, field):
    """PostgreSQL text cannot hold NUL; the gateway refuses it instead of failing with 500."""
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(path, body=body, headers={
        **bearer(key), "Content-Type": "application/json"})
    error = assert_error(resp, 400, "INVALID_REQUEST")
    assert error["details"] == [{"field": field, "problem": "must not contain NUL"}]
    assert ledger_sum(account_id) == (5, 5)


@pytest.mark.parametrize("depth", [990, 5000, 100_000])
def test_deeply_nested_json_is_invalid_request(client, make_account, depth):
    account_id, key = make_account(credits=5)
    body = '{"message": ' + "[" * depth + "]" * depth + "}"
    resp = client.simulate_post(ECHO, body=body, headers={
        **bearer(key), "Content-Type": "application/json"})
    assert_error(resp, 400, "INVALID_REQUEST")
    assert ledger_sum(account_id) == (5, 5)


def test_bad_query_parameter_is_invalid_request(client, make_account):
    _, key = make_account()
    for query in ("limit=abc", "limit=0", "limit=101", "type=bogus", "cursor=zzz"):
        resp = client.simulate_get("/zapier/v1/credits/transactions", query_string=query,
                                   headers=bearer(key))
        error = assert_error(resp, 400, "INVALID_REQUEST")
        assert error["details"][0]["field"] == query.split("=")[0]


# --- credits, sizes, media types -------------------------------------------------------


def test_insufficient_credits_debits_nothing(client, make_account):
    account_id, key = make_account(credits=0)
    error = assert_error(client.simulate_post(ECHO, json={"message": "x"}, headers=bearer(key)),
                         403, "INSUFFICIENT_CREDITS")
    assert error["message"] == "You have insufficient credits to perform this action"
    assert ledger_sum(account_id) == (0, 0)
    ledger = client.simulate_get("/zapier/v1/credits/transactions", headers=bearer(key))
    assert ledger.json["data"]["items"] == []
    assert client.simulate_get("/zapier/v1/credits", headers=bearer(key)).json["data"][
        "balance"] == 0


def test_insufficient_credits_after_spending_down(client, make_account):
    account_id, key = make_account(credits=1)
    assert client.simulate_post(ECHO, json={"message": "a"}, headers=bearer(key)).status_code \
        == 200
    assert_error(client.simulate_post(ECHO, json={"message": "b"}, headers=bearer(key)),
                 403, "INSUFFICIENT_CREDITS")
    items = client.simulate_get("/zapier/v1/credits/transactions",
                                headers=bearer(key)).json["data"]["items"]
    assert [i["type"] for i in items] == ["debit", "grant"]
    assert ledger_sum(account_id) == (0, 0)


def test_body_over_the_limit_is_payload_too_large(config, schema, make_account):
    small = TestClient(make_app(config.replace(max_body_bytes=100)))
    account_id, key = make_account(credits=5)
    resp = small.simulate_post(ECHO, json={"message": "x" * 200}, headers=bearer(key))
    error = assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    assert "100" in error["message"]
    # under the limit the same app serves the call
    ok = small.simulate_post(ECHO, json={"message": "x"}, headers=bearer(key))
    assert ok.status_code == 200
    assert ledger_sum(account_id) == (4, 4)


def test_payload_too_large_is_checked_before_credentials(config, schema):
    small = TestClient(make_app(config.replace(max_body_bytes=100)))
    resp = small.simulate_post(ECHO, body=b"x" * 500,
                               headers={"Content-Type": "application/json"})
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


def test_default_limit_refuses_a_two_megabyte_body(client, make_account):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, body=b'{"message": "' + b"x" * (2 * 1024 * 1024) + b'"}',
                                headers={**bearer(key), "Content-Type": "application/json"})
    assert_error(resp, 413, "PAYLOAD_TOO_LARGE")
    assert ledger_sum(account_id) == (5, 5)


@pytest.mark.parametrize("content_type,body", [
    ("application/x-www-form-urlencoded", "message=hi"),
    ("text/plain", "hi"),
    ("multipart/form-data; boundary=xyz", "--xyz\r\n\r\nhi\r\n--xyz--\r\n"),
])
def test_non_json_body_to_an_action_is_unsupported_media_type(client, make_account,
                                                              content_type, body):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, body=body,
                                headers={**bearer(key), "Content-Type": content_type})
    assert_error(resp, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert ledger_sum(account_id) == (5, 5)


def test_json_with_charset_is_accepted(client, make_account):
    _, key = make_account(credits=1)
    resp = client.simulate_post(ECHO, body=json.dumps({"message": "hi"}), headers={
        **bearer(key), "Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 200, resp.text


# --- request ids -----------------------------------------------------------------------


@pytest.mark.parametrize("given", ["zap-run-123", "abc.DEF_9:x", "a" * 128])
def test_a_sane_request_id_is_kept(client, make_account, given):
    _, key = make_account(credits=1)
    resp = client.simulate_post(ECHO, json={"message": "x"},
                                headers={**bearer(key), "X-Request-ID": given})
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == given
    assert resp.json["meta"]["requestId"] == given
    # on errors too
    err = client.simulate_get("/nope", headers={"X-Request-ID": given})
    assert_error(err, 404, "NOT_FOUND")
    assert err.json["meta"]["requestId"] == given


@pytest.mark.parametrize("given", ["has space", "a" * 129, "<script>", "id;drop", "ünï", "a/b"])
def test_an_insane_request_id_is_replaced(client, given):
    resp = client.simulate_get("/nope", headers={"X-Request-ID": given})
    assert_error(resp, 404, "NOT_FOUND")
    rid = resp.headers["X-Request-ID"]
    assert rid != given and re.fullmatch(r"req_[0-9a-f]{24}", rid)


def test_generated_request_ids_are_unique(client):
    ids = {client.simulate_get("/nope").headers["X-Request-ID"] for _ in range(20)}
    assert len(ids) == 20


def test_success_meta_matches_the_error_meta_format(client, make_account):
    _, key = make_account(credits=1)
    resp = client.simulate_get("/zapier/v1/me", headers=bearer(key))
    assert resp.json["success"] is True
    assert ISO_MS.match(resp.json["meta"]["timestamp"])
    assert resp.json["meta"]["requestId"] == resp.headers["X-Request-ID"]


# --- admin credentials -----------------------------------------------------------------


def test_admin_routes_without_admin_key_configured_are_forbidden(config, schema):
    closed = TestClient(make_app(config.replace(admin_key="")))
    for headers in ({}, dict(ADMIN), {"X-Administration-Key": ""}):
        resp = closed.simulate_post("/admin/accounts", json={"username": "nobody1"},
                                    headers=headers)
        assert_error(resp, 403, "FORBIDDEN")
    assert_error(closed.simulate_put("/admin/prices/echo", json={"credits": 0}, headers=ADMIN),
                 403, "FORBIDDEN")


def test_admin_routes_with_a_wrong_key_fail(client):
    resp = client.simulate_post("/admin/accounts", json={"username": "nobody2"},
                                headers={"X-Administration-Key": "wrong"})
    assert_error(resp, 401, "AUTH_FAILED")
    resp = client.simulate_post("/admin/accounts", json={"username": "nobody2"},
                                headers={"X-Administration-Key": ADMIN["X-Administration-Key"]
                                         + "x"})
    assert_error(resp, 401, "AUTH_FAILED")


def test_admin_routes_without_the_header_are_missing_auth_header(client, make_account):
    assert_error(client.simulate_post("/admin/accounts", json={"username": "nobody3"}),
                 401, "MISSING_AUTH_HEADER")
    # an account's own API key is not an admin credential
    _, key = make_account()
    assert_error(client.simulate_post("/admin/accounts", json={"username": "nobody3"},
                                      headers=bearer(key)), 401, "MISSING_AUTH_HEADER")


def test_admin_route_errors_use_the_envelope(client):
    error = assert_error(client.simulate_post("/admin/accounts", headers=ADMIN,
                                              json={"username": "ok-name", "credits": -1}),
                         400, "INVALID_REQUEST")
    assert _details(error) == {"credits": "non-negative integer"}
    assert_error(client.simulate_get("/admin/accounts/acct_missing", headers=ADMIN),
                 404, "NOT_FOUND")
    assert_error(client.simulate_post("/admin/accounts", headers=ADMIN, body="[1]"),
                 400, "INVALID_REQUEST")


def test_chunked_body_is_read_not_dropped(server, admin_headers):
    """A chunked JSON body (no Content-Length) is parsed, within the size limit."""
    import http.client
    import json as _json
    from urllib.parse import urlparse

    import requests

    made = requests.post(server + "/admin/accounts", headers=admin_headers,
                         json={"username": "chunky" + str(id(server) % 100000), "credits": 3})
    key = made.json()["data"]["api_key"]

    def gen():
        yield b'{"message": '
        yield b'"in chunks"}'

    resp = requests.post(server + "/zapier/v1/echo", data=gen(),
                         headers={"Authorization": f"Bearer {key}",
                                  "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"]["message"] == "in chunks"
    url = urlparse(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    big = b'{"message": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    conn.request("POST", "/zapier/v1/echo", body=iter([big]), encode_chunked=True,
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                          "Transfer-Encoding": "chunked"})
    answer = conn.getresponse()
    assert answer.status == 413
    assert _json.loads(answer.read())["error"]["code"] == "PAYLOAD_TOO_LARGE"
