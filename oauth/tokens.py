"""Password bearer tokens (PyJWT) and their authenticator."""

from __future__ import annotations


def authenticators(config) -> list:
    """Credential kinds this module adds to the middleware, asked after API keys."""
    return []
