"""Billing plans, tiers and monthly allowances (seed 003; docs/BILLING.md).

Allowances are granted by ``jobs.billing.grant_allowances(now)``, called here with chosen
times (never a sleep) from real threads racing on the real PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import redis as redis_lib
from falcon.testing import TestClient
from rq import Queue
from rq.registry import ScheduledJobRegistry

from conftest import ADMIN, bearer, ledger_sum, make_app
from core.clock import ManualClock
from jobs import billing as billing_job
from jobs.queues import queue_name
from metering import db as dbmod
from metering.models import Account, LedgerEntry

START = dt.datetime(2030, 1, 15, 12, 0)
PRICE = {"type": "base", "period": "monthly", "currency": "USD", "currencyType": "fiat",
         "value": 9.99, "paymentProviders": [{"paymentProvider": "paypal",
                                               "paymentUrl": "https://pay.example/pro"}]}


@pytest.fixture
def clock():
    return ManualClock(START)


@pytest.fixture
def bclient(config, schema, clock):
    return TestClient(make_app(config, clock=clock))


def _plan(bclient, *, credits=500, rate_plan="pro", tier=2):
    assert bclient.simulate_put(f"/admin/plans/{rate_plan}", headers=ADMIN, json={
        "perMinute": 600, "perDay": 50_000}).status_code == 200
    resp = bclient.simulate_post("/createBillingPlan", headers=ADMIN, json={
        "name": "Pro", "description": "More of everything", "features": ["fast"],
        "mainBenefits": ["priority"], "prices": [PRICE], "tier": tier,
        "ratePlan": rate_plan, "monthlyCredits": credits})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]


def _join(bclient, account_id, plan_id, tier=2, **extra):
    resp = bclient.simulate_post("/setAdminProvidedPremiumTier", headers=ADMIN, json={
        "productId": plan_id, "email": account_id, "tier": tier, "isActive": True, **extra})
    assert resp.status_code == 200, resp.text
    return resp.json["data"]


def _grants(account_id):
    with dbmod.connection():
        return [(e.amount, e.reason) for e in LedgerEntry.select().where(
            (LedgerEntry.account == account_id) & (LedgerEntry.kind == "grant")
            & LedgerEntry.reason.startswith("billing plan")).order_by(LedgerEntry.id)]


def test_create_and_list_billing_plans(bclient, client):
    plan = _plan(bclient)
    assert plan["id"].startswith("bp_")
    assert {k: plan[k] for k in ("name", "description", "features", "mainBenefits", "tier")} \
        == {"name": "Pro", "description": "More of everything", "features": ["fast"],
            "mainBenefits": ["priority"], "tier": 2}
    assert plan["prices"][0]["paymentProviders"][0]["paymentProvider"] == "paypal"
    assert (plan["ratePlan"], plan["monthlyCredits"]) == ("pro", 500)
    listed = client.simulate_get("/getBillingPlans")  # public
    assert listed.status_code == 200
    assert plan["id"] in [p["id"] for p in listed.json["data"]]
    only = client.simulate_get("/getBillingPlans", params={"planIDs": plan["id"]}).json["data"]
    assert [p["id"] for p in only] == [plan["id"]]
    assert client.simulate_post("/createBillingPlan", json={}).status_code == 401
    bad = bclient.simulate_post("/createBillingPlan", headers=ADMIN, json={
        "name": "x", "prices": [{**PRICE, "period": "weekly"}], "tier": 1})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "INVALID_REQUEST"


def test_membership_visible_and_allowance_granted_at_once(bclient, make_account):
    plan = _plan(bclient)
    account_id, key = make_account()
    data = _join(bclient, account_id, plan["id"])
    assert (data["_id"], data["paymentProvider"], data["tier"], data["isActive"]) == \
        (account_id, "admin", 2, True)
    me = bclient.simulate_get("/zapier/v1/me", headers=bearer(key)).json["data"]
    assert (me["tier"], me["plan"], me["limits"]["perMinute"]) == (2, "pro", 600)
    assert me["membership"]["billingPlanID"] == plan["id"]
    assert me["membership"]["nextBillingDate"] == "2030-02-01T00:00:00.000Z"
    acct = bclient.simulate_get("/api/account/data", headers=bearer(key)).json["data"]
    assert (acct["tier"], acct["tierExpiration"], acct["credits"]) == (2, None, 500)
    assert _grants(account_id) == [(500, f"billing plan {plan['id']} allowance for 2030-01")]
    assert ledger_sum(account_id) == (500, 500)


def test_two_racing_grant_runs_grant_once_and_next_period_again(bclient, make_account):
    plan = _plan(bclient, credits=300)
    members = [make_account()[0] for _ in range(3)]
    for account_id in members:
        _join(bclient, account_id, plan["id"])  # grants 2030-01 at once

    def race(now):
        barrier = threading.Barrier(2)
        counts = []

        def run():
            barrier.wait()
            counts.append(billing_job.grant_allowances(now, bclient.app.deps.generations))

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counts

    assert race(START + dt.timedelta(days=3)) == [0, 0]  # January was granted already
    february = [sum(race(dt.datetime(2030, 2, 1, 0, 5))) for _ in range(3)]
    assert february == [3, 0, 0]  # raced three times: once per member
    for account_id in members:
        assert [a for a, _ in _grants(account_id)] == [300, 300]
        assert ledger_sum(account_id) == (600, 600)
    assert sum(race(dt.datetime(2030, 3, 2))) == 3  # March grants again
    for account_id in members:
        assert _grants(account_id)[-1] == (300, f"billing plan {plan['id']} allowance for "
                                                "2030-03")
        assert ledger_sum(account_id) == (900, 900)


def test_cancel_keeps_tier_to_period_end_then_restores_default_plan(bclient, clock,
                                                                     make_account):
    plan = _plan(bclient, credits=100)
    account_id, key = make_account()
    _join(bclient, account_id, plan["id"])
    resp = bclient.simulate_delete("/cancelMembership", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert resp.json["data"]["success"] is True
    assert resp.json["data"]["tierExpiration"] == "2030-02-01T00:00:00.000Z"
    me = bclient.simulate_get("/zapier/v1/me", headers=bearer(key)).json["data"]
    assert (me["tier"], me["plan"], me["membership"]["cancelled"]) == (2, "pro", True)
    assert me["membership"]["nextBillingDate"] is None
    assert billing_job.grant_allowances(dt.datetime(2030, 2, 1, 0, 1),
                                        bclient.app.deps.generations) == 0  # no February
    with dbmod.connection():
        assert Account.get_by_id(account_id).plan == "default"
    clock.advance(20 * 86400)  # 2030-02-04
    me = bclient.simulate_get("/zapier/v1/me", headers=bearer(key)).json["data"]
    assert (me["tier"], me["plan"], me["membership"]) == (0, "default", None)
    assert _grants(account_id) == [(100, f"billing plan {plan['id']} allowance for 2030-01")]
    again = bclient.simulate_delete("/cancelMembership", headers=bearer(key))
    assert again.status_code == 404
    assert ledger_sum(account_id) == (100, 100)


def test_admin_tier_without_plan_and_deactivation(bclient, make_account):
    account_id, key = make_account()
    resp = bclient.simulate_post("/setAdminProvidedPremiumTier", headers=ADMIN, json={
        "productId": "friends-and-family", "emails": [account_id], "tier": 1,
        "isActive": True, "deactivationDate": "2030-01-20T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"]["emails"] == [account_id] and "_id" not in resp.json["data"]
    me = bclient.simulate_get("/zapier/v1/me", headers=bearer(key)).json["data"]
    assert (me["tier"], me["tierExpiration"], me["plan"]) == (1, "2030-01-20T00:00:00.000Z",
                                                             "default")
    missing = bclient.simulate_post("/setAdminProvidedPremiumTier", headers=ADMIN, json={
        "productId": "x", "email": "nobody-here", "tier": 1, "isActive": True})
    assert missing.status_code == 404
    assert ledger_sum(account_id) == (0, 0)


def test_worker_schedule_puts_one_job_per_slot_in_rqs_scheduler(config, schema, clock):
    redis = redis_lib.Redis.from_url(config.redis_url)
    first = billing_job.schedule(redis, config, clock)
    second = billing_job.schedule(redis, config, clock)  # another worker, same slot
    assert first == second
    registry = ScheduledJobRegistry(queue=Queue(queue_name(config, "cpu"), connection=redis))
    assert registry.get_job_ids() == [first]
    soon = billing_job.schedule(redis, config, clock, soon=True)
    assert soon != first and set(registry.get_job_ids()) == {first, soon}


def test_tick_runs_through_rq_with_the_runtime_clock_and_reschedules(config, schema, bclient,
                                                                      make_account):
    from async_support import burst
    from core.clock import SystemClock

    plan = _plan(bclient, credits=70)
    account_id, _ = make_account()
    _join(bclient, account_id, plan["id"])  # 2030-01 granted by the route
    redis = redis_lib.Redis.from_url(config.redis_url)
    Queue(queue_name(config, "cpu"), connection=redis).enqueue("jobs.billing.tick")
    months_ahead = dt.datetime(2030, 2, 10) - dt.datetime.now(dt.UTC).replace(tzinfo=None)
    burst(config, clock=SystemClock(offset=months_ahead))  # the worker's now: 2030-02-10
    assert _grants(account_id)[-1] == (70, f"billing plan {plan['id']} allowance for 2030-02")
    registry = ScheduledJobRegistry(queue=Queue(queue_name(config, "cpu"), connection=redis))
    assert len(registry.get_job_ids()) == 1  # the next tick
    assert ledger_sum(account_id) == (140, 140)


def test_a_started_worker_grants_due_allowances_by_itself(config, schema, bclient,
                                                          make_account):
    import time

    from async_support import start_worker, stop_worker
    from metering import billing

    plan = _plan(bclient, credits=30)
    account_id, _ = make_account()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with dbmod.connection():  # a member whose allowance is due (no grant yet)
        billing.set_membership(account_id, tier=2, product_id=plan["id"], processor="admin",
                               now=now, plan_id=plan["id"],
                               generations=bclient.app.deps.generations)
    proc = start_worker(config, queues="cpu")
    try:
        deadline = time.monotonic() + 60
        while not _grants(account_id) and time.monotonic() < deadline:
            time.sleep(0.2)  # waiting on another process, not on business time
    finally:
        stop_worker(proc)
    assert [a for a, _ in _grants(account_id)] == [30]
    assert ledger_sum(account_id) == (30, 30)
