"""Per-account key/value settings (seed 000's ``/api/account/settings/set|get``).

Values are kept as compact JSON text, at most ``MAX_SETTING_BYTES`` each and
``MAX_SETTINGS`` per account; the count is exact under concurrent writers because each
write holds its account's row lock (PostgreSQL; SQLite has one writer anyway).
"""

from __future__ import annotations

import json
import re

from core.errors import InvalidRequest, NotFound, PayloadTooLarge
from metering.db import is_sqlite, write_transaction
from metering.models import Account
from oauth.session_models import AccountSetting

SETTING_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_SETTING_BYTES = 4096
MAX_SETTINGS = 100
_REQUIRED = object()


def check_key(key) -> str:
    if not isinstance(key, str) or not SETTING_KEY_RE.match(key):
        raise InvalidRequest("key must be 1-64 characters of A-Z a-z 0-9 _ . -",
                             details=[{"field": "key",
                                       "problem": "1-64 characters of A-Z a-z 0-9 _ . -"}])
    return key


def set_setting(account_id, key, value, *, now) -> None:
    """Store ``value`` (anything JSON) under ``key``; ``now`` stamps the row."""
    check_key(key)
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidRequest("value must be JSON", details=[
            {"field": "value", "problem": "must be JSON-serialisable"}]) from None
    if len(text.encode()) > MAX_SETTING_BYTES:
        raise PayloadTooLarge(f"value is over {MAX_SETTING_BYTES} bytes as JSON", details=[
            {"field": "value", "problem": f"at most {MAX_SETTING_BYTES} bytes as JSON"}])
    with write_transaction():
        lock = Account.select(Account.id).where(Account.id == account_id)
        if not is_sqlite():  # serialise this account's writers so the count is exact
            lock = lock.for_update()
        lock.first()
        exists = AccountSetting.select().where(
            (AccountSetting.account == account_id) & (AccountSetting.key == key)).exists()
        if not exists and AccountSetting.select().where(
                AccountSetting.account == account_id).count() >= MAX_SETTINGS:
            raise InvalidRequest(f"An account may keep at most {MAX_SETTINGS} settings", details=[
                {"field": "key", "problem": f"at most {MAX_SETTINGS} settings per account; "
                                            "overwrite an existing key instead"}])
        (AccountSetting.insert(account=account_id, key=key, value=text, created_at=now,
                               updated_at=now)
         .on_conflict(conflict_target=[AccountSetting.account, AccountSetting.key],
                      update={AccountSetting.value: text, AccountSetting.updated_at: now})
         .execute())


def get_setting(account_id, key, default=_REQUIRED):
    """The value stored under ``key``; ``NotFound`` (or ``default`` when given) if none."""
    row = AccountSetting.get_or_none((AccountSetting.account == account_id)
                                     & (AccountSetting.key == key))
    if row is None:
        if default is _REQUIRED:
            raise NotFound("No such setting")
        return default
    return json.loads(row.value)
