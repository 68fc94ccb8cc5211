"""Tables for identities linked by social login (docs/SOCIAL.md).

Accounts carry no email of their own: an email reaches the gateway only verified by a login
provider, and is recorded here. ``AccountEmail`` maps each verified email to one account,
so a login through another provider with the same verified email finds the same account;
``SocialIdentity`` maps a provider's own user id to the account, so a login through the
same provider finds it even after the user changes their email there.
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, ForeignKeyField

from core.clock import utcnow
from metering.models import Account, BaseModel


class AccountEmail(BaseModel):
    """A verified email of an account (lower-cased); one account per email."""

    email = CharField(primary_key=True, max_length=320)
    account = ForeignKeyField(Account, backref="emails", on_delete="CASCADE")
    verified_by = CharField(max_length=32)  # the provider that first vouched for it
    created_at = DateTimeField(default=utcnow)


class SocialIdentity(BaseModel):
    """One provider account (``provider`` + the provider's user id) linked to an account."""

    provider = CharField(max_length=32)
    provider_user_id = CharField(max_length=128)
    account = ForeignKeyField(Account, backref="social_identities", on_delete="CASCADE")
    email = CharField(max_length=320)
    provider_username = CharField(max_length=255, default="")
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("provider", "provider_user_id"), True),)


ALL_MODELS = [AccountEmail, SocialIdentity]
