"""Workers and the reaper when Redis fails (issue 10): a `gateway worker` subprocess keeps
serving (same process) across a restart of its Redis, idle or mid-job; the reaper puts
back a queued composition whose RQ job Redis lost, without charging again, and refunds
once the one that outlived its ttl; `gateway serve` brings a killed worker back."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import redis as redis_lib
import requests
from falcon.testing import TestClient
from rq import Queue, Worker
from rq.job import Job

from async_support import burst, poll, start_worker, stop_worker
from conftest import ROOT, bearer, free_port, ledger_sum, make_app
from metering import db as dbmod


def _roomy_account(client, make_account, credits):
    """An account on a plan that polling for a minute cannot exhaust."""
    from conftest import ADMIN

    resp = client.simulate_put("/admin/plans/roomy", headers=ADMIN,
                               json={"perMinute": 100000, "perDay": 1000000})
    assert resp.status_code == 200, resp.text
    return make_account(credits=credits, plan="roomy")


def _submit(client, key, **body):
    resp = client.simulate_post("/zapier/v1/echo-async", json={"message": "m", **body},
                                params={"wait": "0"}, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    return resp.json["data"]["composition"]["uid"]


def _row(uid):
    from jobs.models import Composition

    with dbmod.connection():
        return Composition.get_by_id(uid)


def _refunds(account_id):
    from metering.models import LedgerEntry

    with dbmod.connection():
        return list(LedgerEntry.select().where((LedgerEntry.account == account_id)
                                               & LedgerEntry.refund_of.is_null(False)))


def _wait_until(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _registered(redis, config, queue, pid):
    """The worker process ``pid`` is registered in RQ for ``queue``."""
    try:
        workers = Worker.all(queue=Queue(f"{config.redis_prefix}:{queue}", connection=redis))
    except redis_lib.ConnectionError:
        return False
    return any(w.pid == pid for w in workers)


def _ran_in(uid, proc):
    return _row(uid).worker.rsplit(":", 1)[1] == str(proc.pid)


# --- the worker keeps serving across a Redis restart ---------------------------------


def test_idle_worker_serves_again_after_redis_restarts(lconfig, schema, make_account,
                                                       own_redis):
    config = lconfig.replace(redis_url=own_redis.url)
    client = TestClient(make_app(config))
    account_id, key = _roomy_account(client, make_account, 5)
    proc = start_worker(config, queues="cpu,webhooks")
    try:
        _wait_until(lambda: _registered(own_redis.client(), config, "cpu", proc.pid),
                    what="the worker to register")
        own_redis.kill()  # the worker is blocked on its queues: its connection drops
        own_redis.start()  # the same port, every key lost
        uid = _submit(client, key)
        comp = poll(client, key, uid, timeout=60)
        assert comp["status"] == "completed", comp
        assert proc.poll() is None, "the worker exited"
        assert _ran_in(uid, proc)  # the same process, not a replacement
        # it is registered again, so readiness sees it
        _wait_until(lambda: _registered(own_redis.client(), config, "cpu", proc.pid),
                    what="the worker to register again")
        assert ledger_sum(account_id) == (4, 4)
        assert _refunds(account_id) == []
    finally:
        stop_worker(proc)


def test_worker_survives_redis_dying_while_a_job_finishes(lconfig, schema, make_account,
                                                          own_redis):
    config = lconfig.replace(redis_url=own_redis.url)
    client = TestClient(make_app(config))
    account_id, key = _roomy_account(client, make_account, 5)
    proc = start_worker(config, queues="cpu,webhooks")
    try:
        first = _submit(client, key, delay_ms=2500)
        poll(client, key, first, until=("running",), timeout=30)
        own_redis.kill()
        # the job finishes while Redis is down: its outcome is in the database, and RQ's
        # own bookkeeping for it fails
        comp = poll(client, key, first, timeout=30)
        assert comp["status"] == "completed", comp
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)  # the worker stays up while Redis is away
        own_redis.start()
        second = _submit(client, key)
        comp = poll(client, key, second, timeout=90)
        assert comp["status"] == "completed", comp
        assert proc.poll() is None, "the worker exited"
        assert _ran_in(first, proc) and _ran_in(second, proc)
        _wait_until(lambda: _registered(own_redis.client(), config, "cpu", proc.pid),
                    what="the worker to register again")
        assert ledger_sum(account_id) == (3, 3)  # one debit each, nothing refunded
        assert _refunds(account_id) == []
    finally:
        stop_worker(proc)


# --- the reaper re-enqueues what Redis lost ------------------------------------------


def _reap(config, now):
    from gateway.services import install_worker_runtime
    from jobs import engine

    install_worker_runtime(config)
    return engine.reap(now=now)


def test_reaper_requeues_a_queued_composition_whose_job_was_lost(lclient, lconfig,
                                                                 make_account):
    from jobs.engine import REQUEUE_GRACE_S

    redis = redis_lib.Redis.from_url(lconfig.redis_url)
    queue = Queue(f"{lconfig.redis_prefix}:cpu", connection=redis)
    account_id, key = make_account(credits=5)
    lost, unlisted = _submit(lclient, key), _submit(lclient, key)
    Job.fetch(lost, connection=redis).delete()  # Redis lost the job and its queue entry
    queue.remove(unlisted)  # the job is there, its queue entry is not
    assert queue.get_job_ids() == []
    created = max(_row(lost).created_at, _row(unlisted).created_at)

    # just committed (not enqueued yet, as far as the reaper can tell): left alone
    assert _reap(lconfig, created + dt.timedelta(seconds=1)) == 0
    assert not Job.exists(lost, connection=redis)

    later = created + dt.timedelta(seconds=REQUEUE_GRACE_S + 1)
    assert _reap(lconfig, later) == 2
    assert sorted(queue.get_job_ids()) == sorted([lost, unlisted])
    assert _reap(lconfig, later) == 0  # on its queue now: not enqueued twice
    assert len(queue.get_job_ids()) == 2

    burst(lconfig)
    for uid in (lost, unlisted):
        comp = poll(lclient, key, uid)
        assert comp["status"] == "completed", comp
        assert comp["refundReceipt"] is None
    assert ledger_sum(account_id) == (3, 3)  # charged once each, when it was submitted
    assert _refunds(account_id) == []


def test_reaper_refunds_once_a_lost_composition_past_its_ttl(lclient, lconfig, make_account):
    redis = redis_lib.Redis.from_url(lconfig.redis_url)
    account_id, key = make_account(credits=5)
    uid = _submit(lclient, key)
    Job.fetch(uid, connection=redis).delete()
    past = _row(uid).deadline_at + dt.timedelta(seconds=1)
    assert _reap(lconfig, past) == 1
    assert _reap(lconfig, past) == 0
    assert not Job.exists(uid, connection=redis)  # failed, not put back
    comp = poll(lclient, key, uid)
    assert comp["status"] == "failed" and comp["error"]["code"] == "EXPIRED"
    refunds = _refunds(account_id)
    assert len(refunds) == 1 and refunds[0].refund_of == comp["txnReceipt"]
    assert ledger_sum(account_id) == (5, 5)


# --- gateway serve brings a dead worker back -----------------------------------------


@pytest.mark.slow
def test_serve_restarts_a_killed_worker(config, schema, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MODELS_FILE"}
    env.update(DATABASE_URL=config.database_url, REDIS_URL=config.redis_url,
               REDIS_PREFIX=config.redis_prefix, ADMIN_KEY=config.admin_key,
               DATA_DIR=str(tmp_path), GATEWAY_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="1",
               PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--with-worker"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    redis = redis_lib.Redis.from_url(config.redis_url)
    queue = Queue(f"{config.redis_prefix}:cpu", connection=redis)
    try:
        def workers():
            return {w.pid for w in Worker.all(queue=queue)}

        (first,) = _wait_until(workers, timeout=60, what="the worker to register")
        os.kill(first, signal.SIGKILL)
        _wait_until(lambda: workers() - {first}, timeout=60, what="a new worker")
        url = f"http://127.0.0.1:{port}"
        assert requests.get(url + "/health", timeout=5).text == "OK"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert re.search(r"worker exited \(-9\); restarting", out), out
