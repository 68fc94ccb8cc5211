"""Throughput and latency of the gateway against a bare Falcon app, on this machine.

Run from the repository root: ``make bench`` or ``.venv/bin/python bench/run.py [--duration
10] [--concurrency 16]``. See bench/README.md for what each figure means.

The script creates its own PostgreSQL database (``bench_<random>``) and Redis key prefix,
starts two gunicorns side by side (the bare app of bench/bare_app.py and the gateway's
``wsgi:app``, same worker class and worker/thread counts), creates accounts on a plan whose
limits never refuse, drives each scenario for a fixed duration with ``wrk`` (or, when wrk is
missing, a multi-process Python generator on keep-alive connections), prints a table, checks
the ledger invariant, and removes everything it created, also on error or Ctrl-C.
Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import redis as redis_lib  # noqa: E402

LOOPBACK = "127.0.0.1"
PG_USER = "postgres"
REDIS_URL = f"redis://{LOOPBACK}:6379/0"
ADMIN_KEY = "bench-admin-" + uuid.uuid4().hex
PLAN = {"perMinute": 10_000_000, "perDay": 100_000_000}
CREDITS = 50_000_000
MAX_RUN_S = 300  # hard cap for any single load run, whatever --duration says

ESTIMATE_BODY = json.dumps({"action": "echo"})
ECHO_BODY = json.dumps({"message": "hi"})


# --------------------------------------------------------------------------- services

def _pg_admin():
    conn = psycopg2.connect(host=LOOPBACK, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    return conn


def create_database() -> tuple[str, str]:
    name = "bench_" + uuid.uuid4().hex[:12]
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name, f"postgresql://{PG_USER}@{LOOPBACK}:5432/{name}"


def drop_database(name: str) -> None:
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def delete_prefix(prefix: str) -> int:
    client = redis_lib.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    keys += list(client.scan_iter(f"rq:*{prefix}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])
    return len(keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def http_call(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, raw
    finally:
        conn.close()


def start_gunicorn(app_path, *, env_extra, workers, threads, pythonpath, log_dir, name,
                   cwd=ROOT):
    port = free_port()
    env = dict(os.environ)
    env.update({
        "GATEWAY_BIND": f"{LOOPBACK}:{port}", "WEB_CONCURRENCY": str(workers),
        "GATEWAY_THREADS": str(threads), "LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join(pythonpath),
    })
    env.pop("GATEWAY_ACCESS_LOG", None)
    env.update(env_extra)
    log = open(Path(log_dir) / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf", app_path],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.bench_log = log
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if http_call(port, "GET", "/health", timeout=1)[0] == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    tail = (Path(log_dir) / f"{name}.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"gunicorn ({name}) did not start:\n{tail}")


def stop_server(proc) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(Exception):
        proc.bench_log.close()


# --------------------------------------------------------------------------- setup

def admin(port, method, path, body):
    status, raw = http_call(port, method, path, body, {"X-Administration-Key": ADMIN_KEY})
    if status not in (200, 201):
        raise RuntimeError(f"{method} {path} -> {status}: {raw[:500]!r}")
    return json.loads(raw)["data"]


def make_account(port, tag):
    data = admin(port, "POST", "/admin/accounts",
                 {"username": f"bench{tag}{uuid.uuid4().hex[:8]}", "credits": CREDITS,
                  "plan": "bench"})
    return data["id"], data["api_key"]


def check_once(port, path, body, key, expect_debit):
    method = "POST" if body else "GET"
    status, raw = http_call(port, method, path, json.loads(body) if body else None,
                            {"Authorization": f"Bearer {key}"} if key else None)
    if status != 200:
        raise RuntimeError(f"{method} {path} -> {status}: {raw[:500]!r}")
    if expect_debit:
        meta = json.loads(raw)["meta"]
        if meta.get("creditsUsed") != 1 or not str(meta.get("txnReceipt", "")).startswith("txn_"):
            raise RuntimeError(f"echo did not debit 1 credit: {meta}")


# --------------------------------------------------------------------------- load: wrk

WRK_LUA = r"""
local keys = {%(keys)s}
local path = %(path)s
local body = %(body)s
local counter = 0
local reqs = {}
local tid = 0

function setup(thread)
  tid = tid + 1
  thread:set("offset", tid)
end

function init(args)
  counter = offset or 0
  for i, key in ipairs(keys) do
    local headers = {}
    if body ~= "" then headers["Content-Type"] = "application/json" end
    if key ~= "" then headers["Authorization"] = "Bearer " .. key end
    if body ~= "" then
      reqs[i] = wrk.format("POST", path, headers, body)
    else
      reqs[i] = wrk.format("GET", path, headers)
    end
  end
end

function request()
  counter = counter + 1
  return reqs[(counter %% #reqs) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%%d,"duration_us":%%d,"errors":%%d,"status_errors":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


def _lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(port, path, body, keys, *, duration, concurrency, threads, tmpdir):
    script = Path(tmpdir) / f"load_{uuid.uuid4().hex[:6]}.lua"
    script.write_text(WRK_LUA % {"keys": ", ".join(_lua_str(k) for k in keys),
                                 "path": _lua_str(path), "body": _lua_str(body)})
    threads = max(1, min(threads, concurrency))
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(duration))}s",
           "--timeout", "10s", "-s", str(script), f"http://{LOOPBACK}:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                         check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed (rc {out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(line[len("BENCHJSON "):])
    seconds = r["duration_us"] / 1e6
    return {"requests": r["requests"], "seconds": seconds,
            "rps": r["requests"] / seconds if seconds else 0.0,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "errors": r["errors"] + r["status_errors"],
            "ok": r["requests"] - r["status_errors"]}


# --------------------------------------------------------------------------- CPU per request

def proc_cpu(match) -> float:
    """CPU seconds (user + system) of the processes ``match(pid, name, pgrp)`` selects."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            if match(int(pid), name, int(fields[2])):
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_snapshot(server_pgrp) -> dict:
    """CPU seconds so far of the server under test (its gunicorn process group), PostgreSQL
    and Redis; the difference over a run, per request, is what each path costs each."""
    return {"server": proc_cpu(lambda pid, name, pgrp: pgrp == server_pgrp),
            "postgres": proc_cpu(lambda pid, name, pgrp: name.startswith("postgres")),
            "redis": proc_cpu(lambda pid, name, pgrp: name.startswith("redis-server"))}


# --------------------------------------------------------------------------- open loop

def _open_loop_worker(args):
    port, method, path, body, key, start_at, rate, count, offset, stride = args
    headers = {"Content-Type": "application/json"} if body else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    payload = body.encode() if body else None
    latencies, errors, conn = [], 0, None
    for k in range(offset, count, stride):
        due = start_at + k / rate
        time.sleep(max(0.0, due - time.time()))
        if conn is None:
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status >= 400:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = None
        # from when the request was due, not when it was sent: a late send is latency too
        latencies.append(time.time() - due)
    if conn is not None:
        conn.close()
    return latencies, errors


def run_open_loop(port, method, path, body, key, *, rate, duration, senders=8):
    """A fixed arrival rate (open loop), each latency measured from its scheduled time, so
    a slow answer delays nothing and hides nothing (no coordinated omission)."""
    count = int(rate * duration)
    start_at = time.time() + 0.5
    jobs = [(port, method, path, body, key, start_at, rate, count, i, senders)
            for i in range(senders)]
    # Threads, not processes: 100 requests a second is light work for one process, and the
    # senders only wait on the network and their schedule.
    with concurrent.futures.ThreadPoolExecutor(senders) as pool:
        results = list(pool.map(_open_loop_worker, jobs, timeout=duration + 60))
    lat = sorted(x for lats, _ in results for x in lats)

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else 0.0

    return {"requests": len(lat), "p50_ms": pct(50), "p99_ms": pct(99),
            "errors": sum(e for _, e in results)}


# --------------------------------------------------------------------------- load: Python

def _py_worker(args):
    port, path, body, key, start_at, stop_at = args
    method = "POST" if body else "GET"
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))} \
        if body else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    payload = body.encode() if body else None
    latencies, errors, conn = [], 0, None
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < stop_at:
        if conn is None:
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            resp.read()
            latencies.append(time.perf_counter() - t0)
            if resp.status >= 400:
                errors += 1
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return latencies, errors


def run_python(port, path, body, keys, *, duration, concurrency, **_):
    start_at = time.time() + 0.5
    stop_at = start_at + duration
    jobs = [(port, path, body, keys[i % len(keys)], start_at, stop_at)
            for i in range(concurrency)]
    with multiprocessing.get_context("fork").Pool(concurrency) as pool:
        results = pool.map_async(_py_worker, jobs).get(timeout=duration + 60)
    lat = sorted(x for lats, _ in results for x in lats)
    errors = sum(e for _, e in results)

    def pct(p):
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000 if lat else 0.0

    return {"requests": len(lat), "seconds": duration, "rps": len(lat) / duration,
            "p50_ms": pct(50), "p99_ms": pct(99), "errors": errors, "ok": len(lat) - errors}


# --------------------------------------------------------------------------- report

def machine_info(pg_url):
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    conn = psycopg2.connect(pg_url)
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        pg = cur.fetchone()[0]
    conn.close()
    rinfo = redis_lib.Redis.from_url(REDIS_URL).info("server")
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "postgresql": pg, "redis": rinfo.get("redis_version"),
            "kernel": platform.release()}


def ledger_check(pg_url, account_id):
    from psycopg2 import sql

    from metering.models import Account, LedgerEntry

    names = {"acc": sql.Identifier(Account._meta.table_name),
             "led": sql.Identifier(LedgerEntry._meta.table_name)}
    conn = psycopg2.connect(pg_url)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT balance FROM {acc} WHERE id = %s").format(**names),
                    (account_id,))
        balance = cur.fetchone()[0]
        cur.execute(sql.SQL("SELECT COALESCE(SUM(amount), 0), COUNT(*) FILTER "
                            "(WHERE kind = 'debit') FROM {led} WHERE account_id = %s"
                            ).format(**names), (account_id,))
        total, debits = cur.fetchone()
        cur.execute(sql.SQL("SELECT COUNT(*) FROM {acc} a WHERE a.balance <> (SELECT "
                            "COALESCE(SUM(amount), 0) FROM {led} l WHERE l.account_id = a.id)"
                            ).format(**names))
        mismatched = cur.fetchone()[0]
    conn.close()
    return {"balance": int(balance), "ledger_sum": int(total), "debit_rows": int(debits),
            "accounts_mismatched": int(mismatched)}


def ratio(a, b):
    return a / b if b else float("nan")


def combine(runs: list[dict]) -> dict:
    """One scenario's rounds as one result: medians of the rates, latencies, CPU and
    ratios (``rps_a`` each taken in its own round), sums of the counts, and every round's
    ratio in ``rounds_rps_a``."""
    med = statistics.median
    out = {"rps": med(r["rps"] for r in runs), "p50_ms": med(r["p50_ms"] for r in runs),
           "p99_ms": med(r["p99_ms"] for r in runs), "rps_a": med(r["rps_a"] for r in runs),
           "rounds_rps_a": [r["rps_a"] for r in runs],
           "cpu_us": {k: med(r["cpu_us"][k] for r in runs) for k in runs[0]["cpu_us"]}}
    if "rps_floor" in runs[0]:
        out["rps_floor"] = med(r["rps_floor"] for r in runs)
    for count in ("requests", "errors", "ok", "debit_rows"):
        if count in runs[0]:
            out[count] = sum(r[count] for r in runs)
    return out


def print_table(results, info, args, generator, check, loads):
    names = [("a", "bare Falcon route"), ("floor", "floor: bare + 1 Redis script + 1 read"),
             ("pfloor", "paid floor: bare + 1 script + 1 debit"),
             ("me", "GET /zapier/v1/me (auth test)"),
             ("b", "estimate-cost (auth+rate limit, free)"),
             ("c", "echo (auth+rate limit+debit+receipt)"),
             ("hot", "echo, ONE hot account"), ("many", f"echo, {args.accounts} accounts")]
    a = results["a"]
    print()
    print(f"== results: median of {args.rounds} round(s) of {args.duration:g}s per run "
          f"(ratios to the bare run of the same round), concurrency {args.concurrency}, "
          f"gunicorn gthread {args.workers} workers x {args.threads} threads, "
          f"load generator {generator}")
    print(f"{'run':<5} {'scenario':<40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7} {'rps/a':>6} {'p50/a':>6} {'p99/a':>6} "
          f"{'cpu us/req: server':>19} {'pg':>5} {'redis':>5}")
    for key, label in names:
        r = results.get(key)
        if r is None:
            continue
        cpu = r.get("cpu_us", {})
        print(f"{key:<5} {label:<40} {r['rps']:>9.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['errors']:>7d} {r['rps_a']:>6.3f} "
              f"{ratio(r['p50_ms'], a['p50_ms']):>6.1f} {ratio(r['p99_ms'], a['p99_ms']):>6.1f} "
              f"{cpu.get('server', 0):>19.0f} {cpu.get('postgres', 0):>5.0f} "
              f"{cpu.get('redis', 0):>5.0f}")
    if args.rounds > 1:
        print("rps/a per round: " + "; ".join(
            f"{k} " + " ".join(f"{x:.3f}" for x in results[k]["rounds_rps_a"])
            for k, _ in names[1:] if k in results))
    floor = results["floor"]
    print(f"the floor (no gateway code, the same two round trips) reaches rps/a "
          f"{floor['rps_a']:.3f}: no implementation making them can go higher here")
    pfloor = results["pfloor"]
    print(f"the paid floor (the same script, then one statement that debits and writes the "
          f"ledger row, committed per request) reaches rps/a {pfloor['rps_a']:.3f}")
    print("rps/floor (each path against the floor of its own round: me and b the floor, "
          "c, hot and many the paid floor): " + ", ".join(
              f"{k} {results[k]['rps_floor']:.3f}" for k, _ in names[3:] if k in results))
    goals = [("me", 0.50), ("b", 0.45), ("c", 0.30)]
    print("goals (rps/a): " + ", ".join(
        f"{k} {results[k]['rps_a']:.3f} >= {g} "
        f"{'met' if results[k]['rps_a'] >= g else 'NOT met'}"
        for k, g in goals if k in results))
    open_loop = results.get("open_loop")
    if open_loop:
        base = open_loop["a"]["p99_ms"]
        print(f"open loop at {args.open_rate:g} req/s for {args.open_duration:g}s "
              "(latency from each request's scheduled time):")
        for key, r in open_loop.items():
            added = r["p99_ms"] - base
            verdict = "" if key == "a" else \
                f" (goal <= 5 ms: {'met' if added <= 5 else 'NOT met'})"
            print(f"  {key:<5} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                  f"errors {r['errors']}  p99 added over bare {added:6.2f} ms{verdict}")
    hot, many = results["hot"], results["many"]
    print(f"debits/s: one hot account {hot['rps']:.1f} (goal >= 1000: "
          f"{'met' if hot['rps'] >= 1000 else 'NOT met'})  vs  {args.accounts} accounts "
          f"{many['rps']:.1f}  (many/hot = {ratio(many['rps'], hot['rps']):.3f})")
    verdict = "OK" if check["balance"] == check["ledger_sum"] and not check[
        "accounts_mismatched"] else "VIOLATED"
    print(f"ledger invariant (hot account): balance {check['balance']} == sum of ledger rows "
          f"{check['ledger_sum']} -> {verdict}; accounts with balance != ledger sum: "
          f"{check['accounts_mismatched']}")
    print(f"hot runs: {hot['debit_rows']} debit rows written for {hot['ok']} answered 200 "
          f"(up to {args.concurrency} more per round expected: requests in flight at the "
          "stop)")
    print(f"machine: nproc {info['nproc']}, CPU {info['cpu']}, Python {info['python']}, "
          f"PostgreSQL {info['postgresql']}, Redis {info['redis']}, kernel {info['kernel']}")
    print(f"load average before {loads[0]}, after {loads[1]} (other work on the machine "
          f"depresses every figure)")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5, help="seconds per run (default 5)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of every scenario; medians are reported (default 3)")
    p.add_argument("--warmup", type=float, default=2, help="seconds of warm-up per scenario")
    p.add_argument("--concurrency", type=int, default=16, help="open connections (16)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers for both apps")
    p.add_argument("--threads", type=int, default=8, help="gunicorn threads per worker")
    p.add_argument("--accounts", type=int, default=32, help="accounts in the 'many' run")
    p.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                   help="load generator: wrk when installed (auto), or the Python one")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--open-rate", type=float, default=100,
                   help="open-loop arrival rate, requests/s (100; 0 skips the open-loop runs)")
    p.add_argument("--open-duration", type=float, default=10,
                   help="seconds per open-loop run (10)")
    args = p.parse_args(argv)
    if not 0 < args.duration <= MAX_RUN_S or not 0 <= args.warmup <= 30:
        p.error(f"--duration must be in (0, {MAX_RUN_S}] and --warmup in [0, 30]")
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be 1..20")
    if not 1 <= args.concurrency <= 256:
        p.error("--concurrency must be 1..256")
    return args


def _on_sigterm(signum, frame):
    raise SystemExit(143)


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "python"
    if generator == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), use --generator python")
    load = run_wrk if generator == "wrk" else run_python

    prefix = "bench" + uuid.uuid4().hex[:10]
    tmpdir = tempfile.mkdtemp(prefix="gwbench_")
    db_name = None
    servers = []
    loads = [os.getloadavg()]
    try:
        db_name, pg_url = create_database()
        print(f"database {db_name}, redis prefix {prefix}, logs in {tmpdir}")
        env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
               "ADMIN_KEY": ADMIN_KEY, "DATA_DIR": str(Path(tmpdir) / "data")}
        up = subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"],
                            cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"gateway db upgrade failed:\n{up.stdout}\n{up.stderr}")
        info = machine_info(pg_url)

        common = {"workers": args.workers, "threads": args.threads, "log_dir": tmpdir}
        floor_env = {"FLOOR_DATABASE_URL": pg_url, "FLOOR_REDIS_URL": REDIS_URL,
                     "FLOOR_PREFIX": prefix}
        bare, bare_port = start_gunicorn("bare_app:app", env_extra=floor_env, name="bare",
                                         pythonpath=[str(ROOT / "bench"), str(ROOT)], **common)
        servers.append(bare)
        gw, gw_port = start_gunicorn("wsgi:app", env_extra=env, name="gateway",
                                     pythonpath=[str(ROOT)], **common)
        servers.append(gw)
        print(f"bare app on :{bare_port}, gateway on :{gw_port} "
              f"({args.workers} workers x {args.threads} threads each)")

        admin(gw_port, "PUT", "/admin/plans/bench", PLAN)
        me_id, key_me = make_account(gw_port, "me")
        _, key_b = make_account(gw_port, "b")
        _, key_c = make_account(gw_port, "c")
        hot_id, key_hot = make_account(gw_port, "hot")
        many = [make_account(gw_port, f"m{i}")[1] for i in range(args.accounts)]
        # the paid floor names its account in the Authorization header (bench/bare_app.py)
        paid_floor = [make_account(gw_port, f"p{i}")[0] for i in range(args.accounts)]
        check_once(bare_port, "/bare", ESTIMATE_BODY, None, False)
        check_once(bare_port, f"/floor/{me_id}", "", key_me, False)
        check_once(bare_port, "/floor-paid", ECHO_BODY, paid_floor[0], True)
        check_once(gw_port, "/zapier/v1/me", "", key_me, False)
        check_once(gw_port, "/zapier/v1/estimate-cost", ESTIMATE_BODY, key_b, False)
        check_once(gw_port, "/zapier/v1/echo", ECHO_BODY, key_c, True)
        check_once(gw_port, "/zapier/v1/echo", ECHO_BODY, key_hot, True)

        scenarios = [
            ("a", bare_port, "/bare", ESTIMATE_BODY, [""]),
            ("floor", bare_port, f"/floor/{me_id}", "", [key_me]),
            ("pfloor", bare_port, "/floor-paid", ECHO_BODY, paid_floor),
            ("me", gw_port, "/zapier/v1/me", "", [key_me]),
            ("b", gw_port, "/zapier/v1/estimate-cost", ESTIMATE_BODY, [key_b]),
            ("c", gw_port, "/zapier/v1/echo", ECHO_BODY, [key_c]),
            ("hot", gw_port, "/zapier/v1/echo", ECHO_BODY, [key_hot]),
            ("many", gw_port, "/zapier/v1/echo", ECHO_BODY, many),
        ]
        # Rounds: every scenario once per round, the bare route first, each ratio taken
        # against the bare run of its own round and the median of the rounds reported, so
        # a machine that slows down or speeds up during the run moves both sides of a ratio.
        rounds: dict[str, list] = {name: [] for name, *_ in scenarios}
        opts = {"concurrency": args.concurrency, "threads": args.wrk_threads, "tmpdir": tmpdir}
        for n in range(args.rounds):
            for name, port, path, body, keys in scenarios:
                if args.warmup and n == 0:
                    load(port, path, body, keys, duration=args.warmup, **opts)
                before = ledger_check(pg_url, hot_id)["debit_rows"] if name == "hot" else 0
                server = bare if port == bare_port else gw
                cpu0 = cpu_snapshot(server.pid)
                r = load(port, path, body, keys, duration=args.duration, **opts)
                cpu1 = cpu_snapshot(server.pid)
                r["cpu_us"] = {k: (cpu1[k] - cpu0[k]) / max(1, r["requests"]) * 1e6
                               for k in cpu0}
                if name == "hot":
                    time.sleep(1)  # let requests in flight when the generator stopped land
                    r["debit_rows"] = ledger_check(pg_url, hot_id)["debit_rows"] - before
                r["rps_a"] = ratio(r["rps"], rounds["a"][n]["rps"] if name != "a" else r["rps"])
                if name not in ("a", "floor", "pfloor"):  # the paid paths: the paid floor
                    ref = "floor" if name in ("me", "b") else "pfloor"
                    r["rps_floor"] = ratio(r["rps"], rounds[ref][n]["rps"])
                rounds[name].append(r)
                print(f"  {n + 1}/{args.rounds} {name:<5} {path:<28} {r['rps']:9.1f} req/s  "
                      f"rps/a {r['rps_a']:.3f}  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
        results = {name: combine(runs) for name, runs in rounds.items()}

        if args.open_rate:
            results["open_loop"] = {}
            for name, port, path, body, key in [
                    ("a", bare_port, "/bare", ESTIMATE_BODY, ""),
                    ("b", gw_port, "/zapier/v1/estimate-cost", ESTIMATE_BODY, key_b),
                    ("c", gw_port, "/zapier/v1/echo", ECHO_BODY, key_c)]:
                r = run_open_loop(port, "POST", path, body, key, rate=args.open_rate,
                                  duration=args.open_duration)
                results["open_loop"][name] = r
                print(f"  open loop {name:<3} {args.open_rate:g} req/s  p50 {r['p50_ms']:7.2f} ms"
                      f"  p99 {r['p99_ms']:7.2f} ms  errors {r['errors']}", flush=True)
        check = ledger_check(pg_url, hot_id)
        loads.append(os.getloadavg())
        loads = [" ".join(f"{x:.2f}" for x in la) for la in loads]
        print_table(results, info, args, generator, check, loads)
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"args": vars(args), "generator": generator, "machine": info,
                 "results": results, "ledger": check, "loadavg": loads}, indent=2))
        ok = check["balance"] == check["ledger_sum"] and not check["accounts_mismatched"]
        return 0 if ok else 1
    finally:
        for proc in reversed(servers):
            with contextlib.suppress(Exception):
                stop_server(proc)
        if db_name:
            try:
                drop_database(db_name)
            except Exception as exc:  # noqa: BLE001
                print(f"could not drop database {db_name}: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            delete_prefix(prefix)
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
