"""Opaque list cursors: the id of the last item seen, tagged with the list it came from,
so a cursor from one list is refused by another instead of silently skipping rows."""

from __future__ import annotations

import base64
import binascii

from core.errors import InvalidRequest


def encode(tag: str, item_id: int) -> str:
    return base64.urlsafe_b64encode(f"{tag}:{item_id}".encode()).decode().rstrip("=")


def decode(tag: str, cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        found, _, value = raw.partition(":")
        if found != tag:
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("cursor is not valid",
                             details=[{"field": "cursor", "problem": "not a cursor from this list"}]
                             ) from None
