"""Small database reads the HTTP layer needs, so that no resource runs an ORM query or
handles the connection itself."""

from __future__ import annotations

from peewee import fn

from jobs import engine
from jobs.models import Composition, WebhookSecret
from metering.db import database


def has_webhook_secret(account_id) -> bool:
    """Whether the account already has a signing secret (it is revealed with the first hook)."""
    return WebhookSecret.select().where(WebhookSecret.account == account_id).exists()


def composition_counts() -> dict:
    """``{(action, status): count}`` over every composition (``gateway_compositions``)."""
    rows = (Composition.select(Composition.action, Composition.status,
                               fn.COUNT(Composition.uid).alias("n"))
            .group_by(Composition.action, Composition.status).tuples())
    return {(action, status): n for action, status, n in rows}


def release_connection() -> None:
    """Give the request's connection back to the pool before a long stream starts."""
    database.close()


def read_composition(account_id, uid) -> Composition:
    """``engine.get`` on a connection opened for this read and closed after it, so a
    long-lived stream never pins a pooled connection between its reads."""
    with database.connection_context():
        return engine.get(account_id, uid)
