"""GET /docs: the interactive API reference (Swagger UI over /openapi.json), served with its
assets by the gateway itself (gateway/resources/docs.py), through the real app."""

from __future__ import annotations

import http.client
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from conftest import ROOT
from gateway.openapi import documented
from gateway.resources import docs
from gateway.routes import route_table

STATIC = "/docs/static/"
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png",
         ".html": "text/html", ".map": "application/json"}


class _Refs(HTMLParser):
    """Every URL the page loads or links to, and the text of each script element."""

    def __init__(self):
        super().__init__()
        self.urls, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.urls.append((tag, attrs[name]))
        if tag == "script":
            self._in_script = True
            self.scripts.append({"src": attrs.get("src"), "text": ""})

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1]["text"] += data


def _refs(html: str) -> _Refs:
    parser = _Refs()
    parser.feed(html)
    return parser


def _assert_not_found(resp):
    assert resp.status_code == 404, (resp.status_code, resp.text[:200])
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json
    assert body["success"] is False and body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["statusCode"] == 404 and body["meta"]["requestId"]


def _csp(resp) -> dict[str, list[str]]:
    out = {}
    for part in resp.headers["Content-Security-Policy"].split(";"):
        name, *values = part.split()
        out[name] = values
    return out


@pytest.mark.parametrize("path", ["/docs", "/docs/"])
def test_the_page_is_html_without_credentials_and_locked_down(client, path):
    resp = client.simulate_get(path)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("text/html")
    assert "swagger-ui" in resp.text
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["ETag"] and resp.headers["Cache-Control"] == "no-cache"
    csp = _csp(resp)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]  # no inline script, no eval
    assert csp["img-src"] == ["'self'", "data:"]
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"]
    assert csp["frame-ancestors"] == ["'none'"]
    # "Try it out" may call the document's server URL (PUBLIC_BASE_URL in these tests)
    assert csp["connect-src"] == ["'self'", "http://gateway.test"]
    # no inline script: every script element loads a file and holds no code
    scripts = _refs(resp.text).scripts
    assert scripts and all(s["src"] and not s["text"].strip() for s in scripts)


def test_a_wrong_credential_does_not_matter_on_a_public_page(client):
    resp = client.simulate_get("/docs", headers={"Authorization": "Bearer gwk_wrong"})
    assert resp.status_code == 200
    asset = client.simulate_get(STATIC + "swagger-ui.css", headers={"X-API-Key": "nope"})
    assert asset.status_code == 200


def test_the_page_loads_only_local_assets_each_with_its_type(client):
    page = client.simulate_get("/docs")
    refs = _refs(page.text).urls
    loaded = [url for _, url in refs if url != docs.OPENAPI_URL]
    assert {"swagger-ui.css", "swagger-ui-bundle.js", docs.INITIALIZER} <= {
        urlsplit(url).path.removeprefix(STATIC) for url in loaded}
    for url in loaded:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url  # no CDN, no other host
        assert parts.path.startswith(STATIC), url
        resp = client.simulate_get(parts.path, query_string=parts.query)
        assert resp.status_code == 200, url
        suffix = "." + parts.path.rsplit(".", 1)[-1]
        assert resp.headers["Content-Type"].startswith(TYPES[suffix]), url
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == docs.ASSET_CACHE
        assert resp.headers["ETag"].startswith('"') and resp.content
    # the Swagger UI build understands OpenAPI 3.1 (Swagger UI 5 and later)
    bundle = client.simulate_get(STATIC + "swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and "3.1" in bundle


def test_the_initializer_points_at_the_openapi_document(client):
    init = client.simulate_get(STATIC + docs.INITIALIZER)
    assert init.status_code == 200
    assert init.headers["Content-Type"].startswith("text/javascript")
    assert 'url: "/openapi.json"' in init.text and "SwaggerUIBundle(" in init.text
    assert "validatorUrl: null" in init.text  # no call to an outside validator
    doc = client.simulate_get("/openapi.json")  # public too, so the page can load it
    assert doc.status_code == 200 and doc.json["openapi"] == "3.1.0"


def test_every_file_of_the_dist_folder_is_served_and_nothing_else(client):
    folder = docs.swagger_ui_dir()
    names = {p.name for p in folder.iterdir() if p.is_file()}
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "oauth2-redirect.html"} <= names
    for name in names:
        resp = client.simulate_get(STATIC + name)
        assert resp.status_code == 200, name
        assert resp.content == (folder / name).read_bytes(), name
    redirect = client.simulate_get(STATIC + "oauth2-redirect.html")
    assert redirect.headers["Content-Type"].startswith("text/html")
    assert _csp(redirect)["script-src"] == ["'self'"]
    assert all(s["src"] for s in _refs(redirect.text).scripts)


TRAVERSALS = [
    "../../setup.cfg", "..", "%2e%2e", ".%2e", "..%2F..%2Fsetup.cfg", "%2e%2e%2fsetup.cfg",
    "%2E%2E%2F%2E%2E%2Fsetup.cfg", "..%5C..%5Csetup.cfg", "..\\setup.cfg",
    "%252e%252e%252fsetup.cfg", "..%252f..%252fsetup.cfg", "%c0%ae%c0%ae%c0%afsetup.cfg",
    "..%2Fredoc%2FLICENSE", "../redoc/LICENSE", "%2Fetc%2Fpasswd", "/etc/passwd",
    "....//setup.cfg", "..;/setup.cfg", "swagger-ui.css%00.png", "swagger-ui.css/..",
    "./swagger-ui.css", ".%2Fswagger-ui.css", "SWAGGER-UI.CSS",
]


@pytest.mark.parametrize("name", TRAVERSALS)
def test_traversal_and_unknown_names_are_not_found(client, name):
    resp = client.simulate_get(STATIC + name)
    _assert_not_found(resp)
    assert "[metadata]" not in resp.text and "root:" not in resp.text


def test_an_unknown_asset_is_not_found_in_the_envelope(client):
    for path in (STATIC + "nope.js", STATIC + "index.html", STATIC + "swagger-initializer.js",
                 STATIC, "/docs/static", "/docs/nope", "/docs/static/a/b.js"):
        _assert_not_found(client.simulate_get(path))
    head = client.simulate_head(STATIC + "nope.js")  # the envelope's headers, no body
    assert head.status_code == 404 and head.content == b""
    assert head.headers["Content-Type"].startswith("application/json")


def test_traversal_is_refused_by_the_real_server_too(server):
    """Raw request targets (no client-side normalising) against gunicorn."""
    host = urlsplit(server).netloc
    for name in ("../../setup.cfg", "..%2F..%2Fsetup.cfg", "%2e%2e%2f%2e%2e%2fsetup.cfg",
                 "..%5Csetup.cfg", "%252e%252e%252fsetup.cfg", "..%2Fredoc%2FLICENSE"):
        conn = http.client.HTTPConnection(host, timeout=10)
        conn.putrequest("GET", STATIC + name, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        # gunicorn answers a target it cannot route 400 or 404; never a file
        assert resp.status in (400, 404), (name, resp.status)
        assert b"[metadata]" not in body and b"MIT License" not in body, name
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.request("GET", "/docs")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/html")
    resp.read()
    conn.close()


@pytest.mark.parametrize("path", ["/docs", "/docs/", STATIC + "swagger-ui.css",
                                  STATIC + docs.INITIALIZER])
def test_head_answers_like_get_without_a_body(client, path):
    get, head = client.simulate_get(path), client.simulate_head(path)
    assert head.status_code == 200 and head.content == b""
    for name in ("Content-Type", "Content-Length", "ETag", "Cache-Control",
                 "Content-Security-Policy", "X-Content-Type-Options"):
        assert head.headers[name] == get.headers[name], name
    assert int(head.headers["Content-Length"]) == len(get.content)


def test_a_conditional_get_answers_304(client):
    for path in ("/docs", STATIC + "swagger-ui-bundle.js"):
        first = client.simulate_get(path)
        again = client.simulate_get(path, headers={"If-None-Match": first.headers["ETag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["ETag"] == first.headers["ETag"]
        other = client.simulate_get(path, headers={"If-None-Match": '"other"'})
        assert other.status_code == 200 and other.content == first.content


def test_the_reference_is_not_in_the_openapi_document(client, app):
    paths = client.simulate_get("/openapi.json").json["paths"]
    table = dict(route_table(app.deps))
    for path in ("/docs", "/docs/", "/docs/static/{name}"):
        assert path in table and not documented(path, table[path])
        assert path not in paths


def test_writes_are_not_allowed(client):
    resp = client.simulate_post("/docs", body="x")
    assert resp.status_code == 405 and resp.json["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_finding_the_assets_imports_no_django():
    """The asset package's ``__init__`` imports Django; the gateway never runs it."""
    code = ("import sys; from gateway.resources import docs; "
            "index = docs.asset_index(docs.swagger_ui_dir()); "
            "assert 'swagger-ui-bundle.js' in index, sorted(index); "
            "index['swagger-ui-bundle.js'].load(); "
            "assert 'django' not in sys.modules and 'drf_spectacular_sidecar' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


@pytest.mark.parametrize("url,origin", [
    ("https://api.example.com", "https://api.example.com"),
    ("https://api.example.com:8443/base/", "https://api.example.com:8443"),
    ("HTTP://h.test", "http://h.test"), ("", ""), (None, ""), ("ftp://h.test", ""),
    ("https://", ""), ("https://a.test; script-src *", ""), ("h.test", ""),
])
def test_the_connect_src_origin_is_only_an_http_origin(url, origin):
    assert docs._origin(url) == origin
