"""The workflow executor: runs a project run node by node, each node its own RQ job on
its own queue, and ends the run exactly once.

A run is one composition (action ``run-project``), debited once with the plan's total.
Its ``perform`` calls :func:`start`, which hands the composition over (``DETACHED``) and
dispatches the ready nodes. Each node job (:func:`run_node`) claims its node, runs it and,
in ONE transaction that first locks the composition row (the ``consumed`` UPDATE), marks
it completed, dispatches what became ready and, when nothing is left, completes the run.
That lock serialises parallel branches finishing at once, a cancel, the reaper and a
failure, so exactly one of them ends the run; every status change is conditional.
A run that does not complete is refunded what its completed nodes did not use
(``engine.finish``: credits - consumed). :func:`settle` then writes the final event and
the node states once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import re
import socket
import threading
from types import SimpleNamespace

from peewee import fn
from rq import Queue
from rq.job import Job, JobStatus

from core.clock import utcnow
from core.errors import NotFound
from jobs import engine, events
from jobs.context import DETACHED
from jobs.interrupts import JobCancelled, JobExpired
from jobs.models import DETACHED_ACTIONS, Composition
from jobs.queues import queue_name
from jobs.runtime import RuntimeMissing, current
from jobs.workflows import runs
from jobs.workflows.context import NodeContext
from jobs.workflows.models import NodeCache, NodeRun, ProjectRun, RunEvent
from jobs.workflows.values import Video
from metering.db import connection, write_transaction
from metering.ledger import for_update

log = logging.getLogger(__name__)
R = Composition.RUNNING
ERROR_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")  # a public error code, never errno & co
N = NodeRun


class NodeInputMissing(Exception):
    """An upstream output a node needs is gone from storage."""

    code = "INPUT_MISSING"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class NodeUnavailable(Exception):
    """This worker's catalogue has no such node type (a worker older than the web tier)."""

    code = "NODE_UNAVAILABLE"

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class _Lost(Exception):
    """The node is no longer running: its result is discarded (the transaction undone)."""


# --- events and progress ------------------------------------------------------------------


def _event(run_uid, name, data, progress, now=None) -> None:
    RunEvent.create(run=run_uid, event=name, created_at=now or utcnow(),
                    data=json.dumps({"run_id": run_uid, "progress": progress, **data}))


def _publish(rt, run_uid, status, progress) -> None:
    if rt is not None:
        events.publish(rt.redis, rt.config.redis_prefix, run_uid, status, progress)


def _overall(run_uid) -> int:
    """(100 x done + the running nodes' progress) / the nodes the plan runs (100: none)."""
    return _overall_of(N.select(N.status, N.progress).where(
        (N.run == run_uid) & N.status.not_in((N.CACHED, N.SKIPPED))))


def _overall_of(nodes) -> int:
    """``_overall`` of node rows already read (the completion transaction has them all)."""
    rows = [n for n in nodes if n.status not in (N.CACHED, N.SKIPPED)]
    if not rows:
        return 100
    total = sum(100 if r.status == N.COMPLETED else r.progress if r.status == N.RUNNING
                else 0 for r in rows)
    return min(100, total // len(rows))


def _set_progress(run_uid, overall) -> None:
    """The composition's progress only moves forward, and stays below 100 until the run
    completes (``engine.finish`` writes the 100)."""
    value = min(99, overall)
    Composition.update(progress=value).where(
        (Composition.uid == run_uid) & (Composition.status == R)
        & (Composition.progress < value)).execute()


def _node_progress(run_uid, node, rt, value, maximum, percent) -> None:
    """A node's throttled progress: its row, the run's, an event and a wake-up. Single
    statements outside a transaction, so they never hold a lock another writer waits on."""
    try:
        N.update(progress=percent).where((N.id == node.id) & (N.status == N.RUNNING)).execute()
        overall = _overall(run_uid)
        _set_progress(run_uid, overall)
        _event(run_uid, "node.progress", {"node": node.node, "value": value, "max": maximum},
               overall, rt.clock.now())
        _publish(rt, run_uid, R, min(99, overall))
    except Exception:  # progress is best effort; the node's outcome is what counts
        log.exception("could not record progress of %s/%s", run_uid, node.node)


# --- dispatch -------------------------------------------------------------------------------


def _catalogue(rt):
    return getattr(rt.registry, "nodes", None) if rt is not None else None


def _node_type(rt, name):
    catalogue = _catalogue(rt)
    return catalogue.find(name) if catalogue is not None else None


def _is_output(rt, node) -> bool:
    node_type = _node_type(rt, node.type)
    return bool(node_type.is_output) if node_type is not None else node.type == "output"


def _is_link(value) -> bool:
    return isinstance(value, dict) and "node" in value and "output" in value


def _advance(comp, rt, now, rows=None):
    """Inside the caller's transaction: claim the nodes whose inputs are all there
    (pending -> queued; output nodes complete at once, they only pass a value on).
    ``rows``: the run's node rows, read in this transaction (updated in place).

    Returns ``(nodes to enqueue after the commit, whether every needed node is done)``."""
    steps = runs.steps_of(comp)
    nodes = {n.node: n for n in (rows if rows is not None else runs.nodes_of(comp.uid))}
    ready = []
    for node in sorted(nodes.values(), key=lambda n: (n.position, n.id)):
        if node.status != N.PENDING:
            continue
        step = steps.get(node.node) or {}
        if not all(nodes[need].status in N.DONE for need in step.get("needs", [])
                   if need in nodes):
            continue
        if _is_output(rt, node):
            _complete_output(comp, node, step, nodes, now)
            continue
        if N.update(status=N.QUEUED).where((N.id == node.id) & (N.status == N.PENDING)) \
                .execute():
            node.status = N.QUEUED
            ready.append(node)
    finished = all(n.status in N.DONE or n.status == N.SKIPPED for n in nodes.values())
    return ready, finished


def _complete_output(comp, node, step, nodes, now) -> None:
    link = step.get("inputs", {}).get("value")
    value = None
    if _is_link(link) and link["node"] in nodes:
        value = json.loads(nodes[link["node"]].outputs or "{}").get(link["output"])
    outputs = {"value": value}
    if N.update(status=N.COMPLETED, progress=100, outputs=json.dumps(outputs),
                started_at=now, finished_at=now).where(
            (N.id == node.id) & (N.status == N.PENDING)).execute():
        node.status, node.outputs = N.COMPLETED, json.dumps(outputs)
        _event(comp.uid, "node.completed", {"node": node.node, "type": node.type,
                                            "outputs": outputs, "duration_ms": 0},
               _overall_of(nodes.values()), now)


def run_outputs(comp, nodes, rt=None, adopt=False) -> list[dict]:
    """The run's outputs: each output node's value ref(s), with ``node`` and ``name``
    (the output node's ``name`` input, else its id); an ``images`` ref gives one entry per
    image. ``adopt`` (when the run completes): images and videos become content items."""
    steps = runs.steps_of(comp)
    out = []
    for node in sorted(nodes, key=lambda n: (n.position, n.id)):
        if not _is_output(rt, node) or not node.outputs:
            continue
        value = json.loads(node.outputs).get("value")
        name = (steps.get(node.node) or {}).get("inputs", {}).get("name") or node.node
        refs = value.get("items", []) if isinstance(value, dict) and \
            value.get("type") == "images" else [value] if value else []
        if adopt:
            refs = [_to_library(comp, ref, rt) for ref in refs]
        out += [{**ref, "node": node.node, "name": name} for ref in refs]
    return out


def _dispatch(comp, nodes, rt, now) -> None:
    """Enqueue claimed nodes (after their commit): job id ``<run>-<node>``, so a node is
    on its queue at most once, with the run's remaining ttl as its timeout."""
    remaining = max(1, int((comp.deadline_at - now).total_seconds()))
    for node in nodes:
        try:
            Queue(queue_name(rt.config, node.queue), connection=rt.redis).enqueue_call(
                "jobs.workflows.executor.run_node", args=(comp.uid, node.node),
                job_id=f"{comp.uid}-{node.node}", timeout=remaining + 30, result_ttl=600,
                failure_ttl=86400)
        except Exception:  # the run's ttl ends it (refunded) if the node never runs
            log.exception("could not enqueue node %s of %s", node.node, comp.uid)


def _finish_completed(comp, rt, now, rows=None) -> bool:
    outputs = run_outputs(comp, rows if rows is not None else runs.nodes_of(comp.uid), rt,
                          adopt=True)
    return engine.finish(comp.uid, Composition.COMPLETED, now=now, outputs=outputs,
                         from_states=(R,))


def _to_library(comp, ref, rt) -> dict:
    """A run's final image or video becomes a content item of its account (listed with
    its uploads), and its URL the item's signed link; intermediate node outputs stay
    run files, read back by later nodes."""
    library = getattr(rt, "library", None)
    if library is None or not isinstance(ref, dict) or ref.get("type") not in ("image",
                                                                               "video"):
        return ref
    path = rt.storage.path(ref.get("uid", ""), ref.get("name", ""))
    saved = library.save_output(comp.account_id, comp.uid, ref["name"], path=path) \
        if path is not None else None
    return {**ref, **saved} if saved else ref


def _ended(run_uid, rt) -> None:
    """After a run's end committed: node states and the final event, then listeners and
    notifications."""
    settle(run_uid)
    engine.after_end(run_uid, rt)


# --- start ------------------------------------------------------------------------------------


def start(run_uid: str):
    """The ``run-project`` action's perform (on a worker, composition running): write
    ``run.started`` and ``node.cached``, dispatch every ready node; returns ``DETACHED``."""
    rt = current()
    comp = Composition.get_by_id(run_uid)
    run = ProjectRun.get_by_id(run_uid)
    now = rt.clock.now()
    ready, finished = [], False
    with write_transaction():
        alive = Composition.update(heartbeat_at=now).where(
            (Composition.uid == run_uid) & (Composition.status == R)).execute()
        if alive:
            nodes = runs.nodes_of(run_uid)
            progress = _overall(run_uid)
            _event(run_uid, "run.started", {"estimated_cost": run.estimate, "nodes": [
                {"id": n.node, "type": n.type, "status": n.status, "credits": n.credits}
                for n in nodes]}, progress, now)
            for n in nodes:
                if n.status == N.CACHED:
                    _event(run_uid, "node.cached", {"node": n.node, "type": n.type,
                                                    "outputs": json.loads(n.outputs or "{}")},
                           progress, now)
            ready, finished = _advance(comp, rt, now, nodes)
            progress = _overall_of(nodes)
            _set_progress(run_uid, progress)
            finished = finished and _finish_completed(comp, rt, now, nodes)
    if not alive:
        settle(run_uid)
    # Several ready nodes all go on their queues, so free workers take independent
    # branches at once; a lone first node on this job's queue runs right here (a chain
    # costs no RQ hop per node: see ``_chain``).
    inline = ready[0] if len(ready) == 1 and ready[0].queue == comp.queue else None
    _dispatch(comp, [n for n in ready if n is not inline], rt, now)
    if finished:
        _ended(run_uid, rt)
        return DETACHED
    _publish(rt, run_uid, R, min(99, progress) if alive else 0)
    if inline is not None:
        _chain(run_uid, inline.node, rt)
    return DETACHED


def _next_here(ready, queue):
    """The ready node this job runs next itself (the first on its own queue, which this
    worker serves): a chain of nodes costs one RQ job, not one per node; the others are
    enqueued, so free workers run independent branches in parallel."""
    return next((n for n in ready if n.queue == queue), None)


class _Carry:
    """What one node of a chain hands the next one run in the same job: the composition,
    the run's node rows and its variables as the completion transaction read them, so
    the next node does not read them again."""

    def __init__(self, comp=None, node=None, rows=None):
        self.comp, self.node, self.rows, self.variables = comp, node, rows, None


def _chain(run_uid, node_id, rt) -> str:
    """Run ``node_id`` (claimed: queued) and, while each node makes one ready on this
    queue, that one too. Should this process die, the reaper sees the running node's
    heartbeat stop (or puts a queued one without an RQ job back on its queue)."""
    outcome, carry = "skipped", _Carry()
    while node_id is not None:
        outcome, node_id = _run_one(run_uid, node_id, rt, carry)
    return outcome


# --- one node -----------------------------------------------------------------------------


def _claim(run_uid, node_id, now) -> bool:
    """queued -> running, for exactly one job."""
    return bool(N.update(status=N.RUNNING, started_at=now, heartbeat_at=now, progress=0,
                         worker=f"{socket.gethostname()}:{os.getpid()}")
                .where((N.run == run_uid) & (N.node == node_id) & (N.status == N.QUEUED))
                .execute())


def _beat(node_pk, run_uid, interval, stop: threading.Event, clock) -> None:
    while not stop.wait(interval):
        try:
            with connection():
                now = clock.now()
                N.update(heartbeat_at=now).where((N.id == node_pk)
                                                 & (N.status == N.RUNNING)).execute()
                Composition.update(heartbeat_at=now).where(
                    (Composition.uid == run_uid) & (Composition.status == R)).execute()
        except Exception:
            log.exception("heartbeat failed for %s node %s", run_uid, node_pk)


def _start_heartbeat(node, rt) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=_beat, args=(node.id, node.run_id, rt.heartbeat_s, stop,
                                         rt.clock), daemon=True).start()
    return stop


def run_node(run_uid: str, node_id: str) -> str:
    """The RQ task of one node (then of the nodes it makes ready on its own queue: see
    ``_chain``). Safe to run twice: only the job that claims a node runs it."""
    rt = current()
    with connection():
        return _chain(run_uid, node_id, rt)


def _run_one(run_uid, node_id, rt, carry) -> tuple[str, str | None]:
    """Claim and run one node; ``(outcome, the next node to run here or None)``. A node
    ``carry`` names was made ready by the previous node's commit: its composition (then
    running) and row come from there; a cancel since is caught at the checkpoint and
    at the completion, which both read the row."""
    now = rt.clock.now()
    if not _claim(run_uid, node_id, now):
        return "skipped", None
    if carry.node is not None and carry.node.node == node_id:
        comp, node = carry.comp, carry.node
    else:
        comp = Composition.get_by_id(run_uid)
        node = N.get((N.run == run_uid) & (N.node == node_id))
        carry.rows = None
    if comp.status != R:  # the run ended while this waited: discard
        settle(run_uid)
        return "discarded", None
    if now > comp.deadline_at:
        return _fail(run_uid, node, rt, "TIMEOUT", "The run went past its ttl"), None
    # a node starting at 0 leaves the run's progress where it is
    _event(run_uid, "node.started", {"node": node_id, "type": node.type}, comp.progress, now)
    _publish(rt, run_uid, R, comp.progress)
    return _run_started(comp, node, rt, carry)


def _run_started(comp, node, rt, carry) -> tuple[str, str | None]:
    """Run a claimed node under a heartbeat; its end (completed, failed, discarded)."""
    run_uid = comp.uid
    stop = _start_heartbeat(node, rt)
    started = rt.clock.monotonic()
    try:
        outputs = _execute(comp, node, rt, carry, read_at=started)
    except JobCancelled:  # the run ended (cancelled): its nodes are settled
        settle(run_uid)
        return "cancelled", None
    except JobExpired:
        return _fail(run_uid, node, rt, "TIMEOUT", "The run went past its ttl"), None
    except Exception as exc:
        stop.set()
        code, message = _error_of(exc, run_uid, node)
        return _fail(run_uid, node, rt, code, message), None
    finally:
        stop.set()
    return _complete(comp, node, outputs, rt, int((rt.clock.monotonic() - started) * 1000),
                     carry)


def _error_of(exc, run_uid, node) -> tuple[str, str]:
    """A domain error (or an outbound refusal) keeps its code and message; anything else
    is ``NODE_FAILED`` with a generic message and its traceback in the log."""
    code, message = getattr(exc, "code", None), getattr(exc, "message", None)
    if type(exc).__name__ == "JobTimeoutException":
        return "TIMEOUT", "The run went past its ttl"
    if isinstance(code, str) and ERROR_CODE.match(code):  # e.g. MODEL_UNAVAILABLE
        return code, message if isinstance(message, str) and message else str(exc)
    log.error("node %s (%s) of run %s failed", node.node, node.type, run_uid, exc_info=exc)
    return "NODE_FAILED", f"Node {node.node} ({node.type}) failed"


def _execute(comp, node, rt, carry, read_at=None) -> dict:
    """Decode the node's inputs, run it, store what it made; its ``{output: ref}``.
    ``read_at``: when the composition row was read (monotonic), for the first checkpoint."""
    node_type = _node_type(rt, node.type)
    if node_type is None:
        raise NodeUnavailable(f"Node type {node.type} is not known to this worker")
    step = runs.steps_of(comp).get(node.node) or {}
    inputs = _decode_inputs(comp, step, rt, carry)
    ctx = NodeContext(comp, node.node, step.get("seed"), rt,
                      on_progress=lambda value, maximum, percent: _node_progress(
                          comp.uid, node, rt, value, maximum, percent),
                      row_read_at=read_at)
    ctx.check()  # before any work: a run cancelled meanwhile stops here
    result = node_type.run(ctx, inputs) or {}
    declared = {o.name: o.type for o in node_type.outputs}
    return {name: _encode(comp.uid, node.node, name, declared.get(name), value, rt)
            for name, value in result.items() if name in declared and value is not None}


def _complete(comp, node, outputs, rt, duration_ms, carry) -> tuple[str, str | None]:
    """ONE transaction, the composition row locked first: consumed += the node's credits,
    the node completed, its cache row, its event, the nodes now ready, and the run's
    completion when nothing is left. Returns the outcome and the ready node this job
    runs next (``_next_here``); the other ready nodes are enqueued."""
    now = rt.clock.now()
    ready, finished = [], False
    try:
        with write_transaction():
            if not Composition.update(consumed=Composition.consumed + node.credits).where(
                    (Composition.uid == comp.uid) & (Composition.status == R)).execute():
                raise _Lost()  # the run ended meanwhile: what this node made is discarded
            if not N.update(status=N.COMPLETED, progress=100, outputs=json.dumps(outputs),
                            finished_at=now).where((N.id == node.id)
                                                   & (N.status == N.RUNNING)).execute():
                raise _Lost()
            _remember(comp, node, outputs, rt, now)
            rows = runs.nodes_of(comp.uid)  # read after the lock: every node's latest state
            _event(comp.uid, "node.completed", {"node": node.node, "type": node.type,
                                                "outputs": outputs,
                                                "duration_ms": duration_ms},
                   _overall_of(rows), now)
            ready, finished = _advance(comp, rt, now, rows)
            progress = _overall_of(rows)
            _set_progress(comp.uid, progress)
            finished = finished and _finish_completed(comp, rt, now, rows)
    except _Lost:
        settle(comp.uid)
        return "discarded", None
    inline = None if finished else _next_here(ready, node.queue)
    _dispatch(comp, [n for n in ready if n is not inline], rt, now)
    if finished:
        _ended(comp.uid, rt)
        return "completed run", None
    _publish(rt, comp.uid, R, min(99, progress))
    if inline is None:
        return "completed", None
    comp.progress = max(comp.progress, min(99, progress))
    carry.comp, carry.node, carry.rows = comp, inline, rows
    return "completed", inline.node


def _remember(comp, node, outputs, rt, now) -> None:
    node_type = _node_type(rt, node.type)
    if not node.cache_key or node_type is None or node_type.is_output \
            or not getattr(node_type, "cacheable", True):
        return
    NodeCache.insert(account=comp.account_id, key=node.cache_key, type=node.type,
                     outputs=json.dumps(outputs), run=comp.uid, created_at=now) \
        .on_conflict_ignore().execute()


def _fail(run_uid, node, rt, code, message, now=None) -> str:
    """The node's error ends the run: in one transaction the run failed (refunding what
    the completed nodes did not use), the node failed and its event; then settle."""
    now = now or rt.clock.now()
    error = {"code": code, "message": message}
    with write_transaction():
        # the run's row first (as a completing node locks it), then: is the node still
        # running? (the reaper may look at a node whose slow worker just completed it)
        running = for_update(Composition.select(Composition.uid).where(
            (Composition.uid == run_uid) & (Composition.status == R))).first() is not None \
            and N.select().where((N.id == node.id) & (N.status == N.RUNNING)).exists()
        ended = running and engine.finish(run_uid, Composition.FAILED, now=now, code=code,
                                          message=message, from_states=(R,))
        if ended and N.update(status=N.FAILED, error=json.dumps(error), finished_at=now) \
                .where((N.id == node.id) & (N.status == N.RUNNING)).execute():
            _event(run_uid, "node.failed", {"node": node.node, "type": node.type,
                                            "error": error}, _overall(run_uid), now)
    if ended:
        _ended(run_uid, rt)
        return "failed"
    settle(run_uid)  # another end came first; this node's failure changes nothing
    return "discarded"


# --- values -------------------------------------------------------------------------------


def _decode_inputs(comp, step, rt, carry) -> dict:
    links = [v for v in (step.get("inputs") or {}).values() if _is_link(v)]
    rows = carry.rows if carry.rows is not None or not links else runs.nodes_of(comp.uid)
    nodes = {n.node: n for n in rows or ()}
    out = {}
    for name, value in (step.get("inputs") or {}).items():
        if _is_link(value):
            source = nodes.get(value["node"])
            ref = json.loads(source.outputs or "{}").get(value["output"]) if source else None
            out[name] = _decode(ref, rt)
        else:
            out[name] = value
    if carry.variables is None:  # the run's variables never change: read once per job
        carry.variables = json.loads(ProjectRun.get_by_id(comp.uid).variables or "{}")
    out["__variables__"] = carry.variables
    return out


def _file(ref, rt):
    path = rt.storage.path(ref.get("uid", ""), ref.get("name", ""))
    if path is None:
        raise NodeInputMissing(f"The stored output {ref.get('name')} is gone")
    return path


def _decode(ref, rt):
    """A stored ref as the value a node's ``run`` takes (jobs.workflows.values)."""
    if not isinstance(ref, dict):
        return ref
    kind = ref.get("type")
    if kind == "image":
        from PIL import Image

        image = Image.open(_file(ref, rt))
        image.load()
        return image
    if kind == "images":
        return [_decode(item, rt) for item in ref.get("items", [])]
    if kind == "video":
        return Video(data=_file(ref, rt).read_bytes(), format=ref.get("format", "mp4"),
                     width=ref.get("width", 0), height=ref.get("height", 0),
                     fps=ref.get("fps", 0), frame_count=ref.get("frameCount", 0))
    return ref.get("value")


def _save_image(run_uid, name, image, rt) -> dict:
    if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I"):
        image = image.convert("RGBA" if "A" in image.mode else "RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    url = rt.storage.save(run_uid, f"{name}.png", buf.getvalue())
    return {"type": "image", "url": url, "uid": run_uid, "name": f"{name}.png",
            "format": "png", "width": image.width, "height": image.height}


def _encode(run_uid, node_id, name, declared, value, rt) -> dict:
    """A node's output value as a ref; binary values are written to the run's storage."""
    from PIL import Image

    base = f"{node_id}-{name}"
    if isinstance(value, Video):
        file_name = f"{base}.{value.format}"
        url = rt.storage.save(run_uid, file_name, value.data)
        return {"type": "video", "url": url, "uid": run_uid, "name": file_name,
                "format": value.format, "width": value.width, "height": value.height,
                "fps": value.fps, "frameCount": value.frame_count}
    if isinstance(value, Image.Image):
        return _save_image(run_uid, base, value, rt)
    if isinstance(value, (list, tuple)):
        return {"type": "images", "items": [_save_image(run_uid, f"{base}-{i}", v, rt)
                                            for i, v in enumerate(value)]}
    if declared == "number" or (isinstance(value, (int, float)) and not isinstance(value, bool)
                                and declared != "text"):
        return {"type": "number", "value": value}
    return {"type": "text", "value": value if isinstance(value, str) else str(value)}


# --- the end of a run -----------------------------------------------------------------------


def _runtime():
    with contextlib.suppress(RuntimeMissing):
        return current()
    return None


def settle(run_uid: str) -> bool:
    """Once the composition is final, once: nodes not final become skipped (never
    started) or cancelled (queued or running), and the final event is written. Returns
    True when this call settled it. Safe anywhere (workers, the reaper, readers)."""
    comp = Composition.get_or_none(Composition.uid == run_uid)
    if comp is None or comp.status not in Composition.FINAL:
        return False
    now = comp.finished_at or comp.created_at
    with write_transaction():
        if not ProjectRun.update(settled=1).where(
                (ProjectRun.uid == run_uid) & (ProjectRun.settled == 0)).execute():
            return False
        N.update(status=N.SKIPPED).where((N.run == run_uid) & (N.status == N.PENDING)) \
            .execute()
        N.update(status=N.CANCELLED, finished_at=now).where(
            (N.run == run_uid) & N.status.in_((N.QUEUED, N.RUNNING))).execute()
        _event(run_uid, f"run.{comp.status}", _final_data(comp), comp.progress, now)
    _publish(_runtime(), run_uid, comp.status, comp.progress)
    return True


def _final_data(comp) -> dict:
    if comp.status == Composition.COMPLETED:
        return {"outputs": json.loads(comp.outputs or "[]")}
    money = {"refundReceipt": comp.refund_receipt, "refunded": runs.refunded(comp)}
    if comp.status == Composition.FAILED:
        return {"error": json.loads(comp.error) if comp.error else None, **money}
    return money


def cancel(account_id, uid, redis, prefix, *, now, config=None):
    """Cancel the account's run: it ends now (queued or running; refunded what it did not
    use), running nodes stop at their next checkpoint and their results are discarded.

    With ``config``, a run that had started is notified like any composition a worker
    ended (its ``callback_url`` gets ``composition.cancelled``); a queued one is not,
    as with every composition cancelled before it started."""
    if not ProjectRun.select().where((ProjectRun.uid == uid)
                                     & (ProjectRun.account == account_id)).exists():
        raise NotFound("No such run")
    started = Composition.get_by_id(uid).status == R
    comp = engine.cancel(account_id, uid, redis, prefix, now=now)
    settle(uid)
    events.publish(redis, prefix, uid, comp.status, comp.progress)
    if started and config is not None and comp.status == Composition.CANCELLED:
        try:
            engine.after_end(uid, SimpleNamespace(redis=redis, config=config))
        except Exception:  # a notification problem must not undo the cancel
            log.exception("could not notify the cancel of %s", uid)
    return Composition.get_by_id(uid)


def reap(now=None) -> int:
    """One reaper round over project runs; returns how many it acted on.

    - a running node with no heartbeat for three beats: the node and the run fail
      (``WORKER_LOST``), refunded what the completed nodes did not use;
    - a running run with nothing queued or running and no heartbeat for three beats
      (its worker stopped while starting it): failed (``WORKER_LOST``);
    - a running run past its deadline: failed (``TIMEOUT``);
    - a queued node of a running run whose RQ job is gone (Redis lost it, or it failed
      before it could claim the node): enqueued again under the same job id (a job that
      turns up twice runs the node once: only one claims it);
    - a run whose composition ended elsewhere (ttl in the queue, a lost queue, a cancel)
      but was never settled: settled.
    """
    rt = current()
    now = now or rt.clock.now()
    lost_before = now - dt.timedelta(seconds=rt.heartbeat_s * 3)
    count = 0
    with connection():
        lost = list(N.select().join(Composition, on=(N.run == Composition.uid)).where(
            (N.status == N.RUNNING) & (N.heartbeat_at < lost_before)
            & (Composition.status == R)))
        for node in lost:
            if _fail(node.run_id, node, rt, "WORKER_LOST",
                     f"The worker running node {node.node} stopped", now) == "failed":
                count += 1
        count += _fail_stuck(rt, now, lost_before)
        late = list(Composition.select(Composition.uid).where(
            (Composition.status == R) & Composition.action.in_(DETACHED_ACTIONS)
            & (Composition.deadline_at < now)))
        for comp in late:
            if engine.finish(comp.uid, Composition.FAILED, now=now, code="TIMEOUT",
                             message="The run went past its ttl", from_states=(R,)):
                count += 1
                _ended(comp.uid, rt)
        count += _requeue_lost_nodes(rt, now)
        unsettled = list(ProjectRun.select(ProjectRun.uid).join(
            Composition, on=(ProjectRun.uid == Composition.uid)).where(
            (ProjectRun.settled == 0) & Composition.status.in_(Composition.FINAL)))
        for run in unsettled:
            if settle(run.uid_id):
                count += 1
    return count


def _fail_stuck(rt, now, lost_before) -> int:
    """Between its nodes a running run always has one queued or running (which beats for
    it); one with neither and a stale heartbeat lost its worker while starting."""
    busy = N.select(N.id).where((N.run == Composition.uid)
                                & N.status.in_((N.QUEUED, N.RUNNING)))
    stuck = list(Composition.select(Composition.uid).where(
        (Composition.status == R) & Composition.action.in_(DETACHED_ACTIONS)
        & (Composition.heartbeat_at < lost_before) & ~fn.EXISTS(busy)))
    count = 0
    for comp in stuck:
        if engine.finish(comp.uid, Composition.FAILED, now=now, code="WORKER_LOST",
                         message="The worker starting this run stopped", from_states=(R,)):
            count += 1
            _ended(comp.uid, rt)
    return count


REQUEUE_SCAN = 1000  # queued nodes looked at per round
_PRESENT = (JobStatus.QUEUED.value, JobStatus.STARTED.value, JobStatus.DEFERRED.value,
            JobStatus.SCHEDULED.value)


def _requeue_lost_nodes(rt, now) -> int:
    waiting = list(N.select().join(Composition, on=(N.run == Composition.uid)).where(
        (N.status == N.QUEUED) & (Composition.status == R)).limit(REQUEUE_SCAN))
    if not waiting:
        return 0
    pipe = rt.redis.pipeline(transaction=False)
    for node in waiting:
        pipe.hget(Job.key_for(f"{node.run_id}-{node.node}"), "status")
    requeued = 0
    for node, status in zip(waiting, pipe.execute(), strict=True):
        status = status.decode() if isinstance(status, bytes) else status
        job_id = f"{node.run_id}-{node.node}"
        # one reaper of all the workers puts it back (a second copy would only skip)
        if status in _PRESENT or not rt.redis.set(
                f"{rt.config.redis_prefix}:reaper:requeued:{job_id}", 1, nx=True, ex=30):
            continue
        log.warning("node %s is queued but its RQ job is gone (%s); enqueueing it again",
                    job_id, status or "no job")
        _dispatch(Composition.get_by_id(node.run_id), [node], rt, now)
        requeued += 1
    return requeued
