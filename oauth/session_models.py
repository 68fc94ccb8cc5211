"""Tables for password bearer tokens and account settings (migration 4 creates them).

A login starts a ``TokenFamily`` (one bearer session). Access tokens are stateless JWTs
that name their family; refresh tokens are opaque, stored only as SHA-256 hashes, used
once, and each rotation adds the next token of the same family. Revoking the family (on
reuse of a rotated refresh token) kills its access and refresh tokens at once.
"""

from __future__ import annotations

from peewee import BigAutoField, CharField, DateTimeField, ForeignKeyField, TextField

from core.clock import utcnow
from metering.models import Account, BaseModel


class TokenFamily(BaseModel):
    """One bearer session: every token issued from one password login."""

    id = CharField(primary_key=True, max_length=40)  # tfam_...
    account = ForeignKeyField(Account, on_delete="CASCADE", index=True)
    created_at = DateTimeField(default=utcnow)
    revoked_at = DateTimeField(null=True)
    revoked_reason = CharField(max_length=64, default="")


class RefreshToken(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # rtok_...
    family = ForeignKeyField(TokenFamily, on_delete="CASCADE", index=True)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    token_hash = CharField(max_length=64, unique=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)  # set when rotated; a later use is reuse
    replaced_by = CharField(max_length=40, null=True)
    revoked_at = DateTimeField(null=True)


class AccountSetting(BaseModel):
    """A per-account key/value setting (seed 000); ``value`` is stored as JSON text."""

    id = BigAutoField()
    account = ForeignKeyField(Account, on_delete="CASCADE")
    key = CharField(max_length=64)
    value = TextField()
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "key"), True),)


ALL_MODELS = [TokenFamily, RefreshToken, AccountSetting]
