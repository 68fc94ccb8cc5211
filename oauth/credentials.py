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
import threading

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
    # Set when this Caller came from a process cache: the credential generation it was
    # loaded at, which the rate-limit round trip checks (metering.generations).
    generation: str | None = None

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


class CredentialCache:
    """Live API keys this process resolved, as Callers, labelled with the credential
    generation known when each was read (``metering.generations``).

    Only live keys are kept (an unknown or revoked key is read every time, so a new key
    works at once and a wrong one costs what it always did). An entry is used for at most
    ``max_age_s`` (60 s: also when the key's last-used time is next written) and is
    trusted only after the request's rate-limit round trip confirmed its generation; a new
    generation empties the cache."""

    def __init__(self, max_entries: int = 10_000, max_age_s: float = 60.0):
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self._entries: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()
        self.known = None  # the latest credential generation a request read

    def get(self, key_hash: str, now: float) -> Caller | None:
        entry = self._entries.get(key_hash)
        if entry is None or now - entry[1] > self.max_age_s:
            return None
        return entry[0]

    def put(self, key_hash: str, caller: Caller, label, now: float) -> Caller:
        """Keep ``caller`` as read at generation ``label``: ``known`` as it was *before*
        the read, so the label never vouches for a change the read may have missed."""
        if label is None or label != self.known:
            return caller  # no generation known, or it moved during the read
        cached = dataclasses.replace(caller, generation=label)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # crude but bounded; a full cache refills in a minute
            self._entries[key_hash] = (cached, now)
        return caller

    def observe(self, generation: str | None) -> None:
        """What a request's round trip read; a different generation drops every entry."""
        if generation != self.known:
            with self._lock:
                self._entries.clear()
                self.known = generation

    def forget(self) -> None:
        self.observe(None)


class ApiKeyAuthenticator:
    kind = "api_key"

    def __init__(self, config, clock: Clock = SYSTEM, cache: CredentialCache | None = None):
        self.config = config
        self.clock = clock  # when the key was last used, at most once a minute
        self.cache = cache

    def accepts(self, presented: Presented) -> bool:
        return looks_like_key(presented.token)

    def authenticate(self, presented: Presented, *, cached: bool = True) -> Caller:
        key_hash = hash_key(presented.token)
        cache = self.cache
        if cached and cache is not None:
            hit = cache.get(key_hash, self.clock.monotonic())
            if hit is not None:
                return hit
        label = cache.known if cache is not None else None
        row = with_account(ApiKey, ApiKey.key_hash == key_hash)
        if row is None or row.revoked_at is not None:
            raise AuthError("AUTH_FAILED", "Unknown or revoked API key")
        caller = caller_for(row, self.config, self.kind, row.id)
        now = self.clock.now()
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.update(last_used_at=now).where(ApiKey.id == row.id).execute()
        if cache is not None:
            cache.put(key_hash, caller, label, self.clock.monotonic())
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

    def identify(self, authorization, x_api_key, *, cached: bool = True) -> Caller:
        """The caller; ``cached=False`` reads the credential from the database even when
        a process cache holds it (the cache's generation turned out stale, or Redis
        could not confirm it)."""
        presented = parse(authorization, x_api_key)
        if not presented.token:
            raise AuthError("AUTH_FAILED", "Empty credential")
        for authenticator in self.authenticators:
            if authenticator.accepts(presented):
                if isinstance(authenticator, ApiKeyAuthenticator):
                    return authenticator.authenticate(presented, cached=cached)
                return authenticator.authenticate(presented)
        raise AuthError("AUTH_FAILED", "Unknown credential")
