"""Two versions of the gateway side by side: which one serves the hot paths faster.

Run from the repository root: ``.venv/bin/python bench/compare.py OTHER_TREE [--rounds 5]
[--duration 5] [--paths me,free,paid]``. ``OTHER_TREE`` is another checkout of the
gateway (``git worktree add /tmp/before <commit>``, or ``git archive <commit> | tar -x -C
DIR``); it runs on this tree's virtual environment. Both are served by gunicorn with
``gateway/gunicorn_conf.py`` of their own tree (2 workers x 8 threads by default), each on
its own database and Redis prefix, and ``wrk`` drives them in turn, A then B, for every
path in every round, so a machine that speeds up or slows down during the run affects both
alike. It prints, per path, the median requests/s and server CPU microseconds per request
of each, their ratio B/A, and every round's ratio. A single run of ``bench/run.py`` per
version cannot show a difference of under ~15%: its figures move that much between runs
on this machine (bench/README.md, "Comparing two versions").

Everything it creates (databases, Redis keys, logs) is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    ADMIN_KEY,
    ECHO_BODY,
    ESTIMATE_BODY,
    PLAN,
    REDIS_URL,
    admin,
    check_once,
    cpu_snapshot,
    create_database,
    delete_prefix,
    drop_database,
    make_account,
    run_wrk,
    start_gunicorn,
    stop_server,
)

PATHS = {
    "me": ("/zapier/v1/me", ""),
    "free": ("/zapier/v1/estimate-cost", ESTIMATE_BODY),
    "paid": ("/zapier/v1/echo", ECHO_BODY),
}


def start(tree: Path, name: str, args, tmpdir, cleanup) -> dict:
    """One gateway from ``tree`` on a database and Redis prefix of its own, with a key."""
    prefix = f"cmp{name}{uuid.uuid4().hex[:8]}"
    db_name, pg_url = create_database()
    cleanup.append(lambda: drop_database(db_name))
    cleanup.append(lambda: delete_prefix(prefix))
    env = {"DATABASE_URL": pg_url, "REDIS_URL": REDIS_URL, "REDIS_PREFIX": prefix,
           "ADMIN_KEY": ADMIN_KEY, "DATA_DIR": str(Path(tmpdir) / name)}
    up = subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], cwd=tree,
                        env={**os.environ, **env, "PYTHONPATH": str(tree)},
                        capture_output=True, text=True, timeout=120, check=False)
    if up.returncode != 0:
        raise RuntimeError(f"{tree}: gateway db upgrade failed:\n{up.stdout}\n{up.stderr}")
    proc, port = start_gunicorn("wsgi:app", env_extra=env, name=name, pythonpath=[str(tree)],
                                workers=args.workers, threads=args.threads, log_dir=tmpdir,
                                cwd=tree)
    cleanup.append(lambda: stop_server(proc))
    admin(port, "PUT", "/admin/plans/bench", PLAN)
    _, key = make_account(port, name)
    for path, body in PATHS.values():
        check_once(port, path, body, key, body == ECHO_BODY)
    return {"proc": proc, "port": port, "key": key, "tree": tree}


def measure(server, path, body, args, tmpdir) -> tuple[float, float]:
    """requests/s and the server's CPU microseconds per request of one wrk run."""
    before = cpu_snapshot(server["proc"].pid)["server"]
    r = run_wrk(server["port"], path, body, [server["key"]], duration=args.duration,
                concurrency=args.concurrency, threads=2, tmpdir=tmpdir)
    used = cpu_snapshot(server["proc"].pid)["server"] - before
    if r["errors"]:
        raise RuntimeError(f"{server['tree']} {path}: {r['errors']} errors")
    return r["rps"], used / max(1, r["requests"]) * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("other", type=Path, help="the other checkout (A); this tree is B")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=5, help="seconds per run (5)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--paths", default="me,free,paid", help="of: " + ",".join(PATHS))
    args = p.parse_args(argv)
    paths = [x for x in args.paths.split(",") if x]
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if not (args.other / "wsgi.py").is_file() or set(paths) - set(PATHS):
        raise SystemExit("OTHER must be a gateway checkout; --paths a list of " +
                         ",".join(PATHS))
    tmpdir = tempfile.mkdtemp(prefix="gwcompare_")
    cleanup: list = []
    try:
        a = start(args.other.resolve(), "a", args, tmpdir, cleanup)
        b = start(ROOT, "b", args, tmpdir, cleanup)
        print(f"A {a['tree']} on :{a['port']}, B {b['tree']} on :{b['port']} "
              f"({args.workers} workers x {args.threads} threads each)")
        for server in (a, b):  # warm both: caches, pools, prepared statements
            for path, body in PATHS.values():
                run_wrk(server["port"], path, body, [server["key"]], duration=1,
                        concurrency=args.concurrency, threads=2, tmpdir=tmpdir)
        seen = {name: {"a": [], "b": []} for name in paths}
        for n in range(args.rounds):
            for name in paths:
                path, body = PATHS[name]
                for side, server in (("a", a), ("b", b)):
                    rps, cpu = measure(server, path, body, args, tmpdir)
                    seen[name][side].append((rps, cpu))
                ra, rb = seen[name]["a"][-1], seen[name]["b"][-1]
                print(f"  {n + 1}/{args.rounds} {name:<5} A {ra[0]:8.1f} req/s {ra[1]:5.0f} us"
                      f"   B {rb[0]:8.1f} req/s {rb[1]:5.0f} us   B/A {rb[0] / ra[0]:.3f}",
                      flush=True)
        med = statistics.median
        print(f"\n== {args.rounds} rounds of {args.duration:g}s per run, concurrency "
              f"{args.concurrency}; A = {a['tree']}, B = {b['tree']}")
        print(f"{'path':<5} {'A req/s':>9} {'B req/s':>9} {'B/A':>6} {'A us/req':>9} "
              f"{'B us/req':>9} {'B/A':>6}  B/A per round")
        for name in paths:
            ra, rb = seen[name]["a"], seen[name]["b"]
            rps_a, rps_b = med(x[0] for x in ra), med(x[0] for x in rb)
            cpu_a, cpu_b = med(x[1] for x in ra), med(x[1] for x in rb)
            rounds = " ".join(f"{y[0] / x[0]:.3f}" for x, y in zip(ra, rb, strict=True))
            print(f"{name:<5} {rps_a:>9.1f} {rps_b:>9.1f} {rps_b / rps_a:>6.3f} {cpu_a:>9.0f} "
                  f"{cpu_b:>9.0f} {cpu_b / cpu_a:>6.3f}  {rounds}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        return 0
    finally:
        for step in reversed(cleanup):
            with contextlib.suppress(Exception):
                step()
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
