"""Collaborations and analytics over the content library (seed 002; docs/CONTENT.md)."""

from __future__ import annotations

import datetime as dt
import logging

from actions.registry import check_schema
from core.errors import NotFound
from gateway.envelope import ok
from gateway.resources.common import int_param, json_body, list_params, next_url
from jobs.content import collaborations as collabs
from jobs.content.models import Collaboration
from metering import cursors
from metering.db import write_transaction

log = logging.getLogger(__name__)
ID = {"type": "string", "minLength": 1, "maxLength": 40}
PERMISSIONS = {"enum": list(collabs.PERMISSIONS), "default": "read",
               "description": "read: see and download; write: also add versions and edit "
                              "the description and tags. Never delete or re-share."}
CREATE_BODY = {"type": "object", "properties": {
    "contentId": ID, "collaboratorId": {**ID, "description": "The account to share with."},
    "permissions": PERMISSIONS, "userId": {"type": "string", "maxLength": 40}},
    "required": ["contentId", "collaboratorId"], "additionalProperties": False}
UPDATE_BODY = {"type": "object", "properties": {"permissions": PERMISSIONS,
                                                 "userId": {"type": "string", "maxLength": 40}},
               "required": ["permissions"], "additionalProperties": False}
USER_ID = {"name": "userId", "in": "query", "required": False,
           "schema": {"type": "string", "maxLength": 40},
           "description": "Seed 002 compatibility: must be your own account id if sent."}


def _own(req, value=None):
    user_id = value if value is not None else req.get_param("userId")
    if user_id not in (None, "") and user_id != req.context.caller.account_id:
        raise NotFound("No such user")


class _Base:
    openapi_tag = "Content"

    def __init__(self, deps):
        self.deps, self.config, self.library = deps, deps.config, deps.library


class CollaborationCreate(_Base):
    """Share one of your content items with another account (read or write)."""

    scope = "content:write"
    openapi_body = {"post": CREATE_BODY}

    def on_post(self, req, resp):
        body = json_body(req)
        check_schema(CREATE_BODY, body)
        _own(req, body.get("userId"))
        with write_transaction():
            row = collabs.create(self.library, req.context.caller.account_id,
                                 body["contentId"], body["collaboratorId"],
                                 body.get("permissions", "read"), now=self.deps.clock.now(),
                                 ids=self.deps.ids)
        ok(req, resp, collabs.view(row, req.context.caller.account_id), 201)


class CollaborationList(_Base):
    """Collaborations you own or take part in (`role`), newest first; `contentId` filters."""

    scope = "content:read"
    openapi_query = {"get": [USER_ID, {"name": "contentId", "in": "query", "required": False,
                                       "schema": ID},
                             {"name": "limit", "in": "query", "required": False,
                              "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                             {"name": "cursor", "in": "query", "required": False,
                              "schema": {"type": "string"}}]}

    def on_get(self, req, resp):
        _own(req)
        viewer = req.context.caller.account_id
        limit, cursor = list_params(req)
        rows, token = cursors.page(collabs.visible(viewer, req.get_param("contentId")),
                                   tag="collab", created=Collaboration.created_at,
                                   ident=Collaboration.id, limit=limit, cursor=cursor)
        ok(req, resp, {"items": [collabs.view(r, viewer) for r in rows],
                       "next": next_url(req, self.config, token)})


class CollaborationItem(_Base):
    """Change a collaboration's permissions (the owner), or end it (the owner, or the
    collaborator leaving)."""

    scope = "content:write"
    openapi_body = {"put": UPDATE_BODY}
    openapi_query = {"delete": [USER_ID]}

    def on_put(self, req, resp, collaboration_id):
        body = json_body(req)
        check_schema(UPDATE_BODY, body)
        _own(req, body.get("userId"))
        with write_transaction():
            row = collabs.update(req.context.caller.account_id, collaboration_id,
                                 body["permissions"], now=self.deps.clock.now())
        ok(req, resp, collabs.view(row, req.context.caller.account_id))

    def on_delete(self, req, resp, collaboration_id):
        _own(req)
        with write_transaction():
            row = collabs.delete(req.context.caller.account_id, collaboration_id)
        ok(req, resp, {"collaborationId": row.id, "deleted": True})


class ContentAnalytics(_Base):
    """Views and downloads of your content per item and per UTC day (seed 002); counted on
    every served item, flushed from Redis first so the answer is current."""

    scope = "content:read"
    openapi_query = {"get": [USER_ID, {"name": "contentId", "in": "query", "required": False,
                                       "schema": ID},
                             {"name": "days", "in": "query", "required": False,
                              "schema": {"type": "integer", "minimum": 1, "maximum": 365,
                                         "default": 30}}]}

    def on_get(self, req, resp):
        _own(req)
        account_id = req.context.caller.account_id
        days = int_param(req, "days", 30, 1, 365)
        content_id = req.get_param("contentId")
        if content_id:
            self.library.get_for(account_id, content_id, "owner")  # 404 / 403
        try:  # Redis away: answer what the database holds (counts flushed before)
            self.deps.analytics.flush()
        except Exception:
            log.warning("analytics: flush before the report failed", exc_info=True)
        since = self.deps.clock.now().date() - dt.timedelta(days=days - 1)
        report = self.deps.analytics.report(account_id, since, content_id)
        ok(req, resp, {"userId": account_id, "days": days, "from": since.isoformat(),
                       **report})
