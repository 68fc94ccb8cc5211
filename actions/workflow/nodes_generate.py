"""Generation nodes: ``generate_image`` and ``image_to_image``, on the model's GPU queue.

They are the ``generate-image`` action inside a graph, not a second implementation of it:
the same model-limit checks (``generation_common.resolve_model`` and the action's
``precheck``), the same price (the action's base price x reference units x the model's
price factor) and the same pipeline call (``jobs.gpu.pipeline.generate_images``).
"""

from __future__ import annotations

import hashlib
import os

from PIL import Image, ImageOps

from actions import generation_common as gen
from actions.generate_image import image_request
from actions.generate_image import precheck as image_precheck
from actions.generate_video import i2i_steps
from actions.workflow.types import Input, NodeType, Output
from core.errors import InvalidRequest
from jobs.gpu.catalogue import SAMPLERS
from jobs.queues import gpu_queue

BASE_ACTION = "generate-image"  # whose (operator-adjustable) base price these nodes scale
TEXT_TO_IMAGE = ("text-to-image",)
# A text-to-image model's weights also run image-to-image (the loader derives the pipeline
# with ``from_pipe``); an inpainting model's UNet takes a mask, so it cannot.
IMAGE_TO_IMAGE = ("text-to-image", "image-to-image")
DEFAULT_STRENGTH = 0.6
# Node input name -> the generate-image action's field name (what the shared helpers read).
AIMG = {"prompt": "prompt", "negative_prompt": "negprompt", "model": "modelName",
        "width": "width", "height": "height", "steps": "steps", "cfg_scale": "cfgscale",
        "sampler": "sampler", "batch_size": "batchSize", "seed": "seed"}
INPUT_OF = {field: name for name, field in AIMG.items()}


def _aimg(values) -> dict:
    return {AIMG[k]: v for k, v in values.items() if k in AIMG and v is not None}


def _resolved(values, service, kinds) -> tuple:
    """The model and the generate-image input these node inputs stand for, the model's
    defaults filled in. A fixed placeholder seed keeps ``resolve_model`` from drawing a
    random one: prices and checks never depend on it."""
    data = _aimg(values)
    data.setdefault("seed", 0)
    return gen.resolve_model(data, service, kinds=kinds), data


def _problems(exc: InvalidRequest) -> list[dict]:
    """The action's field names turned back into this node's input names."""
    details = exc.details or [{"problem": exc.message}]
    return [{"input": INPUT_OF.get(d.get("field"), d.get("field")), "type": "model_limits",
             "problem": d.get("problem", exc.message)} for d in details]


def _queue(static, service) -> str:
    try:
        return gpu_queue(service.models.get(static.get("model"), field="model").id)
    except InvalidRequest:  # no such model: check() reports it, the plan never gets here
        return "gpu"


def _weights_stamp(path) -> str:
    """Newest mtime, total size and count of a diffusers folder's files (its top level
    and its component folders); empty where this machine does not hold the weights."""
    try:
        entries = list(os.scandir(path))
    except OSError:
        return ""
    files = []
    for entry in entries:
        if entry.is_dir():
            try:
                files += [e for e in os.scandir(entry.path) if e.is_file()]
            except OSError:
                continue
        elif entry.is_file():
            files.append(entry)
    stats = [e.stat() for e in files]
    return (f"{max((s.st_mtime_ns for s in stats), default=0)}:"
            f"{sum(s.st_size for s in stats)}:{len(stats)}")


def model_version(static, service) -> str:
    """The model id and a digest of its kind, weights path and the weights' files: new
    weights (in place or at a new path) change every cache key that used the model.
    Where the planning machine holds no weights, the path alone stands for them."""
    spec = service.models.get(static.get("model"), field="model")
    stamp = f"{spec.id}\n{spec.kind}\n{spec.path}\n{_weights_stamp(spec.path)}"
    return f"{spec.id}:{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"


def _seed(ctx, inputs) -> int:
    """A given (literal or linked) seed, else the node's derived one; kept in range."""
    seed = inputs.get("seed")
    return int(ctx.seed if seed is None else seed) % (gen.SEED_MAX + 1)


def _run_input(ctx, inputs, kinds) -> tuple:
    """The model and the full generate-image input, checked again on the worker."""
    data = _aimg({k: v for k, v in inputs.items() if k != "seed"})
    data["seed"] = _seed(ctx, inputs)
    data["prompt"] = str(data.get("prompt") or "")
    data["negprompt"] = str(data.get("negprompt") or "")
    spec = gen.resolve_model(data, ctx, kinds=kinds)
    return spec, data


# ---------------------------------------------------------------- generate_image

def check_generate(static, service) -> list[dict]:
    try:
        image_precheck(_aimg({**static, "seed": 0}), service)
    except InvalidRequest as exc:
        return _problems(exc)
    return []


def price_generate(static, service) -> int:
    _, data = _resolved(static, service, TEXT_TO_IMAGE)
    return gen.price(data, service.price_of(BASE_ACTION), service,
                     count=data.get("batchSize", 1))


def run_generate(ctx, inputs) -> dict:
    """Text-to-image; progress 1 (model), 5 (loaded), then per denoising step to 95."""
    from jobs.gpu.pipeline import generate_images

    spec, data = _run_input(ctx, inputs, TEXT_TO_IMAGE)
    ctx.progress(1)
    ctx.pipelines.get(spec)
    ctx.progress(5)
    images = generate_images(ctx.pipelines, spec, [image_request(data)],
                             gen.step_reporter(ctx))[0]
    return {"image": images[0], "images": list(images)}


# ---------------------------------------------------------------- image_to_image

def _strength(values) -> float:
    return float(values.get("strength", DEFAULT_STRENGTH))


def check_i2i(static, service) -> list[dict]:
    try:
        _, data = _resolved(static, service, IMAGE_TO_IMAGE)
    except InvalidRequest as exc:
        return _problems(exc)
    if i2i_steps(data["steps"], _strength(static)) < 1:
        return [{"input": "strength", "type": "model_limits",
                 "problem": "steps x strength must be at least 1 (image-to-image runs "
                            "int(steps x strength) denoising steps); raise steps or strength"}]
    return []


def price_i2i(static, service) -> int:
    spec, data = _resolved(static, service, IMAGE_TO_IMAGE)
    units = gen.reference_units(data["width"], data["height"],
                                i2i_steps(data["steps"], _strength(static)))
    return gen.credits_for(service.price_of(BASE_ACTION), units, spec.price_factor)


def run_i2i(ctx, inputs) -> dict:
    """The input image cover-cropped to the output size, re-denoised at ``strength``."""
    from jobs.gpu.pipeline import generate_images

    spec, data = _run_input(ctx, inputs, IMAGE_TO_IMAGE)
    size = (data["width"], data["height"])
    init = ImageOps.fit(inputs["image"].convert("RGB"), size, Image.Resampling.LANCZOS)
    ctx.progress(1)
    ctx.pipelines.get(spec, "image-to-image")
    ctx.progress(5)
    images = generate_images(ctx.pipelines, spec, [image_request({**data, "batchSize": 1})],
                             gen.step_reporter(ctx), init_image=init,
                             strength=_strength(inputs))[0]
    return {"image": images[0]}


# ---------------------------------------------------------------- the node types

def _prompt_inputs() -> tuple[Input, ...]:
    return (
        Input("prompt", "text", required=True, max_length=2000, help="What to generate."),
        Input("negative_prompt", "text", max_length=2000,
              help="Concepts to keep out of the result."),
        Input("model", "text", static=True, max_length=64,
              help="A modelID from GET /getModels; default: the first model listed."),
    )


def _size_inputs() -> tuple[Input, ...]:
    return (
        Input("width", "number", static=True, integer=True, minimum=8, maximum=4096,
              help="Width in pixels; one of the model's allowedWidths (default: the "
                   "model's defaultResolution)."),
        Input("height", "number", static=True, integer=True, minimum=8, maximum=4096,
              help="Height in pixels; one of the model's allowedHeights (default: the "
                   "model's defaultResolution)."),
        Input("steps", "number", static=True, integer=True, minimum=1, maximum=150,
              help="Denoising steps; default and limits per model (GET /getModels)."),
    )


SEED_INPUT = Input("seed", "number", integer=True, minimum=0, maximum=gen.SEED_MAX,
                   help="A fixed seed (a value, or linked from a seed or number node); "
                        "default: the node's own seed, derived from the run's seed.")

GENERATE_IMAGE = NodeType(
    name="generate_image", title="Generate image",
    description="Pictures from a prompt with a diffusion model on a GPU worker (the "
                "generate-image action); image is the first of images.",
    inputs=(
        *_prompt_inputs(), *_size_inputs(),
        Input("cfg_scale", "number", static=True, minimum=1, maximum=12,
              help="How closely to follow the prompt (default: the model's)."),
        Input("sampler", "text", static=True, choices=tuple(SAMPLERS),
              help="One of the model's allowedSamplers (default: its defaultSampler)."),
        Input("batch_size", "number", static=True, integer=True, minimum=1, maximum=8,
              default=1, help="Images to generate (seeds seed, seed+1, ...); at most the "
                              "model's maxBatchSize."),
        SEED_INPUT,
    ),
    outputs=(Output("image", "image"), Output("images", "images")),
    run=run_generate, queue="gpu", price=price_generate,
    pricing_doc="the generate-image base price x (width x height / 512x512) x (steps / 20) "
                "x batch_size x the model's priceFactor, rounded up, at least 1",
    queue_for=_queue, check=check_generate, version=model_version, uses_seed=True,
)

IMAGE_TO_IMAGE_NODE = NodeType(
    name="image_to_image", title="Image to image",
    description="Re-paints an image after a prompt with a diffusion model on a GPU worker: "
                "the image is cover-cropped to width x height and denoised at strength "
                "(0.1: close to the input, 1: a new picture).",
    inputs=(
        Input("image", "image", required=True, help="The picture to start from."),
        *_prompt_inputs(), *_size_inputs(),
        Input("strength", "number", static=True, minimum=0.1, maximum=1,
              default=DEFAULT_STRENGTH,
              help="How much to change the image, 0.1-1 (default 0.6)."),
        SEED_INPUT,
    ),
    outputs=(Output("image", "image"),),
    run=run_i2i, queue="gpu", price=price_i2i,
    pricing_doc="the generate-image base price x (width x height / 512x512) x "
                "(int(steps x strength) / 20) x the model's priceFactor, rounded up, at "
                "least 1",
    queue_for=_queue, check=check_i2i, version=model_version, uses_seed=True,
)
