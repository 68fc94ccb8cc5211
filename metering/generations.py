"""Generation counters in Redis: what lets a process cache credentials and prices safely.

The web tier keeps, per process, the API keys it has resolved (with their account's plan
limits) and the operators' price overrides, so the hot path does not read them from the
database on every request. Each cache is labelled with a generation: a counter in one Redis
hash (``{prefix}:gen``, fields ``keys`` and ``prices``). The rate-limit script
(``metering.ratelimit``) reads both counters in the same round trip that counts the
request, so every request learns whether what its process cached is still current:

* a change that can invalidate a cached credential (a key revoked, a plan's limits changed,
  an account moved to another plan) bumps ``keys`` after its transaction commits; the next
  request on any process sees the new value, drops its cached credentials and reads the
  database again, so a revoked key is refused on the very next request everywhere;
* a price change bumps ``prices``; the next request on any process reloads the prices.

The bump runs after the commit (``database.after_commit``): bumping before it would let a
process reload the old rows and label them with the new generation. A bump that fails
(Redis away) is a ``503`` for the change's caller, who retries; the change itself is saved,
and processes that cannot reach Redis do not trust their caches anyway (credits fail
closed: they read the database on every request until Redis answers again).

Processes that never learn a generation (the worker, the commands) never trust a cache.
"""

from __future__ import annotations

import logging

from core.errors import ServiceUnavailable
from metering.db import database

log = logging.getLogger(__name__)

KEYS = "keys"  # credentials: keys, their accounts' plans, plan limits
PRICES = "prices"  # operators' price overrides

# A counter Redis lost (restart, flush, eviction) must not count again from 0: a process
# still holding a cache labelled 3 would trust it again at the third bump. A missing
# counter starts from the current time in microseconds instead (the rate-limit script does
# the same when it finds one missing), far above any count an earlier run could have reached.
BUMP_SCRIPT = """
local t = redis.call('TIME')
redis.call('HSETNX', KEYS[1], ARGV[1], t[1] .. string.format('%06d', t[2]))
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""


class Generations:
    """Bumps the counters of one Redis and key prefix (the composition root builds one per
    set of services; every function that makes such a change takes it as an argument, so
    a change cannot forget to announce itself)."""

    def __init__(self, redis, prefix: str):
        self.redis = redis
        self.key = f"{prefix}:gen"
        self._bump = redis.register_script(BUMP_SCRIPT)

    def changed(self, field: str) -> None:
        """Bump ``field`` once the current transaction commits (now, outside one)."""
        database.after_commit(lambda: self.bump_now(field))

    def bump_now(self, field: str) -> None:
        """Bump ``field`` now (``changed`` defers it to the commit)."""
        try:
            self._bump(keys=[self.key], args=[field])
        except Exception as exc:  # noqa: BLE001 (any Redis failure)
            log.error("could not bump the %s generation: %s: %s", field,
                      type(exc).__name__, exc)
            raise ServiceUnavailable(
                "The change was saved, but could not yet be announced to every gateway "
                "process (Redis is unavailable); retry the same request", retry_after=5
            ) from None

