"""Running an action for a caller: price it, honour its idempotency key, debit, perform.

This is the one place where an action meets money. The debit, the action's result and
the idempotency record's completion are written in one transaction: if ``perform``
raises, the debit rolls back with it and the claim is released, so a failed call
changes nothing. The result is serialized as it will be sent before that transaction
commits, so a result that cannot be answered (a lone surrogate, a non-JSON value) rolls
the debit back too: a committed debit always ends in a response with its envelope.

An asynchronous call checks the queue before it charges; if the queue still fails after
the commit, the composition fails, is refunded and its idempotency record is discarded
in one transaction, so a retry with the same key really runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging

from actions.registry import ActionContext, Registry
from core.clock import SYSTEM, Clock
from core.errors import InvalidRequest, ServiceUnavailable
from core.ids import new_id
from jobs import engine, webhooks
from jobs.gpu.catalogue import Catalogue
from metering import idempotency, ledger, plans
from metering.db import database, is_sqlite, write_transaction
from metering.group_commit import DebitBatcher

log = logging.getLogger(__name__)


class UnsendableResult(RuntimeError):
    """An action returned a result that cannot be sent as JSON: a bug, answered as a 500
    (``INTERNAL_ERROR``) after the debit has been rolled back."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int
    data: dict
    meta: dict
    replayed: bool = False
    composition_uid: str | None = None  # async actions: the job record to wait on and show
    # A fresh async call's idempotency record: its answer's status is known only after the
    # wait, so the resource settles it there (``gateway.resources.common.settle``).
    record: int | None = None


class ActionService:
    def __init__(self, registry: Registry, config, *, clock: Clock = SYSTEM, ids=new_id,
                 redis=None, policy=None, models=None, library=None, prices=None):
        self.registry = registry
        # The operators' overrides: cached per process while the web tier's rate-limit
        # round trip confirms the price generation; read fresh elsewhere (the worker).
        self.prices = prices if prices is not None else plans.PriceBook()
        self.debits = DebitBatcher(window_s=config.debit_batch_window_us / 1e6)
        self.library = library  # jobs.content.library.Library: uploads and content inputs
        self.models = models if models is not None else Catalogue()
        self.config = config
        self.redis = redis
        self.policy = policy
        self.clock = clock
        self.ids = ids

    def price_of(self, name: str) -> int:
        """Operator override (database) > ``PRICES`` environment default > the action's own."""
        action = self.registry.get(name)
        override = self.prices.override(name)
        if override is not None:
            return override
        return self.config.prices.get(name, action.price)

    def quote(self, action, data) -> int:
        """What this input costs: the action's base price, scaled by its pricing function."""
        base = self.price_of(action.name)
        return action.pricing(data, base, self) if action.pricing else base

    def prepare(self, name, body, account_id=None, private=None):
        """Validate and precheck: the action and its normalized input, or INVALID_REQUEST.

        ``private`` holds inputs that are not JSON (an uploaded file, staged by the
        resource): ``_``-keys merged after validation, for the precheck and ``perform``.
        """
        action = self.registry.get(name)
        _check_input_encodable(body)
        data = action.validate(body)
        data.update(private or {})
        if action.precheck is not None:
            args = (data, self, account_id) if action.precheck_account else (data, self)
            data = action.precheck(*args) or data
        if data.get("callback_url"):
            self.policy.check_url(data["callback_url"], field="callback_url")
        return action, data

    def quote_input(self, account_id, name, body) -> int:
        """What ``body`` would cost on ``name``, validated and prechecked as the call."""
        data = {}
        try:
            action, data = self.prepare(name, body, account_id)
            return self.quote(action, data)
        finally:
            discard_private(data)

    def estimate(self, caller, name, body, private=None) -> dict:
        """The price of an input, without running or charging anything."""
        data = dict(private or {})
        try:
            action, data = self.prepare(name, body, caller.account_id, private)
            credits = self.quote(action, data)
        finally:
            discard_private(data)
        balance = ledger.balance(caller.account_id)
        return {"action": action.name, "credits": credits, "baseCredits": self.price_of(name),
                "pricing": action.pricing_doc or "fixed price per call",
                "balance": balance, "affordable": balance >= credits}

    def catalogue(self) -> list[dict]:
        overrides = self.prices.overrides()
        return [{
            "name": a.name, "title": a.title, "description": a.description,
            "credits": overrides.get(a.name, self.config.prices.get(a.name, a.price)),
            "pricing": a.pricing_doc or "fixed price per call",
            "async": a.mode == "async", "ttl": a.ttl_s * 1000 if a.ttl_s else None,
            "inputFields": [f.describe() for f in a.input_fields()],
        } for a in self.registry]

    def run(self, caller, name, body, *, idempotency_key, request_id, method, path,
            private=None, base_url="") -> Outcome:
        """Run ``name`` for ``caller``; the private inputs (staged files) are discarded
        when it ends, whatever the outcome (a committed upload has its own copy)."""
        data = dict(private or {})
        try:
            action, data = self.prepare(name, body, caller.account_id, private)
            return self._run(caller, action, body, data, idempotency_key, request_id,
                             method, path, base_url)
        finally:
            discard_private(data)

    def _run(self, caller, action, body, data, idempotency_key, request_id, method, path,
             base_url=""):
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
                caller.account_id, key,
                idempotency.request_hash(method, path, _hashed_body(body, data)),
                now=now, ttl_s=self.config.idempotency_ttl_s,
                lock_s=self.config.idempotency_lock_s)
            if isinstance(found, idempotency.Replay):
                return Outcome(found.status, found.body["data"], found.body["meta"], True,
                               found.body.get("composition_uid"))
            claim = found
        try:
            return self._execute(caller, action, data, claim, request_id, base_url)
        except BaseException:
            if claim is not None:
                idempotency.release(claim)
            raise

    def _execute(self, caller, action, data, claim, request_id, base_url="") -> Outcome:
        price = self.quote(action, data)
        ctx = ActionContext(
            account_id=caller.account_id, request_id=request_id, price_of=self.price_of,
            balance=lambda: ledger.balance(caller.account_id), registry=self.registry,
            library=self.library,
            quote=lambda name, body: self.quote_input(caller.account_id, name, body),
            base_url=base_url,
        )
        meta = {"action": action.name}
        if action.mode == "async":
            return self._start_async(caller, action, data, claim, request_id, price, meta)
        if price == 0 and claim is None:  # nothing to write: no transaction on the free path
            return Outcome(200, action.perform(ctx, data), meta)
        if action.pure and claim is None and not is_sqlite() and not database.in_transaction():
            return self._pure(caller, action, data, ctx, price, meta, request_id)
        with write_transaction():
            receipt = None
            if price > 0:
                entry = ledger.debit(caller.account_id, price, action=action.name,
                                     request_id=request_id)
                receipt = entry.receipt
                meta.update(creditsUsed=price, availableCredit=entry.balance_after,
                            txnReceipt=entry.receipt)
                ctx = dataclasses.replace(ctx, receipt=receipt)
            result = action.perform(ctx, data)
            answer = {"data": result, "meta": meta}
            _check_sendable(action, answer)  # before the debit commits, not after
            if claim is not None:
                idempotency.complete(claim, 200, answer, receipt)
        if receipt:
            self._after_debit(caller.account_id, meta["availableCredit"])
        return Outcome(200, result, meta)

    def _pure(self, caller, action, data, ctx, price, meta, request_id) -> Outcome:
        """A pure action (``Action.pure``): perform, check the answer can be sent, then
        debit in a group commit. A failure before the debit charges nothing; a refused
        debit (insufficient credits) discards the answer, so the outcome is the same as
        the transactional path's."""
        result = action.perform(ctx, data)
        _check_sendable(action, {"data": result, "meta": meta})
        debited = self.debits.debit(caller.account_id, price, action=action.name,
                                    request_id=request_id)
        meta.update(creditsUsed=price, availableCredit=debited.balance_after,
                    txnReceipt=debited.receipt)
        self._after_debit(caller.account_id, debited.balance_after,
                          debited.low_credit_threshold)
        return Outcome(200, result, meta)

    def _after_debit(self, account_id, balance, threshold=webhooks.READ):
        """``credits.low`` once per crossing; a notification problem never fails a paid call."""
        try:
            webhooks.check_low_credit(account_id, balance, self.redis, self.config,
                                      threshold=threshold)
        except Exception:
            log.exception("credits.low check failed for %s", account_id)

    def ttl_of(self, action) -> int:
        return self.config.job_ttl_s or action.ttl_s or 120

    def _start_async(self, caller, action, data, claim, request_id, price, meta) -> Outcome:
        """Debit, record the job and the idempotent answer in one transaction; then enqueue.

        The job is enqueued only after the debit commits, so a worker never sees a job
        that was not paid for. The queue is checked first, so a call while it is down
        charges nothing; if it fails after the commit anyway, ``_queue_lost`` refunds.
        """
        self._check_queue()
        callback_url = data.pop("callback_url", None)
        # The precheck's private keys (e.g. a priced plan) go to ``record``, not the row.
        private = {k: data.pop(k) for k in list(data) if k.startswith("_")}
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
            if action.record is not None:
                action.record(comp, data, private)
            if claim is not None:
                idempotency.complete(claim, 202, {"data": {}, "meta": meta,
                                                  "composition_uid": comp.uid},
                                     entry.receipt if entry else None)
        if entry is not None:
            self._after_debit(caller.account_id, entry.balance_after)
        try:
            engine.enqueue(self.redis, self.config, comp)
        except Exception:
            log.exception("enqueue failed for %s", comp.uid)
            self._queue_lost(comp, claim)
        return Outcome(202, {}, meta, composition_uid=comp.uid, record=claim)

    def _check_queue(self):
        """Refuse before charging when the queue does not answer (nothing written yet, so
        ``run`` releases the key and a retry runs)."""
        if self.redis is None:
            return
        try:
            self.redis.ping()
        except Exception:
            log.warning("job queue unavailable before debit", exc_info=True)
            raise ServiceUnavailable("The job queue is unavailable; nothing was charged",
                                     retry_after=5) from None

    def _queue_lost(self, comp, claim):
        """The queue failed after the commit: in one transaction fail the composition
        (which refunds its debit) and discard the idempotency record, so the same request
        with the same key runs afresh once the queue is back; then answer 503 saying so."""
        with write_transaction():
            engine.finish(comp.uid, engine.Composition.FAILED, now=self.clock.now(),
                          code="QUEUE_UNAVAILABLE",
                          message="The job queue is unavailable; the debit was refunded")
            if claim is not None:
                idempotency.discard(claim)
        refund = engine.Composition.get_by_id(comp.uid).refund_receipt
        message = ("The job queue is unavailable; nothing was charged" if refund is None else
                   f"The job queue is unavailable; the debit was refunded (receipt {refund})")
        raise ServiceUnavailable(message, retry_after=5) from None


def discard_private(data) -> None:
    """Remove what the private inputs hold on disk (``discard()``: staged uploads)."""
    for name, value in (data or {}).items():
        if name.startswith("_") and hasattr(value, "discard"):
            try:
                value.discard()
            except OSError:
                log.warning("could not discard %s", name, exc_info=True)


def _hashed_body(body, data):
    """What an idempotency key is bound to: the JSON body plus the fingerprints of the
    private inputs (an uploaded file's checksum), so the same key with another file is
    ``IDEMPOTENCY_KEY_REUSED``."""
    prints = {k: v.fingerprint for k, v in data.items()
              if k.startswith("_") and hasattr(v, "fingerprint")}
    return {**body, "_files": prints} if prints and isinstance(body, dict) else body


def _check_input_encodable(body):
    """Refuse input that no response could echo back: a string holding a lone UTF-16
    surrogate (legal as a JSON escape, but not Unicode text) is 400, before any charge."""
    if idempotency.encodable(body):
        return
    field = "body"
    if isinstance(body, dict):
        for name, value in body.items():
            if not idempotency.encodable(name):
                break  # a field name that cannot be written back: name the body instead
            if not idempotency.encodable(value):
                field = name
                break
    raise InvalidRequest("Strings must be valid Unicode text (no lone UTF-16 surrogates)",
                         details=[{"field": field, "problem": "must be valid Unicode text"}])


def _check_sendable(action, answer):
    """The answer as it will be sent, or ``UnsendableResult``: raised inside the debit's
    transaction, it rolls the debit back and ``run`` releases the idempotency claim."""
    try:
        idempotency.strict_json(answer)
    except (TypeError, ValueError) as exc:
        raise UnsendableResult(
            f"action {action.name} returned a result that cannot be sent as JSON: "
            f"{type(exc).__name__}") from exc
