"""The content library's tables: blobs (bytes, once per account), content items and their
versions, collaborations, daily view/download counts, and resumable (tus) uploads.

A ``Blob`` row is the account's claim on one stored object ``<account>/<sha256>``: the
quota counts blob bytes, so identical bytes uploaded twice cost storage once. A
``ContentItem`` is what callers see (``cnt_...``); every upload to it adds a
``ContentVersion`` naming a blob, and the item mirrors its newest version. Deleting an item
deletes its versions; a blob no version references any more is deleted with it.
"""

from __future__ import annotations

from peewee import (
    BigAutoField,
    BigIntegerField,
    CharField,
    CompositeKey,
    DateField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    TextField,
)

from core.clock import utcnow
from metering.models import Account, BaseModel


class Blob(BaseModel):
    account = ForeignKeyField(Account, on_delete="CASCADE")
    sha256 = CharField(max_length=64)
    size = BigIntegerField()
    content_type = CharField(max_length=100)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        primary_key = CompositeKey("account", "sha256")

    @property
    def key(self) -> str:
        return f"{self.account_id}/{self.sha256}"


class ContentItem(BaseModel):
    UPLOAD, OUTPUT = "upload", "output"

    id = CharField(primary_key=True, max_length=40)  # cnt_...
    account = ForeignKeyField(Account, on_delete="CASCADE")  # the owner: pays the quota
    kind = CharField(max_length=16)  # image | video
    filename = CharField(max_length=255, default="")
    content_type = CharField(max_length=100)
    description = TextField(default="")
    tags = TextField(default="[]")  # JSON list of strings
    custom_metadata = TextField(default="{}")  # seed 003's customMetadata (JSON object)
    source = CharField(max_length=16, default=UPLOAD)  # upload | output
    composition_uid = CharField(max_length=40, null=True, index=True)  # outputs
    version = IntegerField(default=1)  # the newest version's number
    sha256 = CharField(max_length=64)  # the newest version's blob
    size = BigIntegerField()
    width = IntegerField(null=True)
    height = IntegerField(null=True)
    duration = FloatField(null=True)  # seconds, videos
    created_at = DateTimeField(default=utcnow, index=True)
    updated_at = DateTimeField(default=utcnow)


class ContentVersion(BaseModel):
    id = BigAutoField()
    content = ForeignKeyField(ContentItem, on_delete="CASCADE", backref="versions")
    number = IntegerField()
    sha256 = CharField(max_length=64)
    size = BigIntegerField()
    content_type = CharField(max_length=100)
    filename = CharField(max_length=255, default="")
    width = IntegerField(null=True)
    height = IntegerField(null=True)
    duration = FloatField(null=True)
    created_by = CharField(max_length=40)  # account id of the uploader (a collaborator too)
    txn_receipt = CharField(max_length=64, null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("content", "number"), True),)


class Collaboration(BaseModel):
    READ, WRITE = "read", "write"

    id = CharField(primary_key=True, max_length=40)  # collab_...
    content = ForeignKeyField(ContentItem, on_delete="CASCADE")
    owner = ForeignKeyField(Account, on_delete="CASCADE", backref="+")
    collaborator = ForeignKeyField(Account, on_delete="CASCADE", backref="+")
    permissions = CharField(max_length=8, default=READ)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("content", "collaborator"), True),)


class ContentDaily(BaseModel):
    """Views and downloads of one item on one UTC day, flushed from Redis counters."""

    content = ForeignKeyField(ContentItem, on_delete="CASCADE")
    day = DateField()
    views = BigIntegerField(default=0)
    downloads = BigIntegerField(default=0)

    class Meta:
        primary_key = CompositeKey("content", "day")


class TusUpload(BaseModel):
    """A resumable upload (tus 1.0) in progress: its bytes so far are a file under
    ``DATA_DIR/tus/<id>``; the charge and the content item happen when it completes."""

    id = CharField(primary_key=True, max_length=40)  # tus_...
    account = ForeignKeyField(Account, on_delete="CASCADE")
    length = BigIntegerField()  # Upload-Length
    offset = BigIntegerField(default=0)
    metadata = TextField(default="{}")  # Upload-Metadata, decoded (JSON object)
    content_id = CharField(max_length=40, null=True)  # a new version of this item
    result = TextField(null=True)  # JSON: the completed upload's answer (data + meta)
    expires_at = DateTimeField(index=True)
    created_at = DateTimeField(default=utcnow)


class PlanStorage(BaseModel):
    """A rate-limit plan's upload limits (``PUT /admin/plans/{name}/storage``); a plan
    without a row, or a null field, has the deployment's ``UPLOAD_MAX_BYTES`` and
    ``STORAGE_QUOTA_BYTES``."""

    plan = CharField(primary_key=True, max_length=64)
    upload_max_bytes = BigIntegerField(null=True)
    quota_bytes = BigIntegerField(null=True)
    updated_at = DateTimeField(default=utcnow)


ALL_MODELS = [Blob, ContentItem, ContentVersion, Collaboration, ContentDaily, TusUpload]
PLAN_MODELS = [PlanStorage]
