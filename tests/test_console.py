"""The web console (docs/CONSOLE.md) through the real app on PostgreSQL and Redis: sign-in,
the session cookie and its storage, CSRF, every page with the account's own data, tenant
isolation, keys, webhook endpoints (a loopback receiver), PayPal (the loopback fake),
social login (loopback providers), and one headless-Chromium run against gunicorn."""

from __future__ import annotations

import json
import re
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import redis as redis_lib
import requests
from falcon.testing import TestClient
from paypal_fake import FakePayPal
from test_oauth2_browser import WAIT_S, browser  # noqa: F401 - the Chromium fixture
from test_social import KINDS, FakeProvider, _social_config, browse, person
from test_webhook_endpoints import refuses, verify
from urllib3 import encode_multipart_formdata

from async_support import Receiver, burst, png_bytes
from conftest import ADMIN, REDIS_BASE, bearer, make_app, start_gunicorn
from core.clock import ManualClock
from core.config import PaymentConfig
from oauth.console_sessions import session_hash

PASSWORD = "console pass phrase 1"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
REFRESH_3 = '<meta http-equiv="refresh" content="3">'  # a page reloading itself (REFRESH_S)


class Browser:
    """A TestClient that keeps cookies, as a browser does."""

    def __init__(self, client):
        self.client, self.cookies, self.last = client, {}, None

    def go(self, method, path, form=None, **kw):
        if form is not None:
            kw["body"] = "&".join(f"{k}={requests.utils.quote(str(v), safe='')}"
                                  for k, vs in form.items()
                                  for v in (vs if isinstance(vs, list) else [vs]))
            kw["headers"] = {**FORM, **kw.get("headers", {})}
        resp = self.client.simulate_request(method, path, cookies=dict(self.cookies), **kw)
        for name, cookie in resp.cookies.items():
            if cookie.value:
                self.cookies[name] = cookie.value
            else:
                self.cookies.pop(name, None)
        self.last = resp
        return resp

    def get(self, path, **kw):
        return self.go("GET", path, **kw)

    def post(self, path, form, **kw):
        return self.go("POST", path, form, **kw)

    def csrf(self, path="/dashboard"):
        return CSRF.search(self.get(path).text).group(1)

    def sign_in(self, username, password=PASSWORD):
        token = CSRF.search(self.get("/console/login").text).group(1)
        return self.post("/console/login", {"csrf_token": token, "username": username,
                                            "password": password})


def account(client, credits=50, username=None):
    username = username or "c" + uuid.uuid4().hex[:10]
    resp = client.simulate_post("/admin/accounts", headers=ADMIN, json={
        "username": username, "password": PASSWORD, "credits": credits})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["id"], resp.json["data"]["api_key"], username


def signed_in(client, credits=50, username=None):
    account_id, key, username = account(client, credits, username)
    b = Browser(client)
    resp = b.sign_in(username)
    assert resp.status_code == 303 and resp.headers["location"] == "/dashboard", resp.text
    return b, account_id, key, username


def store():
    return redis_lib.Redis.from_url(REDIS_BASE)


def test_sign_in_cookie_flags_hashed_storage_and_sign_out(client, config):
    assert client.simulate_get("/").headers["location"] == "/console/login"
    assert client.simulate_get("/dashboard").headers["location"].startswith("/console/login")
    _, _, username = account(client)
    b = Browser(client)
    wrong = b.sign_in(username, "wrong password")
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    assert "gw_console" not in b.cookies
    page = b.get("/console/login")
    for name, value in (("Content-Security-Policy", "default-src 'self'"),
                        ("X-Frame-Options", "DENY"), ("Cache-Control", "no-store"),
                        ("Referrer-Policy", "same-origin")):
        assert value in page.headers[name]

    ok = b.sign_in(username)
    assert ok.status_code == 303 and ok.headers["location"] == "/dashboard"
    cookie = ok.cookies["gw_console"]
    assert cookie.http_only and cookie.same_site == "Lax" and cookie.path == "/"
    assert not cookie.secure  # plain http and no CONSOLE_COOKIE_SECURE
    sid = cookie.value
    assert len(sid) >= 40
    keys = sorted(k.decode() for k in store().scan_iter(f"{config.redis_prefix}:console:*"))
    account_id = json.loads(store().get(keys[1]))["account_id"]
    assert keys == [f"{config.redis_prefix}:console:account:{account_id}",
                    f"{config.redis_prefix}:console:session:{session_hash(sid)}"]
    assert store().smembers(keys[0]) == {session_hash(sid).encode()}  # the index: hashes
    keys = keys[1:]
    assert sid not in keys[0] and sid.encode() not in store().get(keys[0])
    assert 0 < store().ttl(keys[0]) <= config.console_session_ttl_s
    dash = b.get("/dashboard")
    assert dash.status_code == 200 and username in dash.text
    assert client.simulate_get("/").status_code == 303  # no cookie: to sign-in
    assert b.get("/").headers["location"] == "/dashboard"

    # https (or CONSOLE_COOKIE_SECURE) makes the cookie Secure
    secure = Browser(TestClient(client.app))
    token = CSRF.search(secure.get("/console/login").text).group(1)
    resp = secure.post("/console/login", {"csrf_token": token, "username": username,
                                          "password": PASSWORD}, protocol="https")
    assert resp.status_code == 303 and resp.cookies["gw_console"].secure

    out = b.post("/console/logout", {"csrf_token": b.csrf()})
    assert out.status_code == 303 and "gw_console" not in b.cookies
    assert store().get(keys[0]) is None
    replay = client.simulate_get("/dashboard", cookies={"gw_console": sid})
    assert replay.status_code == 303 and "login" in replay.headers["location"]


def test_sessions_page_lists_them_and_signs_out_all_the_others(client, config):
    """Three browsers signed in as one person, one as someone else: the page lists the
    three (this browser marked, no cookie value shown); ending the others kills their
    cookies at once, keeps this one, and leaves the other account alone."""
    _, _, username = account(client)
    b1, b2, b3 = (Browser(client) for _ in range(3))
    for b in (b1, b2, b3):
        assert b.sign_in(username).status_code == 303
    stranger, *_ = signed_in(client)
    page = b1.get("/console/sessions")
    assert page.status_code == 200 and page.text.count('class="session"') == 3
    assert page.text.count('id="this-session"') == 1 and "password" in page.text
    for b in (b1, b2, b3):
        assert b.cookies["gw_console"] not in page.text

    assert b1.post("/console/sessions", {}).status_code == 403  # no CSRF token: nothing ends
    assert b2.get("/dashboard").status_code == 200
    ended = b1.post("/console/sessions", {"csrf_token": b1.csrf("/console/sessions")})
    assert ended.status_code == 200 and "2 other sessions signed out" in ended.text
    assert ended.text.count('class="session"') == 1
    for b in (b2, b3):
        gone = b.get("/dashboard")
        assert gone.status_code == 303 and "login" in gone.headers["location"]
    assert b1.get("/dashboard").status_code == 200
    assert stranger.get("/dashboard").status_code == 200
    assert stranger.get("/console/sessions").text.count('class="session"') == 1

    # a signed-out session leaves the list
    assert b2.sign_in(username).status_code == 303
    assert b2.post("/console/logout", {"csrf_token": b2.csrf()}).status_code == 303
    assert b1.get("/console/sessions").text.count('class="session"') == 1


def test_an_expired_session_leaves_the_list(config):
    """The lifetime is the clock's (the injected one here), not only Redis's expiry."""
    clock = ManualClock()
    app = TestClient(make_app(config, clock=clock))
    _, _, username = account(app)
    old, new = Browser(app), Browser(app)
    assert old.sign_in(username).status_code == 303
    clock.advance(config.console_session_ttl_s - 60)
    assert new.sign_in(username).status_code == 303
    assert new.get("/console/sessions").text.count('class="session"') == 2
    clock.advance(120)  # past the first session's end, inside the second's
    assert new.get("/console/sessions").text.count('class="session"') == 1
    assert old.get("/dashboard").status_code == 303


def test_login_form_needs_its_csrf_token(client):
    _, _, username = account(client)
    b = Browser(client)
    b.get("/console/login")
    resp = b.post("/console/login", {"csrf_token": "forged", "username": username,
                                     "password": PASSWORD})
    assert resp.status_code == 403 and "gw_console" not in b.cookies


def test_post_without_or_with_a_wrong_csrf_token_changes_nothing(client):
    b, account_id, key, _ = signed_in(client)
    before = client.simulate_get("/api/key/list", headers=bearer(key)).json["data"]["items"]
    for form in ({"description": "x"}, {"description": "x", "csrf_token": "wrong"},
                 {"description": "x", "csrf_token": [b.csrf(), b.csrf()]}):
        resp = b.post("/console/keys", form)
        assert resp.status_code == 403 and "text/html" in resp.headers["content-type"]
        assert "Nothing was changed" in resp.text
    assert b.post("/console/webhooks", {"url": "https://example.com/h"}).status_code == 403
    assert b.post("/console/logout", {}).status_code == 403 and "gw_console" in b.cookies
    after = client.simulate_get("/api/key/list", headers=bearer(key)).json["data"]["items"]
    assert after == before
    assert client.simulate_get("/zapier/v1/webhook-endpoints",
                               headers=bearer(key)).json["data"]["items"] == []


def test_key_shown_once_then_revoked_key_is_refused(client):
    b, _, _, _ = signed_in(client)
    resp = b.post("/console/keys", {"csrf_token": b.csrf("/console/keys"),
                                    "description": "from the console"})
    assert resp.status_code == 201, resp.text
    secret = re.search(r'<code id="new-key">([^<]+)</code>', resp.text).group(1)
    assert client.simulate_get("/zapier/v1/credits", headers=bearer(secret)).status_code == 200
    listing = b.get("/console/keys")
    assert secret not in listing.text and "from the console" in listing.text
    key_id = client.simulate_get("/api/key/list", headers=bearer(secret)).json[
        "data"]["items"][0]["keyId"]
    resp = b.post(f"/console/keys/{key_id}/revoke", {"csrf_token": b.csrf()})
    assert resp.status_code == 303
    assert client.simulate_get("/zapier/v1/credits", headers=bearer(secret)).status_code == 401
    assert "revoked" in b.get("/console/keys").text


def test_every_page_shows_the_accounts_own_data_and_others_ids_are_404(lclient, lconfig):
    b, account_id, key, username = signed_in(lclient, credits=40)
    other, other_key, _ = account(lclient, credits=40)
    for k in (key, other_key):
        assert lclient.simulate_post("/zapier/v1/echo", json={"message": "hi"},
                                     headers=bearer(k)).status_code == 200
    mine = lclient.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                 json={"message": "m"}, headers=bearer(key))
    theirs = lclient.simulate_post("/zapier/v1/echo-async", params={"wait": "0"},
                                   json={"message": "t"}, headers=bearer(other_key))
    assert mine.status_code == 202 and theirs.status_code == 202, mine.text
    uid = mine.json["data"]["composition"]["uid"]
    their_uid = theirs.json["data"]["composition"]["uid"]
    queued = b.get(f"/console/compositions/{uid}").text  # no worker yet: it reloads itself
    assert "queued" in queued and '<meta http-equiv="refresh" content="3">' in queued
    burst(lconfig, queues=("cpu",))
    body, ctype = encode_multipart_formdata({"file": ("pic.png", png_bytes((200, 200)),
                                                      "image/png")})
    up = lclient.simulate_post("/upload", body=body,
                               headers={**bearer(key), "Content-Type": ctype})
    assert up.status_code in (200, 201), up.text
    content_id = up.json["data"]["contentId"]
    receipts = {a: lclient.simulate_get("/zapier/v1/credits/transactions",
                                        headers=bearer(k)).json["data"]["items"][0]["txnReceipt"]
                for a, k in ((account_id, key), (other, other_key))}
    hook = lclient.simulate_post("/zapier/v1/webhook-endpoints", headers=bearer(other_key),
                                 json={"url": "http://127.0.0.1:9/x", "events": ["*"]})
    assert hook.status_code == 201

    dash = b.get("/dashboard")
    balance = lclient.simulate_get("/zapier/v1/credits", headers=bearer(key)).json[
        "data"]["balance"]
    assert dash.status_code == 200 and f"{balance} credits" in dash.text
    assert '<svg class="chart"' in dash.text and 'class="bar"' in dash.text
    assert "echo" in dash.text and "echo-async" in dash.text
    ledger_page = b.get("/console/ledger")
    assert receipts[account_id] in ledger_page.text and receipts[other] not in ledger_page.text
    receipt = b.get(f"/console/receipts/{receipts[account_id]}")
    assert receipt.status_code == 200 and "debit" in receipt.text
    comps = b.get("/console/compositions")
    assert uid in comps.text and their_uid not in comps.text
    comp = b.get(f"/console/compositions/{uid}")
    assert comp.status_code == 200 and "completed" in comp.text and f"/outputs/{uid}/" in comp.text
    assert 'http-equiv="refresh"' not in comp.text  # ended: the page stays put
    assert b.get("/console/runs").status_code == 200
    content = b.get("/console/content")
    assert "pic.png" in content.text and f"/console/content/{content_id}/download" in content.text
    download = b.get(f"/console/content/{content_id}/download")
    assert download.status_code == 200 and download.content.startswith(b"\x89PNG")
    assert "sandbox" in download.headers["content-security-policy"]
    assert "Buying credits is not enabled" in b.get("/console/credits").text
    for page in ("/console/keys", "/console/webhooks"):
        assert b.get(page).status_code == 200

    for path in (f"/console/receipts/{receipts[other]}", f"/console/compositions/{their_uid}",
                 f"/console/webhooks/{hook.json['data']['id']}", f"/console/runs/{their_uid}",
                 f"/console/content/{json.dumps(1)}/download", "/console/receipts/txn_nope"):
        resp = b.get(path)
        assert resp.status_code == 404 and "text/html" in resp.headers["content-type"], path
    resp = b.post(f"/console/webhooks/{hook.json['data']['id']}/delete", {"csrf_token": b.csrf()})
    assert resp.status_code == 404
    assert lclient.simulate_get(f"/zapier/v1/webhook-endpoints/{hook.json['data']['id']}",
                                headers=bearer(other_key)).status_code == 200


def test_markup_in_descriptions_and_urls_is_escaped(lclient):
    """Usernames cannot hold markup (oauth.accounts); key descriptions, webhook URLs and
    descriptions can, and are escaped by the templates' autoescaping."""
    b, _, key, _ = signed_in(lclient)
    evil = "<script>alert(1)</script>"
    assert lclient.simulate_post("/api/key/generate", headers=bearer(key),
                                 json={"description": evil}).status_code == 201
    assert lclient.simulate_post("/zapier/v1/webhook-endpoints", headers=bearer(key), json={
        "url": "http://127.0.0.1:9/?q=" + evil, "events": ["*"],
        "description": evil}).status_code == 201
    for page in ("/console/keys", "/console/webhooks"):
        text = b.get(page).text
        assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_webhook_endpoint_create_test_event_log_and_redeliver(lclient, lconfig):
    b, _, key, _ = signed_in(lclient)
    receiver = Receiver(statuses=[503, 200])
    try:
        resp = b.post("/console/webhooks", {"csrf_token": b.csrf("/console/webhooks"),
                                            "url": receiver.url + "/<b>hook</b>",
                                            "events": ["composition.completed", "credits.low"],
                                            "description": "console"})
        assert resp.status_code == 201, resp.text
        secret = re.search(r'<code id="new-secret">([^<]+)</code>', resp.text).group(1)
        assert secret.startswith("whsec_") and "&lt;b&gt;hook" in resp.text
        listed = b.get("/console/webhooks")
        assert secret not in listed.text and "&lt;b&gt;hook" in listed.text
        [endpoint] = lclient.simulate_get("/zapier/v1/webhook-endpoints",
                                          headers=bearer(key)).json["data"]["items"]
        assert endpoint["events"] == ["composition.completed", "credits.low"]
        page = f"/console/webhooks/{endpoint['id']}"
        resp = b.post(page + "/test", {"csrf_token": b.csrf()})
        assert resp.status_code == 303 and "sent=" in resp.headers["location"]
        sent_page = resp.headers["location"]
        # the page sent back to reloads itself until the test event's attempt is logged
        waiting = b.get(sent_page).text
        assert REFRESH_3 in waiting and 'id="refreshing"' in waiting
        burst(lconfig, queues=("webhooks",))
        assert receiver.wait_for(1)[0]["status"] == 503
        log = b.get(page)
        assert "webhook.test" in log.text and "503" in log.text and "failed" in log.text
        assert 'http-equiv="refresh"' not in log.text
        assert 'http-equiv="refresh"' not in b.get(sent_page).text  # logged: it stays put
        msg_id = receiver.requests[0]["headers"]["webhook-id"]
        resp = b.post(f"{page}/deliveries/{msg_id}/redeliver", {"csrf_token": b.csrf()})
        assert resp.status_code == 303 and "seen=1" in resp.headers["location"]
        again_page = resp.headers["location"]
        assert REFRESH_3 in b.get(again_page).text
        for bogus in ("seen=x", "seen=1234567", "seen="):  # no count to wait past: no reload
            assert 'http-equiv="refresh"' not in b.get(
                again_page.replace("seen=1", bogus)).text, bogus
        burst(lconfig, queues=("webhooks",))
        second = receiver.wait_for(2)[1]
        assert second["headers"]["webhook-id"] == msg_id and second["status"] == 200
        log = b.get(page).text
        assert "(redelivery)" in log and re.search(r'class="code">200<', log)
        assert 'http-equiv="refresh"' not in b.get(again_page).text
        resp = b.post(page + "/delete", {"csrf_token": b.csrf()})
        assert resp.status_code == 303
        assert lclient.simulate_get("/zapier/v1/webhook-endpoints",
                                    headers=bearer(key)).json["data"]["items"] == []
        bad = b.post("/console/webhooks", {"csrf_token": b.csrf(), "url": "ftp://x"})
        assert bad.status_code == 400 and 'class="error"' in bad.text
    finally:
        receiver.close()


def test_webhook_endpoint_edit_and_secret_rotation(lclient, lconfig):
    """Edit (URL, description, events, switch) and roll the secret from the console: the
    same checks as the API; a refused form changes nothing; the new secret is shown once
    and signs the next delivery, the old one only for the chosen overlap."""
    b, _, key, _ = signed_in(lclient)
    receiver = Receiver()
    try:
        created = lclient.simulate_post("/zapier/v1/webhook-endpoints", headers=bearer(key),
                                        json={"url": receiver.url + "/a", "events": ["*"]})
        assert created.status_code == 201, created.text
        endpoint_id, s1 = created.json["data"]["id"], created.json["data"]["secret"]
        page = f"/console/webhooks/{endpoint_id}"
        shown = b.get(page)
        assert 'id="edit-endpoint"' in shown.text and 'value="*" checked' in shown.text

        def api_view():
            return lclient.simulate_get(f"/zapier/v1/webhook-endpoints/{endpoint_id}",
                                        headers=bearer(key)).json["data"]

        before = api_view()
        assert b.post(page + "/edit", {"url": receiver.url + "/b"}).status_code == 403
        for form in ({"url": "ftp://x", "state": "enabled"},
                     {"url": receiver.url + "/b", "state": "maybe"},
                     {"url": receiver.url + "/b", "state": "enabled", "events": "no.such"},
                     {"url": receiver.url + "/b", "state": "enabled", "description": "x" * 300}):
            bad = b.post(page + "/edit", {"csrf_token": b.csrf(page), **form})
            assert bad.status_code == 400 and 'class="error"' in bad.text, form
        assert api_view() == before

        resp = b.post(page + "/edit", {"csrf_token": b.csrf(page), "url": receiver.url + "/b",
                                       "description": "orders", "state": "enabled",
                                       "events": ["credits.low", "run.failed"]})
        assert resp.status_code == 303 and "saved=1" in resp.headers["location"]
        after = api_view()
        assert (after["url"], after["description"], after["events"], after["enabled"]) == (
            receiver.url + "/b", "orders", ["credits.low", "run.failed"], True)
        assert "Endpoint saved." in b.get(resp.headers["location"]).text

        def test_event():
            count = len(receiver.requests)
            assert b.post(page + "/test", {"csrf_token": b.csrf(page)}).status_code == 303
            burst(lconfig, queues=("webhooks",))
            delivered = receiver.wait_for(count + 1)
            assert len(delivered) == count + 1
            return delivered[-1]

        first = test_event()
        assert first["path"] == "/b" and verify(s1, first)

        rolled = b.post(page + "/rotate", {"csrf_token": b.csrf(page), "overlap_seconds": "3600"})
        assert rolled.status_code == 200, rolled.text
        s2 = re.search(r'<code id="new-secret">([^<]+)</code>', rolled.text).group(1)
        assert s2 != s1 and s2.startswith("whsec_") and "signs as well until" in rolled.text
        assert s2 not in b.get(page).text  # shown on that answer only
        both = test_event()
        assert verify(s1, both) and verify(s2, both)

        for overlap in ("-1", "999999999", "soon", ""):
            bad = b.post(page + "/rotate", {"csrf_token": b.csrf(page), "overlap_seconds": overlap})
            assert bad.status_code == 400 and "new-secret" not in bad.text, overlap
        still = test_event()
        assert verify(s1, still) and verify(s2, still)  # the refusals changed nothing

        s3 = re.search(r'<code id="new-secret">([^<]+)</code>', b.post(
            page + "/rotate", {"csrf_token": b.csrf(page), "overlap_seconds": "0"}).text).group(1)
        last = test_event()
        assert verify(s3, last) and refuses(s2, last) and refuses(s1, last)

        off = b.post(page + "/edit", {"csrf_token": b.csrf(page), "url": receiver.url + "/b",
                                      "state": "disabled", "events": "run.failed"})
        assert off.status_code == 303 and api_view()["enabled"] is False
        assert 'id="endpoint-state">disabled<' in b.get(page).text
        other_b, *_ = signed_in(lclient)  # another account: the same 404 as the API
        for path in ("/edit", "/rotate"):
            assert other_b.post(page + path, {"csrf_token": other_b.csrf(),
                                              "overlap_seconds": "0",
                                              "url": "https://example.com/x",
                                              "state": "enabled"}).status_code == 404
        assert api_view()["url"] == receiver.url + "/b"
    finally:
        receiver.close()


def test_buy_credits_through_paypal_and_come_back(config, schema):
    with FakePayPal() as fake:
        app = make_app(config.replace(payments=PaymentConfig.from_env({
            "PAYMENT_PROVIDER": "paypal-orders", "PAYPAL_CLIENT_ID": "id",
            "PAYPAL_CLIENT_SECRET": "secret", "PAYPAL_BASE_URL": fake.url,
            "PAYPAL_WEBHOOK_ID": fake.webhook_id, "CREDIT_PACKS": "100:9.99:USD"})))
        client = TestClient(app)
        b, account_id, key, _ = signed_in(client, credits=5)
        page = b.get("/console/credits")
        assert "100 credits for 9.99 USD" in page.text
        resp = b.post("/console/credits", {"csrf_token": b.csrf("/console/credits"),
                                           "pack": "100:9.99:USD"})
        assert resp.status_code == 303
        assert resp.headers["location"].startswith("https://www.sandbox.paypal.com/")
        [(order_id, order)] = fake.orders.items()
        assert order["return_url"] == "http://gateway.test/console/credits/return"
        fake.approve(order_id)
        back = b.get("/console/credits/return", params={"token": order_id,
                                                       "PayerID": "PAYER1"})
        assert back.status_code == 200 and "Payment successful" in back.text, back.text
        assert client.simulate_get("/zapier/v1/credits", headers=bearer(key)).json[
            "data"]["balance"] == 105
        again = b.get("/console/credits/return", params={"token": order_id,
                                                        "PayerID": "PAYER1"})
        assert again.status_code == 200
        assert client.simulate_get("/zapier/v1/credits", headers=bearer(key)).json[
            "data"]["balance"] == 105
        other = Browser(client)
        other.sign_in(account(client)[2])
        assert other.get("/console/credits/return", params={
            "token": order_id, "PayerID": "PAYER1"}).status_code == 404


def test_social_login_lands_signed_in_on_the_console(config, schema):
    fake = FakeProvider("github")
    try:
        app = make_app(_social_config(config, {"github": fake}, kinds=("github",)))
        client = TestClient(app)
        b = Browser(client)
        assert "/console/login/github" in b.get("/console/login").text
        start = b.get("/console/login/github")
        assert start.status_code == 302
        callback = browse(fake, start.headers["location"], person(username="octo-console"))
        parts = urlsplit(callback)
        back = b.get(parts.path, query_string=parts.query)  # the existing callback
        assert back.status_code == 302
        target = urlsplit(back.headers["location"])
        assert target.path == "/console/social/return" and "b" in parse_qs(target.query)
        # another browser cannot use this return (it did not start the login)
        stranger = Browser(client).get(target.path, query_string=target.query)
        assert stranger.status_code == 403 and "gw_console" not in stranger.cookies
        done = b.get(target.path, query_string=target.query)
        assert done.status_code == 303 and done.headers["location"] == "/dashboard"
        assert "octo-console" in b.get("/dashboard").text
        assert KINDS["github"]  # the API flow is untouched: test_social.py covers it
    finally:
        fake.close()


@pytest.mark.slow
def test_browser_signs_in_sees_the_chart_creates_a_key_and_uses_it(config, schema, browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    proc, url = start_gunicorn(config, workers=1, threads=4,
                               extra_env={"PUBLIC_BASE_URL": ""})
    try:
        username = "b" + uuid.uuid4().hex[:10]
        resp = requests.post(url + "/admin/accounts", headers=ADMIN, timeout=10, json={
            "username": username, "password": PASSWORD, "credits": 30})
        key = resp.json()["data"]["api_key"]
        requests.post(url + "/zapier/v1/echo", json={"message": "x"}, headers=bearer(key),
                      timeout=10)
        driver = browser()
        wait = WebDriverWait(driver, WAIT_S)
        driver.get(url + "/")
        wait.until(ec.presence_of_element_located((By.ID, "login-form")))
        driver.find_element(By.ID, "username").send_keys(username)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "sign-in").click()
        wait.until(ec.presence_of_element_located((By.ID, "balance")))
        assert driver.find_element(By.ID, "balance").text == "29 credits"
        chart = driver.find_element(By.ID, "usage-chart")
        assert chart.tag_name == "svg" and chart.find_elements(By.CSS_SELECTOR, "rect.bar")
        driver.find_element(By.LINK_TEXT, "API keys").click()
        wait.until(ec.presence_of_element_located((By.ID, "create-key")))
        driver.find_element(By.ID, "key-description").send_keys("from chromium")
        driver.find_element(By.ID, "create-key-button").click()
        wait.until(ec.presence_of_element_located((By.ID, "new-key")))
        secret = driver.find_element(By.ID, "new-key").text
        assert secret.startswith("gwk_")
        resp = requests.get(url + "/zapier/v1/credits", headers=bearer(secret), timeout=10)
        assert resp.status_code == 200 and resp.json()["data"]["balance"] == 29
        time.sleep(0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
