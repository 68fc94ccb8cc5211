"""What every console page shares: the Jinja2 templates (autoescaped), the session cookie,
the CSRF check of every POST form, the security headers, and HTML error pages.

A page is a small resource (``gateway.console.pages``) whose ``on_get``/``on_post`` hands
its own method to ``Page.serve``; ``serve`` signs the visitor in from the cookie (or sends
them to the sign-in page), refuses a POST without the session's CSRF token (403, nothing
changed) and turns a domain error (``NotFound`` for another account's id...) into an HTML
page with the API's status code. See docs/CONSOLE.md.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from urllib.parse import parse_qsl, quote

import falcon
import jinja2

from core.errors import DomainError
from gateway.edge import bad_strings
from gateway.errors import STATUS
from gateway.middleware import NONE
from metering.models import Account
from oauth.console_sessions import ConsoleSession, ConsoleSessions

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "gw_console"
LOGIN_COOKIE = "gw_console_login"  # the sign-in form's CSRF nonce (no session yet)
SOCIAL_COOKIE = "gw_console_social"  # binds a social login's return to this browser
LOGIN_PATH = "/console/login"
HOME = "/dashboard"
FORM = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024

# No script anywhere, so the policy allows none; images for the content library's
# thumbnails, styles from the one stylesheet.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; object-src 'none'; "
                               "img-src 'self' data:; style-src 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}

TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(("html", "svg")),
    trim_blocks=True, lstrip_blocks=True,
)


@dataclasses.dataclass
class View:
    """Who is looking: the session and account (None on public pages when signed out),
    and the posted form (checked for CSRF before the page sees it)."""

    session_id: str | None = None
    session: ConsoleSession | None = None
    account: Account | None = None
    form: dict = dataclasses.field(default_factory=dict)

    @property
    def account_id(self) -> str:
        return self.account.id


class Console:
    """The console's shared services, built once in the route table."""

    def __init__(self, deps, guard):
        self.deps = deps
        self.config = deps.config
        self.guard = guard  # the login guard of /auth/token (per address and username)
        self.sessions = ConsoleSessions.from_config(deps.config, deps.redis, deps.clock)
        self.login_csrf = deps.oauth_server.csrf  # the consent page's HMAC form tokens

    def secure(self, req) -> bool:
        return (self.config.console_cookie_secure or req.scheme == "https"
                or self.config.public_base_url.startswith("https://"))

    def set_cookie(self, req, resp, name, value, max_age, path="/"):
        resp.set_cookie(name, value, max_age=max_age, path=path, http_only=True,
                        secure=self.secure(req), same_site="Lax")

    def clear_cookie(self, req, resp, name, path="/"):
        resp.unset_cookie(name, path=path, same_site="Lax")

    def sign_in(self, req, resp, account: Account, method: str) -> None:
        session_id, _ = self.sessions.create(account.id, method)
        self.set_cookie(req, resp, SESSION_COOKIE, session_id, self.sessions.ttl_s)

    def view(self, req) -> View:
        session_id = req.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(session_id) if session_id else None
        if session is None:
            return View()
        account = Account.get_or_none(Account.id == session.account_id)
        if account is None or account.disabled:  # disabled since: the session ends
            self.sessions.delete(session_id, session.account_id)
            return View()
        return View(session_id, session, account)


def read_form(req) -> dict:
    """A urlencoded form body as a dict; a field sent more than once is a list (only
    checkbox groups may be: a repeated ``csrf_token`` is no token). {} if unreadable."""
    if (req.content_type or "").split(";")[0].strip().lower() != FORM:
        return {}
    raw = req.bounded_stream.read(MAX_FORM_BYTES + 1)
    if len(raw) > MAX_FORM_BYTES:
        return {}
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return {}
    form: dict = {}
    for name, value in pairs:
        if name in form:
            form[name] = [*(form[name] if isinstance(form[name], list) else [form[name]]),
                          value]
        else:
            form[name] = value
    return {} if bad_strings(form) else form


def field(form: dict, name: str) -> str:
    """One text field of a form ("" when missing or sent more than once)."""
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def fields(form: dict, name: str) -> list[str]:
    """A checkbox group: every value sent for ``name``."""
    value = form.get(name, [])
    return [value] if isinstance(value, str) else list(value)


def local_path(target) -> str | None:
    """``target`` if it is a path on this site (never ``//host`` or a URL elsewhere)."""
    if isinstance(target, str) and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target and all(0x20 < ord(c) < 0x7F for c in target):
        return target
    return None


def redirect(resp, location: str, status=falcon.HTTP_303) -> None:
    resp.status = status
    resp.set_header("Location", location)
    for name, value in HEADERS.items():
        resp.set_header(name, value)


class Page:
    """A console page: HTML, the console's own sign-in (no API credential), not in the
    OpenAPI document."""

    auth = NONE  # the session cookie is checked here, not by the API's Identify
    openapi = False
    public = False  # True: shown signed out too (the sign-in page)
    nav = ""  # which navigation entry is highlighted

    def __init__(self, console: Console):
        self.console = console
        self.deps = console.deps

    def serve(self, req, resp, handler, *args) -> None:
        view = View()
        try:
            view = self.console.view(req)
            if view.account is None and not self.public:
                target = req.path + (f"?{req.query_string}" if req.query_string else "")
                redirect(resp, f"{LOGIN_PATH}?next={quote(target, safe='')}")
                return
            if req.method == "POST":
                view.form = read_form(req)
            # public pages (the sign-in form) check their own token
            if req.method == "POST" and not self.public and not \
                    self.console.sessions.csrf_ok(view.session, view.form.get("csrf_token")):
                self.error(resp, view, 403, "This form expired or did not come from this "
                                            "console. Nothing was changed; please try again.")
                return
            handler(req, resp, view, *args)
        except DomainError as exc:
            status = STATUS.get(exc.code, 500)
            if exc.retry_after:
                resp.set_header("Retry-After", str(int(exc.retry_after)))
            if status >= 500:
                log.warning("console %s: %s %s", req.path, exc.code, exc.message)
            self.error(resp, view, status, exc.message)

    def render(self, resp, view: View, template: str, status: int = 200, **context) -> None:
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = "text/html; charset=utf-8"
        for name, value in HEADERS.items():
            resp.set_header(name, value)
        resp.text = TEMPLATES.get_template(template).render(
            account=view.account, csrf=view.session.csrf if view.session else "",
            nav=self.nav, **context)

    def error(self, resp, view: View, status: int, message: str) -> None:
        self.render(resp, view, "error.html", status=status, status_code=status,
                    message=message)
