"""A project's graph: normalise the seed's fields, validate, plan and price a run.

Pure code (no database, Redis or HTTP), so the save route, the estimate route and the run
reach the same answers from the same inputs: THE ESTIMATE EQUALS THE DEBIT because both
call :func:`plan` with the same arguments, and prices are pure functions of a node's
static inputs (literals, defaults and run variables; never linked values, which are only
known once upstream nodes have run).

Every problem is collected before anything is raised, so a caller fixes a graph in one
round trip: one ``InvalidRequest`` whose ``details`` list them all, typed with ComfyUI's
error names where it has them.

The plan is a plain dict (:meth:`Plan.to_dict`) because it crosses into ``jobs``, which
never imports ``actions``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import math
import re

from actions.workflow.types import Input, NodeType
from core.errors import InvalidRequest

NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")  # node ids name storage files
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
VARIABLE_TYPES = ("text", "number", "image")
MAX_NODES = 100
# Inputs whose text has ``{{name}}`` placeholders filled from run variables.
TEMPLATE_INPUTS = frozenset({("text", "template")})
MESSAGE_DETAILS = 3  # how many details the error message spells out

# Seed connection keys and their accepted aliases (first: the canonical name).
CONNECTION_KEYS = {
    "from_node": ("from_node", "source"),
    "from_output": ("from_output", "source_output", "sourceHandle"),
    "to_node": ("to_node", "target"),
    "to_input": ("to_input", "target_input", "targetHandle"),
}


# ---------------------------------------------------------------- errors and values

def invalid(details: list[dict]) -> InvalidRequest:
    """One error naming every problem; the message spells out the first few."""
    shown = "; ".join(f"{d['field']}: {d['problem']}" for d in details[:MESSAGE_DETAILS])
    more = len(details) - MESSAGE_DETAILS
    return InvalidRequest(shown + (f" (and {more} more)" if more > 0 else ""),
                          details=details)


def _node_detail(node_id, input_name, kind, problem) -> dict:
    field = f"nodes.{node_id}" + (f".inputs.{input_name}" if input_name else "")
    detail = {"field": field, "node": node_id}
    if input_name:
        detail["input"] = input_name
    detail.update(type=kind, problem=problem)
    return detail


def _graph_detail(kind, problem, nodes=()) -> dict:
    return {"field": "graph", "type": kind, "problem": problem, "nodes": list(nodes)}


def _seed_detail(field, kind, problem) -> dict:
    return {"field": field, "type": kind, "problem": problem}


def is_link(value) -> bool:
    return isinstance(value, dict) and "node" in value


def is_variable(value) -> bool:
    return isinstance(value, dict) and "variable" in value and "node" not in value


def _is_number(value) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _matches_variable_type(var_type, value) -> bool:
    return _is_number(value) if var_type == "number" else isinstance(value, str)


# ---------------------------------------------------------------- normalise

def normalise(node_data, connection_data, manual_data, catalogue=None) -> dict:
    """The seed's ``node_data`` (a list of nodes, or a ComfyUI-API dict keyed by id),
    ``connection_data`` and ``manual_data`` as the normalised graph. ``catalogue``
    (optional) turns ComfyUI's output indexes into output names. Structural problems
    raise one ``InvalidRequest``; what the nodes mean is :func:`validate`'s business."""
    graph, problems = _normalise(node_data, connection_data, manual_data, catalogue)
    if problems:
        raise invalid(problems)
    return graph


def build(node_data, connection_data, manual_data, catalogue, service) -> dict:
    """:func:`normalise` then :func:`validate`, with both kinds of problem in one error:
    what the save routes call."""
    graph, problems = _normalise(node_data, connection_data, manual_data, catalogue)
    problems += graph_problems(graph, catalogue, service)
    if problems:
        raise invalid(problems)
    return graph


def _normalise(node_data, connection_data, manual_data, catalogue):
    problems: list[dict] = []
    nodes = _nodes(node_data, problems)
    _connect(nodes, connection_data, problems)
    variables = _variables(manual_data, problems)
    if catalogue is not None:
        _name_outputs(nodes, catalogue)
    return {"nodes": nodes, "variables": variables}, problems


def _raw_nodes(node_data, problems) -> list[tuple[str, object]]:
    """(where, raw node) pairs from either seed form; ComfyUI's keys become ids."""
    if node_data is None:
        return []
    if isinstance(node_data, list):
        return [(f"node_data.{i}", raw) for i, raw in enumerate(node_data)]
    if isinstance(node_data, dict):
        return [(f"node_data.{key}", {**raw, "id": key} if isinstance(raw, dict) else raw)
                for key, raw in node_data.items()]
    problems.append(_seed_detail("node_data", "invalid_value_type",
                                 "must be a list of nodes or an object keyed by node id"))
    return []


def _nodes(node_data, problems) -> list[dict]:
    nodes, seen = [], set()
    for where, raw in _raw_nodes(node_data, problems):
        node = _node(where, raw, seen, problems)
        if node is not None:
            seen.add(node["id"])
            nodes.append(node)
    return nodes


def _node(where, raw, seen, problems) -> dict | None:
    if not isinstance(raw, dict):
        problems.append(_seed_detail(where, "invalid_value_type", "must be an object"))
        return None
    node_id = _node_id(raw.get("id"))
    node_type = raw.get("type", raw.get("class_type"))
    inputs = raw.get("inputs") if raw.get("inputs") is not None else {}
    found = len(problems)
    if node_id is None:
        problems.append(_seed_detail(f"{where}.id", "invalid_node_id",
                                     f"must match {NODE_ID.pattern}"))
    elif node_id in seen:
        problems.append({**_seed_detail(f"{where}.id", "duplicate_node_id",
                                        f"node id {node_id} is used twice"), "node": node_id})
    if not isinstance(node_type, str) or not node_type:
        problems.append(_seed_detail(f"{where}.type", "unknown_node_type",
                                     "a node type is required"))
    if not isinstance(inputs, dict):
        problems.append(_seed_detail(f"{where}.inputs", "invalid_value_type",
                                     "must be an object of input values"))
    if len(problems) > found:
        return None
    return {"id": node_id, "type": node_type,
            "inputs": {name: _value(v) for name, v in inputs.items()}}


def _node_id(value) -> str | None:
    """ComfyUI ids are often numbers: accepted as their decimal text."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and NODE_ID.match(value) else None


def _value(value):
    """Links as ``{"node", "output"}`` (ComfyUI's ``[node_id, output_index]`` too, and
    numeric ids as text), variable references as ``{"variable"}``; literals as given."""
    if (isinstance(value, list) and len(value) == 2 and _node_id(value[0]) is not None
            and isinstance(value[1], int | str) and not isinstance(value[1], bool)):
        return {"node": _node_id(value[0]), "output": value[1]}
    if is_link(value):
        return {"node": _node_id(value["node"]) or value["node"], "output": value.get("output")}
    if is_variable(value):
        return {"variable": value["variable"]}
    return value


def _connect(nodes, connection_data, problems) -> None:
    """Each connection sets its target input to a link, overriding a literal."""
    if connection_data is None:
        return
    if not isinstance(connection_data, list):
        problems.append(_seed_detail("connection_data", "bad_linked_input",
                                     "must be a list of connections"))
        return
    by_id = {n["id"]: n for n in nodes}
    for i, raw in enumerate(connection_data):
        found = _connection(f"connection_data.{i}", raw, problems)
        if found is None:
            continue
        source, output, target, name = found
        if target not in by_id:
            problems.append(_seed_detail(f"connection_data.{i}.to_node", "bad_linked_input",
                                         f"names no node ({target})"))
            continue
        by_id[target]["inputs"][name] = {"node": source, "output": output}


def _connection(where, raw, problems):
    if not isinstance(raw, dict):
        problems.append(_seed_detail(where, "bad_linked_input", "must be an object"))
        return None
    values = {key: next((raw[a] for a in aliases if raw.get(a) is not None), None)
              for key, aliases in CONNECTION_KEYS.items()}
    values["from_node"] = _node_id(values["from_node"]) or values["from_node"]
    values["to_node"] = _node_id(values["to_node"]) or values["to_node"]
    wrong = [key for key, value in values.items() if not _connection_part(key, value)]
    for key in wrong:
        problems.append(_seed_detail(f"{where}.{key}", "bad_linked_input",
                                     "is required" if values[key] is None
                                     else "must be a node id, or a name"))
    if wrong:
        return None
    return values["from_node"], values["from_output"], values["to_node"], values["to_input"]


def _connection_part(key, value) -> bool:
    if key == "from_output":  # a name, or a ComfyUI output index
        return (isinstance(value, str) and value != "") or (
            isinstance(value, int) and not isinstance(value, bool))
    return isinstance(value, str) and value != ""


def _variables(manual_data, problems) -> list[dict]:
    if manual_data is None:
        return []
    if not isinstance(manual_data, list):
        problems.append(_seed_detail("manual_data", "invalid_variable",
                                     "must be a list of variables"))
        return []
    out, seen = [], set()
    for i, raw in enumerate(manual_data):
        variable = _variable(f"manual_data.{i}", raw, seen, problems)
        if variable is not None:
            seen.add(variable["name"])
            out.append(variable)
    return out


def _variable(where, raw, seen, problems) -> dict | None:
    if not isinstance(raw, dict):
        problems.append(_seed_detail(where, "invalid_variable", "must be an object"))
        return None
    var = {"name": raw.get("name"), "type": raw.get("type") or "text",
           "default": raw.get("default"), "help": raw.get("help") or "",
           "required": raw.get("required") if raw.get("required") is not None else False}
    wrong = _variable_problems(var, seen)
    for key, problem in wrong:
        problems.append(_seed_detail(f"{where}.{key}", "invalid_variable", problem))
    return None if wrong else var


def _variable_problems(var, seen) -> list[tuple[str, str]]:
    wrong = []
    if not isinstance(var["name"], str) or not VARIABLE_NAME.match(var["name"]):
        wrong.append(("name", f"must match {VARIABLE_NAME.pattern}"))
    elif var["name"] in seen:
        wrong.append(("name", f"variable {var['name']} is declared twice"))
    if var["type"] not in VARIABLE_TYPES:
        wrong.append(("type", f"must be one of {', '.join(VARIABLE_TYPES)}"))
    elif var["default"] is not None and not _matches_variable_type(var["type"],
                                                                    var["default"]):
        wrong.append(("default", f"must be a {var['type']} value"))
    if not isinstance(var["help"], str):
        wrong.append(("help", "must be text"))
    if not isinstance(var["required"], bool):
        wrong.append(("required", "must be true or false"))
    return wrong


def _name_outputs(nodes, catalogue) -> None:
    """ComfyUI links name outputs by index: store the name where the type is known."""
    types = {n["id"]: catalogue.find(n["type"]) for n in nodes}
    for node in nodes:
        for name, value in node["inputs"].items():
            if not is_link(value) or not isinstance(value.get("output"), int):
                continue
            output = _output_of(types.get(value["node"]), value["output"])
            if output is not None:
                node["inputs"][name] = {"node": value["node"], "output": output.name}


# ---------------------------------------------------------------- validate

_UNSET = object()  # a variable whose value is not known yet (at save, no default)


@dataclasses.dataclass(frozen=True)
class _Scope:
    """What checking one node needs to know about the rest of the graph."""

    catalogue: object
    service: object
    by_id: dict
    declared: dict
    values: dict  # variable name -> value (absent: no value)
    unresolved: frozenset  # variable names whose value is unknown (checks skipped)

    def value_of(self, name):
        if name in self.unresolved:
            return _UNSET
        return self.values.get(name)


def validate(graph, catalogue, service) -> None:
    """Raise one ``InvalidRequest`` listing every problem of a normalised graph."""
    problems = graph_problems(graph, catalogue, service)
    if problems:
        raise invalid(problems)


def graph_problems(graph, catalogue, service, values=None, unresolved=None) -> list[dict]:
    """Every problem of the graph, with variables at ``values`` (default: their declared
    defaults; those without one are unknown, so checks that need them wait for the run)."""
    declared = {v["name"]: v for v in graph.get("variables", [])}
    if values is None:
        values = {n: v["default"] for n, v in declared.items() if v["default"] is not None}
        unresolved = frozenset(declared) - set(values)
    nodes = graph.get("nodes", [])
    scope = _Scope(catalogue, service, {n["id"]: n for n in nodes}, declared, values,
                   frozenset(unresolved or ()))
    problems = []
    if len(nodes) > MAX_NODES:
        problems.append(_graph_detail("too_many_nodes", f"a project has at most {MAX_NODES} "
                                      f"nodes, this one has {len(nodes)}"))
    for node in nodes:
        problems += _node_problems(node, scope)
    problems += [_graph_detail("cycle", f"the nodes {' -> '.join([*c, c[0]])} form a cycle",
                               c) for c in cycles(nodes)]
    if not any(_is_output(n, catalogue) for n in nodes):
        problems.append(_graph_detail("prompt_no_outputs", "the graph has no output node"))
    return problems


def _is_output(node, catalogue) -> bool:
    node_type = catalogue.find(node["type"])
    return node_type is not None and node_type.is_output


def _node_problems(node, scope) -> list[dict]:
    node_type = scope.catalogue.find(node["type"])
    if node_type is None:
        return [_node_detail(node["id"], None, "unknown_node_type",
                             f"unknown node type {node['type']!r}")]
    problems = [_node_detail(node["id"], name, "unknown_input",
                             f"{node_type.name} has no input {name}")
                for name in node["inputs"] if node_type.input(name) is None]
    for spec in node_type.inputs:
        problems += [_node_detail(node["id"], spec.name, kind, problem)
                     for kind, problem in _input_problems(node, node_type, spec, scope)]
    if not problems and node_type.check is not None:
        static = _static_inputs(node, node_type, scope)
        if static is not None:
            problems += _check_problems(node, node_type, static, scope.service)
    return problems


def _input_problems(node, node_type, spec: Input, scope) -> list[tuple[str, str]]:
    value = node["inputs"].get(spec.name)
    if value is None:
        return _missing(spec)
    if is_link(value):
        return _link_problems(spec, value, scope)
    if is_variable(value):
        return _variable_ref_problems(spec, value["variable"], scope)
    if isinstance(value, dict | list):
        return [("invalid_value_type", "must be a literal, a link {node, output} or a "
                 "variable reference {variable}")]
    problems = literal_problems(spec, value)
    if (node_type.name, spec.name) in TEMPLATE_INPUTS and isinstance(value, str):
        problems += [("unknown_variable", f"{{{{{name}}}}} names no declared variable")
                     for name in dict.fromkeys(PLACEHOLDER.findall(value))
                     if name not in scope.declared]
    return problems


def _missing(spec: Input) -> list[tuple[str, str]]:
    if spec.required and spec.default is None:
        return [("required_input_missing", "is required")]
    return []


def _link_problems(spec: Input, link, scope) -> list[tuple[str, str]]:
    if spec.static:
        return [("static_input_linked", "sets the price or the model, so it takes a value "
                 "or a variable, not a link")]
    source = link.get("node")
    if not isinstance(source, str) or source not in scope.by_id:
        return [("bad_linked_input", f"links to a missing node ({source})")]
    source_type = scope.catalogue.find(scope.by_id[source]["type"])
    if source_type is None:
        return []  # reported on the source node itself
    output = _output_of(source_type, link.get("output"))
    if output is None:
        return [("bad_linked_input", f"node {source} ({source_type.name}) has no output "
                 f"{link.get('output')!r}")]
    if spec.type != "any" and output.type != spec.type:
        return [("return_type_mismatch", f"{source}.{output.name} is {output.type}; this "
                 f"input takes {spec.type}")]
    return []


def _output_of(node_type: NodeType | None, output):
    """An output by name, or by ComfyUI's index."""
    if node_type is None:
        return None
    if isinstance(output, int) and not isinstance(output, bool):
        return node_type.outputs[output] if 0 <= output < len(node_type.outputs) else None
    return node_type.output(output) if isinstance(output, str) else None


def _accepts_variable(input_type, var_type) -> bool:
    """An image variable is an image URL: it feeds text inputs such as load_image's url."""
    if input_type == "any" or input_type == var_type:
        return True
    return input_type == "text" and var_type == "image"


def _variable_ref_problems(spec: Input, name, scope) -> list[tuple[str, str]]:
    declared = scope.declared.get(name) if isinstance(name, str) else None
    if declared is None:
        return [("unknown_variable", f"names no declared variable ({name})")]
    if not _accepts_variable(spec.type, declared["type"]):
        return [("invalid_value_type", f"variable {name} is {declared['type']}; this input "
                 f"takes {spec.type}")]
    value = scope.value_of(name)
    if value is _UNSET:
        return []
    if value is None:
        return [(kind, f"variable {name} has no value") for kind, _ in _missing(spec)]
    return [(kind, f"variable {name}: {problem}")
            for kind, problem in literal_problems(spec, value)]


def literal_problems(spec: Input, value) -> list[tuple[str, str]]:
    """(error type, problem) for a literal against an input's type and limits."""
    if spec.type == "any":
        ok = isinstance(value, str | bool) or _is_number(value)
        return [] if ok else [("invalid_value_type", "must be text, a number or a boolean")]
    if spec.type == "text" and not isinstance(value, str):
        return [("invalid_value_type", "must be text")]
    if spec.type == "number":
        if not _is_number(value):
            return [("invalid_value_type", "must be a number")]
        if spec.integer and value != int(value):
            return [("invalid_value_type", "must be a whole number")]
    if spec.type not in ("text", "number"):
        return [("invalid_value_type", f"must be linked to a node's {spec.type} output")]
    return _limit_problems(spec, value)


def _limit_problems(spec: Input, value) -> list[tuple[str, str]]:
    problems = []
    if spec.choices and value not in spec.choices:
        problems.append(("value_not_in_list",
                         f"must be one of {', '.join(map(str, spec.choices))}"))
    if spec.minimum is not None and _is_number(value) and value < spec.minimum:
        problems.append(("value_smaller_than_min", f"must be >= {spec.minimum}"))
    if spec.maximum is not None and _is_number(value) and value > spec.maximum:
        problems.append(("value_bigger_than_max", f"must be <= {spec.maximum}"))
    if (spec.max_length is not None and isinstance(value, str)
            and len(value) > spec.max_length):
        problems.append(("value_too_long", f"must be at most {spec.max_length} characters"))
    return problems


def _check_problems(node, node_type, static, service) -> list[dict]:
    """A node type's own checks (a model's limits); an ``InvalidRequest`` it raises
    counts as its problems, so a check may reuse the actions' validators."""
    try:
        found = node_type.check(dict(static), service) or []
    except InvalidRequest as exc:
        found = [{"input": d.get("input", d.get("field")), "type": d.get("type"),
                  "problem": d.get("problem", exc.message)} for d in exc.details]
        found = found or [{"problem": exc.message}]
    out = []
    for problem in found:
        name = problem.get("input")
        name = name if node_type.input(name) is not None else None
        out.append(_node_detail(node["id"], name, problem.get("type") or "model_limits",
                                problem.get("problem", "")))
    return out


# ---------------------------------------------------------------- resolving and order

def _static_inputs(node, node_type: NodeType, scope) -> dict | None:
    """The node's inputs known before it runs (literals, defaults, variable values,
    templates filled): what prices, checks, queues and cache keys are computed from.
    None while a variable's value is unknown."""
    static = {}
    for spec in node_type.inputs:
        value = node["inputs"].get(spec.name)
        if is_link(value):
            continue
        if is_variable(value):
            value = scope.value_of(value["variable"])
            if value is _UNSET:
                return None
        elif isinstance(value, str) and (node_type.name, spec.name) in TEMPLATE_INPUTS:
            value = _render(value, scope)
        if value is None:
            value = spec.default
        if value is not None:
            static[spec.name] = _whole(spec, value)
    return static


def _whole(spec: Input, value):
    """3.0 for an integer input is 3: the same price, queue and cache key."""
    if spec.type == "number" and spec.integer and isinstance(value, float):
        return int(value)
    return value


def _render(template: str, scope) -> str:
    """``{{name}}`` filled with the variable's value ("" when it has none); a placeholder
    whose value is not known yet stays as it is."""
    def fill(match):
        value = scope.value_of(match.group(1))
        if value is _UNSET:
            return match.group(0)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return "" if value is None else str(value)
    return PLACEHOLDER.sub(fill, template)


def _sources(node) -> list[str]:
    """The ids of the nodes linked into this one, once each, in input order."""
    return list(dict.fromkeys(v["node"] for v in node["inputs"].values()
                              if is_link(v) and isinstance(v.get("node"), str)))


def cycles(nodes) -> list[list[str]]:
    """Each cycle once, in data-flow order, starting at its earliest-listed node."""
    index = {n["id"]: i for i, n in enumerate(nodes)}
    downstream = {n["id"]: [] for n in nodes}
    for node in nodes:
        for source in _sources(node):
            if source in downstream:
                downstream[source].append(node["id"])
    found, state = {}, {}
    for start in downstream:
        if start not in state:
            _dfs(start, downstream, state, found, index)
    return list(found.values())


def _dfs(start, downstream, state, found, index) -> None:
    """Iterative depth-first search: every back edge closes one cycle."""
    path, stack = [start], [iter(downstream[start])]
    state[start] = "open"
    while stack:
        nxt = next(stack[-1], None)
        if nxt is None:
            state[path.pop()] = "done"
            stack.pop()
        elif state.get(nxt) == "open":
            cycle = path[path.index(nxt):]
            first = min(range(len(cycle)), key=lambda i: index[cycle[i]])
            cycle = cycle[first:] + cycle[:first]
            found.setdefault(tuple(cycle), cycle)
        elif nxt not in state:
            state[nxt] = "open"
            path.append(nxt)
            stack.append(iter(downstream[nxt]))


def topological(nodes) -> list[dict]:
    """Upstream before downstream; among ready nodes, the one listed first (stable)."""
    index = {n["id"]: i for i, n in enumerate(nodes)}
    waiting = {n["id"]: {s for s in _sources(n) if s in index} for n in nodes}
    users = {n["id"]: [] for n in nodes}
    for node_id, sources in waiting.items():
        for source in sources:
            users[source].append(node_id)
    ready = [index[i] for i, sources in waiting.items() if not sources]
    heapq.heapify(ready)
    order = []
    while ready:
        node = nodes[heapq.heappop(ready)]
        order.append(node)
        for user in users[node["id"]]:
            waiting[user].discard(node["id"])
            if not waiting[user]:
                heapq.heappush(ready, index[user])
    return order


# ---------------------------------------------------------------- planning and price

def derive_seed(run_seed, node_id) -> int:
    """Each node's own seed: two nodes of one run differ, a rerun with the run's seed
    repeats every one of them."""
    digest = hashlib.sha256(f"{run_seed}:{node_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(node_type: str, inputs: dict, version: str = "", seed=None) -> str:
    """Equal keys mean equal outputs: the type, the inputs (links as the upstream node's
    key and output), the model version and, for seeded nodes, the seed."""
    body = {"type": node_type, "inputs": inputs, "version": version}
    if seed is not None:
        body["seed"] = seed
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


@dataclasses.dataclass
class PlanNode:
    id: str
    type: str
    position: int
    queue: str
    credits: int
    cache_key: str
    status: str  # pending | cached | skipped
    inputs: dict
    seed: int
    outputs: dict | None
    needs: list[str]
    static: dict  # what the price was computed from (not part of to_dict)

    def to_dict(self) -> dict:
        return {"id": self.id, "type": self.type, "position": self.position,
                "queue": self.queue, "credits": self.credits, "cache_key": self.cache_key,
                "status": self.status, "inputs": self.inputs, "seed": self.seed,
                "outputs": self.outputs, "needs": list(self.needs)}


@dataclasses.dataclass
class Plan:
    seed: int
    variables: dict
    graph: dict
    nodes: list[PlanNode]
    account_id: str | None = None

    @property
    def total(self) -> int:
        return sum(n.credits for n in self.nodes)

    def node(self, node_id) -> PlanNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "variables": dict(self.variables), "total": self.total,
                "graph": self.graph, "nodes": [n.to_dict() for n in self.nodes]}


def plan(graph, catalogue, service, *, account_id, variables, seed, cached=None,
         use_cache=True) -> Plan:
    """Validate the graph with the run's variables, then key, price and mark each node:
    ``cached`` (its outputs are reused, free), ``pending`` (it runs, at its price) or
    ``skipped`` (no output needs it, free). ``cached(keys) -> {key: outputs}`` answers
    which keys this account has outputs for; None or ``use_cache=False``: none."""
    values, unresolved, problems = run_variables(graph, variables)
    problems += graph_problems(graph, catalogue, service, values, unresolved)
    if problems:
        raise invalid(problems)
    declared = {v["name"]: v for v in graph.get("variables", [])}
    scope = _Scope(catalogue, service, {n["id"]: n for n in graph["nodes"]}, declared,
                   values, frozenset())
    drafts = _drafts(topological(graph["nodes"]), scope, seed)
    hits = _lookup(drafts, catalogue, cached if use_cache else None)
    needed = _needed(drafts, hits, catalogue)
    for draft in drafts:
        _settle(draft, catalogue.find(draft.type), hits, needed, service)
    return Plan(seed, {name: values.get(name) for name in declared}, graph, drafts,
                account_id)


def run_variables(graph, given) -> tuple[dict, frozenset, list[dict]]:
    """The run's variable values (given, else the default), the names whose value is
    wrong (checks that need them are skipped) and the problems found."""
    declared = {v["name"]: v for v in graph.get("variables", [])}
    given = {} if given is None else given
    if not isinstance(given, dict):
        return {}, frozenset(declared), [_seed_detail(
            "variables", "invalid_value_type", "must be an object of variable values")]
    problems = [_seed_detail(f"variables.{name}", "unknown_variable",
                             "the project declares no such variable")
                for name in given if name not in declared]
    values, wrong = {}, set()
    for name, var in declared.items():
        value = given.get(name)
        if value is None:
            value = var["default"]
            if value is None and var["required"]:
                problems.append(_seed_detail(f"variables.{name}", "required_input_missing",
                                             "is required"))
                wrong.add(name)
        elif not _matches_variable_type(var["type"], value):
            problems.append(_seed_detail(f"variables.{name}", "invalid_value_type",
                                         f"must be a {var['type']} value"))
            wrong.add(name)
            continue
        if value is not None:
            values[name] = value
    return values, frozenset(wrong), problems


def _drafts(order, scope, run_seed) -> list[PlanNode]:
    """Plan nodes in topological order, keyed; statuses and prices come after."""
    keys, drafts = {}, []
    for position, node in enumerate(order):
        draft = _draft(node, position, scope, run_seed, keys)
        keys[draft.id] = draft.cache_key
        drafts.append(draft)
    return drafts


def _draft(node, position, scope, run_seed, keys) -> PlanNode:
    """One node keyed by its static inputs and its upstream nodes' keys (``keys``)."""
    node_type = scope.catalogue.find(node["type"])
    static = _static_inputs(node, node_type, scope)
    links = _links(node, scope)
    node_seed = derive_seed(run_seed, node["id"])
    version = node_type.version(dict(static), scope.service) if node_type.version else ""
    key_inputs = {**static, **{name: {"from": keys[source], "output": output}
                               for name, (source, output) in links.items()}}
    key = cache_key(node_type.name, key_inputs, str(version or ""),
                    node_seed if node_type.uses_seed else None)
    inputs = {**static, **{name: {"node": source, "output": output}
                           for name, (source, output) in links.items()}}
    return PlanNode(id=node["id"], type=node_type.name, position=position,
                    queue=node_type.queue_of(dict(static), scope.service), credits=0,
                    cache_key=key, status="pending", inputs=inputs, seed=node_seed,
                    outputs=None, needs=_sources(node), static=static)


def _links(node, scope) -> dict[str, tuple[str, str]]:
    """{input: (source node id, output name)}, ComfyUI's output indexes named."""
    out = {}
    for name, value in node["inputs"].items():
        if is_link(value):
            source_type = scope.catalogue.find(scope.by_id[value["node"]]["type"])
            out[name] = (value["node"], _output_of(source_type, value.get("output")).name)
    return out


def _cacheable(node_type) -> bool:
    return node_type.cacheable and not node_type.is_output  # outputs are free anyway


def _lookup(drafts, catalogue, cached) -> dict:
    """{cache key: outputs} for the nodes this account has outputs for, in one call."""
    keys = list(dict.fromkeys(d.cache_key for d in drafts
                              if _cacheable(catalogue.find(d.type))))
    if cached is None or not keys:
        return {}
    found = cached(keys) or {}
    return {key: found[key] for key in keys if key in found}


def _needed(drafts, hits, catalogue) -> set[str]:
    """From the output nodes upstream; a cached node is satisfied without its inputs."""
    by_id = {d.id: d for d in drafts}
    stack = [d.id for d in drafts if catalogue.find(d.type).is_output]
    needed = set()
    while stack:
        draft = by_id[stack.pop()]
        if draft.id in needed:
            continue
        needed.add(draft.id)
        if not (_cacheable(catalogue.find(draft.type)) and draft.cache_key in hits):
            stack += draft.needs
    return needed


def _settle(draft, node_type, hits, needed, service) -> None:
    if draft.id not in needed:
        draft.status = "skipped"
    elif _cacheable(node_type) and draft.cache_key in hits:
        draft.status, draft.outputs = "cached", hits[draft.cache_key]
    else:
        # Rounded up, never below zero: a fractional price never undercharges.
        draft.credits = max(0, math.ceil(node_type.price(dict(draft.static), service)))


def estimate_view(plan: Plan) -> list[dict]:
    """What the estimate route lists: each node's credits and status, upstream first."""
    return [{"id": n.id, "type": n.type, "credits": n.credits, "status": n.status}
            for n in plan.nodes]
