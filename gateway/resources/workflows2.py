"""Seed 003's API2 workflow routes over projects (``/2/*``). See docs/PROJECTS.md, "AIMG
API2".

A workflow template is a project you own or a public one (``name`` = its project id,
``parameters`` = its variables); ``enqueueWorkflow`` is the ``run-project`` action (the
same plan, price, debit and Idempotency-Key as ``POST /zapier/v1/run-project``), and
``getWorkflowStatus`` reads the same run record. workflowId = itemIds[0] = the run id.
"""

from __future__ import annotations

import json

from actions.generation_common import SEED_MAX
from core.errors import InvalidRequest
from core.timefmt import iso
from gateway.envelope import ok
from gateway.resources.common import mark_outcome, seed_params
from jobs.content import library
from jobs.content.models import ContentItem
from jobs.models import Composition
from jobs.storage import content_type
from jobs.workflows import executor, projects, runs

ACTION = "run-project"
ACTION_PATH = f"/zapier/v1/{ACTION}"
MAX_IDS = 100
TAG = "Workflows (AIMG API2)"
# Explicit body fields that fill the project's variables of the same name (seed 003:
# "some parameters can also be passed through explicit parameters").
EXPLICIT = ("prompt", "negprompt", "seed", "subseed", "subseed_strength", "steps",
            "cfgscale", "modelName", "height", "width", "batchSize")
DATA_TYPES = {"text": "string", "number": "number", "image": "string"}
SCALAR = {"type": ["string", "number", "integer", "boolean"]}

ENQUEUE_BODY = {"type": "object", "required": ["workflowTemplateName"], "properties": {
    "workflowTemplateName": {"type": "string", "minLength": 1, "maxLength": 40,
                             "description": "A template name (a project id)."},
    "parameters": {"type": "array", "maxItems": 200, "items": {
        "type": "object", "required": ["name", "value"],
        "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 64},
                       "value": SCALAR}}},
    "prompt": {"type": "string", "maxLength": 2000},
    "negprompt": {"type": "string", "maxLength": 2000},
    "seed": {"type": "integer", "minimum": -1, "maximum": SEED_MAX,
             "description": "The run's seed (and the variable seed, if declared)."},
    "subseed": {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
    "subseed_strength": {"type": "number", "minimum": 0, "maximum": 1},
    "steps": {"type": "integer", "minimum": 1, "maximum": 150},
    "cfgscale": {"type": "number", "minimum": 1, "maximum": 30},
    "modelName": {"type": "string", "maxLength": 64},
    "lora": {"type": "array", "items": {"type": "string"}},
    "lora_strength": {"type": "array", "items": {"type": "number"}},
    "height": {"type": "integer", "minimum": 8, "maximum": 4096},
    "width": {"type": "integer", "minimum": 8, "maximum": 4096},
    "batchSize": {"type": "integer", "minimum": 1, "maximum": 8},
    "folderID": {"type": "string", "maxLength": 64},
}, "additionalProperties": True}
NAMES_QUERY = {"name": "workflowTemplateNames", "in": "query", "required": False,
               "schema": {"type": "string", "maxLength": 4000},
               "description": "Comma-separated template names (project ids) to keep."}
STATUS_QUERY = [
    {"name": "workflowId", "in": "query", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 40}},
    {"name": "workflowIds", "in": "query", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 4200},
     "description": f"Comma-separated workflow ids (at most {MAX_IDS})."}]
STATUS_SCHEMA = {"type": "object", "properties": {p["name"]: p["schema"]
                                                  for p in STATUS_QUERY}}


def stringify(value) -> str:
    """Seed 003 parameter values are always strings: 7 is "7", true is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def typed(value, var_type):
    """A string parameter value as the variable's type (a number variable takes "7" as 7);
    one that does not parse stays a string, and the run refuses it (400)."""
    if var_type != "number" or not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return int(text) if text.lstrip("-").isascii() and text.lstrip("-").isdigit() \
            else float(text)
    except ValueError:
        return value


def template(project) -> dict:
    """A project as a WorkflowTemplate."""
    graph = projects.decoded(project, "graph") or {}
    return {"name": project.id, "title": project.name, "description": project.description,
            "deployments": ["a2prod"], "workflowTemplateFiles": {},
            "parameters": [_parameter(v) for v in graph.get("variables", [])]}


def _parameter(var) -> dict:
    return {"name": var["name"], "type": var["type"],
            "dataType": DATA_TYPES.get(var["type"], "string"),
            "uiType": "image" if var["type"] == "image" else None,
            "description": var.get("help") or "", "defaultValue": stringify(var.get("default")),
            "replaceFromString": "{{" + var["name"] + "}}",
            "isOptional": not var.get("required"), "optionName": var["name"],
            "isAlwaysVisible": bool(var.get("required")), "isHidden": False}


def run_body(params, project) -> dict:
    """The run-project input of an enqueueWorkflow body: ``parameters`` by name, then the
    explicit fields filling variables of the same name; ``seed`` is the run's seed."""
    declared = {v["name"]: v["type"] for v in
                (projects.decoded(project, "graph") or {}).get("variables", [])}
    variables = {}
    for item in params.get("parameters") or []:
        variables[item["name"]] = typed(item["value"], declared.get(item["name"]))
    for name in EXPLICIT:
        if name in params and name in declared and name not in variables:
            variables[name] = typed(params[name], declared[name])
    body = {"project_id": project.id, "variables": variables}
    if params.get("seed") is not None:
        body["seed"] = params["seed"]
    return body


def output_files(outputs) -> list[dict]:
    """The run's file outputs as WorkflowOutputFileEntry objects (the first is main)."""
    files = [o for o in outputs if isinstance(o, dict) and o.get("url")]
    return [{"fileName": o.get("name") or f"output-{i}", "downloadURL": o["url"],
             "isMainOutput": i == 0, "width": o.get("width") or 0,
             "height": o.get("height") or 0,
             "type": content_type(o["url"].rsplit("/", 1)[-1])} for i, o in enumerate(files)]


def state_object(comp, run) -> dict:
    """A run as a WorkflowStateObject."""
    error = json.loads(comp.error) if comp.error else None
    state = {Composition.COMPLETED: "completed", Composition.FAILED: "error",
             Composition.CANCELLED: "error"}.get(comp.status, "running")
    variables = json.loads(run.variables or "{}")
    return {
        "_id": comp.uid, "publicId": comp.uid,
        "runParamaters": {"publicId": None, "workflowTemplateName": run.project,
                          "parameters": [{"name": k, "value": stringify(v)}
                                         for k, v in variables.items() if v is not None]},
        "isStarted": comp.status != Composition.QUEUED,
        "isComplete": comp.status == Composition.COMPLETED,
        "isError": comp.status in (Composition.FAILED, Composition.CANCELLED),
        "errorMessage": error.get("message") if error else None,
        "outputFiles": output_files(json.loads(comp.outputs or "[]")),
        "log": [], "state": state, "status": comp.status, "progress": comp.progress,
        "startTime": iso(comp.started_at), "endTime": iso(comp.finished_at),
        "itemIds": [comp.uid],
    }


class AggregatedWorkflowTemplates:
    """Workflow templates (AIMG API2): your projects and public ones, as
    WorkflowTemplate objects (name = project id, parameters = its variables)."""

    scope = "actions:read"
    openapi_tag = TAG
    openapi_query = {"get": [NAMES_QUERY]}

    def on_get(self, req, resp):
        raw = seed_params(req, {"type": "object", "properties": {
            "workflowTemplateNames": NAMES_QUERY["schema"]}}).get("workflowTemplateNames")
        names = None
        if raw is not None and raw.strip():
            names = [n.strip() for n in raw.split(",") if n.strip()]
        rows = projects.list_templates(req.context.caller.account_id, names)
        ok(req, resp, [template(p) for p in rows])


class EnqueueWorkflow:
    """Enqueue a workflow (AIMG API2): run a template (project) with parameters.

    parameters [{name, value}] set its variables (values as strings, read as the
    variable's type); explicit fields (prompt, negprompt, steps, ...) fill variables of
    the same name; seed is the run's seed. The same price, debit, refund and
    Idempotency-Key as POST /zapier/v1/run-project. Answers {workflowId, itemIds}."""

    scope = "actions:run"
    openapi_tag = TAG
    openapi_idempotent = True
    openapi_body = {"post": ENQUEUE_BODY}

    def __init__(self, deps):
        self.service = deps.actions

    def on_post(self, req, resp):
        params = seed_params(req, ENQUEUE_BODY)
        caller = req.context.caller
        project = projects.get_visible(caller.account_id, params["workflowTemplateName"])
        outcome = self.service.run(
            caller, ACTION, run_body(params, project),
            idempotency_key=req.get_header("Idempotency-Key"),
            request_id=req.context.request_id, method="POST", path=ACTION_PATH)
        mark_outcome(resp, ACTION, outcome)
        uid = outcome.composition_uid
        ok(req, resp, {"workflowId": uid, "itemIds": [uid]}, 202, **outcome.meta)


class WorkflowStatus:
    """Workflow status (AIMG API2): one WorkflowStateObject (workflowId) or a list of
    them (workflowIds, comma-separated); one of the two is required."""

    scope = "actions:read"
    openapi_tag = TAG
    openapi_query = {"get": STATUS_QUERY}

    def __init__(self, deps):
        self.config = deps.config

    def on_get(self, req, resp):
        params = seed_params(req, STATUS_SCHEMA)
        account_id = req.context.caller.account_id
        if params.get("workflowIds"):
            ids = [i.strip() for i in params["workflowIds"].split(",") if i.strip()]
            if not ids or len(ids) > MAX_IDS:
                raise InvalidRequest(f"workflowIds: 1 to {MAX_IDS} ids", details=[
                    {"field": "workflowIds", "problem": f"must list 1 to {MAX_IDS} ids"}])
            ok(req, resp, [self._state(account_id, uid) for uid in ids])
            return
        if not params.get("workflowId"):
            raise InvalidRequest("workflowId or workflowIds is required", details=[
                {"field": "workflowId", "problem": "is required (or workflowIds)"}])
        ok(req, resp, self._state(account_id, params["workflowId"]))

    @staticmethod
    def _state(account_id, uid) -> dict:
        comp, run, _ = runs.get_run(account_id, uid)  # 404 for anyone else's
        if comp.status in Composition.FINAL and not run.settled:
            executor.settle(uid)
        return state_object(comp, run)


FILE_GROUP_QUERY = {"name": "fileGroup", "in": "query", "required": True,
                    "schema": {"type": "string", "minLength": 1,
                               "maxLength": library.MAX_TAG_LENGTH},
                    "description": "The file group: a tag of your content items."}


class FileGroupItems:
    """``GET /2/getFileGroupItems?fileGroup=`` (seed 003): the file names of a file group.

    A template here is a project, whose image inputs are content items, so a file group is
    a tag of the caller's content library (``POST /upload`` ``tags``): the names of the
    caller's items carrying it, newest first (at most 1000)."""

    scope = "content:read"
    openapi_tag = TAG
    openapi_query = {"get": [FILE_GROUP_QUERY]}
    LIMIT = 1000

    def on_get(self, req, resp):
        group = (req.get_param("fileGroup") or "").strip()
        if not group or len(group) > library.MAX_TAG_LENGTH or '"' in group:
            raise InvalidRequest(
                "fileGroup is required: a tag of your content items (1-64 characters)",
                details=[{"field": "fileGroup", "problem": "required, 1-64 characters"}])
        # LIKE narrows (tags are a JSON list); the exact tag is checked on each row, so
        # "_" or "%" in a group name matches only itself
        rows = (ContentItem.select(ContentItem.filename, ContentItem.id, ContentItem.tags)
                .where((ContentItem.account == req.context.caller.account_id)
                       & ContentItem.tags.contains('"' + group + '"'))
                .order_by(ContentItem.created_at.desc(), ContentItem.id.desc()))
        names = []
        for row in rows.iterator():
            if group in json.loads(row.tags):
                names.append(row.filename or row.id)
                if len(names) == self.LIMIT:
                    break
        ok(req, resp, {"fileGroup": group, "fileNames": names})
