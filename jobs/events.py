"""Progress events on Redis pub/sub: workers publish, waiting POSTs and SSE streams listen.

Events may be lost (Redis holds only what may be lost); listeners always re-read the
composition row, so an event is a wake-up call, never the source of truth. A listener
whose Redis is down or stops answering raises ``Unavailable``: the waiting request then
answers the row as it is (PostgreSQL holds the truth) instead of failing.
"""

from __future__ import annotations

import contextlib
import json

from redis.exceptions import RedisError


class Unavailable(Exception):
    """Redis refused or dropped the subscription; no more events will come."""


def channel(prefix: str, uid: str) -> str:
    return f"{prefix}:comp:{uid}"


def publish(redis, prefix: str, uid: str, status: str, progress: int) -> None:
    with contextlib.suppress(Exception):  # progress is best effort; the row has the truth
        redis.publish(channel(prefix, uid), json.dumps({"status": status, "progress": progress}))


class Listener:
    """Subscribe before reading state, so no change between the read and the wait is missed."""

    def __init__(self, redis, prefix: str, uid: str):
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            self.pubsub.subscribe(channel(prefix, uid))
        except (RedisError, OSError) as exc:
            self.close()
            raise Unavailable(type(exc).__name__) from exc
        # The furthest progress a running event announced: workers write the row's
        # progress at most every 0.25 s but publish every step.
        self.progress = 0

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for an event; True when one arrived."""
        try:
            message = self.pubsub.get_message(timeout=max(0.0, timeout))
        except (RedisError, OSError) as exc:
            raise Unavailable(type(exc).__name__) from exc
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
