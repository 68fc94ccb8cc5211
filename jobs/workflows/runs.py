"""Project run records: creating a run from a priced plan (inside the debit's transaction),
reading runs and their event log, the per-account node cache, and the run record callers
see. The executor (``executor``) moves runs forward; this module only writes at creation.

The plan (``actions.workflow.graph.Plan.to_dict()``) is a plain dict: jobs never imports
actions. What the executor needs of it per node (resolved inputs, derived seed, upstream
ids) is kept with the composition's input under ``"plan"``, so a worker runs exactly the
inputs that were priced and keyed.
"""

from __future__ import annotations

import json

from core.errors import NotFound
from core.timefmt import iso
from jobs.models import Composition
from jobs.workflows.models import (
    NodeCache,
    NodeRun,
    Project,
    ProjectInteraction,
    ProjectRun,
    RunEvent,
)

PLAN_KEY = "plan"


def create(comp, plan: dict, *, project_id, project_name, retry_of=None) -> ProjectRun:
    """Record a run of ``plan`` for the composition ``comp``; call inside the transaction
    that made the debit and the composition, so a run exists exactly when it was paid."""
    run = ProjectRun.create(
        uid=comp.uid, account=comp.account_id, project=project_id,
        project_name=project_name or "", graph=json.dumps(plan.get("graph") or {}),
        variables=json.dumps(plan.get("variables") or {}), seed=int(plan.get("seed") or 0),
        estimate=int(plan.get("total") or 0), retry_of=retry_of, created_at=comp.created_at)
    steps = {}
    for node in plan["nodes"]:
        status = node.get("status") or NodeRun.PENDING
        NodeRun.create(
            run=comp.uid, node=node["id"], type=node["type"],
            position=int(node.get("position") or 0), queue=node.get("queue") or "cpu",
            credits=int(node.get("credits") or 0), cache_key=node.get("cache_key"),
            status=status,
            progress=100 if status == NodeRun.CACHED else 0,
            outputs=json.dumps(node["outputs"]) if status == NodeRun.CACHED else None)
        steps[node["id"]] = {"inputs": node.get("inputs") or {}, "seed": node.get("seed"),
                             "needs": list(node.get("needs") or [])}
    data = json.loads(comp.input or "{}")
    data[PLAN_KEY] = steps
    comp.input = json.dumps(data)
    Composition.update(input=comp.input).where(Composition.uid == comp.uid).execute()
    if Project.update(runs=Project.runs + 1).where(Project.id == project_id).execute():
        ProjectInteraction.create(project=project_id, account=comp.account_id, kind="run",
                                  created_at=comp.created_at)
    return run


def steps_of(comp) -> dict:
    """``{node id: {"inputs", "seed", "needs"}}``: what ``create`` kept of the plan."""
    return json.loads(comp.input or "{}").get(PLAN_KEY) or {}


def cached_outputs(account_id, keys) -> dict:
    """``{key: outputs}`` for the keys this account has cached (never another account's)."""
    keys = [k for k in dict.fromkeys(keys or []) if k]
    if not keys:
        return {}
    rows = NodeCache.select(NodeCache.key, NodeCache.outputs).where(
        (NodeCache.account == account_id) & NodeCache.key.in_(keys))
    return {row.key: json.loads(row.outputs) for row in rows}


def load(uid):
    """``(run, nodes)`` of a run by id (no owner check: workers and webhooks); run None
    when there is none."""
    run = ProjectRun.get_or_none(ProjectRun.uid == uid)
    if run is None:
        return None, []
    return run, nodes_of(uid)


def nodes_of(uid) -> list[NodeRun]:
    return list(NodeRun.select().where(NodeRun.run == uid)
                .order_by(NodeRun.position, NodeRun.id))


def get_run(account_id, uid):
    """``(comp, run, nodes)`` of the account's run; NotFound for anyone else's."""
    run = ProjectRun.get_or_none((ProjectRun.uid == uid) & (ProjectRun.account == account_id))
    comp = Composition.get_or_none(Composition.uid == uid) if run else None
    if comp is None:
        raise NotFound("No such run")
    return comp, run, nodes_of(uid)


def list_runs(account_id, project_id=None, page=1, limit=20):
    """One page (1-based) of the account's runs, newest first: ``([(comp, run, nodes)],
    total)``; ``project_id`` narrows it to one project's runs."""
    query = ProjectRun.select().where(ProjectRun.account == account_id)
    if project_id:
        query = query.where(ProjectRun.project == project_id)
    total = query.count()
    rows = list(query.order_by(ProjectRun.created_at.desc(), ProjectRun.uid.desc())
                .paginate(max(1, int(page)), max(1, int(limit))))
    uids = [r.uid_id for r in rows]
    comps = {c.uid: c for c in Composition.select().where(Composition.uid.in_(uids))} \
        if uids else {}
    nodes = {}
    if uids:
        for node in NodeRun.select().where(NodeRun.run.in_(uids)).order_by(
                NodeRun.position, NodeRun.id):
            nodes.setdefault(node.run_id, []).append(node)
    return [(comps[r.uid_id], r, nodes.get(r.uid_id, [])) for r in rows
            if r.uid_id in comps], total


def events_after(run_uid, last_id=0, limit=1000) -> list[RunEvent]:
    """The run's events after ``last_id`` (the SSE ``Last-Event-ID``), in order."""
    return list(RunEvent.select().where((RunEvent.run == run_uid)
                                        & (RunEvent.id > int(last_id or 0)))
                .order_by(RunEvent.id).limit(limit))


def event_json(event: RunEvent) -> dict:
    return {"id": event.id, "event": event.event, "data": json.loads(event.data)}


def refunded(comp) -> int:
    """Credits given back to the caller: what the run did not use, once it ended."""
    if not comp.refund_receipt:
        return 0
    return max(0, comp.credits - (comp.consumed or 0))


def _duration_ms(node):
    if node.started_at and node.finished_at:
        return int((node.finished_at - node.started_at).total_seconds() * 1000)
    return None


# How a node that never reached a final state reads once its run ended, before (or
# without) ``executor.settle`` writing it: the same mapping settle applies.
_ENDED_AS = {NodeRun.PENDING: NodeRun.SKIPPED, NodeRun.QUEUED: NodeRun.CANCELLED,
             NodeRun.RUNNING: NodeRun.CANCELLED}


def node_json(node: NodeRun, run_ended: bool = False) -> dict:
    status = _ENDED_AS.get(node.status, node.status) if run_ended else node.status
    return {"id": node.node, "type": node.type, "status": status,
            "credits": node.credits, "cached": node.status == NodeRun.CACHED,
            "progress": node.progress,
            "outputs": json.loads(node.outputs) if node.outputs else None,
            "error": json.loads(node.error) if node.error else None,
            "started_at": iso(node.started_at), "finished_at": iso(node.finished_at),
            "duration_ms": _duration_ms(node)}


def run_json(comp, run, nodes, base) -> dict:
    """The run record (the source of truth callers poll); ``base`` from
    ``jobs.views.base_url``."""
    link = f"{base}/api/project/runs/{comp.uid}"
    return {
        "id": comp.uid, "run_id": comp.uid, "project_id": run.project,
        "project_name": run.project_name,
        "status": comp.status, "progress": comp.progress, "seed": run.seed,
        "variables": json.loads(run.variables or "{}"), "estimated_cost": run.estimate,
        "creditsUsed": comp.credits, "txnReceipt": comp.receipt,
        "refundReceipt": comp.refund_receipt, "refunded": refunded(comp),
        "outputs": json.loads(comp.outputs or "[]"),
        "error": json.loads(comp.error) if comp.error else None,
        "retry_of": run.retry_of, "created_at": iso(comp.created_at),
        "started_at": iso(comp.started_at), "finished_at": iso(comp.finished_at),
        "nodes": [node_json(n, comp.status in Composition.FINAL) for n in nodes],
        "line_items": [{"node": n.node, "type": n.type, "credits": n.credits} for n in nodes],
        "links": {"self": link, "events": f"{link}/events", "cancel": f"{link}/cancel",
                  "retry": f"{link}/retry",
                  "composition": f"{base}/zapier/v1/compositions/{comp.uid}"},
    }
