"""The context an asynchronous action's ``perform`` receives on a worker: the ids of its
composition, the services it may use (models, pipelines, storage, outbound policy), and
``progress``, the checkpoint where cancellation and the ttl take effect."""

from __future__ import annotations

from jobs import events
from jobs.interrupts import JobCancelled, JobExpired
from jobs.models import Composition
from jobs.queues import cancel_flag

R = Composition.RUNNING

# What a ``perform`` returns when it hands its composition to someone else (the workflow
# executor): the engine then neither concludes it nor notifies anyone; whoever took it
# over ends it with ``engine.finish`` and ``engine.after_end``.
class _Detached:
    def __repr__(self):
        return "DETACHED"


DETACHED = _Detached()

# How often a running job's checkpoints read the cancel flag from its row and write its
# progress there; between, cancels arrive through a Redis flag and progress as events.
CHECKPOINT_DB_S = 0.25


class JobContext:
    """What an asynchronous action's ``perform`` may use while it runs on a worker."""

    def __init__(self, comp, rt):
        self.uid = comp.uid
        self.account_id = comp.account_id
        self.deadline = comp.deadline_at
        self.config = rt.config
        self.policy = rt.policy
        self.models = rt.models
        self._rt = rt
        self._clock = rt.clock
        self._storage = rt.storage
        self._last_percent = None
        # a resumed run (jobs.engine.MAX_RESUMES) reports from where the lost one got to:
        # progress never goes back
        self._floor = comp.progress or 0
        self._last_db = -CHECKPOINT_DB_S  # the first checkpoint reads and writes the row
        self.stopped = None  # in a batch: the JobCancelled/JobExpired that took it out

    @property
    def library(self):
        """The content library (``content_id`` inputs read through it, tenant-checked)."""
        return self._rt.library

    @property
    def pipelines(self):
        """The worker's pipeline cache (loads torch on first use)."""
        return self._rt.pipelines

    def now(self):
        """The runtime clock's "now" (naive UTC), for the rows a ``perform`` writes."""
        return self._clock.now()

    def save(self, name, data: bytes) -> str:
        """Store an output; the URL to hand back. Images and videos become content items
        of the account (its "creations", listed with its uploads) behind a signed link;
        anything else (a JSON result) is a plain output file."""
        library = getattr(self._rt, "library", None)
        if library is not None:
            saved = library.save_output(self.account_id, self.uid, name, data=data)
            if saved is not None:
                return saved["url"]
        return self._storage.save(self.uid, name, data)

    def progress(self, percent: int) -> None:
        """Report progress; also the checkpoint where cancellation and ttl take effect.

        Called after every denoising step, so it must be cheap: a cancel is seen through
        its Redis flag at once (one EXISTS), and through the database row (the truth,
        should the flag be lost) at most every ``CHECKPOINT_DB_S``; the row's progress is
        written at that pace too, while every change is published as an event.
        """
        percent = max(self._floor, min(99, int(percent)))
        now = self._clock.monotonic()
        due = now - self._last_db >= CHECKPOINT_DB_S
        if self._cancel_flagged() or (due and self._cancel_recorded()):
            raise JobCancelled()
        if self._clock.now() > self.deadline:
            raise JobExpired()
        if percent == self._last_percent:  # a checkpoint only: nothing new to tell
            return
        self._last_percent = percent
        if due:
            self._last_db = now
            Composition.update(progress=percent).where(
                (Composition.uid == self.uid) & (Composition.status == R)).execute()
        events.publish(self._rt.redis, self.config.redis_prefix, self.uid, R, percent)

    def _cancel_flagged(self) -> bool:
        try:
            return bool(self._rt.redis.exists(cancel_flag(self.config.redis_prefix, self.uid)))
        except Exception:  # Redis may lose things; the row is checked on its own schedule
            return False

    def _cancel_recorded(self) -> bool:
        row = (Composition.select(Composition.cancel_requested)
               .where(Composition.uid == self.uid).first())
        return row is not None and bool(row.cancel_requested)


class Batch(list):
    """The ``JobContext`` of each member of one batched run, checkpointed together.

    A member that is cancelled or runs past its ttl drops out (its ``stopped`` is set and
    whatever the run makes for it is discarded); the run stops when no member is left.
    """

    def __init__(self, ctxs, batch_id):
        super().__init__(ctxs)
        self.id = batch_id

    @property
    def live(self) -> list[JobContext]:
        return [ctx for ctx in self if ctx.stopped is None]

    def progress(self, percent: int) -> None:
        for ctx in self.live:
            try:
                ctx.progress(percent)
            except (JobCancelled, JobExpired) as exc:
                ctx.stopped = exc
        if not self.live:
            raise self[0].stopped
