"""Image nodes that run on CPU workers: load_image, resize, overlay_text, product_listing
and frames_to_video.

Each reuses an action's code where one exists (the product-listing action's fetch limits
and compositor, the generate-video action's encoders); resize and overlay_text are plain
Pillow. All are deterministic: the same inputs give the same pixels.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from PIL import Image, ImageColor, ImageDraw, ImageOps

from actions.generate_video import animated_webp, mp4
from actions.listing_compose import _font, _wrap, compose_listing
from actions.product_listing import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from actions.workflow.types import Input, NodeType, Output
from core.errors import InvalidRequest
from jobs.outbound import fetch, load_image
from jobs.workflows.values import Video

LANCZOS = Image.Resampling.LANCZOS
HEX_COLOUR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
MAX_FRAMES = 240


def _colour_problem(static, name) -> list[dict]:
    value = static.get(name)
    if value is None or HEX_COLOUR.match(value):
        return []
    return [{"input": name, "type": "invalid_value_type",
             "problem": "must be a hex colour: #rgb, #rrggbb or #rrggbbaa"}]


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    return image if image.mode in ("RGB", "RGBA") else image.convert("RGBA")


# ---------------------------------------------------------------- load_image

def check_url(static, service) -> list[dict]:
    """The URL's form only: whether its host is public is decided when it is fetched
    (a save must not depend on DNS answers, which change)."""
    url = static.get("url")
    if url is None:
        return []
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return [{"input": "url", "type": "invalid_value_type",
                 "problem": "must be an http or https URL with a host"}]
    return []


def run_load_image(ctx, inputs) -> dict:
    """Fetched under the outbound rules, decoded within the product-listing limits."""
    ctx.progress(5)
    fetched = fetch(inputs["url"], policy=ctx.policy, field="url", max_bytes=MAX_IMAGE_BYTES)
    ctx.progress(70)
    return {"image": load_image(fetched.content, max_pixels=MAX_IMAGE_PIXELS, field="url")}


def run_load_content(ctx, inputs) -> dict:
    """An image of the caller's content library (or shared with them), read from the
    store and decoded within the same limits as a fetched image."""
    ctx.progress(5)
    item = ctx.library.get_for(ctx.account_id, inputs["content_id"])
    if item.kind != "image":
        raise InvalidRequest(f"content {item.id} is a {item.kind}, not an image",
                             details=[{"field": "content_id", "problem": "not an image"}])
    if item.size > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"content {item.id} is over {MAX_IMAGE_BYTES} bytes",
                             details=[{"field": "content_id", "problem": "too large"}])
    data = b"".join(ctx.library.open(item))
    ctx.progress(70)
    return {"image": load_image(data, max_pixels=MAX_IMAGE_PIXELS, field="content_id")}


# ---------------------------------------------------------------- resize

RESIZE_MODES = ("fit", "fill", "crop", "pad")


def run_resize(ctx, inputs) -> dict:
    """fit: within width x height, aspect kept (may be smaller); fill: stretched to it;
    crop: covers it, centred and cropped; pad: fit, then padded with ``background``."""
    image = _rgb_or_rgba(inputs["image"])
    size = (int(inputs["width"]), int(inputs["height"]))
    mode = inputs.get("mode", "fit")
    if mode == "fill":
        return {"image": image.resize(size, LANCZOS)}
    if mode == "crop":
        return {"image": ImageOps.fit(image, size, LANCZOS)}
    if mode == "pad":
        colour = ImageColor.getcolor(inputs.get("background", "#ffffff"), "RGBA")
        if colour[3] < 255:
            image = image.convert("RGBA")
        fill = colour if image.mode == "RGBA" else colour[:3]
        return {"image": ImageOps.pad(image, size, LANCZOS, color=fill)}
    return {"image": ImageOps.contain(image, size, LANCZOS)}


# ---------------------------------------------------------------- overlay_text

POSITIONS = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left",
             "bottom", "bottom-right")


def _place(position, box, size, margin) -> tuple[float, float, str]:
    """Top-left corner for a text block of bounding box ``box`` and its alignment."""
    width, height = size
    left, top, right, bottom = box
    parts = position.split("-")
    vertical = parts[0] if parts[0] in ("top", "bottom") else "middle"
    horizontal = parts[-1] if parts[-1] in ("left", "right") else "center"
    x = {"left": margin - left, "right": width - margin - right}.get(
        horizontal, (width - (right - left)) / 2 - left)
    y = {"top": margin - top, "bottom": height - margin - bottom}.get(
        vertical, (height - (bottom - top)) / 2 - top)
    return x, y, {"left": "left", "right": "right"}.get(horizontal, "center")


def run_overlay_text(ctx, inputs) -> dict:
    """Watermark-style text: wrapped to the image's width, outlined in a contrasting
    colour so it reads on any picture, blended at ``opacity``."""
    base = _rgb_or_rgba(inputs["image"])
    size = int(inputs.get("size", 32))
    red, green, blue = ImageColor.getrgb(inputs.get("color", "#ffffff"))[:3]
    alpha = round(255 * float(inputs.get("opacity", 0.8)))
    font, margin = _font(size), max(2, size // 2)
    line_height = size * 1.25
    max_lines = max(1, int((base.height - 2 * margin) // line_height))
    text = "\n".join(_wrap(str(inputs.get("text") or ""), font,
                           max(1, base.width - 2 * margin), max_lines))
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    stroke = max(1, size // 16)
    dark = 0.299 * red + 0.587 * green + 0.114 * blue > 128
    outline = (0, 0, 0, alpha) if dark else (255, 255, 255, alpha)
    box = draw.multiline_textbbox((0, 0), text, font=font, stroke_width=stroke)
    x, y, align = _place(inputs.get("position", "bottom-right"), box, base.size, margin)
    draw.multiline_text((x, y), text, font=font, fill=(red, green, blue, alpha),
                        align=align, stroke_width=stroke, stroke_fill=outline)
    out = Image.alpha_composite(base.convert("RGBA"), layer)
    return {"image": out if base.mode == "RGBA" else out.convert("RGB")}


# ---------------------------------------------------------------- product_listing

def run_product_listing(ctx, inputs) -> dict:
    """The product-listing action's compositor (white backgrounds; a generated background
    model is not used here): ``images`` = [main, banner]."""
    ctx.progress(10)
    rendered = compose_listing(inputs["image"], product_name=str(inputs["product_name"]),
                               vendor=inputs.get("vendor") or None,
                               description=inputs.get("description") or None)
    by_kind = {item.kind: item.image for item in rendered}
    return {"images": [item.image for item in rendered], "main": by_kind["main"],
            "banner": by_kind["banner"]}


# ---------------------------------------------------------------- frames_to_video

ENCODERS = {"webp": animated_webp, "mp4": mp4}


def run_frames_to_video(ctx, inputs) -> dict:
    """Every frame at the first one's size (cover-cropped where they differ); an MP4's
    sides are made even, as H.264's 4:2:0 colour needs."""
    frames = list(inputs.get("images") or [])
    if not 1 <= len(frames) <= MAX_FRAMES:
        raise InvalidRequest(f"images: a video takes 1-{MAX_FRAMES} frames, got {len(frames)}",
                             details=[{"field": "images", "problem": f"must hold 1-"
                                       f"{MAX_FRAMES} images, got {len(frames)}"}])
    fps, fmt = int(inputs.get("fps", 8)), inputs.get("format", "webp")
    width, height = frames[0].size
    if fmt == "mp4":
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    frames = [f.convert("RGB") if f.size == (width, height)
              else ImageOps.fit(f.convert("RGB"), (width, height), LANCZOS) for f in frames]
    ctx.progress(10)
    data = ENCODERS[fmt](frames, fps)
    return {"video": Video(data=data, format=fmt, width=width, height=height, fps=fps,
                           frame_count=len(frames))}


# ---------------------------------------------------------------- the node types

def _flat(credits):
    return lambda static, service: credits


LOAD_IMAGE = NodeType(
    name="load_image", title="Load image",
    description="Fetches an image from a public http(s) URL (JPEG, PNG, WebP or GIF, at "
                "most 15 MiB and 40 megapixels); an image variable is such a URL.",
    inputs=(Input("url", "text", required=True, static=True, max_length=2048, url=True,
                  help="Public http(s) URL of the image, or an image variable."),),
    outputs=(Output("image", "image"),),
    run=run_load_image, price=_flat(1), pricing_doc="1 credit", check=check_url,
)

LOAD_CONTENT = NodeType(
    name="load_content", title="Load content",
    description="Reads an image of your content library (an upload, a creation, or an "
                "item shared with you) by its content id; always its newest version.",
    inputs=(Input("content_id", "text", required=True, static=True, max_length=40,
                  content=True, help="The content item's id (cnt_...)."),),
    outputs=(Output("image", "image"),),
    run=run_load_content, price=_flat(1), pricing_doc="1 credit",
    cacheable=False,  # a new version changes what the same id reads
)

RESIZE = NodeType(
    name="resize", title="Resize",
    description="Resizes an image: fit (within the box, aspect kept), fill (stretched), "
                "crop (covers the box, centred) or pad (fit, padded with background).",
    inputs=(
        Input("image", "image", required=True),
        Input("width", "number", required=True, static=True, integer=True, minimum=1,
              maximum=4096, help="Target width in pixels."),
        Input("height", "number", required=True, static=True, integer=True, minimum=1,
              maximum=4096, help="Target height in pixels."),
        Input("mode", "text", static=True, choices=RESIZE_MODES, default="fit",
              help="fit | fill | crop | pad (default fit)."),
        Input("background", "text", static=True, default="#ffffff", max_length=9,
              help="pad only: the padding colour, #rgb, #rrggbb or #rrggbbaa."),
    ),
    outputs=(Output("image", "image"),),
    run=run_resize, price=_flat(1), pricing_doc="1 credit",
    check=lambda static, service: _colour_problem(static, "background"),
)

OVERLAY_TEXT = NodeType(
    name="overlay_text", title="Overlay text",
    description="Writes text over an image, watermark style: wrapped to the image's width, "
                "outlined for contrast, at a position and opacity.",
    inputs=(
        Input("image", "image", required=True),
        Input("text", "text", required=True, max_length=500, help="The text to write."),
        Input("position", "text", static=True, choices=POSITIONS, default="bottom-right",
              help="Where: top-left, top, top-right, left, center, right, bottom-left, "
                   "bottom or bottom-right (default)."),
        Input("size", "number", static=True, integer=True, minimum=6, maximum=512,
              default=32, help="Font size in pixels (default 32)."),
        Input("color", "text", static=True, default="#ffffff", max_length=9,
              help="Text colour, #rgb or #rrggbb (default white)."),
        Input("opacity", "number", static=True, minimum=0, maximum=1, default=0.8,
              help="0 (invisible) to 1 (opaque); default 0.8."),
    ),
    outputs=(Output("image", "image"),),
    run=run_overlay_text, price=_flat(1), pricing_doc="1 credit",
    check=lambda static, service: _colour_problem(static, "color"),
)

PRODUCT_LISTING = NodeType(
    name="product_listing", title="Product listing",
    description="Marketplace listing images from a product photo (the "
                "generate-product-listing action's compositor): a 1200x1200 main image on "
                "white and a 1600x900 banner with the name, vendor and description.",
    inputs=(
        Input("image", "image", required=True, help="The product photo."),
        Input("product_name", "text", required=True, max_length=200),
        Input("vendor", "text", max_length=200),
        Input("description", "text", max_length=2000),
    ),
    outputs=(Output("images", "images"), Output("main", "image"), Output("banner", "image")),
    run=run_product_listing,
    price=lambda static, service: service.price_of("generate-product-listing"),
    pricing_doc="the generate-product-listing action's price",
)

FRAMES_TO_VIDEO = NodeType(
    name="frames_to_video", title="Frames to video",
    description=f"Encodes images (1-{MAX_FRAMES}, at the first one's size) as an animated "
                "WebP or an H.264 MP4.",
    inputs=(
        Input("images", "images", required=True, help="The frames, in order."),
        Input("fps", "number", static=True, integer=True, minimum=1, maximum=30, default=8,
              help="Frames per second, 1-30 (default 8)."),
        Input("format", "text", static=True, choices=tuple(ENCODERS), default="webp",
              help="webp (default) or mp4."),
    ),
    outputs=(Output("video", "video"),),
    run=run_frames_to_video, price=_flat(2), pricing_doc="2 credits",
)
