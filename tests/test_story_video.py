"""Story videos (seed 001, issue 16) end to end: the HTTP app, a real `gateway worker` on
the tiny random-weight pipeline, espeak-ng narration and the MP4 decoded back with the
bundled ffmpeg (streams, duration, the audio itself); a regenerated scene image with its
own receipt; every bad option refused with nothing charged; a failed narration refunded;
another account's ids unknown; /auth/refresh with the refresh token and with the seed's
access token."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import imageio_ffmpeg
import pytest

from async_support import output_path, start_worker, stop_worker
from conftest import ADMIN, bearer, ledger_sum
from core.clock import utcnow

pytestmark = pytest.mark.slow

BODY = {"story_topic": "mystery", "art_style": "anime", "duration": "short",
        "language": "english", "voice_name": "nova", "seed": 4242}
SCENES = 4  # a short video


def get(client, key, path):
    resp = client.simulate_get(path, headers=bearer(key))
    assert resp.status_code == 200, resp.text
    return resp.json["data"]


def wait_task(client, key, path, until=("completed", "failed", "cancelled"), timeout=240):
    """Poll a seed task route until it ends (generous: the cores may be shared)."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        task = get(client, key, path)
        seen.append((task["status"], task["progress"], task.get("stage")))
        if task["status"] in until:
            return task, seen
        time.sleep(0.2)
    raise AssertionError(f"{path} stayed {task['status']} ({task['progress']}%)")


def quote(client, key, action, body):
    """Both estimates: the action's own route and the estimate-cost action with input."""
    own = client.simulate_post(f"/zapier/v1/{action}/estimate", json=body,
                               headers=bearer(key))
    assert own.status_code == 200, own.text
    via = client.simulate_post("/zapier/v1/estimate-cost", headers=bearer(key),
                               json={"action": action, "input": body})
    assert via.status_code == 200, via.text
    assert via.json["data"]["credits"] == own.json["data"]["credits"]
    return own.json["data"]["credits"]


def probe(path) -> dict:
    """What ffmpeg reads in the file: its duration and streams."""
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True).stderr
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", out).groups()
    return {"duration_ms": round((int(h) * 3600 + int(m) * 60 + float(s)) * 1000),
            "video": re.search(r"Stream #\S+.*Video: (\w+).*?, (\d+)x(\d+)", out).groups(),
            "audio": re.search(r"Stream #\S+.*Audio: (\w+)", out).group(1)}


def loudness(path, rate=8000) -> list[int]:
    """The audio track decoded back: mean absolute amplitude per 10 ms."""
    pcm = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                          "-vn", "-ac", "1", "-ar", str(rate), "-f", "s16le", "-"],
                         capture_output=True, check=True).stdout
    samples = memoryview(pcm).cast("h")
    step = rate // 100
    return [sum(abs(x) for x in samples[i:i + step]) // step
            for i in range(0, len(samples) - step + 1, step)]


def cue_times(vtt: str) -> list[tuple[int, int]]:
    def ms(stamp):
        h, m, rest = stamp.split(":")
        s, frac = rest.split(".")
        return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(frac)
    return [(ms(a), ms(b)) for a, b in re.findall(r"([\d:.]+) --> ([\d:.]+)", vtt)]


def check_video(config, task):
    """The MP4 has H.264 video and an AAC track lasting the video, and the narration is
    heard inside every scene's cues and silent in the pause after them."""
    path = output_path(config, task["url"])
    info = probe(path)
    assert info["video"] == ("h264", "64", "64") and info["audio"] == "aac", info
    assert abs(info["duration_ms"] - task["duration_ms"]) <= 100, (info, task["duration_ms"])
    level = loudness(path)
    images = task["images"]
    assert images[0]["start_ms"] == 0 and images[-1]["end_ms"] == task["duration_ms"]
    for before, after in zip(images, images[1:], strict=False):
        assert before["end_ms"] == after["start_ms"]  # scenes back to back
    for image in images:
        cues = cue_times(image["subtitles"])
        assert cues and cues[0][0] == image["start_ms"]
        assert all(a < b for a, b in cues) and cues[-1][1] < image["end_ms"]
        speech_end = cues[-1][1]
        spoken = level[image["start_ms"] // 10:speech_end // 10]
        pause = level[speech_end // 10 + 5:image["end_ms"] // 10 - 5]  # AAC blurs edges
        assert max(spoken) > 500, image  # narration while the cues show
        assert pause and max(pause) < 50, (image, pause)  # silence after them
    vtt = output_path(config, task["subtitles"]["vtt"]).read_text()
    srt = output_path(config, task["subtitles"]["srt"]).read_text()
    assert vtt.startswith("WEBVTT\n")
    every = [c for image in images for c in cue_times(image["subtitles"])]
    assert cue_times(vtt) == every
    assert len(re.findall(r"\d\d:\d\d:\d\d,\d\d\d --> ", srt)) == len(every)
    return path


def test_story_video_end_to_end_then_regenerate(gclient, gen_account, gworker, gconfig):
    account_id, key = gen_account(200)
    other_id, other_key = gen_account(50)
    price = quote(gclient, key, "story-video", BODY)
    image_credits = quote(gclient, key, "generate-image",
                          {"prompt": "x", "modelName": "tiny", "width": 64, "height": 64,
                           "steps": 4})
    assert price == SCENES * (image_credits + 1)  # scenes x (image + narration)

    resp = gclient.simulate_post("/video", json=BODY, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    task_id = resp.json["data"]["task_id"]
    assert resp.json["data"]["status"] == "queued"
    assert resp.headers["Location"].endswith(f"/video/tasks/{task_id}")
    meta = resp.json["meta"]
    assert meta["action"] == "story-video" and meta["creditsUsed"] == price
    assert ledger_sum(account_id) == (200 - price, 200 - price)

    task, seen = wait_task(gclient, key, f"/video/tasks/{task_id}")
    assert task["status"] == "completed", task
    order = ["queued", "writing", "scenes", "images", "narration", "video", "done"]
    stages = [order.index(stage) for _, _, stage in seen]
    assert stages == sorted(stages), seen  # the stages seen came in pipeline order
    assert task["progress"] == 100 and task["stage"] == "done" and task["error_message"] is None
    # progress only moves forward
    assert [p for _, p, _ in seen] == sorted(p for _, p, _ in seen)
    assert task["story_title"] and task["story_description"] and task["story_text"]
    assert task["options"]["art_style"] == "anime" and task["txnReceipt"] == meta["txnReceipt"]
    images = task["images"]
    assert [i["status"] for i in images] == ["completed"] * SCENES
    assert all(len(i["urls"]) == 1 and i["task_id"] == task_id for i in images)
    # the scenes are the story, in order
    assert " ".join(i["text"] for i in images) == " ".join(task["story_text"].split())
    first = check_video(gconfig, task)

    listed = get(gclient, key, f"/images/tasks/{task_id}")
    assert [i["id"] for i in listed["images"]] == [i["id"] for i in images]
    assert listed["story_text"] == task["story_text"]

    # another account sees none of it, and cannot regenerate it
    for path in (f"/video/tasks/{task_id}", f"/images/tasks/{task_id}"):
        assert gclient.simulate_get(path, headers=bearer(other_key)).status_code == 404
    theirs = gclient.simulate_post(f"/images/{images[1]['id']}", headers=bearer(other_key))
    assert theirs.status_code == 404, theirs.text
    assert theirs.json["error"]["code"] == "NOT_FOUND"
    assert ledger_sum(other_id) == (50, 50)

    # two scenes regenerated at once (real threads): one is accepted and paid, the other
    # refused with nothing charged, since a video is re-rendered by one task at a time
    regen_price = quote(gclient, key, "story-image", {"image_id": images[1]["id"]})
    assert regen_price == image_credits + 1
    barrier = threading.Barrier(2)

    def regenerate(image):
        barrier.wait(timeout=20)
        return gclient.simulate_post(f"/images/{image['id']}", json={"seed": 99},
                                     headers=bearer(key))

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(regenerate, images[1:3]))
    assert sorted(r.status_code for r in answers) == [202, 409], [r.text for r in answers]
    resp = next(r for r in answers if r.status_code == 202)
    refused = next(r for r in answers if r.status_code == 409).json
    assert refused["error"]["code"] == "CONFLICT" and "txnReceipt" not in refused["meta"]
    won = 1 if answers[0].status_code == 202 else 2  # which scene is being regenerated
    regen = resp.json["data"]
    assert regen["image_id"] == images[won]["id"] and regen["video_task_id"] == task_id
    assert resp.json["meta"]["creditsUsed"] == regen_price
    receipt = resp.json["meta"]["txnReceipt"]
    assert receipt != meta["txnReceipt"]
    row = get(gclient, key, f"/zapier/v1/receipts/{receipt}")
    assert row["amount"] == -regen_price
    spent = price + regen_price
    assert ledger_sum(account_id) == (200 - spent, 200 - spent)

    done, _ = wait_task(gclient, key, f"/images/tasks/{regen['task_id']}")
    assert done["status"] == "completed", done
    assert done["images"][0]["task_id"] == regen["task_id"]
    again = get(gclient, key, f"/video/tasks/{task_id}")
    assert again["url"] != task["url"]
    assert again["images"][won]["urls"] != images[won]["urls"]
    assert again["images"][won]["urls"] == done["images"][0]["urls"]
    assert [i["urls"] for n, i in enumerate(again["images"]) if n != won] == \
        [i["urls"] for n, i in enumerate(images) if n != won]
    assert output_path(gconfig, again["url"]).read_bytes() != first.read_bytes()
    check_video(gconfig, again)
    assert ledger_sum(account_id) == (200 - spent, 200 - spent)


# --- a worker lost mid-way: the task resumes where it stopped ------------------------------

LONG = {**BODY, "duration": "long", "seed": 777}  # 10 scenes: a wide window to stop in


def kill_worker_mid_images(client, key, task_id, proc, timeout=180):
    """Freeze the worker (SIGSTOP) once some but not all scene images are made, read what
    it had made, then kill it (SIGKILL): a worker lost mid-way, at a known point."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = get(client, key, f"/video/tasks/{task_id}")
        done = sum(i["status"] == "completed" for i in task["images"])
        if task["status"] == "running" and 1 <= done < len(task["images"]):
            os.killpg(proc.pid, signal.SIGSTOP)
            frozen = get(client, key, f"/video/tasks/{task_id}")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
            return frozen
        assert task["status"] in ("queued", "running"), task
        time.sleep(0.01)
    raise AssertionError(f"{task_id} never had some of its images made")


def reap_later(config):
    """One reaper round as a worker runs it, at a time past three missed heartbeats."""
    from gateway.services import install_worker_runtime
    from jobs import engine

    rt = install_worker_runtime(config)
    return engine.reap(now=utcnow() + dt.timedelta(seconds=rt.heartbeat_s * 3 + 5))


def test_a_lost_worker_is_resumed_from_the_scenes_it_made(gclient, gen_account, gconfig):
    account_id, key = gen_account(500)
    resp = gclient.simulate_post("/video", json=LONG, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    task_id, price = resp.json["data"]["task_id"], resp.json["meta"]["creditsUsed"]
    proc = start_worker(gconfig, queues="gpu", MODELS_FILE=gconfig.models_file)
    try:
        frozen = kill_worker_mid_images(gclient, key, task_id, proc)
    finally:
        stop_worker(proc)
    made = {i["id"]: i["urls"] for i in frozen["images"] if i["status"] == "completed"}
    assert 1 <= len(made) < 10

    assert reap_later(gconfig) >= 1
    queued = get(gclient, key, f"/video/tasks/{task_id}")
    assert queued["status"] == "queued" and queued["progress"] >= frozen["progress"] > 0
    assert ledger_sum(account_id) == (500 - price, 500 - price)  # not refunded

    proc = start_worker(gconfig, queues="gpu", MODELS_FILE=gconfig.models_file)
    try:
        task, seen = wait_task(gclient, key, f"/video/tasks/{task_id}")
    finally:
        stop_worker(proc)
    assert task["status"] == "completed" and task["error_message"] is None, task
    assert [p for _, p, _ in seen] == sorted(p for _, p, _ in seen)  # never went back
    # the story was not written again, and the images made before were not made again
    assert (task["story_title"], task["story_text"]) == (frozen["story_title"],
                                                         frozen["story_text"])
    for image in task["images"]:
        assert image["status"] == "completed" and len(image["urls"]) == 1
        if image["id"] in made:
            assert image["urls"] == made[image["id"]]
    check_video(gconfig, task)
    assert ledger_sum(account_id) == (500 - price, 500 - price)  # charged once, kept


def test_a_task_that_keeps_losing_its_worker_fails_refunded(gclient, gen_account, gconfig):
    """After ``MAX_RESUMES`` resumes the next lost worker fails the task, refunded once."""
    from jobs.engine import MAX_RESUMES

    account_id, key = gen_account(500)
    resp = gclient.simulate_post("/video", json={**LONG, "seed": 778}, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    task_id = resp.json["data"]["task_id"]
    for lost in range(MAX_RESUMES + 1):
        proc = start_worker(gconfig, queues="gpu", MODELS_FILE=gconfig.models_file)
        try:
            kill_worker_mid_images(gclient, key, task_id, proc)
        finally:
            stop_worker(proc)
        assert reap_later(gconfig) >= 1
        task = get(gclient, key, f"/video/tasks/{task_id}")
        if lost < MAX_RESUMES:
            assert task["status"] == "queued", task
    assert task["status"] == "failed" and "worker" in task["error_message"].lower(), task
    assert task["refundReceipt"]
    assert ledger_sum(account_id) == (500, 500)


BAD = [
    ({**BODY, "story_topic": "cooking"}, "story_topic"),
    ({**BODY, "art_style": "watercolour"}, "art_style"),
    ({**BODY, "duration": "medium"}, "duration"),
    ({**BODY, "language": "klingon"}, "language"),
    ({**BODY, "voice_name": "robot"}, "voice_name"),
    ({**BODY, "duration": 30}, "duration"),
    ({k: v for k, v in BODY.items() if k != "language"}, "language"),
    ({**BODY, "story_topic": "custom topic"}, "custom_topic"),
    ({**BODY, "custom_topic": "dragons"}, "custom_topic"),
    ({**BODY, "voice": "nova"}, "voice"),
    ({**BODY, "seed": -5}, "seed"),
]


def test_bad_options_refused_with_nothing_charged(gclient, gen_account, gconfig):
    from jobs.models import Composition
    from jobs.stories import Story
    from metering import db as dbmod

    account_id, key = gen_account(100)
    for body, field in BAD:
        resp = gclient.simulate_post("/video", json=body, headers=bearer(key))
        assert resp.status_code == 400, (body, resp.text)
        error = resp.json["error"]
        assert error["code"] == "INVALID_REQUEST" and error["statusCode"] == 400
        assert field in [d["field"] for d in error["details"]], (body, error)
    resp = gclient.simulate_post("/video", body="{not json", headers={
        **bearer(key), "Content-Type": "application/json"})
    assert resp.status_code == 400
    unknown = gclient.simulate_post("/images/img_0000", headers=bearer(key))
    assert unknown.status_code == 404
    assert gclient.simulate_get("/video/tasks/comp_nope", headers=bearer(key)).status_code \
        == 404
    poor_id, poor = gen_account(1)
    broke = gclient.simulate_post("/video", json=BODY, headers=bearer(poor))
    assert broke.status_code == 403 and broke.json["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert ledger_sum(account_id) == (100, 100) and ledger_sum(poor_id) == (1, 1)
    with dbmod.connection():
        for who in (account_id, poor_id):
            assert not Composition.select().where(Composition.account == who).exists()
            assert not Story.select().where(Story.account == who).exists()

    # no worker: the task waits, its scenes do not exist yet; the same Idempotency-Key is
    # the same task, paid once; a cancel refunds it
    once = {**bearer(key), "Idempotency-Key": "story-1"}
    resp = gclient.simulate_post("/video", json=BODY, headers=once)
    assert resp.status_code == 202
    replay = gclient.simulate_post("/video", json=BODY, headers=once)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json["data"]["task_id"] == resp.json["data"]["task_id"]
    assert replay.json["meta"]["txnReceipt"] == resp.json["meta"]["txnReceipt"]
    price = resp.json["meta"]["creditsUsed"]
    assert ledger_sum(account_id) == (100 - price, 100 - price)
    task = get(gclient, key, f"/video/tasks/{resp.json['data']['task_id']}")
    assert (task["status"], task["stage"], task["images"]) == ("queued", "queued", [])
    cancel = gclient.simulate_post(f"/zapier/v1/compositions/{task['task_id']}/cancel",
                                   headers=bearer(key))
    assert cancel.status_code == 200, cancel.text
    task = get(gclient, key, f"/video/tasks/{task['task_id']}")
    assert task["status"] == "cancelled" and task["refundReceipt"]
    assert ledger_sum(account_id) == (100, 100)


@pytest.fixture(scope="module")
def tiny_writer(tmp_path_factory):
    """A random-weight GPT-2 and word-level tokenizer for STORY_WRITER_MODEL."""
    from actions.story.tiny_writer import make_tiny_writer

    return make_tiny_writer(tmp_path_factory.mktemp("writer"), seed=0)


def test_model_writer_then_failed_narration_is_refunded(gclient, gen_account, gconfig,
                                                         schema, tiny_writer):
    """A worker configured with a local transformers writer and a narration engine that
    cannot run: the model writes the story, the images are made, then the task fails with
    a clear message and the whole debit comes back."""
    from actions.story.tiny_writer import PUNCTUATION, WORDS

    proc = start_worker(gconfig, queues="gpu,webhooks", MODELS_FILE=gconfig.models_file,
                        STORY_ESPEAK_BIN="/nonexistent/espeak-ng",
                        STORY_WRITER_MODEL=str(tiny_writer))
    try:
        account_id, key = gen_account(100)
        resp = gclient.simulate_post("/video", json=BODY, headers=bearer(key))
        assert resp.status_code == 202, resp.text
        task, _ = wait_task(gclient, key, f"/video/tasks/{resp.json['data']['task_id']}")
    finally:
        stop_worker(proc)
    assert task["status"] == "failed", task
    assert "narration" in task["error_message"]
    # the story is the model's: its vocabulary only, cut into the four scenes
    assert set(task["story_text"].split()) <= set(WORDS) | set(PUNCTUATION)
    assert " ".join(i["text"] for i in task["images"]) == " ".join(task["story_text"].split())
    assert task["stage"] == "narration" and task["url"] is None
    assert [i["status"] for i in task["images"]] == ["completed"] * SCENES
    assert task["refundReceipt"]
    assert ledger_sum(account_id) == (100, 100)
    # a video that never completed has no image to regenerate
    resp = gclient.simulate_post(f"/images/{task['images'][0]['id']}", headers=bearer(key))
    assert resp.status_code == 409 and resp.json["error"]["code"] == "CONFLICT"
    assert ledger_sum(account_id) == (100, 100)


def test_auth_refresh_with_access_token_and_refresh_token(client):
    username = "story" + str(time.monotonic_ns())[-8:]
    made = client.simulate_post("/admin/accounts", headers=ADMIN,
                                json={"username": username, "password": "pw-long-enough-1",
                                      "credits": 5})
    assert made.status_code == 201, made.text
    login = client.simulate_post("/auth/token", headers={
        "Content-Type": "application/x-www-form-urlencoded"},
        body=f"username={username}&password=pw-long-enough-1")
    assert login.status_code == 200, login.text
    pair = login.json["data"]
    # the seed's way: the access token as the bearer -> a new access token
    resp = client.simulate_post("/auth/refresh", headers=bearer(pair["access_token"]))
    assert resp.status_code == 200, resp.text
    fresh = resp.json["data"]
    assert fresh["token_type"] == "bearer" and fresh["access_token"] != pair["access_token"]
    assert "refresh_token" not in fresh  # an access token never mints a refresh token
    me = client.simulate_get("/zapier/v1/me", headers=bearer(fresh["access_token"]))
    assert me.status_code == 200 and me.json["data"]["username"] == username
    # the refresh-token flow still works, as body and as bearer
    resp = client.simulate_post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert resp.status_code == 200 and resp.json["data"]["refresh_token"]
    resp = client.simulate_post("/auth/refresh",
                                headers=bearer(resp.json["data"]["refresh_token"]))
    assert resp.status_code == 200, resp.text
    # junk and forged tokens: the seed's 401
    for token in ("junk", pair["access_token"][:-4] + "AAAA"):
        bad = client.simulate_post("/auth/refresh", headers=bearer(token))
        assert bad.status_code == 401 and bad.json["error"]["code"] == "AUTH_FAILED"
