"""Social login (docs/SOCIAL.md) against loopback doubles of GitHub, Discord and Google.

The doubles speak the providers' real protocol: an authorize page that 302s back with a
code, a form-encoded token endpoint that checks the client secret, the code, the
redirect_uri and the PKCE verifier, and the user endpoints behind a Bearer token. The test
plays the browser: it follows each 302 itself. The gateway runs for real (PostgreSQL,
Redis); only the providers are faked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from falcon.testing import TestClient

from conftest import bearer, make_app
from core.config import SocialConfig
from metering import db as dbmod
from metering.models import Account
from oauth.social import redirect_allowed
from oauth.social_models import AccountEmail, SocialIdentity

FRONT = "https://app.example.com/auth/done"
CALLBACK_BASE = "http://gateway.test"  # PUBLIC_BASE_URL of the test config

# Each kind: paths of the double, and the settings that point the gateway at it.
KINDS = {
    "github": {"authorize": "/login/oauth/authorize", "token": "/login/oauth/access_token",
               "pkce": True},
    "discord": {"authorize": "/oauth2/authorize", "token": "/api/oauth2/token", "pkce": False},
    "google": {"authorize": "/o/oauth2/v2/auth", "token": "/token", "pkce": True},
}


class FakeProvider:
    """One provider's OAuth 2.0 server and user API on 127.0.0.1."""

    def __init__(self, kind):
        self.kind = kind
        self.client_id = f"{kind}-client-{uuid.uuid4().hex[:6]}"
        self.client_secret = secrets.token_urlsafe(16)
        self.paths = KINDS[kind]
        self.lock = threading.Lock()
        self.user = None  # who signs in at the authorize page
        self.deny = False  # the user clicks "Cancel"
        self.codes = {}
        self.tokens = {}
        self.authorize_log = []
        self.token_log = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle_get(self)

            def do_POST(self):
                fake.handle_post(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def settings(self) -> dict:
        p = self.kind.upper()
        out = {f"{p}_CLIENT_ID": self.client_id, f"{p}_CLIENT_SECRET": self.client_secret,
               f"{p}_AUTHORIZE_URL": self.url + self.paths["authorize"],
               f"{p}_TOKEN_URL": self.url + self.paths["token"]}
        if self.kind == "google":
            out["GOOGLE_USERINFO_URL"] = self.url + "/v1/userinfo"
        else:
            out[f"{p}_API_URL"] = self.url + "/api"
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # -- HTTP ---------------------------------------------------------------------------
    @staticmethod
    def send(handler, status, body=None, headers=None):
        data = json.dumps(body).encode() if body is not None else b""
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if body is not None:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def handle_get(self, h):
        parts = urlsplit(h.path)
        if parts.path == self.paths["authorize"]:
            return self.authorize(h, {k: v[0] for k, v in parse_qs(parts.query).items()})
        auth = h.headers.get("Authorization", "")
        user = self.tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if user is None:
            return self.send(h, 401, {"message": "Bad credentials"})
        if self.kind == "github" and parts.path == "/api/user":
            return self.send(h, 200, {"login": user["username"], "id": user["id"],
                                      "name": "Some One", "email": None})
        if self.kind == "github" and parts.path == "/api/user/emails":
            return self.send(h, 200, [
                {"email": "other-" + user["email"], "primary": False, "verified": True,
                 "visibility": None},
                {"email": user["email"], "primary": True, "verified": user["verified"],
                 "visibility": "private"}])
        if self.kind == "discord" and parts.path == "/api/users/@me":
            return self.send(h, 200, {"id": str(user["id"]), "username": user["username"],
                                      "global_name": "Some One", "email": user["email"],
                                      "verified": user["verified"]})
        if self.kind == "google" and parts.path == "/v1/userinfo":
            return self.send(h, 200, {"sub": str(user["id"]), "email": user["email"],
                                      "email_verified": user["verified"], "name": "Some One"})
        return self.send(h, 404, {"message": "Not Found"})

    def authorize(self, h, q):
        self.authorize_log.append(q)
        problems = []
        if q.get("response_type") != "code":
            problems.append("response_type")
        if q.get("client_id") != self.client_id:
            problems.append("client_id")
        if not q.get("state") or not q.get("redirect_uri") or not q.get("scope"):
            problems.append("state/redirect_uri/scope")
        if self.paths["pkce"] and (q.get("code_challenge_method") != "S256"
                                   or len(q.get("code_challenge", "")) != 43):
            problems.append("pkce")
        if not self.paths["pkce"] and "code_challenge" in q:
            problems.append("unexpected pkce")
        if problems:
            return self.send(h, 400, {"error": "invalid_request", "problems": problems})
        back = q["redirect_uri"] + "?"
        if self.deny:
            back += urlencode({"error": "access_denied", "state": q["state"]})
        else:
            code = secrets.token_urlsafe(12)
            with self.lock:
                self.codes[code] = {"user": dict(self.user), "redirect_uri": q["redirect_uri"],
                                    "challenge": q.get("code_challenge")}
            back += urlencode({"code": code, "state": q["state"]})
        self.send(h, 302, headers={"Location": back})

    def handle_post(self, h):
        if urlsplit(h.path).path != self.paths["token"]:
            return self.send(h, 404, {"message": "Not Found"})
        length = int(h.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(h.rfile.read(length).decode()).items()}
        self.token_log.append(form)
        with self.lock:
            grant = self.codes.pop(form.get("code", ""), None)
        error = None
        if h.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            error = "invalid_request"
        elif form.get("client_id") != self.client_id \
                or form.get("client_secret") != self.client_secret:
            error = "invalid_client"
        elif form.get("grant_type") != "authorization_code" or grant is None \
                or form.get("redirect_uri") != grant["redirect_uri"]:
            error = "invalid_grant"
        elif grant["challenge"] is not None:
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                error = "invalid_grant"
        if error:
            if self.kind == "github":  # GitHub answers errors with 200 and an error field
                return self.send(h, 200, {"error": "bad_verification_code",
                                          "error_description": error})
            return self.send(h, 400, {"error": error})
        token = secrets.token_urlsafe(16)
        self.tokens[token] = grant["user"]
        # Scopes come back in each provider's own spelling (oauthlib sees a "change").
        body = {
            "github": {"access_token": token, "token_type": "bearer",
                       "scope": "read:user,user:email"},
            "discord": {"access_token": token, "token_type": "Bearer", "expires_in": 604800,
                        "refresh_token": secrets.token_urlsafe(8), "scope": "identify email"},
            "google": {"access_token": token, "token_type": "Bearer", "expires_in": 3599,
                       "id_token": "e30.e30.sig",
                       "scope": "openid https://www.googleapis.com/auth/userinfo.email "
                                "https://www.googleapis.com/auth/userinfo.profile"},
        }[self.kind]
        self.send(h, 200, body, headers={"Cache-Control": "no-store"})


@pytest.fixture(scope="module")
def fakes():
    made = {kind: FakeProvider(kind) for kind in KINDS}
    yield made
    for fake in made.values():
        fake.close()


def _social_config(config, fakes, kinds=tuple(KINDS), **changes):
    settings = {}
    for kind in kinds:
        settings.update(fakes[kind].settings())
    settings["SOCIAL_REDIRECT_ALLOW"] = "https://app.example.com/auth/, http://localhost:3000"
    return config.replace(social=SocialConfig.from_env(settings), **changes)


@pytest.fixture(scope="module")
def social_app(config, schema, fakes):
    return make_app(_social_config(config, fakes))


@pytest.fixture
def sc(social_app, schema):
    return TestClient(social_app)


def person(email=None, verified=True, username=None):
    n = uuid.uuid4().hex[:8]
    return {"id": int(uuid.uuid4().int % 10**9), "username": username or f"octo{n}",
            "email": email or f"user-{n}@example.org", "verified": verified}


def start(client, kind, redirect=FRONT):
    resp = client.simulate_get(f"/auth/{kind}", params={"redirectURL": redirect})
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


def browse(fake, authorize_url, user):
    """The user signs in at the provider; returns the callback URL it sends the browser to."""
    fake.user = user
    resp = requests.get(authorize_url, allow_redirects=False, timeout=5)
    assert resp.status_code == 302, resp.text
    return resp.headers["Location"]


def callback(client, url):
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == CALLBACK_BASE
    return client.simulate_get(parts.path, query_string=parts.query)


def login(client, fake, user, redirect=FRONT):
    """The whole browser round trip; returns the gateway's final response."""
    return callback(client, browse(fake, start(client, fake.kind, redirect), user))


def query_of(resp) -> dict:
    assert resp.status_code == 302, resp.text
    return {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["location"]).query).items()}


def decode_b(value: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))


def user_of(resp) -> dict:
    location = resp.headers["location"]
    assert location.startswith(FRONT), location
    return decode_b(query_of(resp)["b"])


def exchange(client, code):
    return client.simulate_post("/auth/social/exchange", json={"code": code})


def test_new_github_user_gets_an_account_and_a_b_payload(sc, fakes):
    gh = fakes["github"]
    user = person(username="Octo Cat!")
    authorize_url = start(sc, "github")
    assert authorize_url.startswith(gh.url + "/login/oauth/authorize?")
    sent = parse_qs(urlsplit(authorize_url).query)
    assert sent["client_id"] == [gh.client_id]
    assert sent["redirect_uri"] == [CALLBACK_BASE + "/auth/github/callback"]
    assert sent["scope"] == ["read:user user:email"]
    assert sent["code_challenge_method"] == ["S256"] and len(sent["state"][0]) >= 32
    assert "client_secret" not in sent

    resp = callback(sc, browse(gh, authorize_url, user))
    b = user_of(resp)
    assert resp.headers["location"].startswith(FRONT + "?b=")
    assert b["provider"] == "github" and b["email"] == user["email"]
    assert b["isNewUser"] is True and b["id"] == b["userID"]
    assert b["providerUserId"] == str(user["id"])
    assert b["username"] == "Octo-Cat" and b["credits"] == 10  # SIGNUP_CREDITS of the tests
    assert b["loginCode"] and b["loginCodeExpiresIn"] == 120
    # the token request carried the secret, the code and the PKCE verifier
    token_req = gh.token_log[-1]
    assert token_req["client_secret"] == gh.client_secret and token_req["code_verifier"]
    assert token_req["redirect_uri"] == CALLBACK_BASE + "/auth/github/callback"
    assert "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ  # only set during the calls
    with dbmod.connection():
        account = Account.get_by_id(b["id"])
        assert account.password_hash is None and account.balance == 10
        ident = SocialIdentity.get(SocialIdentity.account == account.id)
        assert (ident.provider, ident.provider_user_id) == ("github", str(user["id"]))
        assert AccountEmail.get_by_id(user["email"]).account_id == account.id


def test_exchange_gives_a_working_api_key_once(sc, fakes):
    user = person()
    b = user_of(login(sc, fakes["github"], user))
    resp = exchange(sc, b["loginCode"])
    assert resp.status_code == 201, resp.text
    data = resp.json["data"]
    assert data["id"] == b["id"] and data["email"] == user["email"]
    me = sc.simulate_get("/zapier/v1/me", headers=bearer(data["api_key"]))
    assert me.status_code == 200, me.text
    assert me.json["data"]["id"] == b["id"] and me.json["data"]["balance"] == 10
    again = exchange(sc, b["loginCode"])
    assert again.status_code == 400 and again.json["error"]["code"] == "INVALID_REQUEST"
    for bad in ({"code": "x" * 40}, {"code": ""}, {}):
        resp = sc.simulate_post("/auth/social/exchange", json=bad)
        assert resp.status_code == 400 and resp.json["error"]["code"] == "INVALID_REQUEST"
    # a browser-style form post works too
    b2 = user_of(login(sc, fakes["github"], user))
    form = sc.simulate_post("/auth/social/exchange", body=urlencode({"code": b2["loginCode"]}),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 201 and form.json["data"]["id"] == b["id"]
    # the first key, never shown, was retired; the two exchanged ones live
    keys = sc.simulate_get("/api/key/list", headers=bearer(data["api_key"])).json["data"]
    assert sorted(k["active"] for k in keys["items"]) == [False, True, True]


def test_second_login_is_the_same_account(sc, fakes):
    user = person()
    first = user_of(login(sc, fakes["discord"], user))
    second = user_of(login(sc, fakes["discord"], user))
    assert first["isNewUser"] is True and second["isNewUser"] is False
    assert first["id"] == second["id"] and second["credits"] == 10  # granted once
    with dbmod.connection():
        assert SocialIdentity.select().where(SocialIdentity.account == first["id"]).count() == 1


def test_same_verified_email_links_across_providers(sc, fakes):
    email = f"Shared-{uuid.uuid4().hex[:6]}@Example.org"
    gh = user_of(login(sc, fakes["github"], person(email=email)))
    go = user_of(login(sc, fakes["google"], person(email=email.lower())))
    dc = user_of(login(sc, fakes["discord"], person(email=email.upper())))
    assert gh["id"] == go["id"] == dc["id"]
    assert gh["isNewUser"] and not go["isNewUser"] and not dc["isNewUser"]
    assert gh["email"] == go["email"] == email.lower()
    with dbmod.connection():
        providers = sorted(i.provider for i in SocialIdentity.select().where(
            SocialIdentity.account == gh["id"]))
        assert providers == ["discord", "github", "google"]
        assert Account.select().count() == 1


def test_provider_user_id_keeps_the_account_when_the_email_changes(sc, fakes):
    user = person()
    first = user_of(login(sc, fakes["google"], user))
    user["email"] = "renamed-" + user["email"]
    again = user_of(login(sc, fakes["google"], user))
    assert again["id"] == first["id"] and again["email"] == user["email"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_unverified_email_is_refused(sc, fakes, kind):
    resp = login(sc, fakes[kind], person(verified=False))
    q = query_of(resp)
    assert resp.headers["location"].startswith(FRONT + "?")
    assert q["error"] == "email_unverified" and "b" not in q
    with dbmod.connection():
        assert Account.select().count() == 0


def test_state_missing_unknown_reused_or_foreign_is_refused(sc, fakes):
    gh = fakes["github"]
    back = browse(gh, start(sc, "github"), person())
    parts = urlsplit(back)
    code = parse_qs(parts.query)["code"][0]
    for query in (f"code={code}", f"code={code}&state=", f"code={code}&state={'x' * 43}"):
        resp = sc.simulate_get(parts.path, query_string=query)
        assert resp.status_code == 400 and resp.json["error"]["code"] == "INVALID_REQUEST"
        assert "location" not in resp.headers
    assert callback(sc, back).status_code == 302  # the real one works once ...
    replay = callback(sc, back)  # ... and only once
    assert replay.status_code == 400 and "location" not in replay.headers
    # a state issued for GitHub is no good on Google's callback
    back = browse(gh, start(sc, "github"), person())
    state = parse_qs(urlsplit(back).query)["state"][0]
    resp = sc.simulate_get("/auth/google/callback", query_string=f"code=x&state={state}")
    assert resp.status_code == 400 and "location" not in resp.headers


@pytest.mark.parametrize("target", [
    None, "", "https://evil.example.com/auth/done", "https://app.example.com.evil.com/auth/",
    "https://app.example.com@evil.com/auth/done", "https://app.example.com/other",
    "http://app.example.com/auth/done", "https://app.example.com:8443/auth/done",
    "https://app.example.com/auth/../admin", "javascript:alert(1)", "//evil.example.com/auth/",
    "https://app.example.com/auth/\\evil", "http://localhost:3001/",
])
def test_redirect_url_off_the_allow_list_is_refused(sc, target):
    params = {} if target is None else {"redirectURL": target}
    resp = sc.simulate_get("/auth/github", params=params)
    assert resp.status_code == 400, (target, resp.status_code)
    assert resp.json["error"]["code"] == "INVALID_REQUEST"
    assert "location" not in resp.headers


def test_allowed_redirect_keeps_its_query(sc, fakes):
    target = "http://localhost:3000/after/login?tab=1"
    assert redirect_allowed(target, (("http", "localhost", 3000, "/"),))
    resp = login(sc, fakes["google"], person(), redirect=target)
    location = resp.headers["location"]
    assert location.startswith("http://localhost:3000/after/login?tab=1&b=")


def test_post_start_like_the_seed(sc, fakes):
    resp = sc.simulate_post("/auth/google", body=urlencode({"redirectURL": FRONT}),
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 302
    assert resp.headers["location"].startswith(fakes["google"].url + "/o/oauth2/v2/auth?")
    resp = sc.simulate_post("/auth/google", json={"redirectURL": "https://evil.example.com/"})
    assert resp.status_code == 400 and "location" not in resp.headers


def test_discord_goes_without_pkce(sc, fakes):
    dc = fakes["discord"]
    sent = parse_qs(urlsplit(start(sc, "discord")).query)
    assert "code_challenge" not in sent and sent["scope"] == ["identify email"]
    b = user_of(login(sc, dc, person()))
    assert b["provider"] == "discord"
    assert "code_verifier" not in dc.token_log[-1]


def test_unknown_provider_is_404(sc):
    for path in ("/auth/twitter", "/auth/twitter/callback"):
        resp = sc.simulate_get(path, params={"redirectURL": FRONT, "state": "s" * 43})
        assert resp.status_code == 404 and resp.json["error"]["code"] == "NOT_FOUND"


def test_denied_or_failed_provider_step_goes_back_with_an_error(sc, fakes):
    gh = fakes["github"]
    gh.deny = True
    try:
        resp = login(sc, gh, person())
    finally:
        gh.deny = False
    assert query_of(resp)["error"] == "access_denied"
    # a code the provider never issued: the token exchange fails
    back = browse(gh, start(sc, "github"), person())
    parts = urlsplit(back)
    state = parse_qs(parts.query)["state"][0]
    resp = sc.simulate_get(parts.path, query_string=urlencode({"code": "forged",
                                                               "state": state}))
    q = query_of(resp)
    assert q["error"] == "provider_error" and "b" not in q
    with dbmod.connection():
        assert Account.select().count() == 0


def test_closed_signup_links_existing_accounts_only(config, schema, fakes, sc):
    closed = TestClient(make_app(_social_config(config, fakes, kinds=("github", "google"),
                                                signup_open=False)))
    resp = closed.simulate_get("/auth/discord", params={"redirectURL": FRONT})
    assert resp.status_code == 404 and "not configured" in resp.json["error"]["message"]

    refused = login(closed, fakes["github"], person())
    assert query_of(refused)["error"] == "signup_closed"
    email = f"known-{uuid.uuid4().hex[:6]}@example.org"
    existing = user_of(login(sc, fakes["google"], person(email=email)))  # while open
    linked = user_of(login(closed, fakes["github"], person(email=email)))
    assert linked["id"] == existing["id"] and linked["isNewUser"] is False
    with dbmod.connection():
        assert Account.select().count() == 1
