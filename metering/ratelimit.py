"""Per-credential rate limits on Redis with the ``limits`` library (CONTRACT 3).

Fixed windows per minute and per day. The limits are hit in order; a request refused
by one gives back what it took from that limit and the earlier ones, so a window counts
only the requests it let through. Each hit is one atomic INCR in Redis, so N concurrent
requests against a limit of L let exactly L through across any number of processes.

A caller's request (``gate``) is one round trip: a server-side script counts both windows
of the ``limits`` keys (same keys, same expiry rule as ``limits``' own fixed windows),
reads their reset time and returns the cache generations (``metering.generations``) with
the decision. With ``expect`` (the generation a cached credential was loaded at) the script
first compares it and, when it is stale, counts nothing and says so, so the caller can read
the credential afresh and ask again: the count is always made against current limits.
Counters are keyed by identity and window, not by the limit's amount (``limits`` puts
the amount in its keys), so a plan change keeps what the caller used in the current
windows instead of starting fresh ones. When Redis is unreachable the limiter fails open:
the request goes through, the failure is logged and counted, and Redis is left alone for
a few seconds (a circuit breaker) so every request does not pay the timeout again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import threading
import time

from hiredis import pack_command
from limits import (
    RateLimitItemPerDay,
    RateLimitItemPerHour,
    RateLimitItemPerMinute,
    RateLimitItemPerSecond,
)
from limits.limits import safe_string
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from core.clock import SYSTEM, Clock

log = logging.getLogger(__name__)

BREAKER_SECONDS = 5.0


class _UsageKeyed:
    """A ``limits`` item whose key names the identity and the window but not the amount,
    so the counter survives a change of the limit (a plan change)."""

    __slots__ = ()

    def key_for(self, *identifiers) -> str:
        parts = [safe_string(k) for k in identifiers]
        return "/".join([self.namespace, *parts, safe_string(self.multiples),
                         self.GRANULARITY.name])


class PerSecond(_UsageKeyed, RateLimitItemPerSecond):
    pass


class PerMinute(_UsageKeyed, RateLimitItemPerMinute):
    pass


class PerHour(_UsageKeyed, RateLimitItemPerHour):
    pass


class PerDay(_UsageKeyed, RateLimitItemPerDay):
    pass


@dataclasses.dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds when the reported window resets
    retry_after: int  # whole seconds; 0 when allowed
    key_generation: str | None = None  # what ``gate`` read (metering.generations)
    price_generation: str | None = None


STALE = "stale"  # ``gate``: the expected credential generation is not the current one

# KEYS: minute counter, day counter, generations hash. ARGV: minute limit, minute expiry,
# day limit, day expiry, expected credential generation ('' = do not check).
# Returns {status, limit, remaining, reset ttl (s), key generation, price generation} with
# status 1 allowed, 0 refused, -1 stale (nothing counted).
GATE_SCRIPT = """
local gen = redis.call('HMGET', KEYS[3], 'keys', 'prices')
if not gen[1] or not gen[2] then
  -- a Redis that lost the counters (restart, flush, eviction) starts them from the current
  -- time in microseconds, never from 0, so no count seen before can come round again
  local t = redis.call('TIME')
  local fresh = t[1] .. string.format('%06d', t[2])
  redis.call('HSETNX', KEYS[3], 'keys', fresh)
  redis.call('HSETNX', KEYS[3], 'prices', fresh)
  gen = redis.call('HMGET', KEYS[3], 'keys', 'prices')
end
local kg, pg = gen[1], gen[2]
if ARGV[5] ~= '' and ARGV[5] ~= kg then
  return {-1, 0, 0, 0, kg, pg}
end
local m = redis.call('INCRBY', KEYS[1], 1)
if m == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local mlimit = tonumber(ARGV[1])
if m > mlimit then
  redis.call('INCRBY', KEYS[1], -1)
  return {0, mlimit, 0, redis.call('TTL', KEYS[1]), kg, pg}
end
local d = redis.call('INCRBY', KEYS[2], 1)
if d == 1 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
local dlimit = tonumber(ARGV[3])
if d > dlimit then
  redis.call('INCRBY', KEYS[2], -1)
  redis.call('INCRBY', KEYS[1], -1)
  return {0, dlimit, 0, redis.call('TTL', KEYS[2]), kg, pg}
end
if mlimit - m <= dlimit - d then
  return {1, mlimit, mlimit - m, redis.call('TTL', KEYS[1]), kg, pg}
end
return {1, dlimit, dlimit - d, redis.call('TTL', KEYS[2]), kg, pg}
"""


class GateCall:
    """``EVALSHA`` of the gate script on this thread's own Redis connection, packed by hiredis.

    What redis-py's ``Script.__call__`` does, less its Python around the socket: no pool
    checkout and release per call (with their lock and observability hooks) and no
    per-argument encoding. The connection is redis-py's own (made from the client's
    connection settings: timeouts, TLS, reconnect on the next call after a failure, its
    reply parser), one per thread that asks, and a new one after a fork. Measured
    in-process on this path: ~85 us of CPU per call through ``Script`` against ~35 us
    this way (bench/README.md, "The gate's client"). A Redis that lost the script
    (restart, ``SCRIPT FLUSH``) answers ``NOSCRIPT``: it is loaded again and the call made
    once more, as ``Script`` does."""

    def __init__(self, client):
        self.client = client
        # the digest Redis will know the script by; loaded on the first NOSCRIPT, so the
        # app starts (and fails open) with Redis down
        self.sha = hashlib.sha1(GATE_SCRIPT.encode()).hexdigest()  # noqa: S324 (Redis' name)
        self._local = threading.local()

    def _load(self) -> str:
        sha = self.client.script_load(GATE_SCRIPT)
        return sha.decode() if isinstance(sha, bytes) else sha

    def __call__(self, *keys_and_args):
        try:
            return self._call(keys_and_args)
        except NoScriptError:
            self.sha = self._load()
            return self._call(keys_and_args)

    def _connection(self):
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # first call here, or a forked child
            pool = self.client.connection_pool
            local.conn = pool.connection_class(**pool.connection_kwargs)
            local.pid = os.getpid()
            local.used = False
        return local

    def _call(self, keys_and_args):
        local = self._connection()
        # hiredis packs str and bytes; the script's numbers go as their decimal text
        command = ("EVALSHA", self.sha, "3",
                   *[a if isinstance(a, str | bytes) else str(a) for a in keys_and_args])
        packed = [pack_command(command)]
        try:
            reply = self._send(local.conn, packed)
        except RedisConnectionError:
            if not local.used:
                raise  # a fresh connection failed: Redis is down, the caller fails open
            # A connection that worked before and fails now was most likely closed by
            # Redis since (a restart, a client timeout): one new connection is tried
            # before failing open, as redis-py's pool checkout does with its health check.
            local.used = False
            reply = self._send(local.conn, packed)
        local.used = True
        return reply

    @staticmethod
    def _send(conn, packed):
        try:
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response()
        except NoScriptError:
            raise  # a whole reply was read: the connection is still in step
        except BaseException:
            conn.disconnect()  # a reply may be half read: the next call reconnects
            raise


def limits_uri(redis_url: str) -> str:
    """``limits`` spells Unix-socket URLs ``redis+unix://``; redis-py spells them ``unix://``."""
    return "redis+unix://" + redis_url[len("unix://"):] if redis_url.startswith("unix://") \
        else redis_url


class RateLimiter:
    def __init__(self, redis_url: str, *, prefix: str, timeout_ms: int = 50, on_fail_open=None,
                 clock: Clock = SYSTEM):
        timeout = timeout_ms / 1000
        self.storage = RedisStorage(
            limits_uri(redis_url), key_prefix=f"{prefix}:rl",
            socket_connect_timeout=timeout, socket_timeout=timeout,
        )
        self.strategy = FixedWindowRateLimiter(self.storage)
        self._gate = GateCall(self.storage.get_connection())
        self._generations_key = f"{prefix}:gen"
        self._on_fail_open = on_fail_open or (lambda: None)
        self._clock = clock  # times the breaker
        self._closed_until = 0.0
        self._lock = threading.Lock()

    def check(self, identity: str, per_minute: int, per_day: int) -> Decision | None:
        """Count one request for ``identity``; ``None`` means Redis failed and we fail open."""
        return self._guarded(self._check, identity,
                             [PerMinute(per_minute), PerDay(per_day)])

    def gate(self, identity: str, per_minute: int, per_day: int, *, expect: str | None = None):
        """``check`` in one round trip that also reads the cache generations: a
        ``Decision`` (with them), ``STALE`` when ``expect`` is not the current credential
        generation (nothing counted), or ``None`` when Redis failed (fail open)."""
        return self._guarded(self._run_gate, identity, per_minute, per_day, expect)

    def _run_gate(self, identity, per_minute, per_day, expect):
        minute, day = PerMinute(per_minute), PerDay(per_day)
        status, limit, remaining, ttl, kgen, pgen = self._gate(
            self.storage.prefixed_key(minute.key_for(identity)),
            self.storage.prefixed_key(day.key_for(identity)), self._generations_key,
            per_minute, minute.get_expiry(), per_day, day.get_expiry(), expect or "")
        if status == -1:
            return STALE
        reset = max(int(ttl), 0) + time.time()
        allowed = status == 1
        return Decision(allowed, int(limit), max(0, int(remaining)), math.ceil(reset),
                        0 if allowed else max(1, math.ceil(reset - time.time())),
                        kgen.decode() if isinstance(kgen, bytes) else str(kgen),
                        pgen.decode() if isinstance(pgen, bytes) else str(pgen))

    def check_hourly(self, identity: str, per_hour: int) -> Decision | None:
        """Limit for unauthenticated routes (signup, login) keyed by client address."""
        return self._guarded(self._check, identity, [PerHour(per_hour)])

    def check_window(self, identity: str, amount: int, seconds: int) -> Decision | None:
        """One fixed window of ``seconds`` (e.g. login attempts per username per 15 min)."""
        return self._guarded(self._check, identity, [PerSecond(amount, multiples=seconds)])

    def check_windows(self, windows) -> tuple[Decision, int | None] | None:
        """Several fixed windows of their own identities, ``(identity, amount, seconds)``,
        counted together: a request refused by one is counted by none (CONTRACT 3; e.g. a
        login refused for its username does not use up its address's attempts). Returns
        the decision and the index of the window that refused (None: allowed)."""
        return self._guarded(self._check_pairs, [
            (PerSecond(amount, multiples=seconds), identity)
            for identity, amount, seconds in windows])

    def peek_window(self, identity: str, amount: int, seconds: int) -> Decision | None:
        """``check_window``'s window as it stands, counting nothing: ``allowed`` is False
        once ``amount`` hits were counted in it (e.g. failures, counted only when they fail)."""
        return self._guarded(self._peek, identity, PerSecond(amount, multiples=seconds))

    def _peek(self, identity, item) -> Decision:
        key = item.key_for(identity)
        remaining = item.amount - self.storage.get(key)
        return self._decision(item, key, remaining, allowed=remaining > 0)

    def _guarded(self, fn, *args):
        if self._clock.monotonic() < self._closed_until:
            self._on_fail_open()
            return None
        try:
            return fn(*args)
        except Exception as exc:  # any Redis failure: fail open, never fail the request
            with self._lock:
                already_open = self._clock.monotonic() < self._closed_until
                self._closed_until = self._clock.monotonic() + BREAKER_SECONDS
            if not already_open:
                log.warning("rate limiter failing open for %ss: %s: %s",
                            BREAKER_SECONDS, type(exc).__name__, exc)
            self._on_fail_open()
            return None

    def _check(self, identity, items) -> Decision:
        """Count the request against each limit in turn (one atomic INCR each).

        The count each INCR returns is this request's own position in the window, so
        ``X-RateLimit-Remaining`` is exact under concurrency, and only the reported
        limit's reset time needs another round trip (three in all, not six).
        """
        return self._check_pairs([(item, identity) for item in items])[0]

    def _check_pairs(self, pairs) -> tuple[Decision, int | None]:
        """``_check`` over ``(limit, identity)`` pairs; also the index of the refusal."""
        counted = []
        for index, (item, identity) in enumerate(pairs):
            key = item.key_for(identity)
            count = self.storage.incr(key, item.get_expiry(), amount=1)
            if count > item.amount:
                # give back what this limit and the earlier ones counted: a window holds
                # only what it let through (what a raised limit then still allows)
                for taken, who in (*((e, w) for e, w, _ in counted), (item, identity)):
                    self.storage.incr(taken.key_for(who), taken.get_expiry(), amount=-1)
                return self._decision(item, key, 0, allowed=False), index
            counted.append((item, identity, count))
        item, identity, count = min(counted, key=lambda entry: entry[0].amount - entry[2])
        return self._decision(item, item.key_for(identity), item.amount - count,
                              allowed=True), None

    def _decision(self, item, key, remaining, *, allowed) -> Decision:
        reset = self.storage.get_expiry(key)
        # ``limits`` computes ``reset`` from Redis' TTL and the real time, so the wait is
        # measured against the real time too, not the injected clock.
        retry = 0 if allowed else max(1, math.ceil(reset - time.time()))
        return Decision(allowed, item.amount, max(0, remaining), math.ceil(reset), retry)
