"""Output files of compositions, under ``DATA_DIR/outputs/<uid>/`` and served by the gateway
at ``/outputs/<uid>/<name>``; the uid is unguessable, like a CDN URL."""

from __future__ import annotations

import re
from pathlib import Path

from jobs.views import base_url

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png",
                 "webp": "image/webp", "gif": "image/gif", "mp4": "video/mp4",
                 "json": "application/json", "vtt": "text/vtt; charset=utf-8",
                 "srt": "application/x-subrip; charset=utf-8"}


class Storage:
    def __init__(self, config):
        self.root = Path(config.data_dir) / "outputs"
        self.base_url = base_url(config)  # workers have no request: the one rule's fallback

    def save(self, uid: str, name: str, data: bytes) -> str:
        """Write one output atomically and return its public URL."""
        if not SAFE_NAME.match(name) or not SAFE_NAME.match(uid):
            raise ValueError(f"unsafe output name {uid}/{name}")
        folder = self.root / uid
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(folder / name)
        return f"{self.base_url}/outputs/{uid}/{name}"

    def path(self, uid: str, name: str) -> Path | None:
        if not SAFE_NAME.match(name) or not SAFE_NAME.match(uid):
            return None
        path = self.root / uid / name
        return path if path.is_file() else None


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name.rsplit(".", 1)[-1].lower(), "application/octet-stream")
