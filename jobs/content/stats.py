"""Views and downloads of content items per UTC day (seed 002's ``/analytics``).

A served item costs one Redis ``HINCRBY`` (pipelined with its ``EXPIRE``), never a database
write, so a download never waits on PostgreSQL; Redis trouble is logged and the count lost,
never the download. ``flush`` moves the counts into ``ContentDaily`` rows: each day's hash
is first renamed to a key of its own (atomic: counts arriving meanwhile go to a new hash),
then added into the rows in one transaction, then deleted, so no count is added twice by
two flushers and none is lost between them. It runs before every ``/analytics`` answer and
in the workers' housekeeping.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets

from peewee import EXCLUDED
from redis.exceptions import ResponseError

from jobs.content.models import ContentDaily, ContentItem
from metering.db import write_transaction

log = logging.getLogger(__name__)
KINDS = ("views", "downloads")
KEEP_S = 7 * 24 * 3600  # unflushed counts older than this are dropped by Redis
ADOPT_AFTER_S = 300  # a claimed hash this old was left by a flusher that died


class Analytics:
    def __init__(self, redis, prefix, clock):
        self.redis, self.prefix, self.clock = redis, prefix, clock

    def _key(self, day) -> str:
        return f"{self.prefix}:content:stats:{day}"

    def count(self, content_id, kind) -> None:
        key = self._key(self.clock.now().date().isoformat())
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hincrby(key, f"{content_id}|{kind}", 1)
            pipe.expire(key, KEEP_S)
            pipe.execute()
        except Exception:  # analytics never fail or slow a download
            log.warning("content analytics: count of %s lost", content_id, exc_info=True)

    def flush(self) -> int:
        """Move every counted day into the database; returns the counts moved."""
        moved = 0
        pattern = f"{self.prefix}:content:stats:*"
        for raw in list(self.redis.scan_iter(match=pattern, count=100)):
            key = raw.decode() if isinstance(raw, bytes) else raw
            if ":flushing:" in key and not self._orphaned(key):
                continue  # another flusher is storing it right now
            taken = self._claim(key)
            if taken is not None:
                moved += self._store(taken)
        return moved

    def _claim(self, key) -> str | None:
        """Rename ``key`` to a name of this flusher's own, stamped with the time, so only
        one flusher stores a hash; None when another took it first."""
        base = key.split(":flushing:")[0]
        stamp = self.clock.now().strftime("%Y%m%dT%H%M%S")
        taken = f"{base}:flushing:{stamp}:{secrets.token_hex(6)}"
        try:
            self.redis.rename(key, taken)
        except ResponseError:  # "no such key": another flusher took it first
            log.debug("content analytics: %s already taken", key)
            return None
        return taken

    def _orphaned(self, key) -> bool:
        """A claimed hash older than ``ADOPT_AFTER_S``: its flusher died before storing it
        (a live one stores within seconds), so it is taken over instead of lost."""
        try:
            stamp = dt.datetime.strptime(key.split(":flushing:")[1][:15], "%Y%m%dT%H%M%S")
        except (IndexError, ValueError):
            return True  # not of our making: take it
        age = (self.clock.now().replace(tzinfo=None) - stamp).total_seconds()
        return age > ADOPT_AFTER_S

    def _store(self, taken) -> int:
        day = dt.date.fromisoformat(taken.split(":content:stats:")[1][:10])
        counts = {}
        for field, value in self.redis.hgetall(taken).items():
            field = field.decode() if isinstance(field, bytes) else field
            content_id, _, kind = field.rpartition("|")
            if kind in KINDS:
                counts.setdefault(content_id, {"views": 0, "downloads": 0})[kind] += int(value)
        alive = {i for (i,) in ContentItem.select(ContentItem.id)
                 .where(ContentItem.id.in_(list(counts))).tuples()} if counts else set()
        rows = [{"content": cid, "day": day, **c} for cid, c in counts.items() if cid in alive]
        if rows:
            with write_transaction():
                (ContentDaily.insert_many(rows)
                 .on_conflict(conflict_target=[ContentDaily.content, ContentDaily.day],
                              update={ContentDaily.views: ContentDaily.views + EXCLUDED.views,
                                      ContentDaily.downloads:
                                          ContentDaily.downloads + EXCLUDED.downloads})
                 .execute())
        self.redis.delete(taken)
        return sum(c["views"] + c["downloads"] for c in counts.values())

    @staticmethod
    def report(account_id, since: dt.date, content_id=None) -> dict:
        """Per item (owned by ``account_id``) and per day since ``since``, with totals."""
        query = (ContentDaily.select(ContentDaily.content, ContentDaily.day,
                                     ContentDaily.views, ContentDaily.downloads)
                 .join(ContentItem)
                 .where(ContentItem.account == account_id, ContentDaily.day >= since)
                 .order_by(ContentDaily.content, ContentDaily.day))
        if content_id:
            query = query.where(ContentDaily.content == content_id)
        items = {}
        for content, day, views, downloads in query.tuples():
            item = items.setdefault(content, {"contentId": content, "views": 0,
                                              "downloads": 0, "days": []})
            item["views"] += views
            item["downloads"] += downloads
            item["days"].append({"date": str(day)[:10], "views": views,
                                 "downloads": downloads})
        out = sorted(items.values(), key=lambda i: (-(i["views"] + i["downloads"]),
                                                   i["contentId"]))
        return {"items": out, "totals": {"views": sum(i["views"] for i in out),
                                         "downloads": sum(i["downloads"] for i in out)}}
