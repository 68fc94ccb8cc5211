"""Project runs end to end (issue 11) through the real HTTP app, PostgreSQL, Redis and RQ
workers: a five-node graph on both faces (the Zapier action and seed 000's SSE route),
estimate equals debit (property-based), money on failure, cancel, a killed worker and
retry, tenant isolation of projects and of the node cache, the event log and its resume,
and two runs racing on a balance that covers one.

Generation runs on the tiny random-weight pipelines the suite builds (``gconfig``); node
jobs run on real RQ workers: in this process (``burst``) or a ``gateway worker``."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from falcon.testing import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from async_support import _Server, burst, output_path, start_worker, stop_worker
from conftest import bearer, ledger_sum, make_app

QUEUES = ("cpu", "gpu.tiny")

FIVE_NODES = [
    {"id": "prompt", "type": "text", "inputs": {"template": "a {{subject}} on a table"}},
    {"id": "gen", "type": "generate_image",
     "inputs": {"prompt": {"node": "prompt", "output": "text"}, "model": "tiny",
                "width": 64, "height": 64, "steps": 2}},
    {"id": "small", "type": "resize",
     "inputs": {"image": {"node": "gen", "output": "image"}, "width": 48, "height": 32,
                "mode": "pad"}},
    {"id": "label", "type": "overlay_text",
     "inputs": {"image": {"node": "small", "output": "image"}, "text": "SALE"}},
    {"id": "out", "type": "output",
     "inputs": {"value": {"node": "label", "output": "image"}, "name": "picture"}},
]
SUBJECT = [{"name": "subject", "type": "text", "default": "cat", "help": "What to draw"}]


# --- helpers ---------------------------------------------------------------------------------


def create_project(client, key, nodes, variables=(), visibility="private", connections=()):
    resp = client.simulate_post("/api/project/create", headers=bearer(key), json={
        "name": "p", "description": "d", "visibility": visibility, "node_data": nodes,
        "connection_data": list(connections), "manual_data": list(variables)})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["project_id"]


def estimate(client, key, pid, **body):
    resp = client.simulate_post("/api/project/runs/estimate", headers=bearer(key),
                                json={"project_id": pid, **body})
    assert resp.status_code == 200, resp.text
    return resp.json["data"]


def start_run(client, key, pid, **body):
    resp = client.simulate_post("/zapier/v1/run-project", headers=bearer(key),
                                params={"wait": "0"}, json={"project_id": pid, **body})
    assert resp.status_code == 202, resp.text
    return resp.json


def run_record(client, key, run_id):
    resp = client.simulate_get(f"/api/project/runs/{run_id}", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    return resp.json["data"]


def parse_sse(text):
    """``[(id, event, data)]`` of a text/event-stream body (comments skipped)."""
    out = []
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        if "event" in fields and "data" in fields:
            out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


def refunds_of(account_id):
    from metering.db import connection
    from metering.models import LedgerEntry

    with connection():
        return [(r.refund_of, r.amount) for r in
                LedgerEntry.select().where((LedgerEntry.account == account_id)
                                           & (LedgerEntry.kind == "refund"))]


def runs_of(account_id):
    from jobs.workflows.models import ProjectRun
    from metering.db import connection

    with connection():
        return ProjectRun.select().where(ProjectRun.account == account_id).count()


def node_status(record):
    return {n["id"]: n["status"] for n in record["nodes"]}


# --- the five-node graph, both faces ---------------------------------------------------------


def test_five_node_graph_on_the_zapier_face(gclient, gconfig, gen_account):
    account, key = gen_account(200)
    pid = create_project(gclient, key, FIVE_NODES, SUBJECT)
    quote = estimate(gclient, key, pid, seed=7)
    assert quote["estimated_cost"] > 0
    assert [n["id"] for n in quote["nodes"]] == ["prompt", "gen", "small", "label", "out"]
    assert sum(n["credits"] for n in quote["nodes"]) == quote["estimated_cost"]
    started = start_run(gclient, key, pid, seed=7, variables={"subject": "teapot"})
    assert started["meta"]["creditsUsed"] == quote["estimated_cost"]
    receipt = started["meta"]["txnReceipt"]
    run_id = started["data"]["composition"]["uid"]
    burst(gconfig, QUEUES)
    comp = gclient.simulate_get(f"/zapier/v1/compositions/{run_id}",
                                headers=bearer(key)).json["data"]["composition"]
    assert comp["status"] == "completed", comp
    assert comp["progress"] == 100
    (picture,) = comp["outputs"]
    assert picture["type"] == "image" and picture["name"] == "picture"
    assert (picture["width"], picture["height"]) == (48, 32)
    with Image.open(io.BytesIO(output_path(gconfig, picture["url"]).read_bytes())) as im:
        assert im.size == (48, 32)
    # The final image is one of the account's creations: listed with its uploads, and
    # its signed link opens without a key.
    (made,) = gclient.simulate_get("/content/list", params={"source": "output"},
                                   headers=bearer(key)).json["data"]["items"]
    assert made["contentId"] == picture["contentId"] and made["compositionUid"] == run_id
    link = gclient.simulate_get(picture["url"].split("gateway.test")[1])
    assert link.status_code == 200 and link.headers["content-type"] == "image/png"
    record = run_record(gclient, key, run_id)
    assert record["status"] == "completed" and record["txnReceipt"] == receipt
    assert record["variables"]["subject"] == "teapot" and record["seed"] == 7
    assert set(node_status(record).values()) == {"completed"}
    assert [i["credits"] for i in record["line_items"]] == [n["credits"] for n in quote["nodes"]]
    assert refunds_of(account) == []
    total, balance = ledger_sum(account)
    assert total == balance == 200 - quote["estimated_cost"]


def test_five_node_graph_on_the_seed_sse_face(gconfig, schema, gen_account):
    client = TestClient(make_app(gconfig))
    account, key = gen_account(200)
    pid = create_project(client, key, FIVE_NODES, SUBJECT)
    cost = estimate(client, key, pid, seed=3)["estimated_cost"]
    proc = start_worker(gconfig, queues="cpu,gpu,webhooks", MODELS_FILE=gconfig.models_file)
    try:
        resp = client.simulate_post("/api/project/runs/run", headers=bearer(key),
                                    json={"project_id": pid, "seed": 3})
    finally:
        stop_worker(proc)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/event-stream")
    # the stream's meta, as headers (CONTRACT 1, 9)
    assert resp.headers["X-Txn-Receipt"].startswith("txn_")
    assert int(resp.headers["X-Credits-Used"]) == cost
    assert int(resp.headers["X-Available-Credit"]) == 200 - cost
    assert int(resp.headers["X-TTL"]) > 0
    events = parse_sse(resp.text)
    names = [e for _, e, _ in events]
    assert names[0] == "run.started" and names[-1] == "run.completed", names
    assert events[0][2]["estimated_cost"] == cost
    outputs = events[-1][2]["outputs"]
    assert outputs[0]["width"] == 48 and outputs[0]["height"] == 32
    with Image.open(io.BytesIO(output_path(gconfig, outputs[0]["url"]).read_bytes())) as im:
        assert im.size == (48, 32)
    assert ledger_sum(account)[1] == 200 - cost


# --- estimate equals debit -------------------------------------------------------------------

CHEAP = st.sampled_from(["resize", "overlay_text"])


@st.composite
def graphs(draw):
    """A random DAG: a load_image or generate_image root, a chain and a fan of image nodes,
    optional free text nodes, and one or two outputs."""
    nodes = []
    if draw(st.booleans()):
        nodes.append({"id": "root", "type": "load_image", "inputs": {"url": {"variable": "url"}}})
    else:
        nodes.append({"id": "root", "type": "generate_image", "inputs": {
            "prompt": "a box", "model": "tiny", "width": draw(st.sampled_from([32, 64])),
            "height": 64, "steps": draw(st.integers(1, 4))}})
    for i in range(draw(st.integers(0, 4))):
        source = draw(st.sampled_from([n["id"] for n in nodes
                                       if n["type"] in ("load_image", "generate_image",
                                                        "resize", "overlay_text")]))
        kind = draw(CHEAP)
        inputs = {"image": {"node": source, "output": "image"}}
        if kind == "resize":
            inputs.update(width=draw(st.integers(8, 96)), height=draw(st.integers(8, 96)),
                          mode=draw(st.sampled_from(["fit", "fill", "crop", "pad"])))
        else:
            inputs["text"] = draw(st.sampled_from(["hi", "50% off"]))
        nodes.append({"id": f"n{i}", "type": kind, "inputs": inputs})
    for j, target in enumerate(draw(st.lists(st.sampled_from([n["id"] for n in nodes]),
                                             min_size=1, max_size=2, unique=True))):
        nodes.append({"id": f"out{j}", "type": "output",
                      "inputs": {"value": {"node": target, "output": "image"}}})
    return nodes


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(nodes=graphs(), seed=st.integers(0, 2**32 - 1), rerun=st.booleans())
def test_estimate_equals_debit_for_generated_graphs(gclient, gconfig, gen_account, images,
                                                     nodes, seed, rerun):
    account, key = gen_account(10_000)
    url = [{"name": "url", "type": "image", "default": images.url + "/product.png"}]
    pid = create_project(gclient, key, nodes, url)
    quote = estimate(gclient, key, pid, seed=seed)
    started = start_run(gclient, key, pid, seed=seed)
    assert started["meta"]["creditsUsed"] == quote["estimated_cost"]
    assert ledger_sum(account)[1] == 10_000 - quote["estimated_cost"]
    if not rerun:
        return
    burst(gconfig, QUEUES)
    assert run_record(gclient, key, started["data"]["composition"]["uid"])["status"] == \
        "completed"
    again = estimate(gclient, key, pid, seed=seed)  # now from the cache
    assert again["estimated_cost"] <= quote["estimated_cost"]
    assert all(n["credits"] == 0 for n in again["nodes"] if n["status"] == "cached")
    second = start_run(gclient, key, pid, seed=seed)
    assert second["meta"].get("creditsUsed", 0) == again["estimated_cost"]


# --- validation: nothing charged, nothing created ---------------------------------------------

OUT = {"id": "out", "type": "output", "inputs": {"value": {"node": "t", "output": "text"}}}
TEXT = {"id": "t", "type": "text", "inputs": {"template": "hello"}}


def _with(node):
    return [node, OUT]


INVALID = {
    "unknown_node_type": [{"id": "t", "type": "teleport", "inputs": {}}, OUT],
    "required_input_missing": _with({"id": "t", "type": "text", "inputs": {}}),
    "bad_linked_input": [TEXT, {"id": "out", "type": "output",
                                "inputs": {"value": {"node": "ghost", "output": "text"}}}],
    "return_type_mismatch": [TEXT, {"id": "r", "type": "resize", "inputs": {
        "image": {"node": "t", "output": "text"}, "width": 10, "height": 10}},
        {"id": "out", "type": "output", "inputs": {"value": {"node": "r", "output": "image"}}}],
    "value_bigger_than_max": [
        {"id": "g", "type": "generate_image", "inputs": {"prompt": "x", "model": "tiny",
                                                         "steps": 100000}},
        {"id": "out", "type": "output", "inputs": {"value": {"node": "g", "output": "image"}}}],
    "value_not_in_list": [
        {"id": "g", "type": "load_image", "inputs": {"url": "http://example.com/a.png"}},
        {"id": "r", "type": "resize", "inputs": {"image": {"node": "g", "output": "image"},
                                                 "width": 8, "height": 8, "mode": "melt"}},
        {"id": "out", "type": "output", "inputs": {"value": {"node": "r", "output": "image"}}}],
    "unknown_variable": _with({"id": "t", "type": "text", "inputs": {"template": "{{nope}}"}}),
    "cycle": [
        {"id": "a", "type": "resize", "inputs": {"image": {"node": "b", "output": "image"},
                                                 "width": 8, "height": 8}},
        {"id": "b", "type": "resize", "inputs": {"image": {"node": "a", "output": "image"},
                                                 "width": 8, "height": 8}},
        {"id": "out", "type": "output", "inputs": {"value": {"node": "a", "output": "image"}}}],
    "prompt_no_outputs": [TEXT],
}


@pytest.mark.parametrize("kind", sorted(INVALID))
def test_each_validation_error_charges_nothing_and_creates_nothing(gclient, gen_account, kind):
    account, key = gen_account(100)
    resp = gclient.simulate_post("/api/project/create", headers=bearer(key), json={
        "name": "bad", "node_data": INVALID[kind]})
    assert resp.status_code == 400, resp.text
    error = resp.json["error"]
    assert error["code"] == "INVALID_REQUEST" and error["statusCode"] == 400
    types = [d.get("type") for d in error["details"]]
    assert kind in types, error["details"]
    detail = error["details"][types.index(kind)]
    if kind == "cycle":
        assert detail["field"] == "graph" and set(detail["nodes"]) == {"a", "b"}
    elif kind == "prompt_no_outputs":
        assert detail["field"] == "graph"
    else:
        assert detail["node"] and detail["field"].startswith(f"nodes.{detail['node']}")
    listed = gclient.simulate_get("/api/project/list/mine", headers=bearer(key)).json["data"]
    assert listed["total"] == 0
    assert ledger_sum(account) == (100, 100)


def test_run_time_variable_errors_charge_nothing(gclient, gen_account, images):
    account, key = gen_account(100)
    nodes = [{"id": "img", "type": "load_image", "inputs": {"url": {"variable": "url"}}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "img",
                                                                  "output": "image"}}}]
    pid = create_project(gclient, key, nodes, [{"name": "url", "type": "image",
                                                "required": True}])
    for variables, kind in (({}, "required_input_missing"),
                            ({"url": 5}, "invalid_value_type"),
                            ({"url": images.url + "/product.png", "x": 1}, "unknown_variable")):
        for path in ("/zapier/v1/run-project", "/api/project/runs/estimate",
                     "/api/project/runs/run"):
            resp = gclient.simulate_post(path, headers=bearer(key),
                                         json={"project_id": pid, "variables": variables})
            assert resp.status_code == 400, (path, resp.text)
            assert kind in [d.get("type") for d in resp.json["error"]["details"]], resp.json
    assert ledger_sum(account) == (100, 100)
    assert runs_of(account) == 0


def test_a_private_address_to_fetch_is_refused_before_any_charge(gclient, gen_account):
    account, key = gen_account(100)
    nodes = [{"id": "img", "type": "load_image", "inputs": {"url": {"variable": "url"}}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "img",
                                                                  "output": "image"}}}]
    pid = create_project(gclient, key, nodes, [{"name": "url", "type": "image",
                                                "default": "http://10.1.2.3/a.png"}])
    for path in ("/zapier/v1/run-project", "/api/project/runs/estimate",
                 "/api/project/runs/run"):
        resp = gclient.simulate_post(path, headers=bearer(key), json={"project_id": pid})
        assert resp.status_code == 400, (path, resp.text)
        (detail,) = resp.json["error"]["details"]
        assert detail["type"] == "url_not_allowed" and detail["node"] == "img"
        assert "not a public address" in detail["problem"]
    assert ledger_sum(account) == (100, 100)
    assert runs_of(account) == 0


# --- failure, cancel, a killed worker, retry ---------------------------------------------------


class FlakyHost(_Server):
    """An image host: /ok.png always, /flaky.png fails (503) until ``heal()``, /slow.png
    drips for about 6 s (long enough to kill the worker running it)."""

    def __init__(self):
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (10, 120, 200)).save(buf, "PNG")
        body, host = buf.getvalue(), self
        self.healed = False

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path == "/flaky.png" and not host.healed:
                    self.send_error(503)
                    return
                if self.path not in ("/ok.png", "/flaky.png", "/slow.png"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path == "/slow.png":
                    for byte in range(len(body)):
                        try:
                            self.wfile.write(body[byte:byte + 1])
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(6 / len(body))
                else:
                    self.wfile.write(body)

        super().__init__(Handler)

    def heal(self):
        self.healed = True


@pytest.fixture
def flaky():
    host = FlakyHost()
    yield host
    host.close()


def two_branches(host, second="/flaky.png"):
    """ok: load -> resize -> out1; other: load(second) -> overlay -> out2."""
    return [
        {"id": "a", "type": "load_image", "inputs": {"url": host.url + "/ok.png"}},
        {"id": "b", "type": "resize", "inputs": {"image": {"node": "a", "output": "image"},
                                                 "width": 20, "height": 20}},
        {"id": "c", "type": "load_image", "inputs": {"url": host.url + second}},
        {"id": "d", "type": "overlay_text", "inputs": {"image": {"node": "c", "output": "image"},
                                                       "text": "hi"}},
        {"id": "out1", "type": "output", "inputs": {"value": {"node": "b", "output": "image"}}},
        {"id": "out2", "type": "output", "inputs": {"value": {"node": "d", "output": "image"}}},
    ]


def test_failing_node_refunds_exactly_the_unexecuted_nodes_once_then_retry(
        gclient, gconfig, gen_account, flaky):
    account, key = gen_account(100)
    pid = create_project(gclient, key, two_branches(flaky))
    started = start_run(gclient, key, pid, seed=1)
    run_id, cost = started["data"]["composition"]["uid"], started["meta"]["creditsUsed"]
    receipt = started["meta"]["txnReceipt"]
    burst(gconfig, QUEUES)
    record = run_record(gclient, key, run_id)
    assert record["status"] == "failed", record
    statuses = node_status(record)
    assert statuses["c"] == "failed"
    assert statuses["d"] in ("skipped", "cancelled") and statuses["out2"] != "completed"
    done = sum(n["credits"] for n in record["nodes"] if n["status"] == "completed")
    assert refunds_of(account) == [(receipt, cost - done)]
    assert record["refunded"] == cost - done and record["refundReceipt"]
    assert ledger_sum(account)[1] == 100 - done
    burst(gconfig, QUEUES)  # nothing left to do: no second refund
    assert len(refunds_of(account)) == 1

    flaky.heal()
    resp = gclient.simulate_post(f"/api/project/runs/{run_id}/retry", headers=bearer(key),
                                 json={"from": "failed"})
    assert resp.status_code == 202, resp.text
    retry = resp.json["data"]
    assert retry["retry_of"] == run_id
    plan = node_status(retry)
    # b's output is cached, so a is not needed at all; c (failed) runs again
    assert plan["b"] == "cached" and plan["a"] in ("cached", "skipped"), plan
    assert plan["c"] != "cached"
    rerun = sum(n["credits"] for n in retry["nodes"])
    assert rerun == retry["creditsUsed"] == cost - done  # the completed nodes are cached
    burst(gconfig, QUEUES)
    final = run_record(gclient, key, retry["run_id"])
    assert final["status"] == "completed", final
    assert len(final["outputs"]) == 2
    assert ledger_sum(account)[1] == 100 - done - rerun


def wait_node(client, key, run_id, node, status, timeout=60):
    deadline = time.monotonic() + timeout
    while node_status(run_record(client, key, run_id))[node] != status:
        assert time.monotonic() < deadline, f"node {node} never became {status}"
        time.sleep(0.1)


def test_cancel_mid_run_refunds_what_did_not_run(gclient, gconfig, gen_account, flaky):
    account, key = gen_account(100)
    pid = create_project(gclient, key, two_branches(flaky, "/slow.png"))
    started = start_run(gclient, key, pid, seed=1)
    run_id, cost = started["data"]["composition"]["uid"], started["meta"]["creditsUsed"]
    proc = start_worker(gconfig, queues="cpu")
    try:
        wait_node(gclient, key, run_id, "c", "running")  # the slow branch is fetching
        resp = gclient.simulate_post(f"/api/project/runs/{run_id}/cancel", headers=bearer(key))
        assert resp.status_code == 200, resp.text
        assert resp.json["data"]["status"] == "cancelled"
        again = gclient.simulate_post(f"/api/project/runs/{run_id}/cancel",
                                      headers=bearer(key))
        assert again.status_code == 409
    finally:
        stop_worker(proc)  # a warm stop: the slow node finishes, and is discarded
    record = run_record(gclient, key, run_id)
    assert record["status"] == "cancelled"
    statuses = node_status(record)
    assert statuses["c"] == "cancelled" and statuses["d"] in ("skipped", "cancelled")
    done = sum(n["credits"] for n in record["nodes"] if n["status"] == "completed")
    assert done < cost
    assert [a for _, a in refunds_of(account)] == [cost - done]
    assert record["refunded"] == cost - done
    assert ledger_sum(account)[1] == 100 - done
    assert not any(n["status"] in ("queued", "running", "pending") for n in record["nodes"])
    events = parse_sse(gclient.simulate_get(f"/api/project/runs/{run_id}/events",
                                            headers=bearer(key)).text)
    assert events[-1][1] == "run.cancelled"
    assert "node.completed" not in [e for _, e, d in events if d.get("node") == "c"]


def test_killed_worker_mid_run_fails_the_node_and_refunds(gclient, gconfig, gen_account,
                                                          flaky):
    import datetime as dt

    from gateway.services import install_worker_runtime
    from jobs.workflows import executor
    from metering.db import connection

    account, key = gen_account(100)
    nodes = [{"id": "slow", "type": "load_image", "inputs": {"url": flaky.url + "/slow.png"}},
             {"id": "r", "type": "resize", "inputs": {"image": {"node": "slow",
                                                                "output": "image"},
                                                      "width": 8, "height": 8}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "r",
                                                                  "output": "image"}}}]
    pid = create_project(gclient, key, nodes)
    started = start_run(gclient, key, pid, seed=1)
    run_id, cost = started["data"]["composition"]["uid"], started["meta"]["creditsUsed"]
    proc = start_worker(gconfig, queues="cpu")
    try:
        wait_node(gclient, key, run_id, "slow", "running")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop_worker(proc)
    install_worker_runtime(gconfig)
    with connection():
        later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=5)
        assert executor.reap(now=later) >= 1
    record = run_record(gclient, key, run_id)
    assert record["status"] == "failed"
    assert node_status(record)["slow"] == "failed"
    assert record["error"]["code"] == "WORKER_LOST"
    assert [a for _, a in refunds_of(account)] == [cost]
    assert ledger_sum(account)[1] == 100


# --- isolation --------------------------------------------------------------------------------


def test_private_projects_are_404_to_others_on_every_route(gclient, gen_account):
    _, owner = gen_account(100)
    other_account, other = gen_account(100)
    pid = create_project(gclient, owner, [TEXT, OUT])
    h = bearer(other)
    for method, path, kw in (
            ("GET", "/api/project/get", {"params": {"project_id": pid}}),
            ("POST", "/api/project/update", {"json": {"project_id": pid, "name": "x"}}),
            ("POST", "/api/project/delete", {"json": {"project_id": pid}}),
            ("POST", "/api/project/interact", {"json": {"project_id": pid,
                                                        "interaction_type": "like"}}),
            ("POST", "/api/project/runs/estimate", {"json": {"project_id": pid}}),
            ("POST", "/api/project/runs/run", {"json": {"project_id": pid}}),
            ("POST", "/zapier/v1/run-project", {"json": {"project_id": pid}}),
            ("GET", "/api/project/runs/list", {"params": {"project_id": pid}}),
            ("POST", "/2/enqueueWorkflow", {"json": {"workflowTemplateName": pid}})):
        resp = gclient.simulate_request(method, path, headers=h, **kw)
        assert resp.status_code in (400, 404), (path, resp.text)
        if resp.status_code == 400:  # only a parameter problem may come first, never data
            assert resp.json["error"]["code"] == "INVALID_REQUEST", (path, resp.text)
        else:
            assert resp.json["error"]["code"] == "NOT_FOUND", (path, resp.text)
    started = start_run(gclient, owner, pid)
    run_id = started["data"]["composition"]["uid"]
    for method, path in (("GET", f"/api/project/runs/{run_id}"),
                         ("GET", f"/api/project/runs/{run_id}/events"),
                         ("POST", f"/api/project/runs/{run_id}/cancel"),
                         ("POST", f"/api/project/runs/{run_id}/retry")):
        resp = gclient.simulate_request(method, path, headers=h, json={})
        assert resp.status_code == 404, (path, resp.text)
    templates = gclient.simulate_get("/2/getAggregatedWorkflowTemplates", headers=h)
    assert pid not in [t["name"] for t in templates.json["data"]]
    assert ledger_sum(other_account) == (100, 100)


def test_one_accounts_cache_never_serves_another(gclient, gconfig, gen_account, images):
    _, owner = gen_account(100)
    _, other = gen_account(100)
    nodes = [{"id": "img", "type": "load_image", "inputs": {"url": images.url + "/product.png"}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "img",
                                                                  "output": "image"}}}]
    pid = create_project(gclient, owner, nodes, visibility="public")
    first = start_run(gclient, owner, pid, seed=5)
    burst(gconfig, QUEUES)
    assert run_record(gclient, owner, first["data"]["composition"]["uid"])["status"] == \
        "completed"
    mine = estimate(gclient, owner, pid, seed=5)
    theirs = estimate(gclient, other, pid, seed=5)
    assert {n["id"]: n["status"] for n in mine["nodes"]}["img"] == "cached"
    assert mine["estimated_cost"] == 0
    assert {n["id"]: n["status"] for n in theirs["nodes"]}["img"] == "pending"
    assert theirs["estimated_cost"] == first["meta"]["creditsUsed"] > 0


# --- events -----------------------------------------------------------------------------------


def test_event_order_and_last_event_id_resume(gclient, gconfig, gen_account, images):
    _, key = gen_account(100)
    nodes = [{"id": "img", "type": "load_image", "inputs": {"url": images.url + "/product.png"}},
             {"id": "r", "type": "resize", "inputs": {"image": {"node": "img",
                                                                "output": "image"},
                                                      "width": 16, "height": 16}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "r",
                                                                  "output": "image"}}}]
    pid = create_project(gclient, key, nodes)
    run_id = start_run(gclient, key, pid)["data"]["composition"]["uid"]
    burst(gconfig, QUEUES)
    resp = gclient.simulate_get(f"/api/project/runs/{run_id}/events", headers=bearer(key))
    assert resp.status_code == 200
    events = parse_sse(resp.text)
    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    names = [e for _, e, _ in events]
    assert names[0] == "run.started" and names[-1] == "run.completed"
    for node in ("img", "r"):
        mine = [e for _, e, d in events if d.get("node") == node]
        assert mine[0] == "node.started" and mine[-1] == "node.completed", mine
    assert names.index("node.completed") < [n for n, (_, e, d) in enumerate(events)
                                            if e == "node.started" and d["node"] == "r"][0]
    progress = [d["progress"] for _, _, d in events]
    assert progress == sorted(progress) and progress[-1] == 100
    assert all(d["run_id"] == run_id for _, _, d in events)
    resumed = gclient.simulate_get(f"/api/project/runs/{run_id}/events",
                                   headers={**bearer(key), "Last-Event-ID": str(ids[2])})
    assert parse_sse(resumed.text) == events[3:]
    by_query = gclient.simulate_get(f"/api/project/runs/{run_id}/events", headers=bearer(key),
                                    params={"last_event_id": str(ids[-2])})
    assert parse_sse(by_query.text) == events[-1:]


# --- money under concurrency -------------------------------------------------------------------


def test_two_runs_racing_on_a_balance_for_one_start_exactly_one(gclient, gen_account, images):
    account, key = gen_account(1)
    nodes = [{"id": "img", "type": "load_image", "inputs": {"url": images.url + "/product.png"}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "img",
                                                                  "output": "image"}}}]
    pid = create_project(gclient, key, nodes)
    assert estimate(gclient, key, pid)["estimated_cost"] == 1
    barrier, answers = threading.Barrier(2), []

    def go():  # two threads, two database connections, one balance
        barrier.wait()
        answers.append(gclient.simulate_post("/zapier/v1/run-project", headers=bearer(key),
                                             params={"wait": "0"}, json={"project_id": pid}))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [202, 403], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 403).json
    assert refused["error"]["code"] == "INSUFFICIENT_CREDITS"
    assert ledger_sum(account) == (0, 0)
    assert runs_of(account) == 1
