"""The Zapier integration (integrations/zapier) passes its own tests against a live gateway,
and ``zapier validate`` (zapier-platform-cli, a dev dependency) finds it structurally sound.

Starts gunicorn (serving two tiny generation models, so the model, size and sampler
dropdowns have something to offer), an RQ worker (cpu and webhooks queues, so callbacks
and REST hooks are delivered) and a loopback image host, creates accounts, and runs
``npm test`` there with the gateway's URL and keys in the environment. Installs the npm
dependencies with ``npm ci`` when ``node_modules`` lacks one of them; skipped only when
``npm`` is not installed.
The OAuth2 flow tests inside run when GATEWAY_OAUTH_* variables are set (see the README).
"""

from __future__ import annotations

import base64
import hashlib
import html.parser
import os
import secrets
import shutil
import subprocess
import uuid
from urllib.parse import parse_qs, urljoin, urlparse

import pytest
import requests

from async_support import image_host, start_worker, stop_worker
from conftest import ADMIN, ROOT, start_gunicorn

ZAPIER_DIR = ROOT / "integrations" / "zapier"

# Passed through to `npm test` when the caller has them (OAuth2 flow tests).
OAUTH_VARS = ("GATEWAY_OAUTH_CLIENT_ID", "GATEWAY_OAUTH_CLIENT_SECRET", "GATEWAY_OAUTH_CODE",
              "GATEWAY_OAUTH_REDIRECT_URI", "GATEWAY_OAUTH_CODE_VERIFIER",
              "GATEWAY_OAUTH_REFRESH_TOKEN")


def _npm_env(extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "LOGGING_", "ZAPIER_")) or k in OAUTH_VARS}
    env.update({"CI": "1", "NO_COLOR": "1", "npm_config_update_notifier": "false"})
    env.update(extra)
    return env


# What `npm ci` installs that the tests use: the platform, its CLI (`zapier validate`) and
# Node.js 22 from the npm registry (the CLI refuses older ones; npm scripts run it first).
NODE_MODULES = ("zapier-platform-core", "zapier-platform-cli", "node", "mocha")


def _ensure_node_modules(npm):
    if all((ZAPIER_DIR / "node_modules" / name).is_dir() for name in NODE_MODULES):
        return
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=ZAPIER_DIR,
                          capture_output=True, text=True, timeout=600, env=_npm_env({}))
    assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"


def _account(url, username, credits, plan):
    resp = requests.post(url + "/admin/accounts", headers=ADMIN, timeout=10,
                         json={"username": username, "credits": credits, "plan": plan})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]["api_key"]


# Zapier's OAuth redirect URI shape; only compared as a string, never requested.
REDIRECT = "https://zapier.com/dashboard/auth/oauth/return/App000CLIAPI/"
SCOPES = ("account:read actions:run actions:read content:read content:write credits:read "
          "hooks:read hooks:write")


class _Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "inputs": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["inputs"][attrs["name"]] = attrs.get("value") or ""


def _oauth_env(url):
    """An OAuth client and a fresh authorization code (PKCE), obtained as a browser would,
    when the gateway's OAuth provider is there; {} (the npm OAuth tests then skip) if not."""
    if any(os.environ.get(k) for k in OAUTH_VARS):
        return {}  # the caller brought their own
    try:
        resp = requests.post(url + "/admin/oauth/clients", headers=ADMIN, timeout=10,
                             json={"name": "Zapier test", "redirect_uris": [REDIRECT],
                                   "scopes": SCOPES.split()})
        if resp.status_code != 201:
            print(f"OAuth tests skipped: POST /admin/oauth/clients -> {resp.status_code}")
            return {}
        client = resp.json()["data"]
        username, password = "zapoa" + uuid.uuid4().hex[:8], "zapier-test-password"
        resp = requests.post(url + "/admin/accounts", headers=ADMIN, timeout=10,
                             json={"username": username, "password": password, "credits": 5})
        assert resp.status_code == 201, resp.text
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        session = requests.Session()
        page = session.get(url + "/oauth/authorize", timeout=10, params={
            "response_type": "code", "client_id": client["client_id"],
            "redirect_uri": REDIRECT, "scope": SCOPES, "state": "zap-state",
            "code_challenge": challenge, "code_challenge_method": "S256"})
        if page.status_code != 200:
            print(f"OAuth tests skipped: GET /oauth/authorize -> {page.status_code}")
            return {}
        parser = _Forms()
        parser.feed(page.text)
        form = parser.forms[0]
        fields = dict(form["inputs"], username=username, password=password, decision="allow")
        done = session.post(urljoin(page.url, form["action"] or "/oauth/authorize"),
                            data=fields, allow_redirects=False, timeout=10)
        location = urlparse(done.headers.get("Location", ""))
        code = parse_qs(location.query).get("code", [None])[0]
        if done.status_code != 302 or not code:
            print(f"OAuth tests skipped: consent POST -> {done.status_code}, no code")
            return {}
        return {"GATEWAY_OAUTH_CLIENT_ID": client["client_id"],
                "GATEWAY_OAUTH_CLIENT_SECRET": client["client_secret"],
                "GATEWAY_OAUTH_CODE": code, "GATEWAY_OAUTH_REDIRECT_URI": REDIRECT,
                "GATEWAY_OAUTH_CODE_VERIFIER": verifier}
    except (requests.RequestException, KeyError, IndexError, ValueError) as exc:
        print(f"OAuth tests skipped: the provider could not be driven ({exc!r})")
        return {}


def _npm():
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the Zapier integration's tests need Node.js")
    _ensure_node_modules(npm)
    return npm


def test_zapier_validate_finds_the_app_structurally_sound():
    """`npm run validate`: `zapier validate --without-style` for both auth variants, which
    checks the definition locally against the platform's schema (no login, no network)."""
    done = subprocess.run([_npm(), "run", "--silent", "validate"], cwd=ZAPIER_DIR,
                          capture_output=True, text=True, timeout=120, env=_npm_env({}))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.count("This project is structurally sound!") == 2, output
    assert "Requires node version" not in output


def test_zapier_app_passes_its_own_tests(config, schema, tiny_models):
    npm = _npm()
    proc, url = start_gunicorn(config, workers=2,
                               extra_env={"OUTBOUND_ALLOW_HOSTS": "127.0.0.1",
                                          "MODELS_FILE": str(tiny_models)})
    worker = start_worker(config, queues="cpu,webhooks")
    images = image_host()
    try:
        # Room for the whole suite, and a tight plan for the 429 test.
        for name, per_minute in (("zapier-test", 1000), ("zapier-tight", 1)):
            resp = requests.put(f"{url}/admin/plans/{name}", headers=ADMIN, timeout=10,
                                json={"perMinute": per_minute, "perDay": 100000})
            assert resp.status_code == 200, resp.text
        suffix = uuid.uuid4().hex[:8]
        key = _account(url, "zapier" + suffix, 1000, "zapier-test")
        limited = _account(url, "zaplim" + suffix, 0, "zapier-tight")

        done = subprocess.run(
            [npm, "test", "--silent"], cwd=ZAPIER_DIR, capture_output=True, text=True,
            timeout=180, env=_npm_env({
                "GATEWAY_URL": url, "GATEWAY_API_KEY": key,
                "GATEWAY_LIMITED_API_KEY": limited,
                "GATEWAY_IMAGE_URL": images.url + "/product.png",
                **_oauth_env(url),
            }))
        output = done.stdout + done.stderr
        print(output)
        assert done.returncode == 0, f"npm test failed (exit {done.returncode}):\n{output}"
        assert " passing" in done.stdout
    finally:
        images.close()
        stop_worker(worker)
        proc.terminate()
        proc.wait(timeout=20)
