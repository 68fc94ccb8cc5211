"""Projects (seed 000 ``/api/project/*``) through the real HTTP app and PostgreSQL: create,
read, update and delete with the seed's fields, parameters in the body or the query
string, visibility (private is 404 to others, unlisted readable by id, public listed),
likes and saves, page/limit lists and the trending order on an injected clock; and the
run routes over a queued run (list, record, cancel and its refund, events, retry), which
need no worker."""

from __future__ import annotations

import datetime as dt

from falcon.testing import TestClient

from conftest import bearer, ledger_sum, make_app
from core.clock import ManualClock, utcnow

NODES = [{"id": "t", "type": "text", "inputs": {"template": "a {{subject}}"},
          "position": {"x": 1, "y": 2}},
         {"id": "out", "type": "output", "inputs": {"value": {"node": "t", "output": "text"},
                                                    "name": "caption"}}]
VARIABLES = [{"name": "subject", "type": "text", "default": "cat", "help": "What"}]


def create(client, key, **body):
    payload = {"name": "p", "node_data": NODES, "manual_data": VARIABLES, **body}
    resp = client.simulate_post("/api/project/create", headers=bearer(key), json=payload)
    assert resp.status_code == 201, resp.text
    return resp.json["data"]


def get(client, key, pid):
    return client.simulate_get("/api/project/get", headers=bearer(key),
                               params={"project_id": pid})


def test_create_get_update_delete(client, make_account):
    _, key = make_account()
    made = create(client, key, description="d", data={"editor": {"zoom": 2}},
                  connection_data=[], extra_editor_state=True)
    pid = made["project_id"]
    assert made["title"] == "p" and made["visibility"] == "private"
    view = get(client, key, pid).json["data"]
    assert view["project_id"] == pid and view["is_owner"] is True
    assert view["node_data"] == NODES  # stored as sent, editor keys included
    assert view["data"] == {"editor": {"zoom": 2}}
    assert [n["id"] for n in view["graph"]["nodes"]] == ["t", "out"]
    assert view["variables"][0]["name"] == "subject"
    assert (view["likes"], view["saves"], view["runs"]) == (0, 0, 0)
    assert view["liked"] is False and view["owner"]

    resp = client.simulate_post("/api/project/update", headers=bearer(key), json={
        "project_id": pid, "name": "renamed", "visibility": "unlisted"})
    assert resp.status_code == 200, resp.text
    assert resp.json["data"]["message"] == "Project updated successfully"  # seed 000
    updated = resp.json["data"]["project"]
    assert updated["id"] == updated["project_id"] == pid  # CONTRACT 7: a stable id
    assert updated["name"] == "renamed" and updated["visibility"] == "unlisted"
    assert updated["node_data"] == NODES  # untouched

    bad = client.simulate_post("/api/project/update", headers=bearer(key), json={
        "project_id": pid, "node_data": [{"id": "t", "type": "teleport", "inputs": {}}]})
    assert bad.status_code == 400
    assert "unknown_node_type" in [d.get("type") for d in bad.json["error"]["details"]]
    assert get(client, key, pid).json["data"]["node_data"] == NODES  # nothing changed

    gone = client.simulate_request("DELETE", "/api/project/delete", headers=bearer(key),
                                   params={"project_id": pid})
    assert gone.status_code == 200, gone.text
    assert gone.json["data"]["message"] == "Project deleted successfully"
    assert get(client, key, pid).status_code == 404


def test_parameters_from_the_query_string_and_body_checks(client, make_account):
    _, key = make_account()
    resp = client.simulate_post("/api/project/create", headers=bearer(key),
                                params={"title": "from query", "visibility": "public"})
    assert resp.status_code == 201, resp.text  # a draft: no nodes yet
    pid = resp.json["data"]["project_id"]
    assert resp.json["data"]["title"] == "from query"
    post_get = client.simulate_post("/api/project/get", headers=bearer(key),
                                    json={"project_id": pid})
    assert post_get.status_code == 200 and post_get.json["data"]["visibility"] == "public"
    for body in ({"visibility": "public"}, {"name": "x", "visibility": "secret"},
                 {"name": "x", "node_data": "nodes"}, {"name": ""}):
        bad = client.simulate_post("/api/project/create", headers=bearer(key), json=body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json["error"]["code"] == "INVALID_REQUEST"
    assert get(client, key, "").status_code == 400
    listed = client.simulate_get("/api/project/list/mine", headers=bearer(key)).json["data"]
    assert listed["total"] == 1 and listed["limit"] == 50  # CONTRACT 7's default
    assert all(p["id"] == p["project_id"] for p in listed["projects"])  # CONTRACT 7


def test_visibility_private_unlisted_public(client, make_account):
    _, owner = make_account()
    _, other = make_account()
    private = create(client, owner)["project_id"]
    unlisted = create(client, owner, visibility="unlisted")["project_id"]
    public = create(client, owner, visibility="public")["project_id"]
    for method, path, kw in (
            ("GET", "/api/project/get", {"params": {"project_id": private}}),
            ("POST", "/api/project/update", {"json": {"project_id": private, "name": "x"}}),
            ("POST", "/api/project/delete", {"json": {"project_id": private}}),
            ("POST", "/api/project/interact", {"json": {"project_id": private,
                                                        "interaction_type": "save"}})):
        resp = client.simulate_request(method, path, headers=bearer(other), **kw)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.json["error"]["code"] == "NOT_FOUND"
    seen = get(client, other, unlisted)
    assert seen.status_code == 200 and seen.json["data"]["is_owner"] is False
    for path, body in (("/api/project/update", {"project_id": unlisted, "name": "mine"}),
                       ("/api/project/delete", {"project_id": public})):
        resp = client.simulate_post(path, headers=bearer(other), json=body)
        assert resp.status_code == 403, (path, resp.text)
    trending = client.simulate_get("/api/project/list/trending",
                                   headers=bearer(other)).json["data"]
    assert [p["project_id"] for p in trending["projects"]] == [public]
    mine = client.simulate_get("/api/project/list/mine", headers=bearer(other)).json["data"]
    assert mine["total"] == 0 and mine["projects"] == []


def test_like_and_save_toggle_and_set(client, make_account):
    _, owner = make_account()
    _, fan = make_account()
    pid = create(client, owner, visibility="public")["project_id"]

    def interact(kind, **extra):
        resp = client.simulate_post("/api/project/interact", headers=bearer(fan),
                                    json={"project_id": pid, "interaction_type": kind,
                                          **extra})
        assert resp.status_code == 200, resp.text
        assert resp.json["data"]["project_id"] == pid
        return resp.json["data"]["is_active"]

    assert interact("like") is True
    assert interact("like", active=True) is True  # set, not toggled: still one like
    assert interact("save") is True
    view = get(client, fan, pid).json["data"]
    assert (view["likes"], view["saves"], view["liked"], view["saved"]) == (1, 1, True, True)
    assert get(client, owner, pid).json["data"]["liked"] is False  # per caller
    assert interact("like") is False
    assert interact("save", active=False) is False
    assert interact("save", active=False) is False
    view = get(client, fan, pid).json["data"]
    assert (view["likes"], view["saves"], view["liked"], view["saved"]) == (0, 0, False, False)
    bad = client.simulate_post("/api/project/interact", headers=bearer(fan),
                               json={"project_id": pid, "interaction_type": "run"})
    assert bad.status_code == 400


def test_list_mine_pages(client, make_account):
    _, key = make_account()
    ids = [create(client, key, name=f"p{i}")["project_id"] for i in range(3)]
    first = client.simulate_get("/api/project/list/mine", headers=bearer(key),
                                params={"limit": "2"}).json["data"]
    assert (first["total"], first["pages"], first["page"], first["limit"]) == (3, 2, 1, 2)
    assert first["next"].startswith("http://gateway.test/api/project/list/mine?")
    assert "page=2" in first["next"] and "limit=2" in first["next"]
    second = client.simulate_get("/api/project/list/mine", headers=bearer(key),
                                 params={"limit": "2", "page": "2"}).json["data"]
    assert second["next"] is None
    listed = [p["project_id"] for p in first["projects"] + second["projects"]]
    assert sorted(listed) == sorted(ids) and len(set(listed)) == 3
    for bad in ({"limit": "0"}, {"limit": "101"}, {"page": "0"}, {"limit": "x"}):
        resp = client.simulate_get("/api/project/list/mine", headers=bearer(key), params=bad)
        assert resp.status_code == 400, bad


def test_trending_weighs_recent_likes_saves_and_ties_newest(config, schema, make_account):
    clock = ManualClock(start=utcnow() - dt.timedelta(days=40))
    client = TestClient(make_app(config, clock=clock))
    _, owner = make_account()
    _, fan = make_account()

    def like(pid, kind="like"):
        resp = client.simulate_post("/api/project/interact", headers=bearer(fan),
                                    json={"project_id": pid, "interaction_type": kind})
        assert resp.status_code == 200, resp.text

    old = create(client, owner, visibility="public", name="old")["project_id"]
    like(old)  # 40 days old by the end: outside the 30-day window
    clock.advance(20 * 86400)
    faded = create(client, owner, visibility="public", name="faded")["project_id"]
    like(faded)  # 20 days old: 3 x 0.5^(20/7) ~ 0.41
    clock.advance(20 * 86400)
    fresh = create(client, owner, visibility="public", name="fresh")["project_id"]
    like(fresh, "save")  # now: 4
    clock.advance(1)
    quiet = create(client, owner, visibility="public", name="quiet")["project_id"]
    hidden = create(client, owner, visibility="unlisted", name="hidden")["project_id"]
    like(hidden, "save")
    resp = client.simulate_get("/api/project/list/trending", headers=bearer(fan))
    assert resp.status_code == 200, resp.text
    order = [p["project_id"] for p in resp.json["data"]["projects"]]
    assert order == [fresh, faded, quiet, old]  # score, then newest among equal scores
    page = client.simulate_get("/api/project/list/trending", headers=bearer(fan),
                               params={"limit": "1", "page": "2"}).json["data"]
    assert [p["project_id"] for p in page["projects"]] == [faded]
    assert page["total"] == 4 and page["pages"] == 4 and "page=3" in page["next"]


def test_node_catalogue(client, make_account):
    _, key = make_account()
    resp = client.simulate_get("/api/project/nodes", headers=bearer(key))
    assert resp.status_code == 200, resp.text
    types = {n["type"]: n for n in resp.json["data"]["nodes"]}
    assert {"text", "generate_image", "resize", "output"} <= set(types)
    assert types["output"]["isOutput"] is True


def test_run_list_record_cancel_events_and_retry_without_a_worker(client, make_account):
    """The run routes over a queued run (no worker needed): listed, read, cancelled with
    its one refund, its event log replayed, retried from the start."""
    account, key = make_account(credits=10)
    nodes = [{"id": "img", "type": "load_image", "inputs": {"url": "http://93.184.216.34/a.png"}},
             {"id": "out", "type": "output", "inputs": {"value": {"node": "img",
                                                                  "output": "image"}}}]
    pid = create(client, key, node_data=nodes, manual_data=[])["project_id"]
    started = client.simulate_post("/zapier/v1/run-project", headers=bearer(key),
                                   params={"wait": "0"}, json={"project_id": pid, "seed": 4})
    assert started.status_code == 202, started.text
    run_id, cost = started.json["data"]["composition"]["uid"], started.json["meta"]["creditsUsed"]
    assert cost == 1
    listed = client.simulate_get("/api/project/runs/list", headers=bearer(key),
                                 params={"project_id": pid}).json["data"]
    assert listed["total"] == 1 and listed["next"] is None
    (record,) = listed["runs"]
    assert record["run_id"] == record["id"] == run_id and record["status"] == "queued"
    assert record["seed"] == 4 and record["estimated_cost"] == 1
    assert record["links"]["self"] == f"http://gateway.test/api/project/runs/{run_id}"

    cancelled = client.simulate_post(f"/api/project/runs/{run_id}/cancel", headers=bearer(key))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json["data"]["status"] == "cancelled"
    assert cancelled.json["data"]["refunded"] == 1 and cancelled.json["data"]["refundReceipt"]
    again = client.simulate_post(f"/api/project/runs/{run_id}/cancel", headers=bearer(key))
    assert again.status_code == 409
    assert ledger_sum(account) == (10, 10)

    stream = client.simulate_get(f"/api/project/runs/{run_id}/events", headers=bearer(key))
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    last = [b for b in stream.text.split("\n\n") if b.strip()][-1]
    assert "event: run.cancelled" in last and '"refunded": 1' in last

    retry = client.simulate_post(f"/api/project/runs/{run_id}/retry", headers=bearer(key),
                                 json={"from": "start"})
    assert retry.status_code == 202, retry.text
    assert retry.json["data"]["retry_of"] == run_id and retry.json["data"]["seed"] == 4
    assert retry.json["meta"]["creditsUsed"] == 1
    assert ledger_sum(account)[1] == 9
