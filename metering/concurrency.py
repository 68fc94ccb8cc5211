"""Concurrency slots for requests that hold a server thread while they wait (issue 10).

A waiting POST, ``GET /zapier/v1/compositions/{uid}?wait=N``, an SSE stream and the AIMG
routes' waits each keep one gthread thread busy until the composition ends or the wait
runs out. Without a cap, one tenant could occupy every thread and no one else (not even
``/health``) would be answered. Before it waits, a request takes a slot:

- per credential (``WAIT_SLOTS_PER_CREDENTIAL``) and in all (``WAIT_SLOTS_TOTAL``), both
  counted in Redis so every process of every host shares them. Each scope is a sorted set
  of leases whose scores are their expiry times; one Lua script drops the lapsed leases,
  checks both caps and adds the lease to both sets atomically, so N concurrent requests
  against a cap of C let exactly C through. A holder renews its lease while it waits and
  releases it when it is done; a killed process's leases simply lapse (``LEASE_SECONDS``).
- per process (``WAIT_SLOTS_PER_PROCESS``, half the threads by default): a local counter,
  released only when the request ends, never by expiry, so however unevenly gunicorn
  spreads the waits over its processes, each process keeps threads for ordinary requests.

With Redis down no wait can be served anyway (waits listen on Redis pub/sub), so a failed
acquisition says ``unavailable`` and the caller answers without waiting; for a few seconds
after a failure Redis is not asked again (like the rate limiter's breaker), so a hung
Redis costs one timeout, not one per request.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading

from core.clock import SYSTEM, Clock

log = logging.getLogger(__name__)

LEASE_SECONDS = 60.0  # a lease not renewed for this long has lapsed (its process died)
RENEW_SECONDS = LEASE_SECONDS / 3  # holders renew at most this often
BREAKER_SECONDS = 5.0  # after a Redis failure, acquisitions answer unavailable this long

HELD, FULL, UNAVAILABLE = "held", "full", "unavailable"

# KEYS: the credential's set, the global set. ARGV: now, expiry, token, per-credential
# cap, total cap, key ttl. Returns 0 (held), 1 (credential full) or 2 (total full).
_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then return 2 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 0
"""

# Move an existing lease's expiry (XX: a lease that already lapsed is not brought back).
_RENEW = """
local n = redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return n
"""

_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 0
"""


class Lease:
    """The outcome of one acquisition; ``held`` only when the caller may wait.

    ``reason`` is ``held``, ``full`` (a cap is reached; ``scope`` names it: credential,
    total or process) or ``unavailable`` (Redis did not answer). ``release`` is idempotent
    and never raises; use the lease as a context manager, or release it in a ``finally``.
    """

    def __init__(self, slots, reason, scope="", key="", token=""):
        self._slots, self.reason, self.scope = slots, reason, scope
        self._key, self._token = key, token
        self._renewed = slots.clock.monotonic()
        self._released = reason != HELD

    @property
    def held(self) -> bool:
        return self.reason == HELD

    def renew(self) -> None:
        """Push the lease's expiry forward (at most every ``RENEW_SECONDS``); best effort."""
        if self._released or self._slots.clock.monotonic() - self._renewed < RENEW_SECONDS:
            return
        self._renewed = self._slots.clock.monotonic()
        self._slots._renew(self._key, self._token)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._slots._release(self._key, self._token)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class WaitSlots:
    """The caps on concurrent waits and streams; see the module docstring."""

    def __init__(self, redis, *, prefix: str, per_credential: int, total: int,
                 per_process: int, clock: Clock = SYSTEM, lease_s: float = LEASE_SECONDS):
        self.redis, self.prefix, self.clock = redis, prefix, clock
        self.per_credential, self.total, self.per_process = per_credential, total, per_process
        self.lease_s = lease_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew_script = redis.register_script(_RENEW)
        self._release_script = redis.register_script(_RELEASE)
        self._lock = threading.Lock()
        self._local = 0  # slots this process holds now
        self._closed_until = 0.0  # the breaker: Redis failed recently

    @classmethod
    def from_config(cls, config, redis, clock: Clock = SYSTEM) -> WaitSlots:
        return cls(redis, prefix=config.redis_prefix,
                   per_credential=config.wait_slots_per_credential,
                   total=config.waits_total, per_process=config.waits_per_process, clock=clock)

    def key(self, credential: str) -> str:
        return f"{self.prefix}:waits:cred:{credential}"

    @property
    def total_key(self) -> str:
        return f"{self.prefix}:waits:all"

    def held_by_process(self) -> int:
        with self._lock:
            return self._local

    def acquire(self, credential: str) -> Lease:
        """Take a slot for ``credential`` (a caller's ``rate_key``), or say why not."""
        with self._lock:
            if self._local >= self.per_process:
                return Lease(self, FULL, "process")
            if self.clock.monotonic() < self._closed_until:
                return Lease(self, UNAVAILABLE)
            self._local += 1
        key, token = self.key(credential), secrets.token_hex(8)
        now = self.clock.time()
        try:
            outcome = int(self._acquire(
                keys=[key, self.total_key],
                args=[now, now + self.lease_s, token, self.per_credential, self.total,
                      int(self.lease_s) + 1]))
        except Exception as exc:  # Redis down or hung: no wait can be served now
            self._give_back_local()
            with self._lock:
                already_open = self.clock.monotonic() < self._closed_until
                self._closed_until = self.clock.monotonic() + BREAKER_SECONDS
            if not already_open:
                log.warning("wait slots unavailable for %ss: %s", BREAKER_SECONDS,
                            type(exc).__name__)
            return Lease(self, UNAVAILABLE)
        if outcome != 0:
            self._give_back_local()
            return Lease(self, FULL, "credential" if outcome == 1 else "total")
        return Lease(self, HELD, key=key, token=token)

    def _give_back_local(self):
        with self._lock:
            self._local = max(0, self._local - 1)

    def _renew(self, key, token):
        now = self.clock.time()
        with contextlib.suppress(Exception):  # a lapsed renewal only lets the lease expire
            self._renew_script(keys=[key, self.total_key],
                               args=[now + self.lease_s, token, int(self.lease_s) + 1])

    def _release(self, key, token):
        self._give_back_local()
        with contextlib.suppress(Exception):  # unreleased, the lease lapses on its own
            self._release_script(keys=[key, self.total_key], args=[token])
