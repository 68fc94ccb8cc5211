"""Social login routes (/auth/{provider}, its callback, and the login-code exchange).

See docs/SOCIAL.md. The flow logic lives in ``oauth.social``; these resources only read
parameters and answer with redirects (browser steps) or envelopes (the exchange).
"""

from __future__ import annotations

import falcon

from core.errors import Forbidden, InvalidRequest, NotFound, RateLimited
from gateway.envelope import ok
from gateway.middleware import ADDRESS, NONE, client_address
from gateway.resources.common import base_url, json_body
from oauth import keys
from oauth.accounts import get_account
from oauth.social import SPECS, LoginRefused, SocialLogin, add_query, b64url_json

TAG = "Social login"


def _form_or_json(req) -> dict:
    """A browser form post (``application/x-www-form-urlencoded``) or a JSON object."""
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    if ctype == falcon.MEDIA_URLENCODED:
        body = req.get_media(default_when_empty={})
        return {k: (v[-1] if isinstance(v, list) else v) for k, v in body.items()}
    return json_body(req)


def _redirect(resp, url):
    resp.status = falcon.HTTP_302
    resp.set_header("Location", url)
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Referrer-Policy", "no-referrer")


class _Base:
    def __init__(self, login: SocialLogin, config):
        self.login = login
        self.config = config

    def provider(self, name):
        if name not in SPECS:
            raise NotFound(f"No such login provider: {name[:32]}; use "
                           + ", ".join(sorted(SPECS)))
        provider = self.login.settings.providers.get(name)
        if provider is None:
            raise NotFound(f"Login with {SPECS[name].label} is not configured on this gateway")
        return provider

    def callback_url(self, req, name):
        return f"{base_url(req, self.config)}/auth/{name}/callback"


def _redirect_doc(description) -> dict:
    return {"302": {"description": description,
                    "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
            "default": {"description": "Error envelope (see error.code)",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Error"}}}}}


class SocialStart(_Base):
    """Start a social login: 302 to the provider's authorize page.

    ``redirectURL`` (query, or form/JSON body on POST) is the front-end page that receives
    the result; it must be under one of the gateway's SOCIAL_REDIRECT_ALLOW entries.
    Providers: github, discord, google.
    """

    auth = NONE
    uses_db = False
    openapi_tag = TAG
    openapi_query = {m: [{"name": "redirectURL", "in": "query", "required": m == "get",
                          "schema": {"type": "string", "format": "uri"}}]
                     for m in ("get", "post")}
    openapi_body = {"post": {"type": "object", "properties": {
        "redirectURL": {"type": "string", "format": "uri"}}}}
    openapi_responses = {m: _redirect_doc("To the provider's authorize page")
                         for m in ("get", "post")}

    def __init__(self, login, config, limiter):
        super().__init__(login, config)
        self.limiter = limiter

    def on_get(self, req, resp, provider):
        """Start a social login (302 to the provider)."""
        self._start(req, resp, provider, req.get_param("redirectURL"))

    def on_post(self, req, resp, provider):
        """Start a social login from a form post (seed 003's POST /auth/{loginProvider})."""
        found = self.provider(provider)
        redirect_url = _form_or_json(req).get("redirectURL") or req.get_param("redirectURL")
        self._start(req, resp, found.name, redirect_url)

    def _start(self, req, resp, name, redirect_url):
        provider = self.provider(name)
        address = client_address(req, self.config.trusted_proxies)
        decision = self.limiter.check_hourly("social:" + address,
                                             self.login.settings.start_per_hour)
        if decision is not None and not decision.allowed:
            raise RateLimited(f"Too many logins started; retry in {decision.retry_after}s",
                              retry_after=decision.retry_after)
        url = self.login.start(provider, redirect_url, self.callback_url(req, provider.name))
        _redirect(resp, url)


class SocialCallback(_Base):
    """The provider's return: check state, read the verified email, link, back to the front-end.

    Without a valid state (missing, unknown, expired or already used) it answers 400
    INVALID_REQUEST and redirects nowhere. With one, it redirects to the redirectURL given
    at the start: with ``b`` (Base64URL JSON user object holding a one-time ``loginCode``)
    on success, or with ``error`` and ``error_description`` when the login is refused.
    """

    auth = NONE
    openapi_tag = TAG
    openapi_query = {"get": [
        {"name": "code", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "state", "in": "query", "required": True, "schema": {"type": "string"}},
        {"name": "error", "in": "query", "required": False, "schema": {"type": "string"}}]}
    openapi_responses = {"get": _redirect_doc("Back to the front-end's redirectURL with `b` (a "
                                          "one-time loginCode) or `error`")}

    def on_get(self, req, resp, provider):
        """Finish a social login (302 to the front-end)."""
        found = self.provider(provider)
        state = req.get_param("state")
        if not state:
            raise InvalidRequest("state is required", details=[
                {"field": "state", "problem": "required"}])
        record = self.login.take_state(state)
        if record is None or record.get("provider") != found.name:
            raise InvalidRequest("Unknown, expired or already used login state", details=[
                {"field": "state", "problem": "unknown, expired or used"}])
        target = record["redirect"]
        try:
            denied = req.get_param("error")
            if denied:
                raise LoginRefused(_safe_error(denied),
                                   f"{found.label} did not authorize the login")
            code = req.get_param("code")
            if not code:
                raise LoginRefused("invalid_request", "The provider sent no code")
            user = self.login.fetch_user(found, code, record)
            account, created = self.login.link(user)
            login_code = self.login.issue_login_code(account, user)
        except LoginRefused as refused:
            _redirect(resp, add_query(target, {"error": refused.error,
                                               "error_description": refused.description}))
            return
        payload = self.login.payload(account, user, created, login_code)
        _redirect(resp, add_query(target, {"b": b64url_json(payload)}))


def _safe_error(value: str) -> str:
    """The provider's error code passed on only when it looks like one (RFC 6749 4.1.2.1)."""
    value = value.strip()
    if 0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c == "_") for c in value):
        return value
    return "access_denied"


class SocialExchange(_Base):
    """Trade the one-time ``loginCode`` from ``b`` for an API key (shown this once).

    Body: ``{"code": "..."}`` (JSON or form). The code works once and expires after
    SOCIAL_CODE_TTL_SECONDS. Answers 201 ``{id, username, email, provider, api_key, keyId}``;
    an unknown, used or expired code is 400 INVALID_REQUEST.
    """

    auth = ADDRESS
    openapi_tag = TAG
    openapi_body = {"post": {"type": "object", "required": ["code"],
                             "properties": {"code": {"type": "string"}}}}

    def on_post(self, req, resp):
        """Exchange a social login code for an API key."""
        code = _form_or_json(req).get("code")
        if not isinstance(code, str) or not code:
            raise InvalidRequest("code is required", details=[
                {"field": "code", "problem": "required string"}])
        grant = self.login.redeem_login_code(code)
        if grant is None:
            raise InvalidRequest("The login code is unknown, used or expired", details=[
                {"field": "code", "problem": "unknown, used or expired"}])
        account = get_account(grant["account_id"])
        if account.disabled:
            raise Forbidden("This account is disabled")
        row, secret = keys.create_key(account.id, f"social login ({grant['provider']})")
        ok(req, resp, {"id": account.id, "username": account.username,
                       "email": grant.get("email"), "provider": grant["provider"],
                       "api_key": secret, "keyId": row.id}, status=201)
