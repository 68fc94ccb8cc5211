"""What the generation actions share: AIMG input fields, model-limit checks and pricing.

The checks run in the gateway before anything is charged (``precheck``), against the
operator's model catalogue, so a request the worker would refuse never costs a credit.
"""

from __future__ import annotations

import io
import math
import secrets

from actions.registry import Field
from core.errors import InvalidRequest
from jobs.gpu.catalogue import SAMPLERS

SEED_MAX = 2**32 - 1

PROMPT_FIELDS = (
    Field("prompt", required=True, max_length=2000, help="What to generate."),
    Field("negprompt", max_length=2000, label="Negative prompt",
          help="Concepts to keep out of the result."),
    Field("modelName", max_length=64, label="Model",
          help="A modelID from GET /getModels; default: the first model listed."),
    Field("steps", type="integer", minimum=1, maximum=150,
          help="Denoising steps; default and limits per model (GET /getModels)."),
    Field("seed", type="integer", minimum=-1, maximum=SEED_MAX,
          help="Same seed, same input and model -> the same picture; -1 or absent: random "
               "(the seed used is returned)."),
)
SIZE_FIELDS = (
    Field("width", type="integer", minimum=8, maximum=4096,
          help="Width in pixels; one of the model's allowedWidths."),
    Field("height", type="integer", minimum=8, maximum=4096,
          help="Height in pixels; one of the model's allowedHeights."),
    Field("sampler", choices=tuple(SAMPLERS), help="Sampler; one of the model's "
          "allowedSamplers (default: the model's defaultSampler)."),
    Field("cfgscale", type="number", minimum=1, maximum=12, label="CFG scale",
          help="How closely to follow the prompt, 1-12 (default 7)."),
    Field("restoreFaces", type="boolean", default=False, label="Restore faces",
          help="Face restoration is not offered by this gateway: true is refused."),
    Field("folderID", max_length=64, label="Folder ID",
          help="Your folder or grouping id, returned with the item."),
)


def resolve_model(data, service, *, kinds=("text-to-image",)):
    """The model the input asks for (or the default), its limits applied to ``data``."""
    spec = service.models.get(data.get("modelName"))
    if spec.kind not in kinds:
        raise InvalidRequest(f"modelName: {spec.id} is an {spec.kind} model",
                             details=[{"field": "modelName",
                                       "problem": f"must be a {' or '.join(kinds)} model"}])
    problems = []
    if data.get("restoreFaces"):
        problems.append({"field": "restoreFaces", "problem": "face restoration is not "
                         "supported by this gateway; send false or leave it out"})
    steps = data.setdefault("steps", spec.default_steps)
    if not spec.min_steps <= steps <= spec.max_steps:
        problems.append({"field": "steps", "problem": f"must be {spec.min_steps}-"
                         f"{spec.max_steps} for {spec.id}"})
    data.setdefault("width", spec.default_resolution[0])
    data.setdefault("height", spec.default_resolution[1])
    problems += spec.check_size(data["width"], data["height"])
    sampler = data.setdefault("sampler", spec.default_sampler)
    if sampler not in spec.samplers:
        problems.append({"field": "sampler",
                         "problem": f"must be one of {', '.join(spec.samplers)} for {spec.id}"})
    cfg = data.setdefault("cfgscale", spec.default_cfg)
    if not spec.min_cfg <= cfg <= spec.max_cfg:
        problems.append({"field": "cfgscale",
                         "problem": f"must be {spec.min_cfg}-{spec.max_cfg} for {spec.id}"})
    if problems:
        raise InvalidRequest("; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                             details=problems)
    data["modelName"] = spec.id
    if data.get("seed") in (None, -1):
        # Chosen here, before the debit, so the composition records the seed it ran with
        # and a replay of the same request is the same job.
        data["seed"] = secrets.randbelow(SEED_MAX + 1)
    return spec


# Prices are quoted in reference jobs: one 512x512 image at 20 denoising steps.
REFERENCE_PIXELS = 512 * 512
REFERENCE_STEPS = 20


def reference_units(width, height, steps, count=1) -> float:
    """How many reference jobs (512x512, 20 steps) this is: the unit prices are quoted in."""
    return (width * height / REFERENCE_PIXELS) * (steps / REFERENCE_STEPS) * count


def credits_for(base, units, factor=1.0) -> int:
    """The base price per reference job x units x the model's factor, rounded up, >= 1."""
    return max(1, math.ceil(base * units * factor - 1e-9))


def price(data, base, service, *, count) -> int:
    spec = service.models.get(data.get("modelName"))
    units = reference_units(data["width"], data["height"], data["steps"], count)
    return credits_for(base, units, spec.price_factor)


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def step_reporter(ctx, start=5, span=90):
    """Progress per denoising step; also where cancellation and the ttl take effect."""
    def report(done, total):
        ctx.progress(start + span * done // max(1, total))
    return report
