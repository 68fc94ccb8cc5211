"""The product's schema: every package's tables, in the migrations that created them.

Listed here, above all the packages whose models it names, so the migration runner
(``metering.migrations``) stays on the lowest floor and imports no one's models.
Append new migrations; never edit or renumber an applied one.
"""

from __future__ import annotations

from jobs import models as job_models
from jobs import stories
from jobs.content import models as content_models
from jobs.workflows import models as workflow_models
from metering import billing, giftcards, migrations
from metering import models as metering_models
from metering.payments import models as payment_models
from oauth import models as oauth_models
from oauth import provider_models, session_models, social_models


def _projects(db):
    """Create the project tables and add ``compositions.consumed`` where it is missing
    (a database made before it existed); both steps are safe to run again."""
    from peewee import SQL, BigIntegerField
    from playhouse.migrate import SchemaMigrator, migrate

    db.create_tables(list(workflow_models.ALL_MODELS), safe=True)
    table = job_models.Composition._meta.table_name
    if "consumed" not in {c.name for c in db.get_columns(table)}:
        migrator = SchemaMigrator.from_database(getattr(db, "obj", None) or db)
        # NOT NULL DEFAULT 0 in one ALTER on both backends: no table rebuild on SQLite
        # (which would drop the table that posts and runs reference)
        column = BigIntegerField(default=0, constraints=[SQL("DEFAULT 0")])
        migrate(migrator.add_column(table, "consumed", column, allow_not_null=True))


def _webhook_endpoints(db):
    """Create the endpoint and attempt tables and add ``deliveries.endpoint`` where it is
    missing (a database made before it existed); both steps are safe to run again."""
    from peewee import CharField
    from playhouse.migrate import SchemaMigrator, migrate

    db.create_tables(list(job_models.ENDPOINT_MODELS), safe=True)
    table = job_models.Delivery._meta.table_name
    if "endpoint" not in {c.name for c in db.get_columns(table)}:
        migrator = SchemaMigrator.from_database(getattr(db, "obj", None) or db)
        migrate(migrator.add_column(table, "endpoint", CharField(max_length=40, null=True)))


MIGRATIONS = [
    # Accounts, keys, plans, prices, the credit ledger and idempotency records.
    (1, "initial schema",
     migrations.create_tables(*metering_models.ALL_MODELS, *oauth_models.ALL_MODELS)),
    # Compositions (async job records), posts, webhook hooks, secrets and deliveries.
    (2, "jobs, posts and webhooks", migrations.create_tables(*job_models.ALL_MODELS)),
    # OAuth2 clients, authorization codes and tokens.
    (3, "oauth2 provider", migrations.create_tables(*provider_models.ALL_MODELS)),
    # Bearer-token refresh records and per-account settings.
    (4, "bearer tokens and account settings",
     migrations.create_tables(*session_models.ALL_MODELS)),
    # Identities linked from social login providers.
    (5, "social identities", migrations.create_tables(*social_models.ALL_MODELS)),
    # Payments (credit-pack purchases), their refunds, and credits owed after refunds.
    (6, "payments", migrations.create_tables(*payment_models.ALL_MODELS)),
    # Billing plans, memberships (tiers) and the monthly allowance grants (seed 003).
    (7, "billing plans and memberships", migrations.create_tables(*billing.BILLING_MODELS)),
    # Gift card batches and their hashed codes (seed 003).
    (8, "gift cards", migrations.create_tables(*giftcards.GIFT_CARD_MODELS)),
    # Projects and project runs (issue 11), and what a composition's parts used.
    (9, "projects and project runs", _projects),
    # The content library (issue 12): blobs, items, versions, collaborations, daily
    # counts and resumable uploads.
    (10, "content library", migrations.create_tables(*content_models.ALL_MODELS)),
    # Upload size limits and storage quotas per plan.
    (11, "storage limits per plan", migrations.create_tables(*content_models.PLAN_MODELS)),
    # Story videos (issue 16, seed 001): stories and their scenes.
    (12, "story videos", migrations.create_tables(*stories.ALL_MODELS)),
    # Webhook endpoints (issue 15): several per account, each with its own secret and
    # event filter, and the per-attempt delivery log.
    (13, "webhook endpoints and delivery attempts", _webhook_endpoints),
]



def upgrade() -> list[int]:
    """Apply the pending migrations; returns the versions applied."""
    return migrations.upgrade(MIGRATIONS)


def current_version() -> int:
    return migrations.current_version()
