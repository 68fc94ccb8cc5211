"""generate-product-listing with a generated background (LISTING_BACKGROUND_MODEL): through
the real HTTP app and a real `gateway worker` on the model's GPU queue, with the tiny
random-weight pipeline; and the default (no model) staying the Pillow compositor."""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import redis as redis_lib
from falcon.testing import TestClient
from PIL import Image, ImageChops, ImageDraw, ImageStat

from actions.listing_compose import compose_listing, scenes
from async_support import burst, poll, start_worker, stop_worker
from conftest import REDIS_BASE, bearer, ledger_sum, make_app
from jobs.models import Composition
from metering import db as dbmod

PRICE = 25
TEXT = {"product_name": "Ceramic Table Lamp", "vendor": "Lumen",
        "product_description": "Hand-glazed ceramic lamp"}


def product_photo() -> Image.Image:
    """A textured product (gradient oval, stripes, a white label) on a flat studio grey."""
    image = Image.new("RGB", (480, 360), (244, 244, 242))
    ramp = Image.linear_gradient("L").resize((280, 240)).point(lambda v: v * 3 // 4)
    body = Image.merge("RGB", (ramp, ramp.rotate(90), Image.new("L", ramp.size, 150)))
    draw = ImageDraw.Draw(body)
    for x in range(0, 280, 24):
        draw.rectangle((x, 0, x + 6, 240), fill=(20, 40, 90))
    draw.rectangle((100, 90, 180, 140), fill=(255, 255, 255))  # a label inside the product
    oval = Image.new("L", body.size, 0)
    ImageDraw.Draw(oval).ellipse((0, 0, 279, 239), fill=255)
    image.paste(body, (100, 60), oval)
    return image


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_host():
    body = png(product_photo())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path != "/lamp.png":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/lamp.png"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def bg_models(tiny_models, tmp_path_factory):
    """The session's tiny models plus ``tiny-i2i``: the same weights as an image-to-image
    model (``tiny`` is text-to-image, used through its derived inpainting pipeline)."""
    entries = json.loads(tiny_models.read_text())["models"]
    tiny = next(e for e in entries if e["id"] == "tiny")
    tiny["defaultSteps"] = 2  # two denoising steps an image keep these tests quick
    entries.append({**tiny, "id": "tiny-i2i", "name": "Tiny img2img", "kind": "image-to-image"})
    path = tmp_path_factory.mktemp("bg-models") / "models.json"
    path.write_text(json.dumps({"models": entries}))
    return path


@pytest.fixture(scope="module")
def bconfig(gconfig, bg_models):
    return gconfig.replace(models_file=str(bg_models), listing_background_model="tiny")


@pytest.fixture(scope="module")
def bworker(bconfig, bg_models, schema):
    proc = start_worker(bconfig, queues="gpu,webhooks", MODELS_FILE=bg_models,
                        LISTING_BACKGROUND_MODEL="tiny")
    yield proc
    stop_worker(proc)


def post(client, key, url, **extra):
    return client.simulate_post("/zapier/v1/generate-product-listing",
                                json={**TEXT, "product_image_url": url, **extra},
                                params={"wait": "0"}, headers=bearer(key))


def fetch_image(client, output) -> tuple[bytes, Image.Image]:
    got = client.simulate_get(output["url"][len("http://gateway.test"):])
    assert got.status_code == 200
    image = Image.open(io.BytesIO(got.content))
    assert image.format == "JPEG" and image.size == (output["width"], output["height"])
    return got.content, image.convert("RGB")


def queue_of(uid) -> str:
    with dbmod.connection():
        return Composition.get_by_id(uid).queue


def mean_diff(a, b, box) -> float:
    return max(ImageStat.Stat(ImageChops.difference(a.crop(box), b.crop(box))).mean)


def product_box(scene):
    """The middle of the placed product, well inside its outline."""
    x, y = scene.xy
    width, height = scene.product.size
    return (x + width // 4, y + height // 4, x + width * 3 // 4, y + height * 3 // 4)


def assert_generated_listing(client, comp, model):
    """Both images at the listing sizes, backgrounds generated, the product unchanged."""
    assert comp["status"] == "completed", comp.get("error")
    outputs = {o["kind"]: o for o in comp["outputs"]}
    assert set(outputs) == {"main", "banner"}
    assert (outputs["main"]["width"], outputs["main"]["height"]) == (1200, 1200)
    assert (outputs["banner"]["width"], outputs["banner"]["height"]) == (1600, 900)
    reference = {r.kind: r.image for r in compose_listing(product_photo(), **_compose_text())}
    layout = {s.kind: s for s in scenes(product_photo(), **_compose_text())}
    images = {}
    for kind, output in outputs.items():
        assert output["background"] == "generated" and output["model"] == model
        assert isinstance(output["seed"], int)
        data, image = fetch_image(client, output)
        images[kind] = data
        # The product's pixels are the compositor's (JPEG-encoded once) ...
        assert mean_diff(image, reference[kind], product_box(layout[kind])) < 2.5
        # ... while the background around it is not the compositor's.
        assert mean_diff(image, reference[kind], (0, 0, 60, 60)) > 8
    assert outputs["banner"]["seed"] == (outputs["main"]["seed"] + 1) % 2**32
    return outputs, images


def _compose_text():
    return {"product_name": TEXT["product_name"], "vendor": TEXT["vendor"],
            "description": TEXT["product_description"]}


def test_generated_background_end_to_end(bconfig, bworker, gen_account, photo_host):
    client = TestClient(make_app(bconfig))
    account_id, key = gen_account(100)
    events = redis_lib.Redis.from_url(REDIS_BASE).pubsub(ignore_subscribe_messages=True)
    events.psubscribe(f"{bconfig.redis_prefix}:comp:*")
    try:
        resp = post(client, key, photo_host)
        assert resp.status_code == 202, resp.text
        assert resp.json["meta"]["creditsUsed"] == PRICE
        uid = resp.json["data"]["composition"]["uid"]
        assert queue_of(uid) == "gpu.tiny"
        comp = poll(client, key, uid, timeout=90)
        seen, quiet_until = [], time.monotonic() + 1
        while time.monotonic() < quiet_until:
            message = events.get_message(timeout=0.1)
            if message is not None:
                seen.append(json.loads(message["data"]))
    finally:
        events.close()
    outputs, first = assert_generated_listing(client, comp, "tiny")
    assert comp["progress"] == 100
    # Progress is reported per denoising step (two steps per image, two images).
    steps = {e["progress"] for e in seen if e["status"] == "running" and 45 < e["progress"] < 96}
    assert len(steps) >= 4, seen
    assert ledger_sum(account_id) == (75, 75)

    # The seed is derived from the input; sending it back gives the same images.
    again = poll(client, key, post(client, key, photo_host, seed=outputs["main"]["seed"])
                 .json["data"]["composition"]["uid"], timeout=90)
    _, second = assert_generated_listing(client, again, "tiny")
    assert second == first
    assert ledger_sum(account_id) == (50, 50)  # 25 a listing, each charged once


def test_image_to_image_model_pastes_the_product_back(bconfig, bworker, gen_account,
                                                       photo_host):
    client = TestClient(make_app(bconfig.replace(listing_background_model="tiny-i2i")))
    account_id, key = gen_account(30)
    resp = post(client, key, photo_host, background_prompt="on a marble kitchen counter")
    assert resp.status_code == 202, resp.text
    uid = resp.json["data"]["composition"]["uid"]
    assert queue_of(uid) == "gpu.tiny-i2i"
    assert_generated_listing(client, poll(client, key, uid, timeout=90), "tiny-i2i")
    assert ledger_sum(account_id) == (5, 5)


def test_unknown_background_model_is_refused_before_charging(gconfig, gen_account,
                                                             photo_host, schema):
    client = TestClient(make_app(gconfig.replace(listing_background_model="no-such-model")))
    account_id, key = gen_account(30)
    resp = post(client, key, photo_host)
    assert resp.status_code == 503
    error = resp.json["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert "LISTING_BACKGROUND_MODEL" in error["message"] and "no-such-model" in error["message"]
    assert ledger_sum(account_id) == (30, 30)
    with dbmod.connection():
        assert Composition.select().where(Composition.account == account_id).count() == 0


def test_without_a_model_the_compositor_is_unchanged(gconfig, gclient, gen_account,
                                                     photo_host):
    assert gconfig.listing_background_model == ""
    account_id, key = gen_account(30)
    resp = post(gclient, key, photo_host, background_prompt="ignored here", seed=5)
    assert resp.status_code == 202, resp.text
    uid = resp.json["data"]["composition"]["uid"]
    assert queue_of(uid) == "cpu"
    burst(gconfig)
    comp = poll(gclient, key, uid, timeout=20)
    assert comp["status"] == "completed"
    expected = {r.kind: r.to_bytes() for r in compose_listing(product_photo(), **_compose_text())}
    for output in comp["outputs"]:
        assert output["background"] == "compositor" and "model" not in output
        data, _ = fetch_image(gclient, output)
        assert data == expected[output["kind"]]  # byte for byte what the compositor makes
    assert ledger_sum(account_id) == (5, 5)


def test_scene_cut_out_keeps_the_product_exactly():
    photo = product_photo()
    reference = {r.kind: r.image for r in compose_listing(photo, **_compose_text())}
    for scene in scenes(photo, **_compose_text()):
        # The studio backdrop is cut out; the white label inside the product is not.
        width, height = scene.product.size
        assert scene.alpha.getpixel((0, 0)) == 0 and scene.alpha.getpixel((width - 1, 0)) == 0
        label = scene.alpha.crop((width * 100 // 280, height * 90 // 240,
                                  width * 180 // 280, height * 140 // 240))
        assert label.getextrema() == (255, 255)
        assert scene.product.crop((width * 110 // 280, height * 100 // 240, width * 170 // 280,
                                   height * 130 // 240)).getextrema() == ((255, 255),) * 3
        mask = scene.mask()
        assert mask.getpixel((0, 0)) == 255 and mask.getpixel(
            (scene.xy[0] + width // 2, scene.xy[1] + height // 2)) == 0
        finished = scene.finish(Image.effect_noise((64, 64), 80).convert("RGB")).image
        assert finished.size == reference[scene.kind].size
        opaque = Image.new("L", finished.size, 0)
        opaque.paste(scene.alpha.point(lambda v: 255 if v == 255 else 0), scene.xy)
        diff = ImageChops.difference(finished, reference[scene.kind]).convert("L")
        assert ImageChops.multiply(diff, opaque).getbbox() is None  # exactly the same pixels
