"""The interactive API reference: ``GET /docs`` is Swagger UI over ``/openapi.json``.

Everything the page loads is served by the gateway itself, from ``/docs/static/``; nothing
comes from a CDN. The Swagger UI files are the ``swagger-ui-dist`` build that the PyPI
package ``drf-spectacular-sidecar`` ships (re-published every month from npm). Its
``__init__`` imports Django, so its folder is found with ``importlib.util.find_spec``, which
reads no module of it: Django is installed as its dependency and never imported here.

- ``/docs`` and ``/docs/``: a small HTML page with no inline script (the initializer is
  ``/docs/static/gateway-docs.js``), sent with a Content-Security-Policy that allows
  scripts, styles and connections from the gateway's own origin only (plus inline styles,
  which Swagger UI's React components set, and ``data:`` images, its icons).
- ``/docs/static/{name}``: a file of that folder, looked up by exact name in an index of its
  regular files made once: a name with ``..``, a slash or a backslash, encoded or not,
  names no entry, so no path outside that folder can ever be opened. Each answer has its
  content type, ``X-Content-Type-Options: nosniff``, a strong ``ETag`` (a conditional GET
  answers 304) and ``Cache-Control``.

Public (``auth = NONE``, no database), and not part of the OpenAPI document itself
(``openapi = False``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import threading
from pathlib import Path

import falcon

from core.errors import NotFound
from gateway.middleware import NONE

DIST_PACKAGE = "drf_spectacular_sidecar"
DIST_DISTRIBUTION = "drf-spectacular-sidecar"
DIST_SUBDIR = ("static", "drf_spectacular_sidecar", "swagger-ui-dist")
STATIC_PREFIX = "/docs/static/"
OPENAPI_URL = "/openapi.json"
INITIALIZER = "gateway-docs.js"

PAGE_CACHE = "no-cache"  # small; revalidated each time, so a new version shows at once
ASSET_CACHE = "public, max-age=86400"

CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".map": "application/json",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    "": "text/plain; charset=utf-8",  # LICENSE
}

# Starts Swagger UI. A file, not an inline script, so the CSP needs no 'unsafe-inline' for
# scripts. BaseLayout: no top bar, whose URL box would load other documents.
INITIALIZER_JS = f"""\
// The gateway's API reference: Swagger UI over {OPENAPI_URL} (gateway/resources/docs.py).
window.addEventListener("DOMContentLoaded", function () {{
  window.ui = SwaggerUIBundle({{
    url: "{OPENAPI_URL}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    oauth2RedirectUrl: window.location.origin + "{STATIC_PREFIX}oauth2-redirect.html"
  }});
}});
""".encode()


def swagger_ui_dir() -> Path:
    """The ``swagger-ui-dist`` folder of the installed package (its modules are not run)."""
    spec = importlib.util.find_spec(DIST_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{DIST_DISTRIBUTION} is not installed (setup.cfg install_requires)")
    folder = Path(next(iter(spec.submodule_search_locations))).joinpath(*DIST_SUBDIR)
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"{folder} holds no Swagger UI build")
    return folder


def dist_version() -> str:
    try:
        return importlib.metadata.version(DIST_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0"


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def security_headers(resp, connect_src: str = "") -> None:
    resp.set_header("Content-Security-Policy",
                    "default-src 'self'; script-src 'self'; "
                    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                    f"connect-src 'self'{connect_src}; object-src 'none'; base-uri 'none'; "
                    "form-action 'self'; frame-ancestors 'none'")
    resp.set_header("X-Content-Type-Options", "nosniff")
    resp.set_header("Referrer-Policy", "no-referrer")


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _send(req, resp, data: bytes, kind: str, cache: str, etag: str) -> None:
    resp.cache_control = [cache]
    resp.etag = etag
    if req.if_none_match and ("*" in req.if_none_match or etag in req.if_none_match):
        resp.status = falcon.HTTP_304
        return
    resp.content_type = kind
    resp.data = data  # Falcon sends no body for HEAD; Content-Length stays the GET's


class Asset:
    """One file: its bytes (read on first use), type and ETag."""

    def __init__(self, path: Path | None, data: bytes | None = None):
        self.path, self._data = path, data
        self.kind = content_type(path.name if path is not None else INITIALIZER)
        self._etag = _etag(data) if data is not None else None
        self._lock = threading.Lock()

    def load(self) -> tuple[bytes, str]:
        if self._data is None:
            with self._lock:
                if self._data is None:
                    data = self.path.read_bytes()
                    self._etag, self._data = _etag(data), data
        return self._data, self._etag


def asset_index(folder: Path) -> dict[str, Asset]:
    """Every regular file directly in ``folder`` (no links, no subfolders), by name, and the
    initializer. Nothing else can be served."""
    root = folder.resolve()
    index = {}
    for path in sorted(root.iterdir()):
        if path.is_file() and not path.is_symlink() and path.resolve().parent == root:
            index[path.name] = Asset(path)
    index[INITIALIZER] = Asset(None, INITIALIZER_JS)
    return index


class DocsAssets:
    """A Swagger UI file for the API reference at /docs (public, cached, ETag)."""

    auth = NONE
    uses_db = False
    openapi = False

    def __init__(self, folder: Path | None = None):
        self.folder = folder
        self._index: dict[str, Asset] | None = None

    @property
    def index(self) -> dict[str, Asset]:
        if self._index is None:  # on first use, so an app that never serves /docs reads nothing
            self._index = asset_index(self.folder or swagger_ui_dir())
        return self._index

    def on_get(self, req, resp, name):
        asset = self.index.get(name)
        if asset is None:
            raise NotFound("No such documentation asset")
        data, etag = asset.load()
        security_headers(resp)
        _send(req, resp, data, asset.kind, ASSET_CACHE, etag)

    on_head = on_get


PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API reference</title>
<link rel="stylesheet" href="{static}swagger-ui.css?v={version}">
<link rel="icon" type="image/png" href="{static}favicon-32x32.png?v={version}">
</head>
<body>
<noscript>This reference needs JavaScript. The OpenAPI document itself is at
<a href="{openapi}">{openapi}</a>.</noscript>
<div id="swagger-ui"></div>
<script src="{static}swagger-ui-bundle.js?v={version}"></script>
<script src="{static}{initializer}?v={version}"></script>
</body>
</html>
"""


class DocsPage:
    """The interactive API reference (Swagger UI over /openapi.json); an HTML page."""

    auth = NONE
    uses_db = False
    openapi = False

    def __init__(self, public_base_url: str = ""):
        # "Try it out" calls the document's server URL (PUBLIC_BASE_URL where it is set): a
        # page reached on another origin may connect there too.
        origin = _origin(public_base_url)
        self.connect_src = f" {origin}" if origin else ""
        self._page: tuple[bytes, str] | None = None

    def page(self) -> tuple[bytes, str]:
        if self._page is None:
            version = dist_version() + "-" + _etag(INITIALIZER_JS)[:8]
            data = PAGE.format(static=STATIC_PREFIX, version=version, openapi=OPENAPI_URL,
                               initializer=INITIALIZER).encode()
            self._page = data, _etag(data)
        return self._page

    def on_get(self, req, resp):
        data, etag = self.page()
        security_headers(resp, self.connect_src)
        _send(req, resp, data, falcon.MEDIA_HTML, PAGE_CACHE, etag)

    on_head = on_get


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL; empty for anything else."""
    scheme, sep, rest = (url or "").partition("://")
    host = rest.split("/", 1)[0]
    if not sep or scheme.lower() not in ("http", "https") or not host \
            or any(c in host for c in " ;,'\""):
        return ""
    return f"{scheme.lower()}://{host}"
