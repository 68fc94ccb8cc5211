"""What a node type's ``run(ctx, inputs)`` receives on a worker: the ids of its run and
node, its derived seed, the worker's services, and ``progress``, the checkpoint where a
cancel or the run's ttl stops it (like ``jobs.context.JobContext`` for an action)."""

from __future__ import annotations

from jobs.interrupts import JobCancelled, JobExpired
from jobs.models import Composition
from jobs.queues import cancel_flag

R = Composition.RUNNING

# How often a checkpoint reads the run's row (the truth about a cancel) and how often a
# node's progress is told (events and rows): at most about four times a second.
CHECKPOINT_DB_S = 0.25
PROGRESS_EVERY_S = 0.25


class NodeContext:
    """The services and ids a node's ``run`` may use; ``on_progress(value, maximum,
    percent)`` (the executor's) records and announces a changed, throttled progress."""

    def __init__(self, comp, node_id, seed, rt, on_progress=None, row_read_at=None):
        self.run_uid = self.uid = comp.uid
        self.node_id = node_id
        self.account_id = comp.account_id
        self.seed = seed
        self.deadline = comp.deadline_at
        self.config = rt.config
        self.policy = rt.policy
        self.models = rt.models
        self.stopped = None  # JobContext's batch field, for helpers that read it
        self._rt = rt
        self._clock = rt.clock
        self._on_progress = on_progress
        # the first checkpoint reads the row, unless the caller just read it (monotonic
        # time ``row_read_at``): a trivial node then costs no extra query
        self._last_db = -CHECKPOINT_DB_S if row_read_at is None else row_read_at
        self._last_told = -PROGRESS_EVERY_S
        self._last_value = None

    @property
    def library(self):
        """The content library (``content_id`` inputs read through it, tenant-checked)."""
        return self._rt.library

    @property
    def pipelines(self):
        """The worker's pipeline cache (loads torch on first use)."""
        return self._rt.pipelines

    def save(self, name, data: bytes) -> str:
        """Store a file of this run (named after the node, so nodes never collide)."""
        return self._rt.storage.save(self.run_uid, f"{self.node_id}-{name}", data)

    def progress(self, value, maximum=100) -> None:
        """Report progress (``value`` of ``maximum``); the checkpoint where a cancel
        (``JobCancelled``) or the run's ttl (``JobExpired``) stops the node.

        Cheap enough for every denoising step: one Redis EXISTS, the row at most every
        ``CHECKPOINT_DB_S``, and progress told only when it changed, at most every
        ``PROGRESS_EVERY_S``."""
        now = self.check()
        percent = max(0, min(99, int(100 * value / maximum))) if maximum else 0
        if percent == self._last_value or now - self._last_told < PROGRESS_EVERY_S:
            return
        self._last_value, self._last_told = percent, now
        if self._on_progress is not None:
            self._on_progress(value, maximum, percent)

    def check(self) -> float:
        """The checkpoint alone: ``JobCancelled`` once the run was cancelled or ended,
        ``JobExpired`` past its deadline. Returns the monotonic time it checked at."""
        now = self._clock.monotonic()
        if self._cancel_flagged() or (now - self._last_db >= CHECKPOINT_DB_S
                                      and self._run_ended(now)):
            raise JobCancelled()
        if self._clock.now() > self.deadline:
            raise JobExpired()
        return now

    def _cancel_flagged(self) -> bool:
        try:
            return bool(self._rt.redis.exists(cancel_flag(self.config.redis_prefix,
                                                          self.run_uid)))
        except Exception:  # Redis may lose things; the row is checked on its own schedule
            return False

    def _run_ended(self, now) -> bool:
        self._last_db = now
        row = (Composition.select(Composition.status, Composition.cancel_requested)
               .where(Composition.uid == self.run_uid).first())
        return row is None or row.status != R or bool(row.cancel_requested)
