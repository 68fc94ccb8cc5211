"""Opaque list cursors (CONTRACT 7), tagged with the list they came from, so a cursor from
one list is refused by another instead of silently skipping rows.

Two kinds: the id of the last item seen, for tables with an increasing integer id
(``encode``/``decode``), and the ``(created_at, id)`` of the last item seen, for tables
keyed by random string ids (``page``: newest first, ties broken by id, so every row
appears exactly once however many share a timestamp).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re

from core.errors import InvalidRequest

INT64_MAX = 2**63 - 1
# Every list's page bounds (CONTRACT 7: at most 100 a page), shared by the routes and the
# actions that page (``list-posts``).
MAX_LIMIT = 100
MAX_PAGE_NO = 1_000_000  # seed-style page numbers: 10^8 rows at 100 a page is plenty
_DIGITS = re.compile(r"[0-9]{1,19}")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _unb64(tag: str, cursor: str) -> str:
    """The cursor's payload after its ``tag:``; ValueError for anything else."""
    raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
    found, _, value = raw.decode("utf-8").partition(":")
    if found != tag:
        raise ValueError
    return value


def _invalid() -> InvalidRequest:
    return InvalidRequest("cursor is not valid",
                          details=[{"field": "cursor", "problem": "not a cursor from this list"}])


def encode(tag: str, item_id: int) -> str:
    return _b64(f"{tag}:{item_id}")


def decode(tag: str, cursor: str) -> int:
    try:
        value = _unb64(tag, cursor)
        if not _DIGITS.fullmatch(value) or int(value) > INT64_MAX:
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        raise _invalid() from None


def encode_keyset(tag: str, created_at: dt.datetime, item_id: str) -> str:
    return _b64(f"{tag}:{created_at.isoformat(timespec='microseconds')}|{item_id}")


def decode_keyset(tag: str, cursor: str) -> tuple[dt.datetime, str]:
    try:
        stamp, sep, item_id = _unb64(tag, cursor).partition("|")
        if not sep or not item_id or not item_id.isascii() or not item_id.isprintable():
            raise ValueError
        created_at = dt.datetime.fromisoformat(stamp)
        if created_at.tzinfo is not None:  # the columns hold naive UTC
            raise ValueError
        return created_at, item_id
    except (ValueError, binascii.Error):
        raise _invalid() from None


def page(query, *, tag: str, created, ident, limit: int, cursor: str | None):
    """One page of ``query`` newest first by ``(created, ident)``, after ``cursor``.

    Returns ``(rows, next_cursor)``; ``next_cursor`` is None on the last page."""
    if cursor:
        stamp, item_id = decode_keyset(tag, cursor)
        query = query.where((created < stamp) | ((created == stamp) & (ident < item_id)))
    rows = list(query.order_by(created.desc(), ident.desc()).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    return rows, (encode_keyset(tag, getattr(last, created.name), getattr(last, ident.name))
                  if last is not None else None)
