"""API keys: generated with ``secrets``, shown once, stored as SHA-256, listed by prefix.

Keys carry 192 bits of randomness, so a fast hash is the right tool (unlike passwords):
lookups stay one indexed query, and the hash in the database is useless to a thief.
"""

from __future__ import annotations

import hashlib
import secrets

from core.clock import SYSTEM, Clock
from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from metering import cursors
from metering.generations import KEYS
from oauth.models import ApiKey

KEY_PREFIX = "gwk_"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def create_key(account_id: str, description: str = "") -> tuple[ApiKey, str]:
    """Make a key for the account; returns the row and the secret (never stored)."""
    if not isinstance(description, str) or len(description) > 255:
        raise InvalidRequest("description must be a string of at most 255 characters",
                             details=[{"field": "description",
                                       "problem": "at most 255 characters"}])
    secret = KEY_PREFIX + secrets.token_urlsafe(24)
    row = ApiKey.create(
        id=new_id("key", 8), account=account_id, prefix=secret[: len(KEY_PREFIX) + 6],
        key_hash=hash_key(secret), description=description,
    )
    return row, secret


def list_keys(account_id: str) -> list[ApiKey]:
    """Every key of the account, newest first (the operator's and internal uses)."""
    return list(ApiKey.select().where(ApiKey.account == account_id)
                .order_by(ApiKey.created_at.desc(), ApiKey.id.desc()))


def page_keys(account_id: str, *, limit: int, cursor: str | None = None):
    """One page of the account's keys, newest first: ``(rows, next_cursor)`` (CONTRACT 7)."""
    return cursors.page(ApiKey.select().where(ApiKey.account == account_id), tag="k",
                        created=ApiKey.created_at, ident=ApiKey.id, limit=limit, cursor=cursor)


def revoke_key(account_id: str | None, key_id: str, clock: Clock = SYSTEM, *,
               generations) -> ApiKey:
    """Revoke a key of this account (``None``: any account, for admins). Idempotent."""
    query = ApiKey.select().where(ApiKey.id == key_id)
    if account_id is not None:
        query = query.where(ApiKey.account == account_id)
    row = query.first()
    if row is None:
        raise NotFound("No such key")
    if row.revoked_at is None:
        row.revoked_at = clock.now()
        ApiKey.update(revoked_at=row.revoked_at).where(
            (ApiKey.id == key_id) & ApiKey.revoked_at.is_null()).execute()
    # Every time, also for a key already revoked: a retry after a failed bump (a 503)
    # announces the revocation to processes that may still hold the key.
    generations.changed(KEYS)
    return row

