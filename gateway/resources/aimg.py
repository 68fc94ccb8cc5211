"""AIMG compatibility routes (seed 003): ``/generateImage``, ``/generateVideo``,
``/getItemStatus``, ``/getModels``, ``/getQueuesLength``, ``/getSamplePrompts``.

Thin aliases: the POSTs run the ``generate-image`` and ``generate-video`` actions through
the same ``ActionService.run`` as ``POST /zapier/v1/{action}`` (same validation, price,
debit, idempotency and ``meta``), and every status is read from the same composition
record; only the shape inside ``data`` is the seed's (GenerationStatus, Model, Prompt).
See docs/GENERATION.md, "AIMG routes".
"""

from __future__ import annotations

import json

from rq import Queue

from core.errors import InvalidRequest, NotFound
from gateway import metrics
from gateway.envelope import ok
from gateway.openapi_schemas import accepted_headers, responses, success, wait_query
from gateway.resources.common import (
    STATUSES,
    base_url,
    composition_view,
    json_body,
    settle,
    wait_for,
    wait_seconds,
)
from jobs import engine
from jobs.gpu import prompts
from jobs.models import Composition
from jobs.queues import gpu_queue, queue_name

MTYPES = {"generate-image": "image", "generate-video": "video", "run-project": "image"}
TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")

# --- OpenAPI schemas (seed 003 objects) ----------------------------------------------------

NULL_STR = {"type": ["string", "null"]}
GENERATION_STATUS = {
    "type": "object",
    "required": ["imageID", "status", "ignoredWords", "mtype"],
    "properties": {
        "imageID": {"type": "string", "description": "The item id (the composition uid)."},
        "folderID": {**NULL_STR, "description": "The folderID sent with the request."},
        "status": {"enum": list(STATUSES)},
        "ignoredWords": {"type": "string",
                         "description": "Prompt words past the model's text window."},
        "mtype": {"enum": ["image", "video"]},
        "url": {**NULL_STR, "description": "The image (or video file) once completed."},
        "urls": {"type": "array", "items": {"type": "string"},
                 "description": "Every image of a batch (videos: every file format)."},
        "queuePosition": {"type": ["integer", "null"], "minimum": 1},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "frames": {"type": "array", "description": "Videos only.", "items": {
            "type": "object", "required": ["frameCount", "frameNumber", "frameUrl"],
            "properties": {"frameCount": {"type": "integer"},
                           "frameNumber": {"type": "integer"},
                           "frameUrl": {"type": "string"}}}},
        "error": {"type": ["object", "null"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"}}},
        "txnReceipt": NULL_STR,
        "refundReceipt": NULL_STR,
    },
}
MODEL = {"type": "object", "required": ["modelID", "name", "mediaType"], "properties": {
    "modelID": {"type": "string"}, "name": {"type": "string"},
    "description": {"type": "string"}, "mediaType": {"type": "string"},
    "minSteps": {"type": "integer"}, "maxSteps": {"type": "integer"},
    "allowedWidths": {"type": "array", "items": {"type": "integer"}},
    "allowedHeights": {"type": "array", "items": {"type": "integer"}},
    "maxResolution": {"type": "integer"},
    "defaultResolution": {"type": "array", "items": {"type": "integer"}},
    "allowedSamplers": {"type": "array", "items": {"type": "string"}},
    "defaultSampler": {"type": "string"}, "minCfgScale": {"type": "number"},
    "maxCfgScale": {"type": "number"}}}
QUEUE = {"type": "object", "required": ["modelID", "queueID", "queueLength"], "properties": {
    "modelID": {"type": "string"}, "queueID": {"type": "string"},
    "queueLength": {"type": "integer", "minimum": 0}}}
PROMPT = {"type": "object", "required": ["positivePrompt"], "properties": {
    "positivePrompt": {"type": "string"}, "negativePrompt": {"type": "string"}}}

ACCEPTED_HEADERS = accepted_headers("GET /getItemStatus?imageID=... to poll")


GENERATE_RESPONSES = responses("post", {
    "200": success("The item already ended (status completed, failed or cancelled)",
                   GENERATION_STATUS),
    "202": success("Accepted: queued or running; poll GET /getItemStatus?imageID=",
                   GENERATION_STATUS, ACCEPTED_HEADERS)})
WAIT_QUERY = wait_query("AIMG clients poll")
MODEL_IDS_QUERY = {"name": "modelIDs", "in": "query", "required": False,
                   "description": "Comma-separated model ids to keep (default: all).",
                   "schema": {"type": "string"}}


# --- GenerationStatus ------------------------------------------------------------------------


def status_url(req, config, uid) -> str:
    return f"{base_url(req, config)}/getItemStatus?imageID={uid}"


def generation_status(comp, req, config, redis) -> dict:
    """The seed-003 GenerationStatus of one generation composition: the composition JSON
    (``common.composition_view``) reshaped, plus the request's ``folderID`` and ``mtype``."""
    view = composition_view(comp, req, config, redis)
    mtype = MTYPES.get(view["action"], "image")
    try:
        folder = json.loads(comp.input).get("folderID")
    except (TypeError, ValueError, AttributeError):
        folder = None
    outputs = view["outputs"]
    images = [o for o in outputs if o.get("type") == "image"]
    videos = [o for o in outputs if o.get("type") == "video"]
    frames = sorted((o for o in outputs if o.get("type") == "frame"),
                    key=lambda o: o.get("frameNumber", 0))
    files = images if mtype == "image" else videos
    ignored = next((o.get("ignoredWords") for o in outputs if o.get("ignoredWords")), "")
    if isinstance(ignored, list):
        ignored = " ".join(map(str, ignored))
    out = {
        "imageID": view["uid"],
        "folderID": folder,
        "status": view["status"],
        "ignoredWords": ignored or "",
        "mtype": mtype,
        "url": files[0]["url"] if files else None,
        "urls": [o["url"] for o in files],
        "queuePosition": view.get("queuePosition"),
        "progress": view["progress"],
        "error": view["error"],
        "txnReceipt": view["txnReceipt"],
        "refundReceipt": view["refundReceipt"],
    }
    if mtype == "video":
        count = len(frames)
        out["frames"] = [{"frameCount": o.get("frameCount", count),
                          "frameNumber": o.get("frameNumber", i), "frameUrl": o["url"]}
                         for i, o in enumerate(frames)]
    return out


def answer_status(req, resp, comp, config, redis, status=None, **meta):
    """200 when the item ended, 202 (with Location and Retry-After) while it waits or runs
    (or ``status``: a generation call's, decided by ``settle``)."""
    data = generation_status(comp, req, config, redis)
    if status is None:
        status = 200 if comp.status in Composition.FINAL else 202
    if status == 202:
        resp.set_header("Location", status_url(req, config, comp.uid))
        resp.set_header("Retry-After", "2")
    ok(req, resp, data, status, **meta)


def _model_ids(req) -> list[str] | None:
    raw = req.get_param("modelIDs")
    if raw is None or not raw.strip():
        return None
    return [m.strip() for m in raw.split(",") if m.strip()]


def _filtered(catalogue, ids):
    return [m for m in catalogue if ids is None or m.id in ids]


# --- resources ------------------------------------------------------------------------------


class Generate:
    """Shared by /generateImage and /generateVideo: run the action, answer GenerationStatus."""

    scope = "actions:run"
    openapi_tag = "AIMG"
    openapi_query = {"post": [WAIT_QUERY]}
    openapi_responses = GENERATE_RESPONSES
    openapi_idempotent = True  # the same key as on the action route is the same request
    action = ""

    def __init__(self, deps):
        self.deps = deps
        self.config, self.redis, self.slots = deps.config, deps.redis, deps.wait_slots
        if self.action in deps.registry:  # the body is the action's own input schema
            self.openapi_body = {"post": deps.registry.get(self.action).json_schema()}

    def on_post(self, req, resp):
        body = json_body(req)
        wait = wait_seconds(req, 0)
        # The action route's path: the same Idempotency-Key on either route is one request.
        outcome = self.deps.actions.run(
            req.context.caller, self.action, body,
            idempotency_key=req.get_header("Idempotency-Key"),
            request_id=req.context.request_id, method="POST",
            path=f"/zapier/v1/{self.action}")
        if outcome.replayed:
            resp.set_header("Idempotent-Replayed", "true")
            metrics.IDEMPOTENT_REPLAYS.inc()
        elif outcome.meta.get("txnReceipt"):
            metrics.DEBITS.labels(self.action).inc()
            metrics.CREDITS_DEBITED.labels(self.action).inc(outcome.meta["creditsUsed"])
        if outcome.composition_uid is None:  # not an asynchronous action: its own answer
            ok(req, resp, outcome.data, outcome.status, **outcome.meta)
            return
        comp, status = settle(self.slots, self.redis, self.config.redis_prefix,
                              req.context.caller, outcome, wait)
        answer_status(req, resp, comp, self.config, self.redis, status, **outcome.meta)


class GenerateImage(Generate):
    """Generate an image (AIMG): runs the generate-image action, answers a GenerationStatus.

    Body fields as the generate-image action (prompt, negprompt, modelName, steps, seed,
    subseed, subseed_strength, height, width, sampler, cfgscale, restoreFaces, folderID,
    batchSize); the same price, debit, refund and Idempotency-Key as POST
    /zapier/v1/generate-image. Answers 202 while queued or running (default wait 0), then
    poll GET /getItemStatus?imageID=."""

    action = "generate-image"


class GenerateVideo(Generate):
    """Generate a video (AIMG): runs the generate-video action, answers a GenerationStatus.

    Body fields as the generate-video action (the generate-image fields plus frames, fps,
    strength and format); the same price, debit, refund and Idempotency-Key as POST
    /zapier/v1/generate-video. When completed, url is the animated file and frames lists
    every frame (frameCount, frameNumber, frameUrl)."""

    action = "generate-video"


class ItemStatus:
    """The GenerationStatus of one of your items (AIMG getItemStatus).

    imageID is the id from /generateImage or /generateVideo (a composition uid). Another
    account's id, or a composition that is not a generation, is 404 NOT_FOUND."""

    scope = "actions:read"
    openapi_tag = "AIMG"
    openapi_query = {"get": [
        {"name": "imageID", "in": "query", "required": True, "schema": {"type": "string"}},
        WAIT_QUERY]}
    openapi_responses = responses("get", {
        "200": success("The item ended (completed, failed or cancelled)", GENERATION_STATUS),
        "202": success("Still queued or running", GENERATION_STATUS, ACCEPTED_HEADERS)})

    def __init__(self, deps):
        self.config, self.redis, self.slots = deps.config, deps.redis, deps.wait_slots

    def on_get(self, req, resp):
        uid = (req.get_param("imageID") or "").strip()
        if not uid:
            raise InvalidRequest("imageID is required",
                                 details=[{"field": "imageID", "problem": "is required"}])
        caller = req.context.caller
        seconds = wait_seconds(req, 0)
        comp = engine.get(caller.account_id, uid)  # 404 for another tenant's id
        if comp.action not in MTYPES:
            raise NotFound("No such item")
        if seconds:  # a slot-capped wait; over the cap, the current state at once
            comp = wait_for(self.slots, self.redis, self.config.redis_prefix, caller, uid,
                            seconds)
        answer_status(req, resp, comp, self.config, self.redis)


class Models:
    """The generation models and their limits (AIMG getModels), in the operator's order."""

    scope = "actions:read"
    openapi_tag = "AIMG"
    openapi_query = {"get": [MODEL_IDS_QUERY]}
    openapi_responses = responses("get", {
        "200": success("Model objects", {"type": "array", "items": MODEL})})

    def __init__(self, deps):
        self.models = deps.actions.models

    def on_get(self, req, resp):
        ok(req, resp, [m.describe() for m in _filtered(self.models, _model_ids(req))])


class QueuesLength:
    """Jobs waiting in each model's generation queue (AIMG getQueuesLength).

    queueID is the model's queue; queueLength counts the jobs queued there, not the ones
    already running."""

    scope = "actions:read"
    openapi_tag = "AIMG"
    openapi_query = {"get": [MODEL_IDS_QUERY]}
    openapi_responses = responses("get", {
        "200": success("One entry per model", {"type": "array", "items": QUEUE})})

    def __init__(self, deps):
        self.models, self.config, self.redis = deps.actions.models, deps.config, deps.redis

    def on_get(self, req, resp):
        out = []
        for model in _filtered(self.models, _model_ids(req)):
            queue_id = gpu_queue(model.id)
            queue = Queue(queue_name(self.config, queue_id), connection=self.redis)
            out.append({"modelID": model.id, "queueID": queue_id, "queueLength": queue.count})
        ok(req, resp, out)


class SamplePrompts:
    """Sample prompts (AIMG getSamplePrompts); randomOne=true returns one at random."""

    scope = "actions:read"
    openapi_tag = "AIMG"
    openapi_query = {"get": [{"name": "randomOne", "in": "query", "required": False,
                              "schema": {"type": "boolean", "default": False}}]}
    openapi_responses = responses("get", {
        "200": success("Prompt objects", {"type": "array", "items": PROMPT})})

    def on_get(self, req, resp):
        given = req.get_param("randomOne")  # absent: false; present, it must say which
        raw = "false" if given is None else given.strip().lower()
        if raw not in TRUE + FALSE:
            raise InvalidRequest("randomOne must be true or false",
                                 details=[{"field": "randomOne", "problem": "must be a boolean"}])
        ok(req, resp, [prompts.random_prompt()] if raw in TRUE else prompts.sample_prompts())
