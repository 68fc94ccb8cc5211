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
timeout = _config.web_timeout_s
graceful_timeout = 20
keepalive = 5
accesslog = _config.access_log or None
errorlog = "-"
loglevel = _config.log_level.lower()
# One shared control socket under $HOME would collide between gateways (tests, bench).
control_socket_disable = True


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multi-process Prometheus files."""
    # prometheus_client reads this variable itself; ``gateway serve`` sets it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
