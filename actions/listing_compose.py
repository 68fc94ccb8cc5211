"""Marketplace listing images from one product photo (``generate-product-listing``).

Pure Pillow, no I/O: ``compose_listing`` turns a decoded photo into a square main image
(the product alone on white, as marketplaces require) and a 1600x900 banner with the
product name, vendor and description. ``scenes`` lays out the same images for a generated
background (``actions.product_listing``): the product cut out, an init canvas and a mask,
and ``Scene.finish`` to put the product back on the model's picture. Everything is
deterministic (no randomness, fixed fonts and encoder settings), so the same input gives
the same bytes, which keeps retried jobs and tests stable.
"""

from __future__ import annotations

import dataclasses
import io

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

MAIN_SIZE = 1200
MAIN_MARGIN = 0.08
BANNER_SIZE = (1600, 900)
BANNER_CARD = (80, 80, 820, 820)  # the product's white card on the banner
BANNER_TEXT_X = 900
PANEL_OPACITY = 220  # the text panel over a generated banner background
CUTOUT_GRID = 256  # the backdrop flood fill of a cut-out runs on at most this many cells a side
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


def trim_box(image: Image.Image, tolerance: int = TRIM_TOLERANCE):
    """The box ``trim`` keeps (in ``image``'s coordinates), or None to keep it all."""
    offset, box = (0, 0), None
    if image.mode == "RGBA":
        box = image.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
        image = image.crop(box) if box else image
        offset = box[:2] if box else (0, 0)
        flat = Image.new("RGBA", image.size, WHITE + (255,))
        flat.alpha_composite(image)
        rgb = flat.convert("RGB")
    else:
        rgb = image.convert("RGB")
    colour = _border_colour(rgb, tolerance)
    if colour is None:
        return box
    inner = _distance(rgb, colour).point(lambda v: 255 if v > tolerance else 0).getbbox()
    if not inner:
        return box
    return (offset[0] + inner[0], offset[1] + inner[1],
            offset[0] + inner[2], offset[1] + inner[3])


def trim(image: Image.Image, tolerance: int = TRIM_TOLERANCE) -> Image.Image:
    """Cut away a flat border: transparent margins, or margins of the corners' shared
    colour (within ``tolerance``), so the product itself is what gets scaled."""
    box = trim_box(image, tolerance)
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


def product_alpha(image: Image.Image, tolerance: int = TRIM_TOLERANCE) -> Image.Image:
    """The product's cut-out (an "L" mask: 255 product, 0 backdrop) of a photo after
    ``whiten_background``. A transparent photo keeps its own alpha. Otherwise the backdrop
    is the corners' shared colour where it reaches in from the edges, so a light area
    inside the product (a white label) stays product; a photo without a flat border (the
    corners are product) is all product."""
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] < 255:
        return image.getchannel("A")
    rgb = image.convert("RGB")
    colour = _border_colour(rgb, tolerance)
    if colour is None:
        return Image.new("L", rgb.size, 255)
    near = _distance(rgb, colour).point(lambda v: 255 if v <= tolerance else 0)
    # The flood fill runs on a coarse grid (ImageDraw.floodfill is pure Python): a cell is
    # backdrop when (nearly) all of it is the border colour. The frame joins every edge.
    scale = min(1.0, CUTOUT_GRID / max(rgb.size))
    grid = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
    coarse = near.resize(grid, Image.Resampling.BOX).point(lambda v: 255 if v >= 250 else 0)
    framed = Image.new("L", (grid[0] + 2, grid[1] + 2), 255)
    framed.paste(coarse, (1, 1))
    ImageDraw.floodfill(framed, (0, 0), 128)
    reached = framed.crop((1, 1, grid[0] + 1, grid[1] + 1)).point(
        lambda v: 255 if v == 128 else 0)
    # One cell wider, so the backdrop reaches the product's outline at full resolution.
    reached = reached.filter(ImageFilter.MaxFilter(3)).resize(rgb.size,
                                                              Image.Resampling.NEAREST)
    return ImageChops.invert(ImageChops.multiply(near, reached))


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


def _banner_background(dominant) -> Image.Image:
    """The banner's clean background: a soft gradient in the product's colour and a white
    card (with a soft shadow) for the product at the left."""
    left, right = _mix(dominant, WHITE, 0.9), _mix(dominant, WHITE, 0.75)
    mask = Image.linear_gradient("L").rotate(90).resize(BANNER_SIZE)
    canvas = Image.composite(Image.new("RGB", BANNER_SIZE, left),
                             Image.new("RGB", BANNER_SIZE, right), mask)
    shadow = Image.new("L", BANNER_SIZE, 0)
    ImageDraw.Draw(shadow).rounded_rectangle((BANNER_CARD[0], BANNER_CARD[1] + 14,
                                              BANNER_CARD[2], BANNER_CARD[3] + 14),
                                             radius=40, fill=70)
    shadow = shadow.filter(ImageFilter.GaussianBlur(18))
    canvas.paste(_mix(dominant, (0, 0, 0), 0.6), (0, 0), shadow)
    ImageDraw.Draw(canvas).rounded_rectangle(BANNER_CARD, radius=40, fill=WHITE)
    return canvas


def _banner_product_box(product) -> tuple[Image.Image, tuple[int, int]]:
    """The product fitted into the banner's card, and where it goes."""
    card = BANNER_CARD
    inner = card[2] - card[0] - 120
    fitted = _fit(product, (inner, inner))
    return fitted, (card[0] + (card[2] - card[0] - fitted.width) // 2,
                    card[1] + (card[3] - card[1] - fitted.height) // 2)


def _banner_text(canvas, dominant, *, product_name, vendor=None, description=None,
                 panel=False) -> None:
    """Vendor / name / description typeset on the right in high-contrast ink. ``panel``
    (generated backgrounds, whose colours are unknown): on a light translucent panel."""
    height = BANNER_SIZE[1]
    right = _mix(dominant, WHITE, 0.75)
    if panel:  # the darkest the panel can look, whatever is behind it
        right = _mix((0, 0, 0), WHITE, PANEL_OPACITY / 255)
    x, text_width = BANNER_TEXT_X, BANNER_SIZE[0] - BANNER_TEXT_X - 90
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
    if panel and any(lines for lines, *_ in blocks):
        layer = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
        ImageDraw.Draw(layer).rounded_rectangle(
            (x - 40, max(20, y - 40), BANNER_SIZE[0] - 50, min(height - 20, y + total + 40)),
            radius=32, fill=WHITE + (PANEL_OPACITY,))
        canvas.paste(layer, (0, 0), layer)
    draw = ImageDraw.Draw(canvas)
    for index, (lines, font, size, colour, gap) in enumerate(blocks):
        for line in lines:
            draw.text((x, y), line, font=font, fill=colour)
            y += round(size * 1.22)
        if colour == INK and index < len(blocks) - 1:  # a short accent rule under the name
            draw.rectangle((x, y + 4, x + 96, y + 10), fill=_accent(dominant, right))
            y += 14
        y += gap


def banner_image(product, *, product_name, vendor=None, description=None) -> Image.Image:
    """1600x900: a soft gradient in the product's colour, the product on a white card at
    the left, vendor / name / description typeset on the right in high-contrast ink."""
    dominant = dominant_colour(product)
    canvas = _banner_background(dominant)
    fitted, xy = _banner_product_box(product)
    _paste(canvas, fitted, xy)
    _banner_text(canvas, dominant, product_name=product_name, vendor=vendor,
                 description=description)
    return canvas


def _normalise(image: Image.Image) -> Image.Image:
    return whiten_background(image if image.mode in ("RGB", "RGBA") else image.convert("RGBA"))


def compose_listing(image, *, product_name, vendor=None, description=None) -> list[Rendered]:
    """The listing set: ``main`` (1200x1200, white, product centred) and ``banner``."""
    product = trim(_normalise(image))
    return [
        Rendered("main", main_image(product), "jpg"),
        Rendered("banner", banner_image(product, product_name=product_name, vendor=vendor,
                                        description=description), "jpg"),
    ]


# Generated backgrounds (LISTING_BACKGROUND_MODEL): the same layout, the background left to
# a diffusion model. ``scenes`` lays each listing image out exactly as the compositor does;
# the caller generates a picture from ``Scene.canvas`` / ``Scene.mask`` and ``Scene.finish``
# puts the product back on top, unchanged, and typesets the banner's text.

@dataclasses.dataclass
class Scene:
    kind: str  # "main" | "banner"
    background: Image.Image  # the compositor's clean background, at the listing size
    product: Image.Image  # the compositor's fitted product (RGB), placed at ``xy``
    alpha: Image.Image  # "L", the product's cut-out at the same size
    xy: tuple[int, int]
    dominant: tuple[int, int, int]
    text: dict | None = None  # banner: product_name, vendor, description

    @property
    def size(self) -> tuple[int, int]:
        return self.background.size

    def canvas(self) -> Image.Image:
        """The init image: the clean background with the product cut out on it."""
        canvas = self.background.copy()
        canvas.paste(self.product, self.xy, self.alpha)
        return canvas

    def mask(self) -> Image.Image:
        """What to repaint ("L", white): everything but the product."""
        mask = Image.new("L", self.size, 255)
        mask.paste(ImageChops.invert(self.alpha), self.xy)
        return mask

    def finish(self, generated: Image.Image) -> Rendered:
        """The listing image: ``generated`` at the listing size, the product pasted back
        with its cut-out (its pixels exactly the compositor's), the banner's text on a
        light panel."""
        canvas = generated.convert("RGB")
        if canvas.size != self.size:
            canvas = canvas.resize(self.size, Image.Resampling.LANCZOS)
        canvas.paste(self.product, self.xy, self.alpha)
        if self.text is not None:
            _banner_text(canvas, self.dominant, panel=True, **self.text)
        return Rendered(self.kind, canvas, "jpg")


def scenes(image, *, product_name, vendor=None, description=None) -> list[Scene]:
    """``main`` and ``banner`` laid out as ``compose_listing`` does, for a generated
    background: same trim, scale and position, plus the product's cut-out."""
    whitened = _normalise(image)
    box = trim_box(whitened)
    product = whitened.crop(box) if box else whitened
    alpha = product_alpha(whitened)
    alpha = alpha.crop(box) if box else alpha
    dominant = dominant_colour(product)

    inner = round(MAIN_SIZE * (1 - 2 * MAIN_MARGIN))
    main_product = _fit(product, (inner, inner))
    main_alpha = alpha.resize(main_product.size, Image.Resampling.LANCZOS)
    banner_product, banner_xy = _banner_product_box(product)
    banner_alpha = alpha.resize(banner_product.size, Image.Resampling.LANCZOS)
    return [
        Scene("main", Image.new("RGB", (MAIN_SIZE, MAIN_SIZE), WHITE),
              main_product.convert("RGB"), main_alpha, ((MAIN_SIZE - main_product.width) // 2,
                           (MAIN_SIZE - main_product.height) // 2), dominant),
        Scene("banner", _banner_background(dominant), banner_product.convert("RGB"),
              banner_alpha, banner_xy, dominant,
              {"product_name": product_name, "vendor": vendor, "description": description}),
    ]
