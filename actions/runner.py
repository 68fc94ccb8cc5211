"""Running an action for a caller: price it, honour its idempotency key, debit, perform.

This is the one place where an action meets money. The debit, the action's result and
the idempotency record's completion are written in one transaction: if ``perform``
raises, the debit rolls back with it and the claim is released, so a failed call
changes nothing.
"""

from __future__ import annotations

import dataclasses
import time

from actions.registry import ActionContext, Registry
from metering import idempotency, ledger, plans
from metering.db import utcnow, write_transaction


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int
    data: dict
    meta: dict
    replayed: bool = False


class ActionService:
    def __init__(self, registry: Registry, config, clock=utcnow, monotonic=time.monotonic):
        self.registry = registry
        self.config = config
        self.clock = clock
        self.monotonic = monotonic

    def price_of(self, name: str) -> int:
        """Operator override (database) > ``PRICES`` environment default > the action's own."""
        action = self.registry.get(name)
        override = plans.price_override(name)
        if override is not None:
            return override
        return self.config.prices.get(name, action.price)

    def catalogue(self) -> list[dict]:
        overrides = plans.price_overrides()
        return [{
            "name": a.name, "title": a.title, "description": a.description,
            "credits": overrides.get(a.name, self.config.prices.get(a.name, a.price)),
            "async": a.mode == "async", "ttl": a.ttl_s * 1000 if a.ttl_s else None,
            "inputFields": [f.describe() for f in a.fields],
        } for a in self.registry]

    def run(self, caller, name, body, *, idempotency_key, request_id, method, path) -> Outcome:
        action = self.registry.get(name)
        data = action.validate(body)
        key = idempotency_key
        if key is None and isinstance(body, dict) and body.get("client_reference_id"):
            key = "client_reference_id:" + body["client_reference_id"]
        claim = None
        if key is not None:
            idempotency.check_key(key)
            now = self.clock()
            found = idempotency.claim(
                caller.account_id, key, idempotency.request_hash(method, path, body),
                now=now, ttl_s=self.config.idempotency_ttl_s,
                lock_s=self.config.idempotency_lock_s)
            if isinstance(found, idempotency.Replay):
                return Outcome(found.status, found.body["data"], found.body["meta"], True)
            claim = found
        try:
            return self._execute(caller, action, data, claim, request_id)
        except BaseException:
            if claim is not None:
                idempotency.release(claim)
            raise

    def _execute(self, caller, action, data, claim, request_id) -> Outcome:
        price = self.price_of(action.name)
        ctx = ActionContext(
            account_id=caller.account_id, request_id=request_id, price_of=self.price_of,
            balance=lambda: ledger.balance(caller.account_id), registry=self.registry,
        )
        meta = {"action": action.name}
        if price == 0 and claim is None:  # nothing to write: no transaction on the free path
            return Outcome(200, action.perform(ctx, data), meta)
        with write_transaction():
            receipt = None
            if price > 0:
                entry = ledger.debit(caller.account_id, price, action=action.name,
                                     request_id=request_id)
                receipt = entry.receipt
                meta.update(creditsUsed=price, availableCredit=entry.balance_after,
                            txnReceipt=entry.receipt)
            result = action.perform(ctx, data)
            if claim is not None:
                idempotency.complete(claim, 200, {"data": result, "meta": meta}, receipt)
        return Outcome(200, result, meta)
