"""Webhook endpoints like Stripe's (docs/API.md "Webhook endpoints"): several per account,
each with its own secret, event filter and switch; the delivery log, redeliver, test."""

from __future__ import annotations

from gateway.envelope import ok
from gateway.resources.common import LIST_QUERY, json_body, list_params, next_url, once
from jobs import webhook_endpoints as we

_URL = {"type": "string", "format": "uri", "maxLength": we.MAX_URL_CHARS}
_EVENTS = {"type": "array", "minItems": 1, "items": {"enum": list(we.EVENT_TYPES)},
           "description": "Event types to send; `*` sends every event"}
_DESCRIPTION = {"type": "string", "maxLength": we.MAX_DESCRIPTION_CHARS}


class WebhookEndpoints:
    """The account's webhook endpoints (several, each with its own signing secret)."""

    scope = {"GET": "hooks:read", "POST": "hooks:write"}
    openapi_tag = "Webhooks"
    openapi_body = {"post": {"type": "object", "required": ["url", "events"],
                             "additionalProperties": False,
                             "properties": {"url": _URL, "events": _EVENTS,
                                            "description": _DESCRIPTION,
                                            "enabled": {"type": "boolean"}},
                             "examples": [{"url": "https://hooks.example.com/gateway",
                                           "events": ["composition.completed"],
                                           "description": "orders"}]}}
    openapi_query = {"get": LIST_QUERY}
    openapi_idempotent = True

    def __init__(self, deps):
        self.deps = deps

    def on_post(self, req, resp):
        """Add a webhook endpoint; its signing secret is in this response only.

        Body: `url` (http/https, public unless OUTBOUND_ALLOW_HOSTS allows it), `events`
        (event types, or `*`), optional `description` and `enabled` (default true). At
        most 16 per account (409 beyond)."""
        body = json_body(req)

        def create():
            endpoint, secret = we.create_endpoint(req.context.caller.account_id, body,
                                                  self.deps.actions.policy, self.deps.clock)
            return 201, we.endpoint_json(endpoint, secret=secret), None

        once(req, resp, "webhook-endpoints", body, create, clock=self.deps.clock,
             config=self.deps.config, secrets=("secret",))

    def on_get(self, req, resp):
        """List the caller's webhook endpoints, newest first, never their secrets.

        `limit` (1-100, default 50) at a time; `data.next` is the full URL of the next
        page (null on the last)."""
        limit, cursor = list_params(req)
        rows, after = we.list_endpoints(req.context.caller.account_id, limit=limit,
                                        cursor=cursor)
        ok(req, resp, {"items": [we.endpoint_json(e) for e in rows],
                       "next": next_url(req, self.deps.config, after)})


class WebhookEndpointItem:
    """One webhook endpoint (never its secret); PATCH changes `url`, `events`,
    `description` or `enabled`; DELETE removes it with its delivery log."""

    scope = {"GET": "hooks:read", "PATCH": "hooks:write", "DELETE": "hooks:write"}
    openapi_tag = "Webhooks"
    openapi_body = {"patch": {"type": "object", "minProperties": 1,
                              "additionalProperties": False,
                              "properties": {"url": _URL, "events": _EVENTS,
                                             "description": _DESCRIPTION,
                                             "enabled": {"type": "boolean"}},
                              "examples": [{"enabled": False}]}}

    def __init__(self, deps):
        self.deps = deps

    def on_get(self, req, resp, endpoint_id):
        """One webhook endpoint of the caller (another account's id is 404)."""
        ok(req, resp, we.endpoint_json(we.get_endpoint(req.context.caller.account_id,
                                                       endpoint_id)))

    def on_patch(self, req, resp, endpoint_id):
        """Change the endpoint's `url`, `events`, `description` or `enabled`."""
        endpoint = we.update_endpoint(req.context.caller.account_id, endpoint_id,
                                      json_body(req), self.deps.actions.policy,
                                      self.deps.clock)
        ok(req, resp, we.endpoint_json(endpoint))

    def on_delete(self, req, resp, endpoint_id):
        """Remove the endpoint and its delivery log; nothing more is sent to it."""
        we.delete_endpoint(req.context.caller.account_id, endpoint_id)
        ok(req, resp, {"id": endpoint_id, "deleted": True})


class WebhookEndpointRotate:
    """Roll the endpoint's signing secret; the new one is in this response only.

    `overlap_seconds` (0-604800, default 86400): how long the previous secret keeps
    signing too (a second `v1,` signature in `webhook-signature`), so receivers can switch."""

    scope = "hooks:write"
    openapi_tag = "Webhooks"
    openapi_body = {"post": {"type": "object", "additionalProperties": False, "properties": {
        "overlap_seconds": {"type": "integer", "minimum": 0, "maximum": we.MAX_OVERLAP_S}},
        "examples": [{"overlap_seconds": 3600}]}}

    def __init__(self, deps):
        self.deps = deps

    def on_post(self, req, resp, endpoint_id):
        body = json_body(req)
        account_id = req.context.caller.account_id
        we.get_endpoint(account_id, endpoint_id)  # 404 before any 400 about the body
        we.check_fields(body, ("overlap_seconds",))
        endpoint, secret = we.rotate_secret(account_id, endpoint_id,
                                            body.get("overlap_seconds"), self.deps.clock)
        ok(req, resp, we.endpoint_json(endpoint, secret=secret), status=201)


class WebhookEndpointTest:
    """Send a `webhook.test` event to this endpoint, whatever its event filter (202).

    Signed, logged and retried like any event; `data.delivery.id` is its `webhook-id`."""

    scope = "hooks:write"
    openapi_tag = "Webhooks"

    def __init__(self, deps):
        self.deps = deps

    def on_post(self, req, resp, endpoint_id):
        account_id = req.context.caller.account_id
        we.get_endpoint(account_id, endpoint_id)
        we.check_fields(json_body(req), ())
        msg_id = we.send_test(account_id, endpoint_id, self.deps.redis, self.deps.config)
        delivery, _ = we.get_delivery(account_id, endpoint_id, msg_id)
        ok(req, resp, {"delivery": we.delivery_json(delivery)}, status=202)


class WebhookEndpointDeliveries:
    """The endpoint's delivery log: every attempt, newest first.

    Each item: `id`, `deliveryId` (the `webhook-id`), `event`, `attemptedAt`, `outcome`
    (`succeeded`/`failed`), `responseCode` (null when there was no answer, see `error`),
    `responseExcerpt` (at most 512 bytes of the answer), `durationMs`, `nextRetryAt`,
    `redelivery`. Paged by `limit` (1-100, default 50) and `data.next`."""

    scope = "hooks:read"
    openapi_tag = "Webhooks"
    openapi_query = {"get": LIST_QUERY}

    def __init__(self, deps):
        self.deps = deps

    def on_get(self, req, resp, endpoint_id):
        limit, cursor = list_params(req)
        rows, after = we.list_attempts(req.context.caller.account_id, endpoint_id,
                                       limit=limit, cursor=cursor)
        ok(req, resp, {"items": [we.attempt_json(a, a.delivery.msg_id) for a in rows],
                       "next": next_url(req, self.deps.config, after)})


class WebhookDeliveryItem:
    """One delivery to the endpoint: its event, state, payload and every attempt."""

    scope = "hooks:read"
    openapi_tag = "Webhooks"

    def on_get(self, req, resp, endpoint_id, delivery_id):
        delivery, attempts = we.get_delivery(req.context.caller.account_id, endpoint_id,
                                             delivery_id)
        ok(req, resp, we.delivery_json(delivery, attempts))


class WebhookDeliveryRedeliver:
    """Send a delivery again (202): the same `webhook-id` and body, signed afresh.

    One attempt, logged with `redelivery: true`, never retried; a disabled endpoint is 409."""

    scope = "hooks:write"
    openapi_tag = "Webhooks"

    def __init__(self, deps):
        self.deps = deps

    def on_post(self, req, resp, endpoint_id, delivery_id):
        account_id = req.context.caller.account_id
        we.get_delivery(account_id, endpoint_id, delivery_id)
        we.check_fields(json_body(req), ())
        delivery, _ = we.redeliver(account_id, endpoint_id, delivery_id, self.deps.redis,
                                   self.deps.config)
        ok(req, resp, {"delivery": we.delivery_json(delivery)}, status=202)
