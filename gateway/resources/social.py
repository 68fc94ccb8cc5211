"""Social login routes (/auth/{provider})."""

from __future__ import annotations


def routes(deps) -> list[tuple[str, object]]:
    return []
