"""generate-video end to end: the tiny pipeline the fixtures build, a real `gateway worker`,
the HTTP app, and the clip's files decoded back (PNG frames, animated WebP, H.264 MP4)."""

from __future__ import annotations

import hashlib
import io

import imageio_ffmpeg
import pytest
from PIL import Image

from async_support import cancel_while_running, output_path, poll
from conftest import bearer, ledger_sum

pytestmark = pytest.mark.slow

ACTION = "generate-video"


def post(client, key, action, body, **params):
    return client.simulate_post(f"/zapier/v1/{action}", json=body, headers=bearer(key),
                                params=params or None)


def estimate(client, key, body):
    return client.simulate_post(f"/zapier/v1/{ACTION}/estimate", json=body,
                                headers=bearer(key))


def run(client, key, action, body):
    """Call through HTTP and wait for the end (generously: the cores may be shared)."""
    resp = post(client, key, action, body, wait=0)
    assert resp.status_code == 202, resp.json
    return resp, poll(client, key, resp.json["data"]["composition"]["uid"], timeout=240)


def test_clip_through_a_real_worker_then_cancel(gclient, gen_account, gworker, gconfig):
    """One worker for the whole story (a fresh worker's first generation is the slow part):
    a clip decoded back, its price, its first frame, a format choice, then a cancel."""
    account_id, key = gen_account(100)
    body = {"prompt": "a red bicycle by the sea", "modelName": "tiny", "width": 64,
            "height": 64, "steps": 4, "seed": 777, "frames": 4, "fps": 5, "strength": 0.5}
    quoted = estimate(gclient, key, body)
    assert quoted.status_code == 200, quoted.json
    price = quoted.json["data"]["credits"]

    resp, comp = run(gclient, key, ACTION, body)
    assert comp["status"] == "completed", comp
    assert resp.json["meta"]["creditsUsed"] == price
    assert ledger_sum(account_id) == (100 - price, 100 - price)

    videos = [o for o in comp["outputs"] if o["type"] == "video"]
    frames = [o for o in comp["outputs"] if o["type"] == "frame"]
    # the animated files come first, then one entry per frame
    assert comp["outputs"] == videos + frames
    assert [v["format"] for v in videos] == ["webp", "mp4"]
    for video in videos:
        assert (video["width"], video["height"], video["frameCount"], video["fps"],
                video["seed"], video["model"]) == (64, 64, 4, 5, 777, "tiny")
    assert [f["frameNumber"] for f in frames] == [0, 1, 2, 3]
    assert {f["frameCount"] for f in frames} == {4}
    assert [f["seed"] for f in frames] == [777, 778, 779, 780]

    pngs = []
    for frame in frames:
        assert frame["url"].split("?")[0].endswith(f"/frame-{frame['frameNumber']:03d}.png")
        data = output_path(gconfig, frame["url"]).read_bytes()
        image = Image.open(io.BytesIO(data))
        image.load()
        assert (image.format, image.size, frame["format"]) == ("PNG", (64, 64), "png")
        assert (frame["width"], frame["height"]) == (64, 64)
        pngs.append(image.convert("RGB"))
    # chained frames: each one differs from the previous (re-denoised with its own seed)
    digests = [hashlib.sha256(p.tobytes()).hexdigest() for p in pngs]
    assert len(set(digests)) == 4

    webp = Image.open(output_path(gconfig, videos[0]["url"]))
    assert (webp.format, webp.size, webp.n_frames, webp.is_animated) == ("WEBP", (64, 64), 4,
                                                                         True)
    assert webp.info["loop"] == 0
    for n in range(4):
        webp.seek(n)
        webp.load()
        assert webp.size == (64, 64)
        assert webp.info["duration"] == 200  # 1000 / fps

    reader = imageio_ffmpeg.read_frames(str(output_path(gconfig, videos[1]["url"])))
    meta = next(reader)
    decoded = list(reader)
    assert tuple(meta["size"]) == (64, 64) and meta["fps"] == 5
    assert len(decoded) == 4 and all(len(f) == 64 * 64 * 3 for f in decoded)

    # the first frame is the text-to-image picture of the same seed and settings
    image_body = {k: body[k] for k in ("prompt", "modelName", "width", "height", "steps",
                                       "seed")}
    image_resp, image = run(gclient, key, "generate-image", image_body)
    still = output_path(gconfig, image["outputs"][0]["url"]).read_bytes()
    assert hashlib.sha256(still).digest() == hashlib.sha256(
        output_path(gconfig, frames[0]["url"]).read_bytes()).digest()

    # one post per clip, its poster the first frame
    listed = gclient.simulate_get("/list-posts", params={"contentType": "generated-video"},
                                  headers=bearer(key)).json["data"]["itemList"]
    assert len(listed) == 1
    assert listed[0]["cardPoster"] == frames[0]["url"]

    # format=mp4 only: no WebP, frames still listed
    only_resp, comp = run(gclient, key, ACTION, {**body, "frames": 2, "format": "mp4"})
    assert comp["status"] == "completed", comp
    assert [(o["type"], o["format"]) for o in comp["outputs"]] == [
        ("video", "mp4"), ("frame", "png"), ("frame", "png")]

    spent = price + sum(r.json["meta"]["creditsUsed"] for r in (image_resp, only_resp))
    assert ledger_sum(account_id) == (100 - spent, 100 - spent)

    # cancelled between denoising steps: refunded once, nothing kept
    body = {"prompt": "slow", "modelName": "tiny", "width": 64, "height": 64,
            "steps": 50, "frames": 16, "strength": 0.9, "sampler": "Euler"}
    resp = post(gclient, key, ACTION, body, wait=0)
    assert resp.status_code == 202, resp.json
    uid = resp.json["data"]["composition"]["uid"]
    charged = resp.json["meta"]["creditsUsed"]
    assert charged >= 1 and ledger_sum(account_id)[1] == 100 - spent - charged
    comp = cancel_while_running(gclient, key, uid, min_progress=5, timeout=120)
    assert comp["progress"] < 90
    final = poll(gclient, key, uid, timeout=60)
    assert final["status"] == "cancelled", final
    assert final["refundReceipt"] and final["outputs"] == []
    assert ledger_sum(account_id) == (100 - spent, 100 - spent)


def test_price_follows_the_denoising_work(gclient, gen_account):
    account_id, key = gen_account(5)
    body = {"prompt": "x", "modelName": "tiny", "width": 256, "height": 256, "steps": 20}

    def credits(**extra):
        resp = estimate(gclient, key, {**body, **extra})
        assert resp.status_code == 200, resp.json
        return resp.json["data"]["credits"]

    # 2 credits x (256x256 / 512x512) x (20 + 7 x int(20 x 0.45)) / 20 = 2 x 0.25 x 4.15
    # = 2.075 -> 3
    assert credits() == 3
    assert credits(frames=8) == 3
    assert credits(frames=16) > credits(frames=8) > credits(frames=4)
    # more strength, more re-denoising per frame: 2 x 0.25 x (20 + 15 x 18) / 20 = 7.25 -> 8
    assert credits(frames=16, strength=0.9) == 8
    # the price factor of tiny-b doubles it: 2.075 x 2 = 4.15 -> 5
    assert credits(modelName="tiny-b") == 5
    catalogue = gclient.simulate_get("/zapier/v1/actions", headers=bearer(key)).json
    item = next(a for a in catalogue["data"]["items"] if a["name"] == ACTION)
    assert item["async"] is True and "strength" in item["pricing"]
    fields = {f["key"]: f for f in item["inputFields"]}
    assert fields["format"]["choices"] == ["webp", "mp4", "both"]
    assert (fields["frames"]["default"], fields["fps"]["default"],
            fields["strength"]["default"], fields["format"]["default"]) == (8, 8, 0.45, "both")
    # too expensive for the balance: refused, nothing queued
    resp = post(gclient, key, ACTION, {**body, "frames": 16, "strength": 0.9})
    assert resp.status_code == 403
    assert resp.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert ledger_sum(account_id) == (5, 5)


def test_validation_errors_charge_nothing(gclient, gen_account):
    account_id, key = gen_account(50)
    base = {"prompt": "x", "modelName": "tiny", "width": 64, "height": 64, "steps": 4}
    cases = [
        ({**base, "frames": 17}, {"frames"}),  # tiny's maxFrames is 16
        ({**base, "frames": 1}, {"frames"}),
        ({**base, "input": "https://example.com/a.png"}, {"input"}),
        ({**base, "controlNetPreset": "openpose"}, {"controlNetPreset"}),
        ({**base, "modelName": "nope"}, {"modelName"}),
        ({**base, "modelName": "nope", "input": "x"}, {"modelName", "input"}),
        ({**base, "steps": 2, "strength": 0.3}, {"strength"}),  # int(0.6) = 0 steps
        ({**base, "strength": 0.95}, {"strength"}),
        ({**base, "fps": 31}, {"fps"}),
        ({**base, "format": "gif"}, {"format"}),
        ({**base, "restoreFaces": True}, {"restoreFaces"}),
        ({**base, "width": 512, "height": 512}, {"width"}),
    ]
    for body, fields in cases:
        for resp in (post(gclient, key, ACTION, body), estimate(gclient, key, body)):
            assert resp.status_code == 400, (body, resp.json)
            assert resp.json["error"]["code"] == "INVALID_REQUEST"
            assert fields <= {d["field"] for d in resp.json["error"]["details"]}, resp.json
    refused = post(gclient, key, ACTION, {**base, "controlNetPreset": "canny"}).json
    assert "not supported by this gateway" in refused["error"]["message"]
    # empty values of the unsupported fields are the same as leaving them out
    assert estimate(gclient, key, {**base, "input": "", "controlNetPreset": ""}).status_code \
        == 200
    listed = gclient.simulate_get("/zapier/v1/compositions", headers=bearer(key)).json
    assert listed["data"]["items"] == []
    assert ledger_sum(account_id) == (50, 50)
