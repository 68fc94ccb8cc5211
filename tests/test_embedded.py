"""``make run``'s path: ``gateway serve`` on embedded defaults (SQLite + embedded Redis)."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import ROOT, free_port
from jobs.connection import stop_embedded_redis


def _serve(tmp_path, env, port, stop_at):
    """Start ``gateway serve`` and read its banner up to a line containing ``stop_at``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--bind", f"127.0.0.1:{port}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if any(marker in line for marker in stop_at):
            break
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if requests.get(url + "/health", timeout=3).status_code == 200:
                break
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
    return proc, url, "".join(lines)


def _redis_pid(tmp_path) -> int:
    return int((tmp_path / "redis" / "redis.pid").read_text().strip())


def _alive(pid) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_serve(proc, sig, tmp_path):
    """Signal ``gateway serve`` alone (not its process group, as a supervisor or Ctrl-C in
    a terminal would reach it) and check that it took gunicorn, the worker and its
    embedded Redis (a daemon outside the group) down with it."""
    redis_pid = _redis_pid(tmp_path)
    assert _alive(redis_pid)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 0
    # The Redis daemon is not serve's child: wait for it to finish its shutdown save.
    for _ in range(200):
        if not _alive(redis_pid):
            break
        time.sleep(0.05)
    assert not _alive(redis_pid), "the embedded redis-server outlived gateway serve"
    assert not (tmp_path / "redis" / "redis.sock").exists()
    # gunicorn and the worker are gone too. A grandchild (a worker's scheduler or work
    # horse, a gunicorn worker) may still be on its way out, or a zombie until init reaps
    # it once its parent is gone: wait for the group to empty rather than sample it once.
    for _ in range(400):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


def _embedded_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "ADMIN_KEY", "REDIS_PREFIX", "MODELS_FILE")}
    env.update(DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT), LOG_LEVEL="WARNING")
    return env


def test_serve_on_embedded_defaults(tmp_path):
    port = free_port()
    proc, url, out = _serve(tmp_path, _embedded_env(tmp_path), port, ("stop with Ctrl-C",))
    try:
        key = re.search(r"API key: (gwk_\S+)", out).group(1)
        admin = re.search(r"admin key \(from .*\): (\S+)", out).group(1)
        password = re.search(r"demo password \(.*\): (\S+)", out).group(1)
        assert f"listening on {url}" in out
        # The curl lines are ready to paste: they carry the key printed above them.
        assert f"curl -H 'Authorization: Bearer {key}' {url}/zapier/v1/me" in out
        assert out.count(f"Bearer {key}") == 2 and "<API key>" not in out
        token = requests.post(url + "/auth/token",
                              json={"username": "demo", "password": password})
        assert token.status_code == 200, token.text
        assert token.json()["data"]["token_type"] == "bearer"

        me = requests.get(url + "/zapier/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["data"]["balance"] == 1000
        paid = requests.post(url + "/zapier/v1/echo", json={"message": "hello"},
                             headers={"Authorization": f"Bearer {key}"})
        assert paid.status_code == 200, paid.text
        assert paid.json()["meta"]["availableCredit"] == 999
        assert int(paid.headers["X-RateLimit-Remaining"]) == 58  # limits live in embedded Redis
        ready = requests.get(url + "/health/ready").json()["data"]["checks"]
        assert ready["database"]["ok"] and ready["redis"]["ok"]
        assert ready["workers"]["count"] == 1  # make run starts one worker
        grant = requests.post(url + f"/admin/accounts/{me.json()['data']['id']}/credits",
                              json={"amount": 5}, headers={"X-Administration-Key": admin})
        assert grant.status_code == 201 and grant.json()["data"]["balanceAfter"] == 1004
        assert (tmp_path / "gateway.sqlite3").exists()
        assert (tmp_path / "redis" / "redis.sock").exists()
        _stop_serve(proc, signal.SIGTERM, tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        stop_embedded_redis(tmp_path)


def test_generation_on_embedded_defaults(tmp_path):
    """The README's laptop path: make-tiny, serve, generate-image on SQLite + embedded Redis."""
    import io

    from PIL import Image

    env = _embedded_env(tmp_path)
    made = subprocess.run([sys.executable, "-m", "gateway.cli", "models", "make-tiny",
                           str(tmp_path / "models" / "tiny")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    proc, url, out = _serve(tmp_path, env, free_port(), ("stop with Ctrl-C",))
    try:
        assert "generation models: tiny" in out, out
        key = re.search(r"API key: (gwk_\S+)", out).group(1)
        auth = {"Authorization": f"Bearer {key}"}
        resp = requests.post(url + "/zapier/v1/generate-image?wait=60", headers=auth,
                             json={"prompt": "a lighthouse", "width": 64, "height": 96,
                                   "seed": 7}, timeout=90)
        assert resp.status_code == 200, resp.text
        comp = resp.json()["data"]["composition"]
        assert comp["status"] == "completed", comp["error"]
        png = requests.get(comp["outputs"][0]["url"], timeout=10)
        assert png.headers["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(png.content)).size == (64, 96)
        assert resp.json()["meta"]["availableCredit"] == 999
        assert f"-H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d " \
               "'{\"prompt\":\"a lighthouse\"}'" in out
        _stop_serve(proc, signal.SIGINT, tmp_path)  # Ctrl-C
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        stop_embedded_redis(tmp_path)


def test_serve_on_a_real_database_makes_up_no_admin_key_or_account(tmp_path, pg_url, schema,
                                                                   redis_prefix):
    """The trial bootstrap is for the embedded SQLite file only: against PostgreSQL with
    ADMIN_KEY unset the admin routes answer 403 (CONTRACT 10) and no demo account appears."""
    from conftest import REDIS_BASE
    from metering import db as dbmod
    from metering.models import Account

    env = {**_embedded_env(tmp_path), "DATABASE_URL": pg_url, "REDIS_URL": REDIS_BASE,
           "REDIS_PREFIX": redis_prefix + "serve"}
    proc = None
    try:
        proc, url, out = _serve(tmp_path, env, free_port(), ("stop with Ctrl-C",))
        assert "ADMIN_KEY is unset" in out and "admin key (from" not in out, out
        assert "demo account" not in out and "API key: gwk_" not in out
        assert not (tmp_path / "admin_key").exists()
        refused = requests.post(url + "/admin/accounts", json={"username": "x"},
                                headers={"X-Administration-Key": "anything"}, timeout=10)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "FORBIDDEN"
        with dbmod.connection():
            assert not Account.select().where(Account.username == "demo").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
