"""Buying credit packs, exactly once (docs/PAYMENTS.md has the argument).

A purchase is a ``Payment`` row in state ``created``. Two paths can learn that PayPal
captured it: the payer's redirect (``execute``) and PayPal's webhook. Both end in
``_complete``, where one conditional UPDATE (``state = 'created'`` -> ``'completed'``)
claims the row and the ``purchase`` ledger row is written in the same transaction. Under
PostgreSQL's row locks a second claimer waits for the first to commit, re-reads the row,
matches nothing and returns the first one's receipt; if the first rolled back, the
second claims it. However many executes and webhooks arrive, in whatever order and at
the same time, exactly one purchase row exists per payment.

Refunds and reversals are keyed by PayPal's refund (or reversal) id, unique in
``PaymentRefund``: each takes its credits back once, never below a zero balance, and what
it could not take is owed (``OwedCredits``) until a later purchase settles it.
"""

from __future__ import annotations

import json
import logging
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from peewee import IntegrityError

from core.clock import SYSTEM, Clock
from core.config import PaymentConfig
from core.errors import AuthError, InvalidRequest, NotFound, ServiceUnavailable
from core.ids import new_id
from metering import ledger
from metering.db import database, write_transaction
from metering.payments.models import Payment, PaymentRefund
from metering.payments.providers import PaymentProvider, ProviderRefused

log = logging.getLogger("metering.payments")

COMPLETED_EVENTS = ("PAYMENT.SALE.COMPLETED", "PAYMENT.CAPTURE.COMPLETED")
REFUND_EVENTS = ("PAYMENT.SALE.REFUNDED", "PAYMENT.CAPTURE.REFUNDED")
REVERSAL_EVENTS = ("PAYMENT.SALE.REVERSED", "PAYMENT.CAPTURE.REVERSED")


def _money(value) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


class PurchaseService:
    def __init__(self, provider: PaymentProvider | None, config: PaymentConfig, *,
                 clock: Clock = SYSTEM, ids=new_id):
        self.provider = provider
        self.config = config
        self.clock = clock
        self.ids = ids

    def _require(self) -> PaymentProvider:
        if self.provider is None:
            raise ServiceUnavailable("Payments are not configured on this gateway")
        return self.provider

    def packs(self) -> list[dict]:
        return [{"credits": p.credits, "amount": p.amount, "currency": p.currency}
                for p in self.config.packs]

    def pack_for(self, amount, currency, credits):
        """The server's pack that the request names, or 400 with what did not match."""
        details = []
        money = _money(amount)
        if money is None:
            details.append({"field": "amount", "problem": "must be a decimal amount"})
        if not isinstance(currency, str) or not currency.strip():
            details.append({"field": "currency", "problem": "must be a currency code"})
        if isinstance(credits, bool) or not isinstance(credits, int):
            details.append({"field": "credits", "problem": "must be an integer"})
        if not details:
            for pack in self.config.packs:
                if pack.credits == credits and Decimal(pack.amount) == money \
                        and pack.currency == currency.strip().upper():
                    return pack
            details.append({"field": "credits", "problem": "no credit pack has this credits, "
                            "amount and currency; packs: " + ", ".join(
                                f"{p.credits}:{p.amount}:{p.currency}" for p in self.config.packs)})
        raise InvalidRequest("amount, currency and credits must name one of the credit packs",
                             details=details)

    # --- the purchase ------------------------------------------------------------------

    def create(self, account_id, amount, currency, credits, *, return_url=None,
               cancel_url=None) -> str:
        """Create the payment at PayPal and its row; returns the payer's approval URL.
        ``return_url``/``cancel_url`` replace the configured ones for this payment (the
        web console's own return page)."""
        pack = self.pack_for(amount, currency, credits)
        provider = self._require()
        payment_id = self.ids("pay")
        created = provider.create(pack, reference=payment_id,
                                  request_id=f"create-{payment_id}", return_url=return_url,
                                  cancel_url=cancel_url)
        now = self.clock.now()
        Payment.create(id=payment_id, account=account_id, provider=provider.name,
                       provider_id=created.provider_id, credits=pack.credits,
                       amount=pack.amount, currency=pack.currency, state="created",
                       created_at=now, updated_at=now)
        return created.approval_url

    def execute(self, account_id, provider_id, payer_id) -> dict:
        """The payer came back from PayPal: capture the payment and credit it once."""
        for field, value in (("paymentId", provider_id), ("payerId", payer_id)):
            if not isinstance(value, str) or not value.strip() or len(value) > 64:
                raise InvalidRequest(f"{field} is required",
                                     details=[{"field": field, "problem": "must be a string"}])
        row = Payment.get_or_none((Payment.provider_id == provider_id)
                                  & (Payment.account == account_id))
        if row is None:
            raise NotFound("No such payment")
        if row.state != "completed":
            provider = self._require()
            captured = provider.capture(row.provider_id, payer_id,
                                        request_id=f"capture-{row.id}")
            if not self._matches(row, captured.amount, captured.currency):
                raise ProviderRefused("PayPal captured a different amount than the pack's")
            if not captured.completed:
                return {"message": "Payment is pending at PayPal; the credits arrive when it "
                                   "completes", "credits_awarded": 0, "receipt": None,
                        "state": "pending"}
            self._complete(row.id, captured.capture_id)
            row = Payment.get_by_id(row.id)
        return {"message": "Payment successful", "credits_awarded": row.credits,
                "receipt": row.receipt, "state": row.state}

    @staticmethod
    def _matches(row, amount, currency) -> bool:
        money = _money(amount)
        return money is not None and money == Decimal(row.amount) \
            and str(currency or "").upper() == row.currency

    def _complete(self, payment_id, capture_id) -> bool:
        """Claim the payment and credit it, in one transaction; True for the one claimer."""
        with write_transaction():
            claimed = (Payment.update(state="completed", capture_id=capture_id,
                                      updated_at=self.clock.now())
                       .where((Payment.id == payment_id) & (Payment.state == "created"))
                       .execute())
            if not claimed:
                return False
            row = Payment.get_by_id(payment_id)
            entry = ledger.purchase(row.account_id, row.credits,
                                    reason=f"PayPal purchase {row.provider_id}")
            Payment.update(receipt=entry.receipt).where(Payment.id == payment_id).execute()
            return True

    # --- webhooks ----------------------------------------------------------------------

    def webhook(self, headers: dict, raw_body: bytes) -> dict:
        """A PayPal webhook: verified by PayPal first; an unverified one changes nothing."""
        provider = self._require()
        if not provider.verify_webhook(headers, raw_body):
            raise AuthError("AUTH_FAILED", "The webhook's signature did not verify")
        event = json.loads(raw_body)
        kind = event.get("event_type") if isinstance(event, dict) else None
        resource = event.get("resource") if isinstance(event, dict) else None
        if not isinstance(resource, dict):
            return {"handled": False, "event_type": kind}
        if kind in COMPLETED_EVENTS:
            return self._on_completed(kind, resource)
        if kind in REFUND_EVENTS or kind in REVERSAL_EVENTS:
            return self._on_refund(kind, resource)
        return {"handled": False, "event_type": kind}

    @staticmethod
    def _amount_of(resource):
        amount = resource.get("amount") if isinstance(resource.get("amount"), dict) else {}
        return (amount.get("total", amount.get("value")),
                amount.get("currency", amount.get("currency_code")))

    @staticmethod
    def _order_id(resource):
        related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
        return related.get("order_id") if isinstance(related, dict) else None

    @staticmethod
    def _up_capture(resource):
        for link in resource.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == "up" and "/captures/" in str(
                    link.get("href")):
                return str(link["href"]).rstrip("/").rsplit("/", 1)[-1]
        return None

    def _on_completed(self, kind, resource):
        capture_id = resource.get("id")
        provider_id = resource.get("parent_payment") if kind == "PAYMENT.SALE.COMPLETED" \
            else self._order_id(resource)
        row = Payment.get_or_none(Payment.provider_id == str(provider_id)) \
            if provider_id else None
        amount, currency = self._amount_of(resource)
        if row is None or not capture_id or not self._matches(row, amount, currency):
            log.warning("PayPal %s for an unknown payment or amount: %s", kind, provider_id)
            return {"handled": False, "event_type": kind}
        credited = self._complete(row.id, str(capture_id))
        return {"handled": True, "event_type": kind, "credited": credited}

    def _find_refunded(self, resource):
        keys = [resource.get("parent_payment"), self._order_id(resource)]
        for key in filter(None, keys):
            row = Payment.get_or_none(Payment.provider_id == str(key))
            if row is not None:
                return row
        for key in filter(None, [resource.get("sale_id"), self._up_capture(resource),
                                 resource.get("id")]):
            row = Payment.get_or_none(Payment.capture_id == str(key))
            if row is not None:
                return row
        return None

    def _on_refund(self, kind, resource):
        refund_id = resource.get("id")
        row = self._find_refunded(resource)
        if row is None or not refund_id or row.state != "completed":
            log.warning("PayPal %s for an unknown or uncaptured payment", kind)
            return {"handled": False, "event_type": kind}
        if kind in REVERSAL_EVENTS:
            worth = row.credits
        else:
            amount, currency = self._amount_of(resource)
            money = _money(amount)
            if money is None or str(currency or "").upper() != row.currency:
                return {"handled": False, "event_type": kind}
            share = abs(money) / Decimal(row.amount) * row.credits
            worth = int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        applied = self._take_back(row.id, f"{kind}:{refund_id}",
                                  "reversal" if kind in REVERSAL_EVENTS else "refund", worth)
        return {"handled": True, "event_type": kind, "applied": applied}

    def _take_back(self, payment_id, refund_key, kind, worth) -> bool:
        with write_transaction():
            try:
                with database.atomic():
                    refund = PaymentRefund.create(refund_id=refund_key[:80], payment=payment_id,
                                                  kind=kind, credits=0, taken=0,
                                                  created_at=self.clock.now())
            except IntegrityError:
                return False  # this refund was applied before
            row = ledger.for_update(Payment.select().where(Payment.id == payment_id)).get()
            credits = max(0, min(worth, row.credits - row.refunded_credits))
            if credits:
                Payment.update(refunded_credits=Payment.refunded_credits + credits,
                               updated_at=self.clock.now()).where(
                    Payment.id == payment_id).execute()
                entry, _owed = ledger.take_back(
                    row.account_id, credits,
                    reason=f"PayPal {kind} of {row.provider_id}")
                PaymentRefund.update(credits=credits,
                                     taken=-entry.amount if entry else 0,
                                     receipt=entry.receipt if entry else None).where(
                    PaymentRefund.id == refund.id).execute()
            return True
