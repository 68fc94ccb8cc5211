"""The project store: saved node graphs, who may see them, their likes and saves, and the
trending order. Every lookup is scoped by the caller's account and the project's
visibility: a private project is ``NotFound`` to anyone but its owner (its existence is
not revealed), an unlisted one is readable by id, a public one is also listed.

The graph arrives already normalised and validated (``actions.workflow.graph``): this
layer stores and finds, it does not understand nodes.
"""

from __future__ import annotations

import datetime as dt
import json
import math

from core.errors import Forbidden, NotFound
from core.ids import new_id
from core.timefmt import iso
from jobs.workflows.models import Project, ProjectInteraction
from metering.db import write_transaction
from metering.ledger import for_update
from metering.models import Account

LIKE, SAVE, RUN = "like", "save", "run"
KINDS = (LIKE, SAVE)  # what a caller may toggle; runs are recorded by jobs.workflows.runs
COUNTERS = {LIKE: Project.likes, SAVE: Project.saves}

# Trending: each interaction in the window counts weight x 0.5^(age_days / half-life).
WEIGHTS = {LIKE: 3, SAVE: 4, RUN: 1}
TRENDING_WINDOW_DAYS = 30
HALF_LIFE_DAYS = 7

JSON_FIELDS = ("data", "node_data", "connection_data", "manual_data")
TEXT_FIELDS = ("name", "description", "visibility")


def _encode(fields: dict, graph: dict | None) -> dict:
    """Model column values from the caller's fields (JSON ones as text)."""
    out = {}
    for name in TEXT_FIELDS:
        if name in fields:
            out[name] = fields[name]
    for name in JSON_FIELDS:
        if name in fields:
            out[name] = json.dumps(fields[name])
    if graph is not None:
        out["graph"] = json.dumps(graph)
    return out


def create(account_id, fields: dict, graph: dict, *, now, ids=new_id) -> Project:
    """Save a new project owned by ``account_id`` (``fields``: name, description, data,
    visibility, node_data, connection_data, manual_data as sent)."""
    values = {"visibility": Project.PRIVATE, **_encode(fields, graph)}
    return Project.create(id=ids("prj", 12), account=account_id, created_at=now,
                          updated_at=now, **values)


def get_visible(account_id, project_id) -> Project:
    """The project if the caller may read it (owner, or not private), else NotFound."""
    project = Project.get_or_none(Project.id == project_id) if isinstance(
        project_id, str) else None
    if project is None or (project.visibility == Project.PRIVATE
                           and project.account_id != account_id):
        raise NotFound("No such project")
    return project


def get_owned(account_id, project_id) -> Project:
    """The caller's own project: NotFound when it cannot see it, Forbidden when it can
    see it (unlisted or public) but does not own it."""
    project = get_visible(account_id, project_id)
    if project.account_id != account_id:
        raise Forbidden("Only the project's owner may change it")
    return project


def update(account_id, project_id, fields: dict, graph: dict | None, *, now) -> Project:
    """Change the owner's project; ``graph`` is the re-normalised graph when any of its
    seed fields changed (None: unchanged)."""
    project = get_owned(account_id, project_id)
    values = _encode(fields, graph)
    values["updated_at"] = now
    Project.update(values).where(Project.id == project.id).execute()
    return Project.get_by_id(project.id)


def delete(account_id, project_id) -> None:
    """Remove the owner's project with its likes and saves (its past runs stay: a run
    names the project by id and keeps its own graph snapshot)."""
    project = get_owned(account_id, project_id)
    Project.delete().where(Project.id == project.id).execute()


def decoded(project: Project, name: str):
    """One of the project's JSON columns as a value."""
    try:
        return json.loads(getattr(project, name) or "null")
    except ValueError:
        return None


def list_mine(account_id, page: int, limit: int) -> tuple[list[Project], int]:
    """The caller's projects, newest first: ``(rows of the page, total)``."""
    query = Project.select().where(Project.account == account_id)
    total = query.count()
    rows = list(query.order_by(Project.created_at.desc(), Project.id.desc())
                .paginate(page, limit))
    return rows, total


def trending_scores(now, project_ids=None) -> dict[str, float]:
    """``{project id: score}`` over interactions of the last 30 days, each weighted (like
    3, save 4, run 1) and halved every 7 days of age."""
    since = now - dt.timedelta(days=TRENDING_WINDOW_DAYS)
    query = (ProjectInteraction.select(ProjectInteraction.project, ProjectInteraction.kind,
                                       ProjectInteraction.created_at)
             .where(ProjectInteraction.created_at >= since))
    if project_ids is not None:
        query = query.where(ProjectInteraction.project.in_(project_ids))
    scores: dict[str, float] = {}
    for project_id, kind, created in query.tuples():
        age_days = max(0.0, (now - created).total_seconds() / 86400)
        weight = WEIGHTS.get(kind, 0) * math.pow(0.5, age_days / HALF_LIFE_DAYS)
        scores[project_id] = scores.get(project_id, 0.0) + weight
    return scores


def list_trending(page: int, limit: int, *, now) -> tuple[list[Project], int]:
    """Public projects by trending score, highest first; equal scores newest first.

    Only projects with activity in the window have a score, so only they are scored and
    sorted here (the work follows recent activity, not the catalogue's size); every other
    public project scores 0 and is paged by the database, newest first, after them."""
    total = Project.select().where(Project.visibility == Project.PUBLIC).count()
    scores = trending_scores(now)
    active = list(Project.select(Project.id, Project.created_at).where(
        (Project.visibility == Project.PUBLIC) & Project.id.in_(list(scores))).tuples()) \
        if scores else []
    active = [r for r in active if scores.get(r[0], 0.0) > 0]
    active.sort(key=lambda r: (scores[r[0]], r[1], r[0]), reverse=True)
    start, stop = (page - 1) * limit, page * limit
    ids = [r[0] for r in active[start:stop]]
    if len(ids) < limit:
        rest = (Project.select(Project.id).where(
            (Project.visibility == Project.PUBLIC) & Project.id.not_in([r[0] for r in active]))
            .order_by(Project.created_at.desc(), Project.id.desc())
            .offset(max(0, start - len(active))).limit(limit - len(ids)))
        ids += [r.id for r in rest]
    rows = {p.id: p for p in Project.select().where(Project.id.in_(ids))} if ids else {}
    return [rows[i] for i in ids if i in rows], total


def interact(account_id, project_id, kind, active=None, *, now) -> bool:
    """Like or save (``kind``) a project the caller can see; ``active`` None toggles.
    Returns whether it is now active. The project row is locked so two concurrent
    toggles by one account never count twice."""
    with write_transaction():
        project = get_visible(account_id, project_id)
        for_update(Project.select(Project.id).where(Project.id == project.id)).first()
        mine = ProjectInteraction.select().where(
            (ProjectInteraction.project == project.id)
            & (ProjectInteraction.account == account_id) & (ProjectInteraction.kind == kind))
        present = mine.exists()
        wanted = (not present) if active is None else bool(active)
        if wanted and not present:
            ProjectInteraction.create(project=project.id, account=account_id, kind=kind,
                                      created_at=now)
        elif present and not wanted:
            ProjectInteraction.delete().where(ProjectInteraction.id.in_(
                [r.id for r in mine])).execute()
        count = ProjectInteraction.select().where(
            (ProjectInteraction.project == project.id)
            & (ProjectInteraction.kind == kind)).count()
        Project.update({COUNTERS[kind]: count}).where(Project.id == project.id).execute()
    return wanted


def _flags(account_id, project_ids) -> dict[str, set]:
    """``{project id: {"like", "save"}}``: what the caller has done to each project."""
    if not project_ids:
        return {}
    out: dict[str, set] = {}
    rows = (ProjectInteraction.select(ProjectInteraction.project, ProjectInteraction.kind)
            .where((ProjectInteraction.account == account_id)
                   & ProjectInteraction.project.in_(project_ids)
                   & ProjectInteraction.kind.in_(KINDS)).tuples())
    for project_id, kind in rows:
        out.setdefault(project_id, set()).add(kind)
    return out


def views(account_id, projects: list[Project]) -> list[dict]:
    """The project view of each row, as the caller sees it (liked, saved, is_owner)."""
    ids = [p.id for p in projects]
    flags = _flags(account_id, ids)
    owners = dict(Account.select(Account.id, Account.username)
                  .where(Account.id.in_([p.account_id for p in projects])).tuples()) \
        if projects else {}
    return [_view(p, account_id, flags.get(p.id, set()), owners.get(p.account_id))
            for p in projects]


def view(account_id, project: Project) -> dict:
    return views(account_id, [project])[0]


def _view(project, account_id, flags, owner) -> dict:
    graph = decoded(project, "graph") or {}
    return {
        "id": project.id, "project_id": project.id, "name": project.name, "title": project.name,
        "description": project.description, "data": decoded(project, "data"),
        "visibility": project.visibility, "node_data": decoded(project, "node_data"),
        "connection_data": decoded(project, "connection_data"),
        "manual_data": decoded(project, "manual_data"), "graph": graph,
        "variables": graph.get("variables", []), "owner": owner,
        "is_owner": project.account_id == account_id,
        "likes": project.likes, "saves": project.saves, "runs": project.runs,
        "liked": LIKE in flags, "saved": SAVE in flags,
        "created_at": iso(project.created_at), "updated_at": iso(project.updated_at),
    }


def list_templates(account_id, names=None, limit=500) -> list[Project]:
    """The caller's own projects and every public one (seed 003's workflow templates),
    newest first; ``names`` (project ids) narrows the list."""
    query = Project.select().where((Project.account == account_id)
                                   | (Project.visibility == Project.PUBLIC))
    if names is not None:
        query = query.where(Project.id.in_(list(names)))
    return list(query.order_by(Project.created_at.desc(), Project.id.desc()).limit(limit))
