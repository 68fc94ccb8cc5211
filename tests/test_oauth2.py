"""The OAuth2 authorization server (CONTRACT 2) driven over HTTP as a client would: the
consent page parsed with a real HTML parser, the authorization-code + PKCE flow, refresh
rotation with its grace period (raced from real threads against gunicorn), revocation,
scopes, client authentication and the rate limits OAuth tokens share per client and user.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html.parser
import secrets
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests
from falcon.testing import TestClient

from conftest import ADMIN, free_port, make_app, start_gunicorn
from core.clock import ManualClock
from metering import db as dbmod
from oauth.provider_models import OAuthClient, OAuthToken

REDIRECT = "https://zapier.example/dashboard/auth/oauth/return/App123CLIAPI/"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ME = "/zapier/v1/me"
PASSWORD = "correct horse battery"


class FormParser(html.parser.HTMLParser):
    """Every <form>'s action and inputs, and the page's text (what a browser would show)."""

    def __init__(self):
        super().__init__()
        self.forms, self.text = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "method": attrs.get("method"),
                               "inputs": {}, "buttons": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["inputs"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "button" and self.forms and attrs.get("name"):
            self.forms[-1]["buttons"].setdefault(attrs["name"], []).append(attrs.get("value"))

    def handle_data(self, data):
        self.text.append(data)


def parse_page(text):
    parser = FormParser()
    parser.feed(text)
    return parser.forms, " ".join(" ".join(parser.text).split())


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def oauth_client(client):
    def make(scopes=None, redirect_uris=(REDIRECT,), name="Zapier <test> & co"):
        body = {"name": name, "redirect_uris": list(redirect_uris)}
        if scopes is not None:
            body["scopes"] = scopes
        resp = client.simulate_post("/admin/oauth/clients", json=body, headers=ADMIN)
        assert resp.status_code == 201, resp.text
        data = resp.json["data"]
        return data["client_id"], data["client_secret"]

    return make


@pytest.fixture
def user(client):
    username = "u" + uuid.uuid4().hex[:10]
    resp = client.simulate_post("/admin/accounts", headers=ADMIN,
                                json={"username": username, "password": PASSWORD, "credits": 5})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["id"], username


def authorize(client, client_id, username, *, scope="account:read credits:read",
              redirect_uri=REDIRECT, state="st-123", challenge=None, password=PASSWORD,
              method="S256", decision="allow"):
    """GET the consent page, fill in its form as a browser would, POST it; returns the
    POST response (a redirect on success)."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "scope": scope, "state": state, "code_challenge": challenge or pkce()[1],
              "code_challenge_method": method}
    page = client.simulate_get("/oauth/authorize", query_string=urlencode(params))
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    forms, _ = parse_page(page.text)
    form = forms[0]
    fields = dict(form["inputs"], username=username, password=password, decision=decision)
    cookie = page.cookies["gw_oauth_csrf"].value
    return client.simulate_post(form["action"], body=urlencode(fields), headers=FORM,
                                cookies={"gw_oauth_csrf": cookie})


def code_from(resp, state="st-123"):
    assert resp.status_code == 302, resp.text
    location = urlparse(resp.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == [state]
    return query["code"][0]


def token_call(client, fields, headers=None):
    return client.simulate_post("/oauth/token", body=urlencode(fields),
                                headers={**FORM, **(headers or {})})


def exchange(client, client_id, secret, code, verifier, redirect_uri=REDIRECT):
    return token_call(client, {"grant_type": "authorization_code", "code": code,
                               "redirect_uri": redirect_uri, "code_verifier": verifier},
                      basic(client_id, secret))


def full_flow(client, client_id, secret, username, **kw):
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, username, challenge=challenge, **kw))
    resp = exchange(client, client_id, secret, code, verifier)
    assert resp.status_code == 200, resp.text
    return resp.json


# --- the flow -----------------------------------------------------------------------


def test_authorization_code_flow_with_pkce_end_to_end(client, oauth_client, user):
    account_id, username = user
    client_id, secret = oauth_client()
    verifier, challenge = pkce()
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": "account:read credits:read", "state": "st-123",
              "code_challenge": challenge, "code_challenge_method": "S256"}
    page = client.simulate_get("/oauth/authorize", query_string=urlencode(params))
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    forms, text = parse_page(page.text)
    assert "Zapier <test> & co" in text  # the client's name, escaped in the HTML
    assert "<test>" not in page.text
    assert "See your credit balance, transactions and receipts" in text
    assert "See your username, balance and plan" in text
    (form,) = forms
    assert form["method"] == "post" and form["action"] == "/oauth/authorize"
    assert form["inputs"]["state"] == "st-123"
    assert form["inputs"]["client_id"] == client_id
    assert form["inputs"]["csrf_token"]
    assert set(form["buttons"]["decision"]) == {"allow", "deny"}
    cookie = page.cookies["gw_oauth_csrf"]
    assert cookie.http_only

    fields = dict(form["inputs"], username=username, password=PASSWORD, decision="allow")
    resp = client.simulate_post("/oauth/authorize", body=urlencode(fields), headers=FORM,
                                cookies={"gw_oauth_csrf": cookie.value})
    code = code_from(resp)

    tokens = exchange(client, client_id, secret, code, verifier)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json
    assert "success" not in body  # plain RFC 6749 JSON, not the envelope
    assert body["token_type"] == "Bearer"
    assert body["access_token"].startswith("gwo_")
    assert body["refresh_token"].startswith("gwr_")
    assert body["expires_in"] == 3600
    assert set(body["scope"].split()) == {"account:read", "credits:read"}
    assert tokens.headers["cache-control"] == "no-store"

    me = client.simulate_get(ME, headers=bearer(body["access_token"]))
    assert me.status_code == 200, me.text
    data = me.json["data"]
    assert data["id"] == account_id and data["username"] == username
    assert data["credential"] == {"kind": "oauth", "id": f"{client_id}:{account_id}"}
    assert int(me.headers["X-RateLimit-Limit"]) == 60

    # only hashes are stored
    with dbmod.connection():
        row = OAuthToken.get(OAuthToken.account == account_id)
        stored = OAuthClient.get_by_id(client_id)
    assert body["access_token"] not in (row.access_hash, row.refresh_hash)
    assert row.access_hash == hashlib.sha256(body["access_token"].encode()).hexdigest()
    assert stored.secret_hash == hashlib.sha256(secret.encode()).hexdigest()


def test_client_may_authenticate_in_the_body(client, oauth_client, user):
    client_id, secret = oauth_client()
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, user[1], challenge=challenge))
    resp = token_call(client, {"grant_type": "authorization_code", "code": code,
                               "redirect_uri": REDIRECT, "code_verifier": verifier,
                               "client_id": client_id, "client_secret": secret})
    assert resp.status_code == 200, resp.text
    refreshed = token_call(client, {"grant_type": "refresh_token",
                                    "refresh_token": resp.json["refresh_token"],
                                    "client_id": client_id, "client_secret": secret})
    assert refreshed.status_code == 200, refreshed.text


def test_token_endpoint_accepts_a_json_body(client, oauth_client, user):
    client_id, secret = oauth_client()
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, user[1], challenge=challenge))
    resp = client.simulate_post("/oauth/token", json={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id, "client_secret": secret})
    assert resp.status_code == 200, resp.text


def test_wrong_client_secret_is_invalid_client(client, oauth_client, user):
    client_id, secret = oauth_client()
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, user[1], challenge=challenge))
    resp = exchange(client, client_id, secret + "x", code, verifier)
    assert resp.status_code == 401
    assert resp.json["error"] == "invalid_client"
    other_id, other_secret = oauth_client()
    resp = exchange(client, other_id, other_secret, code, verifier)  # another client's code
    assert resp.status_code == 400 and resp.json["error"] == "invalid_grant"
    assert exchange(client, client_id, secret, code, verifier).status_code == 200


# --- the code and PKCE --------------------------------------------------------------


def test_wrong_code_verifier_is_invalid_grant(client, oauth_client, user):
    client_id, secret = oauth_client()
    code = code_from(authorize(client, client_id, user[1]))
    resp = exchange(client, client_id, secret, code, pkce()[0])
    assert resp.status_code == 400
    assert resp.json["error"] == "invalid_grant"
    missing = token_call(client, {"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": REDIRECT}, basic(client_id, secret))
    assert missing.status_code == 400 and missing.json["error"] == "invalid_request"


def test_plain_or_missing_pkce_is_refused_at_the_redirect(client, oauth_client, user):
    client_id, _ = oauth_client()
    for extra in ({"code_challenge": "x" * 50, "code_challenge_method": "plain"},
                  {"code_challenge": "x" * 50}, {}):
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
                  "scope": "account:read", "state": "s1", **extra}
        resp = client.simulate_get("/oauth/authorize", query_string=urlencode(params))
        assert resp.status_code == 302, (extra, resp.text)
        query = parse_qs(urlparse(resp.headers["location"]).query)
        assert query["error"] == ["invalid_request"]
        assert query["state"] == ["s1"]
        assert "code" not in query


def test_a_reused_code_fails_and_revokes_what_it_issued(client, oauth_client, user):
    client_id, secret = oauth_client()
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, user[1], challenge=challenge))
    first = exchange(client, client_id, secret, code, verifier)
    assert first.status_code == 200
    assert client.simulate_get(ME, headers=bearer(first.json["access_token"])).status_code == 200
    again = exchange(client, client_id, secret, code, verifier)
    assert again.status_code == 400 and again.json["error"] == "invalid_grant"
    dead = client.simulate_get(ME, headers=bearer(first.json["access_token"]))
    assert dead.status_code == 401 and dead.json["error"]["code"] == "AUTH_FAILED"
    refresh = token_call(client, {"grant_type": "refresh_token",
                                  "refresh_token": first.json["refresh_token"]},
                         basic(client_id, secret))
    assert refresh.status_code == 400 and refresh.json["error"] == "invalid_grant"


def test_wrong_redirect_uri_at_the_token_endpoint(client, oauth_client, user):
    other = "https://zapier.example/other"
    client_id, secret = oauth_client(redirect_uris=(REDIRECT, other))
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, user[1], challenge=challenge))
    resp = exchange(client, client_id, secret, code, verifier, redirect_uri=other)
    assert resp.status_code == 400
    assert resp.json["error"] in ("invalid_request", "invalid_grant")
    assert exchange(client, client_id, secret, code, verifier).status_code == 200


def test_bad_client_or_redirect_uri_is_shown_on_the_page_never_redirected(client, oauth_client):
    client_id, _ = oauth_client()
    _, challenge = pkce()
    base = {"response_type": "code", "client_id": client_id, "scope": "account:read",
            "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}
    cases = [dict(base, redirect_uri="https://evil.example/steal"),
             dict(base, client_id="gwc_nope", redirect_uri=REDIRECT),
             {k: v for k, v in base.items() if k != "client_id"}]
    for params in cases:
        resp = client.simulate_get("/oauth/authorize", query_string=urlencode(params))
        assert resp.status_code == 400, resp.text
        assert "location" not in resp.headers
        assert resp.headers["content-type"].startswith("text/html")
        forms, text = parse_page(resp.text)
        assert forms == [] and "Authorization error" in text


def test_unknown_scope_goes_back_to_the_client_as_invalid_scope(client, oauth_client):
    client_id, _ = oauth_client(scopes=["account:read"])
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": "account:read keys:write", "state": "s2",
              "code_challenge": pkce()[1], "code_challenge_method": "S256"}
    resp = client.simulate_get("/oauth/authorize", query_string=urlencode(params))
    assert resp.status_code == 302
    assert parse_qs(urlparse(resp.headers["location"]).query)["error"] == ["invalid_scope"]


# --- the consent form ---------------------------------------------------------------


def _consent_form(client, client_id, state="<script>alert(1)</script>"):
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
              "scope": "account:read", "state": state, "code_challenge": pkce()[1],
              "code_challenge_method": "S256"}
    page = client.simulate_get("/oauth/authorize", query_string=urlencode(params))
    forms, _ = parse_page(page.text)
    return page, forms[0]["inputs"]


def test_state_is_escaped_and_passed_through(client, oauth_client, user):
    client_id, _ = oauth_client()
    page, inputs = _consent_form(client, client_id)
    assert "<script>" not in page.text
    assert inputs["state"] == "<script>alert(1)</script>"
    fields = dict(inputs, username=user[1], password=PASSWORD, decision="allow")
    resp = client.simulate_post("/oauth/authorize", body=urlencode(fields), headers=FORM,
                                cookies={"gw_oauth_csrf": page.cookies["gw_oauth_csrf"].value})
    code_from(resp, state="<script>alert(1)</script>")


def test_missing_or_forged_csrf_token_is_refused(client, oauth_client, user):
    client_id, _ = oauth_client()
    page, inputs = _consent_form(client, client_id)
    cookie = page.cookies["gw_oauth_csrf"].value
    good = dict(inputs, username=user[1], password=PASSWORD, decision="allow")
    attempts = [
        ({k: v for k, v in good.items() if k != "csrf_token"}, {"gw_oauth_csrf": cookie}),
        (good, {}),  # no cookie: a cross-site post
        (good, {"gw_oauth_csrf": "another-browsers-nonce"}),
        (dict(good, csrf_token=good["csrf_token"][:-4] + "abcd"), {"gw_oauth_csrf": cookie}),
        (dict(good, csrf_token=str(int(time.time())) + ".deadbeef"), {"gw_oauth_csrf": cookie}),
    ]
    other_id, _ = oauth_client()  # a token minted for one client is no good for another
    attempts.append((dict(good, client_id=other_id), {"gw_oauth_csrf": cookie}))
    for fields, cookies in attempts:
        resp = client.simulate_post("/oauth/authorize", body=urlencode(fields), headers=FORM,
                                    cookies=cookies)
        assert resp.status_code == 403, resp.text
        assert "location" not in resp.headers
        forms, text = parse_page(resp.text)
        assert "Please sign in again" in text
        assert forms and forms[0]["inputs"]["csrf_token"]  # a fresh form to retry with
    resp = client.simulate_post("/oauth/authorize", body=urlencode(good), headers=FORM,
                                cookies={"gw_oauth_csrf": cookie})
    code_from(resp, state=inputs["state"])


def test_wrong_password_shows_the_form_again(client, oauth_client, user):
    client_id, _ = oauth_client()
    resp = authorize(client, client_id, user[1], password="wrong password!")
    assert resp.status_code == 401
    assert "location" not in resp.headers
    forms, text = parse_page(resp.text)
    assert "Wrong username or password" in text
    assert forms[0]["inputs"]["username"] == user[1]
    assert "password" in forms[0]["inputs"] and forms[0]["inputs"]["password"] == ""


def test_deny_redirects_with_access_denied(client, oauth_client, user):
    client_id, _ = oauth_client()
    resp = authorize(client, client_id, user[1], decision="deny")
    assert resp.status_code == 302
    query = parse_qs(urlparse(resp.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["st-123"]
    assert "code" not in query


# --- tokens at the API --------------------------------------------------------------


def test_scope_enforcement_is_403_not_401(client, oauth_client, user):
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1], scope="account:read")
    assert tokens["scope"] == "account:read"
    resp = client.simulate_get("/zapier/v1/credits", headers=bearer(tokens["access_token"]))
    assert resp.status_code == 403, resp.text
    assert resp.json["error"]["code"] == "FORBIDDEN"
    # still an authenticated request: counted, and it says so (CONTRACT 3)
    assert int(resp.headers["X-RateLimit-Remaining"]) == int(resp.headers["X-RateLimit-Limit"]) - 1
    again = client.simulate_get("/zapier/v1/credits", headers=bearer(tokens["access_token"]))
    assert again.status_code == 403
    me = client.simulate_get(ME, headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert int(me.headers["X-RateLimit-Remaining"]) == int(me.headers["X-RateLimit-Limit"]) - 3
    wide = full_flow(client, client_id, secret, user[1], scope="credits:read")
    ok = client.simulate_get("/zapier/v1/credits", headers=bearer(wide["access_token"]))
    assert ok.status_code == 200, ok.text


def test_unknown_token_is_401_auth_failed(client):
    resp = client.simulate_get(ME, headers=bearer("gwo_" + secrets.token_urlsafe(32)))
    assert resp.status_code == 401 and resp.json["error"]["code"] == "AUTH_FAILED"
    assert "WWW-Authenticate" in resp.headers


def test_expired_access_token_is_401_and_refresh_works(config, schema, user, oauth_client):
    short = config.replace(oauth=dataclasses.replace(config.oauth, access_ttl=1))
    clock = ManualClock()
    client = TestClient(make_app(short, clock=clock))
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    assert tokens["expires_in"] == 1
    assert client.simulate_get(ME, headers=bearer(tokens["access_token"])).status_code == 200
    clock.advance(1.2)
    resp = client.simulate_get(ME, headers=bearer(tokens["access_token"]))
    assert resp.status_code == 401 and resp.json["error"]["code"] == "AUTH_FAILED"
    fresh = token_call(client, {"grant_type": "refresh_token",
                                "refresh_token": tokens["refresh_token"]},
                       basic(client_id, secret))
    assert fresh.status_code == 200, fresh.text
    assert client.simulate_get(ME, headers=bearer(fresh.json["access_token"])).status_code == 200


def test_refresh_rotates_and_keeps_scopes(client, oauth_client, user):
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    resp = token_call(client, {"grant_type": "refresh_token",
                               "refresh_token": tokens["refresh_token"]},
                      basic(client_id, secret))
    assert resp.status_code == 200, resp.text
    new = resp.json
    assert new["refresh_token"] != tokens["refresh_token"]
    assert new["access_token"] != tokens["access_token"]
    assert set(new["scope"].split()) == {"account:read", "credits:read"}
    for token in (tokens["access_token"], new["access_token"]):  # the old one until it expires
        assert client.simulate_get(ME, headers=bearer(token)).status_code == 200
    narrower = token_call(client, {"grant_type": "refresh_token", "scope": "account:read",
                                   "refresh_token": new["refresh_token"]},
                          basic(client_id, secret))
    assert narrower.status_code == 200 and narrower.json["scope"] == "account:read"
    wider = token_call(client, {"grant_type": "refresh_token", "scope": "keys:write",
                                "refresh_token": narrower.json["refresh_token"]},
                       basic(client_id, secret))
    assert wider.status_code == 400 and wider.json["error"] == "invalid_scope"
    # another client cannot use this client's refresh token
    other_id, other_secret = oauth_client()
    stolen = token_call(client, {"grant_type": "refresh_token",
                                 "refresh_token": narrower.json["refresh_token"]},
                        basic(other_id, other_secret))
    assert stolen.status_code == 400 and stolen.json["error"] == "invalid_grant"


def test_old_refresh_token_dies_after_the_grace_period(config, schema, user, oauth_client):
    quick = config.replace(oauth=dataclasses.replace(config.oauth, refresh_grace=1))
    clock = ManualClock()
    client = TestClient(make_app(quick, clock=clock))
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    old = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    first = token_call(client, old, basic(client_id, secret))
    again = token_call(client, old, basic(client_id, secret))  # within the grace period
    assert first.status_code == 200 and again.status_code == 200, again.text
    clock.advance(1.2)
    late = token_call(client, old, basic(client_id, secret))
    assert late.status_code == 400 and late.json["error"] == "invalid_grant"
    for issued in (first.json, again.json):  # what the rotation issued still works
        resp = token_call(client, {"grant_type": "refresh_token",
                                   "refresh_token": issued["refresh_token"]},
                          basic(client_id, secret))
        assert resp.status_code == 200, resp.text


def test_concurrent_refreshes_with_one_token_all_succeed(client, server, oauth_client, user):
    """Two Zapier workers (or a retry racing the original) refresh with the same token at
    once, across two gunicorn processes: every one gets working tokens."""
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    body = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}

    def refresh(_):
        return requests.post(server + "/oauth/token", data=body, auth=(client_id, secret),
                             timeout=30)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(refresh, range(8)))
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results]
    issued = [r.json() for r in results]
    assert len({t["refresh_token"] for t in issued}) == 8
    for t in issued:
        me = requests.get(server + ME, headers=bearer(t["access_token"]), timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["data"]["credential"]["kind"] == "oauth"


def test_concurrent_code_exchanges_issue_tokens_once(client, server, oauth_client, user):
    client_id, secret = oauth_client()
    verifier, challenge = pkce()
    code = code_from(authorize(client, client_id, user[1], challenge=challenge))
    body = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: requests.post(
            server + "/oauth/token", data=body, auth=(client_id, secret), timeout=30), range(6)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] + [400] * 5, statuses
    assert all(r.json()["error"] == "invalid_grant" for r in results if r.status_code == 400)
    # a replayed code revokes what it issued (RFC 6749 4.1.2), whichever request won
    (won,) = [r.json() for r in results if r.status_code == 200]
    assert client.simulate_get(ME, headers=bearer(won["access_token"])).status_code == 401


# --- revocation ---------------------------------------------------------------------


def _revoke(client, client_id, secret, token, hint=None):
    fields = {"token": token, **({"token_type_hint": hint} if hint else {})}
    return client.simulate_post("/oauth/revoke", body=urlencode(fields),
                                headers={**FORM, **basic(client_id, secret)})


def test_revoking_an_access_token(client, oauth_client, user):
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    resp = _revoke(client, client_id, secret, tokens["access_token"], "access_token")
    assert resp.status_code == 200, resp.text
    dead = client.simulate_get(ME, headers=bearer(tokens["access_token"]))
    assert dead.status_code == 401 and dead.json["error"]["code"] == "AUTH_FAILED"
    fresh = token_call(client, {"grant_type": "refresh_token",
                                "refresh_token": tokens["refresh_token"]},
                       basic(client_id, secret))
    assert fresh.status_code == 200  # the refresh token lives on
    # unknown tokens and repeats are fine (RFC 7009)
    assert _revoke(client, client_id, secret, tokens["access_token"]).status_code == 200
    assert _revoke(client, client_id, secret, "gwo_unknown").status_code == 200


def test_revoking_a_refresh_token_ends_the_grant(client, oauth_client, user):
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    rotated = token_call(client, {"grant_type": "refresh_token",
                                  "refresh_token": tokens["refresh_token"]},
                         basic(client_id, secret)).json
    resp = _revoke(client, client_id, secret, rotated["refresh_token"])  # no hint
    assert resp.status_code == 200
    for access in (tokens["access_token"], rotated["access_token"]):
        assert client.simulate_get(ME, headers=bearer(access)).status_code == 401
    for refresh in (tokens["refresh_token"], rotated["refresh_token"]):
        dead = token_call(client, {"grant_type": "refresh_token", "refresh_token": refresh},
                          basic(client_id, secret))
        assert dead.status_code == 400 and dead.json["error"] == "invalid_grant"


def test_another_client_cannot_revoke_my_tokens(client, oauth_client, user):
    client_id, secret = oauth_client()
    tokens = full_flow(client, client_id, secret, user[1])
    other_id, other_secret = oauth_client()
    assert _revoke(client, other_id, other_secret, tokens["access_token"]).status_code == 200
    assert client.simulate_get(ME, headers=bearer(tokens["access_token"])).status_code == 200
    bad = _revoke(client, client_id, "wrong", tokens["access_token"])
    assert bad.status_code == 401 and bad.json["error"] == "invalid_client"


# --- rate limits --------------------------------------------------------------------


def test_tokens_of_one_client_and_user_share_a_rate_limit(client, oauth_client, user):
    account_id, username = user
    plan = "p" + uuid.uuid4().hex[:8]
    assert client.simulate_put(f"/admin/plans/{plan}", headers=ADMIN,
                               json={"perMinute": 3, "perDay": 100}).status_code == 200
    assert client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN,
                               json={"plan": plan}).status_code == 200
    client_id, secret = oauth_client()
    first = full_flow(client, client_id, secret, username)
    second = full_flow(client, client_id, secret, username)  # a second connection
    statuses = [client.simulate_get(ME, headers=bearer(t["access_token"])).status_code
                for t in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]
    limited = client.simulate_get(ME, headers=bearer(first["access_token"]))
    assert limited.json["error"]["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) >= 1
    # another client of the same user counts separately
    other_id, other_secret = oauth_client()
    third = full_flow(client, other_id, other_secret, username)
    assert client.simulate_get(ME, headers=bearer(third["access_token"])).status_code == 200


def test_token_endpoint_is_rate_limited_per_address(config, schema, oauth_client):
    tight = config.replace(oauth=dataclasses.replace(config.oauth, token_per_hour=3))
    client = TestClient(make_app(tight))
    client_id, secret = oauth_client()
    fields = {"grant_type": "refresh_token", "refresh_token": "gwr_nope"}
    statuses = [token_call(client, fields, basic(client_id, secret)).status_code
                for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    resp = token_call(client, fields, basic(client_id, secret))
    assert resp.status_code == 429
    assert resp.json["error"] == "temporarily_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1


# --- outages and admin --------------------------------------------------------------


def test_token_endpoint_answers_503_when_the_database_is_down(config, schema):
    dead_db = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    proc, url = start_gunicorn(config, workers=1, extra_env={"DATABASE_URL": dead_db})
    try:
        resp = requests.post(url + "/oauth/token", auth=("gwc_x", "secret"), timeout=30,
                             data={"grant_type": "refresh_token", "refresh_token": "gwr_x"})
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"] == "temporarily_unavailable"
        assert resp.headers["Retry-After"] == "5"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_admin_registers_and_lists_clients(client):
    resp = client.simulate_post("/admin/oauth/clients", headers=ADMIN, json={
        "name": "Partner", "redirect_uris": [REDIRECT], "scopes": ["account:read"]})
    assert resp.status_code == 201
    data = resp.json["data"]
    assert data["client_id"].startswith("gwc_") and data["client_secret"].startswith("gwcs_")
    assert data["scopes"] == ["account:read"] and data["redirect_uris"] == [REDIRECT]
    listed = client.simulate_get("/admin/oauth/clients", headers=ADMIN)
    assert listed.status_code == 200
    mine = [c for c in listed.json["data"]["items"] if c["client_id"] == data["client_id"]]
    assert mine and "client_secret" not in mine[0]
    bad = client.simulate_post("/admin/oauth/clients", headers=ADMIN, json={
        "name": "", "redirect_uris": ["javascript:alert(1)"], "scopes": ["root"]})
    assert bad.status_code == 400
    assert {d["field"] for d in bad.json["error"]["details"]} == {
        "name", "redirect_uris", "scopes"}
    assert client.simulate_get("/admin/oauth/clients").status_code == 401


def test_cli_creates_and_lists_clients(config, schema):
    import os
    import sys

    env = {**os.environ, "DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url,
           "DATA_DIR": str(config.data_dir)}
    created = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "oauth-clients", "create", "Zapier",
         "--redirect-uri", REDIRECT, "--redirect-uri", "https://zapier.example/b",
         "--scopes", "account:read,credits:read"],
        env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    import json

    data = json.loads(created.stdout)
    assert data["client_secret"].startswith("gwcs_")
    assert data["redirect_uris"] == [REDIRECT, "https://zapier.example/b"]
    assert data["scopes"] == ["account:read", "credits:read"]
    listed = subprocess.run([sys.executable, "-m", "gateway.cli", "oauth-clients", "list"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert data["client_id"] in listed.stdout and "gwcs_" not in listed.stdout


def test_openapi_lists_the_oauth2_scheme_with_scopes(client):
    doc = client.simulate_get("/openapi.json").json
    scheme = doc["components"]["securitySchemes"]["oauth2"]
    flow = scheme["flows"]["authorizationCode"]
    assert flow["authorizationUrl"].endswith("/oauth/authorize")
    assert flow["tokenUrl"].endswith("/oauth/token")
    assert flow["refreshUrl"].endswith("/oauth/token")
    assert "credits:read" in flow["scopes"]
    credits_op = doc["paths"]["/zapier/v1/credits"]["get"]
    assert {"oauth2": ["credits:read"]} in credits_op["security"]
    assert {"bearerKey": []} in credits_op["security"]
    assert doc["paths"]["/oauth/token"]["post"]["security"] == []
