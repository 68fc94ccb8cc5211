"""Marketplace listing images from one product photo (``generate-product-listing``).

Pure Pillow, no I/O: ``compose_listing`` turns a decoded photo into a square main image
(the product alone on white, as marketplaces require) and a 1600x900 banner with the
product name, vendor and description. Everything is deterministic (no randomness, fixed
fonts and encoder settings), so the same input gives the same bytes, which keeps retried
jobs and tests stable.
"""

from __future__ import annotations

import dataclasses
import io

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

MAIN_SIZE = 1200
MAIN_MARGIN = 0.08
BANNER_SIZE = (1600, 900)
TRIM_TOLERANCE = 24  # per channel: JPEG noise in a "flat" border stays under this
WHITE = (255, 255, 255)
INK = (24, 24, 28)
_FORMATS = {"jpg": ("JPEG", {"quality": 90, "optimize": True, "subsampling": 0}),
            "png": ("PNG", {"optimize": True}), "webp": ("WEBP", {"quality": 90, "method": 4})}


@dataclasses.dataclass
class Rendered:
    kind: str  # "main" | "banner"
    image: Image.Image
    format: str  # "jpg" | "png" | "webp"

    def to_bytes(self) -> bytes:
        name, options = _FORMATS[self.format]
        buf = io.BytesIO()
        self.image.save(buf, name, **options)
        return buf.getvalue()


def _border_colour(rgb: Image.Image, tolerance: int):
    """The colour at least three corners share (within ``tolerance``), else None: with
    no common corner colour there is no flat border, and the corners are product."""
    w, h = rgb.size
    corners = [rgb.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    for colour in corners:
        near = [c for c in corners if max(abs(a - b) for a, b in zip(c, colour, strict=True))
                <= tolerance]
        if len(near) >= 3:
            return colour
    return None


def _distance(rgb: Image.Image, colour) -> Image.Image:
    """Per pixel, the largest per-channel difference from ``colour`` (an "L" image)."""
    diff = ImageChops.difference(rgb, Image.new("RGB", rgb.size, colour)).split()
    return ImageChops.lighter(ImageChops.lighter(diff[0], diff[1]), diff[2])


def trim(image: Image.Image, tolerance: int = TRIM_TOLERANCE) -> Image.Image:
    """Cut away a flat border: transparent margins, or margins of the corners' shared
    colour (within ``tolerance``), so the product itself is what gets scaled."""
    if image.mode == "RGBA":
        box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
        image = image.crop(box) if box else image
        flat = Image.new("RGBA", image.size, WHITE + (255,))
        flat.alpha_composite(image)
        rgb = flat.convert("RGB")
    else:
        rgb = image.convert("RGB")
    colour = _border_colour(rgb, tolerance)
    if colour is None:
        return image
    box = _distance(rgb, colour).point(lambda v: 255 if v > tolerance else 0).getbbox()
    return image.crop(box) if box else image


def whiten_background(image: Image.Image, tolerance: int = TRIM_TOLERANCE) -> Image.Image:
    """Turn an off-white studio background (light corners) into pure white, with a soft
    ramp so edges stay smooth. Near-white pixels inside the product shift to white too,
    which is invisible; opaque RGB photos only."""
    colour = _border_colour(image, tolerance) if image.mode == "RGB" else None
    if colour is None or min(colour) < 200 or colour == WHITE:
        return image
    mask = _distance(image, colour).point(lambda v: max(0, min(255, round(255 * (2 * tolerance - v)
                                                              / tolerance))))
    return Image.composite(Image.new("RGB", image.size, WHITE), image, mask)


def _fit(image: Image.Image, box: tuple[int, int]) -> Image.Image:
    scale = min(box[0] / image.width, box[1] / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _paste(canvas: Image.Image, product: Image.Image, xy: tuple[int, int]) -> None:
    if product.mode == "RGBA":
        canvas.paste(product, xy, product)
    else:
        canvas.paste(product, xy)


def main_image(product: Image.Image) -> Image.Image:
    """The product centred on white with ``MAIN_MARGIN`` on every side."""
    inner = round(MAIN_SIZE * (1 - 2 * MAIN_MARGIN))
    fitted = _fit(product, (inner, inner))
    canvas = Image.new("RGB", (MAIN_SIZE, MAIN_SIZE), WHITE)
    _paste(canvas, fitted, ((MAIN_SIZE - fitted.width) // 2, (MAIN_SIZE - fitted.height) // 2))
    return canvas


def dominant_colour(product: Image.Image) -> tuple[int, int, int]:
    """The most common colour that is not near-white, near-black or transparent."""
    small = product.convert("RGBA").resize((64, 64), Image.Resampling.BILINEAR)
    data = small.tobytes()
    pixels = [tuple(data[i:i + 3]) for i in range(0, len(data), 4)
              if data[i + 3] > 128 and 40 < sum(data[i:i + 3]) < 690]
    if not pixels:
        return (120, 130, 150)
    strip = Image.new("RGB", (len(pixels), 1))
    strip.putdata(pixels)
    quant = strip.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    _, index = max((count, -i) for count, i in quant.getcolors())  # ties: lowest index
    palette = quant.getpalette()
    return tuple(palette[-index * 3:-index * 3 + 3])


def _mix(colour, other, amount):
    return tuple(round(c + (o - c) * amount) for c, o in zip(colour, other, strict=True))


def _luminance(colour) -> float:
    def lin(c):
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a, b) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _font(size):
    return ImageFont.load_default(size=size)


def _wrap(text, font, width, max_lines) -> list[str]:
    """Greedy word wrap to ``width`` pixels (over-long words are split); when more than
    ``max_lines`` are needed the last kept line ends in an ellipsis."""
    tokens = []
    for word in " ".join(str(text or "").split()).split(" "):
        while len(word) > 1 and font.getlength(word) > width:
            cut = len(word) - 1
            while cut > 1 and font.getlength(word[:cut]) > width:
                cut -= 1
            tokens.append(word[:cut])
            word = word[cut:]
        tokens.append(word)
    lines, line = [], ""
    for token in tokens:
        candidate = f"{line} {token}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = token
        else:
            line = candidate
    lines += [line] if line else []
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last.rstrip(" ,.;:-") + "…"]
    return lines


def _accent(colour, background):
    """The product colour, darkened until it reads on ``background`` (WCAG AA, 4.5:1)."""
    for step in range(11):
        candidate = _mix(colour, (0, 0, 0), step / 10)
        if _contrast(candidate, background) >= 4.5:
            return candidate
    return INK


def banner_image(product, *, product_name, vendor=None, description=None) -> Image.Image:
    """1600x900: a soft gradient in the product's colour, the product on a white card at
    the left, vendor / name / description typeset on the right in high-contrast ink."""
    width, height = BANNER_SIZE
    dominant = dominant_colour(product)
    left, right = _mix(dominant, WHITE, 0.9), _mix(dominant, WHITE, 0.75)
    mask = Image.linear_gradient("L").rotate(90).resize(BANNER_SIZE)
    canvas = Image.composite(Image.new("RGB", BANNER_SIZE, left),
                             Image.new("RGB", BANNER_SIZE, right), mask)
    card = (80, 80, 820, 820)
    shadow = Image.new("L", BANNER_SIZE, 0)
    ImageDraw.Draw(shadow).rounded_rectangle((card[0], card[1] + 14, card[2], card[3] + 14),
                                             radius=40, fill=70)
    shadow = shadow.filter(ImageFilter.GaussianBlur(18))
    canvas.paste(_mix(dominant, (0, 0, 0), 0.6), (0, 0), shadow)
    draw = ImageDraw.Draw(canvas)
    draw.rounded_rectangle(card, radius=40, fill=WHITE)
    inner = card[2] - card[0] - 120
    fitted = _fit(product, (inner, inner))
    _paste(canvas, fitted, (card[0] + (card[2] - card[0] - fitted.width) // 2,
                            card[1] + (card[3] - card[1] - fitted.height) // 2))

    x, text_width = 900, width - 900 - 90
    blocks = []  # (lines, font, size, colour, gap after)
    if vendor:
        font = _font(34)
        blocks.append((_wrap(str(vendor).upper(), font, text_width, 1), font, 34,
                       _accent(dominant, right), 18))
    for size in (80, 72, 64, 56, 50, 44):
        font = _font(size)
        name_lines = _wrap(product_name, font, text_width, 3)
        if not name_lines or not name_lines[-1].endswith("…"):
            break
    blocks.append((name_lines, font, size, INK, 28))
    if description:
        font = _font(30)
        blocks.append((_wrap(description, font, text_width, 5), font, 30, (60, 60, 68), 0))
    total = sum(round(size * 1.22) * len(lines) + gap for lines, _, size, _, gap in blocks)
    total += 14 if description else 0
    y = max(60, (height - total) // 2)
    for index, (lines, font, size, colour, gap) in enumerate(blocks):
        for line in lines:
            draw.text((x, y), line, font=font, fill=colour)
            y += round(size * 1.22)
        if colour == INK and index < len(blocks) - 1:  # a short accent rule under the name
            draw.rectangle((x, y + 4, x + 96, y + 10), fill=_accent(dominant, right))
            y += 14
        y += gap
    return canvas


def compose_listing(image, *, product_name, vendor=None, description=None) -> list[Rendered]:
    """The listing set: ``main`` (1200x1200, white, product centred) and ``banner``."""
    product = trim(whiten_background(
        image if image.mode in ("RGB", "RGBA") else image.convert("RGBA")))
    return [
        Rendered("main", main_image(product), "jpg"),
        Rendered("banner", banner_image(product, product_name=product_name, vendor=vendor,
                                        description=description), "jpg"),
    ]
