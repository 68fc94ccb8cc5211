"""Collaborations (seed 002): an owner shares one content item with another account, to
read, or to read and write (add versions, edit the description and tags). A collaborator
never deletes or re-shares; the owner's quota pays for every version's bytes. Anything of
another account that the caller is not part of is 404, as if it did not exist.
"""

from __future__ import annotations

from core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from core.timefmt import iso
from jobs.content.library import OWNER
from jobs.content.models import Collaboration
from metering.models import Account

PERMISSIONS = (Collaboration.READ, Collaboration.WRITE)


def _check_permissions(value) -> str:
    if value not in PERMISSIONS:
        raise InvalidRequest("permissions must be read or write",
                             details=[{"field": "permissions", "problem": "read or write"}])
    return value


def create(library, owner_id, content_id, collaborator_id, permissions, *, now, ids):
    """Share ``content_id`` (the caller's own; a collaborator may not re-share: 403)."""
    item = library.get_for(owner_id, content_id, OWNER)
    _check_permissions(permissions)
    if collaborator_id == owner_id:
        raise InvalidRequest("You cannot collaborate with yourself",
                             details=[{"field": "collaboratorId", "problem": "is you"}])
    if not Account.select().where(Account.id == str(collaborator_id)[:40]).exists():
        raise NotFound("No such collaborator")
    if Collaboration.select().where(Collaboration.content == item.id,
                                    Collaboration.collaborator == collaborator_id).exists():
        raise Conflict("This content is already shared with this collaborator; change the "
                       "permissions with PUT /collaboration/{collaborationId}")
    return Collaboration.create(id=ids("collab", 12), content=item.id, owner=owner_id,
                                collaborator=collaborator_id, permissions=permissions,
                                created_at=now, updated_at=now)


def _mine(account_id, collab_id) -> Collaboration:
    row = Collaboration.get_or_none(Collaboration.id == str(collab_id)[:40])
    if row is None or account_id not in (row.owner_id, row.collaborator_id):
        raise NotFound("No such collaboration")
    return row


def update(account_id, collab_id, permissions, *, now) -> Collaboration:
    row = _mine(account_id, collab_id)
    if row.owner_id != account_id:
        raise Forbidden("Only the content's owner changes a collaboration")
    row.permissions = _check_permissions(permissions)
    row.updated_at = now
    row.save()
    return row


def delete(account_id, collab_id) -> Collaboration:
    """The owner ends a share, or the collaborator leaves it."""
    row = _mine(account_id, collab_id)
    row.delete_instance()
    return row


def visible(account_id, content_id=None):
    query = Collaboration.select().where((Collaboration.owner == account_id)
                                         | (Collaboration.collaborator == account_id))
    if content_id:
        query = query.where(Collaboration.content == content_id)
    return query


def view(row, viewer_id) -> dict:
    return {"id": row.id, "collaborationId": row.id, "contentId": row.content_id,
            "ownerId": row.owner_id,
            "collaboratorId": row.collaborator_id, "permissions": row.permissions,
            "role": "owner" if row.owner_id == viewer_id else "collaborator",
            "createdAt": iso(row.created_at), "updatedAt": iso(row.updated_at)}
