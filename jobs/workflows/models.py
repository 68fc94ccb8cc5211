"""Projects (node graphs), their likes and saves, and project runs: one row per run (its
composition holds status, money and outputs), one per node of the run, the run's event log
(SSE with ``Last-Event-ID`` replays it) and the per-account node cache."""

from __future__ import annotations

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    SmallIntegerField,
    TextField,
)

from core.clock import utcnow
from jobs.models import Composition
from metering.models import Account, BaseModel


class Project(BaseModel):
    """A saved node graph. The seed's fields are stored as sent (JSON text); ``graph`` is
    the normalised graph the engine runs (``actions.workflow.graph.normalise``)."""

    PRIVATE, UNLISTED, PUBLIC = "private", "unlisted", "public"
    VISIBILITIES = (PRIVATE, UNLISTED, PUBLIC)

    id = CharField(primary_key=True, max_length=40)  # prj_...
    account = ForeignKeyField(Account, on_delete="CASCADE")
    name = CharField(max_length=200)
    description = TextField(default="")
    data = TextField(default="{}")  # JSON: the caller's free-form data
    visibility = CharField(max_length=16, default=PRIVATE, index=True)
    node_data = TextField(default="[]")  # JSON as sent
    connection_data = TextField(default="[]")  # JSON as sent
    manual_data = TextField(default="[]")  # JSON as sent: the declared variables
    graph = TextField(default="{}")  # JSON: {"nodes": [...], "variables": [...]}
    likes = IntegerField(default=0)
    saves = IntegerField(default=0)
    runs = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "created_at"), False),)


class ProjectInteraction(BaseModel):
    """One account's like or save of a project (at most one of each kind per account);
    runs are recorded here too (kind ``run``) so trending can weigh recent activity."""

    id = BigAutoField()
    project = ForeignKeyField(Project, on_delete="CASCADE")
    account = ForeignKeyField(Account, on_delete="CASCADE")
    kind = CharField(max_length=8)  # like | save | run
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("project", "account", "kind"), False), (("project", "created_at"), False))


class ProjectRun(BaseModel):
    """A run of a project: the graph snapshot it runs, its variables and seed. Status,
    progress, money and outputs are its composition's (same id)."""

    uid = ForeignKeyField(Composition, primary_key=True, column_name="uid",
                          on_delete="CASCADE")
    account = ForeignKeyField(Account, on_delete="CASCADE")
    project = CharField(max_length=40, index=True)  # the project may be deleted later
    project_name = CharField(max_length=200, default="")
    graph = TextField()  # JSON snapshot of the normalised graph
    variables = TextField(default="{}")  # JSON: the values the run used
    seed = BigIntegerField()
    estimate = BigIntegerField(default=0)
    retry_of = CharField(max_length=40, null=True)
    settled = SmallIntegerField(default=0)  # 1 once its final event and node states are written
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "project", "created_at"), False),)


class NodeRun(BaseModel):
    """One node of one run: its plan (price, cache key, queue) and how it went."""

    PENDING, QUEUED, RUNNING, COMPLETED, CACHED, FAILED, SKIPPED, CANCELLED = (
        "pending", "queued", "running", "completed", "cached", "failed", "skipped",
        "cancelled")
    DONE = (COMPLETED, CACHED)  # its outputs are there for the nodes downstream
    FINAL = (COMPLETED, CACHED, FAILED, SKIPPED, CANCELLED)

    id = BigAutoField()
    run = ForeignKeyField(ProjectRun, on_delete="CASCADE")
    node = CharField(max_length=40)
    type = CharField(max_length=40)
    position = IntegerField()  # dependency order (topological)
    queue = CharField(max_length=64, default="cpu")
    credits = BigIntegerField(default=0)  # its line item: 0 when cached or not needed
    cache_key = CharField(max_length=64, null=True)
    status = CharField(max_length=16, default=PENDING)
    progress = SmallIntegerField(default=0)  # 0-100
    outputs = TextField(null=True)  # JSON {output name: value} (images as stored refs)
    error = TextField(null=True)  # JSON {code, message}
    worker = CharField(max_length=128, null=True)
    heartbeat_at = DateTimeField(null=True)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("run", "node"), True),)


class RunEvent(BaseModel):
    """The run's event log, in order: the SSE ``id`` is this row's id, so a stream resumed
    with ``Last-Event-ID`` replays exactly what it missed."""

    id = BigAutoField()
    run = ForeignKeyField(ProjectRun, on_delete="CASCADE")
    event = CharField(max_length=32)
    data = TextField()  # JSON
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("run", "id"), False),)


class NodeCache(BaseModel):
    """A node output an account may reuse: keyed by the node's type, inputs, model version
    and its ancestors' keys, and by the account (never shared across accounts)."""

    id = BigAutoField()
    account = ForeignKeyField(Account, on_delete="CASCADE")
    key = CharField(max_length=64)
    type = CharField(max_length=40)
    outputs = TextField()  # JSON, as NodeRun.outputs
    run = CharField(max_length=40)  # the run that made it
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("account", "key"), True),)


ALL_MODELS = [Project, ProjectInteraction, ProjectRun, NodeRun, RunEvent, NodeCache]
