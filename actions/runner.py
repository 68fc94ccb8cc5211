"""Running an action for a caller: price it, honour its idempotency key, debit, perform.

This is the one place where an action meets money. The debit, the action's result and
the idempotency record's completion are written in one transaction: if ``perform``
raises, the debit rolls back with it and the claim is released, so a failed call
changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from actions.registry import ActionContext, Registry
from core.clock import SYSTEM, Clock
from core.errors import ServiceUnavailable
from core.ids import new_id
from jobs import engine, webhooks
from jobs.gpu.catalogue import Catalogue
from metering import idempotency, ledger, plans
from metering.db import write_transaction

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int
    data: dict
    meta: dict
    replayed: bool = False
    composition_uid: str | None = None  # async actions: the job record to wait on and show


class ActionService:
    def __init__(self, registry: Registry, config, *, clock: Clock = SYSTEM, ids=new_id,
                 redis=None, policy=None, models=None):
        self.registry = registry
        self.models = models if models is not None else Catalogue()
        self.config = config
        self.redis = redis
        self.policy = policy
        self.clock = clock
        self.ids = ids

    def price_of(self, name: str) -> int:
        """Operator override (database) > ``PRICES`` environment default > the action's own."""
        action = self.registry.get(name)
        override = plans.price_override(name)
        if override is not None:
            return override
        return self.config.prices.get(name, action.price)

    def quote(self, action, data) -> int:
        """What this input costs: the action's base price, scaled by its pricing function."""
        base = self.price_of(action.name)
        return action.pricing(data, base, self) if action.pricing else base

    def prepare(self, name, body):
        """Validate and precheck: the action and its normalized input, or INVALID_REQUEST."""
        action = self.registry.get(name)
        data = action.validate(body)
        if action.precheck is not None:
            data = action.precheck(data, self) or data
        if data.get("callback_url"):
            self.policy.check_url(data["callback_url"], field="callback_url")
        return action, data

    def estimate(self, caller, name, body) -> dict:
        """The price of an input, without running or charging anything."""
        action, data = self.prepare(name, body)
        credits = self.quote(action, data)
        balance = ledger.balance(caller.account_id)
        return {"action": action.name, "credits": credits, "baseCredits": self.price_of(name),
                "pricing": action.pricing_doc or "fixed price per call",
                "balance": balance, "affordable": balance >= credits}

    def catalogue(self) -> list[dict]:
        overrides = plans.price_overrides()
        return [{
            "name": a.name, "title": a.title, "description": a.description,
            "credits": overrides.get(a.name, self.config.prices.get(a.name, a.price)),
            "pricing": a.pricing_doc or "fixed price per call",
            "async": a.mode == "async", "ttl": a.ttl_s * 1000 if a.ttl_s else None,
            "inputFields": [f.describe() for f in a.fields],
        } for a in self.registry]

    def run(self, caller, name, body, *, idempotency_key, request_id, method, path) -> Outcome:
        action, data = self.prepare(name, body)
        key = idempotency_key
        if key is not None:
            idempotency.check_key(key)
        elif isinstance(body, dict) and body.get("client_reference_id"):
            # Its own namespace; hashed so a reference of the full 255 characters still fits.
            ref = idempotency.check_key(body["client_reference_id"], field="client_reference_id")
            key = "client_reference_id:" + hashlib.sha256(ref.encode()).hexdigest()
        claim = None
        if key is not None:
            now = self.clock.now()
            found = idempotency.claim(
                caller.account_id, key, idempotency.request_hash(method, path, body),
                now=now, ttl_s=self.config.idempotency_ttl_s,
                lock_s=self.config.idempotency_lock_s)
            if isinstance(found, idempotency.Replay):
                return Outcome(found.status, found.body["data"], found.body["meta"], True,
                               found.body.get("composition_uid"))
            claim = found
        try:
            return self._execute(caller, action, data, claim, request_id)
        except BaseException:
            if claim is not None:
                idempotency.release(claim)
            raise

    def _execute(self, caller, action, data, claim, request_id) -> Outcome:
        price = self.quote(action, data)
        ctx = ActionContext(
            account_id=caller.account_id, request_id=request_id, price_of=self.price_of,
            balance=lambda: ledger.balance(caller.account_id), registry=self.registry,
        )
        meta = {"action": action.name}
        if action.mode == "async":
            return self._start_async(caller, action, data, claim, request_id, price, meta)
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
        if receipt:
            self._after_debit(caller.account_id, meta["availableCredit"])
        return Outcome(200, result, meta)

    def _after_debit(self, account_id, balance):
        """``credits.low`` once per crossing; a notification problem never fails a paid call."""
        try:
            webhooks.check_low_credit(account_id, balance, self.redis, self.config)
        except Exception:
            log.exception("credits.low check failed for %s", account_id)

    def ttl_of(self, action) -> int:
        return self.config.job_ttl_s or action.ttl_s or 120

    def _start_async(self, caller, action, data, claim, request_id, price, meta) -> Outcome:
        """Debit, record the job and the idempotent answer in one transaction; then enqueue.

        The job is enqueued only after the debit commits, so a worker never sees a job
        that was not paid for. If the queue is down, the job fails at once and is refunded.
        """
        callback_url = data.pop("callback_url", None)
        ttl = self.ttl_of(action)
        meta["ttl"] = ttl * 1000
        with write_transaction():
            entry = None
            if price > 0:
                entry = ledger.debit(caller.account_id, price, action=action.name,
                                     request_id=request_id)
                meta.update(creditsUsed=price, availableCredit=entry.balance_after,
                            txnReceipt=entry.receipt)
            comp = engine.create(caller.account_id, action, data, uid=self.ids("comp", 10),
                                 now=self.clock.now(), entry=entry,
                                 callback_url=callback_url, ttl_s=ttl,
                                 queue=action.queue_for(data) if action.queue_for
                                 else action.queue)
            if claim is not None:
                idempotency.complete(claim, 202, {"data": {}, "meta": meta,
                                                  "composition_uid": comp.uid},
                                     entry.receipt if entry else None)
        if entry is not None:
            self._after_debit(caller.account_id, entry.balance_after)
        try:
            engine.enqueue(self.redis, self.config, comp)
        except Exception:
            engine.finish(comp.uid, engine.Composition.FAILED, now=self.clock.now(),
                          code="QUEUE_UNAVAILABLE",
                          message="The job queue is unavailable; the debit was refunded")
            raise ServiceUnavailable("The job queue is unavailable; nothing was charged") \
                from None
        return Outcome(202, {}, meta, composition_uid=comp.uid)
