"""CORS for configured browser origins (``CORS_ORIGINS``).

A browser's preflight carries no credentials, so it must be answered before
authentication: 204 with the Access-Control-* headers, never 401. Origins that are not
configured get no CORS headers at all, and a gateway without CORS_ORIGINS sends none.
"""

import pytest
from falcon.testing import TestClient

from conftest import bearer, make_app
from core.config import Config, ConfigError

ORIGIN = "https://console.example.com"


@pytest.fixture
def cors_client(config, schema):
    return TestClient(make_app(config.replace(cors_origins=(ORIGIN, "http://localhost:3000"))))


def _preflight(client, path, origin=ORIGIN, method="POST"):
    return client.simulate_request("OPTIONS", path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})


def test_preflight_from_a_configured_origin_is_204_with_the_headers(cors_client):
    resp = _preflight(cors_client, "/zapier/v1/echo")
    assert resp.status_code == 204, resp.text
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert resp.headers["Access-Control-Allow-Methods"] == "POST, OPTIONS"
    assert resp.headers["Access-Control-Allow-Headers"] == \
        "authorization, content-type, idempotency-key"
    assert resp.headers["Access-Control-Max-Age"] == "86400"
    assert "Access-Control-Allow-Credentials" not in resp.headers  # bearer keys, no cookies
    assert resp.text == ""
    # a route's own methods, whatever it is
    me = _preflight(cors_client, "/zapier/v1/me", origin="http://localhost:3000", method="GET")
    assert me.status_code == 204
    assert me.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert me.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"


def test_actual_requests_carry_the_origin_and_exposed_headers(cors_client, make_account):
    _, key = make_account(credits=5)
    paid = cors_client.simulate_post("/zapier/v1/echo", json={"message": "hi"},
                                     headers={**bearer(key), "Origin": ORIGIN})
    assert paid.status_code == 200, paid.text
    assert paid.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip() for h in paid.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"X-Request-ID", "X-RateLimit-Remaining", "Retry-After", "Location"} <= exposed
    # errors too: the script can read why it was refused
    refused = cors_client.simulate_get("/zapier/v1/me", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "MISSING_AUTH_HEADER"
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_unknown_origins_get_no_cors_headers(cors_client, make_account):
    _, key = make_account(credits=5)
    for origin in ("https://evil.example", "https://console.example.com.evil.example",
                   "http://console.example.com"):
        pre = _preflight(cors_client, "/zapier/v1/echo", origin=origin)
        assert pre.status_code == 401  # treated as any unauthenticated request
        assert not [h for h in pre.headers if h.lower().startswith("access-control-")]
        resp = cors_client.simulate_get("/zapier/v1/me",
                                        headers={**bearer(key), "Origin": origin})
        assert resp.status_code == 200
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


def test_without_cors_origins_nothing_changes(client):
    pre = _preflight(client, "/zapier/v1/echo")
    assert pre.status_code == 401
    assert "Access-Control-Allow-Origin" not in pre.headers


def test_a_preflight_changes_nothing_and_unknown_routes_stay_404(cors_client, make_account):
    account_id, key = make_account(credits=3)
    assert _preflight(cors_client, "/zapier/v1/echo").status_code == 204
    me = cors_client.simulate_get("/zapier/v1/me", headers=bearer(key))
    assert me.json["data"]["balance"] == 3  # nothing debited
    missing = _preflight(cors_client, "/no/such/route")
    assert missing.status_code == 404
    assert missing.json["success"] is False


def test_cors_origins_setting_is_parsed_and_checked():
    cfg = Config.from_env({"CORS_ORIGINS": "https://A.example.com/, http://localhost:3000"})
    assert cfg.cors_origins == ("https://a.example.com", "http://localhost:3000")
    assert Config.from_env({}).cors_origins == ()
    assert Config.from_env({"CORS_ORIGINS": "*"}).cors_origins == ("*",)
    for bad in ("a.example.com", "https://a.example.com/path", "ftp://a.example.com",
                "https://user@a.example.com"):
        with pytest.raises(ConfigError, match="CORS_ORIGINS"):
            Config.from_env({"CORS_ORIGINS": bad})
