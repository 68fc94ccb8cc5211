"""The OAuth2 consent page rendered and submitted in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, installed by ``.ci/services.sh``), driven with
Selenium against a real gunicorn; the client's redirect URI is a loopback HTTP server.

Selenium Manager never runs (the driver's path is given), so nothing is downloaded.
When Chromium is missing the tests fail and say why; ``GATEWAY_SKIP_BROWSER=1`` skips them.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import secrets
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
import requests

from conftest import ADMIN, start_gunicorn

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "correct horse battery"
CLIENT_NAME = "Zapier <browser> & co"
SCOPE = "account:read credits:read"
WAIT_S = 20


def _driver_or_fail():
    """A headless Chromium WebDriver, or a pytest failure saying why."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"headless Chromium is not installed ({', '.join(missing)} missing): run "
                    "`bash .ci/services.sh` (apt-get install chromium chromium-driver) or set "
                    "GATEWAY_SKIP_BROWSER=1 to skip the browser tests", pytrace=False)
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]' (or set "
                    "GATEWAY_SKIP_BROWSER=1)", pytrace=False)
    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: Selenium Manager is off
    profile = tempfile.mkdtemp(prefix="gw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-proxy-server",
                 "--window-size=1024,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except Exception as exc:  # noqa: BLE001 - any start-up failure is the same failure
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"headless Chromium did not start: {type(exc).__name__}: {exc}",
                    pytrace=False)
    driver.set_page_load_timeout(WAIT_S)
    return driver, profile


@pytest.fixture
def browser():
    """Starts Chromium when called, inside the test, so that a missing browser makes the
    test FAIL (not error in set-up); skipped only with GATEWAY_SKIP_BROWSER=1."""
    if os.environ.get("GATEWAY_SKIP_BROWSER") == "1":
        pytest.skip("GATEWAY_SKIP_BROWSER=1")
    started = []

    def launch():
        started.append(_driver_or_fail())
        return started[-1][0]

    yield launch
    for driver, profile in started:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def gateway(config, schema):
    proc, url = start_gunicorn(config, workers=1, threads=4)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


class _Callback(http.server.BaseHTTPRequestHandler):
    """The client's redirect URI: records each request to its path (the browser also asks
    for /favicon.ico) and shows a short page."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path == "/oauth/return/":
            self.server.hits.append(parse_qs(url.query))
        body = b"<!doctype html><title>client callback</title><p>received</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def callback():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Callback)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/oauth/return/"
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def registered(gateway, callback):
    """An OAuth client redirecting to ``callback`` and an account with a password."""
    resp = requests.post(gateway + "/admin/oauth/clients", headers=ADMIN, timeout=10,
                         json={"name": CLIENT_NAME, "redirect_uris": [callback.url]})
    assert resp.status_code == 201, resp.text
    client = resp.json()["data"]
    username = "u" + uuid.uuid4().hex[:10]
    resp = requests.post(gateway + "/admin/accounts", headers=ADMIN, timeout=10,
                         json={"username": username, "password": PASSWORD, "credits": 5})
    assert resp.status_code == 201, resp.text
    return client["client_id"], client["client_secret"], resp.json()["data"]["id"], username


def _pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(gateway, client_id, redirect_uri, state, challenge):
    return gateway + "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": SCOPE, "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256"})


def _sign_in(driver, username, password):
    from selenium.webdriver.common.by import By

    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[name=decision][value=allow]").click()


def test_consent_page_in_headless_chromium(browser, gateway, callback, registered,
                                           tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client_id, secret, account_id, username = registered
    verifier, challenge = _pkce()
    state = "st-" + secrets.token_hex(6)
    browser = browser()
    browser.get(_authorize_url(gateway, client_id, callback.url, state, challenge))

    assert browser.title == f"Authorize {CLIENT_NAME}"
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert heading == f"Authorize {CLIENT_NAME}"  # shown literally, not as markup
    scopes = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.scopes li")]
    assert len(scopes) == 2
    assert any(s.startswith("account:read") and "See your username, balance and plan" in s
               for s in scopes), scopes
    assert any(s.startswith("credits:read")
               and "See your credit balance, transactions and receipts" in s
               for s in scopes), scopes
    assert browser.get_cookie("gw_oauth_csrf") is not None
    browser.save_screenshot(str(tmp_path / "consent.png"))

    _sign_in(browser, username, PASSWORD)
    WebDriverWait(browser, WAIT_S).until(lambda d: d.current_url.startswith(callback.url))
    assert "received" in browser.find_element(By.TAG_NAME, "body").text
    (query,) = callback.hits
    assert query["state"] == [state]
    assert "error" not in query
    (code,) = query["code"]

    tokens = requests.post(gateway + "/oauth/token", auth=(client_id, secret), timeout=10,
                           data={"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": callback.url, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == set(SCOPE.split())

    me = requests.get(gateway + "/zapier/v1/me", timeout=10,
                      headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200, me.text
    data = me.json()["data"]
    assert data["id"] == account_id and data["username"] == username
    assert data["credential"]["kind"] == "oauth"


def test_wrong_password_in_headless_chromium_shows_an_error(browser, gateway, callback,
                                                            registered):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client_id, _, _, username = registered
    _, challenge = _pkce()
    url = _authorize_url(gateway, client_id, callback.url, "st-wrong", challenge)
    browser = browser()
    browser.get(url)
    _sign_in(browser, username, PASSWORD + "x")
    alert = WebDriverWait(browser, WAIT_S).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "p.error[role=alert]"))
    assert alert[0].text == "Wrong username or password."
    assert browser.current_url.startswith(gateway + "/oauth/authorize")
    assert browser.find_element(By.NAME, "username").get_attribute("value") == username
    assert browser.find_element(By.NAME, "password").get_attribute("value") == ""
    assert CLIENT_NAME in browser.find_element(By.TAG_NAME, "h1").text
    assert callback.hits == []  # no redirect to the client
