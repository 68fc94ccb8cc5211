"""Seed 003's API2 workflow routes over the project engine: templates are the caller's own
and public projects, enqueueWorkflow is the same metered run (one debit, the estimate),
getWorkflowStatus reads the same run record."""

from __future__ import annotations

from async_support import burst
from conftest import bearer, ledger_sum

NODES = [
    {"id": "caption", "type": "text", "inputs": {"template": "{{prompt}} / {{steps}}"}},
    {"id": "img", "type": "load_image", "inputs": {"url": {"variable": "url"}}},
    {"id": "label", "type": "overlay_text",
     "inputs": {"image": {"node": "img", "output": "image"},
                "text": {"node": "caption", "output": "text"}}},
    {"id": "out", "type": "output", "inputs": {"value": {"node": "label", "output": "image"},
                                               "name": "result"}},
]


def variables(images):
    return [{"name": "prompt", "type": "text", "default": "hello", "help": "The caption"},
            {"name": "steps", "type": "number", "default": 2, "help": "A number"},
            {"name": "url", "type": "image", "default": images.url + "/product.png",
             "help": "The picture"}]


def _project(client, key, images, visibility="private", name="caption"):
    resp = client.simulate_post("/api/project/create", headers=bearer(key), json={
        "name": name, "visibility": visibility, "node_data": NODES,
        "manual_data": variables(images)})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["project_id"]


def test_templates_are_own_and_public_projects(gclient, gen_account, images):
    _, me = gen_account(10)
    _, other = gen_account(10)
    mine = _project(gclient, me, images)
    public = _project(gclient, other, images, visibility="public")
    hidden = _project(gclient, other, images, visibility="unlisted")
    resp = gclient.simulate_get("/2/getAggregatedWorkflowTemplates", headers=bearer(me))
    assert resp.status_code == 200, resp.text
    names = [t["name"] for t in resp.json["data"]]
    assert mine in names and public in names and hidden not in names
    template = next(t for t in resp.json["data"] if t["name"] == mine)
    params = {p["name"]: p for p in template["parameters"]}
    assert params["prompt"]["dataType"] == "string"
    assert params["steps"]["dataType"] == "number"
    assert params["prompt"]["defaultValue"] == "hello"
    assert params["prompt"]["isOptional"] is True
    assert params["prompt"]["replaceFromString"] == "{{prompt}}"
    only = gclient.simulate_get("/2/getAggregatedWorkflowTemplates", headers=bearer(me),
                                params={"workflowTemplateNames": public}).json["data"]
    assert [t["name"] for t in only] == [public]


def test_enqueue_workflow_is_the_metered_run_and_status_follows_it(gclient, gconfig,
                                                                   gen_account, images):
    account, key = gen_account(50)
    pid = _project(gclient, key, images)
    cost = gclient.simulate_post("/api/project/runs/estimate", headers=bearer(key), json={
        "project_id": pid}).json["data"]["estimated_cost"]
    resp = gclient.simulate_post("/2/enqueueWorkflow", headers=bearer(key), json={
        "workflowTemplateName": pid, "prompt": "Big sale",
        "parameters": [{"name": "steps", "value": "7"}]})
    assert resp.status_code in (200, 202), resp.text
    data = resp.json["data"]
    workflow = data["workflowId"]
    assert data["itemIds"] == [workflow]
    assert resp.json["meta"]["creditsUsed"] == cost
    assert ledger_sum(account)[1] == 50 - cost
    burst(gconfig, ("cpu",))
    status = gclient.simulate_get("/2/getWorkflowStatus", headers=bearer(key),
                                  params={"workflowId": workflow})
    assert status.status_code == 200, status.text
    state = status.json["data"]
    assert state["publicId"] == workflow and state["isComplete"] is True
    assert state["isError"] is False and state["state"] == "completed"
    assert state["runParamaters"]["workflowTemplateName"] == pid
    used = {p["name"]: p["value"] for p in state["runParamaters"]["parameters"]}
    assert used["prompt"] == "Big sale" and used["steps"] == "7"
    assert state["outputFiles"][0]["isMainOutput"] is True
    assert state["outputFiles"][0]["downloadURL"].startswith("http")
    both = gclient.simulate_get("/2/getWorkflowStatus", headers=bearer(key),
                                params={"workflowIds": f"{workflow},{workflow}"})
    assert isinstance(both.json["data"], list)
    item = gclient.simulate_get("/getItemStatus", headers=bearer(key),
                                params={"imageID": workflow})
    assert item.status_code == 200 and item.json["data"]["status"] == "completed"


def test_enqueue_workflow_refuses_bad_input_without_charging(gclient, gen_account, images):
    account, key = gen_account(50)
    pid = _project(gclient, key, images)
    for body in ({}, {"workflowTemplateName": "prj_nope"},
                 {"workflowTemplateName": pid, "parameters": [{"name": "nope", "value": "1"}]},
                 {"workflowTemplateName": pid, "parameters": [{"name": "steps",
                                                               "value": "many"}]},
                 {"workflowTemplateName": pid, "parameters": "steps=1"}):
        resp = gclient.simulate_post("/2/enqueueWorkflow", headers=bearer(key), json=body)
        assert resp.status_code in (400, 404), (body, resp.text)
    missing = gclient.simulate_get("/2/getWorkflowStatus", headers=bearer(key))
    assert missing.status_code == 400
    assert ledger_sum(account) == (50, 50)


def test_file_group_items_and_user_session(lclient, make_account):
    """The two API2 reads beside the workflows: a file group is a tag of the caller's
    content items (only the caller's, the exact tag); the user session is the credential's."""
    from test_content import png, upload

    account_id, key = make_account(credits=10)
    _, other = make_account(credits=10)
    for name, tags, who in (("a.png", "shots,red", key), ("b.png", "shots", key),
                            ("c.png", "sh_ts", key), ("d.png", "shots", other)):
        resp = upload(lclient, who, png(seed=len(name) + ord(name[0])), filename=name,
                      tags=tags)
        assert resp.status_code == 201, resp.text

    def group(k, name):
        return lclient.simulate_get("/2/getFileGroupItems", params={"fileGroup": name},
                                    headers=bearer(k))

    got = group(key, "shots")
    assert got.status_code == 200, got.text
    assert got.json["data"] == {"fileGroup": "shots", "fileNames": ["b.png", "a.png"]}
    assert group(key, "red").json["data"]["fileNames"] == ["a.png"]
    assert group(key, "sh_ts").json["data"]["fileNames"] == ["c.png"]  # "_" is no wildcard
    assert group(key, "nothing").json["data"]["fileNames"] == []  # a search: 200, empty
    assert group(other, "shots").json["data"]["fileNames"] == ["d.png"]
    for bad in ({}, {"fileGroup": ""}, {"fileGroup": "x" * 65}):
        resp = lclient.simulate_get("/2/getFileGroupItems", params=bad, headers=bearer(key))
        assert resp.status_code == 400 and resp.json["error"]["code"] == "INVALID_REQUEST"
    assert lclient.simulate_get("/2/getFileGroupItems", params={"fileGroup": "x"}) \
        .status_code == 401

    sid = "0b8f5f0e-5d2a-4f0e-8a51-3f2a1c9b7d10"
    session = lclient.simulate_get("/2/getUserSession",
                                   headers={**bearer(key), "X-Session-ID": sid})
    assert session.status_code == 200, session.text
    data = session.json["data"]
    assert data["userSession"]["_id"] == sid and data["userSession"]["userID"] == account_id
    assert data["user"]["_id"] == account_id and data["user"]["isDisabled"] is False
    assert data["user"]["domain"] == "gateway.test" and data["user"]["email"] is None
    derived = lclient.simulate_get("/2/getUserSession", headers=bearer(key)).json["data"]
    again = lclient.simulate_get("/2/getUserSession", headers=bearer(key)).json["data"]
    assert derived["userSession"]["_id"] == again["userSession"]["_id"] != sid  # stable
