"""REST hooks (CONTRACT 7): subscribe, list, unsubscribe; the signing secret; credits.low."""

from __future__ import annotations

from core.clock import SYSTEM
from core.errors import InvalidRequest
from core.timefmt import iso
from gateway.envelope import ok
from gateway.resources.common import LIST_QUERY, json_body, list_params, next_url, once
from jobs import queries, webhooks


def hook_view(hook) -> dict:
    return {"id": hook.id, "event": hook.event, "target_url": hook.target_url,
            "createdAt": iso(hook.created_at)}


class Hooks:
    """Subscribe ``target_url`` to an event; the first subscription reveals the secret.

    GET lists the caller's hooks newest first, ``limit`` (1-100, default 50) at a time;
    ``data.next`` is the full URL of the next page (null on the last)."""

    scope = {"GET": "hooks:read", "POST": "hooks:write"}

    openapi_tag = "Webhooks"
    openapi_body = {"post": {"type": "object", "required": ["target_url", "event"],
                             "properties": {"target_url": {"type": "string", "format": "uri"},
                                            "event": {"enum": list(webhooks.EVENTS)}}}}
    openapi_query = {"get": LIST_QUERY}
    openapi_idempotent = True

    def __init__(self, config, policy, clock=SYSTEM):
        self.config, self.policy, self.clock = config, policy, clock

    def on_post(self, req, resp):
        body = json_body(req)
        account_id = req.context.caller.account_id

        def subscribe():
            first = not queries.has_webhook_secret(account_id)
            hook = webhooks.create_hook(account_id, body.get("target_url"), body.get("event"),
                                        self.policy)
            data = hook_view(hook)
            if first:
                data["secret"] = webhooks.secret_for(account_id)  # shown once; rotate it
            return 201, data, None

        once(req, resp, "hooks", body, subscribe, clock=self.clock, config=self.config,
             secrets=("secret",))

    def on_get(self, req, resp):
        limit, cursor = list_params(req)
        hooks, after = webhooks.list_hooks(req.context.caller.account_id, limit=limit,
                                           cursor=cursor)
        ok(req, resp, {"items": [hook_view(h) for h in hooks],
                       "next": next_url(req, self.config, after)})


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
        json_body(req)  # no fields, but a body that is sent must be a JSON object
        ok(req, resp, {"secret": webhooks.rotate_secret(req.context.caller.account_id)},
           status=201)


class LowCreditThreshold:
    """Set (or clear with null) the balance under which ``credits.low`` fires once.

    ``threshold``: an integer from 0 to 10^12 credits, or null to clear it."""

    scope = "hooks:write"

    openapi_tag = "Webhooks"
    openapi_body = {"put": {"type": "object", "required": ["threshold"],
                            "additionalProperties": False, "properties": {"threshold": {
                                "type": ["integer", "null"], "minimum": 0,
                                "maximum": webhooks.MAX_THRESHOLD}}}}

    def on_put(self, req, resp):
        body = json_body(req)
        problems = [{"field": name, "problem": "unknown field"} for name in body
                    if name != "threshold"]
        if "threshold" not in body:
            problems.append({"field": "threshold", "problem": "is required (null clears it)"})
        if problems:
            raise InvalidRequest("; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                                 details=problems)
        threshold = body["threshold"]
        webhooks.set_low_credit_threshold(req.context.caller.account_id, threshold)
        ok(req, resp, {"threshold": threshold})
