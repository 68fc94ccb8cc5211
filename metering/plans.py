"""Rate-limit plans and operator-set action prices.

A change made on one process takes effect on the next request everywhere: every change
bumps a generation (``metering.generations``) after it commits, and the web tier's caches
(``PriceBook`` here, the credential cache in ``oauth.credentials``) are trusted only while
the generation the request's rate-limit round trip read is the one they were loaded at."""

from __future__ import annotations

import dataclasses
import threading

from core.clock import utcnow
from core.errors import InvalidRequest, NotFound
from metering.generations import KEYS, PRICES
from metering.ledger import MAX_CREDITS
from metering.models import Account, Plan, Price

DEFAULT_PLAN = "default"


@dataclasses.dataclass(frozen=True)
class Limits:
    plan: str
    per_minute: int
    per_day: int


def limits_for(plan_name, row, config) -> Limits:
    """The limits of a plan row, or the configured defaults when the plan has no row."""
    if row is not None:
        return Limits(plan_name, row.per_minute, row.per_day)
    return Limits(plan_name, config.default_per_minute, config.default_per_day)


MAX_LIMIT = 10**9  # plan limits are 32-bit columns


def _positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"{name} must be a positive integer",
                             details=[{"field": name, "problem": "must be a positive integer"}])
    return value


def set_plan(name: str, per_minute, per_day, *, generations) -> Plan:
    if not name or len(name) > 64:
        raise InvalidRequest("plan name must be 1-64 characters")
    _positive("perMinute", per_minute)
    _positive("perDay", per_day)
    (Plan.insert(name=name, per_minute=per_minute, per_day=per_day, updated_at=utcnow())
     .on_conflict(conflict_target=[Plan.name],
                  update={Plan.per_minute: per_minute, Plan.per_day: per_day,
                          Plan.updated_at: utcnow()})
     .execute())
    generations.changed(KEYS)  # cached credentials carry their plan's limits
    return Plan.get_by_id(name)


def get_plan(name: str, config) -> Limits:
    row = Plan.get_or_none(Plan.name == name)
    if row is None and name != DEFAULT_PLAN:
        raise NotFound(f"No such plan: {name}")
    return limits_for(name, row, config)


def assign_plan(account_id: str, name: str, *, generations) -> None:
    if name != DEFAULT_PLAN and not Plan.select().where(Plan.name == name).exists():
        raise InvalidRequest(f"No such plan: {name}",
                             details=[{"field": "plan", "problem": "no such plan"}])
    if not Account.update(plan=name).where(Account.id == account_id).execute():
        raise NotFound("No such account")
    generations.changed(KEYS)


def set_price(action: str, credits, *, generations) -> None:
    if not isinstance(credits, int) or isinstance(credits, bool) or not 0 <= credits <= MAX_CREDITS:
        raise InvalidRequest("credits must be a non-negative integer",
                             details=[{"field": "credits", "problem": "non-negative integer"}])
    (Price.insert(action=action, credits=credits, updated_at=utcnow())
     .on_conflict(conflict_target=[Price.action],
                  update={Price.credits: credits, Price.updated_at: utcnow()})
     .execute())
    generations.changed(PRICES)


def price_overrides() -> dict[str, int]:
    return {row.action: row.credits for row in Price.select()}


def price_override(action: str) -> int | None:
    row = Price.get_or_none(Price.action == action)
    return None if row is None else row.credits


class PriceBook:
    """The operators' price overrides, cached per process while the price generation holds.

    ``observe(generation)`` is called with what each request's rate-limit round trip read
    (``None`` when Redis did not answer, or in a process that never reads one: the worker);
    reads answer from the cache only while the last observed generation is the one the
    cache was loaded at, and reload everything (one query) otherwise. A load is labelled
    with the generation observed *before* it ran, so a label never claims rows newer than
    the load saw: at worst a request reloads once more than it needed to."""

    def __init__(self):
        self._lock = threading.Lock()
        self._seen = None  # the generation the latest request read; None: not trusted
        self._loaded_at = None
        self._prices: dict[str, int] = {}

    def observe(self, generation) -> None:
        self._seen = generation

    def invalidate(self) -> None:
        """This process changed a price: read afresh until a request confirms a generation
        (a request with no rate-limit round trip, the admin's own, sees it at once)."""
        self._seen = None

    def overrides(self) -> dict[str, int]:
        seen = self._seen
        if seen is not None and seen == self._loaded_at:
            return self._prices
        prices = price_overrides()
        if seen is not None:
            with self._lock:
                self._prices, self._loaded_at = prices, seen
        return prices

    def override(self, action: str) -> int | None:
        return self.overrides().get(action)
