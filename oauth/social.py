"""Social login through GitHub, Discord and Google (docs/SOCIAL.md).

The gateway is the OAuth 2.0 *client* here (``requests_oauthlib.OAuth2Session``): it sends
the browser to the provider's authorize page, takes the code back on its callback, trades
it for a token with its client secret, reads the user's verified email, and creates or
links the account by that email. The front-end then receives a one-time login code (in the
Base64URL ``b`` parameter) that it exchanges for an API key at ``POST /auth/social/exchange``.

Everything provider-specific (scopes, PKCE, user endpoints) is here; the resources in
``gateway.resources.social`` only speak HTTP. The settings (each provider's client and
URLs, the redirect allow-list, lifetimes) come parsed in ``config.social``
(``core.config.SocialConfig``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import secrets
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from oauthlib.oauth2 import OAuth2Error
from peewee import IntegrityError
from requests_oauthlib import OAuth2Session

from core.clock import SYSTEM, Clock
from core.config import SOCIAL_PROVIDERS, SocialConfig, SocialProvider
from core.errors import Conflict, InvalidRequest, ServiceUnavailable
from metering.db import write_transaction
from metering.models import Account
from oauth.accounts import create_account
from oauth.models import ApiKey
from oauth.social_models import AccountEmail, SocialIdentity

log = logging.getLogger(__name__)

USER_AGENT = "metered-gateway-social-login"


# The providers this gateway knows (their default URLs, scopes and PKCE), and one as
# configured for this deployment: both are ``core.config.SocialProvider``.
SPECS = SOCIAL_PROVIDERS
Provider = SocialProvider


# -- The redirectURL allow-list ------------------------------------------------------------

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _path_under(path: str, prefix: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix + "/")


def redirect_allowed(url, allow: tuple) -> bool:
    """Whether ``url`` is under an allow-list entry: same scheme, host and port, and a path
    at or below the entry's path (segment-wise, so ``/app`` does not admit ``/apple``)."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return False
    if any(not 0x21 <= ord(c) <= 0x7E for c in url) or "\\" in url:
        return False  # no spaces, controls, non-ASCII or backslashes (browser quirks)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username \
            or parts.password is not None or "@" in parts.netloc:
        return False
    port = port or _DEFAULT_PORTS[parts.scheme]
    path = parts.path or "/"
    if "/../" in path + "/" or "/./" in path + "/" or "%2e" in path.lower():
        return False  # no dot segments that a browser would resolve out of the prefix
    host = parts.hostname.lower()
    return any(parts.scheme == scheme and host == a_host and port == a_port
               and _path_under(path, a_path) for scheme, a_host, a_port, a_path in allow)


def add_query(url: str, params: dict) -> str:
    """``url`` with ``params`` appended to its query (existing parameters kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in params]
    query += list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query),
                       parts.fragment))


def b64url_json(obj) -> str:
    """Base64URL (RFC 4648 section 5) of compact JSON, without ``=`` padding."""
    raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- Insecure transport, for loopback test doubles only ------------------------------------

_insecure_lock = threading.Lock()
_insecure_users = 0
_insecure_set_by_us = False


@contextlib.contextmanager
def _transport_for(*urls):
    """Let oauthlib talk plain http to loopback URLs for the duration of one call.

    oauthlib refuses non-https URLs unless ``OAUTHLIB_INSECURE_TRANSPORT`` is set, and reads
    it from the process environment on every check. Settings only admit http for loopback
    hosts (``core.config.SocialConfig``), so the variable is set, reference-counted under a
    lock, only while a call to such a URL runs, and removed after the last one (unless the
    operator had set it). Production URLs are https and never touch the environment.
    """
    global _insecure_users, _insecure_set_by_us
    if all(urlsplit(u).scheme == "https" for u in urls):
        yield
        return
    with _insecure_lock:
        _insecure_users += 1
        if _insecure_users == 1 and "OAUTHLIB_INSECURE_TRANSPORT" not in os.environ:
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
            _insecure_set_by_us = True
    try:
        yield
    finally:
        with _insecure_lock:
            _insecure_users -= 1
            if _insecure_users == 0 and _insecure_set_by_us:
                os.environ.pop("OAUTHLIB_INSECURE_TRANSPORT", None)
                _insecure_set_by_us = False


# -- The login ------------------------------------------------------------------------------


class LoginRefused(Exception):
    """The login cannot go on; reported to the (verified) redirectURL as ``error``."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclasses.dataclass(frozen=True)
class SocialUser:
    provider: str
    provider_user_id: str
    email: str
    email_verified: bool
    username: str  # the provider's handle (or a stand-in), the seed for ours


def _pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-] (RFC 7636: 43-128)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_NOT_USERNAME = re.compile(r"[^A-Za-z0-9_.-]+")


def username_seed(handle: str, provider: str) -> str:
    """A valid username (``oauth.accounts.USERNAME_RE``) made from a provider handle."""
    base = _NOT_USERNAME.sub("-", handle or "").strip("-_.")[:48]
    if len(base) < 3:
        base = f"{provider}-{base}".strip("-") if base else f"{provider}-user"
    return base


class SocialLogin:
    """The login flow over one Redis (states and login codes) and the database."""

    def __init__(self, settings: SocialConfig, redis, prefix: str, *, signup_open: bool,
                 signup_credits: int, clock: Clock = SYSTEM):
        self.settings = settings
        self.redis = redis
        self.prefix = prefix
        self.signup_open = signup_open
        self.signup_credits = signup_credits
        self.clock = clock

    @classmethod
    def from_config(cls, config, redis, clock: Clock = SYSTEM) -> SocialLogin:
        return cls(config.social, redis, config.redis_prefix, signup_open=config.signup_open,
                   signup_credits=config.signup_credits, clock=clock)

    # Redis keys ------------------------------------------------------------------------
    def _state_key(self, state):
        return f"{self.prefix}:social:state:{_hash(state)}"

    def _code_key(self, code):
        return f"{self.prefix}:social:code:{_hash(code)}"

    def _take(self, key) -> dict | None:
        """Read and delete in one step: a state or login code works once, across processes;
        and only until its expiry by ``self.clock`` (Redis drops it then too)."""
        try:
            raw = self.redis.getdel(key)
        except Exception as exc:
            raise ServiceUnavailable("The session store is unavailable") from exc
        if not raw:
            return None
        record = json.loads(raw)
        expires = record.pop("expires", None)
        if expires is not None and self.clock.time() >= expires:
            return None
        return record

    def _put(self, key, value: dict, ttl: int):
        record = {**value, "expires": self.clock.time() + ttl}
        try:
            self.redis.set(key, json.dumps(record), ex=ttl)
        except Exception as exc:
            raise ServiceUnavailable("The session store is unavailable") from exc

    # Step 1: to the provider -------------------------------------------------------------
    def check_redirect(self, redirect_url):
        if not isinstance(redirect_url, str) or not redirect_url:
            raise InvalidRequest("redirectURL is required", details=[
                {"field": "redirectURL", "problem": "required"}])
        if not redirect_allowed(redirect_url, self.settings.redirect_allow):
            raise InvalidRequest("redirectURL is not on this gateway's allow-list", details=[
                {"field": "redirectURL", "problem": "not an allowed front-end URL"}])

    def start(self, provider: Provider, redirect_url: str, callback_url: str, *,
              local: bool = False) -> str:
        """Store a fresh state and return the provider's authorize URL to redirect to.

        ``local``: ``redirect_url`` is a path on this gateway (the web console's return
        page, chosen by the gateway itself), not a front-end URL of the allow-list."""
        if local:
            if not (isinstance(redirect_url, str) and redirect_url.startswith("/")
                    and not redirect_url.startswith("//") and "\\" not in redirect_url):
                raise InvalidRequest("A local redirect must be a path on this gateway")
        else:
            self.check_redirect(redirect_url)
        state = secrets.token_urlsafe(32)
        extra, verifier = {}, None
        if provider.pkce:
            verifier, challenge = _pkce_pair()
            extra = {"code_challenge": challenge, "code_challenge_method": "S256"}
        self._put(self._state_key(state), {
            "provider": provider.name, "redirect": redirect_url, "callback": callback_url,
            "verifier": verifier}, self.settings.state_ttl_s)
        oauth = OAuth2Session(provider.client_id, redirect_uri=callback_url,
                              scope=list(provider.scope), state=state)
        with _transport_for(provider.authorize_url):
            url, _ = oauth.authorization_url(provider.authorize_url, **extra)
        return url

    def take_state(self, state) -> dict | None:
        if not isinstance(state, str) or not 16 <= len(state) <= 256:
            return None
        return self._take(self._state_key(state))

    # Step 2: back from the provider -------------------------------------------------------
    def fetch_user(self, provider: Provider, code: str, record: dict) -> SocialUser:
        """Trade the code for a token and read the user (network; no database)."""
        oauth = OAuth2Session(provider.client_id, redirect_uri=record["callback"],
                              scope=list(provider.scope), state=None)
        oauth.headers["User-Agent"] = USER_AGENT
        extra = {"code_verifier": record["verifier"]} if record.get("verifier") else {}
        try:
            with _transport_for(provider.token_url, provider.api_url):
                try:
                    oauth.fetch_token(provider.token_url, code=code,
                                      client_secret=provider.client_secret,
                                      include_client_id=True,
                                      timeout=self.settings.timeout_s, **extra)
                except Warning as changed:  # "Scope has changed": GitHub and Google rewrite
                    token = getattr(changed, "token", None)  # the scope string; keep the token
                    if not token or not token.get("access_token"):
                        raise
                    oauth.token = dict(token)
                return _READERS[provider.name](oauth, provider, self.settings.timeout_s)
        except LoginRefused:
            raise
        except (OAuth2Error, requests.RequestException, ValueError, KeyError, TypeError,
                Warning) as exc:
            log.warning("social login with %s failed: %s: %s", provider.name,
                        type(exc).__name__, exc)
            raise LoginRefused("provider_error",
                               f"Could not complete the login with {provider.label}") from None
        finally:
            oauth.close()

    def link(self, user: SocialUser) -> tuple[Account, bool]:
        """The account for this identity, creating or linking it; ``(account, created)``.

        Idempotent: the same identity, or any identity with the same verified email, gives
        the same account. Two concurrent first logins race on the unique rows; the loser's
        whole transaction (its new account included) rolls back and it looks again.
        """
        if not user.email:
            raise LoginRefused("email_missing",
                               "The provider did not share an email address for this login")
        if not user.email_verified:
            raise LoginRefused("email_unverified",
                               "The email of this login is not verified by the provider")
        for _ in range(3):
            try:
                with write_transaction():
                    account, created = self._link_once(user)
            except IntegrityError:
                continue
            if account.disabled:
                raise LoginRefused("account_disabled", "This account is disabled")
            return account, created
        raise ServiceUnavailable("Could not link the login; try again")

    def _link_once(self, user: SocialUser) -> tuple[Account, bool]:
        email = user.email
        identity = SocialIdentity.get_or_none(
            (SocialIdentity.provider == user.provider)
            & (SocialIdentity.provider_user_id == user.provider_user_id))
        if identity is not None:
            SocialIdentity.update(email=email, provider_username=user.username[:255],
                                  last_login_at=self.clock.now()).where(
                SocialIdentity.id == identity.id).execute()
            if not AccountEmail.select().where(AccountEmail.email == email).exists():
                AccountEmail.create(email=email, account=identity.account_id,
                                    verified_by=user.provider)
            return Account.get_by_id(identity.account_id), False
        known = AccountEmail.get_or_none(AccountEmail.email == email)
        if known is not None:
            account, created = Account.get_by_id(known.account_id), False
        elif not self.signup_open:
            raise LoginRefused("signup_closed",
                               "Signup is closed on this gateway; no account has this email")
        else:
            account, created = self._new_account(user), True
            AccountEmail.create(email=email, account=account.id, verified_by=user.provider)
        SocialIdentity.create(provider=user.provider, provider_user_id=user.provider_user_id,
                              account=account.id, email=email,
                              provider_username=user.username[:255])
        return account, created

    def _new_account(self, user: SocialUser) -> Account:
        base = username_seed(user.username, user.provider)
        for attempt in range(6):
            name = base if attempt == 0 else f"{base[:56]}-{secrets.token_hex(3)}"
            try:
                account, _unshown_key = create_account(
                    name, None, credits=self.signup_credits, password_required=False,
                    key_description=f"{user.provider} signup")
            except Conflict:
                continue
            # create_account always makes a first key; its secret is never shown to anyone
            # here (the front-end gets a key from the exchange), so retire it at once.
            ApiKey.update(revoked_at=self.clock.now()).where(
                ApiKey.account == account.id).execute()
            return account
        raise ServiceUnavailable("Could not choose a username; try again")

    # Step 3: the front-end's one-time login code -------------------------------------------
    def issue_login_code(self, account: Account, user: SocialUser) -> str:
        code = secrets.token_urlsafe(32)
        self._put(self._code_key(code), {
            "account_id": account.id, "provider": user.provider, "email": user.email},
            self.settings.code_ttl_s)
        return code

    def redeem_login_code(self, code) -> dict | None:
        if not isinstance(code, str) or not 16 <= len(code) <= 256:
            return None
        return self._take(self._code_key(code))

    def payload(self, account: Account, user: SocialUser, created: bool, code: str) -> dict:
        """The user object carried Base64URL-encoded in ``b`` (seed 003's SelfUser subset)."""
        return {
            "id": account.id, "userID": account.id, "username": account.username,
            "email": user.email, "provider": user.provider,
            "providerUserId": user.provider_user_id, "isNewUser": created,
            "credits": account.balance, "plan": account.plan,
            "loginCode": code, "loginCodeExpiresIn": self.settings.code_ttl_s,
        }


# -- Reading the user from each provider ---------------------------------------------------


def _get_json(oauth, url, timeout, headers=None):
    resp = oauth.get(url, timeout=timeout, headers=headers or {})
    if resp.status_code != 200:
        raise ValueError(f"{url} answered {resp.status_code}")
    return resp.json()


def _normal_email(value) -> str:
    if not isinstance(value, str):
        return ""
    email = value.strip().lower()
    return email if 3 <= len(email) <= 320 and "@" in email[1:-1] else ""


def _user_id(value) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ValueError("the provider returned no user id")
    return str(value)[:128]


def _github(oauth, provider, timeout) -> SocialUser:
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
    profile = _get_json(oauth, provider.api_url + "/user", timeout, headers)
    emails = _get_json(oauth, provider.api_url + "/user/emails", timeout, headers)
    primary = next((e for e in emails if isinstance(e, dict) and e.get("primary")), None) \
        if isinstance(emails, list) else None
    email = _normal_email(primary.get("email")) if primary else ""
    return SocialUser("github", _user_id(profile.get("id")), email,
                      bool(email and primary.get("verified") is True),
                      str(profile.get("login") or ""))


def _discord(oauth, provider, timeout) -> SocialUser:
    me = _get_json(oauth, provider.api_url + "/users/@me", timeout)
    email = _normal_email(me.get("email"))
    return SocialUser("discord", _user_id(me.get("id")), email,
                      bool(email and me.get("verified") is True),
                      str(me.get("username") or me.get("global_name") or ""))


def _google(oauth, provider, timeout) -> SocialUser:
    info = _get_json(oauth, provider.api_url, timeout)
    email = _normal_email(info.get("email"))
    verified = info.get("email_verified") in (True, "true")  # older endpoints send a string
    return SocialUser("google", _user_id(info.get("sub")), email, bool(email and verified),
                      email.split("@")[0] if email else str(info.get("name") or ""))


_READERS = {"github": _github, "discord": _discord, "google": _google}
