"""Bad input is refused at the edge, in one place each, through the real app (and a real
gunicorn where raw bytes matter): unpaired surrogates and NUL in bodies, control characters
in path and query parameters, raw non-ASCII credentials, integers beyond their documented
bounds, and non-ASCII digits. Never a 500, always the envelope, nothing charged."""

from __future__ import annotations

import base64
import http.client
import json
import re
import uuid
from urllib.parse import urlparse

import pytest

from conftest import ADMIN, bearer, ledger_sum
from gateway.routes import route_table

ECHO = "/zapier/v1/echo"
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
METHODS = ("get", "post", "put", "patch", "delete")


def assert_envelope(resp, status, code):
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = json.loads(resp.text)  # valid JSON (and UTF-8), whatever was sent
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["statusCode"] == status
    assert body["meta"]["requestId"] == resp.headers["X-Request-ID"]
    return body["error"]


@pytest.fixture
def funded(client, make_account):
    """(account_id, headers) of a funded account on a plan these loops cannot exhaust."""
    assert client.simulate_put("/admin/plans/edge-fast", headers=ADMIN, json={
        "perMinute": 100000, "perDay": 1000000}).status_code == 200
    account_id, key = make_account(credits=50, plan="edge-fast")
    return account_id, bearer(key)


# --- item 2: unpaired UTF-16 surrogates (and NUL) in bodies --------------------------------


@pytest.mark.parametrize("raw,field", [
    (rb'{"message": "\ud800"}', "message"),
    (rb'{"message": "ok\udfff"}', "message"),
    (rb'{"message": "ok", "nested": {"list": ["x", {"deep": "\udc00"}]}}', "nested.list.1.deep"),
    (rb'{"message": "ok", "\ud800": "key"}', "\\ud800"),
])
def test_an_unpaired_surrogate_in_a_json_body_is_refused_before_charging(
        client, make_account, raw, field):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, body=raw, headers={**bearer(key), **JSON})
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"] == [{"field": field,
                                 "problem": "must not contain unpaired UTF-16 surrogates"}]
    assert ledger_sum(account_id) == (5, 5)


def test_a_paired_surrogate_escape_is_an_ordinary_character(client, make_account):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, body=rb'{"message": "smile \ud83d\ude00"}',
                                headers={**bearer(key), **JSON})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"]["message"] == "smile \U0001F600"
    assert ledger_sum(account_id) == (4, 4)


def test_every_bad_string_is_listed(client, make_account):
    account_id, key = make_account(credits=5)
    resp = client.simulate_post(ECHO, headers={**bearer(key), **JSON},
                                body=rb'{"message": "\ud800", "b": ["ok", "a\u0000"]}')
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"] == [
        {"field": "message", "problem": "must not contain unpaired UTF-16 surrogates"},
        {"field": "b.1", "problem": "must not contain NUL"}]
    assert ledger_sum(account_id) == (5, 5)


def test_surrogates_are_refused_on_every_json_route(client, make_account):
    """Not only actions: the parser every JSON body goes through refuses them."""
    _, key = make_account(credits=5)
    for method, path, headers in [
            ("POST", "/api/key/generate", bearer(key)),
            ("POST", "/zapier/v1/hooks", bearer(key)),
            ("PUT", "/zapier/v1/credits/low-threshold", bearer(key)),
            ("POST", "/admin/accounts", ADMIN),
            ("POST", "/api/account/create", {})]:
        resp = client.simulate_request(method, path, headers={**headers, **JSON},
                                       body=rb'{"description": "\ud800", "username": "x"}')
        assert_envelope(resp, 400, "INVALID_REQUEST")


def test_nul_in_a_form_body_is_invalid_request(client, make_account):
    resp = client.simulate_post("/auth/token", headers=FORM,
                                body="username=a%00b&password=whatever1&grant_type=password")
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"] == [{"field": "username", "problem": "must not contain NUL"}]


@pytest.mark.parametrize("raw", [rb'{"grant_type": "refresh_token", "refresh_token": "\ud800"}',
                                 rb'{"grant_type": "refresh_token", "client_id": "a\u0000"}'])
def test_oauth_token_endpoint_treats_bad_strings_as_malformed(client, raw):
    resp = client.simulate_post("/oauth/token", body=raw, headers=JSON)
    assert resp.status_code == 400, resp.text
    assert "error" in resp.json  # RFC 6749 JSON, not a 500


def test_chunked_body_with_a_surrogate_is_refused_through_gunicorn(server, admin_headers):
    import requests

    made = requests.post(server + "/admin/accounts", headers=admin_headers,
                         json={"username": "edge" + uuid.uuid4().hex[:8], "credits": 3})
    account_id, key = made.json()["data"]["id"], made.json()["data"]["api_key"]

    def chunks():
        yield b'{"message": '
        yield rb'"\ud800"}'

    resp = requests.post(server + ECHO, data=chunks(), headers={**bearer(key), **JSON})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["details"][0]["field"] == "message"
    assert ledger_sum(account_id) == (3, 3)


# --- item 5: control characters in path and query parameters ------------------------------


def _routes_with_path_params(app):
    for path, resource in route_table(app.deps):
        names = re.findall(r"{(\w+)}", path)
        if names:
            for method in METHODS:
                if hasattr(resource, f"on_{method}"):
                    yield path, names, method


def test_a_control_character_in_any_path_parameter_is_not_found(client, funded):
    """Every route of the route table with a path parameter, every method, every parameter:
    404 NOT_FOUND in the envelope, never a 500, nothing charged (new routes are covered
    without touching this test)."""
    account_id, headers = funded
    headers = {**headers, **ADMIN, **JSON}
    wrong, seen = [], set()
    for path, names, method in _routes_with_path_params(client.app):
        for bad_name in names:
            for bad in ("a%00b", "%00", "a%1fb", "a%7f"):
                url = path
                for name in names:
                    url = url.replace("{" + name + "}", bad if name == bad_name else "x1")
                resp = client.simulate_request(method.upper(), url, headers=headers, body="{}")
                seen.add(path)
                try:
                    assert_envelope(resp, 404, "NOT_FOUND")
                except (AssertionError, ValueError, KeyError):
                    wrong.append((method, url, resp.status_code, resp.text[:200]))
    assert not wrong, wrong
    for path in ("/zapier/v1/receipts/{txn_receipt}", "/zapier/v1/compositions/{uid}",
                 "/zapier/v1/compositions/{uid}/cancel", "/api/key/{key_id}/revoke",
                 "/zapier/v1/hooks/{hook_id}", "/admin/accounts/{account_id}",
                 "/admin/accounts/{account_id}/keys", "/admin/keys/{key_id}",
                 "/admin/accounts/{account_id}/credits"):
        assert path in seen
    assert ledger_sum(account_id) == (50, 50)


@pytest.mark.parametrize("path,name", [
    ("/zapier/v1/compositions", "action"), ("/zapier/v1/compositions", "cursor"),
    ("/zapier/v1/compositions", "status"), ("/zapier/v1/credits/transactions", "cursor"),
    ("/zapier/v1/credits/transactions", "type"), ("/getItemStatus", "imageID"),
    ("/list-posts", "searchText"), ("/list-posts", "cursor"), ("/api/usage", "userId"),
    ("/zapier/v1/hooks", "cursor"), ("/api/key/list", "cursor"), ("/zapier/v1/me", "any"),
])
@pytest.mark.parametrize("bad", ["a%00b", "%00", "a%01", "a%1b[0m", "a%7f"])
def test_a_control_character_in_a_query_parameter_is_invalid_request(client, funded, path,
                                                                     name, bad):
    _, headers = funded
    resp = client.simulate_get(path, query_string=f"{name}={bad}", headers=headers)
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"] == [{"field": name, "problem": "must not contain control characters"}]


def test_a_control_character_in_a_query_parameter_name_is_invalid_request(client, funded):
    _, headers = funded
    resp = client.simulate_get("/zapier/v1/compositions", query_string="a%00b=1",
                               headers=headers)
    assert_envelope(resp, 400, "INVALID_REQUEST")


def test_every_route_refuses_nul_in_the_query_with_an_envelope(client, funded):
    account_id, headers = funded
    headers = {**headers, **ADMIN, **JSON}
    wrong = []
    for path, resource in route_table(client.app.deps):
        url = re.sub(r"{\w+}", "x1", path)
        for method in METHODS:
            if hasattr(resource, f"on_{method}"):
                resp = client.simulate_request(method.upper(), url, query_string="q=%00",
                                               headers=headers, body="{}")
                try:
                    assert_envelope(resp, 400, "INVALID_REQUEST")
                except (AssertionError, ValueError, KeyError):
                    wrong.append((method, url, resp.status_code, resp.text[:200]))
    assert not wrong, wrong
    assert ledger_sum(account_id) == (50, 50)


def test_free_text_whitespace_in_a_query_is_accepted(client, funded):
    _, headers = funded
    resp = client.simulate_get("/list-posts", query_string="searchText=a%09b%0Ac%0D",
                               headers=headers)
    assert resp.status_code == 200, resp.text


# --- item 7: raw non-ASCII and malformed credentials --------------------------------------


BAD_CREDENTIALS = [
    ("Authorization", "Basic \xff\xfe\xfd"),  # raw bytes where base64 belongs
    ("Authorization", "Basic " + base64.b64encode(b"\xff\xfe:").decode()),  # not UTF-8
    ("Authorization", "Basic " + base64.b64encode("gwk_é:".encode()).decode()),  # not ASCII
    ("Authorization", "Basic " + base64.b64encode(b"gwk_\x00:").decode()),
    ("Authorization", "Bearer gwk_\xff\xfe"),
    ("Authorization", "Bearer gwo_\x01abc"),
    ("Authorization", "gwk_\xe9\xe9"),
    ("X-API-Key", "gwk_\xff"),
]


@pytest.mark.parametrize("header,value", BAD_CREDENTIALS)
def test_malformed_credentials_are_auth_failed(client, header, value):
    error = assert_envelope(client.simulate_get("/zapier/v1/me", headers={header: value}),
                            401, "AUTH_FAILED")
    assert "details" not in error


@pytest.mark.parametrize("header,value", [(h, v) for h, v in BAD_CREDENTIALS
                                          if not re.search("[\x00-\x1f]", v)])
def test_raw_credential_bytes_through_gunicorn_are_auth_failed(server, header, value):
    """Bytes above 0x7F reach the app as latin-1 (gunicorn refuses raw control bytes in
    header values itself, before the app)."""
    url = urlparse(server)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("GET", "/zapier/v1/me")
        conn.putheader(header, value.encode("latin-1"))  # the bytes as sent, not re-encoded
        conn.endheaders()
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 401, body
    assert body["error"]["code"] == "AUTH_FAILED"


def test_a_good_basic_credential_still_works(client, make_account):
    _, key = make_account()
    token = base64.b64encode(f"{key}:".encode()).decode()
    resp = client.simulate_get("/zapier/v1/me", headers={"Authorization": f"Basic {token}"})
    assert resp.status_code == 200, resp.text


# --- item 8: integers beyond their documented bounds ---------------------------------------


LOW = "/zapier/v1/credits/low-threshold"


@pytest.mark.parametrize("value", [2**63, 2**64, 2**63 - 1, -1, -2**63, 10**12 + 1, 1.5,
                                   True, "5"])
def test_low_threshold_out_of_bounds_is_invalid_request(client, make_account, value):
    account_id, key = make_account(credits=5)
    resp = client.simulate_put(LOW, headers=bearer(key), json={"threshold": value})
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"][0]["field"] == "threshold"
    assert ledger_sum(account_id) == (5, 5)


@pytest.mark.parametrize("value", [0, 10**12, None])
def test_low_threshold_within_bounds_is_accepted(client, make_account, value):
    _, key = make_account()
    resp = client.simulate_put(LOW, headers=bearer(key), json={"threshold": value})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"] == {"threshold": value}


@pytest.mark.parametrize("body,field", [({}, "threshold"), ({"treshold": 5}, "treshold")])
def test_low_threshold_needs_its_one_field(client, make_account, body, field):
    _, key = make_account()
    error = assert_envelope(client.simulate_put(LOW, headers=bearer(key), json=body),
                            400, "INVALID_REQUEST")
    assert field in {d["field"] for d in error["details"]}


@pytest.mark.parametrize("path,name", [
    ("/zapier/v1/credits/transactions", "limit"), ("/zapier/v1/compositions", "limit"),
    ("/zapier/v1/hooks", "limit"), ("/api/key/list", "limit"), ("/list-posts", "limit"),
    ("/list-posts", "itemsPerPage"), ("/list-posts", "pageNo"), ("/api/usage", "days"),
    ("/zapier/v1/compositions/cmp_x", "wait"),
])
@pytest.mark.parametrize("value", [str(2**63), str(2**64), str(2**63 - 1), "-1", "0",
                                   "9" * 5000])
def test_integer_query_parameters_beyond_bounds_are_invalid_request(client, funded, path,
                                                                    name, value):
    _, headers = funded
    if name == "wait" and value == "0":
        return  # wait=0 is valid: answer at once
    resp = client.simulate_get(path, query_string=f"{name}={value}", headers=headers)
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"][0]["field"] == name


def test_integer_bounds_are_in_the_openapi_document(client):
    doc = client.simulate_get("/openapi.json").json
    paths = doc["paths"]

    def query(path, name, method="get"):
        params = paths[path][method].get("parameters", [])
        return next(p["schema"] for p in params if p["name"] == name)

    assert query("/list-posts", "pageNo")["maximum"] == 1_000_000
    for path in ("/zapier/v1/credits/transactions", "/zapier/v1/hooks", "/api/key/list",
                 "/zapier/v1/compositions", "/list-posts"):
        schema = query(path, "limit")
        assert (schema["minimum"], schema["maximum"]) == (1, 100), path
    assert (query("/api/usage", "days")["minimum"], query("/api/usage", "days")["maximum"]) \
        == (1, 365)
    body = paths[LOW]["put"]["requestBody"]["content"]["application/json"]["schema"]
    threshold = body["properties"]["threshold"]
    assert (threshold["minimum"], threshold["maximum"]) == (0, 10**12)


def test_a_forged_cursor_beyond_int64_is_invalid_request(client, funded):
    _, headers = funded
    for tag, path in (("l", "/zapier/v1/credits/transactions"), ("p", "/list-posts")):
        for value in (str(2**63), str(2**64), "-1", "١٠"):
            cursor = base64.urlsafe_b64encode(f"{tag}:{value}".encode()).decode()
            resp = client.simulate_get(path, query_string=f"cursor={cursor}", headers=headers)
            error = assert_envelope(resp, 400, "INVALID_REQUEST")
            assert error["details"][0]["field"] == "cursor"


# --- item 11: integer parameters are ASCII digits only -------------------------------------


@pytest.mark.parametrize("value", ["١٠", "²", "１０", "+5", " 5", "5 ", "1_0", "0x10", "1e1",
                                   "٣"])
@pytest.mark.parametrize("path,name", [
    ("/zapier/v1/credits/transactions", "limit"), ("/list-posts", "pageNo"),
    ("/api/usage", "days"), ("/zapier/v1/compositions/cmp_x", "wait"),
    ("/api/key/list", "limit"),
])
def test_integer_query_parameters_take_only_ascii_digits(client, funded, path, name, value):
    _, headers = funded
    resp = client.simulate_get(path, params={name: value}, headers=headers)
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"][0]["field"] == name


@pytest.mark.parametrize("path,name", [("/zapier/v1/credits/transactions", "limit"),
                                       ("/list-posts", "pageNo"), ("/api/usage", "days")])
def test_an_empty_integer_parameter_is_not_an_integer(client, funded, path, name):
    _, headers = funded
    resp = client.simulate_get(path, query_string=f"{name}=", headers=headers)
    error = assert_envelope(resp, 400, "INVALID_REQUEST")
    assert error["details"][0]["field"] == name


def test_ascii_digits_are_accepted(client, funded):
    _, headers = funded
    resp = client.simulate_get("/zapier/v1/credits/transactions", query_string="limit=10",
                               headers=headers)
    assert resp.status_code == 200, resp.text
    resp = client.simulate_get("/api/usage", query_string="days=7", headers=headers)
    assert resp.status_code == 200 and resp.json["data"]["days"] == 7
