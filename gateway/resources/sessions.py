"""Password bearer tokens (/auth/token, /auth/refresh) and account routes."""

from __future__ import annotations


def routes(deps) -> list[tuple[str, object]]:
    return []
