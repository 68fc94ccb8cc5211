"""``echo``: a 1-credit synchronous action that returns what it was sent.

It exists so operators and integrators can prove the whole paid path (auth, rate limit,
debit, receipt, idempotency, envelope) without spending on a real generation.
"""

from __future__ import annotations

from actions.registry import Action, ActionContext, Field


def perform(ctx: ActionContext, data: dict) -> dict:
    message = data["message"]
    return {"message": message, "length": len(message),
            "uppercase": message.upper() if data.get("uppercase") else None}


ACTION = Action(
    name="echo",
    title="Echo",
    description="Returns the message it is sent. Costs 1 credit; use it to test a connection "
                "end to end, including billing.",
    price=1,
    fields=(
        Field("message", required=True, max_length=2000, help="Any text, returned unchanged."),
        Field("uppercase", type="boolean", default=False,
              help="Also return the message in upper case."),
    ),
    perform=perform,
    pure=True,  # nothing but its answer: the debit joins a group commit after perform
)
