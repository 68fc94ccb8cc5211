"""Billing plans, tiers and gift cards (seed 003; CONTRACT 9; docs/BILLING.md).

``GET /getBillingPlans`` (public), ``POST /createBillingPlan`` and
``POST /setAdminProvidedPremiumTier`` (admin), ``DELETE /cancelMembership`` (account),
``GET /downloadGiftCards`` (admin: creates a batch and answers its codes as CSV, the only
time the plain codes exist) and ``POST /redeemGiftCard`` (account). The seed's response
objects sit inside ``data``; fields the seed does not name are the gateway's own.
"""

from __future__ import annotations

import datetime as dt
import re

import falcon

from core.errors import InvalidRequest, RateLimited
from core.timefmt import iso
from gateway import metrics
from gateway.envelope import ok
from gateway.middleware import ACCOUNT, ADMIN, NONE
from gateway.resources.common import int_param, int_schema, json_body
from metering import billing, giftcards, ledger
from metering.db import write_transaction

STR = {"type": "string"}
STRINGS = {"type": "array", "items": STR}
TIER = {"type": "integer", "minimum": 0, "maximum": billing.MAX_TIER}

PRICE = {"type": "object", "required": ["type", "period", "currency", "currencyType", "value"],
         "properties": {
             "name": STR, "type": {"enum": list(billing.PRICE_TYPES)},
             "period": {"enum": list(billing.PERIODS)},
             "currency": {"enum": list(billing.CURRENCIES)},
             "currencyType": {"enum": list(billing.CURRENCY_TYPES)},
             "value": {"type": "number", "minimum": 0, "maximum": 1e9},
             "trialDays": {"type": "integer", "minimum": 0, "maximum": 3650},
             "paymentProviders": {"type": "array", "items": {
                 "type": "object", "required": ["paymentProvider"], "properties": {
                     "paymentProvider": {"enum": list(billing.PROVIDERS)},
                     "paymentLabel": STR, "paymentUrl": STR}}}}}


def _parse_date(value, field) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) \
            if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None:
        raise InvalidRequest(f"{field} must be an ISO 8601 timestamp",
                             details=[{"field": field, "problem": "ISO 8601 timestamp"}])
    return parsed


def _string(body, name, *, required=False, maximum=1000) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not (1 if required else 0) <= len(value) <= maximum:
        raise InvalidRequest(f"{name} must be a string of at most {maximum} characters",
                             details=[{"field": name, "problem": "is required" if value is None
                                       else "must be a string"}])
    return value


# --- billing plans -------------------------------------------------------------------------


class GetBillingPlans:
    """The available Billing Plans (BillingPlan[]); ``planIDs`` filters by id."""

    auth = NONE
    openapi_tag = "Billing"
    openapi_query = {"get": [
        {"name": n, "in": "query", "required": False, "schema": STR}
        for n in ("redirectURL", "paymentURL", "planIDs", "code")]}

    def on_get(self, req, resp):
        ids = [i.strip() for i in (req.get_param("planIDs") or "").split(",") if i.strip()]
        ok(req, resp, [billing.plan_view(p) for p in billing.list_plans(ids)])


class CreateBillingPlan:
    """Add a Billing Plan. The gateway's own fields: ``ratePlan`` (a rate-limit plan of
    ``PUT /admin/plans/{name}``; default ``default``) and ``monthlyCredits`` (the allowance
    granted once a month to each member; default 0)."""

    auth = ADMIN
    openapi_tag = "Billing"
    openapi_body = {"post": {"type": "object", "required": ["name", "prices", "tier"],
                             "properties": {
                                 "name": {"type": "string", "minLength": 1, "maxLength": 128},
                                 "description": STR, "features": STRINGS,
                                 "mainBenefits": STRINGS,
                                 "prices": {"type": "array", "minItems": 1, "items": PRICE},
                                 "tier": TIER, "env": {"type": "string", "maxLength": 64},
                                 "ratePlan": STR,
                                 "monthlyCredits": {"type": "integer", "minimum": 0,
                                                    "maximum": ledger.MAX_CREDITS}}}}

    def __init__(self, clock):
        self.clock = clock

    def on_post(self, req, resp):
        plan = billing.create_plan(json_body(req), now=self.clock.now())
        ok(req, resp, billing.plan_view(plan), status=201)


class SetAdminProvidedPremiumTier:
    """Give users a free tier. Accounts carry no email of their own, so ``email`` and
    ``emails`` take an account id or username. A ``productId`` that is a Billing Plan's id
    makes the membership that plan's (its rate-limit plan and monthly allowance)."""

    auth = ADMIN
    openapi_tag = "Billing"
    openapi_body = {"post": {"type": "object", "required": ["productId", "tier", "isActive"],
                             "properties": {
                                 "productId": {"type": "string", "minLength": 1,
                                               "maxLength": 128},
                                 "email": STR, "emails": STRINGS, "tier": TIER,
                                 "isActive": {"type": "boolean"}, "deactivationDate": STR,
                                 "additionalInformation": STR}}}

    def __init__(self, clock, generations, env=""):
        self.clock, self.env = clock, env
        self.generations = generations  # a plan change reaches cached credentials

    def on_post(self, req, resp):
        body = json_body(req)
        product_id = _string(body, "productId", required=True, maximum=128)
        email = _string(body, "email", maximum=320)
        emails = body.get("emails")
        if emails is not None and (not isinstance(emails, list)
                                   or not all(isinstance(e, str) for e in emails)):
            raise InvalidRequest("emails must be an array of strings",
                                 details=[{"field": "emails", "problem": "array of strings"}])
        if email is None and not emails:
            raise InvalidRequest("email or emails is required",
                                 details=[{"field": "email", "problem": "is required"}])
        tier = body.get("tier")
        if not isinstance(tier, int) or isinstance(tier, bool) or \
                not 0 <= tier <= billing.MAX_TIER:
            raise InvalidRequest(f"tier must be an integer from 0 to {billing.MAX_TIER}",
                                 details=[{"field": "tier", "problem": "integer"}])
        if not isinstance(body.get("isActive"), bool):
            raise InvalidRequest("isActive must be a boolean",
                                 details=[{"field": "isActive", "problem": "boolean"}])
        until = _parse_date(body.get("deactivationDate"), "deactivationDate")
        info = _string(body, "additionalInformation", maximum=10_000) or ""
        now = self.clock.now()
        targets = billing.resolve_accounts([email] if email is not None else emails)
        plan_ids = {p.id for p in billing.list_plans([product_id])}
        with write_transaction():
            rows = [billing.set_membership(
                a, tier=tier, product_id=product_id, processor="admin", now=now,
                generations=self.generations,
                expiration=until, is_active=body["isActive"], info=info,
                plan_id=product_id if product_id in plan_ids else None) for a in targets]
        for a in targets:
            billing.grant_period(a, now)  # this period's allowance now; the job does the rest
        first = rows[0]
        data = {"domain": req.host, "paymentProvider": "admin", "productId": product_id,
                "tier": tier, "isActive": body["isActive"], "createdDate": iso(first.created_at),
                "updatedDate": iso(first.updated_at), "deactivationDate": iso(until),
                "env": self.env or None, "additionalInformation": info or None}
        if email is not None:
            data = {"_id": targets[0], **data, "email": email}
        else:
            data["emails"] = emails
        ok(req, resp, data)


class CancelMembership:
    """Stop renewing the caller's membership: the tier and its rate-limit plan last to the
    end of the current month (UTC), and no later allowance is granted."""

    auth = ACCOUNT
    openapi_tag = "Billing"

    def __init__(self, clock):
        self.clock = clock

    def on_delete(self, req, resp):
        m = billing.cancel(req.context.caller.account_id, now=self.clock.now())
        ok(req, resp, {"success": True,
                       "message": f"Your membership ends at {iso(m.tier_expiration)}",
                       "tierExpiration": iso(m.tier_expiration)})


# --- gift cards ----------------------------------------------------------------------------

NUMBER = re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?")
CSV_COLUMNS = "code,productID,tier,days,credits,usdPrice,distributionProvider,externalCode," \
              "expiresAt,batchID"


class DownloadGiftCards:
    """Create a batch of Gift Cards and download it as CSV (``text/csv``; columns
    ``code,productID,tier,days,credits,usdPrice,distributionProvider,externalCode,expiresAt,
    batchID``). The plain codes exist only in this answer: the database keeps their
    SHA-256 hashes, so save the file. The gateway's own parameters: ``credits`` (credits
    granted on redemption, default 0) and ``expiresAt`` (cards not redeemed by then are
    void)."""

    auth = ADMIN
    openapi_tag = "Billing"
    openapi_query = {"get": [
        {"name": "distributionProvider", "in": "query", "required": False,
         "schema": {"enum": list(giftcards.DISTRIBUTION_PROVIDERS)}},
        {"name": "tier", "in": "query", "required": False, "schema": int_schema(0, 100)},
        {"name": "days", "in": "query", "required": False,
         "schema": int_schema(1, giftcards.MAX_DAYS)},
        {"name": "numberOfCards", "in": "query", "required": False,
         "schema": int_schema(1, giftcards.MAX_CARDS)},
        {"name": "usdPrice", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": NUMBER.pattern}},
        {"name": "externalCodes", "in": "query", "required": False, "schema": STR},
        {"name": "additionalInformation", "in": "query", "required": False, "schema": STR},
        {"name": "credits", "in": "query", "required": False,
         "schema": int_schema(0, ledger.MAX_CREDITS)},
        {"name": "expiresAt", "in": "query", "required": False, "schema": STR}]}
    openapi_responses = {"get": {
        "201": {"description": f"The new batch as CSV ({CSV_COLUMNS})",
                "content": {"text/csv": {"schema": {"type": "string"}}}},
        "default": {"description": "Error envelope (see error.code)",
                    "content": {"application/json": {"schema": {
                        "$ref": "#/components/schemas/Error"}}}}}}

    def __init__(self, clock):
        self.clock = clock

    def on_get(self, req, resp):
        known = {p["name"] for p in self.openapi_query["get"]}
        unknown = sorted(set(req.params) - known)
        if unknown:  # a misspelt numberOfCards must not make 100 cards
            raise InvalidRequest(f"Unknown query parameter: {unknown[0]}",
                                 details=[{"field": n, "problem": "unknown parameter"}
                                          for n in unknown])
        provider = req.get_param("distributionProvider") or "giftcard"
        if provider not in giftcards.DISTRIBUTION_PROVIDERS:
            raise InvalidRequest("distributionProvider must be giftcard or g2a",
                                 details=[{"field": "distributionProvider",
                                           "problem": "giftcard or g2a"}])
        price = req.get_param("usdPrice")
        if price is not None and not NUMBER.fullmatch(price):
            raise InvalidRequest("usdPrice must be a decimal number",
                                 details=[{"field": "usdPrice", "problem": "decimal number"}])
        externals = [c.strip() for c in (req.get_param("externalCodes") or "").split(",")
                     if c.strip()]
        if any(len(c) > 128 for c in externals):
            raise InvalidRequest("each external code is at most 128 characters",
                                 details=[{"field": "externalCodes", "problem": "too long"}])
        now = self.clock.now()
        created = giftcards.create_batch(
            count=int_param(req, "numberOfCards", 100, 1, giftcards.MAX_CARDS),
            tier=int_param(req, "tier", 1, 0, 100),
            days=int_param(req, "days", 30, 1, giftcards.MAX_DAYS),
            credits=int_param(req, "credits", 0, 0, ledger.MAX_CREDITS),
            usd_price=float(price or 0), provider=provider, external_codes=externals,
            info=req.get_param("additionalInformation") or "",
            expires_at=_parse_date(req.get_param("expiresAt"), "expiresAt"), now=now)
        resp.status = falcon.HTTP_201
        resp.content_type = "text/csv; charset=utf-8"
        resp.set_header("Content-Disposition",
                        f'attachment; filename="giftcards-{created.batch.id}.csv"')
        resp.set_header("Cache-Control", "no-store")
        resp.set_header("X-Request-ID", req.context.request_id)
        resp.text = giftcards.to_csv(created)


class RedeemGiftCard:
    """Redeem a Gift Card once: its tier for its days (the seed's rules: refused with 409
    while the caller holds an equal or higher tier that is not expiring; an expiring tier
    equal to the card's is extended) and its credits as a ``grant`` ledger row. Unknown,
    void or used codes count against ``GIFT_CARD_FAILURES_PER_WINDOW`` per account; beyond
    it every redeem is 429 ``RATE_LIMITED`` with ``Retry-After`` until the window ends."""

    auth = ACCOUNT
    openapi_tag = "Billing"
    openapi_body = {"post": {"type": "object", "required": ["code"], "properties": {
        "code": {"type": "string", "minLength": 1, "maxLength": 128}}}}

    def __init__(self, clock, limiter, config, generations):
        self.clock, self.limiter = clock, limiter
        self.generations = generations
        self.per_window = config.gift_card_failures_per_window
        self.window = config.gift_card_failure_window_s

    def _refuse_if_over(self, decision):
        if decision is not None and not decision.allowed:  # None: Redis down, fail open
            metrics.RATE_LIMITED.inc()
            raise RateLimited(f"Too many failed gift card redeems; retry in "
                              f"{decision.retry_after}s", retry_after=decision.retry_after)

    def on_post(self, req, resp):
        code = _string(json_body(req), "code", required=True, maximum=128)
        account_id = req.context.caller.account_id
        key = "giftcard:fail:" + account_id
        self._refuse_if_over(self.limiter.peek_window(key, self.per_window, self.window))
        try:
            done = giftcards.redeem(account_id, code, now=self.clock.now(),
                                   generations=self.generations)
        except (giftcards.UnknownGiftCard, giftcards.UsedGiftCard):
            self._refuse_if_over(self.limiter.check_window(key, self.per_window, self.window))
            raise
        data = {"productID": done.product_id, "tier": done.tier,
                "tierExpiration": iso(done.tier_expiration),
                "creditsGranted": done.entry.amount if done.entry else 0,
                "txnReceipt": done.entry.receipt if done.entry else None}
        ok(req, resp, data)
