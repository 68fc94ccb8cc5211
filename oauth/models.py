"""Credentials that identify a caller: API keys (hashed) and, later, OAuth2 tokens."""

from __future__ import annotations

from peewee import CharField, DateTimeField, ForeignKeyField

from core.clock import utcnow
from metering.models import Account, BaseModel


class ApiKey(BaseModel):
    """An API key stored as the SHA-256 of its secret; only ``prefix`` is ever shown again."""

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(Account, backref="keys", on_delete="CASCADE")
    prefix = CharField(max_length=32)
    key_hash = CharField(max_length=64, unique=True)
    description = CharField(max_length=255, default="")
    created_at = DateTimeField(default=utcnow)
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)


ALL_MODELS = [ApiKey]
