"""Job records of asynchronous actions (compositions), the posts they produce, and
webhook subscriptions and deliveries."""

from __future__ import annotations

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    SmallIntegerField,
    TextField,
)

from core.clock import utcnow
from metering.models import Account, BaseModel

# Actions whose composition is run by parts on other jobs (``jobs.context.DETACHED``): the
# engine's reaper leaves their heartbeat alone and a cancel ends them at once.
DETACHED_ACTIONS = ("run-project",)


class Composition(BaseModel):
    """One asynchronous action call: what was asked, what it cost, and how it ended.

    ``receipt`` is the debit that paid for it and ``refund_receipt`` the refund row when
    it failed, expired or was cancelled; a status only moves forward with a conditional
    UPDATE, so two processes can never both finish (and refund) the same composition.
    """

    QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
        "queued", "running", "completed", "failed", "cancelled")
    FINAL = (COMPLETED, FAILED, CANCELLED)

    uid = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    action = CharField(max_length=64)
    input = TextField()  # JSON
    status = CharField(max_length=16, default=QUEUED, index=True)
    progress = SmallIntegerField(default=0)
    outputs = TextField(default="[]")  # JSON list of {type, url, format, width, height}
    error = TextField(null=True)  # JSON {code, message}
    receipt = CharField(max_length=40, null=True)
    credits = BigIntegerField(default=0)
    # credits spent by completed parts (a project run's nodes): kept when it fails
    consumed = BigIntegerField(default=0)
    refund_receipt = CharField(max_length=40, null=True)
    callback_url = TextField(null=True)
    queue = CharField(max_length=32, default="cpu")
    ttl_s = IntegerField()
    cancel_requested = SmallIntegerField(default=0)
    worker = CharField(max_length=128, null=True)  # host:pid of the worker running it
    heartbeat_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    deadline_at = DateTimeField()

    class Meta:
        indexes = ((("account", "created_at"), False),)


class Post(BaseModel):
    """A deliverable of a completed composition, as ``/list-posts`` shows it (seed 004)."""

    id = BigAutoField()
    urn = CharField(max_length=48, unique=True)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    composition = ForeignKeyField(Composition, on_delete="CASCADE")
    card_poster = TextField()
    deliverable = TextField()  # JSON
    platform = CharField(max_length=32)
    post_format = CharField(max_length=32)
    content_type = CharField(max_length=32)
    custom_tags = TextField(default="[]")  # JSON list
    content_label = CharField(max_length=64, default="")
    search_text = TextField(default="")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "id"), False),)


class Hook(BaseModel):
    """A REST-hook subscription: POST ``event`` deliveries to ``target_url``."""

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    event = CharField(max_length=40)
    target_url = TextField()
    created_at = DateTimeField(default=utcnow)


class WebhookSecret(BaseModel):
    """The account's signing secret (Standard Webhooks ``whsec_...``); rotatable.

    Kept in the clear because signing needs it; it authenticates us to the receiver and
    grants nothing on the gateway.
    """

    account = ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    secret = CharField(max_length=80)
    created_at = DateTimeField(default=utcnow)


class Delivery(BaseModel):
    """One webhook or callback message; ``msg_id`` is the ``webhook-id`` across retries."""

    id = BigAutoField()
    msg_id = CharField(max_length=40, unique=True)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    hook = CharField(max_length=40, null=True)  # null: a callback_url or endpoint delivery
    endpoint = CharField(max_length=40, null=True)  # a WebhookEndpoint's id (migration 13)
    event = CharField(max_length=40)
    target_url = TextField()
    payload = TextField()
    attempts = IntegerField(default=0)
    status = CharField(max_length=16, default="pending")  # pending|delivered|failed|gone
    last_status = IntegerField(null=True)
    next_attempt_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    delivered_at = DateTimeField(null=True)


class LowCreditState(BaseModel):
    """Whether ``credits.low`` already fired for the current dip below the threshold."""

    account = ForeignKeyField(Account, primary_key=True, on_delete="CASCADE")
    below = SmallIntegerField(default=0)


class WebhookEndpoint(BaseModel):
    """A webhook endpoint like Stripe's: its own URL, signing secret, event filter, switch.

    The secret is kept as is because signing needs it (as ``WebhookSecret``): it
    authenticates us to the receiver and grants nothing on the gateway. It is shown once,
    when made or rotated, and never again. After a rotation the previous secret signs too
    (a second ``v1,`` signature) until ``previous_expires_at``, so a receiver can switch
    secrets without refusing a single delivery.
    """

    id = CharField(primary_key=True, max_length=40)
    account = ForeignKeyField(Account, on_delete="CASCADE")
    url = TextField()
    description = CharField(max_length=256, default="")
    events = TextField()  # JSON list of event types; ["*"]: every event
    enabled = SmallIntegerField(default=1)
    secret = CharField(max_length=80)
    previous_secret = CharField(max_length=80, null=True)
    previous_expires_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "created_at"), False),)


class DeliveryAttempt(BaseModel):
    """One POST of a delivery (the delivery log): when, the answer, how long, what next."""

    id = BigAutoField()
    delivery = ForeignKeyField(Delivery, on_delete="CASCADE")
    account = ForeignKeyField(Account, on_delete="CASCADE")
    endpoint = CharField(max_length=40, null=True)  # null: a hook's or callback's attempt
    event = CharField(max_length=40)
    attempted_at = DateTimeField(default=utcnow)
    outcome = CharField(max_length=16)  # succeeded | failed
    response_code = IntegerField(null=True)  # null: no answer (see error)
    response_excerpt = TextField(default="")
    error = TextField(null=True)
    duration_ms = IntegerField(default=0)
    next_retry_at = DateTimeField(null=True)
    redelivery = SmallIntegerField(default=0)  # 1: asked for by the account, never retried

    class Meta:
        indexes = ((("account", "endpoint", "id"), False),)


ALL_MODELS = [Composition, Post, Hook, WebhookSecret, Delivery, LowCreditState]
# Migration 13: Stripe-like endpoints and the per-attempt delivery log.
ENDPOINT_MODELS = [WebhookEndpoint, DeliveryAttempt]
