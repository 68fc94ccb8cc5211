"""The OAuth2 authorization server's routes (/oauth/...)."""

from __future__ import annotations


def routes(deps) -> list[tuple[str, object]]:
    return []
