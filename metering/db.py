"""The database handle shared by every model, bound once per process from ``DATABASE_URL``.

PostgreSQL is the source of truth for money in production and in the test suite; SQLite
is the embedded default. Both support ``UPDATE ... RETURNING``, which the debit relies on.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from urllib.parse import unquote, urlparse

from peewee import DatabaseProxy, SqliteDatabase, __exception_wrapper__
from playhouse.pool import PooledPostgresqlDatabase

database = DatabaseProxy()

# A pooled connection idle longer than this is checked with a round trip before reuse; one
# handed back moments ago is not (peewee checks every checkout with ``SELECT 1``: a round
# trip on every request). A connection that died in the meantime fails its first statement,
# which is answered 503 and drops it from the pool.
PING_AFTER_IDLE_S = 1.0


class GatewayPool(PooledPostgresqlDatabase):
    """peewee's pool, checking only connections that sat idle (see PING_AFTER_IDLE_S)."""

    def __init__(self, *args, **kwargs):
        self._returned_at: dict[int, float] = {}
        super().__init__(*args, **kwargs)

    def _is_closed(self, conn):
        if conn.closed:
            return True
        if time.monotonic() - self._returned_at.get(id(conn), 0.0) > PING_AFTER_IDLE_S:
            return super()._is_closed(conn)
        status = conn.info.transaction_status
        if status == 4:  # TRANSACTION_STATUS_UNKNOWN: the connection is broken
            return True
        if status != 0:  # not idle: never hand out a connection mid-transaction
            with contextlib.suppress(Exception):
                conn.rollback()
        return False

    def _close(self, conn, close_conn=False):
        self._returned_at[id(conn)] = time.monotonic()
        if close_conn:
            self._returned_at.pop(id(conn), None)
        return super()._close(conn, close_conn)


# Request connections kept by their thread between requests (``keep_request_connections``).
# Why: under load, checking a connection out of peewee's pool and back in on every request
# (two process-wide locks each way, the heap, the pool's bookkeeping) cost the web tier
# ~6-8% of its throughput on ``/me`` (bench/README.md, "Kept connections").
_KEEP = False
_kept = threading.local()  # ``at``: when this thread's kept connection was last handed back
# Connections a worker process needs besides its request threads' (a CLI, a readiness probe
# opened outside a request): kept connections never take the pool's last ones.
POOL_HEADROOM = 4


def keep_request_connections(threads: int, pool_size: int) -> bool:
    """Let each request thread keep its pooled connection between requests, when the
    process's threads are a fixed set (gunicorn's gthread pool: ``gunicorn_conf``) and
    they cannot hold the pool's every connection between them. Returns whether it is on.

    A thread that never ends holds at most one connection, so a kept connection is never
    lost; a thread that did end would hold its connection from the pool for good, so this
    is only for servers whose request threads live as long as the process."""
    global _KEEP
    _KEEP = isinstance(database.obj, GatewayPool) and threads + POOL_HEADROOM <= pool_size
    return _KEEP


def checkout() -> None:
    """Open this request's connection: the thread's kept one when it was handed back moments
    ago (PING_AFTER_IDLE_S, as the pool would trust it), else one from the pool (which
    pings one that sat idle). Without kept connections, the thread's open one is reused."""
    if _KEEP and not database.is_closed() and not database.in_transaction() \
            and time.monotonic() - getattr(_kept, "at", 0.0) > PING_AFTER_IDLE_S:
        database.close()  # idle too long: back to the pool, which checks it on checkout
    database.connect(reuse_if_open=True)


def checkin(healthy: bool) -> None:
    """End this request's use of its connection: never mid-transaction; kept by the thread
    (``keep_request_connections``) when the request ended without a server error and the
    session is idle, else handed back to the pool, which drops one that broke."""
    if database.is_closed():
        return
    if database.in_transaction():
        database.rollback()
    if _KEEP and healthy:
        conn = database.connection()
        if not conn.closed and conn.info.transaction_status == 0:  # TRANSACTION_STATUS_IDLE
            _kept.at = time.monotonic()
            return
    database.close()


def make_database(url: str, pool_size: int = 20):
    """Build (but do not open) a peewee database for a ``postgresql://`` or ``sqlite:///`` URL."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return GatewayPool(
            unquote(parsed.path.lstrip("/")) or "postgres",
            user=unquote(parsed.username) if parsed.username else None,
            password=unquote(parsed.password) if parsed.password else None,
            host=parsed.hostname or None,
            port=parsed.port or None,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=10,  # wait this long for a free pooled connection before failing
        )
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else parsed.path
        return SqliteDatabase(
            path or ":memory:",
            pragmas={
                "journal_mode": "wal",
                "busy_timeout": 10000,  # writers queue instead of failing with "locked"
                "foreign_keys": 1,
                "synchronous": "normal",
            },
            check_same_thread=False,
        )
    raise ValueError(f"unsupported DATABASE_URL scheme {parsed.scheme!r}")


def bind(url: str, pool_size: int = 20):
    """Point the shared proxy at a database for this process and return it."""
    db = make_database(url, pool_size)
    database.initialize(db)
    return db


def is_sqlite() -> bool:
    return isinstance(database.obj, SqliteDatabase)


# Per connection, the names of the statements PREPAREd on it. A prepared statement lives
# as long as its PostgreSQL session (a ROLLBACK keeps it), and a reconnect is a new
# connection object, so the weak key follows the session exactly.
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PREPARED_LOCK = threading.Lock()


def _numbered(sql: str) -> str:
    """``%s`` placeholders as PREPARE's ``$1, $2, ...``."""
    parts = sql.split("%s")
    return "".join(part + (f"${n}" if n < len(parts) else "")
                   for n, part in enumerate(parts, 1))


def execute_prepared(cursor, name: str, sql: str, params=()) -> None:
    """Run ``sql`` on ``cursor`` as the prepared statement ``name`` (PostgreSQL), preparing
    it on the first use on this connection.

    Why: for the one-row statements on every request, PostgreSQL spends most of its time
    parsing and planning, not running: measured on this machine, the ``/me`` statement
    costs its backend ~70-95 us of CPU as plain text and ~26-31 us as ``EXECUTE``. ``name``
    must be a fixed identifier and ``sql`` a constant (never built from input). The pool
    holds its own sessions, so no transaction-pooling proxy (pgbouncer in ``transaction``
    mode) may sit in between (docs/ARCHITECTURE.md, "Prepared statements")."""
    prepare(cursor, name, sql)
    cursor.execute(execute_sql(name, len(params)), params)


def prepare(cursor, name: str, sql: str) -> None:
    """PREPARE ``sql`` (``%s`` placeholders) as ``name`` on the cursor's connection unless
    it already is (see ``execute_prepared``)."""
    conn = cursor.connection
    names = _PREPARED.get(conn)
    if names is None:
        with _PREPARED_LOCK:
            names = _PREPARED.setdefault(conn, set())
    if name not in names:
        cursor.execute(f"PREPARE {name} AS {_numbered(sql)}")
        names.add(name)


def execute_sql(name: str, count: int) -> str:
    """``EXECUTE name(%s, ...)`` with ``count`` placeholders, for the driver to fill."""
    return f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"


def fetchone(sql: str, params=(), *, prepared: str | None = None):
    """One row of a hand-written statement on this thread's connection, or None.

    For the few statements on every request (the balance, ``/me``): peewee spends several
    times longer building a query than PostgreSQL spends running it. ``sql`` uses ``%s``
    placeholders and is portable SQL; on SQLite they become ``?``. ``prepared``: on
    PostgreSQL, run it as that prepared statement (``execute_prepared``)."""
    sqlite = is_sqlite()
    if sqlite:
        sql = sql.replace("%s", "?")
    with __exception_wrapper__:  # driver errors as peewee's, as every other query raises
        cursor = database.cursor()
        try:
            if prepared and not sqlite:
                execute_prepared(cursor, prepared, sql, params)
            else:
                cursor.execute(sql, params)
            return cursor.fetchone()
        finally:
            cursor.close()


def write_transaction():
    """A transaction that takes the write lock up front on SQLite.

    SQLite's default deferred transactions fail with "database is locked" when two
    readers try to upgrade to writers at once; ``IMMEDIATE`` queues them instead.
    PostgreSQL gets a normal transaction (row locks do the work there).
    """
    if is_sqlite():
        return database.atomic("IMMEDIATE")
    return database.atomic()


def ping() -> None:
    """Readiness: run ``SELECT 1`` (on the open connection, or a short-lived one); raises
    when the database does not answer."""
    opened = database.connect(reuse_if_open=True)
    try:
        database.execute_sql("SELECT 1")
    finally:
        if opened:
            database.close()


@contextlib.contextmanager
def connection():
    """Open a connection for a unit of work outside a request (CLI, workers)."""
    opened = database.connect(reuse_if_open=True)
    try:
        yield database
    finally:
        if opened and not database.is_closed():
            database.close()
