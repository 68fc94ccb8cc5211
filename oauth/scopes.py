"""OAuth2 scopes: what a delegated token (OAuth2, or a narrowed bearer token) may do.

API keys carry every scope. A resource names the scope it needs in its ``scope``
attribute (a string, or a dict by HTTP method); the ``Identify`` middleware refuses a
token without it with 403 FORBIDDEN (401 is only for dead credentials).
"""

from __future__ import annotations

SCOPES = {
    "account:read": "See your username, balance and plan",
    "actions:run": "Run paid actions and cancel them (spends credits)",
    "actions:read": "See actions, compositions and posts",
    "content:read": "See and download your content library",
    "content:write": "Change, share and delete items of your content library",
    "credits:read": "See your credit balance, transactions and receipts",
    "hooks:read": "See your webhook subscriptions",
    "hooks:write": "Create and delete webhook subscriptions",
    "keys:read": "See your API keys",
    "keys:write": "Create and revoke API keys",
}

# What an integration such as the Zapier app asks for.
DEFAULT_SCOPES = ("account:read", "actions:run", "actions:read", "content:read",
                  "content:write", "credits:read", "hooks:read", "hooks:write")


def required_scope(resource, method: str) -> str | None:
    scope = getattr(resource, "scope", None)
    if isinstance(scope, dict):
        return scope.get(method.upper())
    return scope
