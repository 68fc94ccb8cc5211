"""Web console sessions (docs/CONSOLE.md): an opaque random id in a cookie, stored in Redis
only as its SHA-256, with the account, a per-session CSRF token and an absolute expiry.

Redis holds what may be lost (ARCHITECTURE.md): losing a session only means signing in
again. The cookie value never reaches storage, so a dump of Redis signs no one in; the
lookup is by the hash, so how long it takes says nothing about the secret; the CSRF token
is compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import secrets

from core.clock import SYSTEM, Clock
from core.errors import ServiceUnavailable

SESSION_ID_BYTES = 32  # 256 bits from the OS's CSPRNG: not guessable, not enumerable


@dataclasses.dataclass(frozen=True)
class ConsoleSession:
    account_id: str
    csrf: str  # the hidden-field token of every POST form of this session
    method: str  # how the person signed in: "password" or a social provider's name
    created: float
    expires: float


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class ConsoleSessions:
    """Create, read and end console sessions in one Redis under ``prefix``."""

    def __init__(self, redis, prefix: str, ttl_s: int, clock: Clock = SYSTEM):
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.clock = clock

    @classmethod
    def from_config(cls, config, redis, clock: Clock = SYSTEM) -> ConsoleSessions:
        return cls(redis, config.redis_prefix, config.console_session_ttl_s, clock)

    def key(self, session_id: str) -> str:
        return self._key(session_hash(session_id))

    def _key(self, digest: str) -> str:
        return f"{self.prefix}:console:session:{digest}"

    def index_key(self, account_id: str) -> str:
        """The set of an account's session hashes (for listing and signing out
        everywhere). It expires with the newest session; a member whose session expired
        is dropped the next time the set is read."""
        return f"{self.prefix}:console:account:{account_id}"

    def create(self, account_id: str, method: str) -> tuple[str, ConsoleSession]:
        """A new session; returns the cookie value (shown to the browser only) and it."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        now = self.clock.time()
        session = ConsoleSession(account_id=account_id, csrf=secrets.token_urlsafe(32),
                                 method=method, created=now, expires=now + self.ttl_s)
        digest = session_hash(session_id)
        with _store(), self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(digest), json.dumps(dataclasses.asdict(session)),
                     ex=self.ttl_s)
            pipe.sadd(self.index_key(account_id), digest)
            pipe.expire(self.index_key(account_id), self.ttl_s)
            pipe.execute()
        return session_id, session

    def get(self, session_id) -> ConsoleSession | None:
        """The live session of a cookie value, or None (unknown, malformed or expired)."""
        if not isinstance(session_id, str) or not 32 <= len(session_id) <= 128:
            return None
        with _store():
            raw = self.redis.get(self.key(session_id))
        session = _parse(raw)
        # Redis expires the key too; the clock's own check covers a clock running ahead.
        return session if session is not None and self.clock.time() < session.expires \
            else None

    def delete(self, session_id, account_id: str) -> None:
        """End one session of ``account_id`` (its index forgets it too)."""
        if isinstance(session_id, str) and session_id:
            digest = session_hash(session_id)
            with _store(), self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._key(digest))
                pipe.srem(self.index_key(account_id), digest)
                pipe.execute()

    def list_for(self, account_id: str) -> list[tuple[str, ConsoleSession]]:
        """The account's live sessions as ``(hash, session)``, newest first. The hash
        identifies a session on the page; it cannot be turned back into a cookie."""
        with _store():
            digests = [d.decode() if isinstance(d, bytes) else d
                       for d in self.redis.smembers(self.index_key(account_id))]
            raws = self.redis.mget([self._key(d) for d in digests]) if digests else []
        live, gone, now = [], [], self.clock.time()
        for digest, raw in zip(digests, raws, strict=True):
            session = _parse(raw)
            if session is None or session.account_id != account_id or now >= session.expires:
                gone.append(digest)
            else:
                live.append((digest, session))
        if gone:
            with _store():
                self.redis.srem(self.index_key(account_id), *gone)
        return sorted(live, key=lambda item: item[1].created, reverse=True)

    def end_others(self, account_id: str, keep_session_id: str) -> int:
        """Sign out every other session of the account (a lost laptop, a shared
        computer); returns how many ended. The one making the request stays."""
        keep = session_hash(keep_session_id)
        others = [d for d, _ in self.list_for(account_id) if d != keep]
        if others:
            with _store(), self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(*[self._key(d) for d in others])
                pipe.srem(self.index_key(account_id), *others)
                pipe.execute()
        return len(others)

    @staticmethod
    def csrf_ok(session: ConsoleSession | None, token) -> bool:
        return session is not None and isinstance(token, str) and bool(token) and \
            hmac.compare_digest(session.csrf.encode(), token.encode())


@contextlib.contextmanager
def _store():
    """Any failure of Redis, the session store: 503 (sessions cannot fail open)."""
    try:
        yield
    except Exception as exc:
        raise ServiceUnavailable("The session store is unavailable") from exc


def _parse(raw) -> ConsoleSession | None:
    if not raw:
        return None
    try:
        return ConsoleSession(**json.loads(raw))
    except (ValueError, TypeError):
        return None
