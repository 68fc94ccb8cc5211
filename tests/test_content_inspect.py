"""jobs.content.inspect: type sniffing, metadata stripping, bomb refusal, video probe, resize."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image, ImageSequence, PngImagePlugin

from core.errors import InvalidRequest, UnsupportedMediaType
from jobs.content import inspect

BIG = 40_000_000
GPS = 0x8825
ORIENTATION = 0x0112


def write(path, data):
    path.write_bytes(data)
    return str(path)


def image_bytes(image, fmt, **options):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient(width, height, mode="RGB"):
    image = Image.new("RGB", (width, height))
    image.putdata([(x * 255 // width, y * 255 // height, 128)
                   for y in range(height) for x in range(width)])
    return image.convert(mode)


def problem(exc):
    return exc.value.details[0]["problem"]


def exif_with_gps(orientation=1):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS).update({1: "N", 2: (52.0, 22.0, 1.0)})
    return exif


def test_jpeg_exif_orientation_applied_and_gps_removed(tmp_path):
    exif = exif_with_gps(orientation=6)  # stored sideways: shown turned 90 degrees clockwise
    icc = b"fake-icc-profile-bytes"
    path = write(tmp_path / "photo.jpg",
                 image_bytes(gradient(40, 20), "JPEG", exif=exif, icc_profile=icc))
    with Image.open(path) as before:
        assert before.getexif()[ORIENTATION] == 6 and GPS in before.getexif()

    media = inspect.clean(path, max_pixels=BIG)

    assert media == inspect.Media("image/jpeg", "image", "jpg", 20, 40, None)
    with Image.open(path) as after:
        assert after.size == (20, 40)
        assert dict(after.getexif()) == {}
        assert "exif" not in after.info and "xmp" not in after.info
        assert after.info.get("icc_profile") == icc
    assert not [name for name in os.listdir(tmp_path) if name != "photo.jpg"]


def test_png_text_chunks_removed(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_text("Comment", "taken at home", zip=True)
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>GPS</x:xmpmeta>")
    path = write(tmp_path / "a.png", image_bytes(gradient(16, 8, "RGBA"), "PNG", pnginfo=info))
    with Image.open(path) as before:
        assert before.text["Author"] == "Jane Doe"

    media = inspect.clean(path, max_pixels=BIG)

    assert (media.content_type, media.width, media.height) == ("image/png", 16, 8)
    with Image.open(path) as after:
        assert after.text == {} and after.mode == "RGBA"
        assert not {"Author", "Comment", "xmp", "XML:com.adobe.xmp"} & set(after.info)


def test_animated_gif_keeps_frames_timing_and_loop(tmp_path):
    frames = [Image.new("RGB", (12, 10), (n * 60, 255 - n * 60, 0)) for n in range(4)]
    path = write(tmp_path / "a.gif", image_bytes(
        frames[0], "GIF", save_all=True, append_images=frames[1:], duration=[50, 60, 70, 80],
        loop=0, comment=b"secret"))
    with Image.open(path) as before:
        assert before.n_frames == 4 and before.info["comment"] == b"secret"

    media = inspect.clean(path, max_pixels=BIG)

    assert media.content_type == "image/gif" and (media.width, media.height) == (12, 10)
    with Image.open(path) as after:
        assert after.n_frames == 4 and after.info.get("loop") == 0
        assert "comment" not in after.info
        assert [f.info["duration"] for f in ImageSequence.Iterator(after)] == [50, 60, 70, 80]


def test_animated_webp_keeps_frames(tmp_path):
    frames = [Image.new("RGB", (10, 10), (n * 60, 0, 0)) for n in range(3)]
    path = write(tmp_path / "a.webp", image_bytes(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0,
        exif=exif_with_gps()))
    with Image.open(path) as before:
        assert GPS in before.getexif()

    inspect.clean(path, max_pixels=BIG)

    with Image.open(path) as after:
        assert after.n_frames == 3 and "exif" not in after.info


def test_decompression_bomb_refused_before_decoding(tmp_path):
    # 20000 x 20000 one-bit pixels (400 million) compress to a few KB.
    data = image_bytes(Image.new("1", (20000, 20000)), "PNG", optimize=True)
    assert len(data) < 100_000
    path = write(tmp_path / "bomb.png", data)
    with pytest.raises(InvalidRequest) as exc:
        inspect.clean(path, max_pixels=BIG)
    assert exc.value.code == "INVALID_REQUEST"
    assert exc.value.details == [{"field": "file",
                                  "problem": "the image has more than 40000000 pixels"}]
    with open(path, "rb") as handle:
        assert handle.read() == data  # left as it was


def test_pillow_bomb_warning_is_a_refusal(tmp_path):
    # 100 million pixels: over Pillow's MAX_IMAGE_PIXELS (a warning) though under max_pixels.
    path = write(tmp_path / "b.png", image_bytes(Image.new("1", (10000, 10000)), "PNG"))
    with pytest.raises(InvalidRequest) as exc:
        inspect.clean(path, max_pixels=200_000_000)
    assert problem(exc) == f"the image has more than {Image.MAX_IMAGE_PIXELS} pixels"


def test_animated_png_is_a_png_and_keeps_frames(tmp_path):
    frames = [Image.new("RGB", (20, 10), (n * 80, 0, 0)) for n in range(3)]
    path = write(tmp_path / "a.png", image_bytes(frames[0], "PNG", save_all=True,
                                                 append_images=frames[1:], duration=70))
    assert inspect.clean(path, max_pixels=BIG).content_type == "image/png"
    with Image.open(path) as after:
        assert after.n_frames == 3


def test_max_pixels_honoured(tmp_path):
    path = write(tmp_path / "a.png", image_bytes(Image.new("RGB", (200, 100)), "PNG"))
    with pytest.raises(InvalidRequest) as exc:
        inspect.clean(path, max_pixels=19_999, field="upload")
    assert exc.value.details[0]["field"] == "upload"
    assert "19999 pixels" in problem(exc)
    assert inspect.clean(path, max_pixels=20_000).width == 200


def test_truncated_jpeg_refused(tmp_path):
    data = image_bytes(gradient(64, 64), "JPEG", quality=95)
    path = write(tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(InvalidRequest) as exc:
        inspect.clean(path, max_pixels=BIG)
    assert exc.value.code == "INVALID_REQUEST" and "truncated" in problem(exc)


@pytest.mark.parametrize(("data", "detected"), [
    (b"just some words, not a picture\n", "unknown"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "application/pdf"),
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "application/x-executable"),
])
def test_other_types_named_jpg_refused_415(tmp_path, data, detected):
    path = write(tmp_path / "innocent.jpg", data)
    with pytest.raises(UnsupportedMediaType) as exc:
        inspect.clean(path, max_pixels=BIG)
    assert exc.value.code == "UNSUPPORTED_MEDIA_TYPE"
    assert exc.value.details[0]["field"] == "file"
    assert detected in problem(exc) and "image/jpeg" in problem(exc)


def test_empty_file_refused(tmp_path):
    with pytest.raises(InvalidRequest) as exc:
        inspect.sniff(write(tmp_path / "e.png", b""))
    assert exc.value.details == [{"field": "file", "problem": "the file is empty"}]


def test_sniff_ignores_the_name(tmp_path):
    path = write(tmp_path / "really.gif", image_bytes(Image.new("RGB", (2, 2)), "PNG"))
    assert inspect.sniff(path) == "image/png"


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    import imageio_ffmpeg

    path = str(tmp_path_factory.mktemp("video") / "clip.mp4")
    writer = imageio_ffmpeg.write_frames(path, (32, 24), fps=10, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=2,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for n in range(10):
        writer.send(bytes([n * 20]) * (32 * 24 * 3))
    writer.close()
    return path


def test_mp4_probed(mp4):
    with open(mp4, "rb") as handle:
        original = handle.read()
    media = inspect.clean(mp4, max_pixels=BIG)
    assert (media.content_type, media.kind, media.ext) == ("video/mp4", "video", "mp4")
    assert (media.width, media.height) == (32, 24)
    assert 0 < media.duration <= 2
    with open(mp4, "rb") as handle:
        assert handle.read() == original  # videos are probed, not rewritten


@pytest.mark.parametrize(("ext", "codec", "content_type"), [
    ("webm", "libvpx-vp9", "video/webm"), ("mov", "libx264", "video/quicktime")])
def test_webm_and_mov_probed(tmp_path, ext, codec, content_type):
    import imageio_ffmpeg

    path = str(tmp_path / f"clip.{ext}")
    writer = imageio_ffmpeg.write_frames(path, (32, 24), fps=10, codec=codec,
                                         pix_fmt_out="yuv420p", macro_block_size=2,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for n in range(5):
        writer.send(bytes([n * 40]) * (32 * 24 * 3))
    writer.close()
    media = inspect.clean(path, max_pixels=1)
    assert (media.content_type, media.ext, media.width, media.height) == (
        content_type, ext, 32, 24)
    assert media.duration > 0


def test_video_too_long_refused(mp4):
    with pytest.raises(InvalidRequest) as exc:
        inspect.clean(mp4, max_pixels=BIG, max_video_seconds=0.5)
    assert "at most 0.5 s" in problem(exc)


def test_unreadable_video_refused(tmp_path, mp4):
    with open(mp4, "rb") as handle:
        head = handle.read(64)  # the ftyp box says mp4; the rest is noise
    path = write(tmp_path / "broken.mp4", head + b"\x00garbage" * 200)
    with pytest.raises(InvalidRequest) as exc:
        inspect.clean(path, max_pixels=BIG)
    assert problem(exc) == "the file is not a readable video"


def test_resize_refuses_video(mp4):
    with pytest.raises(InvalidRequest):
        inspect.resize(mp4, 10, 10)


@pytest.fixture
def landscape(tmp_path):
    return write(tmp_path / "l.jpg", image_bytes(gradient(400, 200), "JPEG"))


@pytest.mark.parametrize(("width", "height", "mode", "size"), [
    (100, 100, "fit", (100, 50)),
    (100, None, "fit", (100, 50)),
    (None, 50, "fit", (100, 50)),
    ("80", "80", "fit", (80, 40)),
    (100, 100, "fill", (100, 100)),
    (30, 120, "fill", (30, 120)),
    (800, None, "fit", (800, 400)),
])
def test_resize_sizes(landscape, width, height, mode, size):
    data, content_type = inspect.resize(landscape, width, height, mode)
    assert content_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as out:
        assert out.format == "JPEG" and out.size == size


def test_resize_fit_never_beyond_4096(tmp_path):
    path = write(tmp_path / "tall.png", image_bytes(Image.new("RGB", (10, 20)), "PNG"))
    data, _ = inspect.resize(path, 4096, None)
    with Image.open(io.BytesIO(data)) as out:
        assert out.size == (2048, 4096)


def test_resize_fill_crops_the_centre(tmp_path):
    image = Image.new("RGB", (300, 100), (255, 0, 0))
    image.paste((0, 0, 255), (100, 0, 200, 100))  # blue middle third
    path = write(tmp_path / "stripes.png", image_bytes(image, "PNG"))
    data, content_type = inspect.resize(path, 50, 50, "fill")
    assert content_type == "image/png"
    with Image.open(io.BytesIO(data)) as out:
        rgb = out.convert("RGB")
        assert out.size == (50, 50)
        for corner in ((25, 25), (2, 2), (47, 47)):  # all blue: the red sides were cut
            red, _, blue = rgb.getpixel(corner)
            assert red < 8 and blue > 247


def test_resize_keeps_format_and_gif_first_frame(tmp_path):
    frames = [Image.new("P", (40, 40), c) for c in (1, 2)]
    path = write(tmp_path / "a.gif", image_bytes(frames[0], "GIF", save_all=True,
                                                 append_images=frames[1:]))
    data, content_type = inspect.resize(path, 20, 20)
    assert content_type == "image/gif"
    with Image.open(io.BytesIO(data)) as out:
        assert out.size == (20, 20) and getattr(out, "n_frames", 1) == 1
    webp = write(tmp_path / "a.webp", image_bytes(Image.new("RGBA", (40, 20)), "WEBP"))
    data, content_type = inspect.resize(webp, 10, None, fmt="png")
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (10, 5)


@pytest.mark.parametrize(("width", "height", "mode", "field"), [
    (0, 10, "fit", "width"),
    (10, 4097, "fit", "height"),
    ("abc", None, "fit", "width"),
    (-5, None, "fit", "width"),
    (1.5, None, "fit", "width"),
    (True, None, "fit", "width"),
    (None, None, "fit", "width"),
    (10, 10, "stretch", "mode"),
    (10, None, "fill", "mode"),
])
def test_resize_bad_params(landscape, width, height, mode, field):
    with pytest.raises(InvalidRequest) as exc:
        inspect.resize(landscape, width, height, mode)
    assert exc.value.code == "INVALID_REQUEST"
    assert exc.value.details[0]["field"] == field
