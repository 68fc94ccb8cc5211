"""``estimate-cost``: free; what an action would cost and whether the balance covers it."""

from __future__ import annotations

from actions.registry import Action, ActionContext, Field


def perform(ctx: ActionContext, data: dict) -> dict:
    target = ctx.registry.get(data["action"])
    credits = ctx.price_of(target.name)
    balance = ctx.balance()
    return {"action": target.name, "credits": credits, "availableCredit": balance,
            "affordable": balance >= credits}


ACTION = Action(
    name="estimate-cost",
    title="Estimate cost",
    description="Returns the price in credits of another action and whether the current "
                "balance covers it. Free.",
    price=0,
    fields=(
        Field("action", required=True, max_length=64,
              help="Name of the action to price, as listed by GET /zapier/v1/actions."),
    ),
    perform=perform,
)
