"""Caller identification: parse a credential from the request headers and resolve it.

Each credential kind is an ``Authenticator``; the middleware asks them in order which
one accepts a token. API keys are the first kind; OAuth2 access tokens and password
bearer tokens plug in later as more authenticators without touching the middleware.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import re

from peewee import JOIN

from core.clock import SYSTEM, Clock
from core.errors import AuthError, Forbidden
from metering.models import Account, Plan
from metering.plans import Limits, limits_for
from oauth.keys import hash_key, looks_like_key
from oauth.models import ApiKey

LAST_USED_RESOLUTION = dt.timedelta(seconds=60)  # at most one last-used write a minute per key


@dataclasses.dataclass(frozen=True)
class Caller:
    account_id: str
    username: str
    limits: Limits
    kind: str  # api_key | oauth | bearer
    credential_id: str
    scopes: frozenset | None = None  # None: every scope (API keys)

    @property
    def rate_key(self) -> str:
        return f"{self.kind}:{self.credential_id}"


@dataclasses.dataclass(frozen=True)
class Presented:
    """What the caller sent: a token, and whether it came as Bearer (tokens of any kind)."""

    token: str
    scheme: str  # bearer | basic | bare | x-api-key


TOKEN = re.compile(r"[\x21-\x7e]*")  # every credential kind is printable ASCII


def parse(authorization: str | None, x_api_key: str | None) -> Presented:
    """Read the credential from ``Authorization`` or ``X-API-Key`` (CONTRACT 2).

    Header values arrive as the raw bytes read as latin-1 (WSGI); a credential holding
    anything but printable ASCII (control characters, bytes above 0x7F, Basic that is not
    base64 or not UTF-8) cannot be any key or token: ``AUTH_FAILED``, never a 500."""
    if x_api_key and not authorization:
        return _presented(x_api_key.strip(), "x-api-key")
    if not authorization or not authorization.strip():
        raise AuthError("MISSING_AUTH_HEADER", "No credentials: send Authorization or X-API-Key")
    value = authorization.strip()
    scheme, _, rest = value.partition(" ")
    if not rest:
        return _presented(value, "bare")
    scheme = scheme.lower()
    if scheme == "bearer":
        return _presented(rest.strip(), "bearer")
    if scheme == "basic":
        try:
            decoded = base64.b64decode(rest.strip().encode("ascii"), validate=True)
            user, _, _ = decoded.decode("utf-8").partition(":")
        except (ValueError, binascii.Error):  # not ASCII, not base64, not UTF-8
            raise AuthError("AUTH_FAILED", "Malformed Basic credentials") from None
        return _presented(user.strip(), "basic")
    raise AuthError("UNSUPPORTED_AUTH_SCHEME",
                    "Unsupported authorization scheme: use Bearer, Basic or a bare API key")


def _presented(token: str, scheme: str) -> Presented:
    if not TOKEN.fullmatch(token):
        raise AuthError("AUTH_FAILED", "Malformed credential: keys and tokens are printable "
                                       "ASCII")
    return Presented(token, scheme)


class ApiKeyAuthenticator:
    kind = "api_key"

    def __init__(self, config, clock: Clock = SYSTEM):
        self.config = config
        self.clock = clock  # when the key was last used, at most once a minute

    def accepts(self, presented: Presented) -> bool:
        return looks_like_key(presented.token)

    def authenticate(self, presented: Presented) -> Caller:
        row = with_account(ApiKey, ApiKey.key_hash == hash_key(presented.token))
        if row is None or row.revoked_at is not None:
            raise AuthError("AUTH_FAILED", "Unknown or revoked API key")
        caller = caller_for(row, self.config, self.kind, row.id)
        now = self.clock.now()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
        return caller


def with_account(credential_model, where):
    """The credential row matching ``where`` with its account and the account's plan, in
    one query: every authenticator needs all three on every request."""
    return (credential_model.select(credential_model, Account, Plan)
            .join(Account)
            .join(Plan, JOIN.LEFT_OUTER, on=(Account.plan == Plan.name), attr="plan_row")
            .where(where)
            .first())


def caller_for(row, config, kind, credential_id, scopes=None) -> Caller:
    """The Caller for a live credential row from ``with_account``; disabled accounts get 403."""
    account = row.account
    if account.disabled:
        raise Forbidden("This account is disabled")
    plan_row = getattr(account, "plan_row", None)
    if plan_row is not None and plan_row.name is None:  # LEFT JOIN found no plan row
        plan_row = None
    return Caller(account.id, account.username, limits_for(account.plan, plan_row, config),
                  kind, credential_id, scopes)


class Authenticators:
    """The credential kinds this gateway accepts, asked in order."""

    def __init__(self, authenticators):
        self.authenticators = list(authenticators)

    def add(self, authenticator):
        self.authenticators.append(authenticator)

    def identify(self, authorization, x_api_key) -> Caller:
        presented = parse(authorization, x_api_key)
        if not presented.token:
            raise AuthError("AUTH_FAILED", "Empty credential")
        for authenticator in self.authenticators:
            if authenticator.accepts(presented):
                return authenticator.authenticate(presented)
        raise AuthError("AUTH_FAILED", "Unknown credential")
