"""The listing compositor (actions.listing_compose): sizes, margins, trimming, text."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageChops, ImageDraw

from actions.listing_compose import (
    BANNER_SIZE,
    MAIN_SIZE,
    Rendered,
    compose_listing,
    dominant_colour,
    trim,
)


def product(border=0, background=(255, 255, 255), size=(300, 200), colour=(30, 90, 200)):
    """A blue box with a darker stripe, optionally inside a flat ``border``."""
    image = Image.new("RGB", (size[0] + 2 * border, size[1] + 2 * border), background)
    draw = ImageDraw.Draw(image)
    draw.rectangle((border, border, border + size[0] - 1, border + size[1] - 1), fill=colour)
    draw.rectangle((border, border, border + size[0] // 4, border + size[1] - 1),
                   fill=(10, 30, 80))
    return image


def content_box(image, background=(255, 255, 255), tolerance=16):
    diff = ImageChops.difference(image.convert("RGB"), Image.new("RGB", image.size, background))
    return diff.convert("L").point(lambda v: 255 if v > tolerance else 0).getbbox()


def pixels(image):
    """The pixel values of ``image`` (``getdata`` is deprecated in Pillow 13)."""
    return list(image.get_flattened_data() if hasattr(image, "get_flattened_data")
                else image.getdata())


def by_kind(rendered):
    return {r.kind: r for r in rendered}


def test_outputs_sizes_and_formats():
    out = by_kind(compose_listing(product(), product_name="Desk Lamp", vendor="Lumen"))
    assert set(out) == {"main", "banner"}
    assert out["main"].image.size == (MAIN_SIZE, MAIN_SIZE) == (1200, 1200)
    assert out["banner"].image.size == BANNER_SIZE == (1600, 900)
    for item in out.values():
        assert isinstance(item, Rendered) and item.format == "jpg"
        decoded = Image.open(io.BytesIO(item.to_bytes()))
        assert (decoded.format, decoded.size) == ("JPEG", item.image.size)
    for fmt, name in (("png", "PNG"), ("webp", "WEBP")):
        data = Rendered("main", out["main"].image, fmt).to_bytes()
        assert Image.open(io.BytesIO(data)).format == name


def test_main_image_centred_on_white_with_margins():
    main = by_kind(compose_listing(product(), product_name="x"))["main"].image
    left, top, right, bottom = content_box(main)
    margin = round(MAIN_SIZE * 0.08)
    assert min(left, top, MAIN_SIZE - right, MAIN_SIZE - bottom) >= margin - 2
    assert right - left == pytest.approx(MAIN_SIZE - 2 * margin, abs=3)  # wide: fills width
    assert abs((left + right) / 2 - MAIN_SIZE / 2) <= 2
    assert abs((top + bottom) / 2 - MAIN_SIZE / 2) <= 2
    for corner in ((0, 0), (MAIN_SIZE - 1, 0), (0, MAIN_SIZE - 1), (MAIN_SIZE - 1,) * 2):
        assert main.getpixel(corner) == (255, 255, 255)


@pytest.mark.parametrize("background", [(255, 255, 255), (236, 236, 232), (40, 160, 60)])
def test_flat_border_is_trimmed(background):
    plain = by_kind(compose_listing(product(), product_name="x"))["main"].image
    bordered = product(border=250, background=background)
    assert trim(bordered).size == (300, 200)
    main = by_kind(compose_listing(bordered, product_name="x"))["main"].image
    assert content_box(main) == content_box(plain)


def test_noisy_jpeg_border_is_trimmed_within_tolerance():
    buf = io.BytesIO()
    product(border=150, background=(250, 250, 250)).save(buf, "JPEG", quality=60)
    noisy = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    width, height = trim(noisy).size
    assert 295 <= width <= 310 and 195 <= height <= 210


def test_off_white_background_becomes_white():
    main = by_kind(compose_listing(product(border=40, background=(238, 238, 236), size=(200, 400)),
                                   product_name="x"))["main"].image
    left, top, right, bottom = content_box(main)
    assert (right - left) < (bottom - top)  # the tall product, not its grey backdrop
    assert main.getpixel((left + 2, top + 2)) != (255, 255, 255)


def test_transparent_product_composited_on_white():
    image = Image.new("RGBA", (500, 500), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((150, 100, 350, 400), fill=(200, 20, 20, 255))
    assert trim(image).size == (201, 301)
    out = by_kind(compose_listing(image, product_name="Red Egg"))
    main = out["main"].image
    assert main.mode == "RGB" and main.getpixel((600, 600))[0] > 180
    assert main.getpixel((600, 600))[1] < 60
    # the transparent corners of the ellipse's box are white, not black
    left, top, right, bottom = content_box(main)
    assert main.getpixel((left + 3, top + 3)) == (255, 255, 255)
    assert bottom - top == pytest.approx(MAIN_SIZE - 2 * round(MAIN_SIZE * 0.08), abs=3)
    assert out["banner"].image.size == BANNER_SIZE


def test_banner_has_text_in_text_area_and_product_on_the_left():
    with_text = by_kind(compose_listing(product(), product_name="Ergonomic Desk Lamp",
                                        vendor="Lumen & Co",
                                        description="Warm light. " * 60))["banner"].image
    no_text = by_kind(compose_listing(product(), product_name=""))["banner"].image
    text_area = (900, 60, 1510, 840)
    dark = [p for p in pixels(with_text.crop(text_area).convert("L")) if p < 90]
    assert len(dark) > 5000  # name and description glyphs
    assert not [p for p in pixels(no_text.crop(text_area).convert("L")) if p < 90]
    # the product (blue) is on the left half, on a white card
    left_half = with_text.crop((0, 0, 860, 900))
    assert any(b > 150 and r < 80 for r, g, b in pixels(left_half))
    assert with_text.getpixel((450, 110)) == (255, 255, 255)


def test_banner_background_follows_product_colour():
    red = by_kind(compose_listing(product(colour=(210, 30, 30)), product_name="x"))["banner"]
    green = by_kind(compose_listing(product(colour=(30, 170, 40)), product_name="x"))["banner"]
    r, g, _ = red.image.getpixel((1590, 890))
    assert r > g
    r, g, _ = green.image.getpixel((1590, 890))
    assert g > r
    assert dominant_colour(product(colour=(210, 30, 30))) == pytest.approx((210, 30, 30), abs=12)


def test_long_texts_are_wrapped_and_fit():
    name = "Supercalifragilisticexpialidocious-Ultra-Wide-Stainless-Steel " * 6
    banner = by_kind(compose_listing(product(), product_name=name, vendor="V" * 150,
                                     description="word " * 500))["banner"].image
    right_margin = banner.crop((1515, 0, 1600, 900)).convert("L")
    assert min(pixels(right_margin)) > 120  # no text runs off the right edge


def test_deterministic_bytes():
    def render():
        return [r.to_bytes() for r in compose_listing(
            product(border=30, background=(245, 245, 245)), product_name="Same Every Time",
            vendor="Acme", description="Identical input, identical output.")]
    assert render() == render()
