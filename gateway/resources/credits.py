"""Balance, ledger and receipts of the calling account (CONTRACT 4)."""

from __future__ import annotations

from core.errors import InvalidRequest
from gateway.envelope import ok
from gateway.resources.common import LIST_QUERY, ledger_view, list_params, next_url
from metering import ledger
from metering.models import LedgerEntry


class Credits:
    scope = "credits:read"
    openapi_tag = "Credits"

    def on_get(self, req, resp):
        balance = ledger.balance(req.context.caller.account_id)
        ok(req, resp, {"balance": balance, "availableCredit": balance})


class Transactions:
    """The caller's ledger, newest first, ``limit`` (1-100, default 50) at a time.

    ``type`` keeps one kind of row; ``data.next`` is the full URL of the next page."""

    scope = "credits:read"
    openapi_tag = "Credits"
    openapi_query = {"get": [*LIST_QUERY, {"name": "type", "in": "query", "required": False,
                                           "schema": {"enum": list(LedgerEntry.KINDS)}}]}

    def __init__(self, config):
        self.config = config

    def on_get(self, req, resp):
        limit, cursor = list_params(req)
        kind = req.get_param("type")
        if kind is not None and kind not in LedgerEntry.KINDS:
            raise InvalidRequest("type must be one of " + ", ".join(LedgerEntry.KINDS),
                                 details=[{"field": "type", "problem": "unknown type"}])
        page = ledger.transactions(req.context.caller.account_id, limit=limit,
                                   cursor=cursor, kind=kind)
        ok(req, resp, {"items": [ledger_view(e) for e in page.items],
                       "next": next_url(req, self.config, page.next_cursor)})


class Receipt:
    scope = "credits:read"
    openapi_tag = "Credits"

    def on_get(self, req, resp, txn_receipt):
        entry = ledger.receipt_for(req.context.caller.account_id, txn_receipt)
        ok(req, resp, ledger_view(entry))
