"""The OpenAPI 3.1 document, generated from the route table, the resources' docstrings and
auth policies, and each registered action's input schema, so it cannot drift from the code."""

from __future__ import annotations

import copy
import inspect
import re

from gateway import openapi_schemas as schemas
from gateway.errors import STATUS
from gateway.middleware import ACCOUNT, ADDRESS, ADMIN, NONE
from jobs.views import base_url
from oauth.scopes import SCOPES, required_scope

METHODS = ("get", "post", "put", "patch", "delete")

ENVELOPE_META = {
    "type": "object",
    "properties": {
        "timestamp": {"type": "string", "format": "date-time"},
        "requestId": {"type": "string"},
        "action": {"type": "string"},
        "ttl": {"type": "integer", "description": "Milliseconds an async action may run."},
        "creditsUsed": {"type": "integer"},
        "availableCredit": {"type": "integer"},
        "txnReceipt": {"type": "string"},
    },
    "required": ["timestamp", "requestId"],
}

COMPONENTS = {
    "schemas": {
        "Meta": ENVELOPE_META,
        # Each operation adds its ``data`` (allOf), so a generated client gets one typed
        # model per answer instead of a property redefined in two places.
        "Success": {"type": "object", "required": ["success", "meta"], "properties": {
            "success": {"const": True}, "meta": {"$ref": "#/components/schemas/Meta"}}},
        "Error": {"type": "object", "required": ["success", "error", "meta"], "properties": {
            "success": {"const": False},
            "error": {"type": "object", "required": ["message", "code", "statusCode"],
                      "properties": {
                          "message": {"type": "string"},
                          "code": {"type": "string", "enum": sorted(STATUS)},
                          "statusCode": {"type": "integer"},
                          "details": {"type": "array", "items": {"type": "object", "properties": {
                              "field": {"type": "string"}, "problem": {"type": "string"}}}}}},
            "meta": {"$ref": "#/components/schemas/Meta"}}},
    },
    "securitySchemes": {
        "bearerKey": {"type": "http", "scheme": "bearer",
                      "description": "An API key (gwk_...) as a Bearer token."},
        "basicKey": {"type": "http", "scheme": "basic",
                     "description": "The API key as the user name, empty password."},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "adminKey": {"type": "apiKey", "in": "header", "name": "X-Administration-Key"},
        "bearerToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                        "description": "A short-lived token from POST /auth/token (username "
                                       "and password, form-encoded), renewed with POST "
                                       "/auth/refresh; sent as a Bearer token."},
        # "oauth2" is added per request by ``builder``: its URLs are absolute.
    },
    "headers": {
        "X-RateLimit-Limit": {"schema": {"type": "integer"}},
        "X-RateLimit-Remaining": {"schema": {"type": "integer"}},
        "X-RateLimit-Reset": {"schema": {"type": "integer"},
                              "description": "Unix seconds when the window resets."},
        "X-Request-ID": {"schema": {"type": "string"}},
    },
}

ACCOUNT_SECURITY = [{"bearerKey": []}, {"basicKey": []}, {"apiKeyHeader": []},
                    {"bearerToken": []}, {"oauth2": []}]


def _account_security(scope) -> list:
    """Any full-access credential, or an OAuth2 token carrying the operation's scope."""
    return ACCOUNT_SECURITY[:-1] + [{"oauth2": [scope] if scope else []}]


def oauth2_scheme(base: str) -> dict:
    return {"type": "oauth2",
            "description": "Authorization code with PKCE (S256). Access tokens (gwo_...) last "
                           "an hour; refresh tokens (gwr_...) rotate, the previous one "
                           "staying valid for a short grace period. See docs/OAUTH.md.",
            "flows": {"authorizationCode": {
                "authorizationUrl": f"{base}/oauth/authorize",
                "tokenUrl": f"{base}/oauth/token",
                "refreshUrl": f"{base}/oauth/token",
                "scopes": dict(SCOPES)}}}


def _summary(resource, responder) -> tuple[str, str]:
    doc = inspect.getdoc(responder) or inspect.getdoc(type(resource)) or ""
    first, _, rest = doc.partition("\n")
    return first.strip(), rest.strip()


def _description(resource, responder) -> str:
    return inspect.getdoc(responder) or inspect.getdoc(type(resource)) or ""


# --- examples ------------------------------------------------------------------------------

EXAMPLE_TIME = "2026-01-14T10:30:00.000Z"
FORMAT_EXAMPLES = {"date-time": EXAMPLE_TIME, "date": "2026-01-14",
                   "uri": "https://example.com/path", "binary": ""}


def example_of(schema, components=None, depth=0, *, minimal=False):
    """An example value that validates against ``schema``: its ``examples``/``example``,
    ``const``, ``enum`` or ``default``, else one made from its type (objects: every
    property; ``minimal``, for request bodies: the required ones and those with an example
    or default, so an imported form is not pre-filled with every optional field).
    ``components``: the schemas ``$ref`` points into."""
    components = components if components is not None else _all_components()
    if not isinstance(schema, dict) or depth > 12:
        return None
    if "$ref" in schema:
        return example_of(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1)
    for key in ("examples", "example"):
        if key in schema:
            return schema[key][0] if key == "examples" else schema[key]
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if "enum" in schema:
        return schema["enum"][0]
    if "allOf" in schema:
        out = {}
        for part in schema["allOf"]:
            value = example_of(part, components, depth + 1)
            if isinstance(value, dict):
                out.update(value)
        return out
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example_of(schema[key][0], components, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else None
    if kind == "object":
        required = set(schema.get("required", ()))
        return {name: example_of(sub, components, depth + 1)
                for name, sub in schema.get("properties", {}).items()
                if not minimal or name in required
                or {"examples", "example", "default"} & set(sub)}
    if kind == "array":
        return [example_of(schema.get("items", {}), components, depth + 1)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        value = 1 if (low is None or low <= 1) and (high is None or high >= 1) else low
        return value if value is not None else high
    if kind == "boolean":
        return True
    if kind == "string":
        if schema.get("format") in FORMAT_EXAMPLES:
            return FORMAT_EXAMPLES[schema["format"]]
        return "string".ljust(schema.get("minLength", 0), "x")[:schema.get("maxLength", 64)]
    if kind == "null":
        return None
    return "any"  # an unconstrained value


def _all_components() -> dict:
    return {**COMPONENTS["schemas"], **schemas.COMPONENTS}


def _meta_example(status, action=None, credits=None) -> dict:
    meta = {"timestamp": EXAMPLE_TIME, "requestId": "req_6a2d551d008cb92c677148cd"}
    if action:
        meta["action"] = action
    if credits:
        meta.update(creditsUsed=credits, availableCredit=975, txnReceipt="txn_4h7k2m9q1w")
    if status == "202":
        meta["ttl"] = 120000
    return meta


# --- responses -----------------------------------------------------------------------------

ERROR_REF = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {"description": "Whole seconds to wait", "schema": {"type": "integer"}}
RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                "X-Request-ID")
# The error code an example of each status shows (the description lists them all).
EXAMPLE_CODE = {400: "INVALID_REQUEST", 401: "AUTH_FAILED", 403: "FORBIDDEN",
                404: "NOT_FOUND", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE",
                415: "UNSUPPORTED_MEDIA_TYPE", 422: "IDEMPOTENCY_KEY_REUSED",
                429: "RATE_LIMITED", 503: "SERVICE_UNAVAILABLE"}
ERROR_MESSAGES = {400: "product_image_url: must be an http(s) URL",
                  401: "Unknown, revoked or expired credential",
                  403: "You have insufficient credits to perform this action",
                  404: "No such resource", 409: "Already exists",
                  413: "The request body is over the limit",
                  415: "Send the body as JSON with Content-Type: application/json",
                  422: "This Idempotency-Key was used with a different request",
                  429: "Rate limit exceeded; retry in 12s",
                  503: "A backend service is down"}


def _error(status: int, description: str | None = None) -> dict:
    codes = sorted(c for c, st in STATUS.items() if st == status)
    code = EXAMPLE_CODE.get(status, codes[0] if codes else "INTERNAL_ERROR")
    err = {"message": ERROR_MESSAGES.get(status, "Error"), "code": code, "statusCode": status}
    if status == 400:
        err["details"] = [{"field": "product_image_url", "problem": "must be an http(s) URL"}]
    out = {"description": description or ("Error envelope: " + ", ".join(codes)),
           "content": {"application/json": {"schema": ERROR_REF, "example": {
               "success": False, "error": err, "meta": _meta_example(str(status))}}}}
    if status in (409, 429, 503):  # 409: IDEMPOTENCY_IN_PROGRESS says when to retry
        out["headers"] = {"Retry-After": RETRY_AFTER}
    return out


def _error_statuses(policy, path, has_input, has_body, idempotent) -> set[int]:
    """The error statuses a route of this kind answers (a spec entry adds its own)."""
    out = set()
    if policy in (ACCOUNT, ADMIN):
        out |= {401, 403, 429}
    elif policy == ADDRESS:
        out |= {429}
    if "{" in path:
        out.add(404)
    if has_input:
        out.add(400)
    if has_body:
        out |= {413, 415}
    if idempotent:
        out |= {409, 422}
    return out


def _success(status, entry, policy, action=None, credits=None) -> dict:
    data = entry["data"]
    schema = {"allOf": [{"$ref": "#/components/schemas/Success"},
                        {"type": "object", "required": ["data"], "properties": {"data": data}}]}
    value = example_of(data)
    for key, patch in entry.get("example", {}).items():  # an entry's own example values
        value[key] = {**value[key], **patch} if isinstance(patch, dict) else patch
    example = {"success": True, "data": value, "meta": _meta_example(status, action, credits)}
    out = {"description": entry["description"],
           "content": {"application/json": {"schema": schema, "example": example}}}
    headers = {}
    if policy in (ACCOUNT, ADDRESS):
        headers.update({h: {"$ref": f"#/components/headers/{h}"} for h in RATE_HEADERS})
    headers.update(entry.get("headers", {}))
    if headers:
        out["headers"] = headers
    return out


def _responses(spec, policy, path, *, has_input, has_body, idempotent, action=None,
               credits=None) -> dict:
    out = {status: _success(status, entry, policy, action, credits)
           for status, entry in spec["ok"].items()}
    statuses = _error_statuses(policy, path, has_input, has_body, idempotent)
    for status in sorted(statuses | set(spec.get("errors", {}))):
        out[str(status)] = _error(status, spec.get("errors", {}).get(status))
    out["default"] = _error(500, "Error envelope (see error.code): INTERNAL_ERROR (500), "
                                 "SERVICE_UNAVAILABLE (503), GATEWAY_TIMEOUT (504), ...")
    return out


def _generic(summary) -> dict:
    """A route with no entry in ``gateway.openapi_schemas`` still gets an honest (untyped)
    success; tests/test_openapi.py fails until it has one."""
    return {"operationId": None, "summary": summary, "errors": {},
            "ok": {"2XX": {"description": "Success envelope", "data": {}}}}


def _with_examples(responses) -> dict:
    """The resource's own responses (text, files, streams, OAuth JSON), with an example
    for every schema that has none (binary bodies excepted)."""
    out = copy.deepcopy(responses)
    for response in out.values():
        for media, body in response.get("content", {}).items():
            schema = body.get("schema")
            if schema is None or "example" in body or schema.get("format") == "binary":
                continue
            if media == "text/event-stream":
                body["example"] = ('event: progress\nid: 40\ndata: {"uid": "comp_8f3k2j9d0a", '
                                   '"status": "running", "progress": 40}\n\n')
            else:
                body["example"] = example_of(schema)
    return out


ASYNC_PARAMS = [
    {"name": "wait", "in": "query", "required": False,
     "description": "Seconds to wait for the result before answering 202 (0-60; 0: answer "
                    "at once). Also Prefer: wait=N.",
     "schema": {"type": "integer", "minimum": 0, "maximum": 60}},
    {"name": "Prefer", "in": "header", "required": False,
     "description": "RFC 7240 wait=N: the same as ?wait=N (the query parameter wins)",
     "schema": {"type": "string", "examples": ["wait=10"]}},
]
IDEMPOTENCY_PARAM = {"name": "Idempotency-Key", "in": "header", "required": False,
                     "description": "Up to 255 printable characters, kept 24 hours: the same "
                                    "key and request replays the first answer "
                                    "(Idempotent-Replayed: true), no second debit",
                     "schema": {"type": "string", "maxLength": 255}}


def _with_async_params(params: list, spec) -> list:
    if not spec.get("async"):
        return params
    names = {p["name"] for p in params}
    return params + [p for p in ASYNC_PARAMS if p["name"] not in names]


def _operation(path, resource, method, tag):
    responder = getattr(resource, f"on_{method}")
    policy = getattr(resource, "auth", ACCOUNT)
    summary, _ = _summary(resource, responder)
    spec = schemas.RESPONSES.get(path, {}).get(method) or _generic(
        summary or f"{method.upper()} {path}")
    operation_id = spec["operationId"] or \
        f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}"
    op = {"tags": [tag], "summary": spec["summary"], "operationId": operation_id}
    description = spec.get("description") or _description(resource, responder)
    if description:
        op["description"] = description
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in re.findall(r"{(\w+)}", path)]
    params += getattr(resource, "openapi_query", {}).get(method, [])
    params = _with_async_params(params, spec)
    has_body = method in ("post", "put", "patch")
    # Documented only where honoured: a route that ignores the header must not promise it
    # (action calls, AIMG generation, admin grants and refunds).
    idempotent = has_body and getattr(resource, "openapi_idempotent", False)
    if idempotent:
        params = params + [IDEMPOTENCY_PARAM]
    if params:
        op["parameters"] = params
    if has_body:
        media = getattr(resource, "openapi_media", "application/json")
        schema = getattr(resource, "openapi_body", {}).get(method)
        if schema is None:
            schema = spec.get("body", {"type": "object"})
        content = {"schema": schema}
        if schema:  # {}: any bytes (tus) or no body at all
            content["example"] = example_of(schema, minimal=True)
        op["requestBody"] = {"required": False, "content": {
            m: content for m in spec.get("media") or [media]}}
    custom = getattr(resource, "openapi_responses", {}).get(method)
    if spec["ok"] is None and custom:
        op["responses"] = _with_examples(custom)
    else:
        if spec["ok"] is None:  # promised by the entry, missing on the resource
            spec = {**spec, "ok": _generic("")["ok"]}
        op["responses"] = _responses(
            spec, policy, path, has_input=bool(params) or has_body,
            has_body=has_body and getattr(resource, "openapi_body", {}).get(method) != {},
            idempotent=idempotent)
    if policy == ADMIN:
        op["security"] = [{"adminKey": []}]
    elif policy in (NONE, ADDRESS):
        op["security"] = []
    elif policy == ACCOUNT:
        op["security"] = _account_security(required_scope(resource, method))
    return op


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _action_operations(deps, scope) -> dict:
    paths = {}
    for action in deps.registry:
        price = deps.actions.price_of(action.name)
        if action.mode == "async":
            spec = schemas.async_op(f"run{_camel(action.name)}", action.title)
            params = [p for p in ASYNC_PARAMS]
            params[0] = {**params[0], "schema": {**params[0]["schema"], "default": 25},
                         "description": params[0]["description"].replace(
                             "(0-60;", "(0-60, default 25;")}
        else:
            spec = schemas.op(f"run{_camel(action.name)}", action.title,
                              schemas.ACTION_OUTPUTS.get(action.name, {}))
            params = []
        body = action.json_schema()
        paths[f"/zapier/v1/{action.name}"] = {"post": {
            "tags": ["Actions"], "summary": action.title, "operationId": spec["operationId"],
            "description": f"{action.description}\n\nPrice: {price} credits (operator-"
                           f"settable; GET /zapier/v1/actions lists them). Mode: "
                           f"{action.mode}." + (ASYNC_NOTE if action.mode == "async" else ""),
            "parameters": [*params, IDEMPOTENCY_PARAM],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": body, "example": example_of(body, minimal=True)}}},
            "responses": _responses(spec, ACCOUNT, f"/zapier/v1/{action.name}", has_input=True,
                                    has_body=True, idempotent=True, action=action.name,
                                    credits=price),
            "security": _account_security(scope),
            "x-credits": price,
        }}
    return paths


ASYNC_NOTE = ("\n\nAsynchronous: the call waits up to `wait` seconds (query, or `Prefer: "
              "wait=N`; default 25, 0 for none). Finished in time: 200 with the composition "
              "(`status` completed or failed). Not yet: 202 with `status` queued or running, "
              "`progress`, `links`, and the headers `Location` (poll it: GET "
              "/zapier/v1/compositions/{uid}, also with ?wait=N) and `Retry-After`. Stream "
              "progress from .../events (text/event-stream), cancel with POST .../cancel, or "
              "pass `callback_url` to be POSTed the final composition. A failure, timeout or "
              "cancel before it starts is refunded (`refundReceipt`).")

INFO_DESCRIPTION = (
    "Paid AI actions for Zapier, Make, n8n and partners.\n\n"
    "**Envelope.** Every JSON response is `{success: true, data, meta}` or `{success: false, "
    "error: {message, code, statusCode, details?}, meta}`; `meta.requestId` is also the "
    "`X-Request-ID` header, and calls that spend credits carry `meta.creditsUsed`, "
    "`availableCredit` and `txnReceipt`. Each operation documents the schema of its `data` "
    "and the error statuses it answers.\n\n"
    "**Asynchronous actions.** 200 when finished within `wait`, else 202 with `Location` and "
    "`Retry-After`; poll `GET /zapier/v1/compositions/{uid}` (`?wait=N`), stream "
    "`.../events` (Server-Sent Events), cancel with `POST .../cancel`.\n\n"
    "**Lists** are newest first, `limit` 1-100 and `cursor`; `data.next` is the full URL of "
    "the next page (null on the last).\n\n"
    "**Field names.** The gateway's own objects use camelCase (`txnReceipt`, `createdAt`, "
    "`availableCredit`); compatibility routes keep their seed's names field for field "
    "(snake_case in `/api/project/*` and the seed-001 tokens, `target_url` in REST hooks, "
    "seed 003's `imageID`). Timestamps are ISO 8601 UTC with milliseconds and `Z`.")


def builder(table, deps):
    """Return ``build(req)`` for the ``/openapi.json`` resource."""

    def build(req):
        paths = {}
        action_scope = next((required_scope(r, "POST") for p, r in table
                             if p == "/zapier/v1/{action}"), None)
        for path, resource in table:
            if not documented(path, resource):
                continue
            tag = getattr(resource, "openapi_tag", "Other")
            ops = {m: _operation(path, resource, m, tag) for m in METHODS
                   if hasattr(resource, f"on_{m}")}
            if ops:
                paths[path] = ops
        paths.update(_action_operations(deps, action_scope))
        base = base_url(deps.config, req.prefix)
        return {
            "openapi": "3.1.0",
            "info": {"title": "Metered automation gateway", "version": "1.0.0",
                     "description": INFO_DESCRIPTION},
            "servers": [{"url": base}],
            "security": ACCOUNT_SECURITY,
            "paths": dict(sorted(paths.items())),
            "components": {**COMPONENTS,
                           "schemas": {**COMPONENTS["schemas"], **schemas.COMPONENTS},
                           "securitySchemes": {**COMPONENTS["securitySchemes"],
                                               "oauth2": oauth2_scheme(base)}},
        }

    return build


def documented(path, resource) -> bool:
    """Whether a route belongs in the document: not the catch-all action route (each
    action is listed by name instead), nor a resource that opts out (``openapi_hidden``;
    ``openapi = False`` for HTML console pages)."""
    return (path != "/zapier/v1/{action}" and getattr(resource, "openapi", True) is not False
            and not getattr(resource, "openapi_hidden", False))
