"""Webhooks and callbacks: REST-hook subscriptions, signed deliveries, retries.

Deliveries follow the Standard Webhooks scheme: headers ``webhook-id`` (the same on every
retry of a message), ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256
of "id.timestamp.body">`` keyed by the account's ``whsec_`` secret, or by the endpoint's own
secret(s) for a webhook endpoint (``jobs.webhook_endpoints``). Each delivery is its own
RQ job; every attempt is logged (``DeliveryAttempt``); failures are retried on a schedule
of about a day with jitter; ``410 Gone`` unsubscribes the hook (disables the endpoint).
Targets obey the same outbound rules as every other fetch.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import secrets

from rq import Queue

from core.clock import utcnow
from core.errors import InvalidRequest, NotFound
from core.ids import new_id
from jobs.models import (
    DETACHED_ACTIONS,
    Delivery,
    DeliveryAttempt,
    Hook,
    LowCreditState,
    WebhookEndpoint,
    WebhookSecret,
)
from jobs.outbound import OutboundRefused, post_json_answer
from jobs.runtime import current
from jobs.views import base_url, composition_json
from metering import cursors, ledger
from metering.db import connection
from metering.models import Account

log = logging.getLogger(__name__)

EVENTS = ("composition.completed", "composition.failed", "post.created", "credits.low",
          "run.completed", "run.failed")
# Seconds before each retry (Standard Webhooks' suggested schedule, about 27 hours in all).
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)
MAX_HOOKS_PER_ACCOUNT = 50
WILDCARD = "*"  # an endpoint's event filter taking every event
EXCERPT_BYTES = 512  # of a receiver's answer, kept in the delivery log


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_for(account_id) -> str:
    row = WebhookSecret.get_or_none(WebhookSecret.account == account_id)
    if row is None:
        WebhookSecret.insert(account=account_id, secret=new_secret()).on_conflict_ignore() \
            .execute()
        row = WebhookSecret.get(WebhookSecret.account == account_id)
    return row.secret


def rotate_secret(account_id) -> str:
    secret = new_secret()
    (WebhookSecret.insert(account=account_id, secret=secret, created_at=utcnow())
     .on_conflict(conflict_target=[WebhookSecret.account],
                  update={WebhookSecret.secret: secret, WebhookSecret.created_at: utcnow()})
     .execute())
    return secret


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def create_hook(account_id, target_url, event, policy) -> Hook:
    problems = []
    if event not in EVENTS:
        problems.append({"field": "event", "problem": "one of " + ", ".join(EVENTS)})
    if not isinstance(target_url, str) or not target_url:
        problems.append({"field": "target_url", "problem": "is required"})
    if problems:
        raise InvalidRequest("; ".join(f"{p['field']}: {p['problem']}" for p in problems),
                             details=problems)
    policy.check_url(target_url, field="target_url")
    if Hook.select().where(Hook.account == account_id).count() >= MAX_HOOKS_PER_ACCOUNT:
        raise InvalidRequest(f"At most {MAX_HOOKS_PER_ACCOUNT} hooks per account")
    return Hook.create(id=new_id("hook", 8), account=account_id, event=event,
                       target_url=target_url)


def list_hooks(account_id, *, limit: int, cursor: str | None = None):
    """One page of the account's hooks, newest first: ``(rows, next_cursor)`` (CONTRACT 7)."""
    return cursors.page(Hook.select().where(Hook.account == account_id), tag="h",
                        created=Hook.created_at, ident=Hook.id, limit=limit, cursor=cursor)


def delete_hook(account_id, hook_id):
    if not Hook.delete().where((Hook.id == hook_id) & (Hook.account == account_id)).execute():
        raise NotFound("No such hook")


def queue(redis, config) -> Queue:
    return Queue(f"{config.redis_prefix}:webhooks", connection=redis)


def emit(account_id, event, payload, redis, config, *, target_url=None,
         endpoint=None) -> list[str]:
    """Record one delivery per subscribed hook and per enabled endpoint whose filter takes
    ``event`` (or only to ``target_url``, or only to ``endpoint``) and enqueue them."""
    if target_url:
        targets = [(None, None, target_url)]
    elif endpoint is not None:
        targets = [(None, endpoint.id, endpoint.url)]
    else:
        targets = [(h.id, None, h.target_url) for h in Hook.select().where(
            (Hook.account == account_id) & (Hook.event == event))]
        targets += [(None, e.id, e.url) for e in _endpoints_taking(account_id, event)]
    ids = []
    for hook_id, endpoint_id, url in targets:
        msg_id = new_id("msg", 12)
        body = {"type": event, "timestamp": _iso_now(), "data": payload}
        Delivery.create(msg_id=msg_id, account=account_id, hook=hook_id, endpoint=endpoint_id,
                        event=event, target_url=url,
                        payload=json.dumps(body, separators=(",", ":")))
        queue(redis, config).enqueue_call("jobs.webhooks.deliver", args=(msg_id,),
                                          job_id=f"{msg_id}-0", result_ttl=600)
        ids.append(msg_id)
    return ids


def _endpoints_taking(account_id, event) -> list:
    """The account's enabled endpoints whose event filter lists ``event`` (or ``*``)."""
    rows = WebhookEndpoint.select().where((WebhookEndpoint.account == account_id)
                                          & (WebhookEndpoint.enabled == 1))
    return [e for e in rows if {event, WILDCARD} & set(json.loads(e.events))]


def _iso_now():
    from core.timefmt import iso

    return iso(utcnow())


def signing_secrets(row, endpoint, now) -> list[str]:
    """The secrets a delivery is signed with: the endpoint's (and its previous one until
    the rotation's overlap ends), else the account's one secret."""
    if endpoint is None:
        return [secret_for(row.account_id)]
    secrets_ = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_expires_at and \
            endpoint.previous_expires_at > now:
        secrets_.append(endpoint.previous_secret)
    return secrets_


def signature_header(secrets_, msg_id, timestamp, body) -> str:
    """Standard Webhooks: one ``v1,`` signature per secret, space-separated; a receiver
    accepts the message when any one of them verifies with its secret."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def _excerpt(raw: bytes) -> str:
    """The first bytes of a receiver's answer as text for the log, without control
    characters (a log line or console cell cannot be broken by them)."""
    text = raw[:EXCERPT_BYTES].decode("utf-8", errors="replace")
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


def deliver(msg_id: str, redelivery: bool = False) -> str:
    """The RQ task: one attempt, logged; schedules the next one on failure.

    ``redelivery``: an attempt the account asked for (redeliver): made whatever the
    delivery's state, with the same ``webhook-id``, never retried on failure and not
    counted against the retry schedule."""
    rt = current()
    with connection():
        row = Delivery.get_or_none(Delivery.msg_id == msg_id)
        if row is None or (row.status != "pending" and not redelivery):
            return "skipped"
        if row.hook and not Hook.select().where(Hook.id == row.hook).exists():
            Delivery.update(status="gone").where(Delivery.id == row.id).execute()
            return "unsubscribed"
        endpoint = None
        if row.endpoint:
            endpoint = WebhookEndpoint.get_or_none((WebhookEndpoint.id == row.endpoint) & (
                WebhookEndpoint.account == row.account_id))
            if endpoint is None:
                Delivery.update(status="gone").where(Delivery.id == row.id).execute()
                return "unsubscribed"
            if not endpoint.enabled:
                _log_attempt(row, rt, outcome="failed", error="the endpoint is disabled",
                             redelivery=redelivery)
                if not redelivery:
                    _settle(row, status="failed")
                return "disabled"
        body = row.payload.encode()
        timestamp = int(rt.clock.time())
        signature = signature_header(signing_secrets(row, endpoint, rt.clock.now()), msg_id,
                                     timestamp, body)
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(timestamp), "webhook-signature": signature,
                   "user-agent": "metered-gateway-webhooks/1"}
        started, excerpt = rt.clock.monotonic(), b""
        try:
            status, excerpt = post_json_answer(endpoint.url if endpoint else row.target_url,
                                               body, headers, policy=rt.policy,
                                               timeout=(3.05, 15), excerpt_bytes=EXCERPT_BYTES)
        except OutboundRefused as exc:
            status, error = None, exc.message
        else:
            error = None
        attempt = {"response_code": status, "response_excerpt": _excerpt(excerpt),
                   "error": error, "duration_ms": int((rt.clock.monotonic() - started) * 1000),
                   "redelivery": redelivery}
        attempts = row.attempts + (0 if redelivery else 1)
        if status is not None and 200 <= status < 300:
            _log_attempt(row, rt, outcome="succeeded", **attempt)
            _settle(row, redelivery=redelivery, status="delivered", attempts=attempts,
                    last_status=status, delivered_at=rt.clock.now())
            return "delivered"
        if status == 410:
            _log_attempt(row, rt, outcome="failed", **attempt)
            _settle(row, redelivery=redelivery, status="gone", attempts=attempts,
                    last_status=status)
            if row.hook:
                Hook.delete().where(Hook.id == row.hook).execute()
            if endpoint is not None:  # the receiver says it is gone: stop sending, keep the log
                WebhookEndpoint.update(enabled=0, updated_at=rt.clock.now()).where(
                    WebhookEndpoint.id == endpoint.id).execute()
            return "unsubscribed"
        if redelivery:
            _log_attempt(row, rt, outcome="failed", **attempt)
            return "failed"
        schedule = rt.config.webhook_retry_schedule or RETRY_SCHEDULE
        if attempts > len(schedule):
            _log_attempt(row, rt, outcome="failed", **attempt)
            _settle(row, status="failed", attempts=attempts, last_status=status)
            log.warning("webhook %s to hook %s endpoint %s failed for good: %s", msg_id,
                        row.hook, row.endpoint, error or status)
            return "failed"
        delay = schedule[attempts - 1] * random.uniform(0.9, 1.1)  # jitter spreads retries
        next_at = rt.clock.now() + dt.timedelta(seconds=delay)
        _log_attempt(row, rt, outcome="failed", next_retry_at=next_at, **attempt)
        _settle(row, attempts=attempts, last_status=status, next_attempt_at=next_at)
    queue(rt.redis, rt.config).enqueue_in(dt.timedelta(seconds=delay), "jobs.webhooks.deliver",
                                          msg_id, job_id=f"{msg_id}-{attempts}",
                                          result_ttl=600)
    return "retrying"


def _settle(row, *, redelivery=False, **fields) -> None:
    """Update the delivery after an attempt. A scheduled attempt only moves a pending
    delivery (a redelivery that already succeeded is not undone by a late failure); a
    redelivery only reports success or gone, and never touches the retry count."""
    if redelivery:
        fields.pop("attempts", None)
        still = Delivery.status != "delivered"
    else:
        still = Delivery.status == "pending"
    Delivery.update(**fields).where((Delivery.id == row.id) & still).execute()


def _log_attempt(row, rt, *, outcome, response_code=None, response_excerpt="", error=None,
                 duration_ms=0, next_retry_at=None, redelivery=False) -> None:
    """Log one attempt; an endpoint's log keeps its newest ``WEBHOOK_LOG_KEEP`` attempts,
    so a receiver failing for months cannot grow the table without bound."""
    if row.endpoint:
        mine = (DeliveryAttempt.account == row.account_id) & (
            DeliveryAttempt.endpoint == row.endpoint)
        oldest_kept = (DeliveryAttempt.select(DeliveryAttempt.id).where(mine)
                       .order_by(DeliveryAttempt.id.desc())
                       .offset(rt.config.webhook_log_keep - 1).limit(1).scalar())
        if oldest_kept is not None:
            DeliveryAttempt.delete().where(mine & (DeliveryAttempt.id <= oldest_kept)).execute()
    DeliveryAttempt.create(delivery=row.id, account=row.account_id, endpoint=row.endpoint,
                           event=row.event, attempted_at=rt.clock.now(), outcome=outcome,
                           response_code=response_code, response_excerpt=response_excerpt,
                           error=error, duration_ms=max(0, duration_ms),
                           next_retry_at=next_retry_at, redelivery=int(redelivery))


def composition_ended(comp, rt) -> None:
    """Notify hooks (and the callback URL) that a composition ended."""
    from jobs.models import Composition, Post

    payload = composition_payload(comp, rt.config)
    if comp.status == Composition.COMPLETED:
        emit(comp.account_id, "composition.completed", payload, rt.redis, rt.config)
        for post in Post.select().where(Post.composition == comp.uid):
            emit(comp.account_id, "post.created", post_payload(post), rt.redis, rt.config)
    elif comp.status == Composition.FAILED:
        emit(comp.account_id, "composition.failed", payload, rt.redis, rt.config)
    if comp.action in DETACHED_ACTIONS and comp.status != Composition.CANCELLED:
        _run_ended(comp, rt)
    if comp.callback_url:
        emit(comp.account_id, f"composition.{comp.status}", payload, rt.redis, rt.config,
             target_url=comp.callback_url)


def _run_ended(comp, rt) -> None:
    """``run.completed`` / ``run.failed``: the composition and the project run record."""
    from jobs.workflows import runs

    run, nodes = runs.load(comp.uid)
    if run is None:
        return
    payload = {**composition_payload(comp, rt.config),
               "run": runs.run_json(comp, run, nodes, base_url(rt.config))}
    emit(comp.account_id, f"run.{comp.status}", payload, rt.redis, rt.config)


def composition_payload(comp, config) -> dict:
    """``{"composition": ...}``: the same composition JSON as ``GET /zapier/v1/compositions/
    {uid}`` (``jobs.views.composition_json``), linked from the configured base URL."""
    return {"composition": composition_json(comp, base_url(config))}


def post_payload(post) -> dict:
    from core.timefmt import iso

    return {"post": {"urn": post.urn, "id": post.urn, "cardPoster": post.card_poster,
                     "deliverable": json.loads(post.deliverable), "platform": post.platform,
                     "postFormat": post.post_format, "contentType": post.content_type,
                     "customTags": json.loads(post.custom_tags),
                     "contentLabel": post.content_label, "createdAt": iso(post.created_at),
                     "updatedAt": iso(post.updated_at)}}


MAX_THRESHOLD = ledger.MAX_CREDITS  # a balance threshold is an amount of credits


def set_low_credit_threshold(account_id, threshold) -> None:
    if threshold is not None and (not isinstance(threshold, int) or isinstance(threshold, bool)
                                  or not 0 <= threshold <= MAX_THRESHOLD):
        problem = f"an integer from 0 to {MAX_THRESHOLD}, or null"
        raise InvalidRequest(f"threshold must be {problem}",
                             details=[{"field": "threshold", "problem": problem}])
    Account.update(low_credit_threshold=threshold).where(Account.id == account_id).execute()
    LowCreditState.delete().where(LowCreditState.account == account_id).execute()


READ = object()  # check_low_credit: read the threshold (the debit did not return it)


def check_low_credit(account_id, balance, redis, config, *, threshold=READ) -> bool:
    """Fire ``credits.low`` once when a debit takes the balance below the threshold;
    re-arm when a later debit finds the balance back at or above it. ``threshold``: the
    account's, when the debit's own transaction read it (a group commit does)."""
    if threshold is READ:
        account = Account.select(Account.low_credit_threshold).where(
            Account.id == account_id).first()
        threshold = account.low_credit_threshold if account else None
    if threshold is None:
        return False
    if balance >= threshold:
        LowCreditState.update(below=0).where(
            (LowCreditState.account == account_id) & (LowCreditState.below == 1)).execute()
        return False
    LowCreditState.insert(account=account_id, below=0).on_conflict_ignore().execute()
    crossed = LowCreditState.update(below=1).where(
        (LowCreditState.account == account_id) & (LowCreditState.below == 0)).execute()
    if crossed:
        emit(account_id, "credits.low", {"balance": balance, "threshold": threshold},
             redis, config)
    return bool(crossed)
