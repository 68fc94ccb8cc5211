"""The trivial RQ job of bench/jobs.py's "RQ alone" run, and the worker that runs it.

``noop(t0)`` returns how long after ``t0`` (the enqueuer's ``time.time()``) it started, so
the result carries the in-task latency as well; RQ's own ``enqueued_at``/``started_at``
are what the benchmark reports. Run as a script it is one RQ ``SimpleWorker`` (the class
``gateway worker`` uses, default logging, no scheduler) on one queue until SIGTERM:

    python bench/jobs_noop.py QUEUE REDIS_URL WORKER_NAME
"""

from __future__ import annotations

import sys
import time


def noop(t0: float) -> float:
    return time.time() - t0


def main(argv: list[str]) -> None:
    from redis import Redis
    from rq import SimpleWorker

    queue, url, name = argv
    worker = SimpleWorker([queue], connection=Redis.from_url(url), name=name)
    worker.work(burst=False, with_scheduler=False)


if __name__ == "__main__":
    main(sys.argv[1:])
