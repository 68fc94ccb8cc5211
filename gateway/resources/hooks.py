"""REST hooks (CONTRACT 7): subscribe, list, unsubscribe; the signing secret; credits.low."""

from __future__ import annotations

from core.timefmt import iso
from gateway.envelope import ok
from gateway.resources.common import json_body
from jobs import queries, webhooks


def hook_view(hook) -> dict:
    return {"id": hook.id, "event": hook.event, "target_url": hook.target_url,
            "createdAt": iso(hook.created_at)}


class Hooks:
    """Subscribe ``target_url`` to an event; the first subscription reveals the secret."""

    scope = {"GET": "hooks:read", "POST": "hooks:write"}

    openapi_tag = "Webhooks"
    openapi_body = {"post": {"type": "object", "required": ["target_url", "event"],
                             "properties": {"target_url": {"type": "string", "format": "uri"},
                                            "event": {"enum": list(webhooks.EVENTS)}}}}

    def __init__(self, policy):
        self.policy = policy

    def on_post(self, req, resp):
        body = json_body(req)
        account_id = req.context.caller.account_id
        first = not queries.has_webhook_secret(account_id)
        hook = webhooks.create_hook(account_id, body.get("target_url"), body.get("event"),
                                    self.policy)
        data = hook_view(hook)
        if first:
            data["secret"] = webhooks.secret_for(account_id)  # shown once; rotate to change
        ok(req, resp, data, status=201)

    def on_get(self, req, resp):
        hooks = webhooks.list_hooks(req.context.caller.account_id)
        ok(req, resp, {"items": [hook_view(h) for h in hooks], "next": None})


class HookItem:
    scope = "hooks:write"
    openapi_tag = "Webhooks"

    def on_delete(self, req, resp, hook_id):
        webhooks.delete_hook(req.context.caller.account_id, hook_id)
        ok(req, resp, {"id": hook_id, "deleted": True})


class HookSecretRotate:
    """Replace the signing secret; the new one is shown in this response only."""

    scope = "hooks:write"

    openapi_tag = "Webhooks"

    def on_post(self, req, resp):
        ok(req, resp, {"secret": webhooks.rotate_secret(req.context.caller.account_id)},
           status=201)


class LowCreditThreshold:
    """Set (or clear with null) the balance under which ``credits.low`` fires once."""

    scope = "hooks:write"

    openapi_tag = "Webhooks"

    def on_put(self, req, resp):
        threshold = json_body(req).get("threshold")
        webhooks.set_low_credit_threshold(req.context.caller.account_id, threshold)
        ok(req, resp, {"threshold": threshold})
