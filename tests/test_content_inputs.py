"""Content items as inputs: ``product_content_id`` of the listing action and the
``load_content`` node of project runs read the caller's library through the same tenant
check as every route; an id the caller cannot see is refused before the charge."""

from __future__ import annotations

import io

from PIL import Image
from urllib3 import encode_multipart_formdata

from async_support import burst, poll
from conftest import bearer, ledger_sum


def _upload(client, key, size=(120, 90)):
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, "PNG")
    body, ctype = encode_multipart_formdata({"file": ("p.png", out.getvalue(), "image/png")})
    resp = client.simulate_post("/upload", body=body,
                                headers={**bearer(key), "Content-Type": ctype})
    assert resp.status_code == 201, resp.text
    return resp.json["data"]["contentId"]


def test_listing_from_a_content_item(lclient, lconfig, make_account):
    acct, key = make_account(credits=100)
    other, other_key = make_account(credits=100)
    cid = _upload(lclient, key)
    body = {"product_name": "Mug", "product_content_id": cid}
    refused = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                    params={"wait": "0"}, headers=bearer(other_key))
    assert refused.status_code == 404 and ledger_sum(other) == (100, 100)
    both = lclient.simulate_post("/zapier/v1/generate-product-listing", headers=bearer(key),
                                 json={**body, "product_image_url": "https://x.test/a.png"})
    assert both.status_code == 400
    resp = lclient.simulate_post("/zapier/v1/generate-product-listing", json=body,
                                 params={"wait": "0"}, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    burst(lconfig)
    done = poll(lclient, key, resp.json["data"]["composition"]["uid"])
    assert done["status"] == "completed", done
    assert done["outputs"] and all("/links/" in o["url"] for o in done["outputs"]
                                   if o.get("url"))


def test_load_content_node(lclient, lconfig, make_account):
    acct, key = make_account(credits=100)
    _, other_key = make_account(credits=100)
    cid = _upload(lclient, key, (80, 60))
    nodes = [{"id": "in", "type": "load_content", "inputs": {"content_id": cid}},
             {"id": "small", "type": "resize",
              "inputs": {"image": {"node": "in", "output": "image"}, "width": 40,
                         "height": 30, "mode": "fit"}},
             {"id": "out", "type": "output",
              "inputs": {"value": {"node": "small", "output": "image"}, "name": "thumb"}}]
    made = lclient.simulate_post("/api/project/create", headers=bearer(key), json={
        "name": "thumb", "visibility": "unlisted", "node_data": nodes})
    assert made.status_code == 201, made.text
    pid = made.json["data"]["project_id"]
    # The project is readable by id, but the content it loads is not the other's.
    theirs = lclient.simulate_post("/zapier/v1/run-project", json={"project_id": pid},
                                   params={"wait": "0"}, headers=bearer(other_key))
    assert theirs.status_code == 400, theirs.text
    assert theirs.json["error"]["details"][0]["type"] == "content_not_found"
    resp = lclient.simulate_post("/zapier/v1/run-project", json={"project_id": pid},
                                 params={"wait": "0"}, headers=bearer(key))
    assert resp.status_code == 202, resp.text
    burst(lconfig)
    done = poll(lclient, key, resp.json["data"]["composition"]["uid"])
    assert done["status"] == "completed", done
    (thumb,) = done["outputs"]
    got = lclient.simulate_get(thumb["url"].split("gateway.test")[1])
    assert Image.open(io.BytesIO(got.content)).size == (40, 30)
