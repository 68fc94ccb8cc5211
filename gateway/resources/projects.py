"""Projects (seed 000): saved node graphs, ``/api/project/*``. See docs/PROJECTS.md.

Parameters may come in the JSON body or the query string (``common.seed_params``). A
project someone else keeps private is 404 on every route; changing a project that is
visible but not yours is 403. The seed's ``node_data``/``connection_data``/``manual_data``
are stored as sent and normalised into the graph the engine runs
(``actions.workflow.graph``), which is validated at every save that sends nodes: one 400
lists every problem.
"""

from __future__ import annotations

from actions.workflow import graph
from core.errors import InvalidRequest
from gateway.envelope import ok
from gateway.resources.common import PAGE_QUERY, page_answer, page_params, seed_params
from jobs.workflows import projects
from jobs.workflows.models import Project

WRITE, READ = "actions:run", "actions:read"

PROJECT_ID = {"type": "string", "minLength": 1, "maxLength": 40,
              "description": "The project's id (prj_...)."}
NAME = {"type": "string", "minLength": 1, "maxLength": 200}
FIELDS = {
    "name": {**NAME, "description": "The project's name (required at create; `title` is "
                                    "accepted instead)."},
    "title": {**NAME, "description": "Alias of name."},
    "description": {"type": "string", "maxLength": 10000},
    "data": {"description": "Your free-form data, stored and returned as sent."},
    "visibility": {"enum": list(Project.VISIBILITIES),
                   "description": "private (default): only you; unlisted: anyone with the "
                                  "id may read and run it; public: also listed in trending."},
    "node_data": {"type": ["array", "object"], "items": {"type": "object"},
                  "description": "The nodes: a list of {id, type, inputs, ...} or a "
                                 "ComfyUI-API-style object {id: {class_type, inputs}}."},
    "connection_data": {"type": "array", "items": {"type": "object"},
                        "description": "Links: {from_node, from_output, to_node, to_input}."},
    "manual_data": {"type": "array", "items": {"type": "object"},
                    "description": "Variables: {name, type, default, help, required}."},
}
GRAPH_FIELDS = ("node_data", "connection_data", "manual_data")
# Seeds send more than these (editor state): extra fields are allowed and ignored.
CREATE_BODY = {"type": "object", "properties": FIELDS, "additionalProperties": True}
UPDATE_BODY = {"type": "object", "properties": {"project_id": PROJECT_ID, **FIELDS},
               "required": ["project_id"], "additionalProperties": True}
ID_BODY = {"type": "object", "properties": {"project_id": PROJECT_ID},
           "required": ["project_id"], "additionalProperties": True}
INTERACT_BODY = {"type": "object", "properties": {
    "project_id": PROJECT_ID,
    "interaction_type": {"enum": list(projects.KINDS)},
    "active": {"type": "boolean", "description": "Set (true) or clear (false); absent: "
                                                 "toggle."}},
    "required": ["project_id", "interaction_type"], "additionalProperties": True}
ID_QUERY = [{"name": "project_id", "in": "query", "required": True, "schema": PROJECT_ID}]


def _fields(params) -> dict:
    """The stored fields the caller sent (``title`` stands in for ``name``)."""
    out = {k: params[k] for k in FIELDS if k in params and k != "title"}
    if "name" not in out and "title" in params:
        out["name"] = params["title"]
    return out


def graph_of(fields, service, nodes) -> dict:
    """The normalised graph of the seed fields, validated with every problem in one 400
    when it has nodes (a project without nodes is a draft: refused at run with
    ``prompt_no_outputs``)."""
    parts = [fields.get(k) or [] for k in GRAPH_FIELDS]
    if parts[0]:
        return graph.build(*parts, nodes, service)
    return graph.normalise(*parts, nodes)


class _Projects:
    def __init__(self, deps):
        self.deps, self.config, self.clock = deps, deps.config, deps.clock
        self.service = deps.actions

    def _graph(self, fields):
        return graph_of(fields, self.service, self.deps.registry.nodes)

    def _view(self, req, project) -> dict:
        return projects.view(req.context.caller.account_id, project)


class ProjectCreate(_Projects):
    """Create a project from the seed's fields; 201 with its id and view.

    name (or title) is required; node_data, connection_data and manual_data are
    normalised into the graph and validated (400 INVALID_REQUEST listing every problem)."""

    scope = WRITE
    openapi_tag = "Projects"
    openapi_body = {"post": CREATE_BODY}

    def on_post(self, req, resp):
        fields = _fields(seed_params(req, CREATE_BODY))
        if not fields.get("name"):
            raise InvalidRequest("name is required",
                                 details=[{"field": "name", "problem": "is required"}])
        normal = self._graph(fields)
        project = projects.create(req.context.caller.account_id, fields, normal,
                                  now=self.clock.now(), ids=self.deps.ids)
        ok(req, resp, {"project_id": project.id, "title": project.name,
                       "visibility": project.visibility,
                       "project": self._view(req, project)}, 201)


class ProjectUpdate(_Projects):
    """Change your project: any of the create fields; the graph is re-normalised and
    validated when node_data, connection_data or manual_data is sent."""

    scope = WRITE
    openapi_tag = "Projects"
    openapi_body = {"post": UPDATE_BODY}

    def on_post(self, req, resp):
        params = seed_params(req, UPDATE_BODY)
        caller = req.context.caller
        project = projects.get_owned(caller.account_id, params["project_id"])
        fields = _fields(params)
        normal = None
        if any(k in fields for k in GRAPH_FIELDS):
            merged = {k: fields[k] if k in fields else projects.decoded(project, k)
                      for k in GRAPH_FIELDS}
            normal = self._graph(merged)
        project = projects.update(caller.account_id, project.id, fields, normal,
                                  now=self.clock.now())
        ok(req, resp, {"message": "Project updated successfully",
                       "project": self._view(req, project)})


class ProjectGet(_Projects):
    """One project you may see: yours, or an unlisted or public one by id."""

    scope = READ
    openapi_tag = "Projects"
    openapi_query = {"get": ID_QUERY}
    openapi_body = {"post": ID_BODY}

    def on_get(self, req, resp):
        self._answer(req, resp, seed_params(req, ID_BODY))

    def on_post(self, req, resp):
        self._answer(req, resp, seed_params(req, ID_BODY))

    def _answer(self, req, resp, params):
        project = projects.get_visible(req.context.caller.account_id, params["project_id"])
        ok(req, resp, self._view(req, project))


class ProjectDelete(_Projects):
    """Delete your project (its past runs stay readable)."""

    scope = WRITE
    openapi_tag = "Projects"
    openapi_body = {"post": ID_BODY}
    openapi_query = {"delete": ID_QUERY}

    def on_post(self, req, resp):
        self._delete(req, resp)

    def on_delete(self, req, resp):
        self._delete(req, resp)

    def _delete(self, req, resp):
        params = seed_params(req, ID_BODY)
        projects.delete(req.context.caller.account_id, params["project_id"])
        ok(req, resp, {"message": "Project deleted successfully",
                       "project_id": params["project_id"]})


class ProjectListMine(_Projects):
    """Your projects, newest first (page, limit 1-100, default 50)."""

    scope = READ
    openapi_tag = "Projects"
    openapi_query = {"get": PAGE_QUERY}

    def on_get(self, req, resp):
        page, limit = page_params(req)
        account_id = req.context.caller.account_id
        rows, total = projects.list_mine(account_id, page, limit)
        ok(req, resp, page_answer(req, self.config, "projects",
                                  projects.views(account_id, rows), total, page, limit))


class ProjectListTrending(_Projects):
    """Public projects by trending score: likes (3), saves (4) and runs (1) of the last 30
    days, each halved every 7 days of age; equal scores newest first."""

    scope = READ
    openapi_tag = "Projects"
    openapi_query = {"get": PAGE_QUERY}

    def on_get(self, req, resp):
        page, limit = page_params(req)
        rows, total = projects.list_trending(page, limit, now=self.clock.now())
        ok(req, resp, page_answer(req, self.config, "projects",
                                  projects.views(req.context.caller.account_id, rows),
                                  total, page, limit))


class ProjectInteract(_Projects):
    """Like or save a project you may see: without active it toggles, with it it sets."""

    scope = WRITE
    openapi_tag = "Projects"
    openapi_body = {"post": INTERACT_BODY}

    def on_post(self, req, resp):
        params = seed_params(req, INTERACT_BODY)
        active = projects.interact(req.context.caller.account_id, params["project_id"],
                                   params["interaction_type"], params.get("active"),
                                   now=self.clock.now())
        ok(req, resp, {"project_id": params["project_id"],
                       "interaction_type": params["interaction_type"], "is_active": active})


class ProjectNodes:
    """The node types a graph may use: inputs (type, limits, linkable), outputs, queue,
    pricing."""

    scope = READ
    openapi_tag = "Projects"

    def __init__(self, deps):
        self.nodes = deps.registry.nodes

    def on_get(self, req, resp):
        ok(req, resp, {"nodes": self.nodes.describe() if self.nodes is not None else []})
