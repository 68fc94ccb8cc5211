"""Webhook endpoints like Stripe's: several per account, each with its own signing secret
(shown once; rotated with an overlap window), event filter and on/off switch; a delivery
log per endpoint (every attempt), redelivery of a delivery, and a test event.

These are the plain service functions the HTTP resources (``gateway/resources/
webhook_endpoints.py``) and the web console call; every lookup is scoped to the account,
so another account's endpoint or delivery is simply not found. Deliveries themselves are
made by ``jobs.webhooks`` (the same RQ task, signature scheme and retries as REST hooks).
"""

from __future__ import annotations

import datetime as dt
import json

from core.errors import Conflict, InvalidRequest, NotFound
from core.ids import new_id
from core.timefmt import iso
from jobs import webhooks
from jobs.models import Delivery, DeliveryAttempt, WebhookEndpoint
from metering import cursors
from metering.db import write_transaction
from metering.ledger import for_update
from metering.models import Account

TEST_EVENT = "webhook.test"  # sent only by send_test, to one endpoint, whatever its filter
EVENT_TYPES = (*webhooks.EVENTS, webhooks.WILDCARD)
MAX_ENDPOINTS_PER_ACCOUNT = 16  # Stripe's limit too
MAX_URL_CHARS = 2048
MAX_DESCRIPTION_CHARS = 256
DEFAULT_OVERLAP_S = 86400  # the previous secret keeps signing for a day after a rotation
MAX_OVERLAP_S = 7 * 86400
FIELDS = ("url", "events", "description", "enabled")


def _refuse(problems):
    raise InvalidRequest("; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                         details=problems)


def check_fields(body: dict, allowed) -> None:
    """Refuse (400) a body with fields other than ``allowed`` (a typo must not pass)."""
    problems = [{"field": name, "problem": "unknown field"} for name in body
                if name not in allowed]
    if problems:
        _refuse(problems)


def _checked(body: dict, *, creating: bool, policy) -> dict:
    """The endpoint fields of ``body`` as columns, every problem refused at once (400)
    before anything is written. Creating needs ``url`` and ``events``; an update takes
    any non-empty subset."""
    problems = [{"field": name, "problem": "unknown field"} for name in body
                if name not in FIELDS]
    if creating:
        problems += [{"field": name, "problem": "is required"} for name in ("url", "events")
                     if name not in body]
    elif not body:
        problems.append({"field": "body", "problem": "send at least one of " + ", ".join(FIELDS)})
    columns = {}
    if "url" in body:
        url = body["url"]
        if not isinstance(url, str) or not url.strip():
            problems.append({"field": "url", "problem": "must be an http(s) URL"})
        elif len(url) > MAX_URL_CHARS:
            problems.append({"field": "url", "problem": f"at most {MAX_URL_CHARS} characters"})
        else:
            columns["url"] = url.strip()
    if "events" in body:
        events = body["events"]
        if not isinstance(events, list) or not events or not all(
                isinstance(e, str) and e in EVENT_TYPES for e in events):
            problems.append({"field": "events", "problem": "a non-empty list of: "
                             + ", ".join(EVENT_TYPES)})
        else:
            columns["events"] = json.dumps(sorted(set(events)))
    if "description" in body:
        text = body["description"]
        if not isinstance(text, str) or len(text) > MAX_DESCRIPTION_CHARS or \
                not text.isprintable():
            problems.append({"field": "description", "problem": "printable text of at most "
                             f"{MAX_DESCRIPTION_CHARS} characters"})
        else:
            columns["description"] = text
    if "enabled" in body:
        if not isinstance(body["enabled"], bool):
            problems.append({"field": "enabled", "problem": "must be true or false"})
        else:
            columns["enabled"] = int(body["enabled"])
    if problems:
        _refuse(problems)
    if "url" in columns:  # the outbound rule: no private or loopback target unless allowed
        policy.check_url(columns["url"], field="url")
    return columns


def create_endpoint(account_id, body: dict, policy, clock) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint; returns it and its signing secret (the only time it is shown)."""
    columns = _checked(body, creating=True, policy=policy)
    secret = webhooks.new_secret()
    with write_transaction():
        # the account row's lock makes the per-account limit exact under concurrent creates
        for_update(Account.select(Account.id).where(Account.id == account_id)).first()
        count = WebhookEndpoint.select().where(WebhookEndpoint.account == account_id).count()
        if count >= MAX_ENDPOINTS_PER_ACCOUNT:
            raise Conflict(f"At most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints per "
                           "account; delete one first")
        now = clock.now()
        endpoint = WebhookEndpoint.create(id=new_id("we", 12), account=account_id,
                                          secret=secret, created_at=now, updated_at=now,
                                          **{"description": "", "enabled": 1, **columns})
    return endpoint, secret


def get_endpoint(account_id, endpoint_id) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.get_or_none((WebhookEndpoint.id == str(endpoint_id)) & (
        WebhookEndpoint.account == account_id))
    if endpoint is None:
        raise NotFound("No such webhook endpoint")
    return endpoint


def list_endpoints(account_id, *, limit: int, cursor: str | None = None):
    """One page of the account's endpoints, newest first: ``(rows, next_cursor)``."""
    return cursors.page(WebhookEndpoint.select().where(WebhookEndpoint.account == account_id),
                        tag="we", created=WebhookEndpoint.created_at, ident=WebhookEndpoint.id,
                        limit=limit, cursor=cursor)


def update_endpoint(account_id, endpoint_id, body: dict, policy, clock) -> WebhookEndpoint:
    """Change the URL, event filter, description or switch (never the secret: rotate)."""
    get_endpoint(account_id, endpoint_id)  # 404 before 400: another account's id says nothing
    columns = _checked(body, creating=False, policy=policy)
    WebhookEndpoint.update(updated_at=clock.now(), **columns).where(
        (WebhookEndpoint.id == endpoint_id) & (WebhookEndpoint.account == account_id)).execute()
    return get_endpoint(account_id, endpoint_id)


def delete_endpoint(account_id, endpoint_id) -> None:
    """Remove the endpoint and its delivery log; queued deliveries to it are dropped."""
    with write_transaction():
        get_endpoint(account_id, endpoint_id)
        deliveries = Delivery.select(Delivery.id).where(
            (Delivery.account == account_id) & (Delivery.endpoint == endpoint_id))
        DeliveryAttempt.delete().where(DeliveryAttempt.delivery.in_(deliveries)).execute()
        Delivery.delete().where((Delivery.account == account_id)
                                & (Delivery.endpoint == endpoint_id)).execute()
        WebhookEndpoint.delete().where((WebhookEndpoint.id == endpoint_id)
                                       & (WebhookEndpoint.account == account_id)).execute()


def rotate_secret(account_id, endpoint_id, overlap_seconds, clock) -> tuple[WebhookEndpoint, str]:
    """A new signing secret (returned, shown this once). The one it replaces keeps signing
    as well for ``overlap_seconds`` (0: it stops at once), like Stripe's "roll secret"."""
    get_endpoint(account_id, endpoint_id)  # 404 before 400, as every lookup here
    if overlap_seconds is None:
        overlap_seconds = DEFAULT_OVERLAP_S
    if not isinstance(overlap_seconds, int) or isinstance(overlap_seconds, bool) or \
            not 0 <= overlap_seconds <= MAX_OVERLAP_S:
        _refuse([{"field": "overlap_seconds",
                  "problem": f"an integer from 0 to {MAX_OVERLAP_S}"}])
    secret = webhooks.new_secret()
    now = clock.now()
    with write_transaction():
        endpoint = get_endpoint(account_id, endpoint_id)
        previous = endpoint.secret if overlap_seconds else None
        WebhookEndpoint.update(
            secret=secret, previous_secret=previous,
            previous_expires_at=now + dt.timedelta(seconds=overlap_seconds) if previous else None,
            updated_at=now).where(WebhookEndpoint.id == endpoint.id).execute()
    return get_endpoint(account_id, endpoint_id), secret


def list_attempts(account_id, endpoint_id, *, limit: int, cursor: str | None = None):
    """The endpoint's delivery log, one row per attempt, newest first:
    ``(rows, next_cursor)``; each row carries its delivery (``row.delivery``)."""
    get_endpoint(account_id, endpoint_id)
    query = (DeliveryAttempt.select(DeliveryAttempt, Delivery)
             .join(Delivery, on=(DeliveryAttempt.delivery == Delivery.id))
             .where((DeliveryAttempt.account == account_id)
                    & (DeliveryAttempt.endpoint == endpoint_id)))
    if cursor:
        query = query.where(DeliveryAttempt.id < cursors.decode("wa", cursor))
    rows = list(query.order_by(DeliveryAttempt.id.desc()).limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (cursors.encode("wa", rows[-1].id) if more and rows else None)


def get_delivery(account_id, endpoint_id, delivery_id) -> tuple[Delivery, list]:
    """One delivery (a message, its ``webhook-id``) to the endpoint and all its attempts,
    newest first."""
    get_endpoint(account_id, endpoint_id)
    delivery = Delivery.get_or_none((Delivery.msg_id == str(delivery_id))
                                    & (Delivery.account == account_id)
                                    & (Delivery.endpoint == endpoint_id))
    if delivery is None:
        raise NotFound("No such delivery")
    attempts = list(DeliveryAttempt.select().where(DeliveryAttempt.delivery == delivery.id)
                    .order_by(DeliveryAttempt.id.desc()))
    return delivery, attempts


def redeliver(account_id, endpoint_id, delivery_id, redis, config) -> tuple[Delivery, int]:
    """Queue one more attempt of a delivery: the same ``webhook-id`` and body, signed
    afresh (new timestamp) with the endpoint's current secret(s); never retried. Returns
    the delivery and how many attempts it had before this one was queued."""
    delivery, attempts = get_delivery(account_id, endpoint_id, delivery_id)
    if not get_endpoint(account_id, endpoint_id).enabled:
        raise Conflict("The webhook endpoint is disabled; enable it to redeliver")
    webhooks.queue(redis, config).enqueue_call(
        "jobs.webhooks.deliver", args=(delivery.msg_id, True),
        job_id=f"{delivery.msg_id}-{new_id('r', 8)}", result_ttl=600)
    return delivery, len(attempts)


def send_test(account_id, endpoint_id, redis, config) -> str:
    """Send a ``webhook.test`` event to this one endpoint (whatever its filter); returns
    the delivery id. Delivered, logged and retried like any other event."""
    endpoint = get_endpoint(account_id, endpoint_id)
    if not endpoint.enabled:
        raise Conflict("The webhook endpoint is disabled; enable it to send a test event")
    payload = {"endpoint": {"id": endpoint.id, "url": endpoint.url},
               "message": "A test event sent from the gateway"}
    [msg_id] = webhooks.emit(account_id, TEST_EVENT, payload, redis, config, endpoint=endpoint)
    return msg_id


# Views: the JSON of the API and what the console shows (never a secret after creation).

def endpoint_json(endpoint, *, secret: str | None = None) -> dict:
    data = {"id": endpoint.id, "url": endpoint.url, "description": endpoint.description,
            "events": json.loads(endpoint.events), "enabled": bool(endpoint.enabled),
            "previousSecretExpiresAt": iso(endpoint.previous_expires_at)
            if endpoint.previous_secret else None,
            "createdAt": iso(endpoint.created_at), "updatedAt": iso(endpoint.updated_at)}
    if secret is not None:
        data["secret"] = secret
    return data


def attempt_json(attempt, delivery_id: str) -> dict:
    return {"id": str(attempt.id), "deliveryId": delivery_id, "event": attempt.event,
            "attemptedAt": iso(attempt.attempted_at), "outcome": attempt.outcome,
            "responseCode": attempt.response_code, "responseExcerpt": attempt.response_excerpt,
            "error": attempt.error, "durationMs": attempt.duration_ms,
            "nextRetryAt": iso(attempt.next_retry_at),
            "redelivery": bool(attempt.redelivery)}


def delivery_json(delivery, attempts=None) -> dict:
    data = {"id": delivery.msg_id, "endpointId": delivery.endpoint, "event": delivery.event,
            "status": delivery.status, "attempts": delivery.attempts,
            "lastResponseCode": delivery.last_status,
            "nextRetryAt": iso(delivery.next_attempt_at)
            if delivery.status == "pending" and delivery.next_attempt_at else None,
            "createdAt": iso(delivery.created_at),
            "deliveredAt": iso(delivery.delivered_at),
            "payload": json.loads(delivery.payload)}
    if attempts is not None:
        data["attemptLog"] = [attempt_json(a, delivery.msg_id) for a in attempts]
    return data
