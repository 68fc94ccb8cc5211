"""The jobs side of project runs (issue 11), below the HTTP routes: a run is one paid
composition whose nodes run as their own RQ jobs on real burst workers, over the real
PostgreSQL and Redis. The node types are the test's own (``registry.nodes``), so these
tests pin the executor: completion and outputs, what a run keeps of its debit when it
fails or is cancelled (exactly the unexecuted nodes come back, once), a reaper that finds
a node's worker gone (an injected ``ManualClock``), the ttl, and settling exactly once."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from PIL import Image
from rq import SimpleWorker

from actions.registry import Action, Registry
from actions.workflow.types import Input, NodeCatalogue, NodeType, Output
from core.clock import SYSTEM, ManualClock
from core.errors import Conflict
from core.ids import new_id
from gateway import schema as product_schema
from gateway.services import install_worker_runtime
from jobs import engine
from jobs.models import Composition
from jobs.outbound import OutboundRefused
from jobs.runtime import current
from jobs.workflows import executor, runs
from jobs.workflows.models import NodeCache, NodeRun, Project, ProjectInteraction, RunEvent
from metering import ledger
from metering.db import connection, database, write_transaction
from metering.models import LedgerEntry

# --- the test's node types --------------------------------------------------------------------


def _text(ctx, inputs):
    template = inputs["template"]
    for name, value in inputs["__variables__"].items():
        template = template.replace("{{" + name + "}}", str(value))
    return {"text": template}


def _paint(ctx, inputs):
    ctx.progress(1, 2)
    return {"image": Image.new("RGB", (inputs["width"], inputs["height"]), (200, 10, 10))}


def _measure(ctx, inputs):
    image = inputs["image"]
    assert isinstance(image, Image.Image) and image.getpixel((0, 0)) == (200, 10, 10)
    return {"width": image.width}


def _boom(ctx, inputs):
    raise RuntimeError("a bug with a secret in its message")


def _refuse(ctx, inputs):
    raise OutboundRefused("the host refused", field="url")


def _self_cancel(ctx, inputs):
    """Cancels its own run while running: the next checkpoint stops it."""
    rt = current()
    executor.cancel(ctx.account_id, ctx.run_uid, rt.redis, rt.config.redis_prefix,
                    now=rt.clock.now())
    ctx.progress(50)
    raise AssertionError("the checkpoint should have stopped this node")


def _stall(ctx, inputs):
    """Its worker stops beating (time jumps) and another process's reaper runs meanwhile;
    the node's next checkpoint then finds the run ended."""
    rt = current()
    rt.clock.advance(rt.heartbeat_s * 3 + 60)
    STALLED.append(executor.reap())
    ctx.progress(10)
    raise AssertionError("the checkpoint should have stopped this node")


def _meet(ctx, inputs):
    """Waits for its siblings, so parallel branches complete at the same moment."""
    MEET.wait(timeout=20)
    return {"image": Image.new("RGB", (2, 2))}


STALLED = []
MEET = threading.Barrier(4)
IMAGE_IN = Input("image", "image", required=True)
CATALOGUE = NodeCatalogue([
    NodeType("text", "Text", "", (Input("template", "text", required=True),),
             (Output("text", "text"),), _text),
    NodeType("paint", "Paint", "", (Input("width", "number"), Input("height", "number")),
             (Output("image", "image"),), _paint),
    NodeType("measure", "Measure", "", (IMAGE_IN,), (Output("width", "number"),), _measure),
    NodeType("boom", "Boom", "", (IMAGE_IN,), (Output("image", "image"),), _boom),
    NodeType("refuse", "Refuse", "", (), (Output("image", "image"),), _refuse),
    NodeType("self_cancel", "Self cancel", "", (IMAGE_IN,), (Output("image", "image"),),
             _self_cancel),
    NodeType("stall", "Stall", "", (), (Output("image", "image"),), _stall),
    NodeType("meet", "Meet", "", (), (Output("image", "image"),), _meet),
    NodeType("output", "Output", "", (Input("value", "any", required=True),
                                      Input("name", "text", static=True)), (),
             lambda ctx, inputs: {}, is_output=True, cacheable=False),
])


def registry():
    reg = Registry()
    reg.register(Action("run-project", "Run a project", "", 0, (), mode="async", ttl_s=600,
                        perform=lambda ctx, data: executor.start(ctx.uid)))
    reg.nodes = CATALOGUE
    return reg


REGISTRY = registry()


# --- helpers ----------------------------------------------------------------------------------


def link(node, output):
    return {"node": node, "output": output}


def plan_of(*nodes, variables=None, seed=7):
    """A priced plan as ``actions.workflow.graph.Plan.to_dict()`` hands it to jobs:
    ``nodes`` are ``(id, type, credits, inputs[, status[, outputs]])`` in topological
    order."""
    out = []
    for position, spec in enumerate(nodes):
        node_id, kind, credits, inputs = spec[:4]
        status = spec[4] if len(spec) > 4 else "pending"
        out.append({"id": node_id, "type": kind, "position": position, "queue": "cpu",
                    "credits": credits if status == "pending" else 0,
                    "cache_key": hashlib.sha256(f"{kind}:{node_id}:{inputs}".encode()).hexdigest(),
                    "status": status, "inputs": inputs, "seed": seed + position,
                    "outputs": spec[5] if len(spec) > 5 else None,
                    "needs": [v["node"] for v in inputs.values() if isinstance(v, dict)]})
    return {"seed": seed, "variables": variables or {}, "graph": {"nodes": [], "variables": []},
            "total": sum(n["credits"] for n in out), "nodes": out}


def start_run(config, account, plan, *, clock=SYSTEM, ttl_s=600):
    """What the run-project action does at the debit: debit, composition, run; enqueue."""
    with connection():
        project = Project.create(id=new_id("prj", 8), account=account, name="p")
        with write_transaction():
            entry = ledger.debit(account, plan["total"], action="run-project") \
                if plan["total"] else None
            comp = engine.create(account, REGISTRY.get("run-project"),
                                 {"project_id": project.id}, uid=new_id("comp", 10),
                                 now=clock.now(), entry=entry, callback_url=None,
                                 queue="cpu", ttl_s=ttl_s)
            runs.create(comp, plan, project_id=project.id, project_name="p")
    engine.enqueue(current_redis(config), config, comp)
    return comp.uid, project.id


def elsewhere(plan):
    """The plan with its first node on a queue of its own: the start job (on cpu) then
    enqueues it instead of running a lone first node itself."""
    plan["nodes"][0]["queue"] = "other"
    return plan


def current_redis(config):
    import redis

    return redis.Redis.from_url(config.redis_url)


def work(config, *, clock=SYSTEM, max_jobs=None, queues=("cpu",)):
    """Real RQ burst work on ``queues`` with the test's registry installed."""
    rt = install_worker_runtime(config, clock=clock, registry=REGISTRY)
    SimpleWorker([f"{config.redis_prefix}:{q}" for q in queues], connection=rt.redis).work(
        burst=True, max_jobs=max_jobs)
    return rt


def state(uid):
    with connection():
        comp = Composition.get_by_id(uid)
        nodes = {n.node: n for n in NodeRun.select().where(NodeRun.run == uid)}
        events = [(e.event, json.loads(e.data)) for e in
                  RunEvent.select().where(RunEvent.run == uid).order_by(RunEvent.id)]
        return comp, nodes, events


def refunds(account):
    with connection():
        return [(r.refund_of, r.amount) for r in LedgerEntry.select().where(
            (LedgerEntry.account == account) & (LedgerEntry.kind == "refund"))]


def balance(account):
    with connection():
        assert ledger.ledger_sum(account) == ledger.balance(account)
        return ledger.balance(account)


@pytest.fixture
def account(make_account, schema):
    return make_account(credits=100)[0]


# --- completion -------------------------------------------------------------------------------


def test_a_run_completes_with_its_outputs_and_keeps_its_debit(config, account):
    cached = {"text": {"type": "text", "value": "from before"}}
    plan = plan_of(
        ("t", "text", 0, {"template": "a {{subject}}"}),
        ("old", "text", 0, {"template": "x"}, "cached", cached),
        ("unused", "paint", 5, {"width": 4, "height": 4}, "skipped"),
        ("p", "paint", 2, {"width": 8, "height": 6}),
        ("m", "measure", 1, {"image": link("p", "image")}),
        ("o1", "output", 0, {"value": link("t", "text"), "name": "caption"}),
        ("o2", "output", 0, {"value": link("p", "image"), "name": "picture"}),
        ("o3", "output", 0, {"value": link("m", "width")}),
        ("o4", "output", 0, {"value": link("old", "text"), "name": "old"}),
        variables={"subject": "teapot"})
    assert plan["total"] == 3
    uid, project = start_run(config, account, plan)
    assert balance(account) == 97
    rt = work(config)
    comp, nodes, events = state(uid)
    assert comp.status == "completed" and comp.progress == 100, comp.error
    assert comp.consumed == 3 and comp.refund_receipt is None and refunds(account) == []
    assert balance(account) == 97
    outputs = json.loads(comp.outputs)
    assert [(o["node"], o["name"], o["type"]) for o in outputs] == [
        ("o1", "caption", "text"), ("o2", "picture", "image"), ("o3", "o3", "number"),
        ("o4", "old", "text")]
    assert outputs[0]["value"] == "a teapot" and outputs[2]["value"] == 8
    assert outputs[3]["value"] == "from before"
    picture = outputs[1]
    assert (picture["width"], picture["height"]) == (8, 6)
    with Image.open(rt.storage.path(uid, "p-image.png")) as im:
        assert im.size == (8, 6)
    # The final image is a content item of the account, behind a signed link.
    assert picture["url"].startswith(
        f"{config.public_base_url}/links/{picture['contentId']}/p-image.png?v=")
    statuses = {k: n.status for k, n in nodes.items()}
    assert statuses == {"t": "completed", "old": "cached", "unused": "skipped",
                        "p": "completed", "m": "completed", "o1": "completed",
                        "o2": "completed", "o3": "completed", "o4": "completed"}

    names = [e for e, _ in events]
    assert names[0] == "run.started" and names[1] == "node.cached"
    assert names[-1] == "run.completed" and names.count("run.completed") == 1
    assert events[0][1]["estimated_cost"] == 3
    assert events[-1][1]["outputs"] == outputs
    progress = [d["progress"] for _, d in events]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(d["run_id"] == uid for _, d in events)
    for node in ("t", "p", "m"):
        mine = [e for e, d in events if d.get("node") == node]
        assert mine[0] == "node.started" and mine[-1] == "node.completed", mine
    told = [(d["node"], d["value"], d["max"]) for e, d in events if e == "node.progress"]
    assert told == [("p", 1, 2)]
    m_started = next(i for i, (e, d) in enumerate(events)
                     if e == "node.started" and d["node"] == "m")
    p_done = next(i for i, (e, d) in enumerate(events)
                  if e == "node.completed" and d["node"] == "p")
    assert p_done < m_started

    with connection():
        keys = {c.key for c in NodeCache.select().where(NodeCache.account == account)}
        assert keys == {nodes[k].cache_key for k in ("t", "p", "m")}
        assert runs.cached_outputs(account, [nodes["m"].cache_key, "nope"]) == {
            nodes["m"].cache_key: {"width": {"type": "number", "value": 8}}}
        assert runs.cached_outputs("someone-else", list(keys)) == {}
        assert Project.get_by_id(project).runs == 1
        assert ProjectInteraction.select().where(ProjectInteraction.kind == "run").count() == 1
        comp, run, node_rows = runs.get_run(account, uid)
        record = runs.run_json(comp, run, node_rows, "http://base")
        rows, total = runs.list_runs(account, project, 1, 10)
        everything = runs.events_after(uid, 0)
        assert [e.event for e in runs.events_after(uid, everything[2].id)] == names[3:]
        assert executor.settle(uid) is False  # settled once already
    assert record["status"] == "completed" and record["creditsUsed"] == 3
    assert record["refunded"] == 0 and record["variables"] == {"subject": "teapot"}
    assert record["links"]["self"] == f"http://base/api/project/runs/{uid}"
    assert [i["credits"] for i in record["line_items"]] == [n["credits"] for n in plan["nodes"]]
    assert [n["id"] for n in record["nodes"]] == [n["id"] for n in plan["nodes"]]
    assert record["nodes"][1]["cached"] is True and record["nodes"][3]["duration_ms"] >= 0
    assert total == 1 and rows[0][0].uid == uid
    work(config)  # nothing left: no second completion
    assert len([e for e, _ in state(uid)[2] if e.startswith("run.")]) == 2


# --- failure ----------------------------------------------------------------------------------


def test_a_failing_node_refunds_exactly_the_unexecuted_nodes_once(config, account):
    plan = plan_of(
        ("p", "paint", 2, {"width": 4, "height": 4}),
        ("m", "measure", 1, {"image": link("p", "image")}),
        ("b", "boom", 3, {"image": link("p", "image")}),
        ("x", "measure", 4, {"image": link("b", "image")}),
        ("o1", "output", 0, {"value": link("m", "width")}),
        ("o2", "output", 0, {"value": link("x", "width")}))
    uid, _ = start_run(config, account, plan)
    receipt = Composition.get_by_id(uid).receipt
    work(config)
    comp, nodes, events = state(uid)
    assert comp.status == "failed"
    error = json.loads(comp.error)
    assert error["code"] == "NODE_FAILED" and "secret" not in error["message"]
    assert {k: n.status for k, n in nodes.items()} == {
        "p": "completed", "m": "completed", "b": "failed", "x": "skipped",
        "o1": "completed", "o2": "skipped"}
    assert json.loads(nodes["b"].error)["code"] == "NODE_FAILED"
    assert comp.consumed == 3
    assert refunds(account) == [(receipt, 10 - 3)] and balance(account) == 97
    assert events[-1] == ("run.failed", {"run_id": uid, "progress": comp.progress,
                                         "error": error, "refundReceipt": comp.refund_receipt,
                                         "refunded": 7})
    assert [e for e, _ in events].count("node.failed") == 1
    work(config)
    install_worker_runtime(config, registry=REGISTRY)
    with connection():
        assert executor.reap() == 0 and executor.settle(uid) is False
        assert engine.finish(uid, "failed", now=SYSTEM.now(), code="X") is False
    assert len(refunds(account)) == 1 and balance(account) == 97

    # a domain error (an outbound refusal) keeps its code and message
    uid, _ = start_run(config, account, plan_of(
        ("r", "refuse", 2, {}), ("o", "output", 0, {"value": link("r", "image")})))
    work(config)
    comp, nodes, _ = state(uid)
    assert json.loads(comp.error) == {"code": "INVALID_REQUEST", "message": "url: the host refused"}
    assert json.loads(nodes["r"].error)["code"] == "INVALID_REQUEST"
    assert balance(account) == 97 and len(refunds(account)) == 2


def test_parallel_branches_finishing_at_once_complete_the_run_once(config, account):
    branches = [(f"s{i}", "meet", 1, {}) for i in range(4)]
    outs = [(f"o{i}", "output", 0, {"value": link(f"s{i}", "image")}) for i in range(4)]
    uid, _ = start_run(config, account, plan_of(*branches, *outs))
    work(config, max_jobs=1)  # started: the four branches are on the queue
    MEET.reset()
    done = []

    def node_job(node_id):  # four workers taking the four jobs at once
        done.append(executor.run_node(uid, node_id))

    threads = [threading.Thread(target=node_job, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == ["completed"] * 3 + ["completed run"]
    work(config)  # the same four jobs from RQ: each finds its node taken
    comp, nodes, events = state(uid)
    assert comp.status == "completed" and comp.consumed == 4
    assert len(json.loads(comp.outputs)) == 4
    assert {n.status for n in nodes.values()} == {"completed"}
    assert [e for e, _ in events].count("run.completed") == 1
    assert balance(account) == 96 and refunds(account) == []


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_between_nodes_and_inside_a_running_node(config, account):
    plan = plan_of(("p", "paint", 2, {"width": 4, "height": 4}),
                   ("m", "measure", 1, {"image": link("p", "image")}),
                   ("o", "output", 0, {"value": link("m", "width")}))
    # m on a queue of its own: p's job would otherwise run m itself, next in its chain
    plan["nodes"][1]["queue"] = "other"
    uid, _ = start_run(config, account, plan)
    rt = work(config, max_jobs=2)  # the run's start and node p
    with connection():
        comp = executor.cancel(account, uid, rt.redis, config.redis_prefix, now=SYSTEM.now())
        assert comp.status == "cancelled"
        with pytest.raises(Conflict):
            executor.cancel(account, uid, rt.redis, config.redis_prefix, now=SYSTEM.now())
    work(config, queues=("cpu", "other"))  # m's job finds its node cancelled
    comp, nodes, events = state(uid)
    assert {k: n.status for k, n in nodes.items()} == {"p": "completed", "m": "cancelled",
                                                       "o": "skipped"}
    assert comp.consumed == 2 and refunds(account)[-1][1] == 1
    assert events[-1][0] == "run.cancelled" and events[-1][1]["refunded"] == 1
    assert balance(account) == 98

    uid, _ = start_run(config, account, plan_of(
        ("p", "paint", 2, {"width": 4, "height": 4}),
        ("c", "self_cancel", 3, {"image": link("p", "image")}),
        ("o", "output", 0, {"value": link("c", "image")})))
    work(config)
    comp, nodes, events = state(uid)
    assert comp.status == "cancelled" and comp.consumed == 2
    assert nodes["c"].status == "cancelled" and nodes["c"].outputs is None
    assert refunds(account)[-1][1] == 3 and balance(account) == 96
    assert [e for e, _ in events].count("run.cancelled") == 1


# --- the reaper and the ttl -------------------------------------------------------------------


def test_reaper_fails_a_node_whose_worker_stopped_and_a_run_past_its_ttl(config, account):
    clock = ManualClock()
    STALLED.clear()
    uid, _ = start_run(config, account, plan_of(
        ("p", "paint", 2, {"width": 4, "height": 4}),
        ("s", "stall", 5, {}),
        ("o1", "output", 0, {"value": link("p", "image")}),
        ("o2", "output", 0, {"value": link("s", "image")})), clock=clock)
    work(config, clock=clock)
    assert STALLED == [1]
    comp, nodes, events = state(uid)
    assert comp.status == "failed" and json.loads(comp.error)["code"] == "WORKER_LOST"
    assert nodes["s"].status == "failed" and nodes["p"].status == "completed"
    assert comp.consumed == 2 and refunds(account)[-1][1] == 5 and balance(account) == 98
    assert [e for e, _ in events].count("run.failed") == 1

    uid, _ = start_run(config, account, elsewhere(plan_of(
        ("p", "paint", 2, {"width": 4, "height": 4}),
        ("o", "output", 0, {"value": link("p", "image")}))), clock=clock, ttl_s=60)
    work(config, clock=clock)  # started; p waits on its queue
    clock.advance(61)
    with connection():
        assert engine.reap() == 0  # the engine's reaper leaves detached runs alone
        assert executor.reap() == 1
    work(config, clock=clock, queues=("cpu", "other"))
    comp, nodes, events = state(uid)
    assert comp.status == "failed" and json.loads(comp.error)["code"] == "TIMEOUT"
    assert nodes["p"].status == "cancelled" and comp.consumed == 0
    assert refunds(account)[-1][1] == 2 and balance(account) == 98

    # a worker that claimed a run and stopped before dispatching anything
    uid, _ = start_run(config, account, plan_of(
        ("p", "paint", 2, {"width": 4, "height": 4}),
        ("o", "output", 0, {"value": link("p", "image")})), clock=clock)
    with connection():
        Composition.update(status="running", started_at=clock.now(),
                           heartbeat_at=clock.now()).where(Composition.uid == uid).execute()
        assert executor.reap() == 0  # still beating
        clock.advance(16)
        assert executor.reap() == 1
    comp, nodes, events = state(uid)
    assert json.loads(comp.error)["code"] == "WORKER_LOST" and events[-1][0] == "run.failed"
    assert nodes["p"].status == "skipped" and balance(account) == 98


def test_reaper_puts_back_a_node_whose_job_redis_lost(config, account):
    from rq.job import Job

    uid, _ = start_run(config, account, elsewhere(plan_of(
        ("p", "paint", 2, {"width": 4, "height": 4}),
        ("o", "output", 0, {"value": link("p", "image")}))))
    rt = work(config)  # started: p is queued on its own queue
    Job.fetch(f"{uid}-p", connection=rt.redis).delete()  # as a Redis restart loses it
    with connection():
        assert executor.reap() == 1
        assert executor.reap() == 0  # put back once
    work(config, queues=("cpu", "other"))
    comp, nodes, _ = state(uid)
    assert comp.status == "completed" and nodes["p"].status == "completed"
    assert balance(account) == 98 and refunds(account) == []


# --- settling, partial refunds, the migration -------------------------------------------------


def test_a_run_ended_elsewhere_is_settled_once_and_refunds_are_once(config, account):
    uid, _ = start_run(config, account, plan_of(
        ("p", "paint", 4, {"width": 4, "height": 4}),
        ("o", "output", 0, {"value": link("p", "image")})))
    results, barrier = [], threading.Barrier(4)

    def end_and_settle():
        barrier.wait()
        with connection():
            ended = engine.finish(uid, "failed", now=SYSTEM.now(), code="QUEUE_UNAVAILABLE")
            results.append((ended, executor.settle(uid)))

    threads = [threading.Thread(target=end_and_settle) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r[0] for r in results) == [False, False, False, True]
    assert sum(r[1] for r in results) == 1
    comp, nodes, events = state(uid)
    assert [e for e, _ in events] == ["run.failed"]
    assert {n.status for n in nodes.values()} == {"skipped"}
    assert refunds(account) == [(comp.receipt, 4)] and balance(account) == 100

    with connection():
        entry = ledger.debit(account, 5, action="x")
        for bad in (0, 6, -1):
            with pytest.raises(ValueError):
                ledger.refund(entry.receipt, amount=bad)
        row, created = ledger.refund(entry.receipt, amount=2)
        again, created_again = ledger.refund(entry.receipt, amount=3)
        assert created and not created_again and again.receipt == row.receipt
        assert row.amount == 2
    assert balance(account) == 97


def test_migration_9_adds_the_consumed_column_and_runs_again(schema):
    with connection():
        table = Composition._meta.table_name
        with database.atomic():
            database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN consumed')
            product_schema._projects(database)
            product_schema._projects(database)
            assert "consumed" in {c.name for c in database.get_columns(table)}
