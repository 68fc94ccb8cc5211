"""Asynchronous jobs on this machine: what the gateway adds to RQ, and listings per worker.

Run from the repository root: ``make bench-jobs`` or ``.venv/bin/python bench/jobs_bench.py
[--jobs 500] [--listings 40]``. See the "Jobs" section of bench/README.md.

1. Enqueue-to-start latency and jobs/s of a trivial job, side by side:
   (a) the full HTTP path, ``POST /zapier/v1/echo-async?wait=0`` (auth, rate limit, debit,
       composition row, RQ enqueue) run by ONE ``gateway worker`` process; latency is
       ``Composition.started_at - created_at``;
   (b) RQ alone: a no-op function (bench/jobs_noop.py) enqueued directly, run by ONE RQ
       ``SimpleWorker`` process; latency is the job's ``started_at - enqueued_at``.
   Each is measured twice: paced (one job every --gap seconds, so the queue stays empty and
   the figure is the dispatch cost) and burst (--jobs submitted as fast as --threads client
   threads can, so the figure includes the wait behind the backlog).
2. ``generate-product-listing`` jobs per second on one worker process, the product photo
   served by a loopback HTTP server.

The script creates its own PostgreSQL database, Redis key prefix, temporary directory, a
gunicorn (gateway/gunicorn_conf.py) and the workers, and removes all of them at the end,
also on error, Ctrl-C or SIGTERM. Everything listens and connects on 127.0.0.1 only, and
every wait is bounded (--timeout seconds per phase).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
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
BENCH = ROOT / "bench"
# The project packages must win over anything in bench/ on the import path.
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402
import redis as redis_lib  # noqa: E402
import run as sync_bench  # noqa: E402  (bench/run.py: database, gunicorn and admin helpers)
from rq import Queue  # noqa: E402
from rq.job import Job  # noqa: E402

LOOPBACK = sync_bench.LOOPBACK
REDIS_URL = sync_bench.REDIS_URL
FINAL = ("completed", "failed", "cancelled")
ECHO_PATH = "/zapier/v1/echo-async?wait=0"
LISTING_PATH = "/zapier/v1/generate-product-listing?wait=0"


# --------------------------------------------------------------------------- helpers

def pct(values, p):
    """Nearest-rank percentile of a list (0.0 when empty)."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(p / 100 * len(s))) - 1))]


def naive_utc(value):
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def ms(delta):
    return delta.total_seconds() * 1000


def ratio(a, b):
    return a / b if b else float("nan")


def start_process(cmd, env, log_path, cwd=ROOT):
    log = open(log_path, "wb")  # noqa: SIM115 (closed in sync_bench.stop_server)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.bench_log = log
    return proc


def log_tail(path, n=3000):
    with contextlib.suppress(OSError):
        return Path(path).read_text(errors="replace")[-n:]
    return ""


def product_photo() -> bytes:
    """A product shot: a shaded bottle with a label on a light studio backdrop, 1000x800
    JPEG with sensor-like grain (so it neither compresses nor trims like a flat block)."""
    from PIL import Image, ImageChops, ImageDraw, ImageFilter

    w, h = 1000, 800
    backdrop = Image.linear_gradient("L").resize((w, h)).point(lambda v: 252 - v // 12)
    img = Image.merge("RGB", (backdrop, backdrop, backdrop.point(lambda v: max(0, v - 4))))
    shadow = Image.new("L", (w, h), 0)
    ImageDraw.Draw(shadow).ellipse((330, 650, 670, 700), fill=90)
    img.paste((120, 120, 120), mask=shadow.filter(ImageFilter.GaussianBlur(14)))
    body = Image.new("RGB", (260, 480))
    for x in range(260):  # cylinder shading: dark edges, highlight left of centre
        t = abs(x - 100) / 160
        ImageDraw.Draw(body).line([(x, 0), (x, 480)],
                                  fill=(int(30 + 150 * (1 - t)), int(90 + 120 * (1 - t)),
                                        int(60 + 90 * (1 - t))))
    mask = Image.new("L", body.size, 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 60, 259, 479), radius=40, fill=255)
    ImageDraw.Draw(mask).rectangle((85, 0, 175, 80), fill=255)
    img.paste(body, (370, 190), mask)
    draw = ImageDraw.Draw(img)
    draw.rectangle((385, 380, 615, 520), fill=(236, 228, 210))
    draw.text((420, 420), "ORCHARD PRESS", fill=(40, 40, 40))
    draw.text((430, 450), "cold-pressed apple", fill=(90, 70, 50))
    img = img.filter(ImageFilter.GaussianBlur(0.8))  # lens softness
    grain = Image.merge("RGB", [Image.effect_noise((w, h), 7) for _ in range(3)])
    img = ImageChops.add(img, grain, scale=1.0, offset=-128)  # zero-mean sensor noise
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class ImageHost:
    """Serves one JPEG at /product.jpg on 127.0.0.1 (any other path: 404)."""

    def __init__(self, body: bytes):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/product.jpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.httpd.server_address[1]}/product.jpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- submitting

def submit_http(port, key, path, bodies, threads, deadline):
    """POST each body (keep-alive, ``threads`` client threads); returns (uids, errors, s)."""
    uids, errors, lock = [], [], threading.Lock()
    chunks = [bodies[i::threads] for i in range(threads)]

    def client(chunk):
        conn = None
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        for body in chunk:
            if time.monotonic() > deadline:
                with lock:
                    errors.append("deadline")
                continue
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
                conn.request("POST", path, body=json.dumps(body), headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status in (200, 202):
                    uid = json.loads(raw)["data"]["composition"]["uid"]
                    with lock:
                        uids.append(uid)
                else:
                    with lock:
                        errors.append(f"{resp.status}: {raw[:200]!r}")
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                with lock:
                    errors.append(repr(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    t0 = time.perf_counter()
    run_threads(client, chunks, deadline)
    return uids, errors, time.perf_counter() - t0


def submit_rq(queue, ids, threads, deadline):
    """Enqueue ``jobs_noop.noop`` once per id from ``threads`` threads; returns seconds."""
    chunks = [ids[i::threads] for i in range(threads)]

    def client(chunk):
        q = Queue(queue, connection=redis_lib.Redis.from_url(REDIS_URL))
        for job_id in chunk:
            if time.monotonic() > deadline:
                return
            q.enqueue_call("jobs_noop.noop", args=(time.time(),), job_id=job_id,
                           result_ttl=3600, failure_ttl=3600)

    t0 = time.perf_counter()
    run_threads(client, chunks, deadline)
    return time.perf_counter() - t0


def run_threads(target, chunks, deadline):
    threads = [threading.Thread(target=target, args=(c,), daemon=True) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic() + 35))


def paced(submit_one, count, gap, deadline):
    """Submit ``count`` jobs one at a time, ``gap`` seconds apart (an empty queue)."""
    next_at = time.monotonic()
    for i in range(count):
        if time.monotonic() > deadline:
            break
        time.sleep(max(0.0, next_at - time.monotonic()))
        submit_one(i)
        next_at += gap


# --------------------------------------------------------------------------- collecting

def wait_compositions(pg_url, uids, deadline, worker):
    """Until every composition in ``uids`` ended (or the deadline, or the worker died)."""
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    try:
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM composition WHERE uid = ANY(%s) "
                            "AND status = ANY(%s)", (list(uids), list(FINAL)))
                done = cur.fetchone()[0]
            if done >= len(uids) or time.monotonic() > deadline or worker.poll() is not None:
                return done
            time.sleep(0.2)
    finally:
        conn.close()


def composition_rows(pg_url, uids):
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT uid, status, created_at, started_at, finished_at, outputs, "
                        "error FROM composition WHERE uid = ANY(%s)", (list(uids),))
            cols = [d[0] for d in cur.description]
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        conn.close()


def fetch_rq_jobs(client, ids):
    jobs = []
    for i in range(0, len(ids), 200):
        jobs += [j for j in Job.fetch_many(ids[i:i + 200], connection=client) if j is not None]
    return jobs


def wait_rq(client, ids, deadline, worker):
    while True:
        jobs = fetch_rq_jobs(client, ids)
        done = sum(1 for j in jobs if j.ended_at is not None)
        if done >= len(ids) or time.monotonic() > deadline or worker.poll() is not None:
            return done
        time.sleep(0.2)


def http_stats(rows, n_submitted, submit_s, rq_jobs=None):
    started = [r for r in rows if r["started_at"] is not None]
    lat = [ms(r["started_at"] - r["created_at"]) for r in started]
    finished = [r["finished_at"] for r in rows if r["finished_at"] is not None]
    span = (max(finished) - min(r["created_at"] for r in rows)).total_seconds() if finished \
        else 0.0
    out = {"jobs": n_submitted, "started": len(started),
           "completed": sum(1 for r in rows if r["status"] == "completed"),
           "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat, default=0.0),
           "jobs_s": ratio(len(finished), span), "span_s": span,
           "submit_s": submit_s, "submit_rate": ratio(n_submitted, submit_s)}
    if rq_jobs:  # where the time goes: gunicorn -> RQ enqueue -> RQ start -> started_at
        by_uid = {r["uid"]: r for r in rows}
        parts = {"create_to_enqueue": [], "enqueue_to_rq_start": [], "rq_start_to_started": []}
        for job in rq_jobs:
            row = by_uid.get(job.id)
            if row is None or row["started_at"] is None or job.started_at is None:
                continue
            enq, st = naive_utc(job.enqueued_at), naive_utc(job.started_at)
            parts["create_to_enqueue"].append(ms(enq - row["created_at"]))
            parts["enqueue_to_rq_start"].append(ms(st - enq))
            parts["rq_start_to_started"].append(ms(row["started_at"] - st))
        out["breakdown_p50_ms"] = {k: pct(v, 50) for k, v in parts.items()}
    return out


def rq_stats(jobs, n_submitted, submit_s):
    started = [j for j in jobs if j.started_at is not None and j.enqueued_at is not None]
    lat = [ms(naive_utc(j.started_at) - naive_utc(j.enqueued_at)) for j in started]
    ended = [naive_utc(j.ended_at) for j in jobs if j.ended_at is not None]
    span = (max(ended) - min(naive_utc(j.enqueued_at) for j in started)).total_seconds() \
        if ended and started else 0.0
    in_task = []
    for j in jobs:
        with contextlib.suppress(Exception):
            value = j.return_value()
            if value is not None:
                in_task.append(value * 1000)
    return {"jobs": n_submitted, "started": len(started),
            "completed": sum(1 for j in jobs if j.get_status(refresh=False) == "finished"),
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat, default=0.0),
            "jobs_s": ratio(len(ended), span), "span_s": span, "submit_s": submit_s,
            "submit_rate": ratio(n_submitted, submit_s), "in_task_p50_ms": pct(in_task, 50)}


# --------------------------------------------------------------------------- phases

def phase_rq(args, prefix, tmpdir, procs):
    """1b: RQ alone, one SimpleWorker process, jobs_noop.noop."""
    client = redis_lib.Redis.from_url(REDIS_URL)
    queue = f"{prefix}:noop"
    env = {**os.environ, "PYTHONPATH": str(BENCH)}
    worker = start_process([sys.executable, str(BENCH / "jobs_noop.py"), queue, REDIS_URL,
                            f"{prefix}-noopworker"], env, Path(tmpdir) / "rq-worker.log")
    procs.append(worker)
    results = {}
    deadline = time.monotonic() + 30
    warm = [f"{prefix}-warm-{i}" for i in range(5)]
    submit_rq(queue, warm, 1, deadline)
    if wait_rq(client, warm, deadline, worker) < len(warm):
        raise RuntimeError("RQ worker did not run the warm-up jobs:\n"
                           + log_tail(Path(tmpdir) / "rq-worker.log"))

    q = Queue(queue, connection=client)
    ids = [f"{prefix}-paced-{i}" for i in range(args.paced)]
    deadline = time.monotonic() + args.timeout
    t0 = time.perf_counter()
    paced(lambda i: q.enqueue_call("jobs_noop.noop", args=(time.time(),), job_id=ids[i],
                                   result_ttl=3600, failure_ttl=3600),
          args.paced, args.gap, deadline)
    submit_s = time.perf_counter() - t0
    wait_rq(client, ids, deadline, worker)
    results["paced"] = rq_stats(fetch_rq_jobs(client, ids), len(ids), submit_s)

    ids = [f"{prefix}-burst-{i}" for i in range(args.jobs)]
    deadline = time.monotonic() + args.timeout
    submit_s = submit_rq(queue, ids, args.threads, deadline)
    wait_rq(client, ids, deadline, worker)
    results["burst"] = rq_stats(fetch_rq_jobs(client, ids), len(ids), submit_s)
    sync_bench.stop_server(worker)
    return results


def phase_http(args, pg_url, port, keys, worker, tmpdir):
    """1a: the full HTTP path, echo-async, one ``gateway worker``."""
    rq_client = redis_lib.Redis.from_url(REDIS_URL)
    results = {}
    deadline = time.monotonic() + 45
    uids, errors, _ = submit_http(port, keys["warm"], ECHO_PATH,
                                  [{"message": "warm-up"}] * 5, 1, deadline)
    if errors or wait_compositions(pg_url, uids, deadline, worker) < len(uids):
        raise RuntimeError(f"gateway worker did not run the warm-up jobs ({errors[:3]}):\n"
                           + log_tail(Path(tmpdir) / "gateway-worker.log"))

    deadline = time.monotonic() + args.timeout
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    paced_uids, paced_errors = [], []

    def one(_):
        conn.request("POST", ECHO_PATH, body=json.dumps({"message": "x"}),
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {keys['paced']}"})
        resp = conn.getresponse()
        raw = resp.read()
        if resp.status in (200, 202):
            paced_uids.append(json.loads(raw)["data"]["composition"]["uid"])
        else:
            paced_errors.append(f"{resp.status}: {raw[:200]!r}")

    t0 = time.perf_counter()
    paced(one, args.paced, args.gap, deadline)
    submit_s = time.perf_counter() - t0
    conn.close()
    wait_compositions(pg_url, paced_uids, deadline, worker)
    results["paced"] = http_stats(composition_rows(pg_url, paced_uids), args.paced, submit_s,
                                  fetch_rq_jobs(rq_client, paced_uids))
    results["paced"]["errors"] = paced_errors

    deadline = time.monotonic() + args.timeout
    uids, errors, submit_s = submit_http(port, keys["burst"], ECHO_PATH,
                                         [{"message": "x"}] * args.jobs, args.threads, deadline)
    wait_compositions(pg_url, uids, deadline, worker)
    results["burst"] = http_stats(composition_rows(pg_url, uids), args.jobs, submit_s,
                                  fetch_rq_jobs(rq_client, uids))
    results["burst"]["errors"] = errors
    return results


def phase_listings(args, pg_url, port, key, worker, image_url):
    """2: generate-product-listing on one worker."""
    deadline = time.monotonic() + args.timeout
    bodies = [{"product_name": f"Orchard Press apple juice {i}", "product_image_url": image_url,
               "vendor": "Orchard Press", "product_description": "Cold-pressed, 750 ml.",
               "custom_tags": ["bench"]} for i in range(args.listings)]
    uids, errors, submit_s = submit_http(port, key, LISTING_PATH, bodies, 2, deadline)
    wait_compositions(pg_url, uids, deadline, worker)
    rows = composition_rows(pg_url, uids)
    done = [r for r in rows if r["status"] == "completed"]
    per = [(r["finished_at"] - r["started_at"]).total_seconds() for r in done]
    span = (max(r["finished_at"] for r in done) - min(r["started_at"] for r in done)
            ).total_seconds() if done else 0.0
    bad = [r for r in rows if r["status"] != "completed"]
    outputs_ok = all(len(json.loads(r["outputs"])) == 2 for r in done)
    return {"jobs": args.listings, "accepted": len(uids), "completed": len(done),
            "errors": errors + [f"{r['uid']} {r['status']} {r['error']}" for r in bad[:5]],
            "outputs_ok": outputs_ok, "span_s": span, "listings_s": ratio(len(done), span),
            "mean_s": sum(per) / len(per) if per else 0.0, "p50_s": pct(per, 50),
            "max_s": max(per, default=0.0), "submit_s": submit_s}


# --------------------------------------------------------------------------- report

def print_report(info, args, rq_res, http_res, listing, loads, photo_size):
    print()
    print(f"== jobs benchmark, {info['date']}")
    print(f"machine: nproc {info['nproc']}, CPU {info['cpu']}, Python {info['python']}, "
          f"PostgreSQL {info['postgresql']}, Redis {info['redis']}, kernel {info['kernel']}")
    print(f"load average before {loads[0]}, after {loads[1]} (other work on the machine "
          f"depresses every figure)")
    print()
    print("1. trivial job, enqueue-to-start (ms) and jobs/s; ONE worker process each")
    print("   a = POST /zapier/v1/echo-async?wait=0 -> gateway worker "
          "(Composition.started_at - created_at)")
    print("   b = RQ alone: jobs_noop.noop enqueued directly -> SimpleWorker "
          "(job.started_at - enqueued_at)")
    print(f"{'run':<14} {'jobs':>5} {'ok':>5} {'submit/s':>9} {'jobs/s':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8}")
    for mode, label in (("paced", f"paced {args.gap:g}s"), ("burst", f"burst {args.threads}thr")):
        for name, res in (("a HTTP", http_res[mode]), ("b RQ", rq_res[mode])):
            print(f"{name + ' ' + mode:<14} {res['jobs']:>5} {res['completed']:>5} "
                  f"{res['submit_rate']:>9.1f} {res['jobs_s']:>8.1f} {res['p50_ms']:>8.2f} "
                  f"{res['p99_ms']:>8.2f} {res['max_ms']:>8.2f}")
        a, b = http_res[mode], rq_res[mode]
        print(f"{'  a/b ' + label:<14} {'':>5} {'':>5} {'':>9} "
              f"{ratio(a['jobs_s'], b['jobs_s']):>8.3f} {ratio(a['p50_ms'], b['p50_ms']):>8.1f} "
              f"{ratio(a['p99_ms'], b['p99_ms']):>8.1f}")
    for mode in ("paced", "burst"):
        bd = http_res[mode].get("breakdown_p50_ms")
        if bd:
            print(f"   a {mode}, p50 of each leg (ms): created_at -> RQ enqueued_at "
                  f"{bd['create_to_enqueue']:.2f}, -> RQ started_at "
                  f"{bd['enqueue_to_rq_start']:.2f}, -> Composition.started_at "
                  f"{bd['rq_start_to_started']:.2f}")
    print(f"   b burst: in-task latency p50 (time.time() at enqueue -> noop running) "
          f"{rq_res['burst']['in_task_p50_ms']:.2f} ms")
    for mode in ("paced", "burst"):
        errs = http_res[mode]["errors"]
        if errs:
            print(f"   a {mode}: {len(errs)} submission errors, e.g. {errs[:3]}")
    print()
    print(f"2. generate-product-listing, ONE gateway worker process, {args.listings} jobs, "
          f"photo 1000x800 JPEG {photo_size // 1024} KiB on a loopback server")
    verdict = ("all completed, 2 outputs each" if listing["completed"] == args.listings
               and listing["outputs_ok"] else f"NOT all completed: {listing['errors'][:5]}")
    print(f"   {listing['listings_s']:.2f} listings/s per worker process, mean "
          f"{listing['mean_s']:.3f} s per listing (p50 {listing['p50_s']:.3f}, max "
          f"{listing['max_s']:.3f}); {listing['completed']}/{args.listings} completed in "
          f"{listing['span_s']:.1f} s: {verdict}")


# --------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=500, help="trivial jobs per burst run (500)")
    p.add_argument("--threads", type=int, default=4, help="client threads submitting (4)")
    p.add_argument("--paced", type=int, default=30, help="jobs in each paced run (30)")
    p.add_argument("--gap", type=float, default=0.1, help="seconds between paced jobs (0.1)")
    p.add_argument("--listings", type=int, default=40, help="product listings (40)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    p.add_argument("--gunicorn-threads", type=int, default=8, help="threads per gunicorn "
                   "worker (8)")
    p.add_argument("--timeout", type=float, default=90, help="bound on each phase, s (90)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--keep-logs", action="store_true",
                   help="keep the temporary directory with the server and worker logs")
    args = p.parse_args(argv)
    if not 1 <= args.jobs <= 20000 or not 1 <= args.listings <= 1000:
        p.error("--jobs must be 1..20000 and --listings 1..1000")
    if not 1 <= args.threads <= 64 or not 0 <= args.paced <= 1000 or not 0 < args.gap <= 5:
        p.error("--threads 1..64, --paced 0..1000, --gap (0, 5]")
    if not 5 <= args.timeout <= 600:
        p.error("--timeout must be 5..600")
    return args


def _on_sigterm(signum, frame):
    raise SystemExit(143)


def machine_info(pg_url):
    info = sync_bench.machine_info(pg_url)
    info["date"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["nproc"] = len(os.sched_getaffinity(0))
    return info


def teardown(procs, pg_url, prefix, db_name):
    """Stop the servers, then delete the Redis keys and drop the database of one run;
    every step is tried even when an earlier one fails (also used by gen_bench.py)."""
    for proc in reversed(procs):
        with contextlib.suppress(Exception):
            sync_bench.stop_server(proc)
    uids = []
    if pg_url:
        with contextlib.suppress(Exception):
            uids = composition_ids(pg_url)
    try:
        print(f"cleanup: {cleanup_redis(prefix, uids)} Redis keys deleted")
    except Exception as exc:  # noqa: BLE001
        print(f"could not delete the Redis keys of {prefix}: {exc}", file=sys.stderr)
    if db_name:
        try:
            sync_bench.drop_database(db_name)
        except Exception as exc:  # noqa: BLE001
            print(f"could not drop database {db_name}: {exc}", file=sys.stderr)


def cleanup_redis(prefix, job_ids):
    """Keys with the prefix (queues, registries, noop jobs) and RQ keys of the compositions."""
    client = redis_lib.Redis.from_url(REDIS_URL)
    count = sync_bench.delete_prefix(prefix)
    if job_ids:
        ids = set(job_ids)
        doomed = []
        for key in client.scan_iter("rq:*", count=1000):
            parts = key.decode(errors="replace").split(":")
            if any(part in ids or part.rsplit("-", 1)[0] in ids for part in parts):
                doomed.append(key)
        for i in range(0, len(doomed), 500):
            client.delete(*doomed[i:i + 500])
        count += len(doomed)
    return count


def composition_ids(pg_url):
    conn = psycopg2.connect(pg_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT uid FROM composition")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    prefix = "bench" + uuid.uuid4().hex[:10]
    tmpdir = tempfile.mkdtemp(prefix="gwbenchjobs_")
    db_name = pg_url = None
    procs, host = [], None
    loads = [os.getloadavg()]
    started = time.monotonic()
    try:
        db_name, pg_url = sync_bench.create_database()
        print(f"database {db_name}, redis prefix {prefix}, logs in {tmpdir}", flush=True)
        env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
               "ADMIN_KEY": sync_bench.ADMIN_KEY, "DATA_DIR": str(Path(tmpdir) / "data"),
               "OUTBOUND_ALLOW_HOSTS": LOOPBACK}
        up = subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"],
                            cwd=ROOT, env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"gateway db upgrade failed:\n{up.stdout}\n{up.stderr}")
        info = machine_info(pg_url)

        print("1b. RQ alone ...", flush=True)
        rq_res = phase_rq(args, prefix, tmpdir, procs)
        print(f"    burst {rq_res['burst']['jobs_s']:.1f} jobs/s, p50 "
              f"{rq_res['burst']['p50_ms']:.2f} ms", flush=True)

        gw, port = sync_bench.start_gunicorn(
            "wsgi:app", env_extra=env, workers=args.workers, threads=args.gunicorn_threads,
            pythonpath=[str(ROOT)], log_dir=tmpdir, name="gateway")
        procs.append(gw)
        worker_env = {**os.environ, **env, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING",
                      "PUBLIC_BASE_URL": f"http://{LOOPBACK}:{port}"}
        worker = start_process([sys.executable, "-m", "gateway.cli", "worker", "--queues",
                                "cpu,webhooks"], worker_env, Path(tmpdir) / "gateway-worker.log")
        procs.append(worker)
        sync_bench.admin(port, "PUT", "/admin/plans/bench", sync_bench.PLAN)
        keys = {name: sync_bench.make_account(port, name)[1]
                for name in ("warm", "paced", "burst", "listing")}
        print(f"1a. HTTP path (gateway on :{port}, {args.workers} x {args.gunicorn_threads}) ...",
              flush=True)
        http_res = phase_http(args, pg_url, port, keys, worker, tmpdir)
        print(f"    burst {http_res['burst']['jobs_s']:.1f} jobs/s, p50 "
              f"{http_res['burst']['p50_ms']:.2f} ms", flush=True)

        photo = product_photo()
        host = ImageHost(photo)
        print(f"2.  product listings ({len(photo) // 1024} KiB photo at {host.url}) ...",
              flush=True)
        listing = phase_listings(args, pg_url, port, keys["listing"], worker, host.url)

        loads.append(os.getloadavg())
        loads = [" ".join(f"{x:.2f}" for x in la) for la in loads]
        print_report(info, args, rq_res, http_res, listing, loads, len(photo))
        print(f"(whole run {time.monotonic() - started:.0f} s, before cleanup)")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"args": vars(args), "machine": info, "loadavg": loads, "rq_alone": rq_res,
                 "http": http_res, "listings": listing}, indent=2, default=str))
        ok = (listing["completed"] == args.listings and listing["outputs_ok"]
              and all(r[m]["completed"] == r[m]["jobs"]
                      for r in (rq_res, http_res) for m in ("paced", "burst")))
        if not ok:
            print("NOT every job completed: see above", file=sys.stderr)
        return 0 if ok else 1
    finally:
        if host is not None:
            host.close()
        teardown(procs, pg_url, prefix, db_name)
        if args.keep_logs:
            shutil.rmtree(Path(tmpdir) / "data", ignore_errors=True)
            print(f"logs kept in {tmpdir}")
        else:
            shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
