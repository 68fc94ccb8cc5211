"""Signup and API keys for the calling account (CONTRACT 10, seeds 000 and 002)."""

from __future__ import annotations

from core.clock import SYSTEM
from core.errors import Forbidden
from core.timefmt import iso
from gateway.envelope import ok
from gateway.middleware import ADDRESS
from gateway.resources.common import (
    LIST_QUERY,
    json_body,
    key_view,
    list_params,
    next_url,
    once,
)
from oauth import keys
from oauth.accounts import create_account


class Signup:
    """``POST /api/account/create``: limited per client address; the operator can close it."""

    auth = ADDRESS
    openapi_tag = "Account"

    def __init__(self, config):
        self.config = config

    def on_post(self, req, resp):
        if not self.config.signup_open:
            raise Forbidden("Signup is closed on this gateway")
        body = json_body(req)
        account, api_key = create_account(body.get("username"), body.get("password"),
                                          credits=self.config.signup_credits)
        ok(req, resp, {"id": account.id, "username": account.username, "api_key": api_key},
           status=201)


class KeyGenerate:
    """A new API key, shown once. With ``Idempotency-Key`` a retried request makes no
    second key: the replay answers the same key without its secret (never stored), so a
    caller whose first answer was lost revokes that key and makes another."""

    scope = "keys:write"
    openapi_tag = "Keys"
    openapi_idempotent = True

    def __init__(self, config, clock=SYSTEM):
        self.config, self.clock = config, clock

    def on_post(self, req, resp):
        body = json_body(req)

        def generate():
            row, secret = keys.create_key(req.context.caller.account_id,
                                          body.get("description", ""))
            return 201, {"keyId": row.id, "apiKey": secret, "prefix": row.prefix,
                         "description": row.description, "createdAt": iso(row.created_at)}, None

        once(req, resp, "keys", body, generate, clock=self.clock, config=self.config,
             secrets=("apiKey",))


class KeyList:
    """The caller's API keys, newest first, ``limit`` (1-100, default 50) at a time.

    ``data.next`` is the full URL of the next page (null on the last)."""

    scope = "keys:read"
    openapi_tag = "Keys"
    openapi_query = {"get": LIST_QUERY}

    def __init__(self, config):
        self.config = config

    def on_get(self, req, resp):
        limit, cursor = list_params(req)
        rows, after = keys.page_keys(req.context.caller.account_id, limit=limit, cursor=cursor)
        ok(req, resp, {"items": [{**key_view(r), "id": r.id} for r in rows],
                       "next": next_url(req, self.config, after)})


class KeyRevoke:
    scope = "keys:write"
    openapi_tag = "Keys"

    def __init__(self, generations):
        self.generations = generations  # every process drops the key at once

    def on_delete(self, req, resp, key_id):
        row = keys.revoke_key(req.context.caller.account_id, key_id,
                              generations=self.generations)
        ok(req, resp, key_view(row))
