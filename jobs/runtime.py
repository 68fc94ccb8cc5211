"""What a worker process needs, set up once per process from its ``Config``.

RQ calls module-level functions with ids only, so the worker command installs the
runtime (database binding, Redis, storage, outbound policy) before it starts taking jobs;
a process that did not (e.g. ``rq`` run by hand) builds it from the environment once.
"""

from __future__ import annotations

import dataclasses
import threading

_lock = threading.Lock()
_current = None


@dataclasses.dataclass
class Runtime:
    config: object
    redis: object
    registry: object
    storage: object
    policy: object
    heartbeat_s: float
    models: object = None  # the model catalogue (jobs.gpu.catalogue.Catalogue)
    _pipelines: object = None

    @property
    def pipelines(self):
        """The process's pipeline cache, made on first use so cpu-only workers never
        import torch."""
        if self._pipelines is None:
            from jobs.gpu.loader import ModelUnavailable, PipelineCache

            try:
                self._pipelines = PipelineCache(self.config.gpu_device,
                                                self.config.gpu_max_models,
                                                self.config.gpu_memory_limit_mb)
            except ImportError:
                raise ModelUnavailable("This worker cannot run models: install the gpu extra "
                                       "(pip install -e '.[gpu]')") from None
        return self._pipelines


def install(config, *, registry=None, redis=None) -> Runtime:
    from actions.outbound import OutboundPolicy
    from actions.registry import default_registry
    from jobs.connection import redis_client, resolve_redis_url
    from jobs.gpu.catalogue import Catalogue
    from jobs.storage import Storage
    from metering import db

    global _current
    with _lock:
        db.bind(config.database_url, pool_size=max(4, config.db_pool_size // 4))
        _current = Runtime(
            config=config,
            redis=redis or redis_client(resolve_redis_url(config), timeout=None),
            registry=registry or default_registry(),
            storage=Storage(config),
            policy=OutboundPolicy.from_config(config),
            heartbeat_s=config.job_heartbeat_s,
            models=Catalogue.from_config(config),
        )
        return _current


def current() -> Runtime:
    if _current is None:
        from core.config import Config

        return install(Config.from_env())
    return _current
