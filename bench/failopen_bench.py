"""How long a request takes when Redis is up, stopped or hanging, and how quickly outbound
fetches give up: the timing that the tests deliberately do not assert.

Run from the repository root: ``.venv/bin/python bench/failopen_bench.py [--requests 50]``.
It creates its own PostgreSQL database and Redis key prefix and removes them afterwards;
the app runs in this process (``falcon.testing``), so the figures are the gateway's own
work plus the Redis and PostgreSQL round trips, without HTTP serving. Each row is measured
side by side in one run, with its ratio to the healthy-Redis row.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from falcon.testing import TestClient  # noqa: E402
from run import ADMIN_KEY, create_database, delete_prefix, drop_database  # noqa: E402

from core.config import Config  # noqa: E402
from gateway import schema  # noqa: E402
from gateway.app import create_app  # noqa: E402
from jobs.outbound import OutboundPolicy, OutboundRefused, fetch  # noqa: E402
from metering import db  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed(fn, n) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def _row(name, samples, base):
    p50 = statistics.median(samples)
    print(f"| {name} | {len(samples)} | {p50:.2f} | {max(samples):.2f} | {p50 / base:.2f} |")


def _app(config, redis_url, key_holder):
    app = create_app(config.replace(redis_url=redis_url))
    client = TestClient(app)
    if not key_holder:
        resp = client.simulate_post("/admin/accounts", json={"username": "b" + uuid.uuid4().hex[:8],
                                                             "credits": 0},
                                    headers={"X-Administration-Key": ADMIN_KEY})
        key_holder.append(resp.json["data"]["api_key"])
    return client


def bench_redis(config, n):
    key: list[str] = []
    me = "/zapier/v1/me"
    healthy = _app(config, "redis://127.0.0.1:6379/0", key)
    headers = {"Authorization": f"Bearer {key[0]}"}
    base = _timed(lambda: healthy.simulate_get(me, headers=headers), n)

    own = shutil.which("redis-server")
    port = _free_port()
    tmp = tempfile.mkdtemp()
    proc = subprocess.Popen([own, "--port", str(port), "--save", "", "--dir", tmp],
                            stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    stopped = _app(config, f"redis://127.0.0.1:{port}/0", key)
    stopped.simulate_get(me, headers=headers)
    proc.kill()
    proc.wait()
    down = _timed(lambda: stopped.simulate_get(me, headers=headers), n)

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()[0]) for _ in range(64)],
                     daemon=True).start()
    hanging = _app(config, f"redis://127.0.0.1:{listener.getsockname()[1]}/0", key)
    first = _timed(lambda: hanging.simulate_get(me, headers=headers), 1)
    later = _timed(lambda: hanging.simulate_get(me, headers=headers), n)

    b = statistics.median(base)
    print(f"rate limiter, RATE_LIMIT_REDIS_TIMEOUT_MS={config.ratelimit_timeout_ms}")
    print("| GET /zapier/v1/me | n | p50 ms | max ms | p50 / healthy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    _row("Redis healthy", base, b)
    _row("Redis stopped (connection refused)", down, b)
    _row("Redis hanging: first request (pays the timeout)", first, b)
    _row("Redis hanging: later requests (breaker open)", later, b)


def bench_outbound():
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(1.5)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    policy = OutboundPolicy("127.0.0.1")

    def slow_read():
        with contextlib.suppress(OutboundRefused):
            fetch(f"http://{host}/", policy=policy, timeout=(1, 0.2))

    samples = _timed(slow_read, 5)
    print("\noutbound fetch from a server that answers after 1500 ms, read timeout 200 ms")
    print(f"p50 {statistics.median(samples):.0f} ms, max {max(samples):.0f} ms "
          f"({statistics.median(samples) / 1500:.2f} of the server's delay)")
    server.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    name, url = create_database()
    prefix = "benchfo" + uuid.uuid4().hex[:8]
    try:
        config = Config.from_env({"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:6379/0",
                                  "REDIS_PREFIX": prefix, "ADMIN_KEY": ADMIN_KEY,
                                  "DATA_DIR": tempfile.mkdtemp()})
        db.bind(config.database_url)
        with db.connection():
            schema.upgrade()
        bench_redis(config, args.requests)
        bench_outbound()
    finally:
        if db.database.obj is not None and hasattr(db.database.obj, "close_all"):
            db.database.obj.close_all()
        drop_database(name)
        delete_prefix(prefix)


if __name__ == "__main__":
    main()
