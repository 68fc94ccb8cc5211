"""``estimate-cost``: free; what an action would cost and whether the balance covers it.

With ``input`` (the body the action would get), an action priced by its input (the
generation actions, story videos) is quoted for exactly that input, validated as the call
would be: the figure is the debit the call would make."""

from __future__ import annotations

from actions.registry import Action, ActionContext, Field


def perform(ctx: ActionContext, data: dict) -> dict:
    target = ctx.registry.get(data["action"])
    if data.get("input") is not None and ctx.quote is not None:
        credits = ctx.quote(target.name, data["input"])
    else:
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
        Field("input", type="object",
              help="The body the action would be called with: quoted for that input (the "
                   "debit the call would make); without it, the action's base price."),
    ),
    perform=perform,
)
