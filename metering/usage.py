"""Usage statistics of one account, read from the ledger (``/api/usage``,
``/api/account/data``, ``/api/user/self``)."""

from __future__ import annotations

from peewee import fn

from metering.models import LedgerEntry


def debit_count(account_id) -> int:
    """How many paid calls the account has made (its debits), all time."""
    return (LedgerEntry.select()
            .where((LedgerEntry.account == account_id) & (LedgerEntry.kind == "debit"))
            .count())


def usage_by_action(account_id, since) -> list[dict]:
    """Per action since ``since``: calls and credits debited, refunds and credits refunded,
    and the net; sorted by action name (``unknown`` for entries without one)."""
    rows = (LedgerEntry.select(LedgerEntry.action, LedgerEntry.kind,
                               fn.COUNT(LedgerEntry.id).alias("n"),
                               fn.SUM(LedgerEntry.amount).alias("total"))
            .where((LedgerEntry.account == account_id)
                   & (LedgerEntry.kind.in_(("debit", "refund")))
                   & (LedgerEntry.created_at >= since))
            .group_by(LedgerEntry.action, LedgerEntry.kind).tuples())
    per = {}
    for action, kind, n, total in rows:
        item = per.setdefault(action or "unknown",
                              {"calls": 0, "credits": 0, "refunds": 0, "creditsRefunded": 0})
        if kind == "debit":
            item["calls"] += n
            item["credits"] += -int(total or 0)
        else:
            item["refunds"] += n
            item["creditsRefunded"] += int(total or 0)
    return [{"action": name, **v, "netCredits": v["credits"] - v["creditsRefunded"]}
            for name, v in sorted(per.items())]



def usage_by_day(account_id, since) -> list[dict]:
    """Per UTC day and action since ``since``: calls and credits debited, refunds and
    credits refunded; oldest day first. Grouped in the database (``date`` of the naive
    UTC timestamp on both backends), so a busy account costs one row per day and action."""
    from metering.db import is_sqlite

    day = (fn.date(LedgerEntry.created_at) if is_sqlite()
           else fn.date_trunc("day", LedgerEntry.created_at))
    rows = (LedgerEntry.select(day.alias("day"), LedgerEntry.action, LedgerEntry.kind,
                               fn.COUNT(LedgerEntry.id), fn.SUM(LedgerEntry.amount))
            .where((LedgerEntry.account == account_id)
                   & (LedgerEntry.kind.in_(("debit", "refund")))
                   & (LedgerEntry.created_at >= since))
            .group_by(day, LedgerEntry.action, LedgerEntry.kind).tuples())
    per = {}
    for when, action, kind, n, total in rows:
        date = str(when)[:10]
        item = per.setdefault((date, action or "unknown"), {
            "date": date, "action": action or "unknown", "calls": 0, "credits": 0,
            "refunds": 0, "creditsRefunded": 0})
        if kind == "debit":
            item["calls"] += n
            item["credits"] += -int(total or 0)
        else:
            item["refunds"] += n
            item["creditsRefunded"] += int(total or 0)
    return [per[k] for k in sorted(per)]
