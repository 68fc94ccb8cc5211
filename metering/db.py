"""The database handle shared by every model, bound once per process from ``DATABASE_URL``.

PostgreSQL is the source of truth for money in production and in the test suite; SQLite
is the embedded default. Both support ``UPDATE ... RETURNING``, which the debit relies on.
"""

from __future__ import annotations

import contextlib
from urllib.parse import unquote, urlparse

from peewee import DatabaseProxy, SqliteDatabase
from playhouse.pool import PooledPostgresqlDatabase

database = DatabaseProxy()


def make_database(url: str, pool_size: int = 20):
    """Build (but do not open) a peewee database for a ``postgresql://`` or ``sqlite:///`` URL."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        return PooledPostgresqlDatabase(
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
