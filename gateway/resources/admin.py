"""Operator routes behind ``X-Administration-Key`` (CONTRACT 10).

The two that move money, credit grants and refunds, honour ``Idempotency-Key`` like the
action calls (CONTRACT 5). There is one operator secret, not one identity per admin, so
the record belongs to the account whose balance changes (the grant's target, the
refunded debit's owner), in an ``admin`` namespace of its own: an admin's key never
collides with the account's own keys, and deleting the account deletes its records.
"""

from __future__ import annotations

from actions.registry import check_schema
from core.errors import InvalidRequest
from gateway.envelope import ok
from gateway.middleware import ADMIN
from gateway.resources.common import account_view, json_body, key_view, ledger_view, once
from jobs.content import library as content_lib
from metering import ledger, plans
from oauth import keys
from oauth.accounts import create_account, get_account


class AdminResource:
    auth = ADMIN
    openapi_tag = "Admin"

    def __init__(self, generations=None):
        # Changes to keys, plans and prices announce themselves (metering.generations).
        self.generations = generations


CREDITS = {"type": "integer", "minimum": 0, "maximum": ledger.MAX_CREDITS}
RATE = {"type": "integer", "minimum": 1, "maximum": plans.MAX_LIMIT}


class AdminAccounts(AdminResource):
    openapi_body = {"post": {"type": "object", "required": ["username"], "properties": {
        "username": {"type": "string"}, "password": {"type": "string"}, "credits": CREDITS,
        "plan": {"type": "string"}}}}

    def on_post(self, req, resp):
        body = json_body(req)
        account, api_key = create_account(
            body.get("username"), body.get("password"), credits=body.get("credits", 0),
            plan=body.get("plan", plans.DEFAULT_PLAN), password_required=False)
        ok(req, resp, {**account_view(account), "api_key": api_key}, status=201)


class AdminAccount(AdminResource):
    def on_get(self, req, resp, account_id):
        ok(req, resp, account_view(get_account(account_id)))

    def on_put(self, req, resp, account_id):
        body = json_body(req)
        if "plan" not in body or not isinstance(body["plan"], str):
            raise InvalidRequest("plan is required",
                                 details=[{"field": "plan", "problem": "is required"}])
        plans.assign_plan(account_id, body["plan"], generations=self.generations)
        ok(req, resp, account_view(get_account(account_id)))


class MoneyChange(AdminResource):
    """An admin POST that changes a balance, made at most once per ``Idempotency-Key``."""

    openapi_idempotent = True

    def __init__(self, deps):
        self.clock, self.config = deps.clock, deps.config

    def once(self, req, resp, account_id, body, work):
        """``work()`` -> (status, data, receipt), run in one transaction with the key's
        record (the account's, in the admin namespace); a replay answers the first
        response with ``Idempotent-Replayed: true``."""
        once(req, resp, "admin", body, work, clock=self.clock, config=self.config,
             account_id=account_id)


class AdminCredits(MoneyChange):
    openapi_body = {"post": {"type": "object", "required": ["amount"], "properties": {
        "amount": {"type": "integer", "minimum": -ledger.MAX_CREDITS,
                   "maximum": ledger.MAX_CREDITS, "not": {"const": 0}},
        "reason": {"type": "string"}}}}

    def on_post(self, req, resp, account_id):
        body = json_body(req)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise InvalidRequest("reason must be a string",
                                 details=[{"field": "reason", "problem": "must be a string"}])
        get_account(account_id)  # NOT_FOUND before a key is claimed for no account

        def grant():
            entry = ledger.grant(account_id, body.get("amount"), reason=reason,
                                 request_id=req.context.request_id)
            return 201, ledger_view(entry), entry.receipt

        self.once(req, resp, account_id, body, grant)


class AdminKeys(AdminResource):
    def on_get(self, req, resp, account_id):
        get_account(account_id)
        ok(req, resp, {"items": [key_view(r) for r in keys.list_keys(account_id)], "next": None})

    def on_post(self, req, resp, account_id):
        get_account(account_id)
        row, secret = keys.create_key(account_id, json_body(req).get("description", ""))
        ok(req, resp, {**key_view(row), "apiKey": secret}, status=201)


class AdminKey(AdminResource):
    def on_delete(self, req, resp, key_id):
        ok(req, resp, key_view(keys.revoke_key(None, key_id, generations=self.generations)))


class AdminPlan(AdminResource):
    openapi_body = {"put": {"type": "object", "required": ["perMinute", "perDay"],
                            "properties": {"perMinute": RATE, "perDay": RATE}}}

    def on_put(self, req, resp, name):
        body = json_body(req)
        row = plans.set_plan(name, body.get("perMinute"), body.get("perDay"),
                             generations=self.generations)
        ok(req, resp, {"name": row.name, "perMinute": row.per_minute, "perDay": row.per_day})


BYTES = {"type": ["integer", "null"], "minimum": 1, "maximum": 2 ** 53,
         "description": "Bytes; null: the deployment's default."}


class AdminPlanStorage(AdminResource):
    """A plan's upload limit and storage quota (docs/CONTENT.md); null or absent fields
    fall back to UPLOAD_MAX_BYTES and STORAGE_QUOTA_BYTES."""

    openapi_body = {"put": {"type": "object", "additionalProperties": False,
                            "properties": {"uploadMaxBytes": BYTES, "quotaBytes": BYTES}}}

    def on_put(self, req, resp, name):
        body = json_body(req)
        check_schema(self.openapi_body["put"], body)
        row = content_lib.set_plan_storage(name, body.get("uploadMaxBytes"),
                                             body.get("quotaBytes"))
        ok(req, resp, {"name": row.plan, "uploadMaxBytes": row.upload_max_bytes,
                       "quotaBytes": row.quota_bytes})


class AdminPrice(AdminResource):
    openapi_body = {"put": {"type": "object", "required": ["credits"],
                            "properties": {"credits": CREDITS}}}

    def __init__(self, service, generations):
        super().__init__(generations)
        self.service = service

    def on_put(self, req, resp, action):
        self.service.registry.get(action)  # INVALID_ACTION for unknown names
        plans.set_price(action, json_body(req).get("credits"), generations=self.generations)
        self.service.prices.invalidate()
        ok(req, resp, {"action": action, "credits": self.service.price_of(action)})


class AdminRefund(MoneyChange):
    def on_post(self, req, resp, txn_receipt):
        body = json_body(req)

        def refund():
            entry, created = ledger.refund(txn_receipt, reason=str(body.get("reason", ""))[:255],
                                           request_id=req.context.request_id)
            return 201 if created else 200, {**ledger_view(entry), "created": created}, \
                entry.receipt

        self.once(req, resp, ledger.account_of(txn_receipt), body, refund)
