"""Group commit of debits: concurrent debits of one process share one transaction.

A debit on its own is bounded by its commit: PostgreSQL flushes the WAL once per commit,
and debits on one account also queue on its row lock, so one hot account gets a few
hundred debits a second however fast the rest is. Here the first debit to arrive while
none is being written becomes the leader: it waits a few hundred microseconds (only
while debits are arriving together) for others to join, then writes the whole batch in
one transaction of two round trips, and hands the next batch to the first debit that
queued meanwhile. The batch is still exact, debit by debit, in arrival order:

1. ``BEGIN`` and ``SELECT ... FOR UPDATE`` of the batch's accounts (in id order, so two
   processes' batches never deadlock), with what each account owes;
2. in Python, each debit in turn: refused (``InsufficientCredits``, as a single debit would
   be) if its account owes credits or its balance no longer covers it, else taken from the
   running balance and given its own receipt and ledger row;
3. one ``UPDATE`` of the balances, one multi-row ``INSERT`` of the ledger rows, ``COMMIT``.

Nothing is acknowledged before the commit; a batch that fails rolls back as a whole and
every debit in it is answered ``503`` (nothing was charged). The balance always equals the
sum of the ledger rows, and no balance goes below zero: the row locks make each batch see
the balances every earlier commit left. Durability is PostgreSQL's default (no
``synchronous_commit=off``): a debit answered 200 is on disk.

PostgreSQL only; on SQLite (one writer at a time anyway) ``ledger.debit`` is used.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from peewee import __exception_wrapper__

from core.clock import utcnow
from core.errors import InsufficientCredits, NotFound, ServiceUnavailable
from core.ids import new_id
from metering.db import database, execute_sql, prepare

log = logging.getLogger(__name__)

# The statements of a batch, each PREPAREd once per connection (``metering.db.prepare``):
# PostgreSQL's parse and plan cost more than running these one-row statements. The
# update and insert are prepared per batch size, up to PREPARED_BATCH rows; a bigger
# batch (rare: more debits at once than a process has threads) is sent as plain text.
LOCK_SELECT = (
    'SELECT a.id, a.balance, a.low_credit_threshold, COALESCE(o.credits, 0) '
    'FROM "account" a LEFT JOIN "owed_credits" o ON o.account_id = a.id '
    'WHERE a.id = ANY(%s) ORDER BY a.id FOR UPDATE OF a')
LOCK_NAME = "gw_debit_lock"
UPDATE_ROW = "(%s::varchar, %s::bigint)"  # typed: VALUES would leave parameters as text
INSERT_ROW = "(%s, %s, 'debit', %s, %s, %s, '', %s, %s)"
PREPARED_BATCH = 16


# Placeholders only: both are built from constants and a row count, never from values.
def update_sql(rows: int) -> str:
    values = ", ".join([UPDATE_ROW] * rows)
    return f'UPDATE "account" AS a SET balance = v.balance FROM (VALUES {values}) AS v(id, balance) WHERE a.id = v.id'  # noqa: E501, S608


def insert_sql(rows: int) -> str:
    values = ", ".join([INSERT_ROW] * rows)
    return ('INSERT INTO "ledger_entry" (receipt, account_id, kind, amount, balance_after, '  # noqa: S608
            f"action, reason, request_id, created_at) VALUES {values}")


@dataclasses.dataclass(frozen=True)
class Debited:
    """A committed debit: its receipt, the balance it left, the account's low-credit
    threshold (read in the same transaction, so the ``credits.low`` check needs no read)."""

    receipt: str
    balance_after: int
    low_credit_threshold: int | None


class _Pending:
    __slots__ = ("account_id", "credits", "action", "request_id", "event", "lead", "result",
                 "error")

    def __init__(self, account_id, credits, action, request_id):
        self.account_id, self.credits = account_id, credits
        self.action, self.request_id = action, request_id
        self.event = threading.Event()
        self.lead = False  # woken to lead the next batch rather than answered
        self.result: Debited | None = None
        self.error: Exception | None = None


class DebitBatcher:
    """One per process (the web tier's ``ActionService``); thread-safe."""

    def __init__(self, *, window_s: float = 0.0002, max_batch: int = 64):
        self.window_s = window_s
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._busy = False  # a leader is collecting or writing a batch
        self._last_batch = 0  # size of the previous batch: debits are arriving together
        self.batches = 0  # counters for the benchmark and the tests
        self.debits = 0
        self.largest = 0  # the largest batch written

    @property
    def waiting(self) -> int:
        """Debits queued behind the batch being written."""
        with self._lock:
            return len(self._queue)

    def debit(self, account_id, credits: int, *, action, request_id=None) -> Debited:
        """Take ``credits`` (> 0) from the account, committed, or raise
        ``InsufficientCredits`` / ``NotFound`` / ``ServiceUnavailable``. The caller must not
        hold a transaction (the leader writes on its own thread's connection)."""
        if credits <= 0:
            raise ValueError("a debit takes a positive amount")
        pending = _Pending(account_id, credits, action, request_id)
        with self._lock:
            self._queue.append(pending)
            lead = not self._busy
            self._busy = True
        if not lead:
            pending.event.wait()
            lead = pending.lead
        if lead:
            self._lead()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _lead(self):
        if self.window_s and self._last_batch > 1:
            time.sleep(self.window_s)  # debits are arriving together: let more join
        with self._lock:
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
        try:
            self._write(batch)
        except Exception:  # noqa: BLE001 (every failure: nothing of the batch committed)
            log.exception("a batch of %d debits failed and was rolled back", len(batch))
            for p in batch:
                p.result = None
                p.error = ServiceUnavailable("The debit could not be written; nothing was "
                                             "charged", retry_after=1)
        finally:
            with self._lock:
                self._last_batch = len(batch)
                self.batches += 1
                self.debits += len(batch)
                self.largest = max(self.largest, len(batch))
                following = self._queue[0] if self._queue else None
                if following is not None:
                    following.lead = True
                else:
                    self._busy = False
            for p in batch:
                p.event.set()
            if following is not None:
                following.event.set()

    def _write(self, batch):
        with __exception_wrapper__:
            cursor = database.cursor()
            try:
                self._transaction(cursor, batch)
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 (the connection may be gone)
                    log.warning("rollback after a failed debit batch failed", exc_info=True)
                raise
            finally:
                cursor.close()

    @staticmethod
    def _transaction(cursor, batch):
        prepare(cursor, LOCK_NAME, LOCK_SELECT)
        cursor.execute("BEGIN; " + execute_sql(LOCK_NAME, 1),
                       (sorted({p.account_id for p in batch}),))
        accounts = {row[0]: [row[1], row[2], row[3]] for row in cursor.fetchall()}
        now = utcnow()
        balances, rows = {}, []
        for p in batch:
            state = accounts.get(p.account_id)
            if state is None:
                p.error = NotFound("No such account")
            elif state[2] > 0:
                p.error = InsufficientCredits(
                    f"This account owes {state[2]} credits after a refunded or reversed "
                    "purchase; paid actions are refused until a purchase settles it")
            elif state[0] < p.credits:
                p.error = InsufficientCredits()
            else:
                state[0] -= p.credits
                balances[p.account_id] = state[0]
                p.result = Debited(new_id("txn"), state[0], state[1])
                rows.append((p.result.receipt, p.account_id, -p.credits, state[0], p.action,
                             p.request_id, now))
        if not rows:
            cursor.execute("ROLLBACK")
            return
        params = [v for item in balances.items() for v in item] + \
            [v for row in rows for v in row]
        if len(rows) <= PREPARED_BATCH:  # balances has at most as many entries as rows
            update, insert = f"gw_debit_update_{len(balances)}", f"gw_debit_insert_{len(rows)}"
            prepare(cursor, update, update_sql(len(balances)))
            prepare(cursor, insert, insert_sql(len(rows)))
            sql = (f"{execute_sql(update, 2 * len(balances))}; "
                   f"{execute_sql(insert, 7 * len(rows))}; COMMIT")
        else:
            sql = f"{update_sql(len(balances))}; {insert_sql(len(rows))}; COMMIT"
        cursor.execute(sql, params)  # one round trip: update, insert, commit
