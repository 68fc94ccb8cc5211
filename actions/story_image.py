"""``story-image`` (seed 001 ``POST /images/{image_id}``): regenerate one scene image of a
story video with a new seed, then re-render the video with it.

Paid on its own (its own receipt): one scene image at generate-image's price for the
story's model and size + this action's base price for the re-render. Accepted only for
the caller's own scene (another account's image id is 404) of a completed video, one
regeneration per video at a time (409 otherwise, nothing charged). The scene keeps its
old image unless the whole re-render succeeds; a failure is refunded once.
"""

from __future__ import annotations

import json

from actions import generation_common as gen
from actions.registry import Action, Field
from actions.story import pipeline
from core.errors import Conflict
from jobs.context import JobContext
from jobs.models import Composition
from jobs.queues import gpu_queue
from jobs.stories import Story, StoryScene, check_regenerable, claim_render, own_scene, scenes_of


def _settings(scene) -> dict:
    """The image settings its story was made with (not today's STORY_IMAGE_MODEL)."""
    made = json.loads(Composition.get_by_id(scene.story_id).input)
    return {k: made[k] for k in ("modelName", "width", "height", "steps", "sampler",
                                 "cfgscale", "batchSize")}


def precheck(data, service, account_id):
    scene = own_scene(account_id, data["image_id"])  # 404 for anyone else's
    check_regenerable(scene)
    data.update(_settings(scene))
    if data.get("seed") is None:
        data["seed"] = gen.secrets.randbelow(gen.SEED_MAX + 1)
    return data


def pricing(data, base, service) -> int:
    return pipeline.image_price(service, data) + base


def record(comp, data, private):
    """Claim the story's one re-render in the debit's transaction (refused: no debit)."""
    scene = StoryScene.get_by_id(data["image_id"])
    if not claim_render(scene.story_id, comp.uid):
        raise Conflict("Another image of this video is being regenerated; try again when "
                       "it has ended")


def perform(ctx: JobContext, data: dict) -> dict:
    scene = StoryScene.get_by_id(data["image_id"])
    story = Story.get_by_id(scene.story_id)
    scenes = scenes_of(story.uid)
    ctx.progress(1)
    image = pipeline.generate(ctx, data, scene.prompt, data["seed"],
                              gen.step_reporter(ctx, 5, 45))
    saved = pipeline.save_image(ctx, f"scene-{scene.position + 1:02d}.png", image)
    ctx.progress(50)
    images = [image if s.id == scene.id else pipeline.load_image(ctx, s) for s in scenes]
    video, timed, summary = pipeline.render(ctx, story, [s.text for s in scenes], images,
                                            55, 44)
    now = ctx.now()
    # the new image becomes the scene's only with the video that shows it
    pipeline.record_render(story.uid, timed, summary, now, (scene.id, {
        "image_url": saved["url"], "content_id": saved["contentId"], "seed": data["seed"],
        "task_uid": ctx.uid, "status": StoryScene.COMPLETED}))
    out = {"type": "image", "format": "png", "url": saved["url"], "width": image.width,
           "height": image.height, "imageId": scene.id, "scene": scene.position + 1,
           "seed": data["seed"], "videoTaskId": story.uid}
    return {"outputs": [out, *video]}


ACTION = Action(
    name="story-image",
    title="Regenerate story image",
    description="Regenerates one scene image of a completed story video (seed 001 POST "
                "/images/{image_id}) with a new seed and re-renders the video; its own "
                "debit and receipt, refunded if it fails.",
    price=1,
    mode="async",
    ttl_s=900,
    queue="gpu",
    queue_for=lambda data: gpu_queue(data["modelName"]),
    precheck=precheck,
    precheck_account=True,
    pricing=pricing,
    pricing_doc="one scene image at generate-image's price for the story's model and size "
                "+ base credits for the re-render",
    record=record,
    fields=(
        Field("image_id", required=True, max_length=200, label="Image ID",
              help="The scene image to regenerate (images[].id of GET /video/tasks/{id})."),
        Field("seed", type="integer", minimum=0, maximum=gen.SEED_MAX,
              help="The new image's seed; absent: random."),
    ),
    perform=perform,
)
