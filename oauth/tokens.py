"""Password bearer tokens (seed 001): HS256 JWT access tokens, rotating refresh tokens.

- ``POST /auth/token`` checks a username and password and starts a *token family* (one
  bearer session): a short-lived JWT access token plus an opaque refresh token.
- ``POST /auth/refresh`` spends a refresh token (single use) for a new pair in the same
  family. Presenting an already rotated refresh token after the grace period is treated
  as theft: the whole family is revoked, its access tokens included. Seed 001 sends a
  live *access* token there instead: that gives a new access token of the same family
  (no refresh token), only while the family still has a live refresh token, so a chain
  of access refreshes never outlives the session (``refresh_access``).
- ``JwtAuthenticator`` lets access tokens in through the ``Identify`` middleware as
  ``Caller(kind="bearer", credential_id=<family id>)``, so rate limits count per session.

Settings: ``config.tokens`` (``core.config.TokenConfig``, parsed once from ``JWT_SECRET``,
``JWT_ACCESS_TTL``, ``JWT_REFRESH_TTL``, ``JWT_REFRESH_GRACE`` and ``JWT_LEEWAY``). Without
``JWT_SECRET`` one is generated once and kept in ``DATA_DIR/jwt_secret``, mode 0600.
Every expiry is checked against the injected ``Clock``, never the machine's own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import secrets
from pathlib import Path

import jwt

from core import keyfile
from core.clock import SYSTEM, Clock
from core.config import JWT_MIN_SECRET_LEN, ConfigError, TokenConfig
from core.errors import AuthError, Forbidden
from core.ids import new_id
from metering.db import write_transaction
from metering.models import Account
from oauth.credentials import Caller, Presented, caller_for, with_account
from oauth.session_models import RefreshToken, TokenFamily

ALGORITHM = "HS256"
ACCESS_KIND = "access"
REFRESH_PREFIX = "gwr_"
SECRET_FILE = "jwt_secret"  # noqa: S105 (a file name)
MIN_SECRET_LEN = JWT_MIN_SECRET_LEN
JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def load_secret(given: str, data_dir) -> str:
    """``given`` (the parsed ``JWT_SECRET``), or when empty the generated secret kept in
    ``DATA_DIR/jwt_secret`` (0600; ``core.keyfile``)."""
    if given:
        if len(given) < MIN_SECRET_LEN:
            raise ConfigError(f"JWT_SECRET must be at least {MIN_SECRET_LEN} characters")
        return given
    path = Path(data_dir) / SECRET_FILE
    secret = keyfile.load_or_create(path)
    if len(secret) < MIN_SECRET_LEN:
        raise ConfigError(f"{path} holds a JWT secret shorter than {MIN_SECRET_LEN} characters")
    return secret


def hash_refresh(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_jwt(token: str) -> bool:
    return bool(JWT_SHAPE.match(token))


class TokenService:
    """Issues, rotates and revokes bearer sessions; verifies access tokens."""

    def __init__(self, settings: TokenConfig, clock: Clock = SYSTEM):
        if not settings.secret:
            raise ValueError("TokenService needs a secret: build it with from_config")
        self.settings = settings
        self.clock = clock

    @classmethod
    def from_config(cls, config, clock: Clock = SYSTEM) -> TokenService:
        """The service for ``config.tokens``, with the generated secret when none is set."""
        secret = load_secret(config.tokens.secret, config.data_dir)
        return cls(dataclasses.replace(config.tokens, secret=secret), clock)

    # --- access tokens -----------------------------------------------------------------

    def encode_access(self, account_id: str, family_id: str) -> tuple[str, int]:
        now = int(self.clock.time())
        ttl = self.settings.access_ttl
        claims = {"sub": account_id, "iat": now, "exp": now + ttl,
                  "jti": new_id("jti", 12), "fam": family_id, "kind": ACCESS_KIND}
        return jwt.encode(claims, self.settings.secret, algorithm=ALGORITHM), ttl

    def decode_access(self, token: str) -> dict:
        """The verified claims of an access token, or ``AuthError`` (401)."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM:  # "none", RS256, HS512...: never accepted
                raise AuthError("AUTH_FAILED", "Unsupported token algorithm")
            # PyJWT checks the signature and that the claims are present; the times are
            # checked by _check_times on self.clock (PyJWT would use the machine's clock).
            claims = jwt.decode(token, self.settings.secret, algorithms=[ALGORITHM],
                                options={"require": ["sub", "iat", "exp", "jti"],
                                         "verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False})
        except jwt.InvalidTokenError:
            raise AuthError("AUTH_FAILED", "Invalid bearer token") from None
        self._check_times(claims)
        if claims.get("kind") != ACCESS_KIND or not isinstance(claims.get("fam"), str) \
                or not isinstance(claims.get("sub"), str):
            raise AuthError("AUTH_FAILED", "Invalid bearer token")
        return claims

    def _check_times(self, claims: dict) -> None:
        """``iat``/``nbf`` not in the future and ``exp`` not past, by ``self.clock`` and with
        ``JWT_LEEWAY`` seconds of skew either way (what PyJWT checks, on our clock)."""
        now, leeway = self.clock.time(), self.settings.leeway
        try:
            exp = int(claims["exp"])
            iat = int(claims["iat"])
            nbf = int(claims["nbf"]) if "nbf" in claims else None
        except (ValueError, TypeError, OverflowError):
            raise AuthError("AUTH_FAILED", "Invalid bearer token") from None
        if iat > now + leeway or (nbf is not None and nbf > now + leeway):
            raise AuthError("AUTH_FAILED", "Invalid bearer token")
        if exp <= now - leeway:
            raise AuthError("AUTH_FAILED", "The bearer token has expired")

    # --- sessions ----------------------------------------------------------------------

    def _new_refresh(self, account_id: str, family_id: str) -> tuple[RefreshToken, str]:
        secret = REFRESH_PREFIX + secrets.token_urlsafe(32)
        row = RefreshToken.create(
            id=new_id("rtok", 10), family=family_id, account=account_id,
            token_hash=hash_refresh(secret),
            expires_at=self.clock.now() + dt.timedelta(seconds=self.settings.refresh_ttl))
        return row, secret

    def _pair(self, account_id, family_id, refresh_secret) -> dict:
        access, ttl = self.encode_access(account_id, family_id)
        return {"access_token": access, "token_type": "bearer", "expires_in": ttl,
                "refresh_token": refresh_secret,
                "refresh_expires_in": self.settings.refresh_ttl}

    def start_session(self, account: Account) -> dict:
        """A new token family for an account that just proved its password."""
        with write_transaction():
            family = TokenFamily.create(id=new_id("tfam", 10), account=account.id)
            _, refresh = self._new_refresh(account.id, family.id)
        return self._pair(account.id, family.id, refresh)

    def refresh(self, token) -> dict:
        """Spend a refresh token for a new pair; reuse after the grace period revokes all."""
        if not isinstance(token, str) or not token.startswith(REFRESH_PREFIX) \
                or len(token) > 200:
            raise AuthError("AUTH_FAILED", "Unknown refresh token")
        row = (RefreshToken.select(RefreshToken, TokenFamily, Account)
               .join(TokenFamily).switch(RefreshToken).join(Account)
               .where(RefreshToken.token_hash == hash_refresh(token)).first())
        if row is None:
            raise AuthError("AUTH_FAILED", "Unknown refresh token")
        now = self.clock.now()
        if row.revoked_at is not None or row.family.revoked_at is not None:
            raise AuthError("AUTH_FAILED", "This session has been revoked")
        if row.expires_at <= now:
            raise AuthError("AUTH_FAILED", "The refresh token has expired")
        if row.account.disabled:
            raise Forbidden("This account is disabled")
        with write_transaction():
            claimed = (RefreshToken.update(used_at=now)
                       .where((RefreshToken.id == row.id) & RefreshToken.used_at.is_null()
                              & RefreshToken.revoked_at.is_null())
                       .execute())
            reuse = False
            if not claimed:  # already rotated: within the grace period two racing
                # clients both get a pair; later it is reuse of a stolen token
                used_at = (RefreshToken.select(RefreshToken.used_at)
                           .where(RefreshToken.id == row.id).scalar())
                grace = dt.timedelta(seconds=self.settings.refresh_grace)
                reuse = used_at is None or now - used_at > grace
            if not reuse:
                new_row, refresh = self._new_refresh(row.account_id, row.family_id)
                if claimed:
                    RefreshToken.update(replaced_by=new_row.id).where(
                        RefreshToken.id == row.id).execute()
        if reuse:
            self.revoke_family(row.family_id, "refresh token reuse")
            raise AuthError("AUTH_FAILED",
                            "This refresh token was already used; the session is revoked")
        return self._pair(row.account_id, row.family_id, refresh)

    def refresh_access(self, token: str) -> dict:
        """Seed 001's refresh: a live access token -> a new access token of its session.

        Refused (401) when the token is invalid or expired, its session is revoked, or the
        session has no live refresh token left (it ended: sign in again)."""
        claims = self.decode_access(token)
        family = (TokenFamily.select(TokenFamily, Account).join(Account)
                  .where((TokenFamily.id == claims["fam"])
                         & (TokenFamily.account == claims["sub"])).first())
        if family is None or family.revoked_at is not None:
            raise AuthError("AUTH_FAILED", "This session has been revoked")
        if family.account.disabled:
            raise Forbidden("This account is disabled")
        live = (RefreshToken.select().where(
            (RefreshToken.family == family.id) & RefreshToken.revoked_at.is_null()
            & (RefreshToken.expires_at > self.clock.now())).exists())
        if not live:
            raise AuthError("AUTH_FAILED", "This session has expired; sign in again")
        access, ttl = self.encode_access(family.account_id, family.id)
        return {"access_token": access, "token_type": "bearer", "expires_in": ttl}

    def revoke_family(self, family_id: str, reason: str) -> None:
        now = self.clock.now()
        with write_transaction():
            TokenFamily.update(revoked_at=now, revoked_reason=reason[:64]).where(
                (TokenFamily.id == family_id) & TokenFamily.revoked_at.is_null()).execute()
            RefreshToken.update(revoked_at=now).where(
                (RefreshToken.family == family_id) & RefreshToken.revoked_at.is_null()).execute()


class JwtAuthenticator:
    """Access tokens from ``/auth/token``; full access like the password owner."""

    kind = "bearer"

    def __init__(self, config, service: TokenService | None = None, clock: Clock = SYSTEM):
        self.config = config
        self.service = service or TokenService.from_config(config, clock)

    def accepts(self, presented: Presented) -> bool:
        return looks_like_jwt(presented.token)

    def authenticate(self, presented: Presented) -> Caller:
        claims = self.service.decode_access(presented.token)
        row = with_account(TokenFamily, (TokenFamily.id == claims["fam"])
                           & (TokenFamily.account == claims["sub"]))
        if row is None or row.revoked_at is not None:
            raise AuthError("AUTH_FAILED", "This session has been revoked")
        return caller_for(row, self.config, self.kind, row.id)
