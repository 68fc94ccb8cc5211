"""Helpers for the asynchronous-action tests: a loopback image host, a loopback webhook
receiver, and real RQ workers (in-process burst, or a `gateway worker` subprocess)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

from conftest import ROOT


def png_bytes(size=(640, 480), color=(200, 30, 30), border=60):
    """A product photo: a coloured block on a flat light border (to be trimmed)."""
    img = Image.new("RGB", size, (245, 245, 245))
    img.paste(Image.new("RGB", (size[0] - 2 * border, size[1] - 2 * border), color),
              (border, border))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class _Server:
    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def image_host():
    """Serves /product.png, /missing (404), /text (not an image), /slow (drips for ~4 s)."""
    body = png_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/product.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif self.path == "/text":
                data = b"<html>not an image</html>"
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                step = len(body) // 10 + 1
                try:  # about 4 seconds: long enough to be caught running
                    for i in range(0, len(body), step):
                        self.wfile.write(body[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.4)
                except (BrokenPipeError, ConnectionResetError):
                    pass
            else:
                self.send_error(404)

    return _Server(Handler)


class Receiver(_Server):
    """A webhook target recording each request; answers from a script of status codes,
    with ``answer`` (bytes, or a callable of the status) as the response body."""

    def __init__(self, statuses=None, answer=b""):
        self.requests = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append({"path": self.path, "headers": dict(self.headers),
                                          "body": body, "status": status})
                data = answer(status) if callable(answer) else answer
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__(Handler)

    def wait_for(self, count, timeout=15):
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests

    def bodies(self):
        return [json.loads(r["body"]) for r in self.requests]


def worker_env(config, **extra):
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": config.database_url, "REDIS_URL": config.redis_url,
        "REDIS_PREFIX": config.redis_prefix, "DATA_DIR": str(config.data_dir),
        "PUBLIC_BASE_URL": config.public_base_url, "OUTBOUND_ALLOW_HOSTS": "127.0.0.1",
        "JOB_HEARTBEAT_SECONDS": "0.5", "WEBHOOK_RETRY_SCHEDULE": "0.3,0.3,0.3",
        "PYTHONPATH": str(ROOT), "LOG_LEVEL": "WARNING",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_worker(config, queues="cpu,webhooks", **extra):
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "worker", "--queues", queues],
                            cwd=ROOT, env=worker_env(config, **extra), start_new_session=True)


def burst(config, queues=("cpu",), clock=None):
    """Run a real RQ SimpleWorker in this process until the queues are empty; ``clock``
    (a ``core.clock.Clock``) is the worker's notion of now, e.g. shifted past a ttl."""
    from rq import SimpleWorker

    from core.clock import SYSTEM
    from gateway.services import install_worker_runtime

    class BurstWorker(SimpleWorker):
        """RQ's command channel (pub/sub: stop-job, kill-horse) is never used by the
        product, and stopping its listener thread can wait out its 60 s poll (redis-py's
        ``PubSubWorkerThread.stop`` joins without a timeout when the unsubscribe reply is
        read before the stop flag): a burst worker listens for no commands."""

        def subscribe(self):
            self.pubsub_thread = None

    rt = install_worker_runtime(config, clock=clock or SYSTEM)
    worker = BurstWorker([f"{config.redis_prefix}:{q}" for q in queues], connection=rt.redis)
    worker.work(burst=True)
    return rt


def stop_worker(proc):
    """Stop a worker started by ``start_worker`` and every process of its session."""
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(ProcessLookupError):  # the RQ scheduler child, if it outlived
        os.killpg(proc.pid, signal.SIGKILL)


# Polling compositions through the HTTP app, shared by the job and generation tests.

FINAL = ("completed", "failed", "cancelled")


def poll(client, key, uid, until=FINAL, timeout=20, min_progress=-1):
    """The composition once its status is in ``until`` (and its progress > min_progress)."""
    from conftest import bearer

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        comp = client.simulate_get(f"/zapier/v1/compositions/{uid}",
                                   headers=bearer(key)).json["data"]["composition"]
        if comp["status"] in until and comp["progress"] > min_progress:
            return comp
        assert comp["status"] not in FINAL or comp["status"] in until, comp
        time.sleep(0.1)  # accounts on the default plan may make 60 requests a minute
    raise AssertionError(f"composition {uid} stayed {comp['status']} ({comp['progress']}%)")


def cancel_while_running(client, key, uid, *, min_progress, timeout=60):
    """Wait until the job is running past ``min_progress``, cancel it; the view before."""
    from conftest import bearer

    comp = poll(client, key, uid, until=("running",), timeout=timeout,
                min_progress=min_progress)
    cancel = client.simulate_post(f"/zapier/v1/compositions/{uid}/cancel", headers=bearer(key))
    assert cancel.status_code in (200, 202), cancel.json
    return comp


def output_path(config, url):
    """Where the gateway keeps an output it serves at ``url``: a content item's blob for a
    signed link (``/links/<content_id>?v=<sha256>...``, the filesystem backend), else the
    plain output file (``/outputs/<uid>/<name>``)."""
    from urllib.parse import parse_qs, urlsplit

    parts = urlsplit(url)
    if parts.path.startswith("/links/"):
        from jobs.content.models import ContentItem
        from metering import db as dbmod

        with dbmod.connection():
            owner = ContentItem.get_by_id(parts.path.split("/")[2]).account_id
        return config.data_dir / "blobs" / owner / parse_qs(parts.query)["v"][0]
    uid, name = url.rsplit("/", 2)[-2:]
    return config.data_dir / "outputs" / uid / name
