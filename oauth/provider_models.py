"""OAuth2 provider tables (clients, codes, tokens).

Every secret (client secret, authorization code, access and refresh token) is stored as
its SHA-256 only: they carry 192+ bits of randomness, so a fast hash suffices and a
stolen table is useless. One ``OAuthToken`` row is one issuance (an access token and its
refresh token); a refresh writes a new row and starts the old refresh token's grace period.
"""

from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, ForeignKeyField, TextField

from core.clock import utcnow
from metering.models import Account, BaseModel


class OAuthClient(BaseModel):
    """A registered application (e.g. the Zapier app); ``confidential`` ones have a secret."""

    client_id = CharField(primary_key=True, max_length=64)
    secret_hash = CharField(max_length=64, null=True)
    name = CharField(max_length=128)
    redirect_uris = TextField()  # one URI per line, compared exactly
    scopes = TextField()  # space-separated scopes this client may ask for
    confidential = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)

    @property
    def redirect_uri_list(self) -> list[str]:
        return [u for u in self.redirect_uris.splitlines() if u]

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()


class AuthorizationCode(BaseModel):
    """A one-time code from the consent page; ``used`` is claimed with a conditional UPDATE."""

    id = CharField(primary_key=True, max_length=40)  # also the grant id of its tokens
    code_hash = CharField(max_length=64, unique=True)
    client = ForeignKeyField(OAuthClient, backref="codes", on_delete="CASCADE")
    account = ForeignKeyField(Account, backref="oauth_codes", on_delete="CASCADE")
    redirect_uri = TextField()
    scopes = TextField()
    code_challenge = CharField(max_length=128)
    code_challenge_method = CharField(max_length=8, default="S256")
    expires_at = DateTimeField()
    used = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)


class OAuthToken(BaseModel):
    """One issuance: access token ``gwo_...`` and refresh token ``gwr_...`` (hashed).

    ``grant_id`` ties together every token descended from one authorization code, so a
    replayed code or a revoked refresh token can take the whole family down.
    ``previous_refresh_hash`` names the refresh token this row was issued for;
    ``refresh_grace_until`` is set on the old row when its refresh token is rotated: it
    keeps working until then, so two clients racing to refresh both succeed.
    """

    id = CharField(primary_key=True, max_length=40)
    grant_id = CharField(max_length=40, index=True)
    client = ForeignKeyField(OAuthClient, backref="tokens", on_delete="CASCADE")
    account = ForeignKeyField(Account, backref="oauth_tokens", on_delete="CASCADE")
    scopes = TextField()
    access_hash = CharField(max_length=64, unique=True)
    access_expires_at = DateTimeField()
    access_revoked_at = DateTimeField(null=True)
    refresh_hash = CharField(max_length=64, unique=True, null=True)
    refresh_expires_at = DateTimeField(null=True)
    previous_refresh_hash = CharField(max_length=64, null=True, index=True)
    refresh_grace_until = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)  # the whole row: access and refresh
    created_at = DateTimeField(default=utcnow)


ALL_MODELS = [OAuthClient, AuthorizationCode, OAuthToken]
