"""The OpenAPI document as Make, n8n and client generators use it (issue 15, "OpenAPI").

Every route of the app has a documented answer (``gateway.openapi_schemas``), the examples
validate against their own schemas, the async contract and the real status codes are in
the document, answers of the real app validate against it, and a client generated from it
by ``openapi-python-client`` calls a live gunicorn.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import jsonschema
import pytest
import requests

from conftest import bearer
from gateway import openapi_schemas
from gateway.openapi import METHODS, documented
from gateway.routes import route_table

JSON = "application/json"


@pytest.fixture
def doc(client):
    resp = client.simulate_get("/openapi.json")
    assert resp.status_code == 200
    return resp.json


def _operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield path, method, op


def _validate(doc, schema, value):
    """``value`` against ``schema``, its ``$ref``s resolved in the document's components."""
    jsonschema.Draft202012Validator({"components": doc["components"], "allOf": [schema]}
                                    ).validate(value)


def test_every_route_has_a_documented_answer(app):
    """A route added without an entry in gateway/openapi_schemas.RESPONSES fails here (and
    one whose entry defers to ``openapi_responses`` must have them)."""
    missing, stale = [], []
    table = route_table(app.deps)
    for path, resource in table:
        if not documented(path, resource):
            continue
        for method in METHODS:
            if not hasattr(resource, f"on_{method}"):
                continue
            entry = openapi_schemas.RESPONSES.get(path, {}).get(method)
            if entry is None:
                missing.append(f"{method.upper()} {path}: no entry in RESPONSES")
            elif entry["ok"] is None and method not in getattr(resource, "openapi_responses",
                                                               {}):
                missing.append(f"{method.upper()} {path}: no openapi_responses on the resource")
    routes = {p for p, _ in table}
    stale = [p for p in openapi_schemas.RESPONSES if p not in routes]
    assert missing == [] and stale == [], (missing, stale)
    for action in app.deps.registry:
        if action.mode == "sync":
            assert action.name in openapi_schemas.ACTION_OUTPUTS, action.name


def test_console_pages_marked_openapi_false_are_left_out(app):
    class Page:
        openapi = False

        def on_get(self, req, resp):
            pass

    assert not documented("/dashboard", Page())
    assert documented("/zapier/v1/credits", dict(route_table(app.deps))["/zapier/v1/credits"])


def test_document_is_valid_with_unique_operation_ids_and_real_summaries(doc):
    pytest.importorskip("openapi_spec_validator").validate(doc)
    ids = [op["operationId"] for _, _, op in _operations(doc)]
    assert len(ids) > 100 and len(ids) == len(set(ids))
    assert all("_" not in i and i[0].islower() for i in ids), \
        [i for i in ids if "_" in i or not i[0].islower()]  # camelCase, generator friendly
    for path, method, op in _operations(doc):
        assert op["summary"] and op["summary"] != f"{method.upper()} {path}", (method, path)
        assert "2XX" not in op["responses"], (method, path)  # every success status is real
    assert "camelCase" in doc["info"]["description"]  # field naming is documented


def test_every_example_validates_against_its_schema(doc):
    """Make and n8n show these examples; a wrong one misleads every user who imports."""
    checked = 0
    for path, method, op in _operations(doc):
        body = op.get("requestBody", {}).get("content", {})
        for media, content in body.items():
            if content.get("schema"):
                assert "example" in content, (method, path, media)
                _validate(doc, content["schema"], content["example"])
                checked += 1
        for status, response in op["responses"].items():
            for media, content in response.get("content", {}).items():
                schema = content.get("schema")
                if schema is None or schema.get("format") == "binary":
                    continue
                assert "example" in content, (method, path, status, media)
                if media == JSON:
                    _validate(doc, schema, content["example"])
                    checked += 1
    assert checked > 300


def test_data_schemas_status_codes_and_media_types(doc):
    paths = doc["paths"]

    def data_schema(path, method, status):
        schema = paths[path][method]["responses"][status]["content"][JSON]["schema"]
        assert schema["allOf"][0] == {"$ref": "#/components/schemas/Success"}
        return schema["allOf"][1]["properties"]["data"]

    # the real codes: estimate and cancel answer 200, creations 201
    assert set(paths["/zapier/v1/{action}/estimate"]["post"]["responses"]) >= {"200", "400"}
    assert "201" not in paths["/zapier/v1/{action}/estimate"]["post"]["responses"]
    cancel = paths["/zapier/v1/compositions/{uid}/cancel"]["post"]["responses"]
    assert "200" in cancel and "201" not in cancel and "404" in cancel
    assert "201" in paths["/api/key/generate"]["post"]["responses"]
    assert data_schema("/zapier/v1/credits", "get", "200")["properties"]["balance"]["type"] \
        == "integer"
    assert data_schema("/zapier/v1/credits/transactions", "get", "200")["properties"][
        "items"]["items"] == {"$ref": "#/components/schemas/LedgerEntry"}
    # /health is text; SSE is text/event-stream
    assert list(paths["/health"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    for path in ("/zapier/v1/compositions/{uid}/events", "/api/project/runs/{run_id}/events"):
        assert "text/event-stream" in paths[path]["get"]["responses"]["200"]["content"]
    # errors are the error envelope, with the codes each status carries
    me = paths["/zapier/v1/me"]["get"]["responses"]
    assert me["401"]["content"][JSON]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "AUTH_FAILED" in me["401"]["description"]
    assert "Retry-After" in me["429"]["headers"]
    assert set(paths["/admin/plans/{name}"]["put"]["responses"]) >= {"401", "403", "404",
                                                                    "400"}
    assert "503" in paths["/health/ready"]["get"]["responses"]


def test_async_contract_is_documented(doc):
    op = doc["paths"]["/zapier/v1/generate-product-listing"]["post"]
    params = {(p["in"], p["name"]): p for p in op["parameters"]}
    assert params[("query", "wait")]["schema"] == {"type": "integer", "minimum": 0,
                                                   "maximum": 60, "default": 25}
    assert ("header", "Prefer") in params and ("header", "Idempotency-Key") in params
    accepted = op["responses"]["202"]
    assert {"Location", "Retry-After"} <= set(accepted["headers"])
    assert accepted["content"][JSON]["example"]["data"]["composition"]["status"]
    assert "200" in op["responses"] and "Location" in op["description"]
    poll = doc["paths"]["/zapier/v1/compositions/{uid}"]["get"]
    assert {"wait", "Prefer"} <= {p["name"] for p in poll["parameters"]}
    assert {"Location", "Retry-After"} <= set(poll["responses"]["202"]["headers"])
    echo = doc["paths"]["/zapier/v1/echo"]["post"]["responses"]
    assert "202" not in echo and "404" not in echo  # sync, and a named route
    assert echo["200"]["content"][JSON]["example"]["meta"]["creditsUsed"] == 1


def _answer_schema(doc, path, method, status):
    responses = doc["paths"][path][method]["responses"]
    return (responses.get(str(status)) or responses["default"])["content"][JSON]["schema"]


def test_real_answers_validate_against_the_document(client, doc, make_account):
    """The documented data schemas are what the app really sends."""
    _, key = make_account(credits=50)
    auth = bearer(key)
    calls = [
        ("get", "/zapier/v1/me", "/zapier/v1/me", None),
        ("get", "/zapier/v1/credits", "/zapier/v1/credits", None),
        ("get", "/zapier/v1/actions", "/zapier/v1/actions", None),
        ("post", "/zapier/v1/echo", "/zapier/v1/echo", {"message": "hi", "uppercase": True}),
        ("post", "/zapier/v1/{action}/estimate", "/zapier/v1/echo/estimate", {"message": "x"}),
        ("post", "/zapier/v1/estimate-cost", "/zapier/v1/estimate-cost", {"action": "echo"}),
        ("get", "/zapier/v1/credits/transactions", "/zapier/v1/credits/transactions?limit=1",
         None),
        ("post", "/api/key/generate", "/api/key/generate", {"description": "n8n"}),
        ("get", "/api/key/list", "/api/key/list", None),
        ("post", "/zapier/v1/hooks", "/zapier/v1/hooks",
         {"target_url": "https://hooks.example.com/a", "event": "composition.completed"}),
        ("get", "/zapier/v1/hooks", "/zapier/v1/hooks", None),
        ("get", "/zapier/v1/compositions", "/zapier/v1/compositions", None),
        ("get", "/api/user/self", "/api/user/self", None),
        ("get", "/api/account/data", "/api/account/data", None),
        ("get", "/api/usage", "/api/usage", None),
        ("get", "/storage/usage", "/storage/usage", None),
        ("get", "/content/list", "/content/list", None),
        ("get", "/api/project/list/mine", "/api/project/list/mine", None),
        ("get", "/list-posts", "/list-posts", None),
        ("get", "/zapier/v1/receipts/{txn_receipt}", "/zapier/v1/receipts/txn_nope", None),
        ("get", "/zapier/v1/me", "/zapier/v1/me", "unauthenticated"),
    ]
    for method, template, url, body in calls:
        path, _, query = url.partition("?")
        headers = {} if body == "unauthenticated" else auth
        kwargs = {"json": body} if isinstance(body, dict) else {}
        resp = client.simulate_request(method.upper(), path, query_string=query,
                                       headers=headers, **kwargs)
        schema = _answer_schema(doc, template, method, resp.status_code)
        try:
            _validate(doc, schema, resp.json)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{method.upper()} {url} {resp.status_code}: {exc.message} "
                                 f"at {list(exc.absolute_path)}") from None
    assert resp.status_code == 401
    receipt = client.simulate_get("/zapier/v1/credits/transactions", headers=auth).json
    txn = receipt["data"]["items"][0]["txnReceipt"]
    resp = client.simulate_get(f"/zapier/v1/receipts/{txn}", headers=auth)
    assert resp.status_code == 200
    _validate(doc, _answer_schema(doc, "/zapier/v1/receipts/{txn_receipt}", "get", 200),
              resp.json)


@pytest.mark.slow
def test_a_generated_python_client_calls_a_live_gateway(server, client, make_account,
                                                        tmp_path, monkeypatch):
    """``openapi-python-client`` builds a typed client from the live document; three of its
    calls against a real gunicorn parse into the documented models."""
    pytest.importorskip("openapi_python_client")
    _, key = make_account(credits=10)
    (tmp_path / "doc.json").write_text(requests.get(server + "/openapi.json", timeout=10).text)
    (tmp_path / "config.yaml").write_text("post_hooks: []\npackage_name_override: gw_client\n"
                                          "project_name_override: gw-client\n")
    generated = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path",
         str(tmp_path / "doc.json"), "--output-path", str(tmp_path / "gw_client"), "--meta",
         "none", "--config", str(tmp_path / "config.yaml")],
        capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stdout[-2000:] + generated.stderr[-2000:]
    monkeypatch.syspath_prepend(str(tmp_path))  # import the generated package
    gw = importlib.import_module("gw_client")
    from gw_client.api.account import get_me
    from gw_client.api.actions import list_actions, run_echo
    from gw_client.api.credits_ import get_credits
    from gw_client.models.run_echo_body import RunEchoBody

    api = gw.AuthenticatedClient(base_url=server, token=key)
    me = get_me.sync(client=api)
    assert me.success is True and me.data.balance == 10 and me.data.credential.kind
    echo = run_echo.sync_detailed(client=api, body=RunEchoBody(message="from a client"))
    assert echo.status_code == 200
    assert echo.parsed.data.message == "from a client" and echo.parsed.data.length == 13
    assert echo.parsed.meta.credits_used == 1 and echo.parsed.meta.txn_receipt.startswith("txn_")
    balance = get_credits.sync(client=api)
    assert (balance.data.balance, balance.data.available_credit) == (9, 9)
    catalogue = list_actions.sync(client=api)
    assert "echo" in [item.name for item in catalogue.data.items]
    # an error is parsed as the error envelope
    refused = get_me.sync(client=gw.AuthenticatedClient(base_url=server, token="gwk_nope"))
    assert refused.success is False and refused.error.code.value == "AUTH_FAILED"


def test_a_multipart_field_sent_twice_is_refused_and_charges_nothing(client, make_account):
    """Found by the fuzz test against the documented form: which `description` was meant?"""
    from urllib3 import encode_multipart_formdata

    from conftest import ledger_sum
    from jobs.content.models import ContentItem
    from metering import db as dbmod

    account_id, key = make_account(credits=5)
    body, ctype = encode_multipart_formdata([
        ("description", "one"), ("description", "two"),
        ("file", ("a.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"))])
    resp = client.simulate_post("/upload", body=body,
                                headers={**bearer(key), "Content-Type": ctype})
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["details"] == [{"field": "description",
                                              "problem": "sent more than once"}]
    assert ledger_sum(account_id) == (5, 5)
    with dbmod.connection():
        assert ContentItem.select().where(ContentItem.account == account_id).count() == 0
