"""The web console (docs/CONSOLE.md): server-rendered pages for a person signed in with a
password or a social login. ``routes`` is the console's part of the route table."""

from __future__ import annotations

from gateway.console import pages
from gateway.console.staticfiles import Static
from gateway.console.web import Console


def routes(deps, login_guard) -> list[tuple[str, object]]:
    console = Console(deps, login_guard)
    return [
        ("/", pages.Root(console)),
        ("/console", pages.Root(console)),
        ("/dashboard", pages.Dashboard(console)),
        ("/console/static/{name}", Static()),
        ("/console/login", pages.Login(console)),
        ("/console/login/{provider_name}", pages.SocialStart(console)),
        ("/console/social/return", pages.SocialReturn(console)),
        ("/console/logout", pages.Logout(console)),
        ("/console/sessions", pages.Sessions(console)),
        ("/console/ledger", pages.Ledger(console)),
        ("/console/receipts/{txn_receipt}", pages.Receipt(console)),
        ("/console/keys", pages.Keys(console)),
        ("/console/keys/{key_id}/revoke", pages.KeyRevoke(console)),
        ("/console/webhooks", pages.Webhooks(console)),
        ("/console/webhooks/{endpoint_id}", pages.WebhookItem(console)),
        ("/console/webhooks/{endpoint_id}/edit", pages.WebhookEdit(console)),
        ("/console/webhooks/{endpoint_id}/rotate", pages.WebhookRotate(console)),
        ("/console/webhooks/{endpoint_id}/delete", pages.WebhookDelete(console)),
        ("/console/webhooks/{endpoint_id}/test", pages.WebhookTest(console)),
        ("/console/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver",
         pages.WebhookRedeliver(console)),
        ("/console/compositions", pages.Compositions(console)),
        ("/console/compositions/{uid}", pages.Composition(console)),
        ("/console/runs", pages.Runs(console)),
        ("/console/runs/{run_id}", pages.Run(console)),
        ("/console/content", pages.Content(console)),
        ("/console/content/{content_id}/download", pages.ContentDownload(console)),
        ("/console/credits", pages.Credits(console)),
        ("/console/credits/return", pages.CreditsReturn(console)),
    ]
