"""Secrets generated once per deployment and kept in a file under ``DATA_DIR`` (0600),
for settings an operator may leave empty (``JWT_SECRET``, ``CONTENT_LINK_SECRET``).

The file is written to a temporary name and linked into place, so processes starting
together all end up with the same secret and none reads a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def load_or_create(path) -> str:
    """The secret in ``path``, created (48 random URL-safe bytes) if it does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            with contextlib.suppress(FileExistsError):  # another process won: use its secret
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip()
