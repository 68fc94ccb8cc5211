"""Tables that money and identity rest on.

Balances live on ``Account.balance`` and every change to it is one immutable
``LedgerEntry`` written in the same transaction, so the balance always equals the sum
of the account's ledger rows.
"""

from __future__ import annotations

from peewee import (
    BigAutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    SmallIntegerField,
    TextField,
)

from core.clock import utcnow
from metering.db import database


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Plan(BaseModel):
    """A rate-limit plan; ``default`` always exists (created from the configured defaults)."""

    name = CharField(primary_key=True, max_length=64)
    per_minute = IntegerField()
    per_day = IntegerField()
    updated_at = DateTimeField(default=utcnow)


class Account(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    username = CharField(max_length=64, unique=True)
    password_hash = CharField(max_length=255, null=True)
    balance = BigIntegerField(default=0)
    plan = CharField(max_length=64, default="default")
    low_credit_threshold = BigIntegerField(null=True)
    disabled = BooleanField(default=False)
    created_at = DateTimeField(default=utcnow)


class Price(BaseModel):
    """An operator's override of an action's price; absent means the action's default."""

    action = CharField(primary_key=True, max_length=64)
    credits = BigIntegerField()
    updated_at = DateTimeField(default=utcnow)


class LedgerEntry(BaseModel):
    """One immutable change of a balance; ``receipt`` is the public ``txn_...`` id.

    ``refund_of`` is unique, so a receipt can be refunded once however many processes
    try at the same time (NULLs are distinct in both backends' unique indexes).
    """

    KINDS = ("debit", "refund", "grant", "adjustment", "purchase")

    id = BigAutoField()
    receipt = CharField(max_length=40, unique=True)
    account = ForeignKeyField(Account, backref="ledger", on_delete="CASCADE")
    kind = CharField(max_length=16)
    amount = BigIntegerField()  # signed: debits negative, refunds and grants positive
    balance_after = BigIntegerField()
    action = CharField(max_length=64, null=True)
    reason = CharField(max_length=255, default="")
    refund_of = CharField(max_length=40, null=True, unique=True)
    request_id = CharField(max_length=128, null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "id"), False),)


class IdempotencyRecord(BaseModel):
    """A claimed ``Idempotency-Key``: in progress, or completed with the response to replay."""

    id = BigAutoField()
    account = ForeignKeyField(Account, on_delete="CASCADE")
    key = CharField(max_length=255)
    request_hash = CharField(max_length=64)
    state = SmallIntegerField(default=0)  # 0 in progress, 1 completed
    locked_until = DateTimeField()
    response_status = SmallIntegerField(null=True)
    response_body = TextField(null=True)
    receipt = CharField(max_length=40, null=True)
    created_at = DateTimeField(default=utcnow)
    expires_at = DateTimeField(index=True)

    IN_PROGRESS = 0
    COMPLETED = 1

    class Meta:
        indexes = ((("account", "key"), True),)


class SchemaMigration(BaseModel):
    version = IntegerField(primary_key=True)
    name = CharField(max_length=128)
    applied_at = DateTimeField(default=utcnow)


ALL_MODELS = [Plan, Account, Price, LedgerEntry, IdempotencyRecord]
