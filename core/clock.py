"""The clock every business rule reads (expiry, ttl, heartbeats, idempotency windows).

Services take a ``Clock`` as an argument instead of calling ``datetime.now()`` or
``time.time()`` themselves, so a test moves time forward with ``ManualClock.advance``
instead of sleeping, and a deployment has exactly one notion of "now".
"""

from __future__ import annotations

import abc
import datetime as dt
import threading
import time

_EPOCH = dt.datetime(1970, 1, 1)


def utcnow() -> dt.datetime:
    """Naive UTC: both database backends store it the same way and it compares without
    zones. Only ``SystemClock`` and model column defaults call it."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Clock(abc.ABC):
    """Wall time as naive UTC (``now``), as epoch seconds (``time``), and a monotonic
    timer for measuring intervals (``monotonic``)."""

    @abc.abstractmethod
    def now(self) -> dt.datetime:
        """The current time, naive UTC."""

    def time(self) -> float:
        return (self.now() - _EPOCH).total_seconds()

    @abc.abstractmethod
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for intervals only."""

    def __call__(self) -> dt.datetime:
        """A clock is also the plain ``() -> datetime`` callable older call sites take."""
        return self.now()


class SystemClock(Clock):
    """The real time, optionally shifted by ``offset`` (to try an expiry window)."""

    def __init__(self, offset: dt.timedelta = dt.timedelta(0)):
        self.offset = offset

    def now(self) -> dt.datetime:
        return utcnow() + self.offset

    def time(self) -> float:
        return time.time() + self.offset.total_seconds()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock(Clock):
    """A clock that moves only when told to (tests); starts at the real time by default.

    ``monotonic`` advances with it, so interval checks see the same jump.
    """

    def __init__(self, start: dt.datetime | None = None):
        self._now = start or utcnow()
        self._mono = 0.0
        self._lock = threading.Lock()

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            self._mono += seconds


SYSTEM = SystemClock()
