"""``run-project``: run a saved project's node graph on workers, charged once at start.

The price is the run's plan (``actions.workflow.graph.plan``): every node that has to run
at its own price, cached and unneeded nodes free. The estimate route and the debit plan
with the same arguments, so the estimate is exactly the charge. The plan is made before
the debit (``precheck``) and recorded with the composition in the debit's transaction
(``record``); on a worker ``perform`` hands the run to the workflow executor, which runs
the nodes and, if the run does not complete, refunds every node that did not complete in
one refund row (``jobs.engine.finish``). See docs/PROJECTS.md.
"""

from __future__ import annotations

import json
import secrets

from actions.generation_common import SEED_MAX
from actions.registry import Action, Field
from actions.workflow import graph
from core.errors import InvalidRequest, NotFound
from jobs.context import JobContext
from jobs.outbound import OutboundRefused
from jobs.workflows import executor, projects, runs

NAME = "run-project"


def seed_of(data) -> int:
    """The run's seed: the caller's, or one picked now (before the debit, so the run
    records the seed it ran with)."""
    if data.get("seed") in (None, -1):
        data["seed"] = secrets.randbelow(SEED_MAX + 1)
    return data["seed"]


def _retried(account_id, data):
    """The run a ``retry_of`` names: one of the caller's own runs of this project."""
    if not data.get("retry_of"):
        return None
    try:
        _, run, _ = runs.get_run(account_id, data["retry_of"])
    except NotFound:
        raise InvalidRequest("retry_of: no such run", details=[
            {"field": "retry_of", "problem": "is not one of your runs"}]) from None
    if run.project != data["project_id"]:
        raise InvalidRequest("retry_of: a run of another project", details=[
            {"field": "retry_of", "problem": "is a run of another project"}])
    return run


def make_plan(data, service, account_id, graph_doc):
    """The priced plan of ``graph_doc`` for this input (validates graph and variables)."""
    cached = ((lambda keys: runs.cached_outputs(account_id, keys))
              if data.get("use_cache", True) else None)
    return graph.plan(graph_doc or {}, service.registry.nodes, service,
                      account_id=account_id, variables=data.get("variables") or {},
                      seed=seed_of(data), cached=cached)


def precheck(data, service, account_id):
    """Load the project the caller may see (a retry: the graph its run ran, even if the
    project changed or was deleted since), plan and price the run; nothing is charged
    when this raises. The plan and the project travel as private keys to ``record``."""
    retried = _retried(account_id, data)
    if retried is not None:
        graph_doc, name = json.loads(retried.graph or "{}"), retried.project_name
    else:
        project = projects.get_visible(account_id, data["project_id"])
        graph_doc, name = projects.decoded(project, "graph"), project.name
    plan = make_plan(data, service, account_id, graph_doc)
    data["_plan"] = plan.to_dict()
    check_inputs(data["_plan"], service, account_id)
    data["_project"] = {"id": data["project_id"], "name": name}
    return data


def _input_problem(spec, value, field, service, account_id):
    """Why a static input of a node that will run cannot be used, or None: a URL the
    outbound rule forbids (private, loopback, unresolvable), or a content id the caller
    cannot see."""
    if spec.url:
        try:
            service.policy.check_url(value, field=field)
        except OutboundRefused as exc:
            return "url_not_allowed", exc.details[0]["problem"]
    if spec.content:
        try:
            service.library.get_for(account_id, value)
        except NotFound:
            return "content_not_found", "no content with this id is visible to you"
    return None


def check_inputs(plan, service, account_id) -> None:
    """Refuse, before anything is charged, what a node that will run would fetch or read
    and may not: every such input of every node in one 400."""
    problems = []
    for node in plan["nodes"]:
        node_type = service.registry.nodes.find(node["type"])
        if node["status"] != "pending" or node_type is None:
            continue
        for spec in node_type.inputs:
            value = node["inputs"].get(spec.name)
            if not (spec.url or spec.content) or not isinstance(value, str):
                continue
            field = f"nodes.{node['id']}.inputs.{spec.name}"
            found = _input_problem(spec, value, field, service, account_id)
            if found:
                problems.append({"field": field, "node": node["id"], "input": spec.name,
                                 "type": found[0], "problem": found[1]})
    if problems:
        raise InvalidRequest("; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                             details=problems)


def pricing(data, base, service) -> int:
    return int(data["_plan"]["total"])


def record(comp, data, private):
    """Write the run and its nodes with the composition, inside the debit's transaction."""
    project = private["_project"]
    runs.create(comp, private["_plan"], project_id=project["id"],
                project_name=project["name"], retry_of=data.get("retry_of"))


def perform(ctx: JobContext, data: dict):
    """Start the run on the worker: the executor dispatches the nodes and owns the
    composition from here (``jobs.context.DETACHED``)."""
    return executor.start(ctx.uid)


ACTION = Action(
    name=NAME,
    title="Run project",
    description="Runs one of your projects (or a public or unlisted one by id): its node "
                "graph with these variables and seed. Charged once at start, exactly the "
                "estimate (POST /api/project/runs/estimate); every node that does not "
                "complete is refunded in one refund row.",
    price=0,
    mode="async",
    ttl_s=1800,
    queue="cpu",
    precheck=precheck,
    precheck_account=True,
    pricing=pricing,
    pricing_doc="the sum of the planned nodes' prices; cached and unneeded nodes are free "
                "(see POST /api/project/runs/estimate)",
    record=record,
    fields=(
        Field("project_id", required=True, max_length=40, label="Project ID",
              help="The project to run (from POST /api/project/create)."),
        Field("seed", type="integer", minimum=-1, maximum=SEED_MAX,
              help="The run's seed (each node derives its own); -1 or absent: random."),
        Field("variables", type="object",
              help="Values of the project's variables by name; absent ones take defaults."),
        Field("use_cache", type="boolean", default=True, label="Use cache",
              help="Reuse your earlier outputs of identical nodes (free); false runs all."),
        Field("retry_of", max_length=40, label="Retry of",
              help="One of your runs of this project to run again: its graph as it ran then."),
    ),
    perform=perform,
)
