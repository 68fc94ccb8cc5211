"""Workflow engine overhead: a 10-node CPU project run through the full path, side by side
with the same node functions called directly in one process.

Run from the repository root: ``make bench-workflow`` or ``.venv/bin/python
bench/workflow_bench.py [--runs 20] [--workers 1]``. See the "Workflows" section of
bench/README.md.

The graph is a chain of trivial nodes: ``load_image`` (a 16x16 PNG from a loopback host),
eight ``resize`` nodes, one ``output``. Every run passes ``use_cache: false``, so every
node runs every time.

(a) full path: ``POST /zapier/v1/run-project?wait=0`` on a gunicorn (auth, rate limit,
    plan and price, debit, composition + run + node rows, RQ enqueue), the start job and
    one RQ job per node on ``gateway worker`` processes (claim, decode inputs from
    storage, run, store the PNG output, the completion transaction, events, dispatch of
    the next node); the time is the composition's ``finished_at - created_at``.
(b) direct: the same ``NodeType.run`` functions called in order in this process, each
    output handed straight to the next.

Per-node engine overhead = (a - b) / 10 at the median; the ratio is a / b. The script
creates its own PostgreSQL database, Redis key prefix and temporary directory, and removes
them at the end, also on error or Ctrl-C. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import run as sync_bench  # noqa: E402  (bench/run.py: database, gunicorn and admin helpers)

LOOPBACK = sync_bench.LOOPBACK
RESIZES = 8
NODES = RESIZES + 2


def pct(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))]


class ImageHost:
    """Serves a 16x16 PNG at /tiny.png on 127.0.0.1."""

    def __init__(self):
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 80, 20)).save(buf, "PNG")
        body = buf.getvalue()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}/tiny.png"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def graph(url):
    nodes = [{"id": "n0", "type": "load_image", "inputs": {"url": url}}]
    for i in range(1, RESIZES + 1):
        size = 16 + (i % 2)  # alternate sizes: every resize does work
        nodes.append({"id": f"n{i}", "type": "resize", "inputs": {
            "image": {"node": f"n{i - 1}", "output": "image"}, "width": size, "height": size,
            "mode": "fit"}})
    nodes.append({"id": "out", "type": "output", "inputs": {
        "value": {"node": f"n{RESIZES}", "output": "image"}, "name": "result"}})
    return nodes


class DirectContext:
    """What a node's ``run`` needs when called directly (no run, no checkpoints)."""

    def __init__(self, policy, node_id):
        self.policy, self.node_id, self.seed = policy, node_id, 1
        self.config = self.models = self.pipelines = None

    def progress(self, value, maximum=100):
        pass


def direct_runs(url, runs):
    """(b): the node functions in order, in this process; ms per run."""
    from actions.workflow.nodes import default_catalogue
    from jobs.outbound import OutboundPolicy

    catalogue, policy = default_catalogue(), OutboundPolicy(LOOPBACK)
    nodes = graph(url)
    times = []
    for _ in range(runs + 2):  # two warm-up runs, not counted
        started = time.perf_counter()
        image = None
        for node in nodes[:-1]:
            inputs = {k: v for k, v in node["inputs"].items() if not isinstance(v, dict)}
            if image is not None:
                inputs["image"] = image
            kind = catalogue.find(node["type"])
            image = kind.run(DirectContext(policy, node["id"]), inputs)["image"]
        catalogue.find("output").run(DirectContext(policy, "out"), {"value": image})
        times.append((time.perf_counter() - started) * 1000)
    return times[2:]


def engine_runs(port, key, pg_url, pid, runs, timeout):
    """(a): sequential runs through the full path; ms per run (server timestamps)."""
    headers = {"Authorization": f"Bearer {key}"}
    times, post_ms, failures, legs = [], [], [], []
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    try:
        for i in range(runs + 2):
            started = time.perf_counter()
            status, raw = sync_bench.http_call(
                port, "POST", "/zapier/v1/run-project?wait=0", {"project_id": pid, "seed": i,
                                                                 "use_cache": False}, headers)
            post_ms.append((time.perf_counter() - started) * 1000)
            if status != 202:
                raise RuntimeError(f"run-project -> {status}: {raw[:400]!r}")
            uid = json.loads(raw)["data"]["composition"]["uid"]
            deadline = time.monotonic() + timeout
            while True:
                with conn.cursor() as cur:
                    cur.execute("SELECT status, EXTRACT(EPOCH FROM finished_at - created_at),"
                                " error FROM composition WHERE uid = %s", (uid,))
                    row = cur.fetchone()
                if row and row[0] in ("completed", "failed", "cancelled"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {uid} did not end in {timeout}s ({row})")
                time.sleep(0.005)
            if row[0] != "completed":
                failures.append(f"{uid} {row[0]} {row[2]}")
            elif i >= 2:  # two warm-up runs, not counted
                times.append(float(row[1]) * 1000)
                legs.append(node_legs(conn, uid))
    finally:
        conn.close()
    return times, post_ms[2:], failures, legs


def node_legs(conn, uid):
    """Where one run's time went, from its rows: the start (composition created ->
    first node started), per node the dispatch gap (upstream finished -> started) and the
    time inside the node job (started -> finished, storage and bookkeeping included)."""
    with conn.cursor() as cur:
        cur.execute("SELECT created_at, started_at FROM composition WHERE uid = %s", (uid,))
        created, comp_started = cur.fetchone()
        cur.execute("SELECT started_at, finished_at FROM node_run WHERE run_id = %s AND "
                    "started_at IS NOT NULL ORDER BY position", (uid,))
        rows = cur.fetchall()
    gaps = [(b[0] - a[1]).total_seconds() * 1000 for a, b in zip(rows, rows[1:], strict=False)]
    inside = [(f - s).total_seconds() * 1000 for s, f in rows]
    return {"start": (rows[0][0] - created).total_seconds() * 1000 if rows else 0.0,
            "claim": (comp_started - created).total_seconds() * 1000 if comp_started else 0.0,
            "gap": sum(gaps) / len(gaps) if gaps else 0.0,
            "inside": sum(inside) / len(inside) if inside else 0.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs of each (a), (b)")
    parser.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per run at most")
    return parser.parse_args(argv)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    prefix = "benchwf" + uuid.uuid4().hex[:8]
    tmpdir = tempfile.mkdtemp(prefix="gwbenchwf_")
    db_name, procs, host = None, [], ImageHost()
    try:
        db_name, pg_url = sync_bench.create_database()
        env = {"DATABASE_URL": pg_url, "REDIS_URL": sync_bench.REDIS_URL,
               "REDIS_PREFIX": prefix, "ADMIN_KEY": sync_bench.ADMIN_KEY,
               "DATA_DIR": str(Path(tmpdir) / "data"), "OUTBOUND_ALLOW_HOSTS": LOOPBACK}
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING"}
        subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], cwd=ROOT,
                       env=full_env, check=True, capture_output=True, timeout=120)
        gw, port = sync_bench.start_gunicorn(
            "wsgi:app", env_extra=env, workers=1, threads=4, pythonpath=[str(ROOT)],
            log_dir=tmpdir, name="gateway")
        procs.append(gw)
        for n in range(args.workers):
            log = open(Path(tmpdir) / f"worker{n}.log", "wb")  # noqa: SIM115
            worker = subprocess.Popen([sys.executable, "-m", "gateway.cli", "worker",
                                       "--queues", "cpu"], cwd=ROOT, env=full_env,
                                      stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            worker.bench_log = log
            procs.append(worker)
        sync_bench.admin(port, "PUT", "/admin/plans/bench", sync_bench.PLAN)
        _, key = sync_bench.make_account(port, "wf")
        status, raw = sync_bench.http_call(
            port, "POST", "/api/project/create", {"name": "bench chain", "node_data":
                                                  graph(host.url)},
            {"Authorization": f"Bearer {key}"})
        if status != 201:
            raise RuntimeError(f"project create -> {status}: {raw[:400]!r}")
        pid = json.loads(raw)["data"]["project_id"]
        print(f"database {db_name}, prefix {prefix}, {args.workers} worker(s), logs in "
              f"{tmpdir}", flush=True)
        direct = direct_runs(host.url, args.runs)
        full, post, failures, legs = engine_runs(port, key, pg_url, pid, args.runs,
                                                 args.timeout)
        report(args, direct, full, post, failures, legs)
        return 0 if not failures and len(full) == args.runs else 1
    finally:
        host.close()
        for proc in reversed(procs):
            sync_bench.stop_server(proc)
        if db_name:
            with contextlib.suppress(Exception):
                sync_bench.drop_database(db_name)
        with contextlib.suppress(Exception):
            sync_bench.delete_prefix(prefix)
        shutil.rmtree(tmpdir, ignore_errors=True)


def report(args, direct, full, post, failures, legs):
    d50, f50 = pct(direct, 50), pct(full, 50)
    print()
    print(f"== workflow engine overhead, {NODES}-node CPU chain "
          f"(load_image, {RESIZES} x resize, output), {args.runs} runs each, "
          f"nproc {os.cpu_count()}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'path':<34} {'p50 ms':>9} {'p90 ms':>9} {'max ms':>9}")
    print(f"{'(a) full path (created->finished)':<34} {f50:>9.2f} {pct(full, 90):>9.2f} "
          f"{max(full, default=0):>9.2f}")
    print(f"{'(b) node functions directly':<34} {d50:>9.2f} {pct(direct, 90):>9.2f} "
          f"{max(direct, default=0):>9.2f}")
    print(f"{'    POST run-project (client)':<34} {pct(post, 50):>9.2f} {pct(post, 90):>9.2f} "
          f"{max(post, default=0):>9.2f}")
    per_node = (f50 - d50) / NODES
    print(f"engine overhead per node at p50: {per_node:.2f} ms (target < 10 ms); "
          f"ratio a/b {f50 / d50 if d50 else float('nan'):.1f}x")
    if legs:
        def leg(name):
            return pct([x[name] for x in legs], 50)
        print(f"legs of (a) at p50: created -> start job running {leg('claim'):.2f} ms, "
              f"created -> first node running {leg('start'):.2f} ms; per node: dispatch "
              f"gap {leg('gap'):.2f} ms, inside the node job {leg('inside'):.2f} ms")
    if failures:
        print("FAILED runs:", *failures[:5], sep="\n  ")


if __name__ == "__main__":
    sys.exit(main())
