"""Buying credits through PayPal, end to end: the real paypalrestsdk (v1 Payments) and
paypal-server-sdk (Orders v2) clients against a loopback fake PayPal, the real app on
PostgreSQL, and a real gunicorn for the races. Exactly one purchase per payment however
execute and the webhook arrive; refunds never go below zero and leave the rest owed."""

from __future__ import annotations

import json
import threading

import pytest
import requests
from falcon.testing import TestClient
from paypal_fake import (
    FakePayPal,
    capture_completed,
    capture_refunded,
    capture_reversed,
    sale_completed,
    sale_refunded,
)

from conftest import ADMIN, bearer, ledger_sum, make_app, start_gunicorn
from core.config import PaymentConfig
from metering import db as dbmod
from metering.models import LedgerEntry
from metering.payments.models import Payment


def _env(fake, provider):
    return {"PAYMENT_PROVIDER": provider, "PAYPAL_CLIENT_ID": "client-id",
            "PAYPAL_CLIENT_SECRET": "client-secret", "PAYPAL_BASE_URL": fake.url,
            "PAYPAL_WEBHOOK_ID": fake.webhook_id, "PAYPAL_TIMEOUT_SECONDS": "1",
            "CREDIT_PACKS": "100:9.99:USD,500:39.99:USD"}


@pytest.fixture
def fake():
    with FakePayPal() as f:
        yield f


@pytest.fixture(params=["paypal-v1", "paypal-orders"])
def provider(request):
    return request.param


@pytest.fixture
def pay(config, schema, fake, provider):
    app = make_app(config.replace(payments=PaymentConfig.from_env(_env(fake, provider))))
    return TestClient(app)


def _account(client, credits=0):
    resp = client.simulate_post("/admin/accounts", headers=ADMIN, json={
        "username": "p" + __import__("uuid").uuid4().hex[:10], "credits": credits})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["id"], resp.json["data"]["api_key"]


def _purchases(account_id):
    with dbmod.connection():
        return list(LedgerEntry.select().where((LedgerEntry.account == account_id)
                                               & (LedgerEntry.kind == "purchase")))


def _create(client, key, **body):
    body = {"amount": "9.99", "currency": "USD", "credits": 100, **body}
    return client.simulate_post("/api/paypal/create", json=body, headers=bearer(key))


def _started(client, fake, key):
    """A created and approved payment; returns its PayPal id."""
    resp = _create(client, key)
    assert resp.status_code == 201, resp.text
    assert resp.json["data"]["approval_url"].startswith("https://www.sandbox.paypal.com/")
    with dbmod.connection():
        provider_id = Payment.select().order_by(Payment.created_at.desc()).first().provider_id
    fake.approve(provider_id)
    return provider_id


def _completed_event(fake, provider, provider_id):
    if provider == "paypal-v1":
        return sale_completed(provider_id, fake.sale_of(provider_id), "9.99")
    return capture_completed(provider_id, fake.capture_of(provider_id), "9.99")


def _webhook(post, fake, event, *, headers=None):
    raw = json.dumps(event)
    return post("/webhooks/paypal", raw, {**fake.sign(event), **(headers or {}),
                                          "Content-Type": "application/json"})


def _client_post(client):
    def post(path, raw, headers):
        return client.simulate_post(path, body=raw, headers=headers)
    return post


def test_purchase_end_to_end_execute_then_webhook(pay, fake, provider):
    account, key = _account(pay)
    provider_id = _started(pay, fake, key)
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(key))
    assert resp.status_code == 200, resp.text
    data = resp.json["data"]
    assert data["message"] == "Payment successful" and data["credits_awarded"] == 100
    assert data["receipt"].startswith("txn_")
    again = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                          "payerId": "PAYER1"},
                              headers=bearer(key))
    assert again.status_code == 200 and again.json["data"]["receipt"] == data["receipt"]
    # The capture was made with an idempotency key of PayPal's.
    assert any(h.get("PayPal-Request-Id") for p, h in fake.calls if "capture" in p
               or "execute" in p)
    event = _completed_event(fake, provider, provider_id)
    for _ in range(2):
        hook = _webhook(_client_post(pay), fake, event)
        assert hook.status_code == 200, hook.text
        assert hook.json["data"]["credited"] is False
    rows = _purchases(account)
    assert len(rows) == 1 and rows[0].receipt == data["receipt"] and rows[0].amount == 100
    assert pay.simulate_get(f"/zapier/v1/receipts/{data['receipt']}",
                            headers=bearer(key)).json["data"]["type"] == "purchase"
    assert ledger_sum(account) == (100, 100)


def test_webhook_first_then_execute(pay, fake, provider):
    account, key = _account(pay, credits=5)
    provider_id = _started(pay, fake, key)
    # PayPal captured (the payer's browser died before the redirect): capture it at the
    # fake through a first execute that we lose, by asking PayPal directly.
    if provider == "paypal-v1":
        fake.payments[provider_id]["state"] = "approved"
        fake.payments[provider_id]["sale_id"] = "SALE-EARLY"
    else:
        fake.orders[provider_id].update(status="COMPLETED", capture_id="CAP-EARLY")
    hook = _webhook(_client_post(pay), fake, _completed_event(fake, provider, provider_id))
    assert hook.status_code == 200 and hook.json["data"]["credited"] is True, hook.text
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(key))
    assert resp.status_code == 200 and resp.json["data"]["credits_awarded"] == 100
    assert len(_purchases(account)) == 1
    assert ledger_sum(account) == (105, 105)


def test_pack_mismatch_is_400_and_writes_nothing(pay, fake):
    account, key = _account(pay)
    for body in ({"amount": "1.00"}, {"currency": "EUR"}, {"credits": 101},
                 {"amount": None}, {"credits": "100"}):
        resp = _create(pay, key, **body)
        assert resp.status_code == 400, resp.text
        assert resp.json["error"]["code"] == "INVALID_REQUEST"
        assert resp.json["error"]["details"]
    assert _create(pay, key, amount=39.99, credits=500).status_code == 201  # a number is fine
    with dbmod.connection():
        assert Payment.select().count() == 1
    assert [p for p, _ in fake.calls if p == "/v1/payments/payment"
            or p == "/v2/checkout/orders"].__len__() == 1
    assert ledger_sum(account) == (0, 0)


def test_another_account_cannot_execute(pay, fake):
    owner, key = _account(pay)
    other, other_key = _account(pay)
    provider_id = _started(pay, fake, key)
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(other_key))
    assert resp.status_code == 404 and resp.json["error"]["code"] == "NOT_FOUND"
    assert ledger_sum(other) == (0, 0) and ledger_sum(owner) == (0, 0)


def test_unverified_webhook_changes_nothing(pay, fake, provider):
    account, key = _account(pay)
    provider_id = _started(pay, fake, key)
    if provider == "paypal-v1":
        fake.payments[provider_id].update(state="approved", sale_id="SALE-X")
    else:
        fake.orders[provider_id].update(status="COMPLETED", capture_id="CAP-X")
    event = _completed_event(fake, provider, provider_id)
    post = _client_post(pay)
    forged = dict(event, resource={**event["resource"], "id": "OTHER"})  # signed != sent
    resp = post("/webhooks/paypal", json.dumps(forged),
                {**fake.sign(event), "Content-Type": "application/json"})
    assert resp.status_code == 401 and resp.json["success"] is False
    resp = post("/webhooks/paypal", json.dumps(event), {"Content-Type": "application/json"})
    assert resp.status_code == 401
    resp = _webhook(post, fake, {**event}, headers=fake.sign(event, webhook_id="WH-OTHER"))
    assert resp.status_code == 401
    assert _purchases(account) == [] and ledger_sum(account) == (0, 0)
    with dbmod.connection():
        assert Payment.get(Payment.provider_id == provider_id).state == "created"


def test_refund_takes_back_never_below_zero_and_owed_blocks_paid_actions(pay, fake, provider):
    account, key = _account(pay)
    provider_id = _started(pay, fake, key)
    assert pay.simulate_post("/api/paypal/execute", json={
        "paymentId": provider_id, "payerId": "PAYER1"}, headers=bearer(key)).status_code == 200
    # Spend 70 of the 100 credits.
    assert pay.simulate_post(f"/admin/accounts/{account}/credits", headers=ADMIN,
                             json={"amount": -70, "reason": "spent"}).status_code in (200, 201)
    refund = sale_refunded(provider_id, fake.sale_of(provider_id), "9.99") \
        if provider == "paypal-v1" else capture_refunded(fake.capture_of(provider_id), "9.99")
    for _ in range(2):  # PayPal redelivers: applied once
        resp = _webhook(_client_post(pay), fake, refund)
        assert resp.status_code == 200, resp.text
    assert ledger_sum(account) == (0, 0)
    with dbmod.connection():
        adjustments = list(LedgerEntry.select().where((LedgerEntry.account == account)
                                                      & (LedgerEntry.kind == "adjustment")))
        from metering import ledger
        assert ledger.owed(account) == 70
    assert sorted(a.amount for a in adjustments) == [-70, -30]
    resp = pay.simulate_post("/zapier/v1/echo", json={"message": "hi"}, headers=bearer(key))
    assert resp.status_code == 403 and "owes 70 credits" in resp.json["error"]["message"]
    # A later purchase settles what is owed first.
    provider_id = _started(pay, fake, key)
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(key))
    assert resp.status_code == 200 and resp.json["data"]["credits_awarded"] == 100
    assert ledger_sum(account) == (30, 30)
    assert pay.simulate_post("/zapier/v1/echo", json={"message": "hi"},
                             headers=bearer(key)).status_code == 200
    assert ledger_sum(account) == (29, 29)


def test_reversal_of_an_order_capture(config, schema, fake):
    client = TestClient(make_app(config.replace(
        payments=PaymentConfig.from_env(_env(fake, "paypal-orders")))))
    account, key = _account(client)
    provider_id = _started(client, fake, key)
    assert client.simulate_post("/api/paypal/execute", json={
        "paymentId": provider_id, "payerId": "PAYER1"}, headers=bearer(key)).status_code == 200
    resp = _webhook(_client_post(client), fake, capture_reversed(fake.capture_of(provider_id)))
    assert resp.status_code == 200 and resp.json["data"]["applied"] is True, resp.text
    assert ledger_sum(account) == (0, 0)


def test_provider_errors_and_timeouts_credit_nothing(pay, fake):
    account, key = _account(pay)
    fake.fail = 500
    resp = _create(pay, key)
    assert resp.status_code == 503 and resp.json["error"]["code"] == "SERVICE_UNAVAILABLE"
    fake.fail = None
    provider_id = _started(pay, fake, key)
    fake.fail = 503
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(key))
    assert resp.status_code == 503, resp.text
    fake.fail = None
    fake.hang.set()
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(key))
    assert resp.status_code == 504 and resp.json["error"]["code"] == "GATEWAY_TIMEOUT"
    assert _purchases(account) == [] and ledger_sum(account) == (0, 0)
    with dbmod.connection():
        assert Payment.get(Payment.provider_id == provider_id).state == "created"
    # PayPal may have captured the timed-out call: the retry carries the same
    # PayPal-Request-Id, gets the first answer, and credits it once.
    fake.hang.clear()
    fake.release.set()
    retry = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                          "payerId": "PAYER1"},
                              headers=bearer(key))
    assert retry.status_code == 200 and retry.json["data"]["credits_awarded"] == 100
    assert len(_purchases(account)) == 1 and ledger_sum(account) == (100, 100)


def test_payments_disabled_without_provider(client):
    _, key = _account(client)
    resp = _create(client, key)
    assert resp.status_code == 403 and "Payments are disabled" in resp.json["error"]["message"]
    assert client.simulate_post("/webhooks/paypal", body="{}").status_code == 403


@pytest.mark.parametrize("provider", ["paypal-v1", "paypal-orders"])
def test_execute_and_webhooks_race_through_gunicorn(config, schema, fake, provider):
    # A generous PayPal timeout: 20 requests at once on a small machine are slow, not hung.
    proc, url = start_gunicorn(config, workers=2, extra_env={
        **_env(fake, provider), "PAYPAL_TIMEOUT_SECONDS": "60"})
    try:
        signup = requests.post(url + "/admin/accounts", headers=ADMIN, timeout=30,
                               json={"username": "racer-" + provider, "credits": 0})
        account, key = signup.json()["data"]["id"], signup.json()["data"]["api_key"]
        resp = requests.post(url + "/api/paypal/create", headers=bearer(key), timeout=30,
                             json={"amount": "9.99", "currency": "USD", "credits": 100})
        assert resp.status_code == 201, resp.text
        with dbmod.connection():
            provider_id = Payment.get(Payment.account == account).provider_id
        fake.approve(provider_id)
        # The capture's id, known up front so the webhooks can name it.
        if provider == "paypal-v1":
            fake.payments[provider_id]["sale_id"] = "SALE-RACE"
        else:
            fake.orders[provider_id]["capture_id"] = "CAP-RACE"
        event = _completed_event(fake, provider, provider_id)
        raw, statuses, barrier = json.dumps(event), [], threading.Barrier(20)

        def execute():
            barrier.wait()
            statuses.append(("execute", requests.post(
                url + "/api/paypal/execute", headers=bearer(key), timeout=60,
                json={"paymentId": provider_id, "payerId": "PAYER1"})))

        def webhook():
            barrier.wait()
            statuses.append(("hook", requests.post(
                url + "/webhooks/paypal", data=raw, timeout=60,
                headers={**fake.sign(event), "Content-Type": "application/json"})))

        threads = [threading.Thread(target=execute if i % 2 else webhook) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        hooks = [r for kind, r in statuses if kind == "hook"]
        assert len(hooks) == 10 and all(r.status_code == 200 for r in hooks)
        assert sum(r.json()["data"]["credited"] for r in hooks) <= 1
        executes = [r for kind, r in statuses if kind == "execute"]
        assert all(r.status_code == 200 for r in executes), [r.text for r in executes]
        assert len(executes) == 10, [(r.status_code, r.text[:300]) for r in statuses]
        assert all(r.json()["data"]["credits_awarded"] == 100 for r in executes)
        assert len({r.json()["data"]["receipt"] for r in executes}) == 1
        assert len(_purchases(account)) == 1
        assert ledger_sum(account) == (100, 100)
        # PayPal redelivers one refund 20 times at once: it is taken back once.
        refund = sale_refunded(provider_id, "SALE-RACE", "9.99") if provider == "paypal-v1" \
            else capture_refunded("CAP-RACE", "9.99")
        raw, answers, barrier = json.dumps(refund), [], threading.Barrier(20)

        def refund_hook():
            barrier.wait()
            answers.append(requests.post(url + "/webhooks/paypal", data=raw, timeout=60,
                                         headers={**fake.sign(refund),
                                                  "Content-Type": "application/json"}))

        threads = [threading.Thread(target=refund_hook) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.status_code == 200 for r in answers), [
            (r.status_code, r.text[:300]) for r in answers if r.status_code != 200]
        assert sum(r.json()["data"]["applied"] for r in answers) == 1
        with dbmod.connection():
            assert LedgerEntry.select().where((LedgerEntry.account == account) & (
                LedgerEntry.kind == "adjustment")).count() == 1
        assert ledger_sum(account) == (0, 0)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_partial_refund_takes_its_share_once(pay, fake, provider):
    account, key = _account(pay)
    provider_id = _started(pay, fake, key)
    assert pay.simulate_post("/api/paypal/execute", json={
        "paymentId": provider_id, "payerId": "PAYER1"}, headers=bearer(key)).status_code == 200
    if provider == "paypal-v1":
        first = sale_refunded(provider_id, fake.sale_of(provider_id), "5.00")
        second = sale_refunded(provider_id, fake.sale_of(provider_id), "9.99")
    else:
        first = capture_refunded(fake.capture_of(provider_id), "5.00")
        second = capture_refunded(fake.capture_of(provider_id), "9.99")
    assert _webhook(_client_post(pay), fake, first).status_code == 200
    assert ledger_sum(account) == (50, 50)  # 5.00 of 9.99 is 50 of 100 credits
    # A second refund can take back only what the payment has left: 50, not 100.
    assert _webhook(_client_post(pay), fake, second).status_code == 200
    assert ledger_sum(account) == (0, 0)
    with dbmod.connection():
        from metering import ledger
        assert ledger.owed(account) == 0


def test_payment_routes_answer_as_documented_when_enabled(config, schema, fake):
    """The schema fuzzer (tests/test_fuzz.py) over the three payment routes, with a
    provider configured (the suite-wide fuzz sees them disabled)."""
    import schemathesis
    from schemathesis import GenerationMode
    from test_fuzz import _fuzz

    app = make_app(config.replace(payments=PaymentConfig.from_env(_env(fake, "paypal-v1"))))
    client = TestClient(app)
    _, key = _account(client, credits=10)
    document = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [r.ok() for r in document.get_all_operations()
                  if "paypal" in r.ok().label]
    assert len(operations) == 3
    failures = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            failures += _fuzz(operation, mode, {**bearer(key), **ADMIN})
    assert failures == [], "\n".join(failures)


def test_payment_config_is_checked():
    from core.config import ConfigError

    packs = PaymentConfig.from_env({"CREDIT_PACKS": " 100:9.99:usd , 500:40:EUR "}).packs
    assert [(p.credits, p.amount, p.currency) for p in packs] == [(100, "9.99", "USD"),
                                                                    (500, "40.00", "EUR")]
    for env in ({"CREDIT_PACKS": "100:9.999:USD"}, {"CREDIT_PACKS": "0:1:USD"},
                {"CREDIT_PACKS": "100:9.99"}, {"CREDIT_PACKS": "x:1:USD"},
                {"PAYMENT_PROVIDER": "stripe"}, {"PAYPAL_MODE": "prod"},
                {"PAYPAL_BASE_URL": "http://paypal.example"},
                {"PAYPAL_RETURN_URL": "javascript:alert(1)"},
                {"PAYPAL_TIMEOUT_SECONDS": "0"}):
        with pytest.raises(ConfigError):
            PaymentConfig.from_env(env)
    live = PaymentConfig.from_env({"PAYPAL_MODE": "live", "PAYMENT_PROVIDER": "paypal-v1"})
    assert live.base_url == "https://api-m.paypal.com" and not live.enabled


def test_unapproved_payment_is_refused_by_paypal_and_credits_nothing(pay, fake, provider):
    account, key = _account(pay)
    assert _create(pay, key).status_code == 201
    with dbmod.connection():
        provider_id = Payment.get(Payment.account == account).provider_id
    resp = pay.simulate_post("/api/paypal/execute", json={"paymentId": provider_id,
                                                         "payerId": "PAYER1"},
                             headers=bearer(key))
    assert resp.status_code == 400 and resp.json["error"]["code"] == "INVALID_REQUEST"
    assert "NOT_APPROVED" in resp.json["error"]["message"] or "UNPROCESSABLE" in \
        resp.json["error"]["message"], resp.text
    assert _purchases(account) == [] and ledger_sum(account) == (0, 0)
