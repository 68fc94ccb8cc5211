"""gunicorn settings (``gunicorn -c python:gateway.gunicorn_conf wsgi:app``).

gthread workers: requests block on PostgreSQL and Redis, so threads overlap the waits
cheaply. Values come from the environment so the Procfile, ``gateway serve`` and the
benchmark all share this file.
"""

import os

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GATEWAY_THREADS", "8"))
timeout = int(os.environ.get("GATEWAY_TIMEOUT", "60"))
graceful_timeout = 20
keepalive = 5
accesslog = os.environ.get("GATEWAY_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# One shared control socket under $HOME would collide between gateways (tests, bench).
control_socket_disable = True


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the multi-process Prometheus files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
