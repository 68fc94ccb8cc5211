"""Billing plans, memberships (the PRO tier) and monthly credit allowances (seed 003).

A billing plan gives a tier, a rate-limit plan (``metering.plans``; the account's ``plan``)
and a monthly credit allowance. An account has at most one membership row: the tier it
holds, until when (``tier_expiration``; null while a subscription renews), and the plan
it came from. Allowances are granted once per account, plan and calendar month (UTC) by
``grant_period``: the ``AllowanceGrant`` row's unique index and the ledger row commit in
one transaction, so re-runs and racing workers grant once (docs/BILLING.md).
"""

from __future__ import annotations

import datetime as dt
import json

from peewee import (
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    IntegrityError,
    TextField,
)

from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from core.timefmt import iso
from metering import ledger, plans
from metering.db import database, fetchone, write_transaction
from metering.models import Account, BaseModel, Plan

MAX_TIER = 100
PRICE_TYPES = ("base", "discount", "bundle", "trial", "free", "giftcard", "other", "none")
PERIODS = ("daily", "monthly", "yearly", "lifetime", "none")
CURRENCIES = ("USD", "EUR", "GBP", "CAD", "AUD", "JPY", "CHF", "CNY", "BTC", "ETH", "SOL",
              "BNB", "MATIC", "USDC", "USDT", "none")
CURRENCY_TYPES = ("fiat", "crypto", "other", "none")
PROVIDERS = ("arkpay", "boosty", "ccbill", "epoch", "g2a", "helio", "nmi", "patreon", "paypal",
             "stripe", "giftcard", "admin", "whitelist", "other", "none")


class BillingPlan(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    name = CharField(max_length=128)
    description = TextField(default="")
    features = TextField(default="[]")  # JSON lists, as the seed's string[] fields
    main_benefits = TextField(default="[]")
    prices = TextField(default="[]")  # JSON BillingPlanPrice[]
    tier = IntegerField()
    env = CharField(max_length=64, default="")
    rate_plan = CharField(max_length=64, default=plans.DEFAULT_PLAN)
    monthly_credits = BigIntegerField(default=0)
    created_at = DateTimeField()


class Membership(BaseModel):
    """The account's PRO tier; ``plan`` is null for an admin tier or a gift card."""

    account = ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    plan = ForeignKeyField(BillingPlan, null=True, on_delete="SET NULL")
    product_id = CharField(max_length=128)
    merchant_processor = CharField(max_length=32)  # admin | giftcard | a provider
    tier = IntegerField()
    is_active = BooleanField(default=True)
    tier_expiration = DateTimeField(null=True)  # null: renews; else ends then
    cancelled_at = DateTimeField(null=True)
    additional_information = TextField(default="")
    created_at = DateTimeField()
    updated_at = DateTimeField()


class AllowanceGrant(BaseModel):
    """One monthly allowance, granted once: unique on (account, plan, period)."""

    id = BigAutoField()
    account = ForeignKeyField(Account, on_delete="CASCADE")
    plan_id = CharField(max_length=40)
    period = CharField(max_length=7)  # YYYY-MM (UTC)
    receipt = CharField(max_length=40)
    created_at = DateTimeField()

    class Meta:
        indexes = ((("account", "plan_id", "period"), True),)


BILLING_MODELS = [BillingPlan, Membership, AllowanceGrant]


# --- periods -------------------------------------------------------------------------------


def period_of(now: dt.datetime) -> str:
    return f"{now.year:04d}-{now.month:02d}"


def period_end(now: dt.datetime) -> dt.datetime:
    """The first instant of the next calendar month (UTC): when this period ends."""
    return dt.datetime(now.year + (now.month == 12), now.month % 12 + 1, 1)


# --- plans ---------------------------------------------------------------------------------


def _strings(body, name) -> list:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{name} must be an array of strings",
                             details=[{"field": name, "problem": "must be an array of strings"}])
    return value


def _int_field(body, name, low, high, default=None):
    value = body.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}",
                             details=[{"field": name, "problem": f"integer {low}-{high}"}])
    return value


def _price(raw, i) -> dict:
    field = f"prices[{i}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{field} must be an object",
                             details=[{"field": field, "problem": "must be an object"}])
    for name, allowed in (("type", PRICE_TYPES), ("period", PERIODS),
                          ("currency", CURRENCIES), ("currencyType", CURRENCY_TYPES)):
        if raw.get(name) not in allowed:
            raise InvalidRequest(f"{field}.{name} must be one of " + ", ".join(allowed),
                                 details=[{"field": f"{field}.{name}", "problem": "unknown"}])
    value = raw.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1e9:
        raise InvalidRequest(f"{field}.value must be a number from 0",
                             details=[{"field": f"{field}.value", "problem": "number >= 0"}])
    providers = raw.get("paymentProviders", [])
    if not isinstance(providers, list) or not all(
            isinstance(p, dict) and p.get("paymentProvider") in PROVIDERS
            and isinstance(p.get("paymentUrl", ""), str)
            and isinstance(p.get("paymentLabel", ""), str) for p in providers):
        raise InvalidRequest(f"{field}.paymentProviders must be BillingPlanPaymentProvider[]",
                             details=[{"field": f"{field}.paymentProviders",
                                       "problem": "unknown provider or wrong type"}])
    out = {"type": raw["type"], "period": raw["period"], "currency": raw["currency"],
           "currencyType": raw["currencyType"], "value": value,
           "paymentProviders": [{"paymentProvider": p["paymentProvider"],
                                 "paymentLabel": p.get("paymentLabel"),
                                 "paymentUrl": p.get("paymentUrl", "")} for p in providers]}
    if "name" in raw:
        if not isinstance(raw["name"], str):
            raise InvalidRequest(f"{field}.name must be a string",
                                 details=[{"field": f"{field}.name", "problem": "a string"}])
        out["name"] = raw["name"]
    if "trialDays" in raw:
        out["trialDays"] = _int_field(raw, "trialDays", 0, 3650)
    return out


def create_plan(body: dict, *, now) -> BillingPlan:
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 128:
        raise InvalidRequest("name must be 1-128 characters",
                             details=[{"field": "name", "problem": "1-128 characters"}])
    prices = body.get("prices")
    if not isinstance(prices, list) or not prices:
        raise InvalidRequest("prices must be a non-empty array of BillingPlanPrice",
                             details=[{"field": "prices", "problem": "non-empty array"}])
    description, env = body.get("description", ""), body.get("env", "")
    if not isinstance(description, str) or not isinstance(env, str) or len(env) > 64:
        raise InvalidRequest("description and env must be strings",
                             details=[{"field": "description", "problem": "must be a string"}])
    rate_plan = body.get("ratePlan", plans.DEFAULT_PLAN)
    if not isinstance(rate_plan, str) or (rate_plan != plans.DEFAULT_PLAN and not
                                          Plan.select().where(Plan.name == rate_plan).exists()):
        raise InvalidRequest("ratePlan must name a rate-limit plan (PUT /admin/plans/{name})",
                             details=[{"field": "ratePlan", "problem": "no such plan"}])
    return BillingPlan.create(
        id=new_id("bp", 8), name=name, description=description,
        features=json.dumps(_strings(body, "features")),
        main_benefits=json.dumps(_strings(body, "mainBenefits")),
        prices=json.dumps([_price(p, i) for i, p in enumerate(prices)]),
        tier=_int_field(body, "tier", 0, MAX_TIER), env=env, rate_plan=rate_plan,
        monthly_credits=_int_field(body, "monthlyCredits", 0, ledger.MAX_CREDITS, 0),
        created_at=now)


def list_plans(plan_ids=None) -> list[BillingPlan]:
    query = BillingPlan.select().order_by(BillingPlan.tier, BillingPlan.created_at)
    if plan_ids:
        query = query.where(BillingPlan.id.in_(plan_ids))
    return list(query)


def plan_view(row: BillingPlan) -> dict:
    return {"id": row.id, "name": row.name, "description": row.description,
            "features": json.loads(row.features), "mainBenefits": json.loads(row.main_benefits),
            "prices": json.loads(row.prices), "tier": row.tier,
            # the gateway's own fields
            "ratePlan": row.rate_plan, "monthlyCredits": row.monthly_credits,
            "env": row.env or None}


# --- memberships ---------------------------------------------------------------------------


def active(m: Membership | None, now) -> bool:
    return m is not None and m.is_active and (m.tier_expiration is None or m.tier_expiration > now)


def membership(account_id) -> Membership | None:
    return Membership.get_or_none(Membership.account == account_id)


def tier_of(account_id, now) -> tuple[int, dt.datetime | None]:
    m = membership(account_id)
    return (m.tier, m.tier_expiration) if active(m, now) else (0, None)


def set_membership(account_id, *, tier, product_id, processor, now, generations,
                   expiration=None, is_active=True, info="", plan_id=None) -> Membership:
    """Give the account a tier (replacing its membership); the caller holds the transaction.

    A billing plan's rate-limit plan becomes the account's ``plan`` while it lasts; when an
    inactive membership, or one without a plan, replaces an active plan's, the default
    returns (an operator's plan on an account without a billing plan is left alone)."""
    plan = BillingPlan.get_or_none(BillingPlan.id == plan_id) if plan_id else None
    before = membership(account_id)
    fields = dict(plan=plan.id if plan else None, product_id=product_id,
                  merchant_processor=processor, tier=tier, is_active=is_active,
                  tier_expiration=expiration, cancelled_at=None, additional_information=info,
                  updated_at=now)
    (Membership.insert(account=account_id, created_at=now, **fields)
     .on_conflict(conflict_target=[Membership.account],
                  update={getattr(Membership, k): v for k, v in fields.items()})
     .execute())
    if plan is not None and is_active:
        plans.assign_plan(account_id, plan.rate_plan, generations=generations)
    elif before is not None and before.plan_id is not None and before.is_active:
        plans.assign_plan(account_id, plans.DEFAULT_PLAN,
                          generations=generations)  # the plan's rate limits end
    return membership(account_id)


def resolve_accounts(values) -> list[str]:
    """Account ids for ``values`` given as account ids or usernames (accounts carry no
    email of their own); an unknown one is 404 naming it."""
    out = []
    for value in values:
        row = Account.get_or_none((Account.id == value) | (Account.username == value))
        if row is None:
            raise NotFound(f"No such user: {value}")
        out.append(row.id)
    return out


def cancel(account_id, *, now) -> Membership:
    """Stop renewing: a renewing tier (and its rate-limit plan) lasts to the end of the
    current period, one that already ends keeps its end; no allowance is granted for a
    later period, and ``expire`` restores the default rate-limit plan once it has ended."""
    m = membership(account_id)
    if not active(m, now):
        raise NotFound("There is no active membership to cancel")
    if m.cancelled_at is None:
        end = period_end(now)
        # a tier that already ends (a gift card's days) keeps its end; a renewing one
        # ends with the current period
        Membership.update(tier_expiration=m.tier_expiration or end, cancelled_at=now,
                          updated_at=now).where((Membership.account == account_id)
                                                & Membership.cancelled_at.is_null()).execute()
    return membership(account_id)


def expire(now, *, generations) -> int:
    """Memberships whose tier ended: mark inactive and restore the default rate-limit plan."""
    done = 0
    ended = Membership.select(Membership.account, Membership.plan).where(
        Membership.is_active & Membership.tier_expiration.is_null(False)
        & (Membership.tier_expiration <= now))
    for row in list(ended):
        with write_transaction():
            n = Membership.update(is_active=False, updated_at=now).where(
                (Membership.account == row.account_id) & Membership.is_active
                & (Membership.tier_expiration <= now)).execute()
            if n and row.plan_id is not None:  # the plan's rate limits end with it
                plans.assign_plan(row.account_id, plans.DEFAULT_PLAN, generations=generations)
            done += n
    return done


# --- allowances ----------------------------------------------------------------------------


def grant_period(account_id, now) -> ledger.LedgerEntry | None:
    """Grant the account's allowance for the period of ``now`` once; None when there is
    nothing to grant (no active plan membership, no allowance, or already granted)."""
    period = period_of(now)
    with write_transaction():
        m = membership(account_id)
        if not active(m, now) or m.plan_id is None:
            return None
        if m.cancelled_at is not None and period_of(m.cancelled_at) != period:
            return None  # cancelled: no allowance after the period it was cancelled in
        plan = BillingPlan.get_or_none(BillingPlan.id == m.plan_id)
        if plan is None or plan.monthly_credits <= 0:
            return None
        try:
            with database.atomic():
                row = AllowanceGrant.create(account=account_id, plan_id=plan.id, period=period,
                                            receipt="", created_at=now)
                entry = ledger.grant(account_id, plan.monthly_credits, kind="grant",
                                     reason=f"billing plan {plan.id} allowance for {period}")
                AllowanceGrant.update(receipt=entry.receipt).where(
                    AllowanceGrant.id == row.id).execute()
            return entry
        except IntegrityError:  # granted already (or a racing worker just did)
            return None


def members_due(now) -> list[str]:
    """Accounts with an active plan membership and no grant yet for ``now``'s period."""
    granted = AllowanceGrant.select(AllowanceGrant.account).where(
        AllowanceGrant.period == period_of(now))
    query = (Membership.select(Membership.account)
             .where(Membership.is_active & Membership.plan.is_null(False)
                    & (Membership.tier_expiration.is_null()
                       | (Membership.tier_expiration > now))
                    & Membership.account.not_in(granted)))
    return [r.account_id for r in query]


def grant_allowances(now, *, generations) -> list[ledger.LedgerEntry]:
    """One round: expire ended memberships, then grant every due allowance once."""
    expire(now, generations=generations)
    return [e for a in members_due(now) if (e := grant_period(a, now)) is not None]


def account_and_membership(account_id):
    """``(username, balance, membership or None)`` in one statement, for ``/zapier/v1/me``
    (the auth test platforms call often); ``NotFound`` when there is no such account."""
    row = fetchone(
        'SELECT a.username, a.balance, m.account_id, m.plan_id, m.product_id, '
        'm.merchant_processor, m.tier, m.is_active, m.tier_expiration, m.cancelled_at '
        'FROM "account" a LEFT JOIN "membership" m ON m.account_id = a.id WHERE a.id = %s',
        (account_id,), prepared="gw_me")
    if row is None:
        raise NotFound("No such account")
    username, balance, member, plan_id, product_id, processor, tier, is_active, ends, \
        cancelled = row
    m = None
    if member is not None:
        m = Membership(account=member, plan=plan_id, product_id=product_id,
                       merchant_processor=processor, tier=tier,
                       is_active=Membership.is_active.python_value(is_active),
                       tier_expiration=Membership.tier_expiration.python_value(ends),
                       cancelled_at=Membership.cancelled_at.python_value(cancelled))
    return username, balance, m


_READ = object()


def membership_view(account_id, now, m=_READ) -> dict:
    """The tier fields of ``/api/account/data`` and ``/zapier/v1/me`` (``m``: the
    membership already read, None for none)."""
    if m is _READ:
        m = membership(account_id)
    if not active(m, now):
        return {"tier": 0, "tierExpiration": None, "membership": None}
    return {"tier": m.tier, "tierExpiration": iso(m.tier_expiration), "membership": {
        "productID": m.product_id, "billingPlanID": m.plan_id,
        "merchantProcessor": m.merchant_processor, "tier": m.tier,
        "tierExpiration": iso(m.tier_expiration), "cancelled": m.cancelled_at is not None,
        "nextBillingDate": None if m.cancelled_at or m.plan_id is None
        else iso(period_end(now))}}
