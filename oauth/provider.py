"""The OAuth2 authorization server (oauthlib) and its access-token authenticator.

oauthlib does the protocol (parameter checks, PKCE, error bodies); ``Validator`` answers
its questions from the peewee tables in ``oauth.provider_models``. Rules of this server:

- authorization-code grant only, PKCE with S256 required for every client ("plain" and a
  missing method are refused);
- codes are one-time: claimed with a conditional UPDATE, and a replayed code revokes every
  token issued from it (RFC 6749 section 4.1.2);
- refresh tokens rotate; the previous one keeps working for a short grace period so two
  clients (or two Zapier workers) racing to refresh both get fresh tokens;
- revocation (RFC 7009) of an access token kills that token; of a refresh token, the
  whole grant.

Settings come parsed in ``config.oauth`` (``core.config.OAuthProviderConfig``); every
expiry (codes, access and refresh tokens, the grace period, consent forms) is checked
against the injected ``Clock``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import logging
import secrets
from urllib.parse import unquote_plus, urlparse

import peewee
from oauthlib.oauth2 import (
    AuthorizationEndpoint,
    BearerToken,
    RefreshTokenGrant,
    RequestValidator,
    RevocationEndpoint,
    TokenEndpoint,
)
from oauthlib.oauth2.rfc6749 import errors as oauth_errors
from oauthlib.oauth2.rfc6749.grant_types import AuthorizationCodeGrant
from oauthlib.oauth2.rfc6749.grant_types.authorization_code import code_challenge_method_s256

from core.clock import SYSTEM, Clock
from core.config import OAuthProviderConfig
from core.errors import AuthError, InvalidRequest, ServiceUnavailable
from core.ids import new_id
from metering.db import database, write_transaction
from metering.models import Account
from oauth.credentials import Caller, Presented, caller_for, with_account
from oauth.provider_models import AuthorizationCode, OAuthClient, OAuthToken
from oauth.scopes import DEFAULT_SCOPES, SCOPES

log = logging.getLogger(__name__)

ACCESS_PREFIX, REFRESH_PREFIX = "gwo_", "gwr_"
CLIENT_ID_PREFIX, CLIENT_SECRET_PREFIX = "gwc_", "gwcs_"
GRANT_TYPES = ("authorization_code", "refresh_token")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


CSRF_TTL = 3600  # how long a rendered consent form stays usable, seconds


# --- the validator ---------------------------------------------------------------------


def _basic_credentials(request) -> tuple[str, str] | None:
    """``client_id:client_secret`` from HTTP Basic, each form-urlencoded (RFC 6749 2.3.1)."""
    header = (request.headers or {}).get("Authorization") or ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = decoded.partition(":")
    return unquote_plus(client_id), unquote_plus(secret)


def _client(client_id) -> OAuthClient | None:
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 64:
        return None
    return OAuthClient.get_or_none(OAuthClient.client_id == client_id)


class Validator(RequestValidator):
    """oauthlib's questions, answered from PostgreSQL/SQLite.

    Database errors are never caught here: they propagate to the resource, which answers
    503, so an outage is never mistaken for a dead grant.
    """

    def __init__(self, settings: OAuthProviderConfig, clock: Clock = SYSTEM):
        super().__init__()
        self.settings = settings
        self.clock = clock

    # clients

    def client_authentication_required(self, request, *args, **kwargs):
        if _basic_credentials(request) is not None or request.client_secret:
            return True
        client = _client(request.client_id)
        return client is None or client.confidential

    def authenticate_client(self, request, *args, **kwargs):
        basic = _basic_credentials(request)
        if basic is not None:
            client_id, secret = basic
            if request.client_id and request.client_id != client_id:
                return False
        else:
            client_id, secret = request.client_id, request.client_secret
        client = _client(client_id)
        if client is None or not client.secret_hash or not isinstance(secret, str):
            return False
        if not hmac.compare_digest(_hash(secret), client.secret_hash):
            return False
        request.client = client
        request.client_id = client.client_id
        return True

    def authenticate_client_id(self, client_id, request, *args, **kwargs):
        client = _client(client_id)
        if client is None or client.confidential:
            return False
        request.client = client
        return True

    def validate_client_id(self, client_id, request, *args, **kwargs):
        client = _client(client_id)
        request.client = client
        return client is not None

    def validate_redirect_uri(self, client_id, redirect_uri, request, *args, **kwargs):
        client = _client(client_id)
        return client is not None and redirect_uri in client.redirect_uri_list

    def get_default_redirect_uri(self, client_id, request, *args, **kwargs):
        client = _client(client_id)
        uris = client.redirect_uri_list if client else []
        return uris[0] if len(uris) == 1 else None

    def validate_response_type(self, client_id, response_type, client, request, *args, **kwargs):
        return response_type == "code"

    def validate_grant_type(self, client_id, grant_type, client, request, *args, **kwargs):
        return grant_type in GRANT_TYPES

    def validate_scopes(self, client_id, scopes, client, request, *args, **kwargs):
        client = client or _client(client_id)
        allowed = set(client.scope_list) if client else set()
        return bool(scopes) and all(s in SCOPES and s in allowed for s in scopes)

    def get_default_scopes(self, client_id, request, *args, **kwargs):
        client = _client(client_id)
        return client.scope_list if client else []

    def is_pkce_required(self, client_id, request):
        return True

    # authorization codes

    def save_authorization_code(self, client_id, code, request, *args, **kwargs):
        AuthorizationCode.create(
            id=new_id("grant", 8), code_hash=_hash(code["code"]), client=client_id,
            account=request.user, redirect_uri=request.redirect_uri,
            scopes=" ".join(request.scopes), code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
            expires_at=self.clock.now() + dt.timedelta(seconds=self.settings.code_ttl))

    def _code(self, code, request) -> AuthorizationCode | None:
        cached = getattr(request, "gw_code", None)
        if cached is not None:
            return cached
        if not isinstance(code, str) or not code:
            return None
        return AuthorizationCode.get_or_none(AuthorizationCode.code_hash == _hash(code))

    def validate_code(self, client_id, code, client, request, *args, **kwargs):
        row = self._code(code, request)
        if row is None or row.client_id != client_id:
            return False
        if row.used:
            revoke_grant(row.id, self.clock.now())  # a replayed code: take down what it issued
            return False
        if row.expires_at <= self.clock.now():
            return False
        request.gw_code = row
        request.user = row.account_id
        request.scopes = row.scopes.split()
        return True

    def get_code_challenge(self, code, request):
        row = self._code(code, request)
        return row.code_challenge if row else None

    def get_code_challenge_method(self, code, request):
        row = self._code(code, request)
        return row.code_challenge_method if row else None

    def confirm_redirect_uri(self, client_id, code, redirect_uri, client, request, *args,
                             **kwargs):
        row = self._code(code, request)
        return row is not None and row.redirect_uri == redirect_uri

    def claim_code(self, request):
        """Post-token check: claim the code with one conditional UPDATE, so of two racing
        exchanges exactly one gets tokens (and the other revokes them, as for a replay)."""
        row = request.gw_code
        claimed = (AuthorizationCode.update(used=True)
                   .where((AuthorizationCode.id == row.id) & (AuthorizationCode.used == False))  # noqa: E712
                   .execute())
        if not claimed:
            revoke_grant(row.id, self.clock.now())
            raise oauth_errors.InvalidGrantError(description="The code was already used",
                                                 request=request)

    def invalidate_authorization_code(self, client_id, code, request, *args, **kwargs):
        """Nothing left to do: ``claim_code`` marked it used before the tokens were made."""

    # tokens

    def save_bearer_token(self, token, request, *args, **kwargs):
        now = self.clock.now()
        parent = getattr(request, "gw_parent", None)
        if parent is not None:
            grant_id, previous = parent.grant_id, parent.refresh_hash
            # Rotation: the old refresh token lives on for the grace period only (set once,
            # so racing refreshes cannot stretch it).
            grace_until = now + dt.timedelta(seconds=self.settings.refresh_grace)
            (OAuthToken.update(refresh_grace_until=grace_until)
             .where((OAuthToken.id == parent.id) & OAuthToken.refresh_grace_until.is_null())
             .execute())
        else:
            grant_id, previous = request.gw_code.id, None
        refresh = token.get("refresh_token")
        OAuthToken.create(
            id=new_id("otok", 8), grant_id=grant_id, client=request.client.client_id,
            account=request.user, scopes=" ".join(request.scopes),
            access_hash=_hash(token["access_token"]),
            access_expires_at=now + dt.timedelta(seconds=int(token["expires_in"])),
            refresh_hash=_hash(refresh) if refresh else None,
            refresh_expires_at=now + dt.timedelta(seconds=self.settings.refresh_ttl)
            if refresh else None,
            previous_refresh_hash=previous)

    def validate_refresh_token(self, refresh_token, client, request, *args, **kwargs):
        if not isinstance(refresh_token, str) or not refresh_token.startswith(REFRESH_PREFIX):
            return False
        row = OAuthToken.get_or_none(OAuthToken.refresh_hash == _hash(refresh_token))
        now = self.clock.now()
        if row is None or row.client_id != client.client_id or row.revoked_at is not None:
            return False
        if row.refresh_expires_at is not None and row.refresh_expires_at <= now:
            return False
        if row.refresh_grace_until is not None and row.refresh_grace_until <= now:
            return False  # rotated, and the grace period is over
        account = Account.get_or_none(Account.id == row.account_id)
        if account is None or account.disabled:
            return False
        request.gw_parent = row
        request.user = row.account_id
        return True

    def get_original_scopes(self, refresh_token, request, *args, **kwargs):
        return request.gw_parent.scopes.split()

    def revoke_token(self, token, token_type_hint, request, *args, **kwargs):
        if not isinstance(token, str):
            return
        now = self.clock.now()
        by_client = OAuthToken.client == request.client.client_id
        row = OAuthToken.get_or_none((OAuthToken.access_hash == _hash(token)) & by_client)
        if row is not None:
            OAuthToken.update(access_revoked_at=now).where(
                (OAuthToken.id == row.id) & OAuthToken.access_revoked_at.is_null()).execute()
            return
        row = OAuthToken.get_or_none((OAuthToken.refresh_hash == _hash(token)) & by_client)
        if row is not None:
            revoke_grant(row.grant_id, now)  # RFC 7009 2.1: and the access tokens it begot

    def validate_bearer_token(self, token, scopes, request):
        row = _live_access_row(token, self.clock.now())
        if row is None or not set(scopes or ()) <= set(row.scopes.split()):
            return False
        request.user, request.scopes = row.account_id, row.scopes.split()
        request.client = row.client
        return True

    def validate_user(self, username, password, client, request, *args, **kwargs):
        return False  # no password grant: users sign in on the consent page

    def introspect_token(self, token, token_type_hint, request, *args, **kwargs):
        return None


def revoke_grant(grant_id: str, now) -> int:
    """Revoke every token issued under one authorization code (``now``: the revocation time)."""
    return (OAuthToken.update(revoked_at=now)
            .where((OAuthToken.grant_id == grant_id) & OAuthToken.revoked_at.is_null())
            .execute())


def _live_access_row(token, now) -> OAuthToken | None:
    if not isinstance(token, str) or not token.startswith(ACCESS_PREFIX):
        return None
    row = OAuthToken.get_or_none(OAuthToken.access_hash == _hash(token))
    if row is None or row.revoked_at or row.access_revoked_at or row.access_expires_at <= now:
        return None
    return row


# --- the server ------------------------------------------------------------------------


class S256CodeGrant(AuthorizationCodeGrant):
    """The authorization-code grant with "plain" PKCE removed: only S256 is accepted (and
    a request without a method, which RFC 7636 reads as plain, is refused)."""

    _code_challenge_methods = {"S256": code_challenge_method_s256}


def _access_token(request, refresh_token=False):
    return ACCESS_PREFIX + secrets.token_urlsafe(32)


def _refresh_token(request, refresh_token=False):
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


class Server(AuthorizationEndpoint, TokenEndpoint, RevocationEndpoint):
    """oauthlib's endpoints for this gateway: authorize, token (code and refresh), revoke;
    with the consent form's CSRF tokens (``csrf``) on the same clock."""

    def __init__(self, settings: OAuthProviderConfig, csrf: ConsentCsrf,
                 clock: Clock = SYSTEM):
        self.settings = settings
        self.csrf = csrf
        self.clock = clock
        self.validator = Validator(settings, clock)
        self.auth_grant = S256CodeGrant(self.validator, post_token=[self.validator.claim_code])
        self.refresh_grant = RefreshTokenGrant(self.validator)
        self.bearer = BearerToken(self.validator, token_generator=_access_token,
                                  expires_in=settings.access_ttl,
                                  refresh_token_generator=_refresh_token)
        AuthorizationEndpoint.__init__(self, default_response_type="code",
                                       response_types={"code": self.auth_grant},
                                       default_token_type=self.bearer)
        TokenEndpoint.__init__(self, default_grant_type="authorization_code",
                               grant_types={"authorization_code": self.auth_grant,
                                            "refresh_token": self.refresh_grant},
                               default_token_type=self.bearer)
        RevocationEndpoint.__init__(self, self.validator,
                                    supported_token_types=("access_token", "refresh_token"))

    @classmethod
    def from_config(cls, config, clock: Clock = SYSTEM) -> Server:
        return cls(config.oauth, ConsentCsrf(csrf_key(config), clock), clock)

    def in_transaction(self, call, *args):
        """Run one token or revocation call in its own connection and transaction.

        A database outage raises ``ServiceUnavailable`` (the endpoint answers 503, which
        OAuth clients retry) and is never mistaken for a dead grant (a 4xx)."""
        try:
            database.connect(reuse_if_open=True)
            with write_transaction():
                return call(*args)
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            raise ServiceUnavailable(
                f"The database is unavailable ({type(exc).__name__})") from exc
        finally:
            if not database.is_closed():
                database.close()


# --- services --------------------------------------------------------------------------


def _check_redirect_uri(uri) -> bool:
    if not isinstance(uri, str) or len(uri) > 2000 or any(c.isspace() for c in uri):
        return False
    parsed = urlparse(uri)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and not parsed.fragment


def register_client(name, redirect_uris, scopes=None, *, confidential=True):
    """Register an application; returns ``(client, secret)``: the secret is shown once
    (``None`` for a public client, which must rely on PKCE alone)."""
    problems = []
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 128:
        problems.append({"field": "name", "problem": "1-128 characters"})
    if isinstance(redirect_uris, str):
        redirect_uris = [redirect_uris]
    if not isinstance(redirect_uris, list) or not 1 <= len(redirect_uris) <= 20 \
            or not all(_check_redirect_uri(u) for u in redirect_uris):
        problems.append({"field": "redirect_uris",
                         "problem": "1-20 absolute http(s) URIs without fragments"})
    if scopes is None:
        scopes = list(DEFAULT_SCOPES)
    elif isinstance(scopes, str):
        scopes = scopes.replace(",", " ").split()
    if not isinstance(scopes, list) or not scopes or not all(
            isinstance(s, str) and s in SCOPES for s in scopes):
        problems.append({"field": "scopes", "problem": f"a list of: {', '.join(SCOPES)}"})
    if problems:
        raise InvalidRequest("Invalid OAuth client", details=problems)
    secret = CLIENT_SECRET_PREFIX + secrets.token_urlsafe(32) if confidential else None
    client = OAuthClient.create(
        client_id=CLIENT_ID_PREFIX + secrets.token_hex(12),
        secret_hash=_hash(secret) if secret else None, name=name.strip(),
        redirect_uris="\n".join(dict.fromkeys(redirect_uris)),
        scopes=" ".join(dict.fromkeys(scopes)), confidential=confidential)
    return client, secret


def list_clients() -> list[OAuthClient]:
    return list(OAuthClient.select().order_by(OAuthClient.created_at.desc(),
                                              OAuthClient.client_id))


def client_view(client: OAuthClient) -> dict:
    from core.timefmt import iso

    return {"client_id": client.client_id, "name": client.name,
            "redirect_uris": client.redirect_uri_list, "scopes": client.scope_list,
            "confidential": client.confidential, "created_at": iso(client.created_at)}


def get_client(client_id) -> OAuthClient | None:
    return _client(client_id)


# --- the consent form's CSRF token -----------------------------------------------------


def csrf_nonce() -> str:
    return secrets.token_urlsafe(24)


def csrf_key(config) -> bytes:
    """The consent forms' HMAC key: ``OAUTH_CSRF_SECRET``, else derived from ``ADMIN_KEY``
    (stable across gunicorn workers without another setting), else random per process."""
    secret = config.oauth.csrf_secret
    if secret:
        return secret.encode()
    if config.admin_key:
        return hashlib.sha256(b"oauth-consent-csrf:" + config.admin_key.encode()).digest()
    log.warning("no OAUTH_CSRF_SECRET or ADMIN_KEY: consent forms work only on the "
                "process that rendered them")
    return secrets.token_bytes(32)


class ConsentCsrf:
    """The hidden-field token: an HMAC of the cookie's nonce, the client and a timestamp,
    so a form is bound to the browser that loaded it, to one client, and expires after
    ``ttl`` seconds by ``clock``."""

    def __init__(self, key: bytes, clock: Clock = SYSTEM, ttl: int = CSRF_TTL):
        self.key = key
        self.clock = clock
        self.ttl = ttl

    def token(self, nonce: str, client_id: str, issued: int | None = None) -> str:
        issued = str(int(issued if issued is not None else self.clock.time()))
        mac = hmac.new(self.key, f"{nonce}|{client_id}|{issued}".encode(),
                       hashlib.sha256).hexdigest()
        return f"{issued}.{mac}"

    def check(self, nonce, client_id, token) -> bool:
        if not all(isinstance(v, str) and v for v in (nonce, client_id, token)):
            return False
        issued, _, _ = token.partition(".")
        if not issued.isdigit() or self.clock.time() - int(issued) > self.ttl:
            return False
        return hmac.compare_digest(self.token(nonce, client_id, int(issued)), token)


# --- the authenticator -----------------------------------------------------------------


class OAuthTokenAuthenticator:
    """``Authorization: Bearer gwo_...``; rate-limited per client and user together."""

    kind = "oauth"

    def __init__(self, config, clock: Clock = SYSTEM):
        self.config = config
        self.clock = clock

    def accepts(self, presented: Presented) -> bool:
        return presented.token.startswith(ACCESS_PREFIX)

    def authenticate(self, presented: Presented) -> Caller:
        row = with_account(OAuthToken, OAuthToken.access_hash == _hash(presented.token))
        if row is None or row.revoked_at is not None or row.access_revoked_at is not None:
            raise AuthError("AUTH_FAILED", "Unknown or revoked OAuth access token")
        if row.access_expires_at <= self.clock.now():
            raise AuthError("AUTH_FAILED", "The OAuth access token has expired; refresh it")
        return caller_for(row, self.config, self.kind, f"{row.client_id}:{row.account_id}",
                          frozenset(row.scopes.split()))


def authenticators(config, clock: Clock = SYSTEM) -> list:
    """Credential kinds this module adds to the middleware, asked after API keys."""
    return [OAuthTokenAuthenticator(config, clock)]
