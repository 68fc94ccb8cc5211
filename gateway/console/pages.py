"""The console's pages (docs/CONSOLE.md). Each resource reads the form or the query, calls
the same domain functions as the API routes (every lookup scoped to the signed-in
account, so another account's id is 404) and renders one template."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from urllib.parse import quote

from core.errors import Conflict, Forbidden, InvalidRequest, NotFound, RateLimited
from core.timefmt import iso
from gateway.console.chart import usage_chart
from gateway.console.web import (
    HOME,
    LOGIN_COOKIE,
    LOGIN_PATH,
    SESSION_COOKIE,
    SOCIAL_COOKIE,
    Page,
    field,
    fields,
    local_path,
    redirect,
)
from gateway.middleware import client_address
from gateway.resources.common import base_url, ledger_view, send_content
from jobs import engine, views
from jobs import webhook_endpoints as we
from jobs.content.models import ContentItem
from jobs.models import Composition as CompositionRow
from jobs.workflows import runs
from metering import cursors, ledger, usage
from oauth import keys, provider
from oauth.accounts import authenticate_password, get_account
from oauth.console_sessions import session_hash
from oauth.social import SPECS, LoginRefused

PAGE_SIZE = 25
LOGIN_FORM = "console-login"  # the "client" the sign-in form's CSRF token is bound to


def _cursor(req):
    return req.get_param("cursor") or None


# --- signing in and out ----------------------------------------------------------------


class Root(Page):
    """``/`` and ``/console``: to the dashboard, or to the sign-in page."""

    public = True

    def on_get(self, req, resp):
        self.serve(req, resp, lambda req, resp, view:
                   redirect(resp, HOME if view.account else LOGIN_PATH))


class Login(Page):
    """Username and password, or a social provider; the form's CSRF token is bound to a
    nonce cookie (there is no session yet). Attempts go through /auth/token's guard."""

    public = True

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def on_post(self, req, resp):
        self.serve(req, resp, self.submit)

    def _form(self, req, resp, view, status=200, error=None, username=""):
        nonce = req.cookies.get(LOGIN_COOKIE) or provider.csrf_nonce()
        self.console.set_cookie(req, resp, LOGIN_COOKIE, nonce, provider.CSRF_TTL,
                                path=LOGIN_PATH)
        providers = [(name, SPECS[name].label)
                     for name in sorted(self.deps.social_login.settings.providers)]
        self.render(resp, view, "login.html", status=status, error=error, username=username,
                    login_token=self.console.login_csrf.token(nonce, LOGIN_FORM),
                    next=local_path(req.get_param("next")) or "", providers=providers)

    def show(self, req, resp, view):
        if view.account is not None:
            redirect(resp, HOME)
            return
        error = req.get_param("error_description") if req.get_param("error") else None
        self._form(req, resp, view, error=error and error[:200])

    def submit(self, req, resp, view):
        form = view.form
        username, password = field(form, "username"), form.get("password")
        if not self.console.login_csrf.check(req.cookies.get(LOGIN_COOKIE), LOGIN_FORM,
                                             form.get("csrf_token")):
            self._form(req, resp, view, 403, "This form expired or did not come from this "
                                             "page. Please sign in again.", username)
            return
        if not username or not isinstance(password, str) or not password \
                or len(username) > 64 or len(password) > 256:
            self._form(req, resp, view, 400, "Enter your username and password.", username)
            return
        try:
            self.console.guard.login(req, username)
        except RateLimited as exc:
            resp.set_header("Retry-After", str(int(exc.retry_after or 60)))
            self._form(req, resp, view, 429, "Too many sign-in attempts. Please wait and "
                                             "try again.", username)
            return
        account = authenticate_password(username, password)
        if account is None:
            self._form(req, resp, view, 401, "Wrong username or password.", username)
            return
        if view.session_id:  # a new session id on every sign-in (no fixation)
            self.console.sessions.delete(view.session_id, view.account_id)
        self.console.sign_in(req, resp, account, "password")
        self.console.clear_cookie(req, resp, LOGIN_COOKIE, path=LOGIN_PATH)
        redirect(resp, local_path(field(form, "next")) or HOME)


class Logout(Page):
    """End the session (POST with the CSRF token; a link could be forged)."""

    def on_post(self, req, resp):
        self.serve(req, resp, self.submit)

    def submit(self, req, resp, view):
        self.console.sessions.delete(view.session_id, view.account_id)
        self.console.clear_cookie(req, resp, SESSION_COOKIE)
        redirect(resp, LOGIN_PATH)


class Sessions(Page):
    """The account's signed-in console sessions (how and when each signed in, until when
    it lasts, which one is this browser), and signing out all the others at once."""

    nav = "sessions"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def on_post(self, req, resp):
        self.serve(req, resp, self.end_others)

    def show(self, req, resp, view, ended=None):
        this = session_hash(view.session_id)
        rows = [{"id": digest[:12], "method": session.method, "current": digest == this,
                 "created": iso(dt.datetime.fromtimestamp(session.created, dt.UTC)),
                 "expires": iso(dt.datetime.fromtimestamp(session.expires, dt.UTC))}
                for digest, session in self.console.sessions.list_for(view.account_id)]
        self.render(resp, view, "sessions.html", sessions=rows, ended=ended)

    def end_others(self, req, resp, view):
        ended = self.console.sessions.end_others(view.account_id, view.session_id)
        self.show(req, resp, view, ended=ended)


def _bind(nonce: str) -> str:
    return hashlib.sha256(b"console-social:" + nonce.encode()).hexdigest()[:32]


class SocialStart(Page):
    """Start a social login whose result comes back to the console (not to a front-end):
    the existing flow with a local return path, bound to this browser by a cookie."""

    public = True

    def on_get(self, req, resp, provider_name):
        self.serve(req, resp, self.start, provider_name)

    def start(self, req, resp, view, name):
        login = self.deps.social_login
        found = login.settings.providers.get(name) if name in SPECS else None
        if found is None:
            raise NotFound("This sign-in provider is not configured")
        address = client_address(req, self.deps.config.trusted_proxies)
        decision = self.deps.limiter.check_hourly("social:" + address,
                                                  login.settings.start_per_hour)
        if decision is not None and not decision.allowed:
            raise RateLimited("Too many sign-ins started; please wait",
                              retry_after=decision.retry_after)
        nonce = secrets.token_urlsafe(24)
        self.console.set_cookie(req, resp, SOCIAL_COOKIE, nonce, login.settings.state_ttl_s,
                                path="/console/social")
        callback = f"{base_url(req, self.deps.config)}/auth/{found.name}/callback"
        redirect(resp, login.start(found, f"/console/social/return?bind={_bind(nonce)}",
                                   callback, local=True), status="302 Found")


class SocialReturn(Page):
    """Where the social callback sends the browser: redeem the one-time login code of
    ``b`` and sign in. A return not started in this browser signs no one in."""

    public = True

    def on_get(self, req, resp):
        self.serve(req, resp, self.finish)

    def finish(self, req, resp, view):
        login = self.deps.social_login
        nonce = req.cookies.get(SOCIAL_COOKIE) or ""
        bind = req.get_param("bind") or ""
        if not nonce or not hmac.compare_digest(_bind(nonce).encode(), bind.encode()):
            raise Forbidden("This sign-in was not started in this browser; please start "
                            "again")
        self.console.clear_cookie(req, resp, SOCIAL_COOKIE, path="/console/social")
        if req.get_param("error"):
            redirect(resp, LOGIN_PATH + "?" + "&".join(
                f"{k}={quote(req.get_param(k) or '', safe='')}"
                for k in ("error", "error_description")))
            return
        grant = _login_code_grant(login, req.get_param("b"))
        if grant is None:
            raise InvalidRequest("The sign-in expired or was already used; please start "
                                 "again")
        account = get_account(grant["account_id"])
        if account.disabled:
            raise Forbidden("This account is disabled")
        if view.session_id:
            self.console.sessions.delete(view.session_id, view.account_id)
        self.console.sign_in(req, resp, account, grant["provider"])
        redirect(resp, HOME)


def _login_code_grant(login, b):
    import base64
    import json

    if not isinstance(b, str) or not b or len(b) > 4096:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)))
        code = payload["loginCode"]
    except (ValueError, KeyError, TypeError):
        return None
    try:
        return login.redeem_login_code(code)
    except LoginRefused:
        return None


# --- the dashboard, ledger and receipts --------------------------------------------------


class Dashboard(Page):
    """Balance, credits used per day by action (30 days, an SVG chart), recent ledger."""

    nav = "dashboard"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def show(self, req, resp, view):
        now = self.deps.clock.now()
        since = now - dt.timedelta(days=30)
        daily = usage.usage_by_day(view.account_id, since)
        self.render(resp, view, "dashboard.html",
                    balance=ledger.balance(view.account_id),
                    chart=usage_chart(daily, now.date()),
                    actions=usage.usage_by_action(view.account_id, since),
                    recent=[ledger_view(e) for e in
                            ledger.transactions(view.account_id, limit=5).items])


class Ledger(Page):
    """The ledger, newest first, a page at a time; each row links to its receipt."""

    nav = "ledger"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def show(self, req, resp, view):
        page = ledger.transactions(view.account_id, limit=PAGE_SIZE, cursor=_cursor(req))
        self.render(resp, view, "ledger.html", balance=ledger.balance(view.account_id),
                    entries=[ledger_view(e) for e in page.items], next=page.next_cursor)


class Receipt(Page):
    nav = "ledger"

    def on_get(self, req, resp, txn_receipt):
        self.serve(req, resp, self.show, txn_receipt)

    def show(self, req, resp, view, txn_receipt):
        entry = ledger_view(ledger.receipt_for(view.account_id, txn_receipt))
        self.render(resp, view, "receipt.html", entry=entry)


# --- API keys ------------------------------------------------------------------------------


class Keys(Page):
    """List, create (the secret is on the answer to the POST only) and revoke keys."""

    nav = "keys"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def on_post(self, req, resp):
        self.serve(req, resp, self.create)

    def show(self, req, resp, view, status=200, **context):
        rows = keys.list_keys(view.account_id)
        self.render(resp, view, "keys.html", status=status, keys=rows, iso=iso,
                    revoked=req.get_param("revoked"), **context)

    def create(self, req, resp, view):
        try:
            row, secret = keys.create_key(view.account_id, field(view.form, "description"))
        except InvalidRequest as exc:
            self.show(req, resp, view, 400, error=exc.message)
            return
        self.show(req, resp, view, 201, created=row, secret=secret)


class KeyRevoke(Page):
    nav = "keys"

    def on_post(self, req, resp, key_id):
        self.serve(req, resp, self.revoke, key_id)

    def revoke(self, req, resp, view, key_id):
        keys.revoke_key(view.account_id, key_id, self.deps.clock,
                        generations=self.deps.generations)
        redirect(resp, f"/console/keys?revoked={quote(key_id, safe='')}")


# Seconds between reloads of a page whose work is under way: a composition or run while
# it is queued or running, a webhook endpoint's page while the attempt just asked for is
# not logged yet. The console has no script, so the page reloads itself (<meta
# http-equiv="refresh">) until the work ends, then stays put.
REFRESH_S = 3


# --- webhook endpoints ----------------------------------------------------------------------


# what the rotate form offers: how long the replaced secret keeps signing as well
OVERLAP_CHOICES = [(0, "stop at once"), (3600, "1 hour"), (86400, "24 hours"),
                   (7 * 86400, "7 days")]


class Webhooks(Page):
    """The endpoints; creating one shows its signing secret on that answer only."""

    nav = "webhooks"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def on_post(self, req, resp):
        self.serve(req, resp, self.create)

    def show(self, req, resp, view, status=200, **context):
        rows, _ = we.list_endpoints(view.account_id, limit=we.MAX_ENDPOINTS_PER_ACCOUNT)
        self.render(resp, view, "webhooks.html", status=status,
                    endpoints=[we.endpoint_json(e) for e in rows],
                    event_types=we.EVENT_TYPES, deleted=req.get_param("deleted"), **context)

    def create(self, req, resp, view):
        body = {"url": field(view.form, "url"), "events": fields(view.form, "events") or ["*"],
                "description": field(view.form, "description")}
        try:
            endpoint, secret = we.create_endpoint(view.account_id, body,
                                                  self.deps.actions.policy, self.deps.clock)
        except (InvalidRequest, Conflict) as exc:
            self.show(req, resp, view, 400 if isinstance(exc, InvalidRequest) else 409,
                      error=exc.message, url=body["url"])
            return
        self.show(req, resp, view, 201, created=we.endpoint_json(endpoint, secret=secret))


class WebhookItem(Page):
    """One endpoint and its delivery log (every attempt: outcome, response code)."""

    nav = "webhooks"

    def on_get(self, req, resp, endpoint_id):
        self.serve(req, resp, self.show, endpoint_id)

    def show(self, req, resp, view, endpoint_id):
        endpoint_page(self, req, resp, view, endpoint_id)


def endpoint_page(page, req, resp, view, endpoint_id, status=200, **context) -> None:
    """The endpoint page, also the answer of an edit refused (400) or a rotation (the new
    secret shown this once)."""
    endpoint = we.get_endpoint(view.account_id, endpoint_id)
    rows, after = we.list_attempts(view.account_id, endpoint_id, limit=50,
                                   cursor=_cursor(req))
    sent, redelivered = req.get_param("sent"), req.get_param("redelivered")
    page.render(resp, view, "webhook.html", status=status,
                endpoint=we.endpoint_json(endpoint), event_types=we.EVENT_TYPES,
                overlaps=OVERLAP_CHOICES,
                attempts=[we.attempt_json(a, a.delivery.msg_id) for a in rows],
                next=after, sent=sent, redelivered=redelivered, saved=req.get_param("saved"),
                refresh=_awaiting_attempt(view.account_id, endpoint_id, sent, redelivered,
                                          req.get_param("seen")),
                **context)


def _awaiting_attempt(account_id, endpoint_id, sent, redelivered, seen) -> int | None:
    """``REFRESH_S`` while the delivery the page was sent back for (a test event just sent,
    a redelivery just asked for) has no new attempt in its log yet, so the outcome shows
    without a reload; then the page stays put (it holds the edit form). ``seen``: how many
    attempts the redelivered delivery had when it was asked for."""
    if sent:
        delivery_id, before = sent, 0
    elif redelivered and seen and seen.isdigit() and len(seen) <= 6:
        delivery_id, before = redelivered, int(seen)
    else:
        return None
    try:
        _, attempts = we.get_delivery(account_id, endpoint_id, delivery_id)
    except NotFound:
        return None
    return REFRESH_S if len(attempts) <= before else None


class _WebhookAction(Page):
    nav = "webhooks"

    def back(self, resp, endpoint_id, **params):
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        redirect(resp, f"/console/webhooks/{quote(endpoint_id, safe='')}"
                       + (f"?{query}" if query else ""))


class WebhookEdit(_WebhookAction):
    """Change an endpoint's URL, description, event filter or switch: the same checks as
    ``PATCH /zapier/v1/webhook-endpoints/{id}`` (a refusal shows the page again, changes
    nothing)."""

    def on_post(self, req, resp, endpoint_id):
        self.serve(req, resp, self.edit, endpoint_id)

    def edit(self, req, resp, view, endpoint_id):
        state = field(view.form, "state")
        body = {"url": field(view.form, "url"), "description": field(view.form, "description"),
                "events": fields(view.form, "events") or ["*"],
                # anything but the two offered states is refused by the API's own check
                "enabled": {"enabled": True, "disabled": False}.get(state, state)}
        try:
            we.update_endpoint(view.account_id, endpoint_id, body, self.deps.actions.policy,
                               self.deps.clock)
        except InvalidRequest as exc:
            endpoint_page(self, req, resp, view, endpoint_id, 400, error=exc.message)
            return
        self.back(resp, endpoint_id, saved="1")


class WebhookRotate(_WebhookAction):
    """A new signing secret, shown on this answer only; the old one keeps signing for the
    chosen overlap (Stripe's "roll secret"), so receivers can switch without a gap."""

    def on_post(self, req, resp, endpoint_id):
        self.serve(req, resp, self.rotate, endpoint_id)

    def rotate(self, req, resp, view, endpoint_id):
        raw = field(view.form, "overlap_seconds")
        overlap = int(raw) if raw.isdigit() and len(raw) < 10 else raw  # the check refuses
        try:
            _, secret = we.rotate_secret(view.account_id, endpoint_id, overlap, self.deps.clock)
        except InvalidRequest as exc:
            endpoint_page(self, req, resp, view, endpoint_id, 400, error=exc.message)
            return
        endpoint_page(self, req, resp, view, endpoint_id, rotated=secret)


class WebhookDelete(_WebhookAction):
    def on_post(self, req, resp, endpoint_id):
        self.serve(req, resp, self.delete, endpoint_id)

    def delete(self, req, resp, view, endpoint_id):
        we.delete_endpoint(view.account_id, endpoint_id)
        redirect(resp, f"/console/webhooks?deleted={quote(endpoint_id, safe='')}")


class WebhookTest(_WebhookAction):
    def on_post(self, req, resp, endpoint_id):
        self.serve(req, resp, self.send, endpoint_id)

    def send(self, req, resp, view, endpoint_id):
        msg_id = we.send_test(view.account_id, endpoint_id, self.deps.redis, self.deps.config)
        self.back(resp, endpoint_id, sent=msg_id)


class WebhookRedeliver(_WebhookAction):
    def on_post(self, req, resp, endpoint_id, delivery_id):
        self.serve(req, resp, self.send, endpoint_id, delivery_id)

    def send(self, req, resp, view, endpoint_id, delivery_id):
        # counted before the attempt is queued, so a worker that logs it at once is seen
        _, seen = we.redeliver(view.account_id, endpoint_id, delivery_id, self.deps.redis,
                               self.deps.config)
        self.back(resp, endpoint_id, redelivered=delivery_id, seen=str(seen))


# --- compositions, project runs, the content library ---------------------------------------




def _refresh(comp) -> int | None:
    return None if comp.status in CompositionRow.FINAL else REFRESH_S


class Compositions(Page):
    nav = "compositions"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def show(self, req, resp, view):
        rows, after = engine.list_compositions(view.account_id, limit=PAGE_SIZE,
                                               cursor=_cursor(req))
        base = base_url(req, self.deps.config)
        self.render(resp, view, "compositions.html",
                    items=[views.composition_json(c, base) for c in rows], next=after)


class Composition(Page):
    nav = "compositions"

    def on_get(self, req, resp, uid):
        self.serve(req, resp, self.show, uid)

    def show(self, req, resp, view, uid):
        comp = engine.get(view.account_id, uid)
        self.render(resp, view, "composition.html", refresh=_refresh(comp),
                    item=views.composition_json(comp, base_url(req, self.deps.config)))


class Runs(Page):
    nav = "runs"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def show(self, req, resp, view):
        page = req.get_param_as_int("page", min_value=1, max_value=100000) or 1
        rows, total = runs.list_runs(view.account_id, None, page, PAGE_SIZE)
        base = base_url(req, self.deps.config)
        self.render(resp, view, "runs.html", items=[runs.run_json(c, r, n, base)
                                                    for c, r, n in rows],
                    page=page, more=page * PAGE_SIZE < total, total=total)


class Run(Page):
    nav = "runs"

    def on_get(self, req, resp, run_id):
        self.serve(req, resp, self.show, run_id)

    def show(self, req, resp, view, run_id):
        comp, run, nodes = runs.get_run(view.account_id, run_id)
        self.render(resp, view, "run.html", refresh=_refresh(comp),
                    item=runs.run_json(comp, run, nodes, base_url(req, self.deps.config)))


class Content(Page):
    """The content library: items owned or shared, newest first, with download links."""

    nav = "content"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def show(self, req, resp, view):
        library = self.deps.library
        rows, after = cursors.page(library.visible(view.account_id), tag="content",
                                   created=ContentItem.created_at, ident=ContentItem.id,
                                   limit=PAGE_SIZE, cursor=_cursor(req))
        self.render(resp, view, "content.html", next=after,
                    items=[library.item_json(i, view.account_id, "") for i in rows])


class ContentDownload(Page):
    """An item's bytes for the signed-in viewer (the API's download, with the cookie)."""

    nav = "content"

    def on_get(self, req, resp, content_id):
        self.serve(req, resp, self.send, content_id)

    def send(self, req, resp, view, content_id):
        item = self.deps.library.get_for(view.account_id, content_id)
        if self.deps.analytics is not None:
            self.deps.analytics.count(item.id, "downloads")
        # never rendered as a page of this origin, whatever the file claims to be
        resp.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        resp.set_header("X-Frame-Options", "DENY")
        send_content(req, resp, self.deps.library, item)


# --- buying credits ------------------------------------------------------------------------


class Credits(Page):
    """The credit packs; POST starts PayPal's checkout (303 to its approval page), whose
    return lands on ``CreditsReturn``."""

    nav = "credits"

    def on_get(self, req, resp):
        self.serve(req, resp, self.show)

    def on_post(self, req, resp):
        self.serve(req, resp, self.buy)

    def show(self, req, resp, view, status=200, **context):
        purchases = self.deps.payments
        enabled = purchases is not None and purchases.provider is not None
        self.render(resp, view, "credits.html", status=status, enabled=enabled,
                    packs=purchases.packs() if purchases is not None else [],
                    balance=ledger.balance(view.account_id),
                    cancelled=req.get_param("cancelled") == "1", **context)

    def buy(self, req, resp, view):
        purchases = self.deps.payments
        if purchases is None or purchases.provider is None:
            raise Forbidden("Buying credits is not enabled on this gateway")
        credits, _, rest = field(view.form, "pack").partition(":")
        amount, _, currency = rest.partition(":")
        base = base_url(req, self.deps.config)
        try:
            url = purchases.create(view.account_id, amount, currency,
                                   int(credits) if credits.isdigit() else None,
                                   return_url=f"{base}/console/credits/return",
                                   cancel_url=f"{base}/console/credits?cancelled=1")
        except InvalidRequest as exc:
            self.show(req, resp, view, 400, error=exc.message)
            return
        redirect(resp, url)


class CreditsReturn(Page):
    """PayPal sends the payer back here: capture the payment and credit it, once
    (``paymentId`` for v1, ``token`` for Orders v2; ``PayerID``)."""

    nav = "credits"

    def on_get(self, req, resp):
        self.serve(req, resp, self.finish)

    def finish(self, req, resp, view):
        payment_id = req.get_param("paymentId") or req.get_param("token")
        result = self.deps.payments.execute(view.account_id, payment_id,
                                            req.get_param("PayerID"))
        self.render(resp, view, "credits_done.html", result=result,
                    balance=ledger.balance(view.account_id))
