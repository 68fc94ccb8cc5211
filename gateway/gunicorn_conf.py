"""gunicorn settings (``gunicorn -c python:gateway.gunicorn_conf wsgi:app``).

gthread workers: requests block on PostgreSQL and Redis, so threads overlap the waits
cheaply. Values come from the same typed ``Config`` as everything else, so the Procfile,
``gateway serve`` and the benchmark all share this file.
"""

import os

from core.config import Config

_config = Config.from_env()

bind = _config.bind
workers = _config.web_workers
worker_class = "gthread"
threads = _config.web_threads
# Each worker gets its own listening socket (SO_REUSEPORT) and the kernel spreads new
# connections over them by their addresses. With one shared socket, whichever worker wakes
# first accepts: measured, a burst of 16 keep-alive connections often all landed on one
# worker, which then served them on one core at half the throughput while the other idled
# (bench/README.md, "One listening socket per worker"). GATEWAY_REUSE_PORT=0 turns it off.
reuse_port = _config.web_reuse_port
timeout = _config.web_timeout_s
graceful_timeout = 20
keepalive = 5
accesslog = _config.access_log or None
errorlog = "-"
loglevel = _config.log_level.lower()
# One shared control socket under $HOME would collide between gateways (tests, bench).
control_socket_disable = True


def post_worker_init(worker):
    """gthread's request threads live as long as the worker: each keeps its database
    connection between requests (``metering.db.keep_request_connections``)."""
    from metering import db

    db.keep_request_connections(threads, _config.db_pool_size)


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multi-process Prometheus files."""
    # prometheus_client reads this variable itself; ``gateway serve`` sets it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
