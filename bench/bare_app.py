"""The baselines for bench/run.py: a bare Falcon app, and the floor of a metered answer.

Served by the same gunicorn settings as the gateway (``gateway/gunicorn_conf.py``: gthread
workers, same worker and thread counts), so the difference between this and the gateway's
routes is what the gateway's own work costs: middleware, authentication, the Redis rate
limit, PostgreSQL and the envelope.

- ``/bare``: one route and a constant JSON answer.
- ``/floor/{account_id}`` (only when ``FLOOR_DATABASE_URL`` and ``FLOOR_REDIS_URL`` are
  set): the bare route plus the two round trips every rate-limited answer with a fresh
  balance needs, and nothing else: one Redis script (a fixed-window counter) and one
  prepared one-row read of the account's balance, each on a connection the thread keeps,
  with no middleware, authentication or envelope code. No implementation that makes those
  two round trips can be faster than this, so ``floor/bare`` is the ceiling of the
  gateway's ``rps/a`` on this machine (bench/README.md, "The floor").
- ``POST /floor-paid`` (same condition): the paid path's reference. The same Redis script,
  then one prepared statement that debits 1 credit if the balance covers it and writes its
  ledger row with a receipt (one statement, one commit per request, no grouping). The
  account is named by ``Authorization: Bearer <account id>``, so the load generator's key
  rotation spreads it over accounts as the gateway's "many" run does.

    PYTHONPATH=bench:. python -m gunicorn -c python:gateway.gunicorn_conf bare_app:app
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time

import falcon
import hiredis
import psycopg2
import redis

BODY = {"success": True, "data": {"ok": True}, "meta": {"requestId": "req_bare"}}

# One fixed window per account and minute: INCR, and EXPIRE on the window's first request.
FLOOR_SCRIPT = ("local n = redis.call('INCR', KEYS[1]) "
                "if n == 1 then redis.call('EXPIRE', KEYS[1], 120) end return n")


class Bare:
    def on_get(self, req, resp):
        resp.media = BODY

    def on_post(self, req, resp):
        req.bounded_stream.read()  # consume the body like a real handler would
        resp.media = BODY


class Floor:
    """Each request thread keeps one Redis and one PostgreSQL connection, as the gateway's
    do under gunicorn; the script is sent as a prepacked ``EVALSHA``, as the gateway's gate
    is (``metering.ratelimit.GateCall``)."""

    def __init__(self, database_url: str, redis_url: str, prefix: str):
        self.database_url, self.redis_url, self.prefix = database_url, redis_url, prefix
        self.sha = hashlib.sha1(FLOOR_SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis' name)
        self.local = threading.local()

    def _connections(self):
        conns = getattr(self.local, "conns", None)
        if conns is None:
            client = redis.Redis.from_url(self.redis_url)
            client.script_load(FLOOR_SCRIPT)
            rconn = client.connection_pool.make_connection()
            rconn.connect()
            pg = psycopg2.connect(self.database_url)
            pg.autocommit = True
            cursor = pg.cursor()
            cursor.execute('PREPARE floor_balance AS SELECT balance FROM "account" WHERE id = $1')
            conns = self.local.conns = (rconn, cursor)
        return conns

    def on_get(self, req, resp, account_id):
        rconn, cursor = self._connections()
        window = f"{self.prefix}:floor:{account_id}:{int(time.time()) // 60}"
        rconn.send_packed_command([hiredis.pack_command(("EVALSHA", self.sha, "1", window))])
        count = rconn.read_response()
        cursor.execute("EXECUTE floor_balance(%s)", (account_id,))
        row = cursor.fetchone()
        if row is None:
            raise falcon.HTTPNotFound()
        resp.media = {"success": True, "data": {"balance": row[0], "count": count},
                      "meta": {"requestId": "req_floor"}}


# The exact debit in one statement: the conditional UPDATE and its ledger row (the gateway's
# table, so the ledger invariant bench/run.py checks covers these accounts too).
FLOOR_DEBIT = (
    'PREPARE floor_debit(text, text) AS WITH u AS (UPDATE "account" SET balance = balance - 1 '
    'WHERE id = $1 AND balance >= 1 RETURNING balance) INSERT INTO "ledger_entry" '
    '(receipt, account_id, kind, amount, balance_after, action, reason, created_at) '
    "SELECT $2, $1, 'debit', -1, balance, 'floor', '', now() FROM u RETURNING balance_after")


class FloorPaid(Floor):
    """Autocommit: the statement is its own transaction, committed (WAL flushed) before the
    answer, as the gateway's debit is."""

    def _connections(self):
        conns = getattr(self.local, "conns", None)
        if conns is None:
            rconn, cursor = super()._connections()
            cursor.execute(FLOOR_DEBIT)
            conns = self.local.conns
        return conns

    def on_post(self, req, resp):
        req.bounded_stream.read()
        account_id = (req.auth or "").removeprefix("Bearer ")
        rconn, cursor = self._connections()
        window = f"{self.prefix}:floor:{account_id}:{int(time.time()) // 60}"
        rconn.send_packed_command([hiredis.pack_command(("EVALSHA", self.sha, "1", window))])
        count = rconn.read_response()
        receipt = "txn_" + secrets.token_hex(12)
        cursor.execute("EXECUTE floor_debit(%s, %s)", (account_id, receipt))
        row = cursor.fetchone()
        if row is None:
            raise falcon.HTTPError(falcon.HTTP_402, title="balance too low")
        resp.media = {"success": True, "data": {"count": count},
                      "meta": {"creditsUsed": 1, "availableCredit": row[0],
                               "txnReceipt": receipt, "requestId": "req_floor"}}


class Health:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "OK"


app = falcon.App()
app.add_route("/bare", Bare())
app.add_route("/health", Health())
if os.environ.get("FLOOR_DATABASE_URL") and os.environ.get("FLOOR_REDIS_URL"):
    app.add_route("/floor/{account_id}", Floor(os.environ["FLOOR_DATABASE_URL"],
                                               os.environ["FLOOR_REDIS_URL"],
                                               os.environ.get("FLOOR_PREFIX", "bench")))
    app.add_route("/floor-paid", FloorPaid(os.environ["FLOOR_DATABASE_URL"],
                                           os.environ["FLOOR_REDIS_URL"],
                                           os.environ.get("FLOOR_PREFIX", "bench")))
