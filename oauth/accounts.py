"""Accounts: signup, admin creation, lookup by password. One transaction per account so a
failed signup leaves no account without its key or its starting credits."""

from __future__ import annotations

import re

from peewee import IntegrityError

from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from metering import ledger
from metering.db import write_transaction
from metering.models import Account, Plan
from oauth.keys import create_key
from oauth.passwords import hash_password, verify_password

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{2,63}$")


def _check_username(username):
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise InvalidRequest(
            "username must be 3-64 letters, digits or _.@+- and start with a letter or digit",
            details=[{"field": "username", "problem": "3-64 characters: letters, digits, _.@+-"}])


def _check_password(password, required):
    if password is None and not required:
        return
    if not isinstance(password, str) or not 8 <= len(password) <= 256:
        raise InvalidRequest("password must be 8-256 characters",
                             details=[{"field": "password", "problem": "8-256 characters"}])


def create_account(username, password=None, *, credits=0, plan="default",
                   password_required=True, key_description="default"):
    """Create an account with its first API key and optional starting grant.

    Returns ``(account, api_key_secret)``. Raises ``Conflict`` when the username is taken.
    """
    _check_username(username)
    _check_password(password, password_required)
    if not isinstance(credits, int) or isinstance(credits, bool) \
            or not 0 <= credits <= ledger.MAX_CREDITS:
        raise InvalidRequest("credits must be a non-negative integer",
                             details=[{"field": "credits", "problem": "non-negative integer"}])
    if plan != "default" and not Plan.select().where(Plan.name == plan).exists():
        raise InvalidRequest(f"No such plan: {plan}",
                             details=[{"field": "plan", "problem": "no such plan"}])
    password_hash = hash_password(password) if password else None  # slow: outside the lock
    try:
        with write_transaction():
            account = Account.create(id=new_id("acct", 8), username=username,
                                     password_hash=password_hash, plan=plan)
            _, secret = create_key(account.id, key_description)
            if credits:
                ledger.grant(account.id, credits, reason="starting credits")
    except IntegrityError:
        raise Conflict("That username is taken",
                       details=[{"field": "username", "problem": "already taken"}]) from None
    return Account.get_by_id(account.id), secret


def get_account(account_id) -> Account:
    account = Account.get_or_none(Account.id == account_id)
    if account is None:
        raise NotFound("No such account")
    return account


def authenticate_password(username, password) -> Account | None:
    """The account for a username and password, or None; costs the same either way."""
    if not isinstance(username, str) or not isinstance(password, str):
        return None
    account = Account.get_or_none(Account.username == username)
    ok = verify_password(account.password_hash if account else None, password)
    return account if ok and account and not account.disabled else None
