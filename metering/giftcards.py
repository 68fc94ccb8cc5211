"""Gift cards (seed 003): batches created by an admin, codes stored only as SHA-256 hashes,
each redeemed once for a PRO tier for some days and, optionally, credits.

The plain codes exist only in the answer of the request that created the batch (the CSV
of ``GET /downloadGiftCards``); the database holds their hashes, as for API keys. A redeem
is one transaction: a conditional UPDATE claims the card (``redeemed_by IS NULL``), then
the tier and the ``grant`` ledger row are written; a racing redeem of the same code finds
the row claimed and changes nothing (docs/BILLING.md).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import secrets

from peewee import (
    BigIntegerField,
    CharField,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    TextField,
)

from core.errors import Conflict, NotFound
from core.ids import new_id
from core.timefmt import iso
from metering import billing, ledger
from metering.db import write_transaction
from metering.models import Account, BaseModel

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: 5 bits a character
CODE_CHARS = 20  # 100 bits
MAX_CARDS = 1000  # one batch
MAX_DAYS = 36500
DISTRIBUTION_PROVIDERS = ("giftcard", "g2a")


class GiftCardBatch(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    distribution_provider = CharField(max_length=16)
    tier = IntegerField()
    days = IntegerField()
    credits = BigIntegerField(default=0)
    usd_price = DoubleField(default=0)
    count = IntegerField()
    additional_information = TextField(default="")
    expires_at = DateTimeField(null=True)  # a card not redeemed by then is void
    created_at = DateTimeField()


class GiftCard(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # the card's productID
    batch = ForeignKeyField(GiftCardBatch, backref="cards", on_delete="CASCADE")
    code_hash = CharField(max_length=64, unique=True)
    external_code = CharField(max_length=128, null=True)
    redeemed_by = ForeignKeyField(Account, null=True, on_delete="SET NULL")
    redeemed_at = DateTimeField(null=True)
    receipt = CharField(max_length=40, null=True)


GIFT_CARD_MODELS = [GiftCardBatch, GiftCard]


class UnknownGiftCard(NotFound):
    message = "No such gift card"


class UsedGiftCard(Conflict):
    message = "This gift card was already redeemed"


class TierRefused(Conflict):
    """The seed's tier rule: an active, non-expiring tier at or above the card's."""

    message = ("You already have an active Premium Tier equal to or greater than this gift "
               "card's tier")


def hash_code(code: str) -> str:
    normal = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(normal.encode()).hexdigest()


def _new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return "-".join(raw[i:i + 5] for i in range(0, CODE_CHARS, 5))


@dataclasses.dataclass(frozen=True)
class Created:
    batch: GiftCardBatch
    cards: list  # (GiftCard, plain code), the only time the codes exist


def create_batch(*, count, tier, days, credits=0, usd_price=0.0, provider="giftcard",
                 external_codes=(), info="", expires_at=None, now) -> Created:
    with write_transaction():
        batch = GiftCardBatch.create(
            id=new_id("gcb", 8), distribution_provider=provider, tier=tier, days=days,
            credits=credits, usd_price=usd_price, count=count, additional_information=info,
            expires_at=expires_at, created_at=now)
        cards = []
        for i in range(count):
            code = _new_code()
            card = GiftCard(id=new_id("gc", 10), batch=batch.id, code_hash=hash_code(code),
                            external_code=external_codes[i] if i < len(external_codes) else None)
            cards.append((card, code))
        if cards:
            GiftCard.bulk_create([c for c, _ in cards], batch_size=200)
    return Created(batch, cards)


def to_csv(created: Created) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    b = created.batch
    writer.writerow(["code", "productID", "tier", "days", "credits", "usdPrice",
                     "distributionProvider", "externalCode", "expiresAt", "batchID"])
    for card, code in created.cards:
        writer.writerow([code, card.id, b.tier, b.days, b.credits, b.usd_price,
                         b.distribution_provider, card.external_code or "",
                         iso(b.expires_at) or "", b.id])
    return out.getvalue()


@dataclasses.dataclass(frozen=True)
class Redeemed:
    product_id: str
    tier: int
    tier_expiration: dt.datetime | None
    entry: ledger.LedgerEntry | None


def redeem(account_id, code: str, *, now, generations) -> Redeemed:
    """Redeem ``code`` for the account once. Raises ``UnknownGiftCard`` (no such code, or
    void), ``UsedGiftCard`` (claimed by anyone, this account included) or ``TierRefused``
    (the seed's tier rule; the card stays unredeemed)."""
    digest = hash_code(code)
    with write_transaction():
        card = GiftCard.get_or_none(GiftCard.code_hash == digest)
        if card is None:
            raise UnknownGiftCard()
        batch = GiftCardBatch.get_by_id(card.batch_id)
        if batch.expires_at is not None and batch.expires_at <= now:
            raise UnknownGiftCard("This gift card has expired")
        claimed = GiftCard.update(redeemed_by=account_id, redeemed_at=now).where(
            (GiftCard.id == card.id) & GiftCard.redeemed_by.is_null()).execute()
        if not claimed:  # another redeem holds or took it: its commit decides, once
            raise UsedGiftCard()
        tier, expiration = billing.tier_of(account_id, now)
        if batch.tier > 0:
            m = billing.membership(account_id)
            expiring = billing.active(m, now) and m.tier_expiration is not None
            if tier >= batch.tier and not expiring:
                raise TierRefused()
            if expiring and tier == batch.tier:  # extend the expiring tier
                expiration = m.tier_expiration + dt.timedelta(days=batch.days)
            else:
                expiration = now + dt.timedelta(days=batch.days)
            tier = batch.tier
            billing.set_membership(account_id, tier=tier, product_id=card.id,
                                   processor="giftcard", now=now, generations=generations,
                                   expiration=expiration,
                                   info=batch.additional_information)
        entry = None
        if batch.credits > 0:
            entry = ledger.grant(account_id, batch.credits, kind="grant",
                                 reason=f"gift card {card.id}")
            GiftCard.update(receipt=entry.receipt).where(GiftCard.id == card.id).execute()
    return Redeemed(card.id, tier, expiration, entry)
