"""The console's one stylesheet, served from the package (no CDN, no build step)."""

from __future__ import annotations

from pathlib import Path

from core.errors import NotFound
from gateway.middleware import NONE

FILES = {"console.css": "text/css; charset=utf-8"}
HERE = Path(__file__).parent / "static"


class Static:
    auth = NONE
    uses_db = False
    openapi = False

    def on_get(self, req, resp, name):
        if name not in FILES:
            raise NotFound("No such file")
        resp.content_type = FILES[name]
        resp.set_header("Cache-Control", "public, max-age=3600")
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.data = (HERE / name).read_bytes()
