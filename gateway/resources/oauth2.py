"""The OAuth2 authorization server's routes (/oauth/...) and the admin client registry.

The token and revocation endpoints answer plain RFC 6749 / RFC 7009 JSON (what OAuth
clients such as Zapier's parse), not the gateway's envelope. The consent page is HTML.
Bodies are read raw and parsed here (Falcon 4 does not fold form bodies into
``req.params`` unless ``auto_parse_form_urlencoded`` is on, and oauthlib wants the raw
urlencoded string anyway).
"""

from __future__ import annotations

import html
import json
import logging
from urllib.parse import parse_qsl, urlencode

import falcon
from oauthlib.oauth2.rfc6749 import errors as oauth_errors

from core.errors import InvalidRequest, ServiceUnavailable
from gateway.edge import bad_strings
from gateway.envelope import ok
from gateway.middleware import ADMIN, NONE, client_address
from gateway.resources.common import json_body
from oauth import provider
from oauth.accounts import authenticate_password
from oauth.scopes import SCOPES

log = logging.getLogger(__name__)

AUTH_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state",
               "code_challenge", "code_challenge_method")
CSRF_COOKIE = "gw_oauth_csrf"
FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {**NO_STORE, "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                "Content-Security-Policy":
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}


def _read_body(req, *, allow_json=False) -> dict[str, str]:
    """A form body (or, for the token endpoint, a JSON object) as a flat dict of strings."""
    raw = req.bounded_stream.read(req.context.max_body + 1) if req.content_length else b""
    kind = (req.content_type or "").split(";")[0].strip().lower()
    if allow_json and kind == "application/json" and raw.strip():
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        if bad_strings(data):  # NUL or unpaired surrogates (gateway.edge): malformed
            return {}
        return {k: str(v) for k, v in data.items() if isinstance(v, str | int)} \
            if isinstance(data, dict) else {}
    try:
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}
    return {} if bad_strings(form) else form


def _oauth_json(resp, status, body, headers=None):
    resp.status = falcon.code_to_http_status(status)
    resp.content_type = falcon.MEDIA_JSON
    resp.text = body if isinstance(body, str) else json.dumps(body)
    for name, value in {**NO_STORE, **(headers or {})}.items():
        if name.lower() != "content-type":
            resp.set_header(name, value)


def _limited(deps, settings, req, resp) -> bool:
    """Count a token or revocation call for the client address; answer 429 when over."""
    address = client_address(req, deps.config.trusted_proxies)
    decision = deps.limiter.check_hourly("oauth-token:" + address, settings.token_per_hour)
    if decision is None or decision.allowed:
        return False
    _oauth_json(resp, 429, {"error": "temporarily_unavailable",
                            "error_description": "Too many token requests; retry later"},
                {"Retry-After": str(decision.retry_after)})
    return True


class _OAuthEndpoint:
    """Token-style endpoints run their own transaction, so a database outage becomes a
    503 in OAuth JSON (clients retry it) and never a 4xx (which would kill the grant)."""

    auth = NONE
    uses_db = False
    openapi_tag = "OAuth2"
    openapi_idempotent = False
    openapi_media = FORM
    openapi_responses = {"post": {
        "200": {"description": "RFC 6749 token response (plain JSON, not the envelope)",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "access_token": {"type": "string"}, "token_type": {"const": "Bearer"},
                    "expires_in": {"type": "integer"}, "refresh_token": {"type": "string"},
                    "scope": {"type": "string"}}}}}},
        "400": {"description": "RFC 6749 error: invalid_request, invalid_grant (the grant "
                               "is dead), invalid_scope, unsupported_grant_type"},
        "401": {"description": "invalid_client"},
        "429": {"description": "temporarily_unavailable; see Retry-After",
                "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
        "503": {"description": "temporarily_unavailable (a backend is down); retry"}}}

    def __init__(self, deps, server: provider.Server):
        self.deps, self.server = deps, server

    def _run(self, req, resp, call):
        if _limited(self.deps, self.server.settings, req, resp):
            return
        body = urlencode(_read_body(req, allow_json=True))
        headers = {"Authorization": req.get_header("Authorization") or ""}
        headers = {k: v for k, v in headers.items() if v}
        headers["Content-Type"] = FORM
        uri = req.prefix + req.path
        try:
            out_headers, out_body, status = self.server.in_transaction(
                call, uri, "POST", body, headers)
        except ServiceUnavailable as exc:
            log.error("oauth %s: database unavailable: %s", req.path,
                      type(exc.__cause__).__name__)
            _oauth_json(resp, 503, {"error": "temporarily_unavailable",
                                    "error_description": "Try again shortly"},
                        {"Retry-After": "5"})
            return
        _oauth_json(resp, status, out_body or "{}", out_headers)


class Token(_OAuthEndpoint):
    """OAuth2 token endpoint (RFC 6749): authorization_code and refresh_token grants.

    Client authentication by HTTP Basic or client_id/client_secret in the form body.
    Answers RFC 6749 JSON, not the envelope; invalid_grant only for a dead grant."""

    openapi_body = {"post": {"type": "object", "properties": {
        "grant_type": {"enum": ["authorization_code", "refresh_token"]},
        "code": {"type": "string"}, "redirect_uri": {"type": "string"},
        "code_verifier": {"type": "string"}, "refresh_token": {"type": "string"},
        "client_id": {"type": "string"}, "client_secret": {"type": "string"}}}}

    def on_post(self, req, resp):
        self._run(req, resp, lambda uri, method, body, headers:
                  self.server.create_token_response(uri, method, body, headers))


class Revoke(_OAuthEndpoint):
    """OAuth2 token revocation (RFC 7009): an access or refresh token; always 200 for a
    token that is unknown or already dead. Revoking a refresh token ends the whole grant."""

    openapi_body = {"post": {"type": "object", "required": ["token"], "properties": {
        "token": {"type": "string"},
        "token_type_hint": {"enum": ["access_token", "refresh_token"]}}}}

    def on_post(self, req, resp):
        self._run(req, resp, lambda uri, method, body, headers:
                  self.server.create_revocation_response(uri, method, body, headers))


class Authorize:
    """OAuth2 authorization endpoint: the sign-in and consent page (HTML).

    GET shows the form; POST signs the user in, checks the CSRF token and redirects back
    to the client's registered redirect URI with a one-time code (or access_denied)."""

    auth = NONE
    openapi_tag = "OAuth2"
    openapi_idempotent = False
    openapi_media = FORM
    openapi_query = {"get": [{"name": n, "in": "query", "required": n in (
        "response_type", "client_id", "code_challenge", "code_challenge_method"),
        "schema": {"type": "string"}} for n in AUTH_PARAMS]}
    openapi_responses = {m: {
        "200": {"description": "The sign-in and consent page", "content": {"text/html": {}}},
        "302": {"description": "Back to the client's redirect URI with code and state, or "
                               "with error (access_denied, invalid_request, invalid_scope)"},
        "400": {"description": "Unknown client or unregistered redirect URI (HTML page)"},
        "403": {"description": "Missing or invalid CSRF token (the form is shown again)"}}
        for m in ("get", "post")}

    def __init__(self, deps, server: provider.Server):
        self.deps, self.server = deps, server
        self.settings = server.settings
        self.csrf = server.csrf

    def on_get(self, req, resp):
        params = {k: req.get_param(k) for k in AUTH_PARAMS if req.get_param(k) is not None}
        validated = self._validate(req, resp, params)
        if validated is None:
            return
        nonce = req.cookies.get(CSRF_COOKIE) or provider.csrf_nonce()
        self._set_cookie(req, resp, nonce)
        self._render(resp, params, validated[0], nonce)

    def on_post(self, req, resp):
        form = _read_body(req)
        params = {k: form[k] for k in AUTH_PARAMS if k in form}
        validated = self._validate(req, resp, params)
        if validated is None:
            return
        scopes, _ = validated
        nonce = req.cookies.get(CSRF_COOKIE)
        if not self.csrf.check(nonce, params.get("client_id"), form.get("csrf_token")):
            nonce = provider.csrf_nonce()
            self._set_cookie(req, resp, nonce)
            self._render(resp, params, scopes, nonce, status=403,
                         error="This form expired or did not come from this page. "
                               "Please sign in again.")
            return
        if form.get("decision") == "deny":
            self._redirect(resp, oauth_errors.AccessDeniedError(
                state=params.get("state")).in_uri(self._redirect_uri(params)))
            return
        address = client_address(req, self.deps.config.trusted_proxies)
        decision = self.deps.limiter.check_hourly("oauth-login:" + address,
                                                  self.settings.login_per_hour)
        if decision is not None and not decision.allowed:
            resp.set_header("Retry-After", str(decision.retry_after))
            self._render(resp, params, scopes, nonce, status=429,
                         error="Too many sign-in attempts. Please wait and try again.")
            return
        account = authenticate_password(form.get("username"), form.get("password"))
        if account is None:
            self._render(resp, params, scopes, nonce, status=401,
                         error="Wrong username or password.", username=form.get("username"))
            return
        headers, _, _ = self.server.create_authorization_response(
            self._uri(req, params), "GET", scopes=scopes, credentials={"user": account.id})
        self._redirect(resp, headers["Location"])

    # helpers

    def _uri(self, req, params):
        return req.prefix + req.path + "?" + urlencode(params)

    def _redirect_uri(self, params):
        return params.get("redirect_uri") or self.server.validator.get_default_redirect_uri(
            params.get("client_id"), None)

    def _validate(self, req, resp, params):
        """oauthlib's checks; fatal ones (client, redirect URI) are shown on the page and
        never redirected, the others go back to the (validated) redirect URI."""
        try:
            return self.server.validate_authorization_request(self._uri(req, params), "GET")
        except oauth_errors.FatalClientError as exc:
            self._error_page(resp, exc.description or exc.error)
        except oauth_errors.OAuth2Error as exc:
            if exc.redirect_uri:
                self._redirect(resp, exc.in_uri(exc.redirect_uri))
            else:
                self._error_page(resp, exc.description or exc.error)
        return None

    def _set_cookie(self, req, resp, nonce):
        resp.set_cookie(CSRF_COOKIE, nonce, path="/oauth", http_only=True,
                        max_age=provider.CSRF_TTL,
                        secure=req.scheme == "https", same_site="Lax")

    def _redirect(self, resp, location):
        resp.status = falcon.HTTP_302
        resp.set_header("Location", location)
        for name, value in NO_STORE.items():
            resp.set_header(name, value)

    def _page(self, resp, status, title, body):
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = "text/html; charset=utf-8"
        for name, value in PAGE_HEADERS.items():
            resp.set_header(name, value)
        resp.text = (
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main></body></html>")

    def _error_page(self, resp, message):
        self._page(resp, 400, "Authorization error",
                   "<h1>Authorization error</h1>"
                   f"<p class=\"error\" role=\"alert\">{html.escape(str(message))}</p>"
                   "<p>The application that sent you here is misconfigured. "
                   "Nothing was shared.</p>")

    def _render(self, resp, params, scopes, nonce, status=200, error=None, username=None):
        client = provider.get_client(params.get("client_id"))
        name = html.escape(client.name if client else "an application")
        hidden = "".join(
            f"<input type=\"hidden\" name=\"{k}\" value=\"{html.escape(v)}\">"
            for k, v in params.items())
        token = self.csrf.token(nonce, params.get("client_id", ""))
        items = "".join(
            f"<li><code>{html.escape(s)}</code> &mdash; {html.escape(SCOPES.get(s, s))}</li>"
            for s in scopes)
        alert = f"<p class=\"error\" role=\"alert\">{html.escape(error)}</p>" if error else ""
        user_value = html.escape(username or "")
        self._page(resp, status, f"Authorize {client.name if client else ''}".strip(),
                   f"<h1>Authorize <span class=\"client\">{name}</span></h1>"
                   f"<p><strong>{name}</strong> wants to use your gateway account to:</p>"
                   f"<ul class=\"scopes\">{items}</ul>{alert}"
                   "<form method=\"post\" action=\"/oauth/authorize\">"
                   f"{hidden}<input type=\"hidden\" name=\"csrf_token\" value=\"{token}\">"
                   "<label>Username <input name=\"username\" autocomplete=\"username\" "
                   f"value=\"{user_value}\" required></label>"
                   "<label>Password <input type=\"password\" name=\"password\" "
                   "autocomplete=\"current-password\" required></label>"
                   "<button type=\"submit\" name=\"decision\" value=\"allow\">"
                   "Sign in and allow</button> "
                   "<button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>"
                   "Deny</button></form>")


STYLE = ("body{font-family:system-ui,sans-serif;background:#f5f5f7;margin:0}"
         "main{max-width:28rem;margin:3rem auto;background:#fff;padding:2rem;"
         "border-radius:8px;box-shadow:0 1px 4px #0002}"
         "label{display:block;margin:.75rem 0}input{display:block;width:100%;padding:.4rem;"
         "box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1rem}"
         ".error{color:#b00020}.scopes li{margin:.3rem 0}")


class AdminOAuthClients:
    """Register an OAuth2 client (the secret is shown once) or list the clients."""

    auth = ADMIN
    openapi_tag = "Admin"
    openapi_body = {"post": {"type": "object", "required": ["name", "redirect_uris"],
                             "properties": {
                                 "name": {"type": "string", "minLength": 1, "maxLength": 128},
                                 "redirect_uris": {
                                     "description": "1-20 absolute http(s) URIs (or one, "
                                                    "as a string)",
                                     "oneOf": [{"type": "array", "minItems": 1, "maxItems": 20,
                                                "items": {"type": "string", "format": "uri"}},
                                               {"type": "string", "format": "uri"}]},
                                 "scopes": {
                                     "description": "default: every scope but keys:write",
                                     "oneOf": [{"type": "array", "minItems": 1,
                                                "items": {"enum": sorted(SCOPES)}},
                                               {"type": "string", "minLength": 1,
                                                "description": "space-separated scopes"}]},
                                 "confidential": {"type": "boolean", "default": True}}}}

    def on_get(self, req, resp):
        ok(req, resp, {"items": [provider.client_view(c) for c in provider.list_clients()],
                       "next": None})

    def on_post(self, req, resp):
        body = json_body(req)
        # Present means given: null is not "the default" (the document says array, boolean)
        nulls = [f for f in ("scopes", "confidential") if f in body and body[f] is None]
        if nulls or not isinstance(body.get("confidential", True), bool):
            raise InvalidRequest("Invalid OAuth client", details=[
                {"field": f, "problem": "leave it out for the default; null is not a value"}
                for f in nulls] or [{"field": "confidential", "problem": "true or false"}])
        confidential = body.get("confidential", True)
        client, secret = provider.register_client(
            body.get("name"), body.get("redirect_uris"), body.get("scopes"),
            confidential=confidential is not False)
        ok(req, resp, {**provider.client_view(client), "client_secret": secret}, status=201)
