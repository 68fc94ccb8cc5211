"""``generate-image`` (seed 003 "Generate Image"): pictures from a prompt on a GPU worker.

Priced by the work it asks for: the base price buys one 512x512 image at 20 steps, scaled
by pixels x steps x batchSize x the model's price factor (rounded up, at least 1 credit).
The request is checked against the model's limits before anything is charged; a failed,
timed-out or cancelled generation is refunded once.
"""

from __future__ import annotations

from actions import generation_common as gen
from actions.registry import Action, Field
from jobs.context import Batch, JobContext
from jobs.queues import gpu_queue


def precheck(data, service):
    spec = gen.resolve_model(data, service)
    batch = data.setdefault("batchSize", 1)
    if batch > spec.max_batch:
        raise gen.InvalidRequest(
            f"batchSize: at most {spec.max_batch} for {spec.id}",
            details=[{"field": "batchSize", "problem": f"must be 1-{spec.max_batch}"}])
    strength = data.get("subseed_strength") or 0
    if strength > 0 and data.get("subseed") is None:
        data["subseed"] = gen.secrets.randbelow(gen.SEED_MAX + 1)
    return data


def image_request(data):
    from jobs.gpu.pipeline import ImageRequest

    return ImageRequest(
        prompt=data["prompt"], negative_prompt=data.get("negprompt") or "",
        width=data["width"], height=data["height"], steps=data["steps"], seed=data["seed"],
        cfg_scale=float(data["cfgscale"]), sampler=data["sampler"],
        subseed=data.get("subseed"), subseed_strength=float(data.get("subseed_strength") or 0),
        batch=data.get("batchSize", 1))


def _result(ctx, spec, data, images, pipe, batch=None) -> dict:
    """Save one composition's images; its outputs and posts."""
    from jobs.gpu.pipeline import truncated_words

    ignored = truncated_words(pipe.tokenizer, data["prompt"])
    outputs = []
    for index, image in enumerate(images):
        url = ctx.save(f"image-{index}.png", gen.png(image))
        outputs.append({"type": "image", "url": url, "format": "png", "width": image.width,
                        "height": image.height, "seed": data["seed"] + index,
                        "model": spec.id, "ignoredWords": ignored})
        if batch is not None:
            outputs[-1]["batch"] = batch
    posts = [{"cardPoster": o["url"], "deliverable": o, "platform": "web",
              "postFormat": "image", "contentType": "generated-image",
              "searchText": data["prompt"][:500]} for o in outputs]
    return {"outputs": outputs, "posts": posts}


def perform(ctx: JobContext, data: dict) -> dict:
    from jobs.gpu.pipeline import generate_images

    spec = ctx.models.get(data["modelName"])
    ctx.progress(1)
    pipe = ctx.pipelines.get(spec)
    ctx.progress(5)
    images = generate_images(ctx.pipelines, spec, [image_request(data)],
                             gen.step_reporter(ctx))[0]
    return _result(ctx, spec, data, images, pipe)


def batch_key(data):
    """Requests that can share one pipeline call: same model, size, steps, sampler, cfg."""
    return image_request(data).batch_key(data["modelName"])


def batch_fits(ctx, inputs) -> bool:
    """At most the model's maxBatchSize or GPU_BATCH_MAX images in one call, whichever is
    larger (one request alone always runs)."""
    spec = ctx.models.get(inputs[0]["modelName"])
    images = sum(d.get("batchSize", 1) for d in inputs)
    return images <= max(spec.max_batch, ctx.config.gpu_batch_max)


def perform_batch(batch: Batch, inputs: list[dict]) -> list:
    """One pipeline call for every member of ``batch`` (a ``jobs.context.Batch``); each output
    records the batch it was made in: ``{"id", "jobs", "images"}``."""
    from jobs.gpu.pipeline import generate_images

    lead = batch[0]
    spec = lead.models.get(inputs[0]["modelName"])
    batch.progress(1)
    pipe = lead.pipelines.get(spec)
    batch.progress(5)
    requests = [image_request(d) for d in inputs]
    images = generate_images(lead.pipelines, spec, requests, gen.step_reporter(batch))
    info = {"id": batch.id, "jobs": len(batch), "images": sum(r.batch for r in requests)}
    results = []
    for ctx, data, own in zip(batch, inputs, images, strict=True):
        if ctx.stopped is not None:  # cancelled or expired during the run: nothing saved
            results.append(ctx.stopped)
            continue
        try:
            results.append(_result(ctx, spec, data, own, pipe, info))
        except Exception as exc:
            results.append(exc)
    return results


ACTION = Action(
    name="generate-image",
    title="Generate image",
    description="Generates images from a prompt with a diffusion model on a GPU worker "
                "(AIMG parameters). Priced by pixels x steps x batch; refunded if it fails "
                "or is cancelled.",
    price=4,
    mode="async",
    ttl_s=600,
    queue="gpu",
    queue_for=lambda data: gpu_queue(data["modelName"]),
    precheck=precheck,
    pricing=lambda data, base, service: gen.price(data, base, service,
                                                  count=data.get("batchSize", 1)),
    pricing_doc="base credits x (width x height / 512x512) x (steps / 20) x batchSize x the "
                "model's priceFactor, rounded up, at least 1",
    fields=(
        *gen.PROMPT_FIELDS,
        Field("subseed", type="integer", minimum=0, maximum=gen.SEED_MAX,
              help="Variation seed, mixed into the seed's noise by subseed_strength."),
        Field("subseed_strength", type="number", minimum=0, maximum=1,
              help="0: the seed's picture; 1: the subseed's; between: a variation."),
        *gen.SIZE_FIELDS,
        Field("batchSize", type="integer", minimum=1, maximum=8, label="Batch size",
              help="Images to generate (seeds seed, seed+1, ...); at most the model's "
                   "maxBatchSize."),
    ),
    perform=perform,
    batch_key=batch_key,
    batch_fits=batch_fits,
    perform_batch=perform_batch,
)
