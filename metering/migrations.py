"""Versioned schema migrations, applied in order by ``gateway db upgrade``.

Each migration runs once (recorded in ``schema_migration``) inside a transaction and is
written to be safe to re-run (``safe=True`` creates, existence checks before ALTERs), so
an upgrade interrupted half-way can simply be run again. On PostgreSQL an advisory lock
keeps two processes from upgrading at the same time.
"""

from __future__ import annotations

import logging

from metering.db import database, is_sqlite
from metering.models import ALL_MODELS as METERING_MODELS
from metering.models import SchemaMigration
from oauth.models import ALL_MODELS as OAUTH_MODELS

log = logging.getLogger(__name__)

_LOCK_ID = 0x6761746577  # "gatew": the advisory lock for upgrades


def _m0001_initial(db):
    """Accounts, keys, plans, prices, the credit ledger and idempotency records."""
    db.create_tables(METERING_MODELS + OAUTH_MODELS, safe=True)


def _m0002_jobs(db):
    """Compositions (async job records), posts, webhook hooks, secrets and deliveries."""
    from jobs.models import ALL_MODELS as JOB_MODELS

    db.create_tables(JOB_MODELS, safe=True)


def _m0003_oauth_provider(db):
    """OAuth2 clients, authorization codes and tokens."""
    from oauth.provider_models import ALL_MODELS as PROVIDER_MODELS

    db.create_tables(PROVIDER_MODELS, safe=True)


def _m0004_sessions(db):
    """Bearer-token refresh records and per-account settings."""
    from oauth.session_models import ALL_MODELS as SESSION_MODELS

    db.create_tables(SESSION_MODELS, safe=True)


def _m0005_social(db):
    """Identities linked from social login providers."""
    from oauth.social_models import ALL_MODELS as SOCIAL_MODELS

    db.create_tables(SOCIAL_MODELS, safe=True)


MIGRATIONS = [
    (1, "initial schema", _m0001_initial),
    (2, "jobs, posts and webhooks", _m0002_jobs),
    (3, "oauth2 provider", _m0003_oauth_provider),
    (4, "bearer tokens and account settings", _m0004_sessions),
    (5, "social identities", _m0005_social),
]


def current_version() -> int:
    if not database.table_exists(SchemaMigration._meta.table_name):
        return 0
    return max((row.version for row in SchemaMigration.select()), default=0)


def upgrade() -> list[int]:
    """Apply pending migrations; returns the versions applied (empty when up to date)."""
    applied = []
    with database.atomic():
        if not is_sqlite():
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        database.create_tables([SchemaMigration], safe=True)
        done = {row.version for row in SchemaMigration.select()}
        for version, name, migrate in MIGRATIONS:
            if version in done:
                continue
            log.info("applying migration %04d %s", version, name)
            migrate(database)
            SchemaMigration.create(version=version, name=name)
            applied.append(version)
    return applied
