"""``generate-video`` (seed 003 "Generate Video"): a short clip from a prompt on a GPU worker.

The clip is made by image-to-image chaining (``jobs.gpu.pipeline.generate_frames``): frame
0 is a text-to-image picture with ``seed``; frame n is frame n-1 re-denoised at
``strength`` with seed ``seed + n``. The frames are returned as PNGs and assembled into an
animated WebP and/or an H.264 MP4.

Priced by the denoising work it asks for: the first frame counts ``steps`` steps, each
further frame ``int(steps x strength)`` (what image-to-image really runs), in reference
units of one 512x512 image at 20 steps, x the model's price factor (rounded up, at least
1 credit). Checked against the model's limits before anything is charged; a failed,
timed-out or cancelled generation is refunded once.
"""

from __future__ import annotations

import io
import os
import tempfile

from actions import generation_common as gen
from actions.generate_image import image_request
from actions.registry import Action, Field
from jobs.context import JobContext
from jobs.queues import gpu_queue

FORMATS = ("webp", "mp4", "both")
# Seed 003 lists these without saying what they do: accepted as fields, refused when set.
UNSUPPORTED = ("input", "controlNetPreset")


def i2i_steps(steps, strength) -> int:
    """Denoising steps image-to-image runs per frame after the first (as diffusers does)."""
    return int(steps * strength)


def precheck(data, service):
    problems = [{"field": name, "problem": "not supported by this gateway; leave it out or "
                 "send an empty value"} for name in UNSUPPORTED if data.get(name)]
    try:
        spec = gen.resolve_model(data, service)
    except gen.InvalidRequest as exc:
        if not problems:
            raise
        problems += exc.details or [{"field": "modelName", "problem": exc.message}]
        spec = None
    if spec is not None:
        frames = data["frames"]
        if not 2 <= frames <= spec.max_frames:
            problems.append({"field": "frames",
                             "problem": f"must be 2-{spec.max_frames} for {spec.id}"})
        if i2i_steps(data["steps"], data["strength"]) < 1:
            problems.append({"field": "strength", "problem": "steps x strength must be at "
                             "least 1 (each frame after the first is re-denoised for "
                             "int(steps x strength) steps); raise steps or strength"})
    if problems:
        raise gen.InvalidRequest("; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                                 details=problems)
    return data


def pricing(data, base, service) -> int:
    spec = service.models.get(data.get("modelName"))
    width, height, steps = data["width"], data["height"], data["steps"]
    units = (gen.reference_units(width, height, steps)
             + gen.reference_units(width, height, i2i_steps(steps, data["strength"]),
                               data["frames"] - 1))
    return gen.credits_for(base, units, spec.price_factor)


def animated_webp(images, fps) -> bytes:
    buffer = io.BytesIO()
    first, *rest = [im.convert("RGB") for im in images]
    first.save(buffer, "WEBP", save_all=True, append_images=rest,
               duration=max(1, round(1000 / fps)), loop=0, quality=90, method=4)
    return buffer.getvalue()


def mp4(images, fps) -> bytes:
    """H.264 (yuv420p) MP4; sizes are multiples of 8 (the catalogue enforces it), so a
    macro block of 2 keeps every size exact instead of rescaling to multiples of 16."""
    import imageio_ffmpeg

    width, height = images[0].size
    with tempfile.TemporaryDirectory(prefix="gw-video-") as folder:
        path = os.path.join(folder, "clip.mp4")
        writer = imageio_ffmpeg.write_frames(
            path, (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=2, quality=8, ffmpeg_log_level="error",
            output_params=["-movflags", "+faststart"])
        writer.send(None)
        try:
            for image in images:
                writer.send(image.convert("RGB").tobytes())
        finally:
            writer.close()
        with open(path, "rb") as handle:
            return handle.read()


def perform(ctx: JobContext, data: dict) -> dict:
    from jobs.gpu.pipeline import generate_frames

    spec = ctx.models.get(data["modelName"])
    ctx.progress(1)
    ctx.pipelines.get(spec)
    ctx.progress(5)
    frames, fps, seed = data["frames"], data["fps"], data["seed"]
    images = generate_frames(ctx.pipelines, spec, image_request({**data, "batchSize": 1}),
                             frames, gen.step_reporter(ctx, 5, 85),
                             strength=float(data["strength"]))
    width, height = images[0].size
    frame_outputs = []
    for n, image in enumerate(images):
        url = ctx.save(f"frame-{n:03d}.png", gen.png(image))
        frame_outputs.append({"type": "frame", "format": "png", "url": url, "width": width,
                              "height": height, "frameNumber": n, "frameCount": frames,
                              "seed": seed + n})
    ctx.progress(92)
    wanted = ("webp", "mp4") if data["format"] == "both" else (data["format"],)
    encoders = {"webp": animated_webp, "mp4": mp4}
    videos = []
    for fmt in wanted:
        url = ctx.save(f"video.{fmt}", encoders[fmt](images, fps))
        videos.append({"type": "video", "format": fmt, "url": url, "width": width,
                       "height": height, "frameCount": frames, "fps": fps, "seed": seed,
                       "model": spec.id})
        ctx.progress(96)
    posts = [{"cardPoster": frame_outputs[0]["url"], "deliverable": videos[0],
              "platform": "web", "postFormat": "video", "contentType": "generated-video",
              "searchText": data["prompt"][:500]}]
    return {"outputs": videos + frame_outputs, "posts": posts}


ACTION = Action(
    name="generate-video",
    title="Generate video",
    description="Generates a short clip from a prompt on a GPU worker by image-to-image "
                "chaining (AIMG parameters): an animated WebP and/or MP4 plus every frame as "
                "a PNG. Priced by the denoising work; refunded if it fails or is cancelled.",
    price=2,
    mode="async",
    ttl_s=900,
    queue="gpu",
    queue_for=lambda data: gpu_queue(data["modelName"]),
    precheck=precheck,
    pricing=pricing,
    pricing_doc="base credits x (width x height / 512x512) x (steps + (frames - 1) x "
                "int(steps x strength)) / 20 x the model's priceFactor, rounded up, at least "
                "1: the first frame runs steps denoising steps, each further frame "
                "int(steps x strength)",
    fields=(
        *gen.PROMPT_FIELDS,
        *gen.SIZE_FIELDS,
        Field("frames", type="integer", minimum=2, default=8,
              help="Frames in the clip, 2 to the model's maxFrames (GET /getModels); "
                   "default 8."),
        Field("fps", type="integer", minimum=1, maximum=30, default=8, label="FPS",
              help="Frames per second of the animation, 1-30 (default 8)."),
        Field("strength", type="number", minimum=0.1, maximum=0.9, default=0.45,
              help="How much each frame changes from the previous one, 0.1-0.9 (default "
                   "0.45); each further frame is re-denoised for int(steps x strength) "
                   "steps."),
        Field("format", choices=FORMATS, default="both",
              help="Animated output: webp, mp4 or both (default). The frames always come "
                   "back as PNGs too."),
        Field("input", max_length=2048,
              help="Not supported by this gateway: any non-empty value is refused."),
        Field("controlNetPreset", max_length=200, label="ControlNet preset",
              help="Not supported by this gateway: any non-empty value is refused."),
    ),
    perform=perform,
)
