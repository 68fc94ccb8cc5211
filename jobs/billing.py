"""The periodic billing job: monthly allowances and membership expiry (docs/BILLING.md).

``tick()`` is an RQ task on the ``cpu`` queue. Each run grants what is due
(``metering.billing.grant_allowances`` with the runtime's clock) and schedules the next run
``BILLING_INTERVAL_SECONDS`` later with RQ's scheduler (``enqueue_in``, as webhook retries
do). The next run's job id names its time slot, so workers that all schedule it at start
leave one job per slot, and a slot run twice still grants once: exactly-once rests on the
grants table's unique index, not on the schedule.
"""

from __future__ import annotations

import datetime as dt
import logging
import re

from rq import Queue

from jobs.queues import queue_name
from jobs.runtime import current
from metering import billing
from metering.db import connection

log = logging.getLogger(__name__)


def grant_allowances(now: dt.datetime, generations) -> int:
    """One round at ``now``: expire ended memberships (announcing the plan changes to the
    web tier's cached credentials through ``generations``), grant due allowances; the count."""
    with connection():
        return len(billing.grant_allowances(now, generations=generations))


def schedule(redis, config, clock, *, soon=False) -> str:
    """Schedule ``tick`` for the next interval slot (``soon``: the current slot, in a
    second, as a worker does when it starts); returns its job id."""
    interval = config.billing_interval_s
    slot = int(clock.time() // interval) + (0 if soon else 1)
    delay = 1.0 if soon else max(1.0, slot * interval - clock.time())
    # RQ takes only letters, digits, "_" and "-" in a job id; a prefix may hold ":"
    job_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{config.redis_prefix}-billing-{slot}")
    Queue(queue_name(config, "cpu"), connection=redis).enqueue_in(
        dt.timedelta(seconds=delay), "jobs.billing.tick", job_id=job_id, result_ttl=600)
    return job_id


def tick() -> int:
    rt = current()
    try:
        return grant_allowances(rt.clock.now(), rt.generations)
    finally:
        schedule(rt.redis, rt.config, rt.clock)
