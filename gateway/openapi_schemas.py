"""What each route answers, for the OpenAPI document (``gateway.openapi``): one entry per
``(path, method)`` with its operationId, a summary that says what it does, and the schema
of ``data`` inside the success envelope for each 2xx status it really answers.

Why one module: routes are added by several people at once; one table keyed by path and
method is the simplest convention to follow, and ``tests/test_openapi.py`` fails for any
route of the app (``gateway.routes``) without an entry here, so the document cannot fall
behind. Routes whose answer is not an envelope (text, files, event streams, OAuth JSON,
HTML) keep their ``openapi_responses`` on the resource and have ``ok=None`` here.

Field naming (documented in docs/API.md and the document's description): the envelope,
``meta`` and the gateway's own objects use camelCase (``txnReceipt``, ``createdAt``);
compatibility routes (CONTRACT 9) keep their seed's names field for field (snake_case in
seed 000's ``/api/project/*`` and seed 001's tokens, seed 003's ``imageID``), and REST hooks
keep Zapier's ``target_url``. Timestamps are ISO 8601 UTC with milliseconds and ``Z``.

Examples: every schema below yields an example (``gateway.openapi.example_of``: a
property's ``examples``, else ``const``/``enum``/``default``, else one made from its type),
so every request body and response in the document carries one that validates.
"""

from __future__ import annotations

from jobs import webhooks
from metering.models import LedgerEntry

# --- building blocks --------------------------------------------------------------------


def obj(props: dict, required=None, **extra) -> dict:
    """An object schema; ``required`` defaults to every property (the views always write
    every key, null when unknown)."""
    out = {"type": "object", "properties": props,
           "required": list(props) if required is None else list(required)}
    out.update(extra)
    return out


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def arr(items: dict) -> dict:
    return {"type": "array", "items": items}


def nullable(schema: dict) -> dict:
    kinds = schema.get("type", "object")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    return {**schema, "type": [*kinds, "null"]}


def s(description=None, *examples, **extra) -> dict:
    out = {"type": "string", **extra}
    if description:
        out["description"] = description
    if examples:
        out["examples"] = list(examples)
    return out


def i(description=None, *examples, **extra) -> dict:
    out = {"type": "integer", **extra}
    if description:
        out["description"] = description
    if examples:
        out["examples"] = list(examples)
    return out


STR = {"type": "string"}
INT = {"type": "integer"}
NUM = {"type": "number"}
BOOL = {"type": "boolean"}
ANY = {}
NSTR = {"type": ["string", "null"]}
NINT = {"type": ["integer", "null"]}
TS = s("ISO 8601 UTC, milliseconds, Z", "2026-01-14T10:30:00.000Z", format="date-time")
NTS = nullable(TS)
URL = s(None, "https://gateway.example.com/zapier/v1/compositions/comp_8f3k2j9d0a",
        format="uri")
NEXT = nullable(s("The full URL of the next page; null on the last page",
                  "https://gateway.example.com/zapier/v1/credits/transactions?limit=50&"
                  "cursor=eyJ0IjoxfQ", format="uri"))
RECEIPT = s("Ledger receipt id", "txn_4h7k2m9q1w")
NRECEIPT = nullable(RECEIPT)
ACCOUNT_ID = s("Account id", "acct_2x8c4v6b1n")
FREE = {"type": "object", "additionalProperties": True}
FORM = "application/x-www-form-urlencoded"  # seed-defined free-form objects


def page(item: dict, key: str = "items", **more) -> dict:
    """A cursor list (CONTRACT 7): newest first, ``next`` the full next URL or null."""
    return obj({key: arr(item), **more, "next": NEXT})


def seed_page(item: dict, key: str) -> dict:
    """A seed-style page/limit list (``common.page_answer``)."""
    return obj({key: arr(item), "total": INT, "pages": INT, "page": INT, "limit": INT,
                "next": NEXT})


# --- shared objects (components/schemas) -------------------------------------------------

OUTPUT = obj({"type": s("image, video, json, ...", "image"),
              "url": s(None, "https://gateway.example.com/links/cnt_5t7y9u1i3o/listing.png?v=ab"
                             "&exp=1768400000&sig=c2ln", format="uri"),
              "format": s(None, "png"), "width": i(None, 1024), "height": i(None, 1024)},
             required=["url"])

COMPOSITION = obj({
    "uid": s("Composition id", "comp_8f3k2j9d0a"), "action": s(None, "generate-product-listing"),
    "status": {"enum": ["queued", "running", "completed", "failed", "cancelled"],
               "examples": ["completed"]},
    "progress": i("0-100", 100, minimum=0, maximum=100),
    "outputs": arr(ref("Output")),
    "error": nullable(obj({"code": STR, "message": STR}, required=[])),
    "txnReceipt": NRECEIPT, "refundReceipt": nullable(s("The refund's receipt", "txn_9r3e5w7q2a")),
    "creditsUsed": i(None, 25), "createdAt": TS, "startedAt": NTS, "finishedAt": NTS,
    "links": obj({"status": URL, "events": URL, "cancel": URL}),
    "queuePosition": nullable(i("1-based place in its queue, only while queued", 1)),
}, required=["uid", "action", "status", "progress", "outputs", "error", "txnReceipt",
             "refundReceipt", "creditsUsed", "createdAt", "startedAt", "finishedAt", "links"])

COMPOSITION_ANSWER = obj({"composition": ref("Composition"),
                          "links": obj({"status": URL, "events": URL, "cancel": URL})})

LEDGER_ENTRY = obj({
    "id": RECEIPT, "txnReceipt": RECEIPT,
    "type": {"enum": list(LedgerEntry.KINDS), "examples": [LedgerEntry.KINDS[0]]},
    "amount": i("Signed credits: negative for a debit", -25),
    "balanceAfter": i(None, 975), "action": nullable(s(None, "generate-product-listing")),
    "reason": NSTR, "refundOf": NRECEIPT, "requestId": NSTR, "createdAt": TS})

API_KEY = obj({"keyId": s(None, "key_3n5m7b9v1c"), "prefix": s(None, "gwk_3n5m"),
               "description": s(None, "Zapier"), "createdAt": TS, "lastUsedAt": NTS,
               "revokedAt": NTS, "active": BOOL})

ACCOUNT = obj({"id": ACCOUNT_ID, "username": s(None, "ada"), "credits": i(None, 1000),
               "plan": s(None, "default"), "createdAt": TS})

HOOK = obj({"id": s(None, "hook_6b8n0m2k4j"),
            "event": {"enum": list(webhooks.EVENTS), "examples": [list(webhooks.EVENTS)[0]]},
            "target_url": s(None, "https://hooks.zapier.com/hooks/standard/1/abc", format="uri"),
            "createdAt": TS})

def ITEM_ID(example):  # noqa: N802 (reads as the schema constant it makes)
    """Every list item's stable ``id`` (CONTRACT 7), beside the seed's own name for it."""
    return s("The item's stable id (the same value as its seed-named id)", example)


CONTENT_ITEM = obj({
    "id": ITEM_ID("cnt_5t7y9u1i3o"), "contentId": s(None, "cnt_5t7y9u1i3o"), "userId": ACCOUNT_ID,
    "type": {"enum": ["image", "video"], "examples": ["image"]},
    "fileName": s(None, "photo.jpg"), "contentType": s(None, "image/jpeg"),
    "size": i("Bytes", 48213), "checksum": obj({"sha256": s(None, "9f86d081884c7d65")}),
    "description": NSTR, "tags": arr(STR), "version": i(None, 1),
    "width": NINT, "height": NINT, "duration": {"type": ["number", "null"]},
    "source": {"enum": ["upload", "output"], "examples": ["upload"]},
    "compositionUid": NSTR, "customMetadata": FREE,
    "permissions": s("owner, read or write", "owner"),
    "url": s(None, "https://gateway.example.com/content/cnt_5t7y9u1i3o/download", format="uri"),
    "createdAt": TS, "updatedAt": TS})

MEMBERSHIP = {"tier": i("0: no membership", 0), "tierExpiration": NTS,
              "membership": nullable(obj({
                  "productID": NSTR, "billingPlanID": NSTR, "merchantProcessor": NSTR,
                  "tier": INT, "tierExpiration": NTS, "cancelled": BOOL,
                  "nextBillingDate": NTS}, required=[]))}

PROJECT = obj({
    "id": ITEM_ID("proj_1q2w3e4r5t"), "project_id": s(None, "proj_1q2w3e4r5t"),
    "name": s(None, "Product shots"),
    "title": s(None, "Product shots"), "description": NSTR, "data": ANY,
    "visibility": {"enum": ["private", "unlisted", "public"], "examples": ["private"]},
    "node_data": ANY, "connection_data": ANY, "manual_data": ANY, "graph": FREE,
    "variables": arr(FREE), "owner": NSTR, "is_owner": BOOL, "likes": INT, "saves": INT,
    "runs": INT, "liked": BOOL, "saved": BOOL, "created_at": TS, "updated_at": TS},
    required=["id", "project_id", "name", "visibility", "created_at"])

RUN = obj({
    "id": ITEM_ID("comp_7u8i9o0p1a"), "run_id": s(None, "comp_7u8i9o0p1a"), "project_id": STR,
    "project_name": NSTR,
    "status": {"enum": ["queued", "running", "completed", "failed", "cancelled"],
               "examples": ["queued"]},
    "progress": i(None, 0, minimum=0, maximum=100), "seed": NINT, "variables": FREE,
    "estimated_cost": NINT, "creditsUsed": NINT, "txnReceipt": NRECEIPT,
    "refundReceipt": NRECEIPT, "refunded": ANY, "outputs": arr(ANY), "error": ANY,
    "retry_of": NSTR, "created_at": TS, "started_at": NTS, "finished_at": NTS,
    "nodes": arr(FREE), "line_items": arr(obj({"node": STR, "type": STR, "credits": INT},
                                               required=[])),
    "links": obj({"self": URL, "events": URL, "cancel": URL, "retry": URL, "composition": URL}),
}, required=["id", "run_id", "project_id", "status", "progress", "links"])

FILE_METADATA = obj({"id": s(None, "cnt_5t7y9u1i3o"),
                     "publicUrl": s(None, "https://gateway.example.com/getFile?id=cnt_5t7y9u1i3o",
                                    format="uri"),
                     "fileName": STR, "contentType": STR, "fileSize": INT, "createdDate": TS,
                     "checksum": STR, "checksumAlgorithm": {"const": "sha256"},
                     "ownerId": ACCOUNT_ID, "customMetadata": FREE})

COLLABORATION = obj({"id": ITEM_ID("col_2s4d6f8g0h"),
                     "collaborationId": s(None, "col_2s4d6f8g0h"), "contentId": STR,
                     "ownerId": ACCOUNT_ID, "collaboratorId": ACCOUNT_ID,
                     "permissions": s("read or write", "read"),
                     "role": {"enum": ["owner", "collaborator"], "examples": ["owner"]},
                     "createdAt": TS, "updatedAt": TS})

BILLING_PLAN = obj({"id": STR, "name": STR, "description": NSTR, "features": ANY,
                    "mainBenefits": ANY, "prices": ANY, "tier": INT, "ratePlan": NSTR,
                    "monthlyCredits": NINT, "env": NSTR}, required=["id", "name", "tier"])

OAUTH_CLIENT = obj({"client_id": s(None, "gwc_4r6t8y0u2i"), "name": STR,
                    "redirect_uris": arr(s(format="uri")), "scopes": arr(STR),
                    "confidential": BOOL, "created_at": TS})

WORKFLOW_STATE = obj({
    "_id": STR, "publicId": STR, "runParamaters": FREE, "isStarted": BOOL, "isComplete": BOOL,
    "isError": BOOL, "errorMessage": NSTR,
    "outputFiles": arr(obj({"fileName": STR, "downloadURL": STR, "isMainOutput": BOOL,
                            "width": INT, "height": INT, "type": STR})),
    "log": arr(ANY), "state": {"enum": ["running", "completed", "error"],
                               "examples": ["running"]},
    "status": STR, "progress": INT, "startTime": NTS, "endTime": NTS, "itemIds": arr(STR)})

WEBHOOK_ENDPOINT = obj({
    "id": s(None, "we_7k2m9q1w4h"), "url": s(None, "https://hooks.example.com/gateway",
                                             format="uri"),
    "description": nullable(s(None, "orders")),
    "events": arr(s("An event type, or * for every event", "composition.completed")),
    "enabled": BOOL,
    "previousSecretExpiresAt": nullable(s("While the previous secret still signs too",
                                          "2026-01-15T10:30:00.000Z", format="date-time")),
    "createdAt": TS, "updatedAt": TS})
WEBHOOK_ENDPOINT_WITH_SECRET = {"allOf": [ref("WebhookEndpoint"), obj(
    {"secret": s("The signing secret: in this response only", "whsec_c2VjcmV0")})]}
WEBHOOK_ATTEMPT = obj({
    "id": s(None, "42"), "deliveryId": s(None, "msg_3n5m7b9v1c"),
    "event": s(None, "composition.completed"), "attemptedAt": TS,
    "outcome": s("delivered, failed, gone, refused, ...", "delivered"),
    "responseCode": NINT, "responseExcerpt": nullable(s("The first 512 bytes answered")),
    "error": NSTR, "durationMs": NINT, "nextRetryAt": NTS, "redelivery": BOOL})
WEBHOOK_DELIVERY = obj({
    "id": s("The webhook-id header", "msg_3n5m7b9v1c"), "endpointId": NSTR,
    "event": s(None, "composition.completed"),
    "status": s("pending, delivered, failed", "delivered"), "attempts": INT,
    "lastResponseCode": NINT, "nextRetryAt": NTS, "createdAt": TS, "deliveredAt": NTS,
    "payload": FREE, "attemptLog": arr(ref("WebhookAttempt"))},
    required=["id", "event", "status", "attempts", "createdAt", "payload"])

COMPONENTS = {"Output": OUTPUT, "Composition": COMPOSITION,
              "CompositionAnswer": COMPOSITION_ANSWER, "LedgerEntry": LEDGER_ENTRY,
              "ApiKey": API_KEY, "Account": ACCOUNT, "Hook": HOOK,
              "WebhookEndpoint": WEBHOOK_ENDPOINT, "WebhookAttempt": WEBHOOK_ATTEMPT,
              "WebhookDelivery": WEBHOOK_DELIVERY, "ContentItem": CONTENT_ITEM,
              "Project": PROJECT, "ProjectRun": RUN, "FileMetadata": FILE_METADATA,
              "Collaboration": COLLABORATION, "BillingPlan": BILLING_PLAN,
              "OAuthClient": OAUTH_CLIENT, "WorkflowState": WORKFLOW_STATE}

# --- what one operation answers -----------------------------------------------------------


def op(operation_id: str, summary: str, data=None, status: int = 200, *, more=None,
       description: str | None = None, headers=None, errors=None, body=None,
       media=None) -> dict:
    """``data``: the schema of ``data`` in the ``status`` envelope (``more``: other 2xx
    statuses as ``{status: (description, data[, headers])}``); ``status`` None: the
    resource's own ``openapi_responses`` describe the answer. ``errors``: error statuses
    beyond those every route of its kind answers, as ``{status: description}``. ``body``:
    the request body's schema where the resource has no ``openapi_body`` (``media``: the
    content types it is accepted as, default the resource's ``openapi_media`` or JSON)."""
    out = {"operationId": operation_id, "summary": summary, "errors": errors or {}}
    if description:
        out["description"] = description
    if body is not None:
        out["body"], out["media"] = body, media
    if status is None:
        out["ok"] = None
        return out
    out["ok"] = {str(status): {"description": summary, "data": data,
                               **({"headers": headers} if headers else {})}}
    for code, (desc, schema, *rest) in (more or {}).items():
        out["ok"][str(code)] = {"description": desc, "data": schema,
                                **({"headers": rest[0]} if rest else {})}
    return out


def custom(operation_id: str, summary: str) -> dict:
    """A route whose answer is not an envelope: see the resource's ``openapi_responses``."""
    return op(operation_id, summary, status=None)


ASYNC_HEADERS = {
    "Location": {"description": "Where to poll: the composition (GET, ?wait=N to wait)",
                 "schema": {"type": "string", "format": "uri"}},
    "Retry-After": {"description": "Seconds to wait before polling again",
                    "schema": {"type": "integer"}},
}


def async_op(operation_id: str, summary: str, data=None, *, description=None) -> dict:
    """200 once ended (completed, failed or cancelled); 202 while queued or running, with
    ``Location`` and ``Retry-After`` (CONTRACT 6)."""
    data = data or ref("CompositionAnswer")
    out = op(operation_id, summary, data, 200, description=description, more={
        202: ("Accepted: still queued or running after the wait; poll Location (GET, "
              "?wait=N), stream .../events, or POST .../cancel", data, ASYNC_HEADERS)})
    out["async"] = True  # the builder adds the wait parameter and Prefer: wait=N
    if data == ref("CompositionAnswer"):  # the 202 example shows work still queued
        out["ok"]["202"]["example"] = {"composition": {
            "status": "queued", "progress": 0, "outputs": [], "startedAt": None,
            "finishedAt": None, "queuePosition": 1}}
    return out


# --- whole response maps, for the seed routes that keep ``openapi_responses`` --------------
# (AIMG in gateway/resources/aimg.py, story videos in gateway/resources/stories.py: their
# seed's objects inside our envelope, with the rate-limit and async headers)

ERROR_RESPONSE = {"description": "Error envelope (see error.code)",
                  "content": {"application/json": {"schema": ref("Error")}}}
LIMITED_RESPONSE = {"description": "RATE_LIMITED; see Retry-After",
                    "headers": {"Retry-After": {"schema": INT}},
                    "content": {"application/json": {"schema": ref("Error")}}}
RATE_HEADERS = {h: {"$ref": f"#/components/headers/{h}"} for h in (
    "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-Request-ID")}


def accepted_headers(location: str) -> dict:
    """A 202's headers: the rate-limit ones, ``Location`` (``location`` says what it is)
    and ``Retry-After``."""
    return {**RATE_HEADERS,
            "Location": {"description": location, "schema": {"type": "string", "format": "uri"}},
            "Retry-After": {"description": "Seconds before polling again", "schema": INT}}


def success(description: str, data: dict, headers=RATE_HEADERS) -> dict:
    """A success envelope whose ``data`` is ``data``."""
    return {"description": description, "headers": headers,
            "content": {"application/json": {"schema": {"allOf": [
                ref("Success"), {"type": "object", "properties": {"data": data}}]}}}}


def responses(method: str, codes: dict) -> dict:
    """``openapi_responses`` for one method: ``codes`` plus 429 and the error default."""
    return {method: {**codes, "429": LIMITED_RESPONSE, "default": ERROR_RESPONSE}}


def wait_query(default_note: str) -> dict:
    """The ``wait`` query parameter of a seed route whose clients poll by default
    (``default_note`` says so: who polls, and where)."""
    return {"name": "wait", "in": "query", "required": False,
            "description": "Seconds to wait for the end (0-60; also Prefer: wait=N). "
                           f"Default 0: {default_note}.",
            "schema": {"type": "integer", "minimum": 0, "maximum": 60}}


ESTIMATE = obj({"action": s(None, "generate-product-listing"), "credits": i(None, 25),
                "baseCredits": i(None, 25), "pricing": s(None, "fixed price per call"),
                "balance": i(None, 975), "affordable": BOOL})
BALANCE = obj({"balance": i(None, 975), "availableCredit": i(None, 975)})
ME = obj({"id": ACCOUNT_ID, "username": s(None, "ada"), "balance": i(None, 975),
          "plan": s(None, "default"),
          "limits": obj({"perMinute": i(None, 60), "perDay": i(None, 1000)}),
          "credential": obj({"kind": s("api_key, oauth or session", "api_key"),
                             "id": NSTR}),
          "label": s("What Zapier shows for the connection", "ada (api_key)"), **MEMBERSHIP},
         required=["id", "username", "balance", "plan", "limits", "credential", "label"])
CATALOGUE_ITEM = obj({
    "name": s(None, "generate-product-listing"), "title": s(None, "Generate product listing"),
    "description": STR, "credits": i(None, 25), "pricing": s(None, "fixed price per call"),
    "async": BOOL, "ttl": nullable(i("Milliseconds an async action may run", 120000)),
    "inputFields": arr(obj({"key": s(None, "product_name"), "label": s(None, "Product Name"),
                            "type": s(None, "string"), "required": BOOL,
                            "helpText": NSTR, "choices": arr(ANY), "default": ANY,
                            "minimum": NUM, "maximum": NUM, "maxLength": INT},
                           required=["key", "label", "type", "required"]))})
POST = obj({"urn": s(None, "urn:post:comp_8f3k2j9d0a:0"), "id": STR, "cardPoster": NSTR,
            "deliverable": ANY, "platform": NSTR, "postFormat": NSTR, "contentType": NSTR,
            "customTags": ANY, "contentLabel": NSTR, "compositionUid": NSTR,
            "createdAt": TS, "updatedAt": TS}, required=["urn", "id", "createdAt"])
# A page of posts: GET /list-posts and the list-posts action answer the same
POST_PAGE = obj({"catalogName": STR, "itemList": arr(POST), "items": arr(POST),
                 "totalPages": INT, "currentPage": INT, "totalItems": INT, "next": NEXT,
                 "meta": FREE})
TOKEN_PAIR = obj({"access_token": s(None, "eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
                  "token_type": {"const": "bearer"}, "expires_in": i("Seconds", 900),
                  "refresh_token": s(None, "gwr_Zm9vYmFy"),
                  "refresh_expires_in": i("Seconds", 2592000)})
NEW_ACCOUNT = obj({"id": ACCOUNT_ID, "username": s(None, "ada"),
                   "api_key": s("Shown this once", "gwk_3n5m7b9v1cExampleSecret")})
DELETED = {"deleted": {"const": True}}
USAGE_ROW = obj({"action": STR, "calls": INT, "credits": INT, "creditsRefunded": INT},
                required=[])
STORAGE_USAGE = obj({"userId": ACCOUNT_ID, "bytesUsed": INT, "quotaBytes": INT,
                     "bytesAvailable": INT, "uploadMaxBytes": INT, "percentUsed": NUM,
                     "itemCount": INT, "byType": obj({"image": INT, "video": INT})})
VERSION = obj({"version": INT, "size": INT, "checksum": obj({"sha256": STR}),
               "contentType": STR, "fileName": STR, "width": NINT, "height": NINT,
               "duration": {"type": ["number", "null"]}, "createdBy": NSTR,
               "txnReceipt": NRECEIPT, "createdAt": TS})
MEMBER_DATA = obj({"domain": STR, "paymentProvider": STR, "productId": STR, "tier": INT,
                   "isActive": BOOL, "createdDate": TS, "updatedDate": TS,
                   "deactivationDate": NTS, "env": NSTR, "additionalInformation": NSTR,
                   "_id": STR, "email": STR, "emails": arr(STR)},
                  required=["productId", "tier", "isActive"])

# Sync actions' ``data`` (async ones answer a composition). A new sync action without an
# entry fails tests/test_openapi.py.
ACTION_OUTPUTS = {
    "echo": obj({"message": s(None, "hello"), "length": i(None, 5),
                 "uppercase": nullable(s(None, "HELLO"))}),
    "estimate-cost": obj({"action": s(None, "echo"), "credits": i(None, 1),
                          "availableCredit": i(None, 975), "affordable": BOOL}),
    "upload": ref("ContentItem"),
    "health": obj({"status": {"const": "ok"}}),
    "list-posts": POST_PAGE,
}

RESPONSES: dict[str, dict[str, dict]] = {
    # Operations
    "/health": {"get": custom("getHealth", "Liveness: the text OK, no auth, no database")},
    "/health/ready": {"get": op(
        "getReadiness", "Readiness of the database, Redis and the workers (503 when one is "
        "down)", obj({"status": {"const": "ready"}, "checks": obj({
            "database": FREE, "redis": FREE, "workers": FREE})}),
        errors={503: "SERVICE_UNAVAILABLE: a backend is down or a queue has no live worker; "
                     "data (status unavailable, checks) says which; see Retry-After"})},
    "/metrics": {"get": custom("getMetrics", "Prometheus metrics (text exposition format)")},
    "/openapi.json": {"get": op("getOpenApi", "This OpenAPI 3.1 document (plain JSON, no "
                                "envelope)", status=None)},
    # Actions
    "/zapier/v1/actions": {"get": op(
        "listActions", "List every action with its price, mode and input fields",
        page(CATALOGUE_ITEM))},
    "/zapier/v1/me": {"get": op("getMe", "Auth test: who this credential is, its balance "
                                "and plan", ME)},
    "/zapier/v1/{action}/estimate": {"post": op(
        "estimateAction", "Price an action's input without running or charging it",
        ESTIMATE, body={"type": "object", "description": "The action's input, exactly as "
                        "POST /zapier/v1/{action} takes it", "examples": [{"message": "hi"}]})},
    # Compositions
    "/zapier/v1/compositions": {"get": op(
        "listCompositions", "List your asynchronous results, newest first",
        page({"allOf": [ref("Composition"), obj({"id": STR})]}))},
    "/zapier/v1/compositions/{uid}": {"get": async_op(
        "getComposition", "Read one composition (status, progress, outputs); ?wait=N "
        "waits for the end")},
    "/zapier/v1/compositions/{uid}/events": {"get": custom(
        "streamCompositionEvents", "Stream a composition's progress as Server-Sent Events")},
    "/zapier/v1/compositions/{uid}/cancel": {"post": op(
        "cancelComposition", "Cancel a composition (queued: refunded at once)",
        obj({"composition": ref("Composition")}))},
    "/outputs/{uid}/{name}": {"get": custom("getOutputFile", "Download a composition's "
                                            "output file (JSON results, node outputs)")},
    # Lists and webhooks
    "/list-posts": {"get": op(
        "listPosts", "List your compiled posts, newest first (seed filters and paging)",
        POST_PAGE, description="The seed's route of the list-posts action: free unless the "
        "operator prices list-posts, then debited with a receipt in meta, like "
        "POST /zapier/v1/list-posts.")},
    "/zapier/v1/hooks": {
        "get": op("listHooks", "List your REST hook subscriptions", page(ref("Hook"))),
        "post": op("createHook", "Subscribe a URL to an event (REST hook)", {"allOf": [
            ref("Hook"), obj({"secret": s("The signing secret: only on your first "
                                          "subscription", "whsec_c2VjcmV0")}, required=[])]},
            201)},
    "/zapier/v1/hooks/{hook_id}": {"delete": op(
        "deleteHook", "Unsubscribe a REST hook", obj({"id": STR, **DELETED}))},
    "/zapier/v1/hooks/secret/rotate": {"post": op(
        "rotateHookSecret", "Replace the webhook signing secret (shown once)",
        obj({"secret": s(None, "whsec_c2VjcmV0")}), 201)},
    "/zapier/v1/webhook-endpoints": {
        "get": op("listWebhookEndpoints", "List your webhook endpoints, newest first",
                  page(ref("WebhookEndpoint"))),
        "post": op("createWebhookEndpoint", "Add a webhook endpoint with its own signing "
                   "secret (shown once) and event filter", WEBHOOK_ENDPOINT_WITH_SECRET, 201,
                   errors={409: "CONFLICT: the account already has the most endpoints (16)"})},
    "/zapier/v1/webhook-endpoints/{endpoint_id}": {
        "get": op("getWebhookEndpoint", "Read one webhook endpoint (never its secret)",
                  ref("WebhookEndpoint")),
        "patch": op("updateWebhookEndpoint", "Change an endpoint's URL, events, "
                    "description or switch", ref("WebhookEndpoint")),
        "delete": op("deleteWebhookEndpoint", "Remove an endpoint and its delivery log",
                     obj({"id": STR, **DELETED}))},
    "/zapier/v1/webhook-endpoints/{endpoint_id}/rotate-secret": {"post": op(
        "rotateWebhookEndpointSecret", "Roll an endpoint's signing secret (the previous one "
        "keeps signing for overlap_seconds)", WEBHOOK_ENDPOINT_WITH_SECRET, 201)},
    "/zapier/v1/webhook-endpoints/{endpoint_id}/test": {"post": op(
        "sendWebhookTest", "Send a webhook.test event to this endpoint",
        obj({"delivery": ref("WebhookDelivery")}), 202,
        errors={409: "CONFLICT: the endpoint is disabled"})},
    "/zapier/v1/webhook-endpoints/{endpoint_id}/deliveries": {"get": op(
        "listWebhookAttempts", "The endpoint's delivery log: every attempt, newest first",
        page(ref("WebhookAttempt")))},
    "/zapier/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}": {"get": op(
        "getWebhookDelivery", "One delivery: its event, state, payload and every attempt",
        ref("WebhookDelivery"))},
    "/zapier/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver": {
        "post": op("redeliverWebhook", "Send a delivery again (one attempt, same webhook-id)",
                   obj({"delivery": ref("WebhookDelivery")}), 202,
                   errors={409: "CONFLICT: the endpoint is disabled"})},
    # Story videos (seed 001; docs/STORY.md): the resources describe their answers
    "/video": {"post": op("createStoryVideo", "Start a narrated, illustrated, subtitled "
                          "story video (metered; 202 with the task id)", status=None)},
    "/video/tasks/{task_id}": {"get": op(
        "getStoryVideoTask", "Read a story video task: progress, story, scene images, "
        "video URL", status=None)},
    "/images/tasks/{task_id}": {"get": op(
        "getStoryImageTask", "Read a scene image regeneration task", status=None)},
    "/images/{image_id}": {"post": op(
        "regenerateStoryImage", "Regenerate one scene image (metered) and re-render the "
        "video", status=None)},
    "/zapier/v1/credits/low-threshold": {"put": op(
        "setLowCreditThreshold", "Set or clear the balance that fires credits.low",
        obj({"threshold": nullable(i(None, 100))}))},
    # Credits
    "/zapier/v1/credits": {"get": op("getCredits", "Read your credit balance", BALANCE)},
    "/zapier/v1/credits/transactions": {"get": op(
        "listTransactions", "List your ledger rows, newest first", page(ref("LedgerEntry")))},
    "/zapier/v1/receipts/{txn_receipt}": {"get": op(
        "getReceipt", "Read one ledger row by its receipt", ref("LedgerEntry"))},
    # Accounts and keys
    "/api/account/create": {"post": op("createAccount", "Sign up: a new account and its "
                                       "first API key (shown once)", NEW_ACCOUNT, 201,
                                       body=obj({"username": s(None, "ada"),
                                                 "password": s(None, "correct horse battery",
                                                               format="password")}))},
    "/api/key/generate": {"post": op(
        "createApiKey", "Create an API key (the secret is shown once)",
        obj({"keyId": STR, "apiKey": s("Shown this once", "gwk_3n5m7b9v1cExampleSecret"),
             "prefix": STR, "description": STR, "createdAt": TS}), 201,
        body=obj({"description": s("What the key is for", "n8n")}, required=[]))},
    "/api/key/list": {"get": op("listApiKeys", "List your API keys (never their secrets)",
                                page({"allOf": [ref("ApiKey"), obj({"id": STR})]}))},
    "/api/key/{key_id}/revoke": {"delete": op(
        "revokeApiKey", "Revoke an API key (refused on the next request)", ref("ApiKey"))},
    # Admin
    "/admin/accounts": {"post": op(
        "adminCreateAccount", "Create an account with credits and a plan (admin)",
        {"allOf": [ref("Account"), obj({"api_key": STR})]}, 201)},
    "/admin/accounts/{account_id}": {
        "get": op("adminGetAccount", "Read an account (admin)", ref("Account")),
        "put": op("adminSetAccountPlan", "Move an account to a rate-limit plan (admin)",
                  ref("Account"), body=obj({"plan": s("A plan set by PUT /admin/plans/{name}",
                                                      "pro")}))},
    "/admin/accounts/{account_id}/credits": {"post": op(
        "adminGrantCredits", "Grant (or, negative, take back) credits (admin)",
        ref("LedgerEntry"), 201)},
    "/admin/accounts/{account_id}/keys": {
        "get": op("adminListKeys", "List an account's API keys (admin)", page(ref("ApiKey"))),
        "post": op("adminCreateKey", "Create an API key for an account (admin)",
                   {"allOf": [ref("ApiKey"), obj({"apiKey": STR})]}, 201,
                   body=obj({"description": s(None, "Make")}, required=[]))},
    "/admin/keys/{key_id}": {"delete": op("adminRevokeKey", "Revoke any API key (admin)",
                                          ref("ApiKey"))},
    "/admin/plans/{name}": {"put": op(
        "adminSetPlan", "Create or change a rate-limit plan (admin)",
        obj({"name": STR, "perMinute": INT, "perDay": INT}))},
    "/admin/plans/{name}/storage": {"put": op(
        "adminSetPlanStorage", "Set a plan's upload limit and storage quota (admin)",
        obj({"name": STR, "uploadMaxBytes": NINT, "quotaBytes": NINT}))},
    "/admin/prices/{action}": {"put": op(
        "adminSetPrice", "Set an action's price in credits (admin)",
        obj({"action": STR, "credits": INT}))},
    "/admin/receipts/{txn_receipt}/refund": {"post": op(
        "adminRefund", "Refund a debit once (admin); 200 when it was already refunded",
        {"allOf": [ref("LedgerEntry"), obj({"created": BOOL})]}, 201,
        body=obj({"reason": s("Kept on the refund row (255 characters)", "duplicate charge")},
                 required=[]),
        more={200: ("Already refunded: the existing refund row (created false)",
                    {"allOf": [ref("LedgerEntry"), obj({"created": BOOL})]})})},
    # OAuth2
    "/oauth/authorize": {"get": custom("oauthAuthorize", "OAuth2 sign-in and consent page "
                                       "(HTML)"),
                         "post": custom("oauthAuthorizeSubmit", "Submit the OAuth2 sign-in "
                                        "and consent form")},
    "/oauth/token": {"post": custom("oauthToken", "OAuth2 token endpoint (RFC 6749 JSON)")},
    "/oauth/revoke": {"post": custom("oauthRevoke", "OAuth2 token revocation (RFC 7009)")},
    "/admin/oauth/clients": {
        "get": op("adminListOAuthClients", "List OAuth2 clients (admin)",
                  page(ref("OAuthClient"))),
        "post": op("adminCreateOAuthClient", "Register an OAuth2 client; its secret is "
                   "shown once (admin)", {"allOf": [ref("OAuthClient"), obj({
                       "client_secret": nullable(STR)})]}, 201)},
    # Sessions (seed 001)
    "/auth/token": {"post": op("createSessionToken", "Trade username and password for "
                               "access and refresh tokens", TOKEN_PAIR,
                               body=obj({"username": s(None, "ada", minLength=1, maxLength=64),
                                         "password": s(None, "correct horse battery",
                                                       minLength=1, maxLength=256,
                                                       format="password")}),
                               media=[FORM, "application/json"])},
    "/auth/refresh": {"post": op("refreshSessionToken", "Trade a refresh token for a new "
                                 "pair (rotation); seed 001 sends it as Authorization: "
                                 "Bearer instead", TOKEN_PAIR,
                                 body=obj({"refresh_token": s(None, "gwr_Zm9vYmFy")},
                                          required=[]), media=[FORM, "application/json"])},
    # Account data and settings
    "/api/account/data": {m: op(f"{m}AccountData", "Read your account: credits, usage, "
                                "tier and live keys", obj({
                                    "id": ACCOUNT_ID, "username": STR, "usages": INT,
                                    "credits": INT, "api_key": {"type": "null"},
                                    "keys": arr(obj({"keyId": STR, "prefix": STR,
                                                     "description": STR, "createdAt": TS,
                                                     "lastUsedAt": NTS})), **MEMBERSHIP}),
                                # read only without a credential, so not typed here
                                body={"type": "object", "description": "Without a "
                                      "credential: username and password", "examples": [{
                                          "username": "ada",
                                          "password": "correct horse battery"}]},
                                media=[FORM, "application/json"])
                          for m in ("get", "post")},
    "/api/account/settings/set": {"post": op(
        "setAccountSetting", "Store one account setting",
        obj({"message": STR, "key": STR, "value": ANY}),
        body=obj({"key": s(None, "theme"), "value": {"description": "Any JSON value",
                                                      "examples": ["dark"]}}))},
    "/api/account/settings/get": {m: op(f"{m}AccountSetting", "Read one account setting",
                                        obj({"key": STR, "value": ANY}),
                                        body=obj({"key": s(None, "theme")}))
                                  for m in ("get", "post")},
    "/api/usage": {"get": op("getUsage", "Calls and credits per action and per day",
                             obj({"userId": ACCOUNT_ID, "days": INT, "from": TS, "to": TS,
                                  "totalCalls": INT, "totalCredits": INT,
                                  "totalRefunded": INT, "usages": INT,
                                  "actions": arr(USAGE_ROW), "daily": arr(FREE)}))},
    "/api/user/self": {"get": op("getSelfUser", "Your account as seed 003's SelfUser", obj({
        "sessionID": STR, "userID": ACCOUNT_ID, "email": {"type": "null"}, "username": STR,
        "isAuthenticated": {"const": True}, "isAtLeast18Confirmed": BOOL, "tier": INT,
        "tierExpiration": NTS, "merchantProcessor": STR, "subscriptions": arr(ANY),
        "itemCount": INT, "rootFolderItemCount": INT, "plan": STR, "credits": INT,
        "usages": INT, "createdAt": TS, "credential": obj({"kind": STR, "id": NSTR})}))},
    # Social login
    "/auth/social/exchange": {"post": op(
        "exchangeSocialLoginCode", "Trade a social login code for an API key (shown once)",
        obj({"id": ACCOUNT_ID, "username": STR, "email": NSTR, "provider": STR,
             "api_key": STR, "keyId": STR}), 201)},
    "/auth/{provider}": {"get": custom("startSocialLogin", "Start a social login (302 to "
                                       "the provider)"),
                         "post": custom("startSocialLoginForm", "Start a social login from "
                                        "a form post (302 to the provider)")},
    "/auth/{provider}/callback": {"get": custom("finishSocialLogin", "Finish a social login "
                                                "(302 back to the front-end)")},
    # AIMG (seed 003): their GenerationStatus schemas live on the resources
    "/generateImage": {"post": custom("generateImage", "Generate an image (AIMG): 200 "
                                      "ended, 202 queued or running")},
    "/generateVideo": {"post": custom("generateVideo", "Generate a video (AIMG): 200 "
                                      "ended, 202 queued or running")},
    "/getItemStatus": {"get": custom("getItemStatus", "Read a generation's status (AIMG)")},
    "/getModels": {"get": custom("getModels", "List the generation models and their "
                                 "limits (AIMG)")},
    "/getQueuesLength": {"get": custom("getQueuesLength", "Jobs waiting per model queue "
                                       "(AIMG)")},
    "/getSamplePrompts": {"get": custom("getSamplePrompts", "Sample prompts (AIMG)")},
    # Projects and runs (seed 000)
    "/api/project/create": {"post": op(
        "createProject", "Create a project (a node graph)",
        obj({"project_id": STR, "title": STR, "visibility": STR,
             "project": ref("Project")}), 201)},
    "/api/project/update": {"post": op("updateProject", "Change your project",
                                       obj({"message": STR, "project": ref("Project")}))},
    "/api/project/get": {m: op(f"{m}Project", "Read one project you may see",
                               ref("Project")) for m in ("get", "post")},
    "/api/project/delete": {m: op(f"{m}DeleteProject", "Delete your project",
                                  obj({"message": STR, "project_id": STR}))
                            for m in ("post", "delete")},
    "/api/project/list/mine": {"get": op("listMyProjects", "List your projects, newest "
                                         "first", seed_page(ref("Project"), "projects"))},
    "/api/project/list/trending": {"get": op(
        "listTrendingProjects", "List public projects by trending score",
        seed_page(ref("Project"), "projects"))},
    "/api/project/interact": {"post": op(
        "interactWithProject", "Like or save a project (toggle, or set with active)",
        obj({"project_id": STR, "interaction_type": STR, "is_active": BOOL}))},
    "/api/project/nodes": {"get": op("listProjectNodeTypes", "List the node types a graph "
                                     "may use", obj({"nodes": arr(FREE)}))},
    "/api/project/runs/estimate": {"post": op(
        "estimateProjectRun", "Price a project run node by node without running it",
        obj({"estimated_cost": INT, "seed": NINT, "variables": FREE,
             "project": obj({"project_id": STR, "name": STR}),
             "nodes": arr(obj({"id": STR, "type": STR, "credits": INT, "status": STR},
                              required=[])),
             "balance": INT, "affordable": BOOL}))},
    "/api/project/runs/run": {"post": custom(
        "runProject", "Run a project and stream its events (text/event-stream)")},
    "/api/project/runs/list": {"get": op("listProjectRuns", "List your runs, newest first",
                                         seed_page(ref("ProjectRun"), "runs"))},
    "/api/project/runs/{run_id}": {"get": op(
        "getProjectRun", "Read one run: status, nodes, outputs, money (?wait=N waits)",
        ref("ProjectRun"))},
    "/api/project/runs/{run_id}/events": {"get": custom(
        "streamProjectRunEvents", "Stream a run's events as Server-Sent Events")},
    "/api/project/runs/{run_id}/cancel": {"post": op(
        "cancelProjectRun", "Cancel your run; what did not complete is refunded",
        ref("ProjectRun"))},
    "/api/project/runs/{run_id}/retry": {"post": op(
        "retryProjectRun", "Run an ended run's project again (202 the new run)",
        ref("ProjectRun"), 202, headers={"Location": ASYNC_HEADERS["Location"]})},
    # Workflows (seed 003 API2)
    "/2/getAggregatedWorkflowTemplates": {"get": op(
        "listWorkflowTemplates", "List workflow templates (your and public projects)",
        arr(obj({"name": STR, "title": STR, "description": NSTR, "deployments": arr(STR),
                 "workflowTemplateFiles": FREE, "parameters": arr(FREE)})))},
    "/2/enqueueWorkflow": {"post": op(
        "enqueueWorkflow", "Run a workflow template with parameters (202)",
        obj({"workflowId": STR, "itemIds": arr(STR)}), 202)},
    "/2/getWorkflowStatus": {"get": op(
        "getWorkflowStatus", "Read one workflow state (workflowId) or several (workflowIds)",
        {"anyOf": [ref("WorkflowState"), arr(ref("WorkflowState"))]})},
    "/2/getFileGroupItems": {"get": op(
        "getFileGroupItems", "The file names of a file group (a tag of your content items)",
        obj({"fileGroup": STR, "fileNames": arr(STR)}))},
    "/2/getUserSession": {"get": op(
        "getUserSession", "Your API2 user session and user (seed 003)", obj({
            "userSession": obj({"_id": s(None, "5d0c6a8e-4c1f-4f6e-9a57-6f1d2b0e7c31"),
                                "domain": STR, "isAtLeast18Confirmed": BOOL,
                                "updatedDate": TS, "userID": ACCOUNT_ID}),
            "user": obj({"_id": ACCOUNT_ID, "email": NSTR, "username": STR, "domain": STR,
                         "createdDate": TS, "isDisabled": BOOL, "roles": arr(STR),
                         "flaggedImagesCount": INT})}))},
    # Content library (seed 002)
    "/upload": {"post": op("uploadContent", "Upload an image or video (multipart; metered "
                           "per MiB)", ref("ContentItem"), 201)},
    "/content/list": {"get": op("listContent", "List your content and content shared with "
                                "you", obj({"items": arr(ref("ContentItem")),
                                            "contents": arr(ref("ContentItem")),
                                            "total": INT, "limit": INT, "next": NEXT}))},
    "/content/{content_id}": {
        "get": op("getContent", "Read one content item's metadata", ref("ContentItem")),
        "delete": op("deleteContent", "Delete a content item and every version",
                     obj({"contentId": STR, **DELETED, "blobsRemoved": INT,
                          "usage": STORAGE_USAGE}))},
    "/content/{content_id}/metadata": {"put": op(
        "updateContentMetadata", "Change an item's description and tags",
        ref("ContentItem"))},
    "/content/{content_id}/versions": {"get": op(
        "listContentVersions", "List an item's versions, newest first",
        obj({"contentId": STR, "version": INT, "versions": arr(VERSION)}))},
    "/content/{content_id}/download": {"get": custom(
        "downloadContent", "Download an item's bytes (Range, ETag)")},
    "/content/{content_id}/share": {"post": op(
        "shareContent", "Make a signed link anyone may open until it expires",
        obj({"contentId": STR, "url": s(format="uri"), "expiresAt": TS}), 201)},
    "/links/{content_id}": {"get": custom("openSignedLink", "Open a signed link: the bytes")},
    "/links/{content_id}/{name}": {"get": custom("openNamedSignedLink",
                                                 "Open a signed link by file name: the bytes")},
    "/storage/usage": {"get": op("getStorageUsage", "Bytes used and left of your storage "
                                 "quota", STORAGE_USAGE)},
    "/collaboration/create": {"post": op(
        "createCollaboration", "Share a content item with another account",
        ref("Collaboration"), 201)},
    "/collaboration/list": {"get": op("listCollaborations", "List your collaborations",
                                      page(ref("Collaboration")))},
    "/collaboration/{collaboration_id}": {
        "put": op("updateCollaboration", "Change a collaboration's permissions",
                  ref("Collaboration")),
        "delete": op("deleteCollaboration", "End a collaboration",
                     obj({"collaborationId": STR, **DELETED}))},
    "/analytics": {"get": op("getContentAnalytics", "Views and downloads per item and day",
                             obj({"userId": ACCOUNT_ID, "days": INT, "from": STR},
                                 additionalProperties=True))},
    # Resumable uploads (tus)
    "/uploads": {"post": custom("createResumableUpload", "Create a resumable (tus) upload")},
    "/uploads/{upload_id}": {
        "patch": custom("appendResumableUpload", "Send bytes at Upload-Offset (tus)"),
        "delete": custom("deleteResumableUpload", "Abandon a resumable upload (tus)")},
    # Files (seeds 000 and 003)
    "/api/file/get": {m: op(f"{m}FileBase64", "Read a file as base64 with its item JSON",
                            obj({"file_id": STR, "raw": s("Base64 bytes", "aGVsbG8="),
                                 "tag": FREE, "data": ref("ContentItem")}))
                      for m in ("get", "post")},
    "/api/file/list": {"get": op("listFiles", "List your files, newest first", seed_page(
        {"allOf": [ref("ContentItem"), obj({"file_id": STR})]}, "files"))},
    "/uploadFile": {"post": op("adminUploadFile", "Store a file into an account's library "
                               "(admin)", ref("FileMetadata"), 201)},
    "/getFile": {"get": custom("getFile", "Download a file's bytes (seed 003)")},
    "/getFileMetadata": {"get": op("adminGetFileMetadata", "Read a file's metadata (admin)",
                                   ref("FileMetadata"))},
    "/removeFile": {"delete": op("adminRemoveFile", "Delete a file and every version "
                                 "(admin)", obj({"success": {"const": True}}))},
    # Payments
    "/api/paypal/create": {"post": op(
        "createPayPalPayment", "Start buying a credit pack with PayPal",
        obj({"approval_url": s("Send the payer here", "https://www.paypal.com/checkoutnow?"
                                                      "token=EC-1", format="uri")}), 201)},
    "/api/paypal/execute": {"post": op(
        "executePayPalPayment", "Capture an approved PayPal payment and credit it once",
        obj({"message": STR, "credits_awarded": INT, "receipt": NRECEIPT,
             "state": s("completed, or pending at PayPal (credits_awarded 0)", "completed")},
            required=["message", "credits_awarded", "receipt"]))},
    "/webhooks/paypal": {"post": op("paypalWebhook", "PayPal's webhook (verified with "
                                    "PayPal)", obj({"handled": BOOL, "event_type": NSTR,
                                                    "credited": BOOL},
                                                   required=["handled"]),
                                    body={"type": "object", "description": "PayPal's event, "
                                          "as PayPal sends it", "examples": [{
                                              "id": "WH-1", "event_type":
                                              "PAYMENT.CAPTURE.COMPLETED", "resource": {}}]})},
    # Billing (seed 003)
    "/getBillingPlans": {"get": op("listBillingPlans", "List the billing plans",
                                   arr(ref("BillingPlan")))},
    "/createBillingPlan": {"post": op("adminCreateBillingPlan", "Add a billing plan "
                                      "(admin)", ref("BillingPlan"), 201)},
    "/setAdminProvidedPremiumTier": {"post": op(
        "adminSetPremiumTier", "Give users a free tier (admin)", MEMBER_DATA)},
    "/cancelMembership": {"delete": op(
        "cancelMembership", "Stop renewing your membership at the end of the month",
        obj({"success": {"const": True}, "message": STR, "tierExpiration": NTS}))},
    "/downloadGiftCards": {"get": custom("adminDownloadGiftCards", "Create a batch of gift "
                                         "cards as CSV (admin)")},
    "/redeemGiftCard": {"post": op(
        "redeemGiftCard", "Redeem a gift card once", obj({
            "productID": NSTR, "tier": INT, "tierExpiration": NTS, "creditsGranted": INT,
            "txnReceipt": NRECEIPT}))},
}
