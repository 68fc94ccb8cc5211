"""The node catalogue: every node type a project graph may use (``CATALOGUE``).

Value nodes (text, number, seed, output) live here; the image nodes in ``nodes_image`` and
the generation nodes in ``nodes_generate``. Each node's ``run(ctx, inputs)`` gets a
``jobs.workflows.context.NodeContext`` and its inputs decoded (images as PIL images,
text as str, numbers as int/float, videos as ``jobs.workflows.values.Video``): static
inputs resolved (literals, run variables, defaults), linked ones from upstream outputs;
an input that is neither given nor defaulted is absent. It returns ``{output: value}``.
"""

from __future__ import annotations

from actions.workflow.graph import PLACEHOLDER
from actions.workflow.nodes_generate import GENERATE_IMAGE, IMAGE_TO_IMAGE_NODE
from actions.workflow.nodes_image import (
    FRAMES_TO_VIDEO,
    LOAD_CONTENT,
    LOAD_IMAGE,
    OVERLAY_TEXT,
    PRODUCT_LISTING,
    RESIZE,
)
from actions.workflow.types import Input, NodeCatalogue, NodeType, Output

VARIABLES = "__variables__"  # the executor's extra input: the run's resolved variables


def fill(template: str, variables: dict) -> str:
    """``{{name}}`` replaced by the variable's value ("" when it has none, whole floats
    without ".0", as the plan renders them); a name the run does not have stays as is."""
    def value(match):
        name = match.group(1)
        if name not in variables:
            return match.group(0)
        found = variables[name]
        if isinstance(found, float) and found.is_integer():
            found = int(found)
        return "" if found is None else str(found)
    return PLACEHOLDER.sub(value, template)


def run_text(ctx, inputs) -> dict:
    """The template with its ``{{name}}`` placeholders filled.

    The executor passes the run's resolved variables (given values, else defaults) as
    ``inputs["__variables__"]`` (a dict); a literal template usually arrives already
    filled by the plan, a linked one is filled here."""
    return {"text": fill(str(inputs.get("template") or ""), inputs.get(VARIABLES) or {})}


def run_number(ctx, inputs) -> dict:
    return {"number": inputs["value"]}


def run_seed(ctx, inputs) -> dict:
    """The node's derived seed: the same run seed gives the same number, so a graph can
    share one seed between nodes by linking them to it."""
    return {"number": ctx.seed}


def run_output(ctx, inputs) -> dict:
    """Nothing: the executor records the linked value as one of the run's outputs."""
    return {}


TEXT = NodeType(
    name="text", title="Text",
    description="Text with {{variable}} placeholders filled from the run's variables.",
    inputs=(Input("template", "text", required=True, max_length=10000,
                  help="The text; {{name}} is replaced by the run variable name."),),
    outputs=(Output("text", "text"),),
    run=run_text,
)

NUMBER = NodeType(
    name="number", title="Number", description="A number (a value or a run variable).",
    inputs=(Input("value", "number", required=True),),
    outputs=(Output("number", "number"),),
    run=run_number,
)

SEED = NodeType(
    name="seed", title="Seed",
    description="The node's seed, derived from the run's seed: link it into several "
                "generation nodes to give them one seed.",
    inputs=(),
    outputs=(Output("number", "number"),),
    run=run_seed, uses_seed=True,
)

OUTPUT = NodeType(
    name="output", title="Output",
    description="Marks a value the run returns (as its outputs, under name).",
    inputs=(Input("value", "any", required=True, help="The value to return."),
            Input("name", "text", static=True, max_length=64,
                  help="What the output is called (default: the node id).")),
    outputs=(),
    run=run_output, is_output=True, cacheable=False,
)

CATALOGUE = NodeCatalogue((TEXT, NUMBER, SEED, LOAD_IMAGE, LOAD_CONTENT, GENERATE_IMAGE,
                           IMAGE_TO_IMAGE_NODE, RESIZE, OVERLAY_TEXT, PRODUCT_LISTING,
                           FRAMES_TO_VIDEO, OUTPUT))


def default_catalogue() -> NodeCatalogue:
    return CATALOGUE
