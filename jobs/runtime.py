"""What a worker process's RQ tasks use, installed once per process.

RQ calls module-level functions with ids only (``run_composition(uid)``,
``deliver(msg_id)``), so the services those functions need are installed here before the
worker starts taking jobs. They are built by the composition root
(``gateway.services``), never here: this module only holds them.
"""

from __future__ import annotations

import dataclasses
import threading

from core.clock import Clock

_lock = threading.Lock()
_current = None


class RuntimeMissing(RuntimeError):
    """An RQ task ran in a process whose services were never installed."""


@dataclasses.dataclass
class Runtime:
    config: object
    clock: Clock
    ids: object  # the id generator, core.ids.new_id unless injected
    redis: object
    registry: object  # actions.registry.Registry
    storage: object
    policy: object  # jobs.outbound.OutboundPolicy
    models: object  # jobs.gpu.catalogue.Catalogue
    heartbeat_s: float
    library: object = None  # jobs.content.library.Library: outputs become content items
    generations: object = None  # metering.generations.Generations: plan changes announced
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


def install(runtime: Runtime) -> Runtime:
    global _current
    with _lock:
        _current = runtime
    return runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeMissing("No worker runtime installed: run jobs with `gateway worker` "
                             "(gateway.services.install_worker_runtime)")
    return _current
