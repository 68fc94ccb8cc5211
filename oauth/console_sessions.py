"""Web console sessions (docs/CONSOLE.md): an opaque random id in a cookie, stored in Redis
only as its SHA-256, with the account, a per-session CSRF token and an absolute expiry.

Redis holds what may be lost (ARCHITECTURE.md): losing a session only means signing in
again. The cookie value never reaches storage, so a dump of Redis signs no one in; the
lookup is by the hash, so how long it takes says nothing about the secret; the CSRF token
is compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

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
        return f"{self.prefix}:console:session:{session_hash(session_id)}"

    def create(self, account_id: str, method: str) -> tuple[str, ConsoleSession]:
        """A new session; returns the cookie value (shown to the browser only) and it."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        now = self.clock.time()
        session = ConsoleSession(account_id=account_id, csrf=secrets.token_urlsafe(32),
                                 method=method, created=now, expires=now + self.ttl_s)
        try:
            self.redis.set(self.key(session_id), json.dumps(dataclasses.asdict(session)),
                           ex=self.ttl_s)
        except Exception as exc:
            raise ServiceUnavailable("The session store is unavailable") from exc
        return session_id, session

    def get(self, session_id) -> ConsoleSession | None:
        """The live session of a cookie value, or None (unknown, malformed or expired)."""
        if not isinstance(session_id, str) or not 32 <= len(session_id) <= 128:
            return None
        try:
            raw = self.redis.get(self.key(session_id))
        except Exception as exc:
            raise ServiceUnavailable("The session store is unavailable") from exc
        if not raw:
            return None
        try:
            session = ConsoleSession(**json.loads(raw))
        except (ValueError, TypeError):
            return None
        # Redis expires the key too; the clock's own check covers a clock running ahead.
        return session if self.clock.time() < session.expires else None

    def delete(self, session_id) -> None:
        if isinstance(session_id, str) and session_id:
            try:
                self.redis.delete(self.key(session_id))
            except Exception as exc:
                raise ServiceUnavailable("The session store is unavailable") from exc

    @staticmethod
    def csrf_ok(session: ConsoleSession | None, token) -> bool:
        return session is not None and isinstance(token, str) and bool(token) and \
            hmac.compare_digest(session.csrf.encode(), token.encode())
