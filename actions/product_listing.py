"""``generate-product-listing`` (seed 004, 25 credits): marketplace-ready listing images
from a product photo. The worker fetches the photo under the outbound rules, checks it is
a real image within the pixel limit, and composes a square main image and a banner.

By default the backgrounds are the Pillow compositor's (white; a gradient and card). When
the operator names a catalogue model in ``LISTING_BACKGROUND_MODEL``, the job runs on that
model's GPU queue and each background is generated instead: the product is cut out and
placed exactly as the compositor places it, the model repaints everything around it
(inpainting; image-to-image for an image-to-image model) and the product is pasted back
on top unchanged. Same price; each output says ``"background"``: ``"compositor"`` or
``"generated"``.
"""

from __future__ import annotations

import hashlib
import math

from PIL import Image

from actions import generation_common as gen
from actions.listing_compose import compose_listing, scenes
from actions.registry import Action, Field
from core.errors import InvalidRequest, ServiceUnavailable
from jobs.context import JobContext
from jobs.outbound import fetch, load_image
from jobs.queues import gpu_queue

MAX_IMAGE_BYTES = 15 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
BACKGROUND_MODEL = "background_model"  # set by precheck (never by the caller): the model id
NEGATIVE_PROMPT = ("text, letters, watermark, logo, people, hands, clutter, blurry, "
                   "low quality, distorted")
STRENGTH = {"inpainting": 1.0, "image-to-image": 0.8}


def precheck(data, service, account_id):
    """Refuse a URL the worker would refuse (or a content id the caller cannot see),
    before anything is charged; record which background model (if any) this job uses,
    which also picks its queue."""
    url, content_id = data.get("product_image_url"), data.get("product_content_id")
    if bool(url) == bool(content_id):
        raise InvalidRequest("Send product_image_url or product_content_id (one of them)",
                             details=[{"field": "product_image_url",
                                       "problem": "send exactly one of product_image_url "
                                                  "and product_content_id"}])
    if url:
        service.policy.check_url(url, field="product_image_url")
    else:
        item = service.library.get_for(account_id, content_id)
        if item.kind != "image":
            raise InvalidRequest("product_content_id must name an image", details=[
                {"field": "product_content_id", "problem": f"is a {item.kind}"}])
    model_id = getattr(service.config, "listing_background_model", "")
    if model_id:
        if service.models.find(model_id) is None:
            raise ServiceUnavailable(
                f"Generated listing backgrounds are misconfigured: LISTING_BACKGROUND_MODEL "
                f"names {model_id!r}, which is not in the model catalogue; nothing was "
                "charged")
        data[BACKGROUND_MODEL] = model_id
    return data


def queue_for(data) -> str:
    model_id = data.get(BACKGROUND_MODEL)
    return gpu_queue(model_id) if model_id else "cpu"


def generation_size(spec, size) -> tuple[int, int]:
    """The model-allowed size closest to ``size``'s aspect ratio, about as many pixels as
    the model's default resolution (what it was trained for); resized afterwards."""
    want = math.log(size[0] / size[1])
    area = spec.default_resolution[0] * spec.default_resolution[1]
    options = [(w, h) for w in spec.allowed_widths for h in spec.allowed_heights
               if w * h <= spec.max_resolution]
    return min(options or [tuple(spec.default_resolution)],
               key=lambda wh: (round(abs(math.log(wh[0] / wh[1]) - want), 6),
                               round(abs(math.log(wh[0] * wh[1] / area)), 6),
                               -wh[0] * wh[1]))


def background_prompt(data) -> str:
    subject = ", ".join(filter(None, (data.get("background_prompt"), data["product_name"],
                                      data.get("vendor"), data.get("product_description"))))
    return (f"{subject}, product photography background, professional studio scene, soft "
            "lighting, clean, high quality")[:2000]


def derived_seed(model_id, prompt, scene) -> int:
    """The same photo, text and model give the same backgrounds (retries included)."""
    digest = hashlib.sha256(f"{model_id}\n{prompt}\n".encode())
    digest.update(scene.canvas().tobytes())
    return int.from_bytes(digest.digest()[:4], "big")


def generate_backgrounds(ctx, data, image, model_id):
    """The listing images with generated backgrounds, progress 40 to 95 (per step)."""
    from jobs.gpu.loader import ModelUnavailable
    from jobs.gpu.pipeline import ImageRequest, generate_images

    spec = ctx.models.find(model_id)
    if spec is None:
        raise ModelUnavailable(f"Model {model_id} is not in this worker's model catalogue")
    task = "image-to-image" if spec.kind == "image-to-image" else "inpainting"
    strength = STRENGTH[task]
    steps = min(spec.max_steps, max(spec.default_steps, math.ceil(1 / strength)))
    layouts = scenes(image, product_name=data["product_name"], vendor=data.get("vendor"),
                     description=data.get("product_description"))
    prompt = background_prompt(data)
    seed = data.get("seed")
    if seed is None:
        seed = derived_seed(spec.id, prompt, layouts[0])
    ctx.progress(42)
    ctx.pipelines.get(spec, task)  # load before the first step is counted
    ctx.progress(45)
    rendered = []
    span = 50 // len(layouts)
    for index, scene in enumerate(layouts):
        width, height = generation_size(spec, scene.size)
        request = ImageRequest(prompt=prompt, negative_prompt=NEGATIVE_PROMPT, width=width,
                               height=height, steps=steps, seed=(seed + index) % 2**32,
                               cfg_scale=spec.default_cfg, sampler=spec.default_sampler)
        canvas = scene.canvas().resize((width, height), Image.Resampling.LANCZOS)
        mask = None
        if task == "inpainting":
            mask = scene.mask().resize((width, height), Image.Resampling.LANCZOS).point(
                lambda v: 255 if v > 127 else 0)
        generated = generate_images(ctx.pipelines, spec, [request],
                                    gen.step_reporter(ctx, 45 + span * index, span),
                                    init_image=canvas, mask_image=mask, strength=strength)[0][0]
        rendered.append((scene.finish(generated), request.seed))
    return spec, rendered


def _photo(ctx, data) -> bytes:
    """The product photo's bytes: fetched from its URL, or read from the caller's
    content library (access checked again: it may have been unshared since)."""
    if data.get("product_content_id"):
        item = ctx.library.get_for(ctx.account_id, data["product_content_id"])
        if item.size > MAX_IMAGE_BYTES:
            raise InvalidRequest(f"The content is over {MAX_IMAGE_BYTES} bytes", details=[
                {"field": "product_content_id", "problem": "too large"}])
        data_bytes = b"".join(ctx.library.open(item))
    else:
        data_bytes = fetch(data["product_image_url"], policy=ctx.policy,
                           field="product_image_url", max_bytes=MAX_IMAGE_BYTES).content
    ctx.progress(30)
    return data_bytes


def perform(ctx: JobContext, data: dict) -> dict:
    ctx.progress(5)
    image = load_image(_photo(ctx, data), max_pixels=MAX_IMAGE_PIXELS)
    ctx.progress(40)
    model_id = data.get(BACKGROUND_MODEL)
    if model_id:
        spec, generated = generate_backgrounds(ctx, data, image, model_id)
        rendered = [item for item, _ in generated]
        extra = [{"background": "generated", "model": spec.id, "seed": seed}
                 for _, seed in generated]
        start, span = 95, 4
    else:
        rendered = compose_listing(image, product_name=data["product_name"],
                                   vendor=data.get("vendor"),
                                   description=data.get("product_description"))
        extra = [{"background": "compositor"}] * len(rendered)
        start, span = 40, 55
    outputs = []
    for index, item in enumerate(rendered, start=1):
        url = ctx.save(f"{item.kind}.{item.format}", item.to_bytes())
        outputs.append({"type": "image", "kind": item.kind, "url": url, "format": item.format,
                        "width": item.image.width, "height": item.image.height,
                        **extra[index - 1]})
        ctx.progress(start + span * index // len(rendered))
    tags = list(data.get("custom_tags") or [])
    search = " ".join(filter(None, (data["product_name"], data.get("vendor"),
                                    data.get("product_description"))))
    posts = [{
        "cardPoster": outputs[0]["url"], "deliverable": output, "platform": "marketplace",
        "postFormat": "square" if output["kind"] == "main" else "banner",
        "contentType": "product-listing", "customTags": tags,
        "contentLabel": data.get("content_label") or "", "searchText": search,
    } for output in outputs]
    return {"outputs": outputs, "posts": posts}


ACTION = Action(
    name="generate-product-listing",
    title="Generate product listing",
    description="Composes marketplace-ready listing images from a product photo: a square "
                "main image and a banner with the product name and vendor, on a clean "
                "background (or, where the gateway has a background model configured, a "
                "generated one). Costs 25 credits; refunded if it fails.",
    price=25,
    mode="async",
    ttl_s=120,
    queue="cpu",
    queue_for=queue_for,
    precheck=precheck,
    precheck_account=True,
    fields=(
        Field("product_name", required=True, max_length=200, help="Name of the product."),
        Field("product_image_url", max_length=2048, format="uri",
              pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
              help="Public http(s) URL of the product photo (JPEG, PNG, WebP or GIF); or "
                   "send product_content_id instead."),
        Field("product_content_id", max_length=40, label="Product Content ID",
              help="The product photo from your content library (cnt_...), instead of a "
                   "URL."),
        Field("product_description", max_length=2000, help="Description of the product."),
        Field("vendor", max_length=200, help="Vendor or brand name."),
        Field("custom_tags", type="array", help="Tags for the resulting posts (list-posts)."),
        Field("content_label", max_length=64, help="Label for the resulting posts."),
        Field("background_prompt", max_length=500,
              help="Generated backgrounds only: the scene behind the product (e.g. 'on a "
                   "marble kitchen counter'). Ignored where the gateway composes plain "
                   "backgrounds."),
        Field("seed", type="integer", minimum=0, maximum=gen.SEED_MAX,
              help="Generated backgrounds only: a seed for a different background; by "
                   "default one is derived from the photo and text, so the same input "
                   "gives the same images."),
    ),
    perform=perform,
)
