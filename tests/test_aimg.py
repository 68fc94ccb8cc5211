"""AIMG routes (seed 003) through the real HTTP app: /generateImage, /generateVideo,
/getItemStatus, /getModels, /getQueuesLength, /getSamplePrompts. Jobs run on a real RQ
worker (``async_support.burst``: RQ's SimpleWorker in this process, until the queues
are empty), so queue lengths and positions can be observed before any job runs."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from async_support import output_path
from conftest import bearer, ledger_sum

SEED_FIELDS = {"imageID", "folderID", "status", "ignoredWords", "mtype", "url",
               "queuePosition"}
OUR_FIELDS = {"progress", "urls", "error", "txnReceipt", "refundReceipt"}
GPU_QUEUES = ("gpu.tiny", "gpu.tiny-b")
SMALL = {"modelName": "tiny", "width": 64, "height": 64, "steps": 2}


def fetch_output(gconfig, url) -> bytes:
    return output_path(gconfig, url).read_bytes()


def generate(client, key, body, path="/generateImage", headers=None, **params):
    return client.simulate_post(path, json=body, headers={**bearer(key), **(headers or {})},
                                params=params or None)


def status(client, key, uid, **params):
    return client.simulate_get("/getItemStatus", headers=bearer(key),
                               params={"imageID": uid, **params})


def queue_lengths(client, key, **params):
    resp = client.simulate_get("/getQueuesLength", headers=bearer(key), params=params or None)
    assert resp.status_code == 200, resp.json
    return {q["modelID"]: q for q in resp.json["data"]}


def test_models_in_operator_order_and_filtered(gclient, make_account):
    _, key = make_account()
    resp = gclient.simulate_get("/getModels", headers=bearer(key))
    assert resp.status_code == 200, resp.json
    assert resp.json["success"] is True and resp.json["meta"]["requestId"]
    models = resp.json["data"]
    assert [m["modelID"] for m in models] == ["tiny", "tiny-b"]
    for model in models:
        for field in ("modelID", "name", "description", "mediaType", "minTier",
                      "tier0Concurrent", "positiveTokens", "negativeTokens", "sampleImages",
                      "minSteps", "maxSteps", "allowedWidths", "allowedHeights",
                      "maxResolution", "defaultResolution", "allowedSamplers",
                      "defaultSampler", "minCfgScale", "maxCfgScale", "supportsVariations",
                      "registrationWall", "defaultFaceFix"):
            assert field in model, field
    only_b = gclient.simulate_get("/getModels", headers=bearer(key),
                                  params={"modelIDs": "tiny-b, nope"}).json["data"]
    assert [m["modelID"] for m in only_b] == ["tiny-b"]
    assert only_b[0]["maxBatchSize"] == 2
    both = gclient.simulate_get("/getModels", headers=bearer(key),
                                params={"modelIDs": "tiny-b,tiny"}).json["data"]
    assert [m["modelID"] for m in both] == ["tiny", "tiny-b"]  # the operator's order
    none = gclient.simulate_get("/getModels", headers=bearer(key), params={"modelIDs": "nope"})
    assert none.status_code == 200 and none.json["data"] == []
    anonymous = gclient.simulate_get("/getModels")
    assert anonymous.status_code == 401
    assert anonymous.json["error"]["code"] == "MISSING_AUTH_HEADER"


def test_sample_prompts_all_or_random_one(gclient, make_account):
    _, key = make_account()
    every = gclient.simulate_get("/getSamplePrompts", headers=bearer(key))
    assert every.status_code == 200, every.json
    items = every.json["data"]
    assert len(items) >= 12
    assert all(set(p) == {"positivePrompt", "negativePrompt"} and p["positivePrompt"]
               for p in items)
    assert len({p["positivePrompt"] for p in items}) == len(items)
    seen = set()
    for _ in range(10):
        one = gclient.simulate_get("/getSamplePrompts", headers=bearer(key),
                                   params={"randomOne": "true"}).json["data"]
        assert len(one) == 1 and one[0] in items
        seen.add(one[0]["positivePrompt"])
    assert len(seen) > 1  # really random: 10 draws from 14 are not all the same
    assert gclient.simulate_get("/getSamplePrompts", headers=bearer(key),
                                params={"randomOne": "false"}).json["data"] == items
    bad = gclient.simulate_get("/getSamplePrompts", headers=bearer(key),
                               params={"randomOne": "maybe"})
    assert bad.status_code == 400 and bad.json["error"]["code"] == "INVALID_REQUEST"


def test_invalid_input_is_refused_before_any_debit(gclient, make_account):
    account_id, key = make_account(credits=20)
    for body, field in (({"prompt": "x", "modelName": "tiny", "cfgscale": 20}, "cfgscale"),
                        ({"modelName": "tiny"}, "prompt"),
                        ({"prompt": "x", "modelName": "nope"}, "modelName")):
        resp = generate(gclient, key, body)
        assert resp.status_code == 400, resp.json
        assert resp.json["error"]["code"] == "INVALID_REQUEST"
        assert resp.json["error"]["statusCode"] == 400
        assert field in {d["field"] for d in resp.json["error"]["details"]}
    listed = gclient.simulate_get("/zapier/v1/compositions", headers=bearer(key)).json
    assert listed["data"]["items"] == []
    assert ledger_sum(account_id) == (20, 20)
    assert queue_lengths(gclient, key)["tiny"]["queueLength"] == 0


def test_item_status_requires_an_own_generation(gclient, make_account):
    _, key = make_account(credits=20)
    _, other_key = make_account(credits=20)
    missing = gclient.simulate_get("/getItemStatus", headers=bearer(key))
    assert missing.status_code == 400 and missing.json["error"]["code"] == "INVALID_REQUEST"
    assert missing.json["error"]["details"][0]["field"] == "imageID"
    unknown = status(gclient, key, "comp_doesnotexist")
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "NOT_FOUND"
    made = generate(gclient, key, {"prompt": "a boat", **SMALL})
    assert made.status_code == 202, made.json
    uid = made.json["data"]["imageID"]
    assert status(gclient, key, uid).status_code == 202
    foreign = status(gclient, other_key, uid)
    assert foreign.status_code == 404 and foreign.json["error"]["code"] == "NOT_FOUND"
    assert uid not in foreign.text
    # a composition of another action is not an AIMG item
    echo = gclient.simulate_post("/zapier/v1/echo-async", json={"message": "m"},
                                 headers=bearer(key), params={"wait": "0"})
    assert echo.status_code == 202, echo.json
    not_item = status(gclient, key, echo.json["data"]["composition"]["uid"])
    assert not_item.status_code == 404 and not_item.json["error"]["code"] == "NOT_FOUND"


@pytest.mark.slow
def test_queues_positions_then_completed_png(gclient, gen_account, gconfig):
    """No worker yet: real queue lengths and positions; then a real worker empties them."""
    from async_support import burst

    account_id, key = gen_account(100)
    assert {m: q["queueLength"] for m, q in queue_lengths(gclient, key).items()} == \
        {"tiny": 0, "tiny-b": 0}
    first = generate(gclient, key, {"prompt": "a red bicycle by the sea", "seed": 7,
                                    "folderID": "folder-1", **SMALL},
                     headers={"Idempotency-Key": "aimg-first"})
    assert first.status_code == 202, first.json
    data, meta = first.json["data"], first.json["meta"]
    assert set(data) == SEED_FIELDS | OUR_FIELDS, set(data) ^ (SEED_FIELDS | OUR_FIELDS)
    assert (data["status"], data["mtype"], data["folderID"]) == ("queued", "image", "folder-1")
    assert data["url"] is None and data["urls"] == [] and data["ignoredWords"] == ""
    assert data["queuePosition"] == 1 and data["progress"] == 0
    assert meta["action"] == "generate-image" and meta["creditsUsed"] == 1
    assert meta["txnReceipt"] == data["txnReceipt"] and meta["ttl"] > 0
    assert meta["availableCredit"] == 99
    uid = data["imageID"]
    assert first.headers["Location"].endswith(f"/getItemStatus?imageID={uid}")
    # the same Idempotency-Key replays the same item, here and on the action route
    again = generate(gclient, key, {"prompt": "a red bicycle by the sea", "seed": 7,
                                    "folderID": "folder-1", **SMALL},
                     headers={"Idempotency-Key": "aimg-first"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json["data"]["imageID"] == uid
    assert again.json["meta"]["txnReceipt"] == meta["txnReceipt"]
    action_route = gclient.simulate_post(
        "/zapier/v1/generate-image", headers={**bearer(key), "Idempotency-Key": "aimg-first"},
        json={"prompt": "a red bicycle by the sea", "seed": 7, "folderID": "folder-1", **SMALL})
    assert action_route.headers.get("Idempotent-Replayed") == "true"
    assert action_route.json["data"]["composition"]["uid"] == uid

    uids, spent = [uid], meta["creditsUsed"]
    long_prompt = " ".join(f"word{i}" for i in range(120))  # past the 77-token window
    for i in range(2):
        resp = generate(gclient, key, {"prompt": f"picture {i}" if i else long_prompt,
                                       **SMALL, "batchSize": 2 if i else 1})
        assert resp.status_code == 202, resp.json
        uids.append(resp.json["data"]["imageID"])
        spent += resp.json["meta"]["creditsUsed"]
    b = generate(gclient, key, {"prompt": "other model", **SMALL, "modelName": "tiny-b"})
    assert b.status_code == 202, b.json
    spent += b.json["meta"]["creditsUsed"]
    lengths = queue_lengths(gclient, key)
    assert lengths["tiny"] == {"modelID": "tiny", "queueID": "gpu.tiny", "queueLength": 3}
    assert lengths["tiny-b"] == {"modelID": "tiny-b", "queueID": "gpu.tiny-b",
                                 "queueLength": 1}
    assert list(queue_lengths(gclient, key, modelIDs="tiny-b")) == ["tiny-b"]
    for position, item in enumerate(uids, start=1):
        resp = status(gclient, key, item)
        assert resp.status_code == 202, resp.json
        assert resp.json["data"]["status"] == "queued"
        assert resp.json["data"]["queuePosition"] == position
    assert status(gclient, key, b.json["data"]["imageID"]).json["data"]["queuePosition"] == 1
    assert ledger_sum(account_id) == (100 - spent, 100 - spent)  # one debit per item

    burst(gconfig, queues=GPU_QUEUES)
    assert {m: q["queueLength"] for m, q in queue_lengths(gclient, key).items()} == \
        {"tiny": 0, "tiny-b": 0}
    done = status(gclient, key, uid)
    assert done.status_code == 200, done.json
    item = done.json["data"]
    assert (item["status"], item["progress"], item["queuePosition"]) == ("completed", 100, None)
    assert item["folderID"] == "folder-1" and item["error"] is None
    assert item["url"] and item["urls"] == [item["url"]]
    image = Image.open(io.BytesIO(fetch_output(gconfig, item["url"])))
    image.load()
    assert (image.format, image.size) == ("PNG", (64, 64))
    long_item = status(gclient, key, uids[1]).json["data"]
    assert long_item["ignoredWords"].endswith("word119")
    assert long_prompt.endswith(" " + long_item["ignoredWords"])
    assert item["ignoredWords"] == ""
    batch = status(gclient, key, uids[2]).json["data"]
    assert batch["status"] == "completed" and len(batch["urls"]) == 2
    assert batch["url"] == batch["urls"][0] and batch["folderID"] is None
    # the action route shows the same record
    comp = gclient.simulate_get(f"/zapier/v1/compositions/{uid}",
                                headers=bearer(key)).json["data"]["composition"]
    assert comp["outputs"][0]["url"] == item["url"]
    assert ledger_sum(account_id) == (100 - spent, 100 - spent)


def _video_registered(gapp):
    return "generate-video" in gapp.deps.registry


@pytest.mark.slow
def test_generate_video_lists_frames(gclient, gapp, gen_account, gconfig):
    from async_support import burst

    if not _video_registered(gapp):
        pytest.skip("the generate-video action is not registered in this build")
    _, key = gen_account(200)
    resp = generate(gclient, key, {"prompt": "a bouncing ball", **SMALL, "steps": 3,
                                   "strength": 0.5, "frames": 3, "format": "webp",
                                   "folderID": "clips"}, path="/generateVideo")
    assert resp.status_code == 202, resp.json
    queued = resp.json["data"]
    uid = queued["imageID"]
    assert (queued["mtype"], queued["status"], queued["frames"]) == ("video", "queued", [])
    assert queued["queuePosition"] == 1 and queued["url"] is None
    assert resp.json["meta"]["action"] == "generate-video" and resp.json["meta"]["creditsUsed"]
    assert queue_lengths(gclient, key)["tiny"]["queueLength"] == 1
    burst(gconfig, queues=GPU_QUEUES)
    done = status(gclient, key, uid, wait="5")
    assert done.status_code == 200, done.json
    item = done.json["data"]
    assert item["status"] == "completed", item
    assert set(item) == SEED_FIELDS | OUR_FIELDS | {"frames"}
    assert item["folderID"] == "clips" and item["url"]
    frames = item["frames"]
    assert [f["frameNumber"] for f in frames] == [0, 1, 2]
    assert all(set(f) == {"frameCount", "frameNumber", "frameUrl"} and f["frameCount"] == 3
               for f in frames)
    for frame in frames:
        png = Image.open(io.BytesIO(fetch_output(gconfig, frame["frameUrl"])))
        assert (png.format, png.size) == ("PNG", (64, 64))
    assert item["url"].split("?")[0].endswith(".webp") and item["urls"] == [item["url"]]
    clip = Image.open(io.BytesIO(fetch_output(gconfig, item["url"])))
    assert (clip.format, getattr(clip, "n_frames", 1)) == ("WEBP", 3)


def test_openapi_documents_the_aimg_routes(gclient, gapp):
    doc = gclient.simulate_get("/openapi.json").json
    pytest.importorskip("openapi_spec_validator").validate(doc)
    paths = doc["paths"]
    for path, action in (("/generateImage", "generate-image"),
                         ("/generateVideo", "generate-video")):
        op = paths[path]["post"]
        assert op["tags"] == ["AIMG"] and op["summary"]
        assert set(op["responses"]) >= {"200", "202", "429", "default"}
        assert {"wait", "Idempotency-Key"} <= {p["name"] for p in op["parameters"]}
        assert {"oauth2": ["actions:run"]} in op["security"]
        if action in gapp.deps.registry:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            assert schema == gapp.deps.registry.get(action).json_schema()
    status_op = paths["/getItemStatus"]["get"]
    assert {"name": "imageID", "in": "query", "required": True,
            "schema": {"type": "string"}} in status_op["parameters"]
    item = status_op["responses"]["200"]["content"]["application/json"]["schema"]["allOf"][1]
    assert set(item["properties"]["data"]["properties"]) >= SEED_FIELDS | {"frames"}
    for path in ("/getModels", "/getQueuesLength", "/getSamplePrompts"):
        assert {"oauth2": ["actions:read"]} in paths[path]["get"]["security"]
