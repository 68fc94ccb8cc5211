"""The OpenAPI 3.1 document, generated from the route table, the resources' docstrings and
auth policies, and each registered action's input schema, so it cannot drift from the code."""

from __future__ import annotations

import inspect
import re

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
        "Success": {"type": "object", "required": ["success", "data", "meta"], "properties": {
            "success": {"const": True}, "data": {}, "meta": {"$ref": "#/components/schemas/Meta"}}},
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


def _responses(policy, method) -> dict:
    """Any 2xx is a success envelope (200, 201 for a creation, 202 for a queued job),
    anything else an error envelope."""
    ok_code = "2XX"
    out = {ok_code: {"description": "Success envelope (200; 201 when it creates; 202 when "
                                    "it queued a job)",
                     "content": {"application/json": {"schema": {
                         "$ref": "#/components/schemas/Success"}}}},
           "default": {"description": "Error envelope (see error.code)",
                       "content": {"application/json": {"schema": {
                           "$ref": "#/components/schemas/Error"}}}}}
    if policy in (ACCOUNT, ADDRESS):
        out[ok_code]["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in
                                   ("X-RateLimit-Limit", "X-RateLimit-Remaining",
                                    "X-RateLimit-Reset", "X-Request-ID")}
        out["429"] = {"description": "RATE_LIMITED; see Retry-After",
                      "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                      "content": {"application/json": {"schema": {
                          "$ref": "#/components/schemas/Error"}}}}
    return out


def _operation(path, resource, method, tag):
    responder = getattr(resource, f"on_{method}")
    policy = getattr(resource, "auth", ACCOUNT)
    summary, description = _summary(resource, responder)
    op = {"tags": [tag], "summary": summary or f"{method.upper()} {path}",
          "operationId": f"{method}_{re.sub(r'[^A-Za-z0-9]+', '_', path).strip('_') or 'root'}",
          "responses": _responses(policy, method)}
    if description:
        op["description"] = description
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in re.findall(r"{(\w+)}", path)]
    params += getattr(resource, "openapi_query", {}).get(method, [])
    if method in ("post", "put", "patch"):
        # Documented only where honoured: a route that ignores the header must not
        # promise it (action calls, AIMG generation, admin grants and refunds).
        if getattr(resource, "openapi_idempotent", False):
            params = params + [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 255}}]
        if params:
            op["parameters"] = params
        media = getattr(resource, "openapi_media", "application/json")
        op["requestBody"] = {"required": False, "content": {media: {
            "schema": getattr(resource, "openapi_body", {}).get(method, {"type": "object"})}}}
    elif params:
        op["parameters"] = params
    custom = getattr(resource, "openapi_responses", {}).get(method)
    if custom:
        op["responses"] = custom
    if policy == ADMIN:
        op["security"] = [{"adminKey": []}]
    elif policy in (NONE, ADDRESS):
        op["security"] = []
    elif policy == ACCOUNT:
        op["security"] = _account_security(required_scope(resource, method))
    return op


def _action_operations(deps, scope) -> dict:
    paths = {}
    for action in deps.registry:
        paths[f"/zapier/v1/{action.name}"] = {"post": {
            "tags": ["Actions"], "summary": action.title, "operationId": f"action_{action.name}",
            "description": f"{action.description}\n\nPrice: {deps.actions.price_of(action.name)}"
                           f" credits (operator-settable). Mode: {action.mode}.",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "maxLength": 255}}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": action.json_schema()}}},
            "responses": _responses(ACCOUNT, "get"),
            "security": _account_security(scope),
            "x-credits": deps.actions.price_of(action.name),
        }}
    return paths


def builder(table, deps):
    """Return ``build(req)`` for the ``/openapi.json`` resource."""

    def build(req):
        paths = {}
        action_scope = next((required_scope(r, "POST") for p, r in table
                             if p == "/zapier/v1/{action}"), None)
        for path, resource in table:
            if getattr(resource, "openapi_hidden", False) or path == "/zapier/v1/{action}":
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
                     "description": "Paid AI actions for Zapier, Make, n8n and partners. Every "
                                    "JSON response is a success or error envelope with meta."},
            "servers": [{"url": base}],
            "security": ACCOUNT_SECURITY,
            "paths": dict(sorted(paths.items())),
            "components": {**COMPONENTS, "securitySchemes": {
                **COMPONENTS["securitySchemes"], "oauth2": oauth2_scheme(base)}},
        }

    return build
