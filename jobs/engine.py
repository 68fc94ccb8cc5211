"""The job engine: composition records, RQ dispatch, the worker task, and how each
composition ends (completed, failed, expired, cancelled, worker lost), with money
following the outcome: every non-completed end refunds the debit exactly once.

Status changes are conditional UPDATEs (``WHERE status IN (...)``), so a retried RQ job,
a reaper and a cancel racing each other cannot finish a composition twice; the refund row
is written in the same transaction as the status that causes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker, Worker
from rq.job import Job, JobStatus

from core.errors import Conflict, InvalidRequest, NotFound
from jobs import events, webhooks
from jobs.context import DETACHED, Batch, JobContext
from jobs.interrupts import JobCancelled, JobExpired
from jobs.models import DETACHED_ACTIONS, Composition, Post
from jobs.queues import cancel_flag, queue_name
from jobs.runtime import current
from metering import ledger
from metering.db import connection, database, write_transaction

log = logging.getLogger(__name__)
Q, R = Composition.QUEUED, Composition.RUNNING


# How long an idle worker's RQ registration stays current after its last heartbeat:
# RQ heartbeats every WORKER_TTL - 15 s while blocked on its queues and lets the
# registration lapse WORKER_TTL + 60 s after the last one (a busy worker's lasts the
# job's timeout + 60 s). Readiness (/health/ready) counts the workers inside that window.
WORKER_TTL = 60
# How often the reaper puts a resumable composition whose worker was lost back on its
# queue before it fails it (WORKER_LOST, refunded) like any other: a job that kills its
# worker every time (out of memory, say) must not loop until its ttl.
MAX_RESUMES = 2
WORKER_FRESH_S = WORKER_TTL + 60


class RoundRobinSimpleWorker(SimpleWorker):
    """No fork per job (a loaded model stays loaded) and the queues served in turn, so one
    busy model's queue cannot starve the others.

    A heartbeat also puts the worker back in RQ's registry when it is missing there (Redis
    restarted and lost it while the worker waited to reconnect), so readiness sees a
    worker that is serving. ``stop_event`` is set by a shutdown signal, which tells
    ``serve_forever`` a requested stop from RQ giving up on a Redis error."""

    max_connection_wait_time = 30.0  # RQ's own reconnect backoff while idle, capped

    def __init__(self, *args, stop_event: threading.Event | None = None, **kwargs):
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        super().__init__(*args, **kwargs)
        self.stop_event = stop_event or threading.Event()

    def reorder_queues(self, reference_queue):
        pos = self._ordered_queues.index(reference_queue)
        self._ordered_queues = self._ordered_queues[pos + 1:] + self._ordered_queues[:pos + 1]

    def _install_signal_handlers(self):
        super()._install_signal_handlers()
        if self.stop_event.is_set():  # a signal came while this worker was starting
            self._stop_requested = True

    def request_stop(self, signum, frame):
        self.stop_event.set()
        super().request_stop(signum, frame)

    def heartbeat(self, timeout=None, pipeline=None):
        super().heartbeat(timeout, pipeline)
        if pipeline is not None or self.birth_date is None:
            return
        if not self.connection.sismember(self.redis_workers_keys, self.key):
            self._register_again()
        scheduler = self.scheduler
        if scheduler is not None and scheduler._process is not None \
                and not scheduler._process.is_alive():
            # the scheduler process (webhook retries) dies on a Redis error; RQ itself
            # would start it again only at its next maintenance, minutes away
            scheduler.acquire_locks(auto_start=True)

    def abandon(self):
        """After ``work()`` failed on Redis: stop what its teardown could not reach."""
        with contextlib.suppress(Exception):
            if self.scheduler is not None and self.scheduler._process is not None:
                self.stop_scheduler()
        with contextlib.suppress(Exception):
            if self.pubsub_thread is not None:
                self.pubsub_thread.stop()
                self.pubsub.close()

    def _register_again(self):
        from rq import worker_registration

        log.warning("worker %s: registering again (Redis lost this worker)", self.name)
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipe)
            pipe.expire(self.key, self.worker_ttl + 60)
            pipe.execute()


def live_workers(redis, config, queues) -> tuple[dict[str, int], int]:
    """How many live RQ workers serve each logical queue, and how many distinct ones in all.

    Live: registered with RQ (RQ drops a worker whose registration expired) and, unless
    busy, heartbeaten within ``WORKER_FRESH_S`` (a busy worker beats when its job starts
    and stays registered for the job's timeout). Heartbeats are RQ's real-time stamps,
    so they are compared with the real time, not an injected clock."""
    live, per_queue = set(), {}
    now = dt.datetime.now(dt.UTC)
    for name in queues:
        workers = Worker.all(queue=Queue(queue_name(config, name), connection=redis))
        names = {w.name for w in workers if w.last_heartbeat is not None and (
            w.get_state() == "busy"
            or (now - w.last_heartbeat).total_seconds() <= WORKER_FRESH_S)}
        per_queue[name] = len(names)
        live |= names
    return per_queue, len(live)


REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError)


def serve_forever(make_worker, redis, *, with_scheduler=True, max_backoff=30.0) -> None:
    """Run RQ workers in this process until a signal asks it to stop.

    RQ leaves ``work()`` on a Redis error it does not retry itself (a job finishing while
    Redis is down, a timeout), and raises when it cannot even register or tear down. This
    waits for Redis with capped exponential backoff, builds a fresh worker (a new RQ
    registration) and serves again, in the same process, so loaded models stay loaded and
    the reaper thread carries on.
    """
    import signal

    stopping = threading.Event()
    # RQ registers the worker before it installs its own signal handlers: a SIGTERM in
    # that window would kill the process with its registration left live (readiness would
    # count it for minutes). This handler turns such a signal into a requested stop,
    # which ``RoundRobinSimpleWorker._install_signal_handlers`` passes on to RQ.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    failures = 0
    while not stopping.is_set():
        started, worker = time.monotonic(), None
        try:
            worker = make_worker(stop_event=stopping)
            worker.work(with_scheduler=with_scheduler)
        except REDIS_ERRORS as exc:  # RQ could not register or tear down either
            log.warning("worker: Redis failed: %s: %s", type(exc).__name__, exc)
            if worker is not None:
                worker.abandon()
        if stopping.is_set():
            return
        name = worker.name if worker is not None else "-"
        # while this waits, a signal ends the loop (RQ's handlers belong to the old worker)
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        failures = 1 if time.monotonic() - started > max_backoff else failures + 1
        delay = min(max_backoff, 0.5 * 2 ** (failures - 1))
        log.warning("worker %s stopped without being asked; serving again once Redis "
                    "answers (next try in %.1fs)", name, delay)
        while not stopping.wait(delay):
            try:
                redis.ping()
                break
            except REDIS_ERRORS:
                delay = min(max_backoff, delay * 2)


def create(account_id, action, data, *, uid, now, entry, callback_url, queue,
           ttl_s) -> Composition:
    """Insert the job record; call inside the transaction that made the debit ``entry``."""
    return Composition.create(
        uid=uid, account=account_id, action=action.name,
        input=json.dumps(data), receipt=entry.receipt if entry else None,
        credits=-entry.amount if entry else 0, callback_url=callback_url, queue=queue,
        ttl_s=ttl_s, created_at=now, deadline_at=now + dt.timedelta(seconds=ttl_s),
    )


def enqueue(redis, config, comp: Composition, *, at_front=False) -> None:
    """Put the committed composition on its RQ queue (job id = composition uid).

    ``at_front``: the reaper putting back one whose job Redis lost keeps its turn."""
    Queue(queue_name(config, comp.queue), connection=redis).enqueue_call(
        "jobs.engine.run_composition", args=(comp.uid,), job_id=comp.uid,
        timeout=comp.ttl_s + 30, result_ttl=3600, failure_ttl=86400, at_front=at_front,
    )


def get(account_id, uid) -> Composition:
    comp = Composition.get_or_none((Composition.uid == uid) & (Composition.account == account_id))
    if comp is None:
        raise NotFound("No such composition")
    return comp


def queue_position(redis, uid) -> int | None:
    try:
        position = Job.fetch(uid, connection=redis).get_position()
    except Exception:
        return None
    return None if position is None else position + 1


def finish(uid, status, *, now, code=None, message=None, outputs=None,
           from_states=(Q, R)) -> bool:
    """Move a composition to a final state once; refund unless it completed.

    Returns False when another process already finished it (nothing is changed then).
    """
    changes = {Composition.status: status, Composition.finished_at: now}
    if status == Composition.COMPLETED:
        changes[Composition.outputs] = json.dumps(outputs or [])
        changes[Composition.progress] = 100
    else:
        changes[Composition.error] = json.dumps({"code": code, "message": message})
    with write_transaction():
        updated = (Composition.update(changes)
                   .where((Composition.uid == uid) & Composition.status.in_(from_states))
                   .execute())
        if not updated:
            return False
        comp = Composition.get_by_id(uid)
        # what its completed parts used stays spent (a project run's finished nodes)
        unused = comp.credits - (comp.consumed or 0)
        if status != Composition.COMPLETED and comp.receipt and unused > 0:
            refund, _ = ledger.refund(comp.receipt, amount=unused,
                                      reason=f"{uid} {status}: {code}")
            Composition.update(refund_receipt=refund.receipt).where(
                Composition.uid == uid).execute()
    return True


def cancel(account_id, uid, redis, prefix, *, now) -> Composition:
    """Cancel: a queued composition ends now (refunded); a running one is asked to stop
    at its next checkpoint and is refunded if it stops before completing.

    A detached one (a project run) ends now from running too: its parts are separate jobs
    that see the cancel flag (or the ended row) at their next checkpoint and discard
    whatever they made, so nothing is left to wait for."""
    comp = get(account_id, uid)
    if comp.status in Composition.FINAL:
        raise Conflict(f"The composition already ended ({comp.status})")
    detached = comp.action in DETACHED_ACTIONS
    if finish(uid, Composition.CANCELLED, now=now, code="CANCELLED",
              message="Cancelled by the caller", from_states=(Q, R) if detached else (Q,)):
        with contextlib.suppress(Exception):  # tidy only: the job would skip itself anyway
            Job.fetch(uid, connection=redis).cancel()
        if detached:
            with contextlib.suppress(Exception):  # running parts stop sooner; the row rules
                redis.set(cancel_flag(prefix, uid), 1, ex=max(60, comp.ttl_s))
    else:
        Composition.update(cancel_requested=1).where(
            (Composition.uid == uid) & (Composition.status == R)).execute()
        with contextlib.suppress(Exception):  # the fast path; the row above is the truth
            redis.set(cancel_flag(prefix, uid), 1, ex=max(60, comp.ttl_s))
    comp = Composition.get_by_id(uid)
    events.publish(redis, prefix, uid, comp.status, comp.progress)
    return comp


def _heartbeat(uid, interval, stop: threading.Event, clock):
    while not stop.wait(interval):
        try:
            with connection():
                Composition.update(heartbeat_at=clock.now()).where(
                    (Composition.uid == uid) & (Composition.status == R)).execute()
        except Exception:
            log.exception("heartbeat failed for %s", uid)


def _claim(uid, now) -> bool:
    """queued -> running, for exactly one process."""
    return bool(Composition.update(status=R, started_at=now, heartbeat_at=now,
                                   worker=f"{socket.gethostname()}:{os.getpid()}")
                .where((Composition.uid == uid) & (Composition.status == Q)).execute())


def _start_heartbeat(uid, rt) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(uid, rt.heartbeat_s, stop, rt.clock),
                     daemon=True).start()
    return stop


def run_composition(uid: str) -> str:
    """The RQ task. Safe to run twice: only the run that moves it from queued starts it."""
    rt = current()
    with connection():
        now = rt.clock.now()
        if not _claim(uid, now):
            return "skipped"
        comp = Composition.get_by_id(uid)
        if now > comp.deadline_at:
            finish(uid, Composition.FAILED, now=now, code="EXPIRED",
                   message="The composition waited in the queue past its ttl")
            after_end(uid, rt)
            return "expired"
        action = _batch_action(comp, rt)
        if action is not None:
            return _run_batch([comp, *_claim_companions(comp, action, rt)], action, rt)
        events.publish(rt.redis, rt.config.redis_prefix, uid, R, comp.progress)  # 0, or
        stop = _start_heartbeat(uid, rt)  # where a resumed run had got to
        try:
            action = rt.registry.get(comp.action)
            result = action.perform(JobContext(comp, rt), json.loads(comp.input))
            if result is DETACHED:  # someone else (the workflow executor) ends it
                return "detached"
            outcome = _conclude(comp, rt, result)
        except Exception as exc:  # the action failed: the caller gets a clear error and a refund
            outcome = _conclude(comp, rt, error=exc)
        finally:
            stop.set()
        after_end(uid, rt)
        return outcome


def _conclude(comp, rt, result=None, error=None) -> str:
    """Finish a composition that ran: completed with its result, or ended by ``error``."""
    uid, now = comp.uid, rt.clock.now()
    if error is None:
        with database.atomic():
            if finish(uid, Composition.COMPLETED, now=now, outputs=result.get("outputs", [])):
                _create_posts(comp, result.get("posts", []), now, rt.ids)
        return "completed"
    if isinstance(error, JobCancelled):
        finish(uid, Composition.CANCELLED, now=now, code="CANCELLED",
               message="Cancelled while running")
        return "cancelled"
    if isinstance(error, JobExpired):
        finish(uid, Composition.FAILED, now=now, code="TIMEOUT", message="Ran past its ttl")
        return "timeout"
    code = getattr(error, "code", None) or "ACTION_FAILED"
    message = getattr(error, "message", None) or "The action failed"
    if code == "ACTION_FAILED":
        log.error("composition %s failed", uid, exc_info=error)
    if type(error).__name__ == "JobTimeoutException":
        code, message = "TIMEOUT", "Ran past its ttl"
    finish(uid, Composition.FAILED, now=now, code=code, message=message)
    return "failed"


# Batching (GPU_BATCH_MAX > 1): the worker that starts a composition of a batchable action
# also claims compatible compositions waiting in the same RQ queue, runs them as one
# ``perform_batch`` call, then finishes each on its own (outputs, posts, refund, webhooks).

BATCH_SCAN = 200  # how far down the queue a worker looks for companions


def _batch_action(comp, rt):
    """The composition's action when it may run batched on this worker, else None."""
    if rt.config.gpu_batch_max <= 1:
        return None
    try:
        action = rt.registry.get(comp.action)
        if action.batch_key and action.perform_batch \
                and action.batch_key(json.loads(comp.input)) is not None:
            return action
    except Exception:  # the plain path runs it, or fails it with a clear error
        log.exception("could not tell whether %s can be batched", comp.uid)
    return None


def _claim_companions(comp, action, rt) -> list[Composition]:
    """Claim (queued -> running, the same conditional UPDATE as a worker's) up to
    ``GPU_BATCH_MAX - 1`` queued compositions of the same queue whose batch key matches,
    in queue order, and take their jobs off the RQ queue."""
    claimed = []
    try:
        inputs = [json.loads(comp.input)]
        key = action.batch_key(inputs[0])
        queue = Queue(queue_name(rt.config, comp.queue), connection=rt.redis)
        ids = [i for i in queue.get_job_ids(0, BATCH_SCAN) if i != comp.uid]
        if not ids:
            return []
        waiting = {c.uid: c for c in Composition.select().where(
            Composition.uid.in_(ids) & (Composition.status == Q)
            & (Composition.action == comp.action))}
        leader, now = JobContext(comp, rt), rt.clock.now()
        for job_id in ids:
            if len(claimed) + 1 >= rt.config.gpu_batch_max:
                break
            row = waiting.get(job_id)
            if row is None or row.deadline_at < now:
                continue  # an expired one is failed (and refunded) by its own run
            data = json.loads(row.input)
            if action.batch_key(data) != key:
                continue
            if action.batch_fits and not action.batch_fits(leader, [*inputs, data]):
                continue
            if not _claim(job_id, rt.clock.now()):
                continue  # another worker or a cancel got there first
            with contextlib.suppress(Exception):  # tidy only: its run would skip itself
                queue.remove(job_id)
                Job.fetch(job_id, connection=rt.redis).delete(remove_from_queue=False)
            row.status = R
            claimed.append(row)
            inputs.append(data)
    except Exception:  # batching is an optimisation: run with what was claimed so far
        log.exception("could not gather a batch for %s", comp.uid)
    return claimed


def _run_batch(comps, action, rt) -> str:
    batch = Batch([JobContext(c, rt) for c in comps], rt.ids("bat", 10))
    stops = []
    for comp in comps:
        events.publish(rt.redis, rt.config.redis_prefix, comp.uid, R, 0)
        stops.append(_start_heartbeat(comp.uid, rt))
    try:
        try:
            results = list(action.perform_batch(batch, [json.loads(c.input) for c in comps]))
            if len(results) != len(comps):
                raise RuntimeError("perform_batch returned the wrong number of results")
        except Exception as exc:  # the whole run failed: every member gets the error
            results = [exc] * len(comps)
        outcomes = []
        for ctx, comp, result in zip(batch, comps, results, strict=True):
            error = ctx.stopped or (result if isinstance(result, BaseException) else None)
            try:
                outcomes.append(_conclude(comp, rt, None if error else result, error))
            except Exception as exc:  # e.g. its outputs could not be recorded
                outcomes.append(_conclude(comp, rt, error=exc))
    finally:
        for stop in stops:
            stop.set()
    for comp in comps:
        after_end(comp.uid, rt)
    log.info("batch %s of %d: %s", batch.id, len(comps), ", ".join(outcomes))
    return outcomes[0] if len(comps) == 1 else f"batch {batch.id}: {', '.join(outcomes)}"


def _create_posts(comp, posts, now, ids):
    for post in posts:
        Post.create(
            urn=ids("post", 10), account=comp.account_id, composition=comp.uid,
            card_poster=post["cardPoster"], deliverable=json.dumps(post["deliverable"]),
            platform=post.get("platform", "web"), post_format=post.get("postFormat", "image"),
            content_type=post.get("contentType", "image"),
            custom_tags=json.dumps(post.get("customTags", [])),
            content_label=post.get("contentLabel", ""), search_text=post.get("searchText", ""),
            created_at=now, updated_at=now)


def after_end(uid, rt):
    """Tell listeners, then hand notifications (webhooks, callback) to their own jobs."""
    comp = Composition.get_by_id(uid)
    events.publish(rt.redis, rt.config.redis_prefix, uid, comp.status, comp.progress)
    try:
        webhooks.composition_ended(comp, rt)
    except Exception:  # a notification problem must not undo the composition's outcome
        log.exception("could not queue notifications for %s", uid)


# A queued composition whose RQ job is gone is put back on its queue once it is older than
# this: the web tier enqueues right after its commit, so a younger one may be on its way.
REQUEUE_GRACE_S = 30
REQUEUE_SCAN = 1000  # queued compositions looked at per round, oldest first
REQUEUE_LIST_SCAN_S = 30
_PRESENT = {JobStatus.STARTED.value, JobStatus.SCHEDULED.value, JobStatus.DEFERRED.value}


def reap(now=None) -> int:
    """One reaper round; returns how many compositions it acted on.

    - running with no heartbeat for three beats: failed (``WORKER_LOST``) and refunded;
    - queued past the ttl: failed (``EXPIRED``) and refunded;
    - queued within the ttl but no longer known to RQ (Redis lost the job or its queue
      entry, or the job failed before it could start the composition): enqueued again
      under the same job id, not charged again (``run_composition`` starts only a
      composition still queued, so a job that turns up twice runs it once).
    """
    rt = current()
    now = now or rt.clock.now()
    lost_before = now - dt.timedelta(seconds=rt.heartbeat_s * 3)
    count = 0
    with connection():
        # detached ones (project runs) beat only while a node runs: their own reaper
        # (jobs.workflows.executor.reap) watches the nodes instead
        lost = Composition.select(Composition.uid).where(
            (Composition.status == R) & (Composition.heartbeat_at < lost_before)
            & Composition.action.not_in(DETACHED_ACTIONS))
        for comp in lost:
            if _resume(comp.uid, rt, lost_before):
                count += 1
                continue
            if finish(comp.uid, Composition.FAILED, now=now, code="WORKER_LOST",
                      message="The worker running this composition stopped", from_states=(R,)):
                count += 1
                after_end(comp.uid, rt)
        expired = Composition.select(Composition.uid).where(
            (Composition.status == Q) & (Composition.deadline_at < now))
        for comp in expired:
            if finish(comp.uid, Composition.FAILED, now=now, code="EXPIRED",
                      message="The composition waited in the queue past its ttl",
                      from_states=(Q,)):
                count += 1
                after_end(comp.uid, rt)
        count += _requeue_lost(rt, now)
    return count


def _resume(uid, rt, lost_before) -> bool:
    """Put a lost composition of a resumable action back on its queue (running -> queued,
    same job id, not charged again); False when it is not resumable, was resumed
    ``MAX_RESUMES`` times already, or another reaper took it first."""
    comp = Composition.get_or_none(Composition.uid == uid)
    try:
        resumable = comp is not None and rt.registry.get(comp.action).resumable
    except NotFound:
        resumable = False
    if not resumable:
        return False
    # the count is kept in Redis (what may be lost): losing it allows a few more resumes,
    # still bounded by the composition's ttl, after which the reaper fails it
    key = f"{rt.config.redis_prefix}:resumes:{uid}"
    if int(rt.redis.get(key) or 0) >= MAX_RESUMES:
        return False
    moved = (Composition.update(status=Q, worker=None, heartbeat_at=None)
             .where((Composition.uid == uid) & (Composition.status == R)
                    & (Composition.heartbeat_at < lost_before)).execute())
    if not moved:  # another reaper took it: only the one that moved it counts the resume
        return False
    resumes = rt.redis.incr(key)
    rt.redis.expire(key, comp.ttl_s + 3600)
    log.warning("composition %s lost its worker; queued again to resume (%d of %d)", uid,
                resumes, MAX_RESUMES)
    enqueue(rt.redis, rt.config, comp, at_front=True)
    events.publish(rt.redis, rt.config.redis_prefix, uid, Q, comp.progress)
    return True


def _requeue_lost(rt, now) -> int:
    waiting = list(Composition.select().where(
        (Composition.status == Q) & (Composition.deadline_at >= now)
        & (Composition.created_at < now - dt.timedelta(seconds=REQUEUE_GRACE_S)))
        .order_by(Composition.created_at).limit(REQUEUE_SCAN))
    if not waiting:
        return 0
    # A job whose state says queued is looked for on its queue at most every
    # REQUEUE_LIST_SCAN_S, by one reaper of all the workers (reading a long queue is the
    # expensive part); a job that is gone or failed is seen every round. The read is one
    # MULTI, so a job moving from its queue to a worker is seen in one place or the
    # other (the entries workers just took), never in neither.
    scan = bool(rt.redis.set(f"{rt.config.redis_prefix}:reaper:queue-scan", 1, nx=True,
                             ex=REQUEUE_LIST_SCAN_S))
    queues = sorted({queue_name(rt.config, comp.queue) for comp in waiting}) if scan else []
    pipe = rt.redis.pipeline(transaction=True)
    for name in queues:
        queue = Queue(name, connection=rt.redis)
        pipe.lrange(queue.key, 0, -1)
        pipe.lrange(queue.intermediate_queue_key, 0, -1)
    for comp in waiting:
        pipe.hget(Job.key_for(comp.uid), "status")
    replies = [[_text(v) for v in r] if isinstance(r, list) else _text(r)
               for r in pipe.execute()]
    listed = {name: {*replies[2 * i], *replies[2 * i + 1]} for i, name in enumerate(queues)}
    missing = []
    for comp, status in zip(waiting, replies[2 * len(queues):], strict=True):
        if status in _PRESENT:
            continue
        if status == JobStatus.QUEUED.value and (
                not scan or comp.uid in listed[queue_name(rt.config, comp.queue)]):
            continue
        missing.append((comp, status))
    requeued = 0
    for comp, status in missing:
        # one reaper of all the workers puts it back (another one's job would only skip)
        if not rt.redis.set(f"{rt.config.redis_prefix}:reaper:requeued:{comp.uid}", 1,
                            nx=True, ex=REQUEUE_GRACE_S):
            continue
        log.warning("composition %s is queued but its RQ job is gone (%s); enqueueing it "
                    "again", comp.uid, status or "no job")
        enqueue(rt.redis, rt.config, comp, at_front=True)
        requeued += 1
    return requeued


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def list_compositions(account_id, *, limit=50, cursor=None, status=None, action=None):
    """The account's compositions, newest first; ``cursor`` is the last uid seen."""
    query = Composition.select().where(Composition.account == account_id)
    if status:
        query = query.where(Composition.status == status)
    if action:
        query = query.where(Composition.action == action)
    if cursor:
        last = Composition.get_or_none((Composition.uid == cursor)
                                       & (Composition.account == account_id))
        if last is None:
            raise InvalidRequest("cursor is not valid",
                                 details=[{"field": "cursor", "problem": "not from this list"}])
        query = query.where((Composition.created_at < last.created_at)
                            | ((Composition.created_at == last.created_at)
                               & (Composition.uid < last.uid)))
    rows = list(query.order_by(Composition.created_at.desc(), Composition.uid.desc())
                .limit(limit + 1))
    return rows[:limit], (rows[limit - 1].uid if len(rows) > limit else None)
