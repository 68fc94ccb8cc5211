"""The worker-side stages both story actions share: the scene images through the
generation pipeline, and rendering (narration, subtitles, MP4) into the content library.

Images are made with the operator's model catalogue (``STORY_IMAGE_MODEL``, else its first
model) at the model's default size and steps, so a scene image costs what a
``generate-image`` call of that size costs (``image_request``, ``image_price``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile

from actions import generation_common as gen
from actions.story import timeline
from actions.story.options import ART_STYLES
from actions.story.speech import backend_for, wav_bytes
from actions.story.writer import StoryFailed
from core.errors import NotFound
from jobs.stories import Story, StoryScene
from metering.db import write_transaction


def image_settings(models, config) -> dict:
    """The generate-image input every scene image of a new story uses (its seed aside)."""
    spec = models.get(config.story_image_model or None, field="story_image_model")
    if spec.kind != "text-to-image":
        raise gen.InvalidRequest(f"STORY_IMAGE_MODEL {spec.id} is not a text-to-image model")
    width, height = spec.default_resolution
    return {"modelName": spec.id, "width": width, "height": height,
            "steps": spec.default_steps, "sampler": spec.default_sampler,
            "cfgscale": spec.default_cfg, "batchSize": 1}


def image_price(service, settings: dict) -> int:
    """One scene image's credits: generate-image's price for the same model and size."""
    images = service.registry.get("generate-image")
    return service.quote(images, {**settings, "prompt": "story scene"})


def prompt_for(art_style: str, text: str) -> str:
    return f"{ART_STYLES[art_style]}: {text}"


def generate(ctx, settings: dict, prompt: str, seed: int, on_step=None):
    """One picture from the generation pipeline (jobs.gpu), as a PIL image."""
    from actions.generate_image import image_request
    from jobs.gpu.pipeline import generate_images

    spec = ctx.models.get(settings["modelName"])
    request = image_request({**settings, "prompt": prompt, "seed": seed, "negprompt": ""})
    return generate_images(ctx.pipelines, spec, [request], on_step)[0][0]


def save_image(ctx, name: str, image) -> dict:
    """A scene image into the account's content library: ``{url, contentId}``."""
    saved = ctx.library.save_output(ctx.account_id, ctx.uid, name, data=gen.png(image))
    if saved is None:  # a PNG is always accepted; anything else is a bug
        raise StoryFailed("IMAGE_NOT_SAVED", "A scene image could not be stored")
    return saved


def load_image(ctx, scene: StoryScene):
    """A scene's current image, read back from the content library for a re-render."""
    from PIL import Image

    try:
        item = ctx.library.get_for(ctx.account_id, scene.content_id)
    except NotFound:
        raise StoryFailed("IMAGE_MISSING", f"The image of scene {scene.position + 1} was "
                          "deleted from the content library; the video cannot be re-rendered"
                          ) from None
    image = Image.open(io.BytesIO(b"".join(ctx.library.open(item))))
    image.load()
    return image.convert("RGB")


def render(ctx, story: Story, texts: list[str], images: list, start: int, span: int,
           on_video=None):
    """Narrate each scene, time the subtitles to the narration, assemble the MP4 and save
    it with its subtitles (``on_video()`` is called as the assembly starts). Returns
    ``(outputs, per-scene (slot, cues), summary)``; writes nothing to the story's row (the
    caller does, with the rest of its stage)."""
    speaker = backend_for(ctx.config)
    speeches = []
    for n, text in enumerate(texts):
        speeches.append(speaker.synthesize(text, story.language, story.voice_name))
        ctx.progress(start + span * (n + 1) * 4 // (10 * len(texts)))
    slots = timeline.slots(speeches)
    track = timeline.narration_track(speeches, slots)
    per_scene = [(slot, timeline.cues(text, slot)) for text, slot in zip(texts, slots,
                                                                         strict=True)]
    every_cue = [c for _, scene_cues in per_scene for c in scene_cues]
    vtt = ctx.save("subtitles.vtt", timeline.vtt(every_cue).encode())
    srt = ctx.save("subtitles.srt", timeline.srt(every_cue).encode())
    ctx.progress(start + span // 2)
    if on_video is not None:
        on_video()
    data = mp4(images, slots, wav_bytes(track))
    ctx.progress(start + span * 9 // 10)
    width, height = images[0].size
    duration_ms = slots[-1].end_ms
    url = ctx.save("story.mp4", data)
    outputs = [{"type": "video", "format": "mp4", "url": url, "width": width,
                "height": height, "durationMs": duration_ms, "fps": timeline.FPS,
                "audio": True, "scenes": len(texts)},
               {"type": "subtitles", "format": "vtt", "url": vtt},
               {"type": "subtitles", "format": "srt", "url": srt}]
    summary = {"video_url": url, "subtitles": json.dumps({"vtt": vtt, "srt": srt}),
               "duration_ms": duration_ms}
    return outputs, per_scene, summary


def mp4(images, slots, wav: bytes) -> bytes:
    """H.264 + AAC: each scene's image held for its slot (whole frames), over the track."""
    import imageio_ffmpeg

    width, height = images[0].size
    with tempfile.TemporaryDirectory(prefix="gw-story-") as folder:
        audio, path = os.path.join(folder, "narration.wav"), os.path.join(folder, "story.mp4")
        with open(audio, "wb") as handle:
            handle.write(wav)
        writer = imageio_ffmpeg.write_frames(
            path, (width, height), fps=timeline.FPS, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=2, quality=8, ffmpeg_log_level="error", audio_path=audio,
            audio_codec="aac", output_params=["-movflags", "+faststart"])
        writer.send(None)
        try:
            for image, slot in zip(images, slots, strict=True):
                frame = image.convert("RGB").resize((width, height)).tobytes()
                for _ in range(slot.frames):
                    writer.send(frame)
        finally:
            writer.close()
        with open(path, "rb") as handle:
            return handle.read()


def record_render(story_uid: str, per_scene, summary: dict, now, scene_changes=None) -> None:
    """Write a finished render to the story and its scenes in one transaction (with a
    regenerated scene's new image, ``scene_changes`` = ``(scene_id, fields)``)."""
    scenes = {s.position: s for s in StoryScene.select().where(StoryScene.story == story_uid)}
    with write_transaction():
        for position, (slot, scene_cues) in enumerate(per_scene):
            fields = {"start_ms": slot.start_ms, "end_ms": slot.end_ms,
                      "subtitles": timeline.vtt_cues(scene_cues), "updated_at": now}
            if scene_changes and scenes[position].id == scene_changes[0]:
                fields.update(scene_changes[1])
            StoryScene.update(fields).where(StoryScene.id == scenes[position].id).execute()
        Story.update(stage="done", updated_at=now, **summary).where(
            Story.uid == story_uid).execute()
