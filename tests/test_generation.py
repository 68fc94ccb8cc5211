"""generate-image end to end: a tiny pipeline the test builds, loaded by the production
loader on a real worker, called through the HTTP app, paid for and refunded for real."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from async_support import cancel_while_running, output_path, poll
from conftest import bearer, ledger_sum

pytestmark = pytest.mark.slow


def read_output(config, url) -> bytes:
    return output_path(config, url).read_bytes()


def post(client, key, action, body, **params):
    return client.simulate_post(f"/zapier/v1/{action}", json=body, headers=bearer(key),
                                params=params or None)


def test_generate_image_png_of_requested_size_and_deterministic(gclient, make_account,
                                                                 gworker, gconfig):
    account_id, key = make_account(credits=100)
    body = {"prompt": "a red bicycle by the sea", "modelName": "tiny", "width": 96,
            "height": 64, "steps": 3, "seed": 1234, "cfgscale": 6.5}
    first = post(gclient, key, "generate-image", body, wait=60)
    assert first.status_code == 200, first.json
    comp = first.json["data"]["composition"]
    assert comp["status"] == "completed"
    assert first.json["meta"]["creditsUsed"] == 1
    (out,) = comp["outputs"]
    assert (out["format"], out["width"], out["height"], out["seed"]) == ("png", 96, 64, 1234)
    png = read_output(gconfig, out["url"])
    image = Image.open(io.BytesIO(png))
    image.load()
    assert (image.format, image.size) == ("PNG", (96, 64))
    # same seed -> identical bytes; another seed -> another picture
    again = post(gclient, key, "generate-image", body, wait=60).json["data"]["composition"]
    other = post(gclient, key, "generate-image", {**body, "seed": 1235},
                 wait=60).json["data"]["composition"]
    def digest(c):
        return hashlib.sha256(read_output(gconfig, c["outputs"][0]["url"])).digest()
    assert digest(again) == hashlib.sha256(png).digest()
    assert digest(other) != hashlib.sha256(png).digest()
    assert ledger_sum(account_id) == (97, 97)


def test_validation_errors_charge_nothing(gclient, make_account):
    account_id, key = make_account(credits=50)
    cases = [
        ({"prompt": "x", "modelName": "tiny", "cfgscale": 13}, "cfgscale"),
        ({"prompt": "x", "modelName": "tiny", "cfgscale": 0.5}, "cfgscale"),
        ({"prompt": "x", "modelName": "tiny", "width": 512, "height": 512}, "width"),
        ({"prompt": "x", "modelName": "nope"}, "modelName"),
        ({"prompt": "x", "modelName": "tiny", "steps": 51}, "steps"),
        ({"prompt": "x", "modelName": "tiny", "sampler": "Heun"}, "sampler"),
        ({"prompt": "x", "modelName": "tiny", "restoreFaces": True}, "restoreFaces"),
        ({"prompt": "x", "modelName": "tiny-b", "batchSize": 3}, "batchSize"),
        ({"prompt": "", "modelName": "tiny"}, "prompt"),
        ({"modelName": "tiny"}, "prompt"),
    ]
    for body, field in cases:
        resp = post(gclient, key, "generate-image", body)
        assert resp.status_code == 400, (body, resp.json)
        assert resp.json["error"]["code"] == "INVALID_REQUEST"
        assert field in {d["field"] for d in resp.json["error"]["details"]}, resp.json
    listed = gclient.simulate_get("/zapier/v1/compositions", headers=bearer(key)).json
    assert listed["data"]["items"] == []
    assert ledger_sum(account_id) == (50, 50)


def test_estimate_prices_by_input_without_debit(gclient, make_account):
    account_id, key = make_account(credits=5)
    small = gclient.simulate_post("/zapier/v1/generate-image/estimate", headers=bearer(key),
                                  json={"prompt": "x", "modelName": "tiny"})
    assert small.status_code == 200, small.json
    assert small.json["data"]["credits"] == 1
    assert small.json["data"]["affordable"] is True
    # 4 credits x (256x256 / 512x512) x (50 / 20) x 4 images = 4 x 0.25 x 2.5 x 4 = 10
    big = gclient.simulate_post("/zapier/v1/generate-image/estimate", headers=bearer(key),
                                json={"prompt": "x", "modelName": "tiny", "width": 256,
                                      "height": 256, "steps": 50, "batchSize": 4})
    assert big.json["data"]["credits"] == 10
    assert big.json["data"]["affordable"] is False
    # the price factor of tiny-b doubles it
    b = gclient.simulate_post("/zapier/v1/generate-image/estimate", headers=bearer(key),
                              json={"prompt": "x", "modelName": "tiny-b", "width": 256,
                                    "height": 256, "steps": 50, "batchSize": 2})
    assert b.json["data"]["credits"] == 10
    bad = gclient.simulate_post("/zapier/v1/generate-image/estimate", headers=bearer(key),
                                json={"prompt": "x", "cfgscale": 20})
    assert bad.status_code == 400
    # too expensive for the balance: refused when called, nothing queued
    resp = post(gclient, key, "generate-image", {"prompt": "x", "modelName": "tiny",
                                                 "width": 256, "height": 256, "steps": 50,
                                                 "batchSize": 4})
    assert resp.status_code == 403
    assert resp.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert ledger_sum(account_id) == (5, 5)
    catalogue = gclient.simulate_get("/zapier/v1/actions", headers=bearer(key)).json
    item = next(a for a in catalogue["data"]["items"] if a["name"] == "generate-image")
    assert "steps" in item["pricing"] and item["async"] is True


def test_cancel_mid_denoise_refunds_once(gclient, gen_account, gworker, gconfig):
    account_id, key = gen_account(100)
    body = {"prompt": "slow", "modelName": "tiny", "width": 256, "height": 256,
            "steps": 50, "sampler": "Euler"}
    resp = post(gclient, key, "generate-image", body, wait=0)
    assert resp.status_code == 202
    uid = resp.json["data"]["composition"]["uid"]
    price = resp.json["meta"]["creditsUsed"]
    comp = cancel_while_running(gclient, key, uid, min_progress=10)
    assert comp["progress"] < 95
    final = poll(gclient, key, uid, timeout=60)
    assert final["status"] == "cancelled", final
    assert final["refundReceipt"] and final["outputs"] == []
    assert ledger_sum(account_id) == (100, 100)
    # cancelling again changes nothing
    again = gclient.simulate_post(f"/zapier/v1/compositions/{uid}/cancel",
                                  headers=bearer(key))
    assert again.status_code == 409
    assert ledger_sum(account_id) == (100, 100)
    assert price >= 1


def test_failure_inside_the_pipeline_refunds_once(gclient, make_account, gworker, gconfig,
                                                  tiny_models, tmp_path):
    """A model whose weights are corrupt fails on the worker: refunded, worker alive."""
    account_id, key = make_account(credits=20)
    broken = tiny_models.parent / "tiny-b" / "unet" / "diffusion_pytorch_model.safetensors"
    saved = broken.read_bytes()
    broken.write_bytes(saved[:200])
    try:
        resp = post(gclient, key, "generate-image", {"prompt": "x", "modelName": "tiny-b"},
                    wait=60)
    finally:
        broken.write_bytes(saved)
    comp = resp.json["data"]["composition"]
    assert comp["status"] == "failed", comp
    assert comp["error"]["code"] == "MODEL_UNAVAILABLE"
    assert comp["refundReceipt"]
    assert ledger_sum(account_id) == (20, 20)
    # the worker is still serving
    ok = post(gclient, key, "generate-image", {"prompt": "x", "modelName": "tiny"}, wait=60)
    assert ok.json["data"]["composition"]["status"] == "completed"


def test_events_stream_reports_every_denoising_step(gclient, gen_account, gworker):
    """SSE carries per-step progress (from the worker's events), not only the row's
    quarter-second snapshots."""
    _, key = gen_account(100)
    resp = post(gclient, key, "generate-image", {"prompt": "steps", "modelName": "tiny",
                                                 "width": 128, "height": 128, "steps": 20},
                wait=0)
    uid = resp.json["data"]["composition"]["uid"]
    stream = gclient.simulate_get(f"/zapier/v1/compositions/{uid}/events",
                                  headers=bearer(key)).text
    ids = [int(line[4:]) for line in stream.splitlines() if line.startswith("id: ")]
    assert "event: end" in stream and ids[-1] == 100
    steps = [p for p in ids if 5 < p < 95]
    assert steps == sorted(steps) and len(set(steps)) >= 12, ids
