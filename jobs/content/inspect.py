"""Inspect and clean an uploaded file on local disk before anything is stored or charged.

The type is read from the bytes (``filetype``), never from the file name or a client
``Content-Type``, so a renamed PDF or executable is refused whatever it claims to be.
Images are checked against a pixel budget from the header alone (so a tiny file claiming
a huge canvas is refused before it is decoded), decoded once to prove they are whole, then
re-encoded without EXIF/GPS/XMP/text metadata: uploads are often phone photos carrying the
place they were taken. Videos are probed with the ffmpeg binary bundled by imageio-ffmpeg.
``resize`` makes the ``getFile?width=&height=&mode=`` renditions of seed 003.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import struct
import tempfile
import warnings

import filetype
from PIL import Image, ImageOps, ImageSequence

from core.errors import InvalidRequest, UnsupportedMediaType

ALLOWED = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif",
           "video/mp4": "mp4", "video/quicktime": "mov", "video/webm": "webm"}
# filetype names some members of an allowed family by their own type: an animated PNG is a
# PNG and an M4V is an MP4 container, so both are accepted as their family.
ALIASES = {"image/apng": "image/png", "video/x-m4v": "video/mp4"}
PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP",
              "image/gif": "GIF"}
MAX_SIDE = 4096  # the largest rendition side resize makes
# An animation is decoded and re-encoded whole, so its frames together may hold at most
# this many times max_pixels (a few hundred identical frames compress to almost nothing).
ANIMATION_FACTOR = 4
# What an image's info may keep through clean: none of it says anything about the person.
KEEP_INFO = ("icc_profile", "transparency", "background", "duration", "loop")
# Pillow's ways of saying "these bytes are not a whole image of this format".
BROKEN = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error,
          Image.DecompressionBombError)


@dataclasses.dataclass(frozen=True)
class Media:
    content_type: str
    kind: str  # "image" | "video"
    ext: str
    width: int | None
    height: int | None
    duration: float | None


def _invalid(field, problem):
    return InvalidRequest(f"{field}: {problem}", details=[{"field": field, "problem": problem}])


def sniff(path, field="file") -> str:
    """The allowed content type the bytes of ``path`` are, else 415 naming what they are."""
    if os.path.getsize(path) == 0:
        raise _invalid(field, "the file is empty")
    guess = filetype.guess(path)
    detected = ALIASES.get(guess.mime, guess.mime) if guess else "unknown"
    if detected not in ALLOWED:
        allowed = ", ".join(ALLOWED)
        problem = f"the file's content is {detected}; allowed types are {allowed}"
        raise UnsupportedMediaType(f"{field}: {problem}",
                                   details=[{"field": field, "problem": problem}])
    return detected


def clean(path, *, max_pixels, max_video_seconds=3600, field="file") -> Media:
    """Check the upload at ``path`` and, for images, rewrite it in place without metadata."""
    content_type = sniff(path, field)
    if content_type.startswith("video/"):
        width, height, duration = _probe_video(path, max_video_seconds, field)
        return Media(content_type, "video", ALLOWED[content_type], width, height, duration)
    width, height = _clean_image(path, content_type, max_pixels, field)
    return Media(content_type, "image", ALLOWED[content_type], width, height, None)


@contextlib.contextmanager
def _open_image(path, content_type, max_pixels, field):
    """Open (header only) with Pillow limited to the sniffed format and refuse a canvas over
    ``max_pixels`` before any pixel is decoded; Pillow's own bomb warning is a refusal too."""
    too_big = _invalid(field, f"the image has more than {max_pixels} pixels")
    try:
        # catch_warnings is process-wide state; it only turns the bomb warning into an error.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path, formats=[PIL_FORMAT[content_type]])
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        # Pillow's own limit (Image.MAX_IMAGE_PIXELS) is lower than max_pixels here.
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        raise _invalid(field, f"the image has more than {limit} pixels") from None
    except BROKEN:
        raise _invalid(field, f"the file is not a readable {content_type} image") from None
    with image:
        width, height = image.size
        if width < 1 or height < 1 or width * height > max_pixels:
            raise too_big
        yield image


def _clean_image(path, content_type, max_pixels, field):
    fmt = PIL_FORMAT[content_type]
    with _open_image(path, content_type, max_pixels, field) as image:
        try:
            frames, options = _decoded_frames(image, max_pixels, field)
        except InvalidRequest:
            raise
        except BROKEN:
            raise _invalid(field, f"the file is not a readable {content_type} image "
                           "(corrupt or truncated)") from None
    first, rest = frames[0], frames[1:]
    if rest:
        options.update(save_all=True, append_images=rest)
    if fmt == "JPEG":
        options.update(quality=92, optimize=True)
        if first.mode not in ("RGB", "L", "CMYK"):
            first = first.convert("RGB")
    elif fmt == "WEBP":
        options.update(quality=92, method=4)
    _replace(path, lambda handle: first.save(handle, fmt, **options))
    return first.size


def _decoded_frames(image, max_pixels, field):
    """Every frame decoded, upright (EXIF orientation applied), with its info cut down to
    KEEP_INFO, plus the save options that keep the animation's timing and the ICC profile."""
    width, height = image.size
    count = getattr(image, "n_frames", 1) if getattr(image, "is_animated", False) else 1
    if count * width * height > ANIMATION_FACTOR * max_pixels:
        raise _invalid(field, f"the animation has too many frames ({count}) for its size")
    frames, durations = [], []
    for frame in ImageSequence.Iterator(image) if count > 1 else [image]:
        frame.load()
        upright = ImageOps.exif_transpose(frame)  # a copy, turned as its EXIF says
        upright.info = {key: frame.info[key] for key in KEEP_INFO if key in frame.info}
        frames.append(upright)
        durations.append(frame.info.get("duration", 100))
    # exif/xmp/comment are passed empty so no encoder falls back to the source's.
    options = {"exif": b"", "xmp": b"", "comment": b""}
    if icc := image.info.get("icc_profile"):
        options["icc_profile"] = icc
    if count > 1:
        options["duration"] = durations
        if "loop" in image.info:
            options["loop"] = image.info["loop"]
    return frames, options


def _replace(path, write):
    """Write the new bytes beside ``path`` and swap them in with one rename, so a reader (or
    a crash) never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".clean-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _probe_video(path, max_seconds, field):
    import imageio_ffmpeg

    unreadable = _invalid(field, "the file is not a readable video")
    try:
        reader = imageio_ffmpeg.read_frames(path)
        try:
            meta = next(reader)
        finally:
            reader.close()  # stops the ffmpeg process before it decodes anything more
    except (OSError, RuntimeError, StopIteration, ValueError, KeyError):
        raise unreadable from None
    width, height = (int(n) for n in meta.get("size") or (0, 0))
    if width < 1 or height < 1:
        raise unreadable
    if meta.get("rotate") in (90, 270):  # a phone's portrait clip is stored sideways
        width, height = height, width
    duration = float(meta.get("duration") or 0)
    if not (math.isfinite(duration) and duration > 0):
        # The container does not say (a recorded WebM often does not): count by decoding.
        try:
            duration = float(imageio_ffmpeg.count_frames_and_secs(path)[1])
        except (OSError, RuntimeError, ValueError):
            raise unreadable from None
        if not (math.isfinite(duration) and duration > 0):
            raise unreadable
    if duration > max_seconds:
        raise _invalid(field, f"the video is {duration:.0f} s long; at most {max_seconds} s")
    return width, height, duration


def _side(value, name):
    """A width or height as given in a query string or as an int; None means not given."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value)
    else:
        number = 0
    if not 1 <= number <= MAX_SIDE:
        raise _invalid(name, f"must be a whole number from 1 to {MAX_SIDE}")
    return number


def _target(src_w, src_h, width, height, mode):
    """Output size and (for fill) the centred crop box of the source, sides capped at
    MAX_SIDE."""
    if mode == "fill":
        scale = max(width / src_w, height / src_h)
        crop_w, crop_h = min(src_w, width / scale), min(src_h, height / scale)
        left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
        return (width, height), (left, top, left + crop_w, top + crop_h)
    scales = [s for s in (width and width / src_w, height and height / src_h) if s]
    scale = min(*scales, MAX_SIDE / src_w, MAX_SIDE / src_h)
    size = (max(1, min(MAX_SIDE, round(src_w * scale))),
            max(1, min(MAX_SIDE, round(src_h * scale))))
    return size, None


def resize(path, width, height, mode="fit", fmt=None) -> tuple[bytes, str]:
    """A rendition of the image at ``path``: ``fit`` inside width x height keeping the aspect
    (either side may be None), ``fill`` covering the box and cropped to it from the centre.
    Encoded as the source (an animation gives its first frame) unless ``fmt`` (an extension
    or content type of an allowed image type) says otherwise."""
    width, height = _side(width, "width"), _side(height, "height")
    if mode not in ("fit", "fill"):
        raise _invalid("mode", "must be fit or fill")
    if mode == "fill" and (width is None or height is None):
        raise _invalid("mode", "fill needs both width and height")
    if width is None and height is None:
        raise _invalid("width", "give width, height or both")
    source = sniff(path)
    if not source.startswith("image/"):
        raise _invalid("file", "only images can be resized")
    target = source
    if fmt is not None:
        by_ext = {ext: kind for kind, ext in ALLOWED.items() if kind.startswith("image/")}
        by_ext["jpeg"] = "image/jpeg"
        target = fmt if fmt in PIL_FORMAT else by_ext.get(str(fmt).lower().lstrip("."))
        if target is None:
            raise _invalid("format", f"must be one of {', '.join(sorted(by_ext))}")
    with _open_image(path, source, Image.MAX_IMAGE_PIXELS or 2**31, "file") as image:
        try:
            image.seek(0)
            image.load()
            icc = image.info.get("icc_profile")
            picture = ImageOps.exif_transpose(image)
        except BROKEN:
            raise _invalid("file", "the stored image is not readable") from None
    if picture.mode not in ("RGB", "RGBA", "L", "LA"):
        picture = picture.convert("RGBA" if "transparency" in picture.info
                                  or picture.mode in ("PA", "RGBa") else "RGB")
    size, box = _target(picture.width, picture.height, width, height, mode)
    picture = picture.resize(size, Image.Resampling.LANCZOS, box=box)
    out_fmt = PIL_FORMAT[target]
    options = {"icc_profile": icc} if icc else {}
    if out_fmt == "JPEG":
        options.update(quality=88, optimize=True)
        if picture.mode not in ("RGB", "L"):
            picture = picture.convert("RGB")
    elif out_fmt == "WEBP":
        options.update(quality=88, method=4)
    buffer = io.BytesIO()
    picture.save(buffer, out_fmt, **options)
    return buffer.getvalue(), target
