"""Idempotency keys (CONTRACT 5): claim, complete with the response, replay, expire.

A claim is committed on its own so a concurrent duplicate can see it and get 409; its
completion (the response to replay) is written inside the same transaction as the debit
it protects, so a replay and a charge can never disagree. A claim whose request failed is
released (nothing was charged, so a retry may run); a claim left behind by a crashed
process can be taken over once its lock has expired.

Only a body that can really be sent is stored: ``complete`` serializes it strictly, as the
JSON that goes on the wire (UTF-8, no ``default=``), so a result that could never be
answered (a lone surrogate, a non-JSON type) raises inside the transaction and rolls back
the charge with it instead of being replayed as an empty 500 for a day.

``once`` wraps any other money change (admin grants and refunds) in the same rules:
claim, do the work and complete in one transaction, replay, release on failure.
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


@dataclasses.dataclass(frozen=True)
class Answer:
    """What ``once`` returns: the response to send, and whether it is a replay."""

    status: int
    body: dict
    replayed: bool = False


def strict_json(value) -> str:
    """``value`` as the JSON text that will be sent, or raise.

    The same serialization as the HTTP layer's JSON handler (``ensure_ascii=False``,
    then UTF-8), checked strictly: ``UnicodeEncodeError`` (a ``ValueError``) for a lone
    surrogate, ``TypeError`` for a value JSON has no type for, ``ValueError`` for a cycle.
    """
    text = json.dumps(value, ensure_ascii=False)
    text.encode("utf-8")
    return text


def encodable(value) -> bool:
    try:
        strict_json(value)
    except (TypeError, ValueError):
        return False
    return True


def scoped_key(scope: str, key: str) -> str:
    """A key in its own namespace (hashed, so a key of the full 255 characters still fits):
    an admin's key never collides with the account's own keys for its action calls."""
    return f"{scope}:" + hashlib.sha256(key.encode()).hexdigest()


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
    text = strict_json(body)  # raises for a body that could never be sent: rolls back
    (IdempotencyRecord.update(state=IdempotencyRecord.COMPLETED, response_status=status,
                              response_body=text, receipt=receipt)
     .where(IdempotencyRecord.id == record_id).execute())


def settle(record_id, status: int) -> None:
    """Set the status a completed record replays: an asynchronous call is completed as 202
    with its debit, and only its wait decides whether the first answer was 202 or 200
    (the job ended in time). The body (the composition's uid and the money ``meta``) does
    not change, so nothing about the charge can disagree."""
    (IdempotencyRecord.update(response_status=status)
     .where((IdempotencyRecord.id == record_id)
            & (IdempotencyRecord.state == IdempotencyRecord.COMPLETED)).execute())


def release(record_id) -> None:
    """Forget a claim whose request failed before anything was charged."""
    IdempotencyRecord.delete().where(
        (IdempotencyRecord.id == record_id)
        & (IdempotencyRecord.state == IdempotencyRecord.IN_PROGRESS)
    ).execute()


def discard(record_id) -> None:
    """Forget a record whatever its state: for a completed request whose money change was
    then undone in the same transaction (an async job refunded because the queue was down),
    so a retry with the key runs afresh instead of replaying the failure."""
    IdempotencyRecord.delete().where(IdempotencyRecord.id == record_id).execute()


def once(account_id, scope, key, fingerprint, work, *, now, ttl_s, lock_s) -> Answer:
    """Run ``work()`` at most once per ``(account_id, scope, key)``.

    ``work()`` returns ``(status, body, receipt)`` and runs in one transaction with the
    record's completion; without a key it just runs in a transaction. A replay returns the
    first answer; a failure (``work`` raising, or a body that cannot be sent) rolls back
    and releases the key. Raises like ``claim`` for a reused key or one in progress.
    """
    if key is None:
        with write_transaction():
            status, body, _ = work()
        return Answer(status, body)
    check_key(key)
    found = claim(account_id, scoped_key(scope, key), fingerprint, now=now, ttl_s=ttl_s,
                  lock_s=lock_s)
    if isinstance(found, Replay):
        return Answer(found.status, found.body, replayed=True)
    try:
        with write_transaction():
            status, body, receipt = work()
            complete(found, status, body, receipt)
    except BaseException:
        release(found)
        raise
    return Answer(status, body)


def purge_expired(now) -> int:
    """Delete records past their retention; run by ``gateway cleanup`` and the serve loop."""
    return IdempotencyRecord.delete().where(IdempotencyRecord.expires_at <= now).execute()
