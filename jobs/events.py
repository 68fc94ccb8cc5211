"""Progress events on Redis pub/sub: workers publish, waiting POSTs and SSE streams listen.

Events may be lost (Redis holds only what may be lost); listeners always re-read the
composition row, so an event is a wake-up call, never the source of truth.
"""

from __future__ import annotations

import contextlib
import json


def channel(prefix: str, uid: str) -> str:
    return f"{prefix}:comp:{uid}"


def publish(redis, prefix: str, uid: str, status: str, progress: int) -> None:
    with contextlib.suppress(Exception):  # progress is best effort; the row has the truth
        redis.publish(channel(prefix, uid), json.dumps({"status": status, "progress": progress}))


class Listener:
    """Subscribe before reading state, so no change between the read and the wait is missed."""

    def __init__(self, redis, prefix: str, uid: str):
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel(prefix, uid))
        # The furthest progress a running event announced: workers write the row's
        # progress at most every 0.25 s but publish every step.
        self.progress = 0

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for an event; True when one arrived."""
        message = self.pubsub.get_message(timeout=max(0.0, timeout))
        if message is None:
            return False
        with contextlib.suppress(Exception):  # a malformed event is only a wake-up call
            event = json.loads(message["data"])
            if event.get("status") == "running":
                self.progress = max(self.progress, int(event["progress"]))
        return True

    def close(self):
        with contextlib.suppress(Exception):
            self.pubsub.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
