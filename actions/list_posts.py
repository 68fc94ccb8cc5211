"""``list-posts`` (seed 004): the caller's compiled posts, newest first, filtered.

Seed 004 lists it with a price (0), so it is an action like the others: in the catalogue,
priced by the operator (``PUT /admin/prices/list-posts``) and debited with a receipt when
that price is above 0. It is reached two ways that share this module: the seed's
``GET /list-posts`` (query parameters, parsed by the route and passed here as the private
``_query``) and ``POST /zapier/v1/list-posts`` (the same names as a JSON body). Either way
``next`` is the full URL of the next page of ``GET /list-posts`` with the same filters, so
n8n's "response contains next URL" and Make's pagination follow it as they are.
"""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import urlencode

from actions.registry import Action, ActionContext, Field
from core.timefmt import iso
from jobs import posts
from metering.cursors import MAX_LIMIT, MAX_PAGE_NO

ROUTE = "/list-posts"
DEFAULT_SIZE = 50


@dataclasses.dataclass(frozen=True)
class Query:
    """One page request: the filters, the page (a size and a number or a cursor) and the
    parameters ``next`` repeats (the query as given, less its cursor)."""

    filters: posts.Filters
    size: int = DEFAULT_SIZE
    page_no: int = 1
    cursor: str | None = None
    params: tuple = ()  # (name, value or list of values), in the order given


def query_of(data: dict) -> Query:
    """A validated ``POST /zapier/v1/list-posts`` body as a page request."""
    text = {k: data[k] for k in ("startDate", "endDate", "contentType", "postFormat",
                                 "searchText", "contentLabel") if data.get(k) is not None}
    if data.get("customTags"):
        text["customTags"] = list(data["customTags"])
    filters = posts.Filters.from_params(text)
    size = data.get("itemsPerPage") or data.get("limit") or DEFAULT_SIZE
    params = dict(text)
    for name in ("itemsPerPage", "limit", "pageNo"):
        if data.get(name) is not None:
            params[name] = str(data[name])
    return Query(filters, size, data.get("pageNo") or 1, data.get("cursor") or None,
                 tuple(params.items()))


def post_view(post) -> dict:
    return {"urn": post.urn, "id": post.urn, "cardPoster": post.card_poster,
            "deliverable": json.loads(post.deliverable), "platform": post.platform,
            "postFormat": post.post_format, "contentType": post.content_type,
            "customTags": json.loads(post.custom_tags), "contentLabel": post.content_label,
            "compositionUid": post.composition_id,
            "createdAt": iso(post.created_at), "updatedAt": iso(post.updated_at)}


def next_url(base_url: str, query: Query, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    params = [(k, v) for k, v in query.params if k != "cursor"] + [("cursor", cursor)]
    return f"{base_url}{ROUTE}?{urlencode(params, doseq=True)}"


def perform(ctx: ActionContext, data: dict) -> dict:
    query = data.get("_query") or query_of(data)
    page = posts.list_posts(ctx.account_id, query.filters, limit=query.size,
                            page_no=query.page_no, cursor=query.cursor)
    items = [post_view(p) for p in page.items]
    return {"catalogName": "Compiled Posts", "itemList": items, "items": items,
            "totalPages": page.total_pages, "currentPage": page.current_page,
            "totalItems": page.total, "next": next_url(ctx.base_url, query, page.next_cursor),
            "meta": {}}


_DATE = "ISO 8601 (RFC 3339) date or date-time, e.g. 2025-01-14 or 2025-01-14T10:30:00Z."

ACTION = Action(
    name="list-posts",
    title="List posts",
    description="The compiled posts of your finished actions, newest first, with the seed's "
                "filters and paging (also GET /list-posts). Free unless the operator prices "
                "it.",
    price=0,
    fields=(
        Field("startDate", max_length=64, help="Posts created at or after this time. " + _DATE),
        Field("endDate", max_length=64, help="Posts created at or before this time. " + _DATE),
        Field("contentType", max_length=64, help="Only this content type, e.g. "
                                                 "product-listing."),
        Field("postFormat", max_length=64, help="Only this post format, e.g. square."),
        Field("searchText", max_length=255, help="Text the post's content contains "
                                                 "(case-insensitive)."),
        Field("customTags", type="array", help="Only posts carrying every one of these tags."),
        Field("contentLabel", max_length=255, help="Only posts with this content label."),
        Field("pageNo", type="integer", minimum=1, maximum=MAX_PAGE_NO,
              help="Page number (seed paging; default 1)."),
        Field("itemsPerPage", type="integer", minimum=1, maximum=MAX_LIMIT,
              help="Items per page (default 50)."),
        Field("limit", type="integer", minimum=1, maximum=MAX_LIMIT,
              help="Items per page, as every list takes it (itemsPerPage wins)."),
        Field("cursor", max_length=512, help="From the previous page's next URL."),
    ),
    perform=perform,
    pure=True,  # a read: a price above 0 joins a group commit after the query
)
