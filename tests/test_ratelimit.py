"""Rate limits (CONTRACT 3) on the real Redis: headers on every authenticated response,
exactness under concurrency across gunicorn processes, per-day and per-minute limits not
counting each other's refusals, plan changes, per-credential counters, and failing open
when Redis is stopped or hangs."""

from __future__ import annotations

import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from falcon.testing import TestClient
from prometheus_client import REGISTRY

from conftest import ADMIN, bearer, ledger_sum, make_app
from core.clock import ManualClock
from metering.ratelimit import BREAKER_SECONDS, GateCall, PerDay, PerMinute

ME = "/zapier/v1/me"


def _plan(client, per_minute, per_day, name=None):
    name = name or "p" + uuid.uuid4().hex[:8]
    resp = client.simulate_put(f"/admin/plans/{name}", headers=ADMIN,
                               json={"perMinute": per_minute, "perDay": per_day})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"] == {"name": name, "perMinute": per_minute, "perDay": per_day}
    return name


def _assign(client, account_id, plan):
    resp = client.simulate_put(f"/admin/accounts/{account_id}", headers=ADMIN,
                               json={"plan": plan})
    assert resp.status_code == 200, resp.text


def _headers(resp):
    h = resp.headers
    return int(h["X-RateLimit-Limit"]), int(h["X-RateLimit-Remaining"]), int(h["X-RateLimit-Reset"])


def _assert_rate_limited(status, headers, body):
    assert status == 429
    assert body["success"] is False
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["statusCode"] == 429
    assert body["meta"]["requestId"]
    retry = headers["Retry-After"]
    assert retry.isdigit() and int(retry) >= 1, retry
    assert int(headers["X-RateLimit-Remaining"]) == 0


def _fail_open_count():
    return REGISTRY.get_sample_value("gateway_ratelimit_fail_open_total") or 0.0


# --- headers -------------------------------------------------------------------------


def test_headers_on_every_authenticated_response_including_errors(client, make_account):
    account_id, key = make_account(credits=1)
    _assign(client, account_id, _plan(client, 10, 1000))
    now = time.time()
    responses = [
        client.simulate_get(ME, headers=bearer(key)),  # 200
        client.simulate_post("/zapier/v1/echo", json={"message": "a"}, headers=bearer(key)),
        client.simulate_post("/zapier/v1/echo", json={"message": "b"}, headers=bearer(key)),
        client.simulate_post("/zapier/v1/echo", json={"nope": 1}, headers=bearer(key)),
        client.simulate_post("/zapier/v1/no-such-action", json={}, headers=bearer(key)),
    ]
    assert [r.status_code for r in responses] == [200, 200, 403, 400, 404]
    assert responses[2].json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert responses[3].json["error"]["code"] == "INVALID_REQUEST"
    for i, resp in enumerate(responses):
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            assert resp.headers[name].isdigit(), (name, resp.headers.get(name))
        limit, remaining, reset = _headers(resp)
        assert limit == 10
        assert remaining == 10 - (i + 1)
        # Unix seconds (not a delta, not milliseconds), within the minute window
        assert now <= reset <= time.time() + 61, (reset, now)
    assert ledger_sum(account_id) == (0, 0)


def test_unauthenticated_and_admin_responses_carry_no_rate_limit_headers(client):
    for resp in (client.simulate_get(ME),
                 client.simulate_get(ME, headers=bearer("gwk_" + "x" * 40)),
                 client.simulate_put("/admin/plans/zz", headers=ADMIN,
                                     json={"perMinute": 1, "perDay": 1})):
        assert resp.status_code in (200, 401)
        assert "X-RateLimit-Limit" not in resp.headers


def test_limit_nearest_exhaustion_is_reported(client, make_account):
    account_id, key = make_account()
    _assign(client, account_id, _plan(client, 50, 5))
    limit, remaining, reset = _headers(client.simulate_get(ME, headers=bearer(key)))
    assert (limit, remaining) == (5, 4)
    assert reset > time.time() + 3600  # the day window's reset, not the minute's

    _assign(client, account_id, _plan(client, 3, 1000))
    limit, remaining, reset = _headers(client.simulate_get(ME, headers=bearer(key)))
    assert (limit, remaining) == (3, 1)  # the minute window still holds the first request
    assert reset <= time.time() + 61


# --- exactness -------------------------------------------------------------------------


@pytest.mark.slow
def test_exactly_the_limit_passes_under_concurrency_across_processes(client, make_account,
                                                                     server):
    limit, n = 20, 100
    account_id, key = make_account()
    _assign(client, account_id, _plan(client, limit, 1000))
    local = threading.local()
    barrier = threading.Barrier(25)

    def call(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
            barrier.wait(timeout=10)  # start together
        r = local.session.get(server + ME, headers=bearer(key), timeout=15)
        return r.status_code, r.headers, r.json()

    with ThreadPoolExecutor(25) as pool:
        results = list(pool.map(call, range(n)))
    codes = [status for status, _, _ in results]
    assert codes.count(200) == limit, codes
    assert codes.count(429) == n - limit, codes
    for status, headers, body in results:
        if status == 429:
            _assert_rate_limited(status, headers, body)
            assert int(headers["Retry-After"]) <= 60
        else:
            assert body["success"] is True
            assert int(headers["X-RateLimit-Limit"]) == limit
    # Remaining is read after the atomic hit, so racing requests may see each other's
    # hits; it is never more than what this request left, and never negative.
    remaining = [int(h["X-RateLimit-Remaining"]) for s, h, _ in results if s == 200]
    assert all(0 <= r <= limit - 1 for r in remaining), remaining
    assert 0 in remaining


# --- limits do not count each other's refusals -------------------------------------------


def test_day_limit_refusals_are_not_counted_by_the_minute_limit(client, make_account, app):
    account_id, key = make_account()
    _assign(client, account_id, _plan(client, 50, 5))
    codes = []
    for _ in range(8):
        resp = client.simulate_get(ME, headers=bearer(key))
        codes.append(resp.status_code)
        if resp.status_code == 429:
            _assert_rate_limited(429, resp.headers, resp.json)
            limit, remaining, reset = _headers(resp)
            assert (limit, remaining) == (5, 0)  # the limit that refused is reported
            # Retry-After points at the end of the day window
            assert int(resp.headers["Retry-After"]) > 3600
            assert int(resp.headers["Retry-After"]) <= 86400
            assert abs(reset - (time.time() + int(resp.headers["Retry-After"]))) <= 2
    assert codes == [200] * 5 + [429] * 3

    rate_key = _rate_key(app, account_id)
    strategy = app.deps.limiter.strategy
    _, minute_remaining = strategy.get_window_stats(PerMinute(50), rate_key)
    _, day_remaining = strategy.get_window_stats(PerDay(5), rate_key)
    assert minute_remaining == 45  # only the 5 that passed
    assert day_remaining == 0

    # raising the day limit shows the minute counter never saw the refusals
    _assign(client, account_id, _plan(client, 50, 1000))
    limit, remaining, _ = _headers(client.simulate_get(ME, headers=bearer(key)))
    assert (limit, remaining) == (50, 44)


def test_minute_limit_refusals_are_not_counted_by_the_day_limit(client, make_account, app):
    account_id, key = make_account()
    _assign(client, account_id, _plan(client, 3, 10))
    codes = [client.simulate_get(ME, headers=bearer(key)).status_code for _ in range(7)]
    assert codes == [200] * 3 + [429] * 4
    last = client.simulate_get(ME, headers=bearer(key))
    assert last.status_code == 429
    assert 1 <= int(last.headers["Retry-After"]) <= 60
    _, day_remaining = app.deps.limiter.strategy.get_window_stats(
        PerDay(10), _rate_key(app, account_id))
    assert day_remaining == 7


def _rate_key(app, account_id):
    """The limiter identity of the account's only API key (``kind:credential_id``)."""
    resp = TestClient(app).simulate_get(f"/admin/accounts/{account_id}/keys", headers=ADMIN)
    (key,) = resp.json["data"]["items"]
    return f"api_key:{key['keyId']}"


# --- plan changes and per-credential counters --------------------------------------------


def test_plan_change_takes_effect_on_the_next_request(client, make_account):
    account_id, key = make_account()
    plan = _plan(client, 2, 1000)
    _assign(client, account_id, plan)
    assert [client.simulate_get(ME, headers=bearer(key)).status_code for _ in range(3)] \
        == [200, 200, 429]
    _plan(client, 7, 1000, name=plan)  # same plan, new numbers
    resp = client.simulate_get(ME, headers=bearer(key))
    assert resp.status_code == 200
    assert _headers(resp)[0] == 7
    assert resp.json["data"]["limits"] == {"perMinute": 7, "perDay": 1000}

    # moving the account to another plan is just as immediate
    _assign(client, account_id, _plan(client, 30, 1000))
    assert _headers(client.simulate_get(ME, headers=bearer(key)))[0] == 30


def test_plan_change_keeps_what_was_used_in_the_current_windows(client, make_account):
    account_id, key = make_account()
    plan = _plan(client, 5, 8)
    _assign(client, account_id, plan)
    codes = [client.simulate_get(ME, headers=bearer(key)).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2  # 5 used; the refusals are not counted

    # the same plan with new numbers: 5 of 10 already used this minute, 5 of 8 today
    _plan(client, 10, 8, name=plan)
    limit, remaining, _ = _headers(client.simulate_get(ME, headers=bearer(key)))
    assert (limit, remaining) == (8, 2)  # the day is now the nearer limit: 6 of 8
    assert [client.simulate_get(ME, headers=bearer(key)).status_code for _ in range(3)] \
        == [200, 200, 429]

    # another plan: the minute (8 used) and the day (8 used) carry over again
    _assign(client, account_id, _plan(client, 12, 20))
    limit, remaining, _ = _headers(client.simulate_get(ME, headers=bearer(key)))
    assert (limit, remaining) == (12, 3)  # 9 of 12 this minute
    # lowering the limit below what was used refuses at once
    _assign(client, account_id, _plan(client, 4, 20))
    refused = client.simulate_get(ME, headers=bearer(key))
    _assert_rate_limited(refused.status_code, refused.headers, refused.json)
    assert _headers(refused)[0] == 4


def test_limits_are_per_credential(client, make_account):
    account_id, key1 = make_account()
    _assign(client, account_id, _plan(client, 2, 1000))
    resp = client.simulate_post(f"/admin/accounts/{account_id}/keys", headers=ADMIN,
                                json={"description": "second"})
    assert resp.status_code == 201, resp.text
    key2 = resp.json["data"]["apiKey"]
    assert [client.simulate_get(ME, headers=bearer(key1)).status_code for _ in range(3)] \
        == [200, 200, 429]
    resp = client.simulate_get(ME, headers=bearer(key2))
    assert resp.status_code == 200
    assert _headers(resp)[:2] == (2, 1)
    # another account's key is untouched too
    _, other = make_account()
    assert client.simulate_get(ME, headers=bearer(other)).status_code == 200


# --- failing open ------------------------------------------------------------------------


def test_fails_open_when_redis_is_stopped(config, schema, make_account, own_redis):
    url = own_redis.url
    client = TestClient(make_app(config.replace(redis_url=url)))
    account_id, key = make_account(credits=3)
    first = client.simulate_get(ME, headers=bearer(key))
    assert first.status_code == 200
    assert int(first.headers["X-RateLimit-Remaining"]) >= 0  # limited while Redis is up

    own_redis.kill()
    before = _fail_open_count()
    balances = []
    for i in range(3):
        resp = client.simulate_post("/zapier/v1/echo", json={"message": str(i)},
                                    headers=bearer(key))
        assert resp.status_code == 200, resp.text
        assert "X-RateLimit-Limit" not in resp.headers  # no decision, so no headers
        balances.append(resp.json["meta"]["availableCredit"])
    assert balances == [2, 1, 0]
    # credits still fail closed: PostgreSQL says no
    refused = client.simulate_post("/zapier/v1/echo", json={"message": "x"}, headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert ledger_sum(account_id) == (0, 0)
    assert _fail_open_count() >= before + 4
    text = client.simulate_get("/metrics").text
    assert "gateway_ratelimit_fail_open_total" in text


def test_fails_open_when_redis_hangs_and_stops_asking(config, schema, make_account,
                                                      hanging_redis):
    url, held = hanging_redis
    clock = ManualClock()
    client = TestClient(make_app(config.replace(redis_url=url), clock=clock))
    account_id, key = make_account(credits=2)
    before = _fail_open_count()
    resp = client.simulate_get(ME, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert "X-RateLimit-Limit" not in resp.headers  # the limiter timed out and let it in
    assert held, "the gateway never reached the hanging listener"
    reached = len(held)
    # the breaker is open: later requests do not touch Redis at all (no new connection,
    # so no timeout paid; the time it takes is measured in bench/, not asserted here)
    for i in range(2):
        resp = client.simulate_post("/zapier/v1/echo", json={"message": str(i)},
                                    headers=bearer(key))
        assert resp.status_code == 200, resp.text
    assert len(held) == reached
    assert resp.json["meta"]["availableCredit"] == 0
    assert ledger_sum(account_id) == (0, 0)
    assert _fail_open_count() >= before + 3
    # once the breaker's time is up, the limiter tries Redis again
    clock.advance(BREAKER_SECONDS + 1)
    assert client.simulate_get(ME, headers=bearer(key)).status_code == 200
    assert len(held) > reached


def test_a_restarted_redis_is_reconnected_without_failing_open(config, schema, make_account,
                                                              own_redis):
    """The gate keeps one Redis connection per thread: after Redis restarts (every script
    and counter lost, the old socket closed) the next request reconnects, loads the script
    again and is counted, instead of failing open."""
    client = TestClient(make_app(config.replace(redis_url=own_redis.url)))
    account_id, key = make_account(credits=5)
    assert _headers(client.simulate_get(ME, headers=bearer(key)))[1] >= 0

    own_redis.kill()
    own_redis.start()  # same port, empty
    before = _fail_open_count()
    first = client.simulate_get(ME, headers=bearer(key))
    assert first.status_code == 200, first.text
    limit, remaining, _ = _headers(first)  # counted: a decision came back
    assert remaining == limit - 1  # the first request of the restarted Redis's windows
    second = client.simulate_get(ME, headers=bearer(key))
    assert _headers(second)[1] == remaining - 1
    assert _fail_open_count() == before
    assert own_redis.client().script_exists(GateCall(own_redis.client()).sha) == [True]


def test_a_flushed_script_is_loaded_again(config, schema, make_account, own_redis):
    client = TestClient(make_app(config.replace(redis_url=own_redis.url)))
    _, key = make_account(credits=5)
    _, remaining, _ = _headers(client.simulate_get(ME, headers=bearer(key)))
    own_redis.client().script_flush()
    before = _fail_open_count()
    resp = client.simulate_get(ME, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    assert _headers(resp)[1] == remaining - 1  # counted once, not twice, not skipped
    assert _fail_open_count() == before


def test_retry_after_is_whole_seconds_until_reset(client, make_account):
    account_id, key = make_account()
    _assign(client, account_id, _plan(client, 1, 1000))
    ok = client.simulate_get(ME, headers=bearer(key))
    refused = client.simulate_get(ME, headers=bearer(key))
    assert ok.status_code == 200 and refused.status_code == 429
    retry = int(refused.headers["Retry-After"])
    reset = int(refused.headers["X-RateLimit-Reset"])
    assert 1 <= retry <= 60
    assert abs(math.ceil(reset - time.time()) - retry) <= 1
