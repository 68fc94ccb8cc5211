"""The schema migration runner: versioned steps, applied in order by ``gateway db upgrade``.

Each migration runs once (recorded in ``schema_migration``) inside a transaction and is
written to be safe to re-run (``safe=True`` creates, existence checks before ALTERs), so
an upgrade interrupted half-way can simply be run again. On PostgreSQL an advisory lock
keeps two processes from upgrading at the same time. The steps themselves are listed
above every package (``gateway.schema``), since they create every package's tables.
"""

from __future__ import annotations

import logging

from metering.db import database, is_sqlite
from metering.models import SchemaMigration

log = logging.getLogger(__name__)

_LOCK_ID = 0x6761746577  # "gatew": the advisory lock for upgrades


def create_tables(*models):
    """A migration step that creates tables (``safe=True``: re-running it is harmless)."""
    def migrate(db):
        db.create_tables(list(models), safe=True)
    return migrate


def current_version() -> int:
    if not database.table_exists(SchemaMigration._meta.table_name):
        return 0
    return max((row.version for row in SchemaMigration.select()), default=0)


def upgrade(migrations) -> list[int]:
    """Apply the pending ones of ``migrations`` (``(version, name, step)`` in order; the
    product's list is ``gateway.schema.MIGRATIONS``); returns the versions applied."""
    applied = []
    with database.atomic():
        if not is_sqlite():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        database.create_tables([SchemaMigration], safe=True)
        done = {row.version for row in SchemaMigration.select()}
        for version, name, migrate in migrations:
            if version in done:
                continue
            log.info("applying migration %04d %s", version, name)
            migrate(database)
            SchemaMigration.create(version=version, name=name)
            applied.append(version)
    return applied
