"""The action registry: what each paid action is called, costs, accepts and does.

An action module declares one ``Action`` and registers it. The input schema is a list of
``Field``s: they render the JSON Schema used for validation and OpenAPI, and the field
list (with help text and choices) that automation platforms build their forms from.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from jsonschema import Draft202012Validator

from core.errors import InvalidAction, InvalidRequest
from jobs.context import JobContext

# Body fields every action accepts besides its own: they steer the call, not the action.
COMMON_FIELDS = {
    "client_reference_id": {"type": "string", "minLength": 1, "maxLength": 255,
                            "description": "Idempotency key for callers that cannot send "
                                           "the Idempotency-Key header."},
}

# Body fields of every asynchronous action.
ASYNC_FIELDS = {
    "callback_url": {"type": "string", "format": "uri", "maxLength": 2048,
                     "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
                     "description": "When the composition ends, it is POSTed here (signed "
                                    "like webhooks): Zapier's z.generateCallbackUrl, n8n's "
                                    "resume URL, a Make custom webhook."},
}

LABELS = {"client_reference_id": "Client Reference ID", "callback_url": "Callback URL"}

_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
          "array": "array", "object": "object"}


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: str = "string"
    required: bool = False
    label: str = ""
    help: str = ""
    choices: tuple = ()
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    format: str | None = None  # e.g. "uri"
    pattern: str | None = None

    def json_schema(self) -> dict:
        schema = {"type": _TYPES[self.type]}
        if self.type == "array":
            schema["items"] = {"type": "string"}
        if self.help:
            schema["description"] = self.help
        if self.choices:
            schema["enum"] = list(self.choices)
        if self.default is not None:
            schema["default"] = self.default
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        if self.type == "string" and self.required:
            schema["minLength"] = 1
        if self.format:
            schema["format"] = self.format
        if self.pattern:
            schema["pattern"] = self.pattern
        return schema

    def describe(self) -> dict:
        """The field as ``GET /zapier/v1/actions`` lists it (Zapier-style input field)."""
        out = {"key": self.name, "label": self.label or self.name.replace("_", " ").title(),
               "type": self.type, "required": self.required, "helpText": self.help}
        if self.choices:
            out["choices"] = list(self.choices)
        if self.default is not None:
            out["default"] = self.default
        for name in ("minimum", "maximum"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        return out


@dataclasses.dataclass(frozen=True)
class ActionContext:
    """What a synchronous action's ``perform`` receives, inside the debit's transaction:
    ids and services, never HTTP objects."""

    account_id: str
    request_id: str
    price_of: Callable[[str], int]
    balance: Callable[[], int]
    registry: Registry
    library: object = None  # jobs.content.library.Library
    receipt: str | None = None  # the debit's receipt, when the call is paid
    # (action name, body) -> what that input would cost the caller, validated as a call
    quote: Callable[[str, dict], int] | None = None
    # PUBLIC_BASE_URL, or the request's own base: for the full URLs an answer holds
    # (a list's ``next``)
    base_url: str = ""


SyncPerform = Callable[[ActionContext, dict], dict]
AsyncPerform = Callable[[JobContext, dict], dict]


@dataclasses.dataclass(frozen=True)
class Action:
    name: str
    title: str
    description: str
    price: int
    fields: tuple[Field, ...]
    # sync: called with an ActionContext inside the debit's transaction (raising undoes
    # the debit); async: called on a worker with a jobs.context.JobContext (models,
    # pipelines, save, progress), and a failure is refunded.
    perform: SyncPerform | AsyncPerform
    mode: str = "sync"  # sync | async
    ttl_s: int | None = None  # async only: how long it may run before it is failed
    queue: str = "cpu"  # async only: cpu | gpu
    # (input, ActionService) -> the normalized input or None: refuse before charging.
    precheck: Callable | None = None
    # (input, base price, ActionService) -> credits, for actions priced by their input;
    # ``pricing_doc`` says how, in ``GET /zapier/v1/actions``.
    pricing: Callable | None = None
    pricing_doc: str = ""
    queue_for: Callable | None = None  # (input) -> queue name, when it depends on the input
    # Optional batching (jobs.engine, GPU_BATCH_MAX > 1): queued jobs with equal
    # ``batch_key(input)`` (None: never batched) run as one ``perform_batch(batch, inputs)``
    # -> a result or an exception per job; ``batch_fits(ctx, inputs)`` caps a batch's size.
    batch_key: Callable | None = None
    perform_batch: Callable | None = None
    batch_fits: Callable | None = None
    # async only: (composition, input, private) inside the debit's transaction, after the
    # composition row is written; ``private`` holds the precheck's ``_``-keys (never
    # stored in the composition's input), e.g. a priced plan to record with the job.
    record: Callable | None = None
    # precheck(input, service, account_id) instead of (input, service): the input names
    # something the caller must be allowed to see (a project).
    precheck_account: bool = False
    # sync only: ``perform`` writes nothing and has no effect outside its answer, so it may
    # run *before* the debit, which then joins a group commit (metering.group_commit)
    # instead of holding a transaction around ``perform``. Such an action sees no receipt.
    pure: bool = False
    # async only: ``perform`` picks up where a run that lost its worker stopped (the stages
    # it finished are in the database), so the reaper puts such a composition back on its
    # queue (at most ``jobs.engine.MAX_RESUMES`` times) instead of failing and refunding it.
    resumable: bool = False

    def input_fields(self) -> tuple[Field, ...]:
        """Every field a caller may send, as ``GET /zapier/v1/actions`` lists them: the
        action's own, then the ones every action (and every asynchronous one) accepts."""
        steering = {**COMMON_FIELDS, **(ASYNC_FIELDS if self.mode == "async" else {})}
        return (*self.fields, *(
            Field(name, max_length=spec.get("maxLength"), format=spec.get("format"),
                  label=LABELS[name], help=spec["description"])
            for name, spec in steering.items()))

    def json_schema(self) -> dict:
        props = {f.name: f.json_schema() for f in self.fields}
        props.update(COMMON_FIELDS)
        if self.mode == "async":
            props.update(ASYNC_FIELDS)
        return {"type": "object", "properties": props,
                "required": [f.name for f in self.fields if f.required],
                "additionalProperties": False}

    @functools.cached_property
    def _validator(self):
        """Built once per action: a validator costs more to build than to run."""
        return Draft202012Validator(self.json_schema())

    def validate(self, body) -> dict:
        """The input with defaults applied, or ``InvalidRequest`` listing every problem."""
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object")
        check_with(self._validator, body)
        data = {f.name: f.default for f in self.fields if f.default is not None}
        data.update({k: v for k, v in body.items() if k not in COMMON_FIELDS})
        return data


def check_schema(schema: dict, body) -> None:
    """``InvalidRequest`` listing every way ``body`` breaks the JSON Schema ``schema``: the
    one validator for action inputs and for every body a route documents."""
    check_with(Draft202012Validator(schema), body)


def check_with(validator, body) -> None:
    """``check_schema`` with a validator already built (an action's, built once)."""
    if validator.is_valid(body):
        return
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    if errors:
        details = [_detail(e) for e in errors]
        raise InvalidRequest("; ".join(f"{d['field']}: {d['problem']}" for d in details),
                             details=details)


def _detail(error) -> dict:
    if error.validator == "required":
        field = error.message.split("'")[1]
        return {"field": field, "problem": "is required"}
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return {"field": ",".join(extra), "problem": "is not a field of this action"}
    field = ".".join(str(p) for p in error.absolute_path) or "body"
    if error.validator == "enum":  # only an enum's value is a list to join
        return {"field": field,
                "problem": f"must be one of {', '.join(map(str, error.validator_value))}"}
    problem = {
        "type": f"must be of type {error.validator_value}",
        "minimum": f"must be >= {error.validator_value}",
        "maximum": f"must be <= {error.validator_value}",
        "maxLength": f"must be at most {error.validator_value} characters",
        "minLength": "must not be empty",
        "pattern": "must be an http(s) URL",
    }.get(error.validator, error.message)
    return {"field": field, "problem": problem}


class Registry:
    def __init__(self):
        self._actions: dict[str, Action] = {}
        # The workflow node catalogue (actions.workflow.types.NodeCatalogue) that
        # run-project plans with and workers run nodes from; None: no workflows.
        self.nodes = None

    def register(self, action: Action) -> Action:
        if action.name in self._actions:
            raise ValueError(f"action {action.name} registered twice")
        self._actions[action.name] = action
        return action

    def get(self, name: str) -> Action:
        try:
            return self._actions[name]
        except KeyError:
            raise InvalidAction(f"Invalid action: {name}") from None

    def __contains__(self, name):
        return name in self._actions

    def __iter__(self):
        return iter(sorted(self._actions.values(), key=lambda a: a.name))
