"""Where a request's CPU goes, per path: the gateway's WSGI app called in-process.

Run from the repository root: ``.venv/bin/python bench/profile_paths.py [--requests 2000]
[--profile free|paid|me|bare] [--top 25] [--cpu] [--callers REGEX]``. Without
``--profile`` it prints, for each path, the wall and CPU microseconds per request of the
app alone (no HTTP server, no network stack), the SQL statements and Redis commands one
request sends, and the CPU that PostgreSQL and Redis spent per request (read from
``/proc`` for their processes on this machine). With ``--profile PATH`` it also runs
cProfile over that path and prints the top functions by cumulative and by own time
(``--cpu``: on the thread's CPU clock, so time spent waiting on PostgreSQL or Redis is left
out; ``--callers``: who calls the functions matching REGEX). See bench/README.md
("Profile per path").

Like bench/run.py it creates its own database and Redis prefix and removes them after.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    ADMIN_KEY,
    CREDITS,
    PLAN,
    REDIS_URL,
    create_database,
    delete_prefix,
    drop_database,  # noqa: E402
)

PATHS = {
    "bare": ("POST", "/bare", b'{"action":"echo"}'),
    "me": ("GET", "/zapier/v1/me", b""),
    "free": ("POST", "/zapier/v1/estimate-cost", b'{"action":"echo"}'),
    "paid": ("POST", "/zapier/v1/echo", b'{"message":"hi"}'),
}


def environ(method, path, body, key):
    env = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
        "wsgi.run_once": False, "wsgi.version": (1, 0),
    }
    if body:
        env["CONTENT_TYPE"] = "application/json"
        env["CONTENT_LENGTH"] = str(len(body))
    if key:
        env["HTTP_AUTHORIZATION"] = "Bearer " + key
    return env


def call(app, method, path, body, key):
    status = []
    out = b"".join(app(environ(method, path, body, key), lambda s, h, e=None: status.append(s)))
    return status[0], out


def proc_cpu(names) -> float:
    """CPU seconds (user + system) of every process whose command name is in ``names``."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            if any(name.startswith(n) for n in names):
                fields = stat[stat.rindex(")") + 2:].split()
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Counter:
    """Counts SQL statements (psycopg2 cursor executes) and Redis commands."""

    def __init__(self):
        self.sql = 0
        self.redis = 0

    def install(self):
        import psycopg2.extensions
        import redis.connection

        counter = self
        original_send = redis.connection.Connection.send_packed_command

        def send_packed_command(conn, command, check_health=True):
            counter.redis += 1
            return original_send(conn, command, check_health)

        redis.connection.Connection.send_packed_command = send_packed_command

        class CountingCursor(psycopg2.extensions.cursor):
            def execute(self, query, vars=None):  # noqa: A002
                counter.sql += 1
                return super().execute(query, vars)

        original_connect = psycopg2.connect

        def connect(*args, **kwargs):
            kwargs.setdefault("cursor_factory", CountingCursor)
            return original_connect(*args, **kwargs)

        psycopg2.connect = connect


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--profile", choices=sorted(PATHS))
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--cpu", action="store_true",
                   help="profile with the thread's CPU clock (time waiting on PostgreSQL or "
                        "Redis is left out) instead of the wall clock")
    p.add_argument("--callers", metavar="REGEX",
                   help="with --profile: also print who calls the functions matching REGEX")
    p.add_argument("--count", action="store_true",
                   help="count SQL statements and Redis commands per request (slower)")
    args = p.parse_args(argv)

    counter = Counter()
    if args.count:
        counter.install()
    prefix = "prof" + uuid.uuid4().hex[:10]
    tmpdir = tempfile.mkdtemp(prefix="gwprof_")
    db_name = None
    try:
        db_name, pg_url = create_database()
        env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
               "ADMIN_KEY": ADMIN_KEY, "DATA_DIR": str(Path(tmpdir) / "data"),
               "LOG_LEVEL": "WARNING"}
        from core.config import Config
        from gateway import schema
        from gateway.app import create_app
        from metering import db as dbmod

        config = Config.from_env(env)
        dbmod.bind(config.database_url, config.db_pool_size)
        with dbmod.connection():
            schema.upgrade()
        app = create_app(config)
        # as under gunicorn (gateway/gunicorn_conf.py): this one thread keeps its connection
        dbmod.keep_request_connections(1, config.db_pool_size)
        import bare_app

        apps = {"bare": bare_app.app}

        def admin(method, path, body):
            env_ = environ(method, path, json.dumps(body).encode(), None)
            env_["HTTP_X_ADMINISTRATION_KEY"] = ADMIN_KEY
            status = []
            out = b"".join(app(env_, lambda s, h, e=None: status.append(s)))
            if not status[0].startswith("20"):
                raise RuntimeError(f"{path}: {status[0]} {out[:300]!r}")
            return json.loads(out)["data"]

        admin("PUT", "/admin/plans/bench", PLAN)
        key = admin("POST", "/admin/accounts", {"username": "prof" + uuid.uuid4().hex[:8],
                                                "credits": CREDITS, "plan": "bench"})["api_key"]
        print(f"{'path':<6} {'wall us':>9} {'cpu us':>9} {'pg cpu us':>10} {'redis cpu us':>13}"
              f" {'sql/req':>8} {'redis/req':>10}")
        for name, (method, path, body) in PATHS.items():
            target = apps.get(name, app)
            for _ in range(200):  # warm caches, pools and the JIT-less interpreter's dicts
                status, out = call(target, method, path, body, key)
            if not status.startswith("200"):
                raise RuntimeError(f"{name}: {status} {out[:300]!r}")
            n = args.requests
            counter.sql = counter.redis = 0
            pg0, rd0 = proc_cpu(("postgres",)), proc_cpu(("redis-server",))
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(n):
                call(target, method, path, body, key)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            pg, rd = proc_cpu(("postgres",)) - pg0, proc_cpu(("redis-server",)) - rd0
            print(f"{name:<6} {wall / n * 1e6:>9.0f} {cpu / n * 1e6:>9.0f} {pg / n * 1e6:>10.0f}"
                  f" {rd / n * 1e6:>13.0f} {counter.sql / n:>8.2f} {counter.redis / n:>10.2f}",
                  flush=True)
        if args.profile:
            method, path, body = PATHS[args.profile]
            target = apps.get(args.profile, app)
            prof = cProfile.Profile(time.thread_time) if args.cpu else cProfile.Profile()
            prof.enable()
            for _ in range(args.requests):
                call(target, method, path, body, key)
            prof.disable()
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(args.top)
            print(s.getvalue())
            s = io.StringIO()
            pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(args.top)
            print(s.getvalue())
            if args.callers:
                s = io.StringIO()
                pstats.Stats(prof, stream=s).print_callers(args.callers)
                print(s.getvalue())
        if hasattr(dbmod.database.obj, "close_all"):
            dbmod.database.obj.close_all()
    finally:
        if db_name:
            with contextlib.suppress(Exception):
                drop_database(db_name)
        with contextlib.suppress(Exception):
            delete_prefix(prefix)
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
