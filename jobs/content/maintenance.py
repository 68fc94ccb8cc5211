"""The content library's periodic housekeeping, run by every worker's reaper thread at most
once a ``INTERVAL_S``: analytics counts flushed from Redis into the database, expired
resumable uploads removed, and staging files a crashed request left behind swept.

Each step is safe to run in several workers at once (the flush moves counts atomically,
the reaps delete what is already past its time)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

INTERVAL_S = 60.0
STAGING_MAX_AGE_S = 6 * 3600  # longer than any upload may take to stream and inspect

_last = {"at": None}


def sweep_staging(config, now_s: float | None = None) -> int:
    """Remove staging files older than ``STAGING_MAX_AGE_S`` (a request that died between
    staging and its end); returns how many."""
    folder = Path(config.data_dir) / "staging"
    if not folder.is_dir():
        return 0
    now_s = time.time() if now_s is None else now_s
    removed = 0
    for entry in os.scandir(folder):
        try:
            if entry.is_file() and now_s - entry.stat().st_mtime > STAGING_MAX_AGE_S:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:  # another worker swept it first
            continue
    return removed


def tick(rt, *, force=False) -> None:
    """One round of housekeeping, unless one ran in this process under ``INTERVAL_S`` ago."""
    now = rt.clock.monotonic()
    if not force and _last["at"] is not None and now - _last["at"] < INTERVAL_S:
        return
    _last["at"] = now
    for name, step in _steps(rt):
        try:
            step()
        except Exception:  # one failing step must not stop the others (or the reaper)
            log.exception("content housekeeping: %s failed", name)


def _steps(rt):
    from jobs.content.resumable import Uploads
    from metering.db import connection

    def reap_uploads():
        with connection():
            Uploads(rt.config, rt.redis, rt.clock, rt.ids).reap_expired()

    def flush_analytics():
        from jobs.content.stats import Analytics

        with connection():
            Analytics(rt.redis, rt.config.redis_prefix, rt.clock).flush()

    yield "staging", lambda: sweep_staging(rt.config)
    yield "expired uploads", reap_uploads
    yield "analytics", flush_analytics
