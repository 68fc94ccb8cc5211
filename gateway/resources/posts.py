"""``GET /list-posts`` (seed 004): the caller's compiled posts, newest first, filtered."""

from __future__ import annotations

import json

from core.timefmt import iso
from gateway.envelope import ok
from gateway.resources.common import MAX_LIMIT, MAX_PAGE_NO, int_param, next_url
from jobs import posts

QUERY = [{"name": n, "in": "query", "required": False, "schema": s} for n, s in (
    ("startDate", {"type": "string", "anyOf": [{"format": "date-time"}, {"format": "date"}]}),
    ("endDate", {"type": "string", "anyOf": [{"format": "date-time"}, {"format": "date"}]}),
    ("contentType", {"type": "string"}), ("postFormat", {"type": "string"}),
    ("searchText", {"type": "string"}),
    ("customTags", {"type": "array", "items": {"type": "string"}}),
    ("contentLabel", {"type": "string"}),
    ("pageNo", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_NO}),
    ("itemsPerPage", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    ("cursor", {"type": "string"}))]


def post_view(post) -> dict:
    return {"urn": post.urn, "id": post.urn, "cardPoster": post.card_poster,
            "deliverable": json.loads(post.deliverable), "platform": post.platform,
            "postFormat": post.post_format, "contentType": post.content_type,
            "customTags": json.loads(post.custom_tags), "contentLabel": post.content_label,
            "compositionUid": post.composition_id,
            "createdAt": iso(post.created_at), "updatedAt": iso(post.updated_at)}


class ListPosts:
    """Compiled posts: seed filters, ``pageNo``/``itemsPerPage`` or ``limit``/``cursor``."""

    scope = "actions:read"

    openapi_tag = "Posts"
    openapi_query = {"get": QUERY}

    def __init__(self, config):
        self.config = config

    def on_get(self, req, resp):
        filters = posts.Filters.from_params(req.params)
        size = int_param(req, "itemsPerPage", int_param(req, "limit", 50, 1, MAX_LIMIT),
                         1, MAX_LIMIT)
        page_no = int_param(req, "pageNo", 1, 1, MAX_PAGE_NO)
        page = posts.list_posts(req.context.caller.account_id, filters, limit=size,
                                page_no=page_no, cursor=req.get_param("cursor"))
        ok(req, resp, {
            "catalogName": "Compiled Posts", "itemList": [post_view(p) for p in page.items],
            "items": [post_view(p) for p in page.items],
            "totalPages": page.total_pages, "currentPage": page.current_page,
            "totalItems": page.total, "next": next_url(req, self.config, page.next_cursor),
            "meta": {}})
