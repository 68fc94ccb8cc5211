"""``echo-async``: the asynchronous twin of ``echo`` (1 credit).

It returns its message after an optional delay, reporting progress as it goes, so an
integrator can exercise the whole async path (202, polling, SSE, callback_url, cancel,
refunds) without paying for a real generation. The benchmark uses it as the trivial job.
"""

from __future__ import annotations

import json
import time

from actions.registry import Action, Field
from jobs.context import JobContext

STEPS = 10


def perform(ctx: JobContext, data: dict) -> dict:
    delay = data.get("delay_ms", 0) / 1000
    for step in range(1, STEPS + 1):
        if delay:
            time.sleep(delay / STEPS)
            ctx.progress(step * 100 // (STEPS + 1))
    body = json.dumps({"message": data["message"]}).encode()
    url = ctx.save("echo.json", body)
    return {"outputs": [{"type": "json", "kind": "echo", "url": url, "format": "json",
                         "width": None, "height": None}]}


ACTION = Action(
    name="echo-async",
    title="Echo (asynchronous)",
    description="Returns the message as a JSON output after an optional delay, as an "
                "asynchronous composition. Costs 1 credit; refunded if cancelled.",
    price=1,
    mode="async",
    ttl_s=60,
    queue="cpu",
    fields=(
        Field("message", required=True, max_length=2000, help="Any text, returned unchanged."),
        Field("delay_ms", type="integer", default=0, minimum=0, maximum=30000,
              help="How long the job takes, in milliseconds (progress is reported in tenths)."),
    ),
    perform=perform,
)
