"""The credit ledger: debits, refunds, grants and adjustments, each one receipt.

Every function that changes a balance does the conditional UPDATE and the ledger INSERT
in one transaction; callers that need more rows in the same transaction (the
idempotency record, a job row) open ``write_transaction()`` around the call.
"""

from __future__ import annotations

import dataclasses

from peewee import IntegrityError

from core.errors import InsufficientCredits, InvalidRequest, NotFound
from core.ids import new_id
from metering import cursors
from metering.db import database, fetchone, is_sqlite, write_transaction
from metering.models import Account, LedgerEntry
from metering.payments.models import OwedCredits

# The most credits one grant, adjustment, price or starting balance may move: far beyond any
# real use, and small enough that balances never overflow the 64-bit column (a 500).
MAX_CREDITS = 10**12


@dataclasses.dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str | None


def _apply(account_id, amount, *, floor_check, kind, action=None, reason="", refund_of=None,
           request_id=None) -> LedgerEntry:
    """Change a balance by ``amount`` and write its ledger row; caller holds the transaction.

    With ``floor_check`` the UPDATE only matches while the balance stays >= 0, which is
    what makes a debit safe under any number of racing processes: no read-then-write.
    """
    query = Account.update(balance=Account.balance + amount).where(Account.id == account_id)
    if floor_check:
        query = query.where(Account.balance >= -amount)
    rows = list(query.returning(Account.balance).tuples().execute())
    if not rows:
        if not Account.select().where(Account.id == account_id).exists():
            raise NotFound("No such account")
        raise InsufficientCredits()
    return LedgerEntry.create(
        receipt=new_id("txn"),
        account=account_id,
        kind=kind,
        amount=amount,
        balance_after=rows[0][0],
        action=action,
        reason=reason[:255],
        refund_of=refund_of,
        request_id=request_id,
    )


def debit(account_id, credits, *, action, request_id=None) -> LedgerEntry:
    """Take ``credits`` (> 0) or raise ``InsufficientCredits``; never a partial debit."""
    if credits <= 0:
        raise ValueError("a debit takes a positive amount")
    with write_transaction():
        _refuse_if_owing(account_id)
        return _apply(account_id, -credits, floor_check=True, kind="debit", action=action,
                      request_id=request_id)


def for_update(query):
    """``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has no row locks and needs none (its
    ``write_transaction`` holds the database's write lock from the start)."""
    return query if is_sqlite() else query.for_update()


def owed(account_id) -> int:
    """Credits a refunded purchase could not take back (0 when the account owes none)."""
    return OwedCredits.select(OwedCredits.credits).where(
        OwedCredits.account == account_id).scalar() or 0


def _refuse_if_owing(account_id):
    due = owed(account_id)
    if due > 0:
        raise InsufficientCredits(
            f"This account owes {due} credits after a refunded or reversed purchase; paid "
            "actions are refused until a purchase settles it")


def purchase(account_id, credits, *, reason="", request_id=None) -> LedgerEntry:
    """Credit a purchase; what the account owes after a refund is settled from it first
    (an ``adjustment`` row in the same transaction). Returns the ``purchase`` row."""
    if credits <= 0:
        raise ValueError("a purchase takes a positive amount")
    with write_transaction():
        entry = _apply(account_id, credits, floor_check=False, kind="purchase", reason=reason,
                       request_id=request_id)
        row = for_update(OwedCredits.select().where(OwedCredits.account == account_id)).first()
        if row is not None and row.credits > 0:
            settle = min(row.credits, credits)
            _apply(account_id, -settle, floor_check=True, kind="adjustment",
                   reason="settles credits owed after a refunded purchase")
            OwedCredits.update(credits=OwedCredits.credits - settle).where(
                OwedCredits.account == account_id).execute()
        return entry


def take_back(account_id, credits, *, reason="") -> tuple[LedgerEntry | None, int]:
    """Take back up to ``credits`` (a refund or reversal) without going below zero.

    Returns ``(adjustment row or None, credits now owed)``; the owed part is added to
    ``OwedCredits``, which refuses paid actions until a purchase settles it."""
    with write_transaction():
        account = for_update(Account.select(Account.balance).where(
            Account.id == account_id)).first()
        if account is None:
            raise NotFound("No such account")
        take = min(max(account.balance, 0), credits)
        entry = _apply(account_id, -take, floor_check=True, kind="adjustment",
                       reason=reason) if take else None
        due = credits - take
        if due:
            OwedCredits.insert(account=account_id, credits=due).on_conflict(
                conflict_target=[OwedCredits.account],
                update={OwedCredits.credits: OwedCredits.credits + due}).execute()
        return entry, due


def grant(account_id, amount, *, reason="", kind=None, request_id=None) -> LedgerEntry:
    """Add credits (a grant or purchase) or, with a negative amount, an adjustment.

    An adjustment can never take the balance below zero: it fails with
    ``InsufficientCredits`` instead and changes nothing.
    """
    if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0 \
            or abs(amount) > MAX_CREDITS:
        raise InvalidRequest(f"amount must be a non-zero integer between -{MAX_CREDITS} and "
                             f"{MAX_CREDITS}",
                             details=[{"field": "amount", "problem": "must be a non-zero integer"}])
    kind = kind or ("grant" if amount > 0 else "adjustment")
    with write_transaction():
        return _apply(account_id, amount, floor_check=amount < 0, kind=kind, reason=reason,
                      request_id=request_id)


def refund(receipt, *, amount=None, reason="", request_id=None) -> tuple[LedgerEntry, bool]:
    """Refund a debit once. Returns ``(refund_row, created)``; a second call returns the first row.

    ``amount`` (default: all of it) refunds part of the debit, 0 < amount <= the debit:
    what a project run's completed nodes used stays spent. Still one refund per debit.

    The unique index on ``refund_of`` settles races between processes: the loser's INSERT
    fails, its savepoint undoes its balance change, and it returns the winner's row.
    """
    with write_transaction():
        original = LedgerEntry.get_or_none(LedgerEntry.receipt == receipt)
        if original is None or original.kind != "debit":
            raise NotFound("No such debit receipt")
        existing = LedgerEntry.get_or_none(LedgerEntry.refund_of == receipt)
        if existing is not None:
            return existing, False
        credits = -original.amount if amount is None else amount
        if isinstance(credits, bool) or not isinstance(credits, int) \
                or not 0 < credits <= -original.amount:
            raise ValueError(f"a refund takes 1 to {-original.amount} credits, not {amount!r}")
        try:
            with database.atomic():
                row = _apply(original.account_id, credits, floor_check=False,
                             kind="refund", action=original.action, reason=reason,
                             refund_of=receipt, request_id=request_id)
            return row, True
        except IntegrityError:
            pass
    return LedgerEntry.get(LedgerEntry.refund_of == receipt), False


def account_of(receipt) -> str:
    """The account a receipt belongs to (where an admin refund's idempotency key lives)."""
    row = LedgerEntry.select(LedgerEntry.account).where(LedgerEntry.receipt == receipt).first()
    if row is None:
        raise NotFound("No such debit receipt")
    return row.account_id


def balance(account_id) -> int:
    row = fetchone('SELECT balance FROM "account" WHERE id = %s', (account_id,),
                   prepared="gw_balance")
    if row is None:
        raise NotFound("No such account")
    return row[0]


def receipt_for(account_id, receipt) -> LedgerEntry:
    """One ledger row, only for its owner: anyone else gets the same NOT_FOUND as a typo."""
    row = LedgerEntry.get_or_none(
        (LedgerEntry.receipt == receipt) & (LedgerEntry.account == account_id)
    )
    if row is None:
        raise NotFound("No such receipt")
    return row


def transactions(account_id, *, limit=50, cursor=None, kind=None) -> Page:
    """The account's ledger, newest first, ``limit`` rows after ``cursor``."""
    query = LedgerEntry.select().where(LedgerEntry.account == account_id)
    if cursor:
        query = query.where(LedgerEntry.id < cursors.decode("l", cursor))
    if kind:
        query = query.where(LedgerEntry.kind == kind)
    rows = list(query.order_by(LedgerEntry.id.desc()).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, cursors.encode("l", rows[-1].id) if more and rows else None)


def ledger_sum(account_id) -> int:
    from peewee import fn

    return (LedgerEntry.select(fn.COALESCE(fn.SUM(LedgerEntry.amount), 0))
            .where(LedgerEntry.account == account_id).scalar())
