"""How a composition is shown to callers: one builder for the HTTP routes, the SSE stream,
the AIMG status route and the webhook/callback payloads, and the one base-URL rule their
links use. Pure functions of the record: no database, Redis or RQ access here."""

from __future__ import annotations

import json
from collections.abc import Callable

from core.timefmt import iso
from jobs.models import Composition


def base_url(config, request_base: str | None = None) -> str:
    """The ``scheme://host[:port]`` every link handed to a caller starts with.

    One rule: ``config.public_base_url`` (``PUBLIC_BASE_URL``) when it is set; otherwise
    ``request_base``, the request's own base (``req.prefix``) when answering over HTTP;
    otherwise (workers: webhooks and callbacks, which have no request) the configured bind
    address as ``http://{config.bind}``."""
    if config.public_base_url:
        return config.public_base_url
    return request_base if request_base is not None else f"http://{config.bind}"


def composition_json(comp: Composition, base: str, *,
                     queue_position: Callable[[str], int | None] | None = None) -> dict:
    """A composition as every route and webhook shows it (docs/API.md, "Composition").

    ``base`` comes from :func:`base_url`. ``queue_position`` (the uid's 1-based place in
    its RQ queue, e.g. ``functools.partial(engine.queue_position, redis)``) is called only
    while the composition is queued, and then adds ``queuePosition``; webhooks, sent once
    it ended, pass none."""
    links = f"{base}/zapier/v1/compositions/{comp.uid}"
    out = {
        "uid": comp.uid, "action": comp.action, "status": comp.status,
        "progress": comp.progress, "outputs": json.loads(comp.outputs or "[]"),
        "error": json.loads(comp.error) if comp.error else None,
        "txnReceipt": comp.receipt, "refundReceipt": comp.refund_receipt,
        "creditsUsed": comp.credits, "createdAt": iso(comp.created_at),
        "startedAt": iso(comp.started_at), "finishedAt": iso(comp.finished_at),
        "links": {"status": links, "events": f"{links}/events", "cancel": f"{links}/cancel"},
    }
    if comp.status == Composition.QUEUED and queue_position is not None:
        out["queuePosition"] = queue_position(comp.uid)
    return out
