"""Action routes: ``POST /zapier/v1/{action}``, the catalogue, and the auth test ``/me``."""

from __future__ import annotations

from core.clock import SYSTEM
from core.errors import MissingAction
from gateway.envelope import ok
from gateway.resources.common import (
    answer,
    base_url,
    json_body,
    mark_outcome,
    settle,
    wait_seconds,
)
from metering import billing


class ActionCall:
    """Run one action for the caller; sync actions answer with their result."""

    scope = "actions:run"

    openapi_tag = "Actions"

    def __init__(self, service, config, redis, slots):
        self.service, self.config, self.redis, self.slots = service, config, redis, slots

    def on_post(self, req, resp, action):
        body = json_body(req)
        wait = wait_seconds(req, self.config.default_wait_s)
        outcome = self.service.run(
            req.context.caller, action, body,
            idempotency_key=req.get_header("Idempotency-Key"),
            request_id=req.context.request_id, method=req.method, path=req.path,
            base_url=base_url(req, self.config))
        mark_outcome(resp, action, outcome)
        if outcome.composition_uid is None:
            ok(req, resp, outcome.data, outcome.status, **outcome.meta)
            return
        comp, status = settle(self.slots, self.redis, self.config.redis_prefix,
                              req.context.caller, outcome, wait)
        answer(req, resp, comp, self.config, self.redis, status, **outcome.meta)


class ActionEstimate:
    """What an action would cost for this input, without running it or charging anything.

    The input is validated exactly as the call would be, so a 200 here means the call
    would be accepted (credits permitting)."""

    scope = "actions:read"

    openapi_tag = "Actions"

    def __init__(self, service):
        self.service = service

    def on_post(self, req, resp, action):
        ok(req, resp, self.service.estimate(req.context.caller, action, json_body(req)),
           action=action)


class MissingActionName:
    """``POST /zapier/v1`` with no action: a clear MISSING_ACTION rather than a 404."""

    scope = "actions:run"

    openapi_hidden = True

    def on_post(self, req, resp):
        raise MissingAction()


class ActionCatalogue:
    """Every action with its price, mode and input fields, for building forms."""

    scope = "actions:read"

    openapi_tag = "Actions"

    def __init__(self, service):
        self.service = service

    def on_get(self, req, resp):
        ok(req, resp, {"items": self.service.catalogue(), "next": None})


class Me:
    """The auth test for Zapier, Make and n8n: who this credential is."""

    scope = None  # any live credential may run the auth test

    openapi_tag = "Account"

    def __init__(self, clock=SYSTEM):
        self.clock = clock

    def on_get(self, req, resp):
        caller = req.context.caller
        username, balance, member = billing.account_and_membership(caller.account_id)
        ok(req, resp, {
            **billing.membership_view(caller.account_id, self.clock.now(), member),  # seed 003
            "id": caller.account_id, "username": username,
            "balance": balance, "plan": caller.limits.plan,
            "limits": {"perMinute": caller.limits.per_minute, "perDay": caller.limits.per_day},
            "credential": {"kind": caller.kind, "id": caller.credential_id},
            "label": f"{username} ({caller.kind})",
        })
