"""A generation worker on a GPU box: batching of compatible queued requests
(``GPU_BATCH_MAX``) and a real out-of-memory (``GPU_MEMORY_LIMIT_MB``) that fails one job,
refunds it once and leaves the worker serving.

Real ``gateway worker`` processes, the HTTP app, PostgreSQL and Redis; the models are the
tiny pipeline the suite builds, served through this module's own ``models.json``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest
from falcon.testing import TestClient
from PIL import Image, ImageChops
from rq.job import Job

from async_support import burst, output_path, start_worker, stop_worker, worker_env
from conftest import ROOT, bearer, ledger_sum, make_app
from jobs.content.models import ContentItem
from metering import db as dbmod

pytestmark = pytest.mark.slow

LIMIT_MB = 600  # far above what a 64x64 job needs, far below the oversized request's 2 GB


@pytest.fixture(scope="module")
def models_file(tiny_models, tmp_path_factory):
    """``tiny`` (64x64 by default) and ``big``: the same weights, allowed up to 2048x2048 x 8
    images, so a caller can ask for more than the worker's memory limit holds."""
    from jobs.gpu.tiny import catalogue_entry

    weights = tiny_models.parent / "tiny"
    big = {**catalogue_entry("big", weights), "allowedWidths": [64, 2048],
           "allowedHeights": [64, 2048], "maxResolution": 2048 * 2048, "maxBatchSize": 8,
           "defaultResolution": [64, 64]}
    path = tmp_path_factory.mktemp("gpu-worker") / "models.json"
    path.write_text(json.dumps({"models": [catalogue_entry("tiny", weights), big]}))
    return path


@pytest.fixture(scope="module")
def wconfig(gconfig, models_file):
    return gconfig.replace(models_file=str(models_file))


@pytest.fixture
def wclient(wconfig, schema):
    return TestClient(make_app(wconfig))


@pytest.fixture(scope="module")
def running_worker(wconfig, schema):
    """``start()``: one long-lived worker (batches of 2, memory limit), started on first use
    so a test can queue work before it starts; stopped when the module ends."""
    procs = []

    def start():
        if not procs:
            procs.append(start_worker(
                wconfig, queues="gpu,webhooks", MODELS_FILE=wconfig.models_file,
                GPU_DEVICE="cpu", GPU_BATCH_MAX=2, GPU_MEMORY_LIMIT_MB=LIMIT_MB))
        return procs[0]

    yield start
    for proc in procs:
        stop_worker(proc)


def post(client, key, body, **params):
    resp = client.simulate_post("/zapier/v1/generate-image", json=body, headers=bearer(key),
                                params=params or None)
    assert resp.status_code in (200, 202), resp.json
    return resp


def view(client, key, uid):
    return client.simulate_get(f"/zapier/v1/compositions/{uid}",
                               headers=bearer(key)).json["data"]["composition"]


def wait_until(client, key, uid, done, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        comp = view(client, key, uid)
        if done(comp):
            return comp
        time.sleep(0.05)
    raise AssertionError(f"{uid}: gave up waiting, last seen {comp}")


def final(client, key, uid, timeout=120):
    return wait_until(client, key, uid,
                      lambda c: c["status"] in ("completed", "failed", "cancelled"), timeout)


def image_of(config, output):
    image = Image.open(io.BytesIO(output_path(config, output["url"]).read_bytes()))
    image.load()
    assert image.format == "PNG"
    return image


def db_rows(uids):
    """The compositions' ``worker`` (host:pid) and each account's ledger rows, by kind."""
    from jobs.models import Composition
    from metering import db
    from metering.models import LedgerEntry

    with db.connection():
        comps = {c.uid: c for c in Composition.select().where(Composition.uid.in_(uids))}
        receipts = [c.receipt for c in comps.values()]
        refunds = LedgerEntry.select().where(LedgerEntry.refund_of.in_(receipts)).count()
        debits = LedgerEntry.select().where(LedgerEntry.receipt.in_(receipts)
                                            & (LedgerEntry.kind == "debit")).count()
    return comps, debits, refunds


def test_compatible_queued_jobs_run_as_one_pipeline_batch(wclient, wconfig, gen_account):
    """3 compatible requests (two accounts, one asking for 2 images) and 1 of another size
    wait in the queue; one burst worker with GPU_BATCH_MAX=4 runs the 3 as one batch."""
    alice, alice_key = gen_account(30)
    bob, bob_key = gen_account(30)
    base = {"prompt": "a lighthouse at dusk", "modelName": "tiny", "width": 64, "height": 64,
            "steps": 2, "sampler": "Euler", "cfgscale": 7}
    queued = [  # (key, body), in queue order: the odd one sits between batch members
        (alice_key, {**base, "seed": 10}),
        (alice_key, {**base, "seed": 99, "width": 96}),
        (alice_key, {**base, "seed": 20, "batchSize": 2, "negprompt": "fog"}),
        (bob_key, {**base, "seed": 30, "prompt": "another prompt entirely"}),
    ]
    uids, paid = [], {alice: 0, bob: 0}
    for key, body in queued:
        resp = post(wclient, key, body, wait=0)
        assert resp.status_code == 202 and resp.json["data"]["composition"]["status"] == "queued"
        uids.append(resp.json["data"]["composition"]["uid"])
        paid[alice if key == alice_key else bob] += resp.json["meta"]["creditsUsed"]

    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "worker", "--burst", "--queues", "gpu"],
        cwd=ROOT, timeout=240, capture_output=True, text=True,
        env=worker_env(wconfig, MODELS_FILE=wconfig.models_file, GPU_DEVICE="cpu",
                       GPU_BATCH_MAX=4))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch_max=4" in done.stderr

    comps = [view(wclient, key, uid) for (key, _), uid in zip(queued, uids, strict=True)]
    assert [c["status"] for c in comps] == ["completed"] * 4, comps
    first, odd, second, third = comps
    batch = first["outputs"][0]["batch"]
    assert batch["jobs"] == 3 and batch["images"] == 4
    for comp in (first, second, third):
        assert {o["batch"]["id"] for o in comp["outputs"]} == {batch["id"]}
    assert odd["outputs"][0]["batch"]["jobs"] == 1
    assert odd["outputs"][0]["batch"]["id"] != batch["id"]
    # each composition got its own images back, seeds seed + i, decodable PNGs
    assert [[o["seed"] for o in c["outputs"]] for c in comps] == [[10], [99], [20, 21], [30]]
    for comp, (_, body) in zip(comps, queued, strict=True):
        for out in comp["outputs"]:
            assert image_of(wconfig, out).size == (body["width"], body["height"])
            assert (out["width"], out["height"]) == (body["width"], body["height"])
    assert len({image_of(wconfig, o).tobytes() for c in comps for o in c["outputs"]}) == 5
    # one run took the batch: the members' RQ jobs left the queue, the leader's job did it
    rows, debits, refunds = db_rows(uids)
    members = (uids[0], uids[2], uids[3])
    assert [_rq_result(wconfig, u) for u in members] == [
        f"batch {batch['id']}: completed, completed, completed", None, None]
    assert len({rows[u].worker for u in uids}) == 1
    # paid once each, nothing refunded, ledger == balance
    assert (debits, refunds) == (4, 0)
    assert all(c["refundReceipt"] is None for c in comps)
    assert ledger_sum(alice) == (30 - paid[alice],) * 2
    assert ledger_sum(bob) == (30 - paid[bob],) * 2

    # The same request alone (GPU_BATCH_MAX=1, in-process worker): the same pictures in
    # value; the bytes may differ by rounding, since a batch changes the CPU kernels' shapes.
    alone = post(wclient, alice_key, queued[2][1], wait=0).json["data"]["composition"]["uid"]
    burst(wconfig.replace(gpu_batch_max=1), queues=("gpu.tiny",))
    solo = view(wclient, alice_key, alone)
    assert solo["status"] == "completed" and "batch" not in solo["outputs"][0]
    for mine, theirs in zip(solo["outputs"], second["outputs"], strict=True):
        diff = ImageChops.difference(image_of(wconfig, mine).convert("RGB"),
                                     image_of(wconfig, theirs).convert("RGB"))
        assert max(high for _, high in diff.getextrema()) <= 2


def _rq_result(config, uid):
    """What the RQ job of ``uid`` returned; None when the job is gone (claimed by a batch)."""
    import redis as redis_lib

    connection = redis_lib.Redis.from_url(config.redis_url)
    if not Job.exists(uid, connection=connection):
        return None
    return Job.fetch(uid, connection=connection).return_value()


def test_member_cancelled_during_a_batch_is_refunded_and_its_images_discarded(
        wclient, wconfig, gen_account, running_worker):
    account_id, key = gen_account(30)
    body = {"prompt": "slow waves", "modelName": "tiny", "width": 64, "height": 64,
            "steps": 24, "sampler": "Euler"}
    keep = post(wclient, key, {**body, "seed": 1}, wait=0).json["data"]["composition"]["uid"]
    drop = post(wclient, key, {**body, "seed": 2}, wait=0).json["data"]["composition"]["uid"]
    running_worker()  # starts now: both are waiting, so they run as one batch of 2
    wait_until(wclient, key, drop, lambda c: c["status"] == "running" and c["progress"] > 10)
    assert view(wclient, key, keep)["status"] == "running"
    cancel = wclient.simulate_post(f"/zapier/v1/compositions/{drop}/cancel",
                                   headers=bearer(key))
    assert cancel.status_code in (200, 202), cancel.json
    dropped, kept = final(wclient, key, drop), final(wclient, key, keep)
    assert (dropped["status"], dropped["error"]["code"]) == ("cancelled", "CANCELLED")
    assert dropped["outputs"] == [] and dropped["refundReceipt"]
    assert not (wconfig.data_dir / "outputs" / drop).exists()  # its images were discarded
    with dbmod.connection():  # and never became content items
        assert not ContentItem.select().where(ContentItem.composition_uid == drop).exists()
    assert kept["status"] == "completed", kept
    (out,) = kept["outputs"]
    assert out["batch"]["jobs"] == 2 and out["seed"] == 1
    assert image_of(wconfig, out).size == (64, 64)
    _, debits, refunds = db_rows([keep, drop])
    assert (debits, refunds) == (2, 1)
    assert ledger_sum(account_id) == (30 - kept["creditsUsed"],) * 2


def test_out_of_memory_fails_refunds_once_and_the_worker_goes_on(
        wclient, wconfig, gen_account, running_worker):
    """2048x2048 x 8 images needs a 2 GB activation; the worker may use 600 MB past its
    model (GPU_MEMORY_LIMIT_MB, an RLIMIT_AS on the CPU): torch's allocator fails for real."""
    proc = running_worker()
    account_id, key = gen_account(60)
    huge = post(wclient, key, {"prompt": "everything everywhere", "modelName": "big",
                               "width": 2048, "height": 2048, "steps": 1, "batchSize": 8},
                wait=0).json
    assert huge["meta"]["creditsUsed"] > 20
    failed = final(wclient, key, huge["data"]["composition"]["uid"])
    assert failed["status"] == "failed", failed
    assert failed["error"]["code"] == "OUT_OF_MEMORY"
    assert failed["refundReceipt"] and failed["outputs"] == []
    assert ledger_sum(account_id) == (60, 60)
    # the same worker process takes the next job, on the same loaded model, and completes it
    small = post(wclient, key, {"prompt": "a small boat", "modelName": "big", "steps": 2},
                 wait=0).json["data"]["composition"]["uid"]
    done = final(wclient, key, small)
    assert done["status"] == "completed", done
    assert image_of(wconfig, done["outputs"][0]).size == (64, 64)
    assert proc.poll() is None
    rows, debits, refunds = db_rows([failed["uid"], small])
    assert rows[failed["uid"]].worker == rows[small].worker
    assert rows[small].worker.endswith(f":{proc.pid}")
    assert (debits, refunds) == (2, 1)
    assert ledger_sum(account_id) == (60 - done["creditsUsed"],) * 2
