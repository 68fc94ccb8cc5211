"""What a node type is: typed inputs and outputs, the queue it runs on, its price (a pure
function of its validated inputs) and the function that runs it on a worker.

Value types: ``text`` (str), ``number`` (int or float), ``image`` (a PIL image),
``images`` (a list of PIL images), ``video`` (``jobs.workflows.values.Video``) and
``any`` (an output node's input: whatever is linked to it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

VALUE_TYPES = ("text", "number", "image", "images", "video")
INPUT_TYPES = (*VALUE_TYPES, "any")


@dataclasses.dataclass(frozen=True)
class Input:
    name: str
    type: str  # one of INPUT_TYPES
    required: bool = False
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    max_length: int | None = None
    integer: bool = False  # a number input that must be a whole number
    help: str = ""
    # Static inputs set the price, the queue or the model: a literal or a run variable,
    # never a link (their value must be known before the run is charged).
    static: bool = False
    # A URL the worker fetches: checked against the outbound rule (CONTRACT 6) before
    # the run is charged, as every fetched URL is.
    url: bool = False
    # A content item id the worker reads: the caller must be able to see it, checked
    # before the run is charged.
    content: bool = False

    def describe(self) -> dict:
        out = {"name": self.name, "type": self.type, "required": self.required,
               "help": self.help, "linkable": not self.static}
        if self.default is not None:
            out["default"] = self.default
        if self.minimum is not None:
            out["min"] = self.minimum
        if self.maximum is not None:
            out["max"] = self.maximum
        if self.choices:
            out["choices"] = list(self.choices)
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.integer:
            out["integer"] = True
        return out


@dataclasses.dataclass(frozen=True)
class Output:
    name: str
    type: str  # one of VALUE_TYPES

    def describe(self) -> dict:
        return {"name": self.name, "type": self.type}


@dataclasses.dataclass(frozen=True)
class NodeType:
    name: str
    title: str
    description: str
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    # (ctx: jobs.workflows.context.NodeContext, inputs: dict) -> {output name: value}
    run: Callable
    queue: str = "cpu"  # cpu | gpu (the model's own queue: ``queue_for``)
    # (static inputs, service) -> credits >= 0; ``service`` is the ActionService (models,
    # prices). Called at estimate and again at the debit, with the same inputs.
    price: Callable = lambda inputs, service: 0
    pricing_doc: str = "free"
    # (static inputs, service) -> the queue name, e.g. gpu_queue(model id)
    queue_for: Callable | None = None
    # (static inputs, service) -> [{"input": name, "type": ..., "problem": ...}]: checks a
    # schema cannot express (a model's allowed sizes); run at save and at run.
    check: Callable | None = None
    # (static inputs, service) -> a string that changes when the model's weights do:
    # part of the cache key, so a new model version never serves an old output.
    version: Callable | None = None
    uses_seed: bool = False  # the node's derived seed is part of its input (and cache key)
    is_output: bool = False  # marks what the run returns
    cacheable: bool = True

    def input(self, name) -> Input | None:
        return next((i for i in self.inputs if i.name == name), None)

    def output(self, name) -> Output | None:
        return next((o for o in self.outputs if o.name == name), None)

    def queue_of(self, inputs, service) -> str:
        return self.queue_for(inputs, service) if self.queue_for else self.queue

    def describe(self) -> dict:
        return {"type": self.name, "title": self.title, "description": self.description,
                "inputs": [i.describe() for i in self.inputs],
                "outputs": [o.describe() for o in self.outputs],
                "queue": self.queue, "pricing": self.pricing_doc,
                "usesSeed": self.uses_seed, "isOutput": self.is_output}


class NodeCatalogue:
    def __init__(self, types=()):
        self._types: dict[str, NodeType] = {}
        for node_type in types:
            self.register(node_type)

    def register(self, node_type: NodeType) -> NodeType:
        if node_type.name in self._types:
            raise ValueError(f"node type {node_type.name} registered twice")
        self._types[node_type.name] = node_type
        return node_type

    def find(self, name) -> NodeType | None:
        return self._types.get(name) if isinstance(name, str) else None

    def __contains__(self, name):
        return self.find(name) is not None

    def __iter__(self):
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def describe(self) -> list[dict]:
        return [t.describe() for t in self]
