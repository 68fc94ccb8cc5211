"""Queries over posts for ``/list-posts``: the seed's filters, page numbers and cursors."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re

from peewee import fn

from core.errors import InvalidRequest
from jobs.models import Post
from metering import cursors

# RFC 3339 as the OpenAPI document says (a date-time, or a date): Python's fromisoformat
# alone would also take "20240101" or "2024-01-01 10:00", and an empty value means nothing.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}"
                      r"(?:[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:[Zz]|[+-]\d{2}:\d{2}))?$")


def _date(name, raw):
    if raw is None:
        return None
    try:
        if not _RFC3339.match(raw):
            raise ValueError(raw)
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 date",
                             details=[{"field": name, "problem": "ISO 8601 date or time"}]
                             ) from None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _tags(raw):
    if raw is None:
        return []
    values = raw if isinstance(raw, list) else [raw]
    return [t.strip() for v in values for t in v.split(",") if t.strip()]


@dataclasses.dataclass(frozen=True)
class Filters:
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    content_type: str | None = None
    post_format: str | None = None
    search: str | None = None
    tags: tuple = ()
    label: str | None = None

    @classmethod
    def from_params(cls, params):
        def given(name):
            value = params.get(name)
            if isinstance(value, list):
                raise InvalidRequest(f"{name} may be given once",
                                     details=[{"field": name, "problem": "given twice"}])
            return value

        def one(name):  # a blank text filter is no filter
            return given(name) or None

        # a blank date is not a date: given() keeps it, so _date refuses it
        return cls(_date("startDate", given("startDate")), _date("endDate", given("endDate")),
                   one("contentType"), one("postFormat"), one("searchText"),
                   tuple(_tags(params.get("customTags"))), one("contentLabel"))


@dataclasses.dataclass(frozen=True)
class Page:
    items: list
    total: int
    total_pages: int
    current_page: int
    next_cursor: str | None


def _query(account_id, f: Filters):
    q = Post.select().where(Post.account == account_id)
    if f.start:
        q = q.where(Post.created_at >= f.start)
    if f.end:
        q = q.where(Post.created_at <= f.end)
    if f.content_type:
        q = q.where(Post.content_type == f.content_type)
    if f.post_format:
        q = q.where(Post.post_format == f.post_format)
    if f.label:
        q = q.where(Post.content_label == f.label)
    if f.search:
        q = q.where(fn.LOWER(Post.search_text).contains(f.search.lower()))
    for tag in f.tags:  # tags are stored as a JSON list of strings
        q = q.where(Post.custom_tags.contains('"' + tag.replace('"', "") + '"'))
    return q


def list_posts(account_id, filters: Filters, *, limit, page_no=1, cursor=None) -> Page:
    base = _query(account_id, filters)
    total = base.count()
    q = base.order_by(Post.id.desc())
    # A cursor (n8n, Make) continues after the last item seen; a page number (the seed) skips.
    if cursor:
        q = q.where(Post.id < cursors.decode("p", cursor))
    else:
        q = q.offset((page_no - 1) * limit)
    rows = list(q.limit(limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, total, max(1, math.ceil(total / limit)), page_no,
                cursors.encode("p", rows[-1].id) if more and rows else None)
