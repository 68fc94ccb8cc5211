"""Gift cards (seed 003; docs/BILLING.md): hashed codes, one redeem per card under a race
of 20 through a 2-worker gunicorn, the seed's tier rules, and the limit on failed redeems."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import threading

import pytest
import requests
from falcon.testing import TestClient

from conftest import ADMIN, bearer, ledger_sum, make_app, start_gunicorn
from core.clock import ManualClock
from metering import db as dbmod
from metering.giftcards import GiftCard
from metering.models import LedgerEntry

START = dt.datetime(2030, 1, 15, 12, 0)


@pytest.fixture
def clock():
    return ManualClock(START)


@pytest.fixture
def gclient(config, schema, clock):
    return TestClient(make_app(config, clock=clock))


def _cards(client, **params):
    resp = client.simulate_get("/downloadGiftCards", headers=ADMIN, params=params)
    assert resp.status_code == 201, resp.text
    assert resp.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(resp.text)))


def _redeem(client, key, code):
    return client.simulate_post("/redeemGiftCard", headers=bearer(key), json={"code": code})


def test_download_creates_a_batch_whose_codes_are_stored_hashed(gclient):
    rows = _cards(gclient, numberOfCards=3, tier=2, days=7, credits=40, usdPrice="4.50",
                  externalCodes="EXT-1,EXT-2", additionalInformation="launch")
    assert len(rows) == 3 and len({r["code"] for r in rows}) == 3
    assert [r["externalCode"] for r in rows] == ["EXT-1", "EXT-2", ""]
    assert {(r["tier"], r["days"], r["credits"], r["usdPrice"], r["distributionProvider"])
            for r in rows} == {("2", "7", "40", "4.5", "giftcard")}
    with dbmod.connection():
        stored = {c.id: c for c in GiftCard.select()}
        for row in rows:
            card = stored[row["productID"]]
            normal = row["code"].replace("-", "")
            assert card.code_hash == hashlib.sha256(normal.encode()).hexdigest()
            assert row["code"] not in str(card.__data__) and normal not in str(card.__data__)
    assert gclient.simulate_get("/downloadGiftCards").status_code == 401
    too_many = gclient.simulate_get("/downloadGiftCards", headers=ADMIN,
                                    params={"numberOfCards": "1001"})
    assert too_many.status_code == 400


def test_redeem_once_gives_tier_and_credits(gclient, make_account):
    code = _cards(gclient, numberOfCards=1, tier=1, days=30, credits=50)[0]["code"]
    account_id, key = make_account(credits=5)
    resp = _redeem(gclient, key, code.lower())  # codes are case- and dash-insensitive
    assert resp.status_code == 200, resp.text
    data = resp.json["data"]
    assert (data["tier"], data["tierExpiration"], data["creditsGranted"]) == \
        (1, "2030-02-14T12:00:00.000Z", 50)
    assert data["txnReceipt"].startswith("txn_") and data["productID"].startswith("gc_")
    me = gclient.simulate_get("/zapier/v1/me", headers=bearer(key)).json["data"]
    assert (me["tier"], me["membership"]["merchantProcessor"], me["balance"]) == \
        (1, "giftcard", 55)
    again = _redeem(gclient, key, code)
    assert again.status_code == 409 and again.json["error"]["code"] == "CONFLICT"
    other_id, other_key = make_account()
    assert _redeem(gclient, other_key, code).status_code == 409
    assert ledger_sum(account_id) == (55, 55) and ledger_sum(other_id) == (0, 0)


def test_tier_rules_of_the_seed(gclient, make_account):
    account_id, key = make_account()
    # an active, non-expiring tier 2: a tier-1 card is refused and stays redeemable
    assert gclient.simulate_post("/setAdminProvidedPremiumTier", headers=ADMIN, json={
        "productId": "staff", "email": account_id, "tier": 2, "isActive": True}).status_code \
        == 200
    code = _cards(gclient, numberOfCards=1, tier=1, days=10, credits=7)[0]["code"]
    refused = _redeem(gclient, key, code)
    assert refused.status_code == 409 and "tier" in refused.json["error"]["message"]
    assert ledger_sum(account_id) == (0, 0)
    # an expiring tier equal to the card's is extended by the card's days
    expiring_id, expiring_key = make_account()
    assert gclient.simulate_post("/setAdminProvidedPremiumTier", headers=ADMIN, json={
        "productId": "trial", "email": expiring_id, "tier": 1, "isActive": True,
        "deactivationDate": "2030-01-20T00:00:00Z"}).status_code == 200
    extended = _redeem(gclient, expiring_key, code)
    assert extended.status_code == 200, extended.text
    assert extended.json["data"]["tierExpiration"] == "2030-01-30T00:00:00.000Z"
    # an expiring lower tier is replaced by a higher card's tier from now
    higher = _cards(gclient, numberOfCards=1, tier=3, days=1)[0]["code"]
    up = _redeem(gclient, expiring_key, higher).json["data"]
    assert (up["tier"], up["tierExpiration"], up["creditsGranted"]) == \
        (3, "2030-01-16T12:00:00.000Z", 0)
    assert ledger_sum(expiring_id) == (7, 7)


def test_expired_batch_is_void(gclient, clock, make_account):
    code = _cards(gclient, numberOfCards=1, expiresAt="2030-01-16T00:00:00Z")[0]["code"]
    _, key = make_account()
    clock.advance(86400)
    assert _redeem(gclient, key, code).status_code == 404


def test_failed_redeems_are_limited_per_account(config, schema, make_account):
    client = TestClient(make_app(config.replace(gift_card_failures_per_window=3)))
    code = _cards(client, numberOfCards=1)[0]["code"]
    _, key = make_account()
    for i in range(3):
        resp = _redeem(client, key, f"WRONG-{i}")
        assert resp.status_code == 404 and resp.json["error"]["code"] == "NOT_FOUND"
    limited = _redeem(client, key, "WRONG-3")
    assert limited.status_code == 429 and limited.json["error"]["code"] == "RATE_LIMITED"
    assert int(limited.headers["Retry-After"]) > 0
    assert _redeem(client, key, code).status_code == 429  # the right code too, until the end
    _, other = make_account()  # per account: another account is not limited
    assert _redeem(client, other, code).status_code == 200


def test_twenty_racing_redeems_through_gunicorn_grant_once(config, schema, make_account,
                                                           client):
    code = _cards(client, numberOfCards=1, tier=1, days=30, credits=25)[0]["code"]
    accounts = [make_account() for _ in range(20)]
    proc, url = start_gunicorn(config, workers=2)
    try:
        barrier = threading.Barrier(len(accounts))
        results = {}

        def redeem(account_id, key):
            barrier.wait()
            results[account_id] = requests.post(url + "/redeemGiftCard", json={"code": code},
                                                headers=bearer(key), timeout=60)

        threads = [threading.Thread(target=redeem, args=a) for a in accounts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200] + [409] * 19, statuses
    winner = next(a for a, r in results.items() if r.status_code == 200)
    with dbmod.connection():
        grants = list(LedgerEntry.select().where(LedgerEntry.reason.startswith("gift card")))
        card = GiftCard.get()
    assert [(g.account_id, g.amount) for g in grants] == [(winner, 25)]
    assert (card.redeemed_by_id, card.receipt) == (winner, grants[0].receipt)
    for account_id, _ in accounts:
        assert ledger_sum(account_id) == ((25, 25) if account_id == winner else (0, 0))


def test_cancelling_a_gift_card_tier_keeps_its_end(gclient, make_account):
    code = _cards(gclient, numberOfCards=1, tier=1, days=60)[0]["code"]
    _, key = make_account()
    assert _redeem(gclient, key, code).status_code == 200
    resp = gclient.simulate_delete("/cancelMembership", headers=bearer(key))
    assert resp.status_code == 200
    assert resp.json["data"]["tierExpiration"] == "2030-03-16T12:00:00.000Z"
