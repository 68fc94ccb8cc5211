"""``upload``: store an image or video in the caller's content library, priced per started
MiB of the stored file (docs/CONTENT.md).

Three doors lead here: ``POST /upload`` (multipart, seed 002), ``POST /zapier/v1/upload``
with ``file_url`` (automation platforms pass files as URLs), and a completed resumable
(tus) upload. The multipart and tus doors stage the file themselves and hand it in as the
private input ``_staged``; the URL door stages it in the precheck. Either way the file is
inspected and priced before the charge, so the estimate equals the debit, and
``Library.commit`` runs inside the debit's transaction: a quota refusal there rolls the
debit back with the rows, so a refused upload is never charged.
"""

from __future__ import annotations

from actions.registry import Action, ActionContext, Field
from core.errors import InvalidRequest
from jobs.content import library as lib


def _library(service):
    if service.library is None:
        raise InvalidRequest("Uploads are not available on this gateway")
    return service.library


def precheck(data: dict, service, account_id) -> dict:
    """Everything that can refuse an upload before its charge: the item it adds a version
    to (404 when the caller cannot see it, 403 when only read), the file itself (fetched
    if it came as a URL, then typed, size-checked and cleaned) and the owner's quota."""
    library = _library(service)
    lib.check_description(data.get("description"))
    lib.parse_tags(data.get("tags"))
    owner = account_id
    if data.get("content_id"):
        owner = library.get_for(account_id, data["content_id"], lib.WRITE).account_id
    staged = data.get("_staged")
    if staged is None:
        if not data.get("file_url"):
            raise InvalidRequest("file_url: is required",
                                 details=[{"field": "file_url", "problem": "is required"}])
        staged = lib.stage_url(service.config, data["file_url"], policy=service.policy,
                               filename=data.get("filename") or "",
                               max_bytes=library.upload_limit(account_id))
        data["_staged"] = staged
    library.check_quota(owner, staged)  # fast refusal; commit re-checks under the lock
    return data


def pricing(data: dict, base: int, service) -> int:
    return base * lib.Library.started_mib(data["_staged"].size)


def perform(ctx: ActionContext, data: dict) -> dict:
    staged = data["_staged"]
    item = ctx.library.commit(ctx.account_id, staged, content_id=data.get("content_id"),
                              description=data.get("description"), tags=data.get("tags"),
                              receipt=ctx.receipt)
    return ctx.library.item_json(item, ctx.account_id)


ACTION = Action(
    name="upload",
    title="Upload File",
    description="Stores an image or video in your content library from a URL (Zapier, Make "
                "and n8n pass files as URLs), or as a new version of an existing item. "
                "Costs 1 credit per started MiB of the stored file.",
    price=1,
    fields=(
        Field("file_url", format="uri", max_length=2048, pattern="^[Hh][Tt][Tt][Pp][Ss]?://",
              label="File URL",
              help="Public http(s) URL of the image or video (JPEG, PNG, WebP, GIF, MP4, "
                   "MOV, WebM). Required unless the file is sent as multipart to /upload."),
        Field("filename", max_length=255, help="File name to keep (default: from the URL)."),
        Field("description", max_length=lib.MAX_DESCRIPTION,
              help="What the content is; searchable later."),
        Field("tags", max_length=2000, help="Comma-separated tags, e.g. summer,launch."),
        Field("content_id", max_length=40, label="Content ID",
              help="Add the file as a new version of this content item (yours, or shared "
                   "with you with write permission)."),
    ),
    perform=perform,
    precheck=precheck,
    precheck_account=True,
    pricing=pricing,
    pricing_doc="1 credit (the action's price) per started MiB of the stored file",
)
