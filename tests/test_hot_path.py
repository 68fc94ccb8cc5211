"""The hot path's caches and group commit keep the rules they replaced (issue 14).

Each gunicorn worker caches the API keys it resolved and the operators' prices, trusted
only at the generation Redis reports in the rate-limit round trip; concurrent debits of
pure actions share one transaction. These tests drive a real gunicorn with two worker
processes from real threads: a revoked key, a new price and a new plan limit are seen on
the very next request on every process, and the batched debits stay exact."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import psycopg2
import pytest
import requests
from falcon.testing import TestClient

from conftest import ADMIN, bearer, ledger_sum, make_app

pytestmark = pytest.mark.slow

ME = "/zapier/v1/me"
ECHO = "/zapier/v1/echo"


def _fan_out(fn, n, threads=16):
    """``fn(i)`` for ``i < n`` from ``threads`` threads released together, each request on
    a new connection so that gunicorn spreads them over both worker processes."""
    barrier = threading.Barrier(threads)
    started = threading.local()

    def call(i):
        if not hasattr(started, "yes"):
            started.yes = True
            barrier.wait(timeout=20)
        return fn(i)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, range(n)))


def _warm(url, key, n=64):
    """Enough concurrent requests that both workers have the key cached."""
    statuses = _fan_out(lambda _: requests.get(url + ME, headers=bearer(key),
                                               timeout=30).status_code, n)
    assert statuses == [200] * n


def _plan(client, per_minute, per_day=1_000_000):
    name = "hp" + uuid.uuid4().hex[:8]
    resp = client.simulate_put(f"/admin/plans/{name}", headers=ADMIN,
                               json={"perMinute": per_minute, "perDay": per_day})
    assert resp.status_code == 200, resp.text
    return name


def test_a_revoked_key_is_refused_on_the_next_request_on_every_process(
        client, make_account, server):
    account_id, key = make_account(credits=10, plan=_plan(client, 100_000))
    other = client.simulate_post("/api/key/generate", headers=bearer(key),
                                 json={"description": "zap"}).json["data"]
    _warm(server, other["apiKey"])
    _warm(server, key)

    revoked = client.simulate_delete(f"/admin/keys/{other['keyId']}", headers=ADMIN)
    assert revoked.status_code == 200, revoked.text

    def after(i):
        r = requests.post(server + ECHO, json={"message": f"m{i}"},
                          headers=bearer(other["apiKey"]), timeout=30)
        return r.status_code, r.json()["error"]["code"] if r.status_code != 200 else None

    assert _fan_out(after, 64) == [(401, "AUTH_FAILED")] * 64
    assert ledger_sum(account_id) == (10, 10)  # nothing was charged to the revoked key
    # the account's other cached key still works everywhere
    _warm(server, key)


def test_a_price_change_is_charged_from_the_next_request_on_every_process(
        client, make_account, server):
    account_id, key = make_account(credits=1000, plan=_plan(client, 100_000))

    def echo(i):
        r = requests.post(server + ECHO, json={"message": f"m{i}"}, headers=bearer(key),
                          timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["meta"]["creditsUsed"]

    assert set(_fan_out(echo, 48)) == {1}
    try:
        resp = client.simulate_put("/admin/prices/echo", headers=ADMIN, json={"credits": 3})
        assert resp.status_code == 200, resp.text
        assert set(_fan_out(echo, 48)) == {3}
    finally:
        assert client.simulate_put("/admin/prices/echo", headers=ADMIN,
                                   json={"credits": 1}).status_code == 200
    assert set(_fan_out(echo, 16)) == {1}
    left = 1000 - 48 - 48 * 3 - 16
    assert ledger_sum(account_id) == (left, left)


def test_a_plan_change_is_the_next_requests_limit_on_every_process(
        client, make_account, server):
    plan = _plan(client, 500)
    _, key = make_account(credits=0, plan=plan)

    def limit(_):
        r = requests.get(server + ME, headers=bearer(key), timeout=30)
        assert r.status_code == 200, r.text
        return int(r.headers["X-RateLimit-Limit"])

    assert set(_fan_out(limit, 48)) == {500}
    resp = client.simulate_put(f"/admin/plans/{plan}", headers=ADMIN,
                               json={"perMinute": 400, "perDay": 1_000_000})
    assert resp.status_code == 200, resp.text
    assert set(_fan_out(limit, 48)) == {400}


def test_grouped_debits_are_exact_each_with_its_own_receipt(app, client, make_account):
    """In-process threads through the real app: the batcher groups concurrent debits of
    one account into shared transactions, and still exactly the balance is spent."""
    credits, attempts = 40, 120
    account_id, key = make_account(credits=credits, plan=_plan(client, 100_000))
    batcher = app.deps.actions.debits
    before_batches, before_debits = batcher.batches, batcher.debits

    def echo(i):
        r = TestClient(app).simulate_post(ECHO, json={"message": f"m{i}"},
                                          headers=bearer(key))
        return r.status_code, r.json

    results = _fan_out(echo, attempts, threads=12)
    paid = [body for status, body in results if status == 200]
    refused = [body for status, body in results if status != 200]
    assert len(paid) == credits
    assert {b["error"]["code"] for b in refused} == {"INSUFFICIENT_CREDITS"}
    assert len({b["meta"]["txnReceipt"] for b in paid}) == credits
    assert sorted(b["meta"]["availableCredit"] for b in paid) == list(range(credits))
    assert ledger_sum(account_id) == (0, 0)
    debits = batcher.debits - before_debits
    assert debits == attempts  # every attempt went through the batcher ...
    assert batcher.batches - before_batches < debits  # ... sharing commits


def test_a_batch_larger_than_the_prepared_sizes_is_exact_too(pg_url, make_account):
    """Debits pile up behind a batch held on a row lock, so the next batch is larger than
    ``PREPARED_BATCH`` (sent as plain SQL, not a prepared statement): over three accounts,
    one too poor for all its debits, every debit is still exact, with its own receipt."""
    from metering import db as dbmod
    from metering.group_commit import PREPARED_BATCH, DebitBatcher

    rich, poor, other = (make_account(credits=c)[0] for c in (100, 5, 100))
    batcher = DebitBatcher(window_s=0.0002, max_batch=64)
    results, errors = {}, {}

    def debit(i, account_id):
        try:
            results[i] = batcher.debit(account_id, 1, action="echo", request_id=f"r{i}")
        except Exception as exc:  # noqa: BLE001 - the refusals are what is checked
            errors[i] = exc
        finally:
            dbmod.database.close()

    blocker = psycopg2.connect(pg_url)
    try:
        with blocker.cursor() as cur:  # holds the rich account's row: the first batch waits
            cur.execute('SELECT 1 FROM "account" WHERE id = %s FOR UPDATE', (rich,))
        first = threading.Thread(target=debit, args=(0, rich))
        first.start()
        _until(lambda: _lock_waiters(blocker) == 1)
        accounts = [rich, poor, other] * 13  # 39 more: the poor one can pay 5 of 13
        rest = [threading.Thread(target=debit, args=(i, a)) for i, a in enumerate(accounts, 1)]
        for t in rest:
            t.start()
        _until(lambda: batcher.waiting == len(rest))
    finally:
        blocker.rollback()  # the row lock goes; the two batches are written in turn
        blocker.close()
    for t in (first, *rest):
        t.join(timeout=30)
    assert batcher.largest == len(rest) > PREPARED_BATCH and batcher.batches == 2
    assert len(results) == 1 + 13 + 5 + 13 and len(errors) == 8
    assert {type(e).__name__ for e in errors.values()} == {"InsufficientCredits"}
    assert len({r.receipt for r in results.values()}) == len(results)
    for account_id, left in ((rich, 100 - 14), (poor, 0), (other, 100 - 13)):
        assert ledger_sum(account_id) == (left, left)


def _lock_waiters(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")
        return cur.fetchone()[0]


def _until(condition, timeout=20):
    """Wait for a state of other threads or sessions (not a timing: polls the state)."""
    pause = threading.Event()  # never set: wait(0.01) is a short pause between polls
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError("the state was not reached")


def test_without_redis_a_cached_key_is_not_trusted(config, schema, client, make_account,
                                                    own_redis):
    """Credits fail closed: while Redis is away a process cannot learn generations, so it
    reads every key from the database and a key revoked meanwhile is refused."""
    local = TestClient(make_app(replace(config, redis_url=own_redis.url)))
    account_id, key = make_account(credits=5)
    other = client.simulate_post("/api/key/generate", headers=bearer(key),
                                 json={"description": "zap"}).json["data"]
    for _ in range(3):  # read, then cached at the current generation, then served from it
        assert local.simulate_get(ME, headers=bearer(other["apiKey"])).status_code == 200

    own_redis.kill()
    # revoked through another process, whose announcement this one cannot hear
    assert client.simulate_delete(f"/admin/keys/{other['keyId']}",
                                  headers=ADMIN).status_code == 200
    resp = local.simulate_post(ECHO, json={"message": "x"}, headers=bearer(other["apiKey"]))
    assert resp.status_code == 401, resp.text
    assert resp.json["error"]["code"] == "AUTH_FAILED"
    assert local.simulate_get(ME, headers=bearer(key)).status_code == 200  # still served
    assert ledger_sum(account_id) == (5, 5)


def test_a_redis_that_lost_its_counters_does_not_revive_a_stale_cache(
        config, schema, client, make_account, own_redis):
    """Counters Redis lost (a restart) do not count again from 0: were they to, a process
    holding a key cached at count 1 would trust it again after the first bump."""
    local = TestClient(make_app(replace(config, redis_url=own_redis.url)))
    _, key = make_account(credits=5)
    other = client.simulate_post("/api/key/generate", headers=bearer(key),
                                 json={"description": "zap"}).json["data"]
    # one credential change announced on this Redis, then the key cached after it
    assert local.simulate_put(f"/admin/plans/hp{uuid.uuid4().hex[:8]}", headers=ADMIN,
                              json={"perMinute": 50, "perDay": 500}).status_code == 200
    for _ in range(3):
        assert local.simulate_get(ME, headers=bearer(other["apiKey"])).status_code == 200
    before = own_redis.client().hget(f"{config.redis_prefix}:gen", "keys")

    own_redis.kill()
    own_redis.start()  # empty: every counter lost
    # revoked (one bump) by another process on the restarted Redis
    elsewhere = TestClient(make_app(replace(config, redis_url=own_redis.url)))
    assert elsewhere.simulate_delete(f"/admin/keys/{other['keyId']}",
                                     headers=ADMIN).status_code == 200
    assert own_redis.client().hget(f"{config.redis_prefix}:gen", "keys") != before
    resp = local.simulate_get(ME, headers=bearer(other["apiKey"]))
    assert resp.status_code == 401, resp.text
    assert resp.json["error"]["code"] == "AUTH_FAILED"


# --- kept connections (metering.db.keep_request_connections) --------------------------

def _sessions(database_url, sql, app_name):
    """``sql`` over pg_stat_activity's sessions named ``app_name``, on a connection of its own."""
    conn = psycopg2.connect(database_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql + " FROM pg_stat_activity WHERE application_name = %s",
                        (app_name,))
            return [value for (value,) in cur.fetchall()]
    finally:
        conn.close()


def test_kept_connections_recover_when_postgresql_drops_them(config, schema, make_account):
    """Under gunicorn each request thread keeps its connection: at most one per thread is
    open, and when PostgreSQL drops them all (a restart, a failover) a thread answers at
    most one 503 SERVICE_UNAVAILABLE on its dead connection, then serves again."""
    from conftest import start_gunicorn

    app_name = "gw-kept-" + uuid.uuid4().hex[:8]  # libpq's PGAPPNAME names its sessions
    proc, url = start_gunicorn(config, workers=1, threads=2,
                               extra_env={"PGAPPNAME": app_name})
    try:
        _, key = make_account(credits=5)
        statuses = _fan_out(lambda _: requests.get(url + ME, headers=bearer(key),
                                                   timeout=30).status_code, 40, threads=4)
        assert statuses == [200] * 40
        kept = _sessions(config.database_url, "SELECT pid", app_name)
        assert 1 <= len(kept) <= 2  # two request threads: never more than two sessions

        assert all(_sessions(config.database_url, "SELECT pg_terminate_backend(pid)",
                             app_name))
        answers = [requests.get(url + ME, headers=bearer(key), timeout=30) for _ in range(12)]
        failed = [r for r in answers if r.status_code != 200]
        assert len(failed) <= 2, [r.status_code for r in answers]
        for resp in failed:
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert resp.headers["Retry-After"].isdigit()
        assert [r.status_code for r in answers[-6:]] == [200] * 6
        assert answers[-1].json()["data"]["balance"] == 5  # /me read the database again
        now = _sessions(config.database_url, "SELECT pid", app_name)
        assert 1 <= len(now) <= 2 and not set(now) & set(kept)  # new sessions, as many
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_connections_are_kept_only_where_the_pool_has_room(config, schema):
    """Kept connections are for a fixed set of request threads that leave the pool
    headroom; a process whose threads could hold the whole pool hands them back."""
    from metering import db

    try:
        assert db.keep_request_connections(8, 8 + db.POOL_HEADROOM) is True
        assert db.keep_request_connections(8, 8 + db.POOL_HEADROOM - 1) is False
    finally:
        db.keep_request_connections(1 << 30, 1)  # this test process keeps none
    assert db._KEEP is False


def test_routes_that_identify_the_caller_themselves_refuse_a_revoked_cached_key(
        config, schema, client, make_account):
    """``/api/account/data`` and ``/getFile`` authenticate in the resource, not through the
    gate: they must not trust another request's cached key either."""
    _, key = make_account(credits=10)
    other = TestClient(make_app(config))  # a second process, its cache warm with the key
    for _ in range(2):
        assert other.simulate_get("/zapier/v1/me", headers=bearer(key)).status_code == 200
        assert other.simulate_get("/api/account/data", headers=bearer(key)).status_code == 200
    key_id = client.simulate_get("/api/key/list", headers=bearer(key)).json["data"]["items"][0]
    revoked = client.simulate_delete(f"/api/key/{key_id['keyId']}/revoke", headers=bearer(key))
    assert revoked.status_code == 200, revoked.text

    for resp in (other.simulate_get("/api/account/data", headers=bearer(key)),
                 other.simulate_post("/api/account/data", headers=bearer(key), json={}),
                 other.simulate_get("/getFile", params={"id": "cnt_nope"}, headers=bearer(key))):
        assert resp.status_code == 401, resp.text
        assert resp.json["error"]["code"] == "AUTH_FAILED"
    assert other.simulate_get("/zapier/v1/me", headers=bearer(key)).status_code == 401
