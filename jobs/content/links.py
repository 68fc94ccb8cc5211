"""Signed links to content: a URL anyone may open until it expires, that names exactly one
set of bytes (the blob's SHA-256 is signed), so a link can neither be widened to another
item nor follow the item to a later version.

``GET /links/{content_id}/<file name>?v=<sha256>&exp=<unix seconds>&sig=<hex>`` serves
it (the name is cosmetic);
``sig`` is HMAC-SHA256 under ``CONTENT_LINK_SECRET`` (empty: generated once and kept in
``DATA_DIR/link_secret``) and compared in constant time. Share links and the output URLs
of actions and project runs are such links (docs/CONTENT.md).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import quote, urlencode

from core import keyfile

SECRET_FILE = "link_secret"  # noqa: S105 (a file name)
MAX_TTL_S = 10 * 365 * 24 * 3600


class LinkSigner:
    def __init__(self, secret: str):
        # A key of its own, so a link signature can never be replayed as another token.
        self._key = hmac.new(secret.encode(), b"content-links/v1", hashlib.sha256).digest()

    @classmethod
    def from_config(cls, config) -> LinkSigner:
        secret = config.storage.link_secret or keyfile.load_or_create(
            Path(config.data_dir) / SECRET_FILE)
        return cls(secret)

    def _sig(self, content_id: str, sha256: str, exp: int) -> str:
        msg = f"{content_id}\n{sha256}\n{exp}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def url(self, base: str, content_id: str, sha256: str, exp: int, filename="") -> str:
        """The link; ``filename`` (not signed: cosmetic) ends its path, so tools that
        guess a type from the URL (and people) see ``.../photo.png``."""
        query = urlencode({"v": sha256, "exp": int(exp),
                           "sig": self._sig(content_id, sha256, int(exp))})
        name = f"/{quote(filename, safe='')}" if filename else ""
        return f"{base}/links/{content_id}{name}?{query}"

    def valid(self, content_id: str, sha256: str, exp, sig, now_s: float) -> bool:
        """True when ``sig`` signs these bytes of this item and ``exp`` has not passed."""
        try:
            exp = int(exp)
        except (TypeError, ValueError):
            return False
        if exp < now_s or not isinstance(sig, str) or not sig.isascii():
            return False
        return hmac.compare_digest(self._sig(content_id, sha256, exp), sig)
