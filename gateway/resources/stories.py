"""Story-video routes (seed 001; docs/STORY.md): ``POST /video``, ``GET /video/tasks/{id}``,
``GET /images/tasks/{id}``, ``POST /images/{image_id}``.

Thin aliases: the POSTs run the ``story-video`` and ``story-image`` actions through the
same ``ActionService.run`` as ``POST /zapier/v1/{action}`` (validation against the seed's
option lists, price, debit, idempotency, ``meta``); the task views are read from the
story, its scenes and its composition. Only the shapes inside ``data`` are the seed's.
"""

from __future__ import annotations

from gateway import metrics
from gateway.envelope import ok
from gateway.openapi_schemas import accepted_headers, responses, success, wait_query
from gateway.resources.common import base_url, json_body, settle, wait_seconds
from jobs import stories

# --- OpenAPI (seed 001 objects inside the envelope) -----------------------------------------
ACCEPTED_HEADERS = accepted_headers("The task route to poll")
WAIT_QUERY = wait_query("seed 001 clients poll the task route")


NULL_STR = {"type": ["string", "null"]}
STATUS = {"enum": ["queued", "running", "completed", "failed", "cancelled"]}
IMAGE = {"type": "object", "required": ["id", "status", "urls", "subtitles"], "properties": {
    "id": {"type": "string"}, "status": {"enum": ["pending", "running", "completed", "failed"]},
    "urls": {"type": "array", "items": {"type": "string"}},
    "subtitles": {"type": "string", "description": "This scene's WebVTT cues, timed in the "
                                                   "video"},
    "position": {"type": "integer"}, "text": {"type": "string"},
    "start_ms": {"type": "integer"}, "end_ms": {"type": "integer"},
    "task_id": {"type": "string", "description": "The task that made the current image"},
    "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}
TASK = {"type": "object", "required": ["task_id", "status"], "properties": {
    "task_id": {"type": "string"}, "status": STATUS}}
VIDEO_TASK = {"type": "object", "required": ["task_id", "status", "progress", "images"],
              "properties": {
                  "task_id": {"type": "string"}, "status": STATUS,
                  "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                  "stage": {"enum": ["queued", "writing", "scenes", "images", "narration",
                                     "video", "done"]},
                  "url": {**NULL_STR, "description": "The MP4 (H.264 + AAC) once made"},
                  "subtitles": {"type": "object", "properties": {"vtt": {"type": "string"},
                                                                 "srt": {"type": "string"}}},
                  "duration_ms": {"type": "integer"},
                  "story_title": {"type": "string"}, "story_description": {"type": "string"},
                  "story_text": {"type": "string"}, "error_message": NULL_STR,
                  "options": {"type": "object"},
                  "images": {"type": "array", "items": IMAGE},
                  "txnReceipt": NULL_STR, "refundReceipt": NULL_STR,
                  "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}
IMAGE_TASK = {"type": "object", "required": ["task_id", "status", "images"], "properties": {
    "task_id": {"type": "string"}, "status": STATUS, "progress": {"type": "integer"},
    "video_task_id": {"type": "string"}, "story_text": {"type": "string"},
    "images": {"type": "array", "items": IMAGE}, "error_message": NULL_STR,
    "txnReceipt": NULL_STR, "refundReceipt": NULL_STR,
    "created_at": {"type": "string"}, "updated_at": {"type": "string"}}}
REGENERATED = {"type": "object", "required": ["task_id", "status", "urls"], "properties": {
    "task_id": {"type": "string"}, "status": STATUS, "image_id": {"type": "string"},
    "video_task_id": {"type": "string"}, "urls": {"type": "array", "items": {"type": "string"}},
    "progress": {"type": "integer"}, "created_at": {"type": "string"},
    "updated_at": {"type": "string"}}}


def _run(deps, req, action, body):
    """The action, run as ``POST /zapier/v1/{action}`` runs it (same Idempotency-Key)."""
    outcome = deps.actions.run(
        req.context.caller, action, body, idempotency_key=req.get_header("Idempotency-Key"),
        request_id=req.context.request_id, method="POST", path=f"/zapier/v1/{action}")
    if outcome.replayed:
        metrics.IDEMPOTENT_REPLAYS.inc()
    elif outcome.meta.get("txnReceipt"):
        metrics.DEBITS.labels(action).inc()
        metrics.CREDITS_DEBITED.labels(action).inc(outcome.meta["creditsUsed"])
    comp, status = settle(deps.wait_slots, deps.redis, deps.config.redis_prefix,
                          req.context.caller, outcome, wait_seconds(req, 0))
    return outcome, comp, status


def _answer(req, resp, deps, outcome, comp, status, data, location):
    """200 once the task ended, else 202 with where to poll (as every async route; a
    replay answers its first answer's status, ``settle``)."""
    if outcome.replayed:
        resp.set_header("Idempotent-Replayed", "true")
    if status == 202:
        resp.set_header("Location", f"{base_url(req, deps.config)}{location}")
        resp.set_header("Retry-After", "2")
    ok(req, resp, data, status, **outcome.meta)


class Video:
    """Generate a story video (seed 001): runs the story-video action, answers {task_id, status}.

    Body: story_topic, art_style, duration, language and voice_name from the seed's lists
    (custom_topic with story_topic "custom topic"; optional seed). Any other value is 400
    INVALID_REQUEST with details, and nothing is charged. Priced per scene (see GET
    /zapier/v1/actions or POST /zapier/v1/story-video/estimate); refunded if it fails or is
    cancelled (POST /zapier/v1/compositions/{task_id}/cancel). Answers 202 while queued or
    running (default wait 0); poll GET /video/tasks/{task_id}."""

    scope = "actions:run"
    openapi_tag = "Story videos"
    openapi_query = {"post": [WAIT_QUERY]}
    openapi_idempotent = True
    openapi_responses = responses("post", {
        "200": success("The task already ended", TASK),
        "202": success("Accepted: queued or running; poll GET /video/tasks/{task_id}", TASK,
                       ACCEPTED_HEADERS)})

    def __init__(self, deps):
        self.deps = deps
        self.openapi_body = {"post": deps.registry.get("story-video").json_schema()}

    def on_post(self, req, resp):
        outcome, comp, status = _run(self.deps, req, "story-video", json_body(req))
        _answer(req, resp, self.deps, outcome, comp, status,
                {"task_id": comp.uid, "status": comp.status}, f"/video/tasks/{comp.uid}")


class VideoTask:
    """A story video task (seed 001): progress, stage, story, images, subtitles and the MP4.

    Another account's task id is 404 NOT_FOUND, as is any id that is not a video task."""

    scope = "actions:read"
    openapi_tag = "Story videos"
    openapi_responses = responses("get", {"200": success("The video task", VIDEO_TASK)})

    def on_get(self, req, resp, task_id):
        ok(req, resp, stories.video_task(req.context.caller.account_id, task_id))


class ImageTask:
    """An image task (seed 001): a regeneration task and its image, or a video task's images.

    Another account's task id is 404 NOT_FOUND."""

    scope = "actions:read"
    openapi_tag = "Story videos"
    openapi_responses = responses("get", {"200": success("The image task", IMAGE_TASK)})

    def on_get(self, req, resp, task_id):
        ok(req, resp, stories.image_task(req.context.caller.account_id, task_id))


class ImageRegenerate:
    """Regenerate one scene image and re-render its video (seed 001): the story-image action.

    Metered on its own (its own txnReceipt): one scene image + the re-render. Optional
    body {seed, client_reference_id, callback_url}. 404 for another account's image id,
    409 while the video is not completed or another of its images is being regenerated
    (nothing charged).
    Answers 202 while running; poll GET /images/tasks/{task_id}; the video's url changes
    when it completes."""

    scope = "actions:run"
    openapi_tag = "Story videos"
    openapi_query = {"post": [WAIT_QUERY]}
    openapi_idempotent = True
    openapi_responses = responses("post", {
        "200": success("The regeneration already ended", REGENERATED),
        "202": success("Accepted; poll GET /images/tasks/{task_id}", REGENERATED,
                       ACCEPTED_HEADERS)})

    def __init__(self, deps):
        self.deps = deps
        schema = deps.registry.get("story-image").json_schema()  # image_id is in the path
        self.openapi_body = {"post": {
            **schema, "properties": {k: v for k, v in schema["properties"].items()
                                     if k != "image_id"}, "required": []}}

    def on_post(self, req, resp, image_id):
        body = {**json_body(req), "image_id": image_id}
        outcome, comp, status = _run(self.deps, req, "story-image", body)
        data = stories.regenerate_answer(req.context.caller.account_id, comp.uid)
        _answer(req, resp, self.deps, outcome, comp, status, data, f"/images/tasks/{comp.uid}")
