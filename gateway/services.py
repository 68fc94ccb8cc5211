"""The composition root: every service the product runs on, built from one ``Config``.

The web app (``gateway.app.create_app``), the worker (``gateway worker``) and the
operator's commands all start here, so they share one notion of the database, Redis,
storage, the action registry, the outbound policy, the clock and the id generator. Tests
pass their own clock (``core.clock.ManualClock``) or registry instead of patching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from actions.registry import Registry
from actions.shipped import default_registry
from core.clock import SYSTEM, Clock
from core.config import Config
from core.ids import new_id
from jobs import runtime
from jobs.connection import redis_client, resolve_redis_url
from jobs.content.library import Library
from jobs.content.storage import make_store
from jobs.gpu.catalogue import Catalogue
from jobs.outbound import OutboundPolicy
from jobs.storage import Storage
from metering import db
from metering.generations import Generations

# Database connections per process: the web tier's threads each may hold one; a worker
# runs one job at a time plus its heartbeat and reaper threads; a command needs two.
POOL = {"web": None, "worker": lambda c: max(4, c.db_pool_size // 4), "command": lambda c: 2}


@dataclasses.dataclass(frozen=True)
class Services:
    config: Config
    clock: Clock
    ids: Callable[..., str]
    redis_url: str
    redis: object
    storage: Storage
    registry: Registry
    policy: OutboundPolicy
    models: Catalogue
    library: Library  # the content library over the configured blob store
    # Announces changes to keys, plans and prices to every web process's caches.
    generations: Generations


def bind_database(config: Config, role="web"):
    """Point this process's models at the configured database, pooled for ``role``."""
    pool = POOL[role]
    return db.bind(config.database_url, pool(config) if pool else config.db_pool_size)


def build_services(config: Config, *, role="web", clock: Clock = SYSTEM, ids=new_id,
                   registry: Registry | None = None, redis=None) -> Services:
    """Bind the database for this process and build the services over it.

    ``role`` sizes the connection pool and the Redis client: the web tier's client times
    out (a hung Redis must not hang requests), a worker's blocks on its queues.
    """
    bind_database(config, role)
    redis_url = resolve_redis_url(config)
    if redis is None:
        redis = (redis_client(redis_url, timeout=None) if role == "worker"
                 else redis_client(redis_url))
    return Services(
        config=config, clock=clock, ids=ids, redis_url=redis_url, redis=redis,
        storage=Storage(config), registry=registry or default_registry(),
        policy=OutboundPolicy.from_config(config), models=Catalogue.from_config(config),
        library=Library(config, make_store(config), clock=clock, ids=ids),
        generations=Generations(redis_client(redis_url), config.redis_prefix),
    )


def install_worker_runtime(config: Config, *, clock: Clock = SYSTEM,
                           registry: Registry | None = None) -> runtime.Runtime:
    """Build a worker's services and install them for its RQ tasks."""
    s = build_services(config, role="worker", clock=clock, registry=registry)
    return runtime.install(runtime.Runtime(
        config=config, clock=s.clock, ids=s.ids, redis=s.redis, registry=s.registry,
        storage=s.storage, policy=s.policy, models=s.models,
        heartbeat_s=config.job_heartbeat_s, library=s.library, generations=s.generations))
