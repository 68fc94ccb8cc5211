"""The payment tables (migration 6): one row per purchase, one per refund or reversal,
and what an account still owes after a refund took back more than it had left."""

from __future__ import annotations

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField

from core.clock import utcnow
from metering.models import Account, BaseModel


class Payment(BaseModel):
    """One purchase of a credit pack through a provider.

    ``provider_id`` (PayPal's payment or order id) and ``capture_id`` (the sale or capture
    id) are unique: a capture maps to one row, and the row's ``state`` moves from
    ``created`` to ``completed`` by one conditional UPDATE, which is what credits once.
    """

    STATES = ("created", "completed")

    id = CharField(primary_key=True, max_length=40)  # pay_...
    account = ForeignKeyField(Account, backref="payments", on_delete="CASCADE")
    provider = CharField(max_length=32)
    provider_id = CharField(max_length=64, unique=True)
    capture_id = CharField(max_length=64, unique=True, null=True)
    credits = BigIntegerField()
    amount = CharField(max_length=32)  # a decimal string, e.g. "9.99"
    currency = CharField(max_length=3)
    state = CharField(max_length=16, default="created", index=True)
    receipt = CharField(max_length=40, null=True)  # the purchase's txn_...
    refunded_credits = BigIntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class PaymentRefund(BaseModel):
    """One refund or reversal, applied once: ``refund_id`` (PayPal's refund id, or the
    reversed capture's) is unique."""

    refund_id = CharField(max_length=80, unique=True)
    payment = ForeignKeyField(Payment, backref="refunds", on_delete="CASCADE")
    kind = CharField(max_length=16)  # refund | reversal
    credits = BigIntegerField()  # what the refund was worth in credits
    taken = BigIntegerField()  # what the adjustment took from the balance
    receipt = CharField(max_length=40, null=True)  # the adjustment's txn_..., if any
    created_at = DateTimeField(default=utcnow)


class OwedCredits(BaseModel):
    """Credits a refund could not take back (the balance was already spent). An account
    with ``credits > 0`` here is refused paid actions; its next purchase settles it first."""

    account = ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    credits = BigIntegerField(default=0)
    updated_at = DateTimeField(default=utcnow)


ALL_MODELS = [Payment, PaymentRefund, OwedCredits]
