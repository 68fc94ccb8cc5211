"""``GET /list-posts`` (seed 004): the caller's compiled posts, newest first, filtered."""

from __future__ import annotations

from actions import list_posts
from gateway.envelope import ok
from gateway.resources.common import MAX_LIMIT, MAX_PAGE_NO, base_url, int_param, mark_outcome
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


class ListPosts:
    """Compiled posts: seed filters, ``pageNo``/``itemsPerPage`` or ``limit``/``cursor``.

    The seed's route of the ``list-posts`` action (``actions/list_posts.py``): the query is
    parsed here, with the errors it always had, and run as that action, so it is priced,
    debited and answered with the same ``meta`` as ``POST /zapier/v1/list-posts``."""

    scope = "actions:read"

    openapi_tag = "Posts"
    openapi_query = {"get": QUERY}

    def __init__(self, config, service):
        self.config, self.service = config, service

    def on_get(self, req, resp):
        query = list_posts.Query(
            posts.Filters.from_params(req.params),
            int_param(req, "itemsPerPage", int_param(req, "limit", list_posts.DEFAULT_SIZE, 1,
                                                     MAX_LIMIT), 1, MAX_LIMIT),
            int_param(req, "pageNo", 1, 1, MAX_PAGE_NO), req.get_param("cursor"),
            tuple(req.params.items()))
        outcome = self.service.run(
            req.context.caller, list_posts.ACTION.name, {}, idempotency_key=None,
            request_id=req.context.request_id, method=req.method, path=req.path,
            private={"_query": query}, base_url=base_url(req, self.config))
        mark_outcome(resp, list_posts.ACTION.name, outcome)
        ok(req, resp, outcome.data, outcome.status, **outcome.meta)
