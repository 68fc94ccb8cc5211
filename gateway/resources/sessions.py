"""Password bearer tokens (/auth/token, /auth/refresh; seed 001) and account routes
(/api/account/data and settings, seed 000; /api/usage, seed 002; /api/user/self, seed 003).

See docs/SESSIONS.md for the choices made where the seeds are silent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from urllib.parse import urlsplit

import falcon

from core.clock import SYSTEM, Clock
from core.config import LoginLimits
from core.errors import (
    AuthError,
    InvalidRequest,
    NotFound,
    RateLimited,
    UnsupportedMediaType,
)
from core.timefmt import iso
from gateway.envelope import ok
from gateway.middleware import ACCOUNT, NONE, client_address, identify_in_resource
from gateway.resources.common import base_url, int_param, int_schema, json_body
from jobs import posts
from metering import billing, ledger, usage
from metering.models import Account
from oauth import keys
from oauth.account_settings import check_key, get_setting, set_setting
from oauth.accounts import authenticate_password, get_account
from oauth.social_models import AccountEmail
from oauth.tokens import REFRESH_PREFIX, TokenService, looks_like_jwt

FORM = "application/x-www-form-urlencoded"
USAGE_DAYS = 30
SESSION_NAMESPACE = uuid.UUID("5d0c6a8e-4c1f-4f6e-9a57-6f1d2b0e7c31")


# --- helpers -----------------------------------------------------------------------------


def _body(req) -> dict:
    """A form-encoded or JSON body as a dict of field -> value."""
    ctype = (req.content_type or "").split(";")[0].strip().lower()
    if ctype == FORM:
        try:
            form = req.get_media(default_when_empty={})
        except falcon.MediaMalformedError:
            raise InvalidRequest("Malformed form body") from None
        out = {}
        for name, value in (form or {}).items():
            if isinstance(value, list):
                raise InvalidRequest(f"{name} was sent more than once",
                                     details=[{"field": name, "problem": "sent more than once"}])
            out[name] = value
        return out
    if ctype not in ("", "application/json"):
        raise UnsupportedMediaType(
            "Send the body as application/x-www-form-urlencoded or application/json")
    return json_body(req)


def _params(req) -> dict:
    """Query parameters overlaid by the body (GET routes of the seeds take either)."""
    params = {k: v for k, v in req.params.items() if isinstance(v, str)}
    if req.method != "GET" or req.content_length:
        params.update(_body(req))
    return params


def _string_field(params, name, max_len=256) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidRequest(f"{name} is required",
                             details=[{"field": name,
                                       "problem": f"required string of 1-{max_len} characters"}])
    return value


def _no_store(resp):
    resp.set_header("Cache-Control", "no-store")
    resp.set_header("Pragma", "no-cache")


class LoginGuard:
    """Password attempts limited per client address and per username (CONTRACT 3).

    ``LOGIN_PER_ADDRESS`` and ``LOGIN_PER_USERNAME`` attempts (30 and 10 by default) per
    ``LOGIN_WINDOW_SECONDS`` (900); every attempt counts, right or wrong, so a stolen
    list of passwords cannot be tried faster than that. Refresh calls have their own
    per-address limit, ``REFRESH_PER_MINUTE`` (120). The numbers come parsed in
    ``config.logins``; the windows are the limiter's (Redis) windows."""

    def __init__(self, limiter, limits: LoginLimits, trusted_proxies: int = 0):
        self.limiter = limiter
        self.trusted_proxies = trusted_proxies
        self.window = limits.window_s
        self.per_address = limits.per_address
        self.per_username = limits.per_username
        self.refresh_per_minute = limits.refresh_per_minute

    def _enforce(self, req, decision, what):
        if decision is None:  # Redis is down: the limiter fails open
            return
        req.context.ratelimit = decision
        if not decision.allowed:
            raise RateLimited(f"Too many {what}; retry in {decision.retry_after}s",
                              retry_after=decision.retry_after)

    def login(self, req, username: str):
        """Counted per client address and per username together: an attempt refused by
        one window is counted by neither."""
        address = client_address(req, self.trusted_proxies)
        user_key = hashlib.sha256(username.lower().encode()).hexdigest()[:32]
        checked = self.limiter.check_windows([
            ("login:addr:" + address, self.per_address, self.window),
            ("login:user:" + user_key, self.per_username, self.window)])
        if checked is None:  # Redis is down: the limiter fails open
            return
        decision, refused_by = checked
        self._enforce(req, decision, "login attempts for this username" if refused_by == 1
                      else "login attempts from this address")

    def refresh(self, req):
        address = client_address(req, self.trusted_proxies)
        self._enforce(req, self.limiter.check_window("refresh:addr:" + address,
                                                     self.refresh_per_minute, 60),
                      "refresh attempts from this address")


def _password_account(guard, req, params) -> Account:
    username = _string_field(params, "username", 64)
    password = _string_field(params, "password", 256)
    guard.login(req, username)
    account = authenticate_password(username, password)
    if account is None:
        raise AuthError("AUTH_FAILED", "Incorrect username or password")
    return account


# --- bearer tokens (seed 001) ------------------------------------------------------------


class AuthToken:
    """``POST /auth/token``: username and password -> access and refresh token."""

    auth = NONE
    openapi_tag = "Sessions"

    def __init__(self, service: TokenService, guard: LoginGuard):
        self.service, self.guard = service, guard

    def on_post(self, req, resp):
        account = _password_account(self.guard, req, _body(req))
        _no_store(resp)
        ok(req, resp, self.service.start_session(account))


class AuthRefresh:
    """``POST /auth/refresh``: spend a refresh token for a new pair (rotation), or (seed 001)
    send the live access token as ``Authorization: Bearer`` for a new access token."""

    auth = NONE
    openapi_tag = "Sessions"

    def __init__(self, service: TokenService, guard: LoginGuard):
        self.service, self.guard = service, guard

    def on_post(self, req, resp):
        self.guard.refresh(req)
        body = _body(req)
        token = body.get("refresh_token")
        if token is None:  # seed 001 sends a token as "Authorization: Bearer ..."
            scheme, _, rest = (req.get_header("Authorization") or "").strip().partition(" ")
            if scheme.lower() == "bearer" and rest.strip():
                token = rest.strip()
                if not token.startswith(REFRESH_PREFIX):
                    if not looks_like_jwt(token):
                        raise AuthError("AUTH_FAILED", "Could not validate credentials")
                    # the seed's flow: the access token itself, for a new access token
                    _no_store(resp)
                    ok(req, resp, self.service.refresh_access(token))
                    return
        if token is None:
            raise InvalidRequest("refresh_token is required",
                                 details=[{"field": "refresh_token", "problem": "required"}])
        pair = self.service.refresh(token)
        _no_store(resp)
        ok(req, resp, pair)


# --- account routes (seed 000) -----------------------------------------------------------


class AccountData:
    """``GET|POST /api/account/data``: by credential, or by username and password.

    ``api_key`` is always null: keys are stored only as hashes and shown once, at creation;
    ``keys`` lists the live keys by id and prefix instead."""

    auth = NONE  # identifies the caller itself: a credential, else username and password
    openapi_tag = "Account"

    def __init__(self, deps, guard):
        self.deps, self.guard = deps, guard

    def _caller_account(self, req) -> Account:
        caller = identify_in_resource(req, self.deps.authenticators, self.deps.limiter,
                                      "account:read")
        return get_account(caller.account_id)

    def _respond(self, req, resp):
        params = _params(req)  # parsed even when a credential decides: a bad body is a 400
        if req.get_header("Authorization") or req.get_header("X-API-Key"):
            account = self._caller_account(req)
        else:
            if "username" not in params and "password" not in params:
                raise AuthError("MISSING_AUTH_HEADER",
                                "Send an API key or bearer token, or username and password")
            account = _password_account(self.guard, req, params)
            _no_store(resp)
        live = [k for k in keys.list_keys(account.id) if k.revoked_at is None]
        ok(req, resp, {
            "id": account.id, "username": account.username,
            "usages": usage.debit_count(account.id), "credits": ledger.balance(account.id),
            "api_key": None,
            **billing.membership_view(account.id, self.deps.clock.now()),  # tier (seed 003)
            "keys": [{"keyId": k.id, "prefix": k.prefix, "description": k.description,
                      "createdAt": iso(k.created_at), "lastUsedAt": iso(k.last_used_at)}
                     for k in live],
        })

    def on_get(self, req, resp):
        self._respond(req, resp)

    def on_post(self, req, resp):
        self._respond(req, resp)


class SettingsSet:
    """``POST /api/account/settings/set {key, value}``."""

    auth = ACCOUNT
    scope = "account:write"  # full-access credentials only (API keys, password bearer)
    openapi_tag = "Account"

    def __init__(self, clock: Clock = SYSTEM):
        self.clock = clock

    def on_post(self, req, resp):
        body = _body(req)
        unknown = sorted(set(body) - {"key", "value"})
        if unknown:
            raise InvalidRequest("Unknown fields: " + ", ".join(unknown),
                                 details=[{"field": f, "problem": "unknown field"}
                                          for f in unknown])
        if "value" not in body:
            raise InvalidRequest("value is required",
                                 details=[{"field": "value", "problem": "required"}])
        key = body.get("key")
        set_setting(req.context.caller.account_id, key, body["value"], now=self.clock.now())
        ok(req, resp, {"message": "Setting updated successfully", "key": key,
                       "value": body["value"]})


class SettingsGet:
    """``GET|POST /api/account/settings/get {key}``."""

    auth = ACCOUNT
    scope = "account:read"
    openapi_tag = "Account"

    def _respond(self, req, resp):
        key = check_key(_params(req).get("key"))
        ok(req, resp, {"key": key, "value": get_setting(req.context.caller.account_id, key)})

    def on_get(self, req, resp):
        self._respond(req, resp)

    def on_post(self, req, resp):
        self._respond(req, resp)


def _own_user_id(req):
    """Seed 002 passes ``userId``; another account's id is answered as not found."""
    user_id = req.get_param("userId")
    if user_id is not None and user_id != req.context.caller.account_id:
        raise NotFound("No such user")


class Usage:
    """``GET /api/usage``: calls and credits per action over the last ``days`` (30), and
    per UTC day and action in ``daily`` (seed 002), read from the ledger."""

    auth = ACCOUNT
    scope = "credits:read"
    openapi_tag = "Account"
    openapi_query = {"get": [{"name": "days", "in": "query", "required": False,
                              "schema": {**int_schema(1, 365), "default": USAGE_DAYS}}]}

    def __init__(self, clock: Clock = SYSTEM):
        self.clock = clock

    def on_get(self, req, resp):
        _own_user_id(req)
        days = int_param(req, "days", USAGE_DAYS, 1, 365)
        account_id = req.context.caller.account_id
        until = self.clock.now()
        since = until - dt.timedelta(days=days)
        actions = usage.usage_by_action(account_id, since)
        ok(req, resp, {
            "userId": account_id, "days": days, "from": iso(since), "to": iso(until),
            "totalCalls": sum(a["calls"] for a in actions),
            "totalCredits": sum(a["credits"] for a in actions),
            "totalRefunded": sum(a["creditsRefunded"] for a in actions),
            "usages": usage.debit_count(account_id),
            "actions": actions,
            "daily": usage.usage_by_day(account_id, since),
        })


def primary_email(account_id) -> str | None:
    """The first email a login provider verified for the account (accounts made with a
    password have none)."""
    row = (AccountEmail.select(AccountEmail.email).where(AccountEmail.account == account_id)
           .order_by(AccountEmail.created_at, AccountEmail.email).first())
    return row.email if row else None


def session_id(req, caller) -> str:
    """Seed 003's session id: the caller's ``X-Session-ID`` when it is a UUID, else one
    derived from the credential (stable per API key or bearer session)."""
    try:
        return str(uuid.UUID(req.get_header("X-Session-ID") or ""))
    except ValueError:  # absent or not a UUID
        return str(uuid.uuid5(SESSION_NAMESPACE, caller.rate_key))


class UserSession:
    """``GET /2/getUserSession`` (seed 003, API2): the session and the user behind the
    caller's credential (the gateway's credentials stand in for ``X-Session-ID``)."""

    auth = ACCOUNT
    scope = "account:read"
    openapi_tag = "Account"

    def __init__(self, config):
        self.config = config

    def on_get(self, req, resp):
        caller = req.context.caller
        account = get_account(caller.account_id)
        domain = urlsplit(base_url(req, self.config)).hostname or ""
        ok(req, resp, {
            "userSession": {
                "_id": session_id(req, caller), "domain": domain,
                "isAtLeast18Confirmed": get_setting(account.id, "isAtLeast18Confirmed",
                                                    False) is True,
                "updatedDate": iso(account.created_at), "userID": account.id},
            "user": {
                "_id": account.id, "email": primary_email(account.id),
                "username": account.username, "domain": domain,
                "createdDate": iso(account.created_at), "isDisabled": bool(account.disabled),
                "roles": ["user"], "flaggedImagesCount": 0},
        })


class SelfUser:
    """``GET /api/user/self``: seed 003's SelfUser object for the calling account."""

    auth = ACCOUNT
    scope = "account:read"
    openapi_tag = "Account"

    def __init__(self, clock: Clock = SYSTEM):
        self.clock = clock

    def on_get(self, req, resp):
        caller = req.context.caller
        account = get_account(caller.account_id)
        confirmed = req.get_param_as_bool("isAtLeast18Confirmed")
        if confirmed is not None:  # the seed: the back-end remembers it when given
            set_setting(account.id, "isAtLeast18Confirmed", confirmed, now=self.clock.now())
        else:
            confirmed = get_setting(account.id, "isAtLeast18Confirmed", False) is True
        items = posts.list_posts(account.id, posts.Filters(), limit=1).total
        ok(req, resp, {
            "sessionID": session_id(req, caller),
            "userID": account.id,
            "email": None,
            "username": account.username,
            "isAuthenticated": True,
            "isAtLeast18Confirmed": confirmed,
            "tier": 0 if account.plan == "default" else 1,
            "tierExpiration": None,
            "merchantProcessor": "none",
            "subscriptions": [],
            "itemCount": items,
            "rootFolderItemCount": items,
            # the gateway's own fields
            "plan": account.plan,
            "credits": ledger.balance(account.id),
            "usages": usage.debit_count(account.id),
            "createdAt": iso(account.created_at),
            "credential": {"kind": caller.kind, "id": caller.credential_id},
        })
