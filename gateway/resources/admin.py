"""Operator routes behind ``X-Administration-Key`` (CONTRACT 10)."""

from __future__ import annotations

from core.errors import InvalidRequest
from gateway.envelope import ok
from gateway.middleware import ADMIN
from gateway.resources.common import account_view, json_body, key_view, ledger_view
from metering import ledger, plans
from oauth import keys
from oauth.accounts import create_account, get_account


class AdminResource:
    auth = ADMIN
    openapi_tag = "Admin"


class AdminAccounts(AdminResource):
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
        plans.assign_plan(account_id, body["plan"])
        ok(req, resp, account_view(get_account(account_id)))


class AdminCredits(AdminResource):
    def on_post(self, req, resp, account_id):
        body = json_body(req)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise InvalidRequest("reason must be a string",
                                 details=[{"field": "reason", "problem": "must be a string"}])
        entry = ledger.grant(account_id, body.get("amount"), reason=reason,
                             request_id=req.context.request_id)
        ok(req, resp, ledger_view(entry), status=201)


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
        ok(req, resp, key_view(keys.revoke_key(None, key_id)))


class AdminPlan(AdminResource):
    def on_put(self, req, resp, name):
        body = json_body(req)
        row = plans.set_plan(name, body.get("perMinute"), body.get("perDay"))
        ok(req, resp, {"name": row.name, "perMinute": row.per_minute, "perDay": row.per_day})


class AdminPrice(AdminResource):
    def __init__(self, service):
        self.service = service

    def on_put(self, req, resp, action):
        self.service.registry.get(action)  # INVALID_ACTION for unknown names
        plans.set_price(action, json_body(req).get("credits"))
        ok(req, resp, {"action": action, "credits": self.service.price_of(action)})


class AdminRefund(AdminResource):
    def on_post(self, req, resp, txn_receipt):
        body = json_body(req)
        entry, created = ledger.refund(txn_receipt, reason=str(body.get("reason", ""))[:255],
                                       request_id=req.context.request_id)
        ok(req, resp, {**ledger_view(entry), "created": created}, status=201 if created else 200)
