"""The baseline for bench/run.py: a bare Falcon app with one route and a constant JSON answer.

Served by the same gunicorn settings as the gateway (``gateway/gunicorn_conf.py``: gthread
workers, same worker and thread counts), so the difference between this and the gateway's
routes is what the gateway's own work costs: middleware, authentication, the Redis rate
limit, PostgreSQL and the envelope.

    PYTHONPATH=bench:. python -m gunicorn -c python:gateway.gunicorn_conf bare_app:app
"""

from __future__ import annotations

import falcon

BODY = {"success": True, "data": {"ok": True}, "meta": {"requestId": "req_bare"}}


class Bare:
    def on_get(self, req, resp):
        resp.media = BODY

    def on_post(self, req, resp):
        req.bounded_stream.read()  # consume the body like a real handler would
        resp.media = BODY


class Health:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "OK"


app = falcon.App()
app.add_route("/bare", Bare())
app.add_route("/health", Health())
