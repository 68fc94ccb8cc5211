"""Idempotency keys (CONTRACT 5): claim, complete with the response, replay, expire.

A claim is committed on its own so a concurrent duplicate can see it and get 409; its
completion (the response to replay) is written inside the same transaction as the debit
it protects, so a replay and a charge can never disagree. A claim whose request failed is
released (nothing was charged, so a retry may run); a claim left behind by a crashed
process can be taken over once its lock has expired.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math

from peewee import IntegrityError

from core.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidRequest
from metering.db import database, write_transaction
from metering.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class Replay:
    status: int
    body: dict
    receipt: str | None


def check_key(key: str, field: str = "Idempotency-Key") -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidRequest(
            f"{field} must be 1-255 printable ASCII characters",
            details=[{"field": field, "problem": "1-255 printable ASCII characters"}],
        )
    return key


def request_hash(method: str, path: str, body) -> str:
    """Fingerprint of what the request asks for; the same key with another one is a 422."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def claim(account_id, key, fingerprint, *, now, ttl_s, lock_s):
    """Claim ``key`` for this request. Returns the record id, or a ``Replay`` of the first answer.

    Raises ``IdempotencyKeyReused`` for a different request and ``IdempotencyInProgress``
    while the first request still runs.
    """
    for _ in range(3):
        try:
            with write_transaction():
                record = IdempotencyRecord.create(
                    account=account_id, key=key, request_hash=fingerprint,
                    locked_until=now + dt.timedelta(seconds=lock_s),
                    created_at=now, expires_at=now + dt.timedelta(seconds=ttl_s),
                )
            return record.id
        except IntegrityError:
            pass
        found = IdempotencyRecord.get_or_none(
            (IdempotencyRecord.account == account_id) & (IdempotencyRecord.key == key)
        )
        if found is None:
            continue  # released between our INSERT and SELECT: try again
        if found.expires_at <= now:
            _delete_if(found.id, expires_before=now)
            continue
        if found.request_hash != fingerprint:
            raise IdempotencyKeyReused()
        if found.state == IdempotencyRecord.COMPLETED:
            return Replay(found.response_status, json.loads(found.response_body), found.receipt)
        if found.locked_until <= now and _take_over(found, now, lock_s):
            return found.id
        wait = max(1, math.ceil((found.locked_until - now).total_seconds()))
        raise IdempotencyInProgress(retry_after=min(wait, 5))
    raise IdempotencyInProgress(retry_after=1)


def _take_over(found, now, lock_s) -> bool:
    """Re-lock a claim abandoned by a crashed process; only one taker can win the UPDATE."""
    updated = (IdempotencyRecord.update(locked_until=now + dt.timedelta(seconds=lock_s))
               .where((IdempotencyRecord.id == found.id)
                      & (IdempotencyRecord.state == IdempotencyRecord.IN_PROGRESS)
                      & (IdempotencyRecord.locked_until == found.locked_until))
               .execute())
    return updated == 1


def _delete_if(record_id, *, expires_before):
    IdempotencyRecord.delete().where(
        (IdempotencyRecord.id == record_id) & (IdempotencyRecord.expires_at <= expires_before)
    ).execute()


def complete(record_id, status: int, body: dict, receipt: str | None) -> None:
    """Store the response to replay; call inside the transaction that did the work."""
    assert database.in_transaction(), "complete() belongs in the debit's transaction"
    (IdempotencyRecord.update(state=IdempotencyRecord.COMPLETED, response_status=status,
                              response_body=json.dumps(body, default=str), receipt=receipt)
     .where(IdempotencyRecord.id == record_id).execute())


def release(record_id) -> None:
    """Forget a claim whose request failed before anything was charged."""
    IdempotencyRecord.delete().where(
        (IdempotencyRecord.id == record_id)
        & (IdempotencyRecord.state == IdempotencyRecord.IN_PROGRESS)
    ).execute()


def purge_expired(now) -> int:
    """Delete records past their retention; run by ``gateway cleanup`` and the serve loop."""
    return IdempotencyRecord.delete().where(IdempotencyRecord.expires_at <= now).execute()
