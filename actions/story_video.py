"""``story-video`` (seed 001 ``POST /video``): a narrated, illustrated, subtitled story MP4.

Stages on one GPU-queue job, each with its share of the progress: write the story
(``actions.story.writer``), split it into scenes, one image per scene through the
generation pipeline with the art style in the prompt, narration per scene
(``actions.story.speech``), subtitles timed to the narration, and the MP4 with its audio
track. The story and its scenes are visible while it runs (``GET /video/tasks/{id}``);
images, video and subtitles land in the content library (subtitles as output files).

Priced from its inputs: scenes x (one scene image at generate-image's price for the story
model's size + this action's base price for the scene's narration), so the estimate is
the debit; a failed, timed-out or cancelled task is refunded once.
"""

from __future__ import annotations

from actions import generation_common as gen
from actions.registry import Action, Field
from actions.story import options, pipeline
from actions.story.writer import Brief, Written, split_scenes, writer_for
from core.errors import InvalidRequest
from core.ids import new_id
from jobs.context import JobContext
from jobs.queues import gpu_queue
from jobs.stories import Story, StoryScene
from metering.db import write_transaction

# progress at the start of each stage (``narration`` includes the subtitles)
STAGES = {"writing": 1, "scenes": 8, "images": 10, "narration": 70, "video": 90}


def precheck(data, service):
    topic, custom = data["story_topic"], (data.get("custom_topic") or "").strip()
    if topic == options.CUSTOM and not custom:
        raise InvalidRequest("custom_topic: is required when story_topic is custom topic",
                             details=[{"field": "custom_topic",
                                       "problem": "is required when story_topic is "
                                                  "'custom topic'"}])
    if custom and topic != options.CUSTOM:
        raise InvalidRequest("custom_topic: only with story_topic custom topic",
                             details=[{"field": "custom_topic",
                                       "problem": "only allowed when story_topic is "
                                                  "'custom topic'"}])
    data["custom_topic"] = custom
    # fixed before the debit, so the composition records what it will make and a replay
    # of the same request is the same job
    data.update(pipeline.image_settings(service.models, service.config))
    if data.get("seed") is None:
        data["seed"] = gen.secrets.randbelow(gen.SEED_MAX + 1)
    return data


def pricing(data, base, service) -> int:
    scenes, _ = options.DURATIONS[data["duration"]]
    return scenes * (pipeline.image_price(service, data) + base)


def record(comp, data, private):
    """The story row, in the debit's transaction: visible from the first poll."""
    Story.create(uid=comp.uid, account=comp.account_id, topic=data["story_topic"],
                 custom_topic=data["custom_topic"], art_style=data["art_style"],
                 duration=data["duration"], language=data["language"],
                 voice_name=data["voice_name"], created_at=comp.created_at,
                 updated_at=comp.created_at)


def _stage(ctx, name):
    ctx.progress(STAGES[name])
    Story.update(stage=name, updated_at=ctx.now()).where(Story.uid == ctx.uid).execute()


def _write(ctx, data, scenes, per_scene):
    """Write the story and split it into scene rows (one transaction): ``(written, texts,
    rows)``."""
    _stage(ctx, "writing")
    written = writer_for(ctx.config).write(Brief(
        topic=data["story_topic"], custom_topic=data["custom_topic"],
        language=data["language"], scenes=scenes, sentences=per_scene, seed=data["seed"]))
    _stage(ctx, "scenes")
    texts = split_scenes(written.text, scenes)
    now = ctx.now()
    with write_transaction():
        Story.update(title=written.title, description=written.description,
                     text=written.text, updated_at=now).where(Story.uid == ctx.uid).execute()
        rows = [StoryScene.create(
            id=new_id("img", 10), story=ctx.uid, account=ctx.account_id, position=n,
            text=text, prompt=pipeline.prompt_for(data["art_style"], text),
            seed=(data["seed"] + n) % (gen.SEED_MAX + 1), task_uid=ctx.uid, created_at=now,
            updated_at=now) for n, text in enumerate(texts)]
    return written, texts, rows


def perform(ctx: JobContext, data: dict) -> dict:
    """Every stage, or (resumed after a lost worker, ``resumable``) the ones still to do:
    a story already written is not written again, and a scene whose image is in the
    content library is read back instead of generated again."""
    scenes, per_scene = options.DURATIONS[data["duration"]]
    story = Story.get_by_id(ctx.uid)
    rows = list(StoryScene.select().where(StoryScene.story == ctx.uid)
                .order_by(StoryScene.position))
    if story.text and len(rows) == scenes:  # resumed: written and split before
        written = Written(title=story.title, description=story.description, text=story.text)
        texts = [row.text for row in rows]
    else:
        written, texts, rows = _write(ctx, data, scenes, per_scene)
    done = [row.status == StoryScene.COMPLETED and bool(row.content_id) for row in rows]
    if not all(done):  # (a run resumed at the narration has no image left to make)
        _stage(ctx, "images")
    images, outputs = [], []
    span = STAGES["narration"] - STAGES["images"]
    for n, row in enumerate(rows):
        if done[n]:  # made before a resume
            image, url = pipeline.load_image(ctx, row), row.image_url
        else:
            StoryScene.update(status=StoryScene.RUNNING, updated_at=ctx.now()).where(
                StoryScene.id == row.id).execute()
            base = STAGES["images"] + span * n // scenes
            image = pipeline.generate(ctx, data, row.prompt, row.seed,
                                      gen.step_reporter(ctx, base, span // scenes))
            saved = pipeline.save_image(ctx, f"scene-{n + 1:02d}.png", image)
            url = saved["url"]
            StoryScene.update(status=StoryScene.COMPLETED, image_url=url,
                              content_id=saved["contentId"], updated_at=ctx.now()).where(
                StoryScene.id == row.id).execute()
        images.append(image)
        outputs.append({"type": "image", "format": "png", "url": url,
                        "width": image.width, "height": image.height, "imageId": row.id,
                        "scene": n + 1, "seed": row.seed})
    _stage(ctx, "narration")
    video, timed, summary = pipeline.render(ctx, Story.get_by_id(ctx.uid), texts, images,
                                            STAGES["narration"], 99 - STAGES["narration"],
                                            on_video=lambda: _stage(ctx, "video"))
    pipeline.record_render(ctx.uid, timed, summary, ctx.now())
    posts = [{"cardPoster": outputs[0]["url"], "deliverable": video[0], "platform": "web",
              "postFormat": "video", "contentType": "story-video",
              "searchText": f"{written.title}. {written.description}"[:500]}]
    return {"outputs": video + outputs, "posts": posts}


ACTION = Action(
    name="story-video",
    title="Story video",
    description="Writes a short story on a topic, illustrates each scene in an art style, "
                "narrates it in a language and voice, and assembles a subtitled MP4 (seed "
                "001 POST /video). Priced per scene; refunded if it fails or is cancelled.",
    price=1,
    mode="async",
    ttl_s=1800,
    queue="gpu",
    queue_for=lambda data: gpu_queue(data["modelName"]),
    precheck=precheck,
    pricing=pricing,
    pricing_doc="scenes (short 4, long 10) x (one scene image at generate-image's price for "
                "the story model's default size and steps + base credits for its "
                "narration)",
    record=record,
    fields=(
        Field("story_topic", required=True, choices=options.TOPICS, label="Story topic",
              help="What the story is about; 'custom topic' takes custom_topic."),
        Field("custom_topic", max_length=200, label="Custom topic",
              help="Your own topic, with story_topic 'custom topic' only."),
        Field("art_style", required=True, choices=tuple(options.ART_STYLES),
              label="Art style", help="The style of every scene image."),
        Field("duration", required=True, choices=tuple(options.DURATIONS),
              help="short: 4 scenes; long: 10 scenes."),
        Field("language", required=True, choices=tuple(options.LANGUAGES),
              help="The narration language."),
        Field("voice_name", required=True, choices=tuple(options.VOICES), label="Voice",
              help="The narration voice."),
        Field("seed", type="integer", minimum=0, maximum=gen.SEED_MAX,
              help="Same seed and options -> the same story and images; absent: random."),
    ),
    perform=perform,
    resumable=True,
)
