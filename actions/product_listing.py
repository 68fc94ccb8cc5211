"""``generate-product-listing`` (seed 004, 25 credits): marketplace-ready listing images
from a product photo. The worker fetches the photo under the outbound rules, checks it is
a real image within the pixel limit, and composes a square main image and a banner."""

from __future__ import annotations

from actions.listing_compose import compose_listing
from actions.outbound import fetch, load_image
from actions.registry import Action, Field

MAX_IMAGE_BYTES = 15 * 2**20
MAX_IMAGE_PIXELS = 40_000_000


def precheck(data, service):
    """Refuse a URL the worker would refuse, before anything is charged."""
    service.policy.check_url(data["product_image_url"], field="product_image_url")


def perform(ctx, data):
    ctx.progress(5)
    fetched = fetch(data["product_image_url"], policy=ctx.policy, field="product_image_url",
                    max_bytes=MAX_IMAGE_BYTES)
    ctx.progress(30)
    image = load_image(fetched.content, max_pixels=MAX_IMAGE_PIXELS)
    ctx.progress(40)
    rendered = compose_listing(image, product_name=data["product_name"],
                               vendor=data.get("vendor"),
                               description=data.get("product_description"))
    outputs = []
    for index, item in enumerate(rendered, start=1):
        url = ctx.save(f"{item.kind}.{item.format}", item.to_bytes())
        outputs.append({"type": "image", "kind": item.kind, "url": url, "format": item.format,
                        "width": item.image.width, "height": item.image.height})
        ctx.progress(40 + 55 * index // len(rendered))
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
                "main image on a clean background and a banner with the product name and "
                "vendor. Costs 25 credits; refunded if it fails.",
    price=25,
    mode="async",
    ttl_s=120,
    queue="cpu",
    precheck=precheck,
    fields=(
        Field("product_name", required=True, max_length=200, help="Name of the product."),
        Field("product_image_url", required=True, max_length=2048, format="uri",
              pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://",
              help="Public http(s) URL of the product photo (JPEG, PNG, WebP or GIF)."),
        Field("product_description", max_length=2000, help="Description of the product."),
        Field("vendor", max_length=200, help="Vendor or brand name."),
        Field("custom_tags", type="array", help="Tags for the resulting posts (list-posts)."),
        Field("content_label", max_length=64, help="Label for the resulting posts."),
    ),
    perform=perform,
)
