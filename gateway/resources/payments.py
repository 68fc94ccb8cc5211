"""Buying credits through PayPal (seed 000; docs/PAYMENTS.md): create, execute, webhook.

The resources parse and shape; ``metering.payments.purchases.PurchaseService`` (built once
in ``gateway.app.build_deps``) owns the price list, the payment rows and exactly-once
crediting. With no provider configured every route answers 403 FORBIDDEN, as admin
routes do without an admin key.
"""

from __future__ import annotations

from core.errors import Forbidden, InvalidRequest, PayloadTooLarge
from gateway.envelope import ok
from gateway.middleware import NONE
from gateway.resources.common import json_body

CREATE_BODY = {"type": "object", "required": ["amount", "currency", "credits"], "properties": {
    "amount": {"anyOf": [{"type": "number"}, {"type": "string"}],
               "description": "The pack's price, e.g. 9.99 or \"9.99\""},
    "currency": {"type": "string", "description": "The pack's currency, e.g. USD"},
    "credits": {"type": "integer", "description": "The pack's credits"}}}

EXECUTE_BODY = {"type": "object", "required": ["paymentId", "payerId"], "properties": {
    "paymentId": {"type": "string", "minLength": 1, "maxLength": 64,
                  "description": "PayPal's paymentId (v1) or order id (token, Orders v2)"},
    "payerId": {"type": "string", "minLength": 1, "maxLength": 64,
                "description": "PayPal's PayerID from the return URL"}}}


def _enabled(purchases):
    if purchases is None or purchases.provider is None:
        raise Forbidden("Payments are disabled: no PAYMENT_PROVIDER and PayPal client are "
                        "configured")
    return purchases


class PayPalCreate:
    """Create a PayPal payment for one of the server's credit packs.

    ``amount``, ``currency`` and ``credits`` must name a pack of ``CREDIT_PACKS`` (else 400
    with details). Answers ``approval_url``: send the payer there; PayPal sends them back
    to the return URL with ``paymentId`` and ``PayerID`` for ``/api/paypal/execute``."""

    scope = "credits:read"
    openapi_tag = "Payments"
    openapi_body = {"post": CREATE_BODY}

    def __init__(self, purchases):
        self.purchases = purchases

    def on_post(self, req, resp):
        service = _enabled(self.purchases)
        body = json_body(req)
        url = service.create(req.context.caller.account_id, body.get("amount"),
                             body.get("currency"), body.get("credits"))
        ok(req, resp, {"approval_url": url}, status=201)


class PayPalExecute:
    """Capture an approved PayPal payment and credit its pack, exactly once.

    Repeating it (or PayPal's webhook arriving first) credits nothing more and answers the
    same ``credits_awarded`` and ``receipt``. Another account's payment is 404."""

    scope = "credits:read"
    openapi_tag = "Payments"
    openapi_body = {"post": EXECUTE_BODY}

    def __init__(self, purchases):
        self.purchases = purchases

    def on_post(self, req, resp):
        service = _enabled(self.purchases)
        body = json_body(req)
        ok(req, resp, service.execute(req.context.caller.account_id, body.get("paymentId"),
                                      body.get("payerId")))


class PayPalWebhook:
    """PayPal's webhook: payment completed, refunded or reversed.

    No caller credential: each event is verified by PayPal's verify-webhook-signature call
    on the raw body and the PAYPAL-TRANSMISSION-* headers; an unverified one is 401 and
    changes nothing. Events for unknown payments, and other event types, are answered
    200 with ``handled: false``."""

    auth = NONE
    openapi_tag = "Payments"

    def __init__(self, purchases, max_body):
        self.purchases = purchases
        self.max_body = max_body

    def on_post(self, req, resp):
        service = _enabled(self.purchases)
        raw = req.bounded_stream.read(self.max_body + 1)
        if len(raw) > self.max_body:
            raise PayloadTooLarge(f"The request body is over {self.max_body} bytes")
        if not raw.strip():
            raise InvalidRequest("The webhook body is empty")
        headers = {name: value for name, value in req.headers.items()
                   if name.upper().startswith("PAYPAL-")}
        ok(req, resp, service.webhook(headers, raw))
