"""Public identifiers: unguessable, prefixed by kind (``txn_``, ``comp_``, ``acct_``)."""

from __future__ import annotations

import secrets


def new_id(prefix: str, nbytes: int = 12) -> str:
    """Unguessable public identifier such as ``txn_3f9a...``; ids are never enumerable."""
    return f"{prefix}_{secrets.token_hex(nbytes)}"
