"""``health`` (seed 004): the service check as an action, priced 0.

Seed 004 lists ``/health`` with a price, so the catalogue lists it and the operator can
price it like any action. ``GET /health`` itself stays the unauthenticated plain ``OK``
that load balancers probe (CONTRACT 8) and is never charged: this is its authenticated
twin, ``POST /zapier/v1/health``, which also proves the caller's credential, rate limit
and pricing in one call (debited with a receipt only when the operator set a price).
"""

from __future__ import annotations

from actions.registry import Action, ActionContext


def perform(ctx: ActionContext, data: dict) -> dict:
    return {"status": "ok"}


ACTION = Action(
    name="health",
    title="Health check",
    description="Answers {\"status\": \"ok\"} when the service, your credential and your "
                "rate limit let a call through. Free unless the operator prices it.",
    price=0,
    fields=(),
    perform=perform,
    pure=True,
)
