"""Configuration, read once from the environment at the edge (``Config.from_env()``).

Everything else receives a ``Config`` instance; nothing below this module reads
``os.environ``, so tests build the app with their own settings.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType


class ConfigError(ValueError):
    """An environment variable has a value the gateway cannot use."""


def _int(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _bool(env, name, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


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


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one gateway deployment; see the README's configuration table."""

    data_dir: Path = Path("var")
    database_url: str = ""
    redis_url: str = ""  # empty: an embedded redis-server under data_dir
    redis_prefix: str = "gw"
    public_base_url: str = ""  # empty: derived from each request's Host
    admin_key: str = ""  # empty: admin routes answer 403
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
    bind: str = "127.0.0.1:8000"  # where gunicorn listens; output URLs fall back to it
    job_heartbeat_s: float = 5.0  # a running job's worker proves it is alive this often
    job_ttl_s: int = 0  # 0: each action's own ttl; else an override for every action
    default_wait_s: int = 25  # how long an async POST waits for the result by default
    webhook_retry_schedule: tuple = ()  # seconds between retries; empty: about a day
    models_file: str = ""  # the model catalogue (JSON); empty: DATA_DIR/models.json if any
    gpu_device: str = "auto"  # auto | cpu | cuda | cuda:N, for generation workers
    gpu_max_models: int = 1  # pipelines a worker keeps loaded at once
    gpu_batch_max: int = 1  # queued requests of one model and size run as one batch
    gpu_memory_limit_mb: int = 0  # 0: none; else the memory a worker may use past its models
    listing_background_model: str = ""  # a catalogue model for product-listing backgrounds
    # The environment as read at start-up, for the sub-configs of optional parts (OAuth2
    # provider, bearer tokens, social login) that parse their own variables from it.
    settings: Mapping = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, env=None) -> Config:
        env = os.environ if env is None else env
        data_dir = Path(env.get("DATA_DIR") or "var").resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{data_dir / 'gateway.sqlite3'}"
        return cls(
            settings=MappingProxyType(dict(env)),
            data_dir=data_dir,
            database_url=database_url,
            redis_url=env.get("REDIS_URL", ""),
            redis_prefix=env.get("REDIS_PREFIX") or "gw",
            public_base_url=(env.get("PUBLIC_BASE_URL") or "").rstrip("/"),
            admin_key=env.get("ADMIN_KEY", ""),
            default_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 60),
            default_per_day=_int(env, "RATE_LIMIT_PER_DAY", 1000),
            signup_open=_bool(env, "SIGNUP_OPEN", True),
            signup_credits=_int(env, "SIGNUP_CREDITS", 100),
            signup_per_hour=_int(env, "SIGNUP_PER_HOUR", 20),
            idempotency_ttl_s=_int(env, "IDEMPOTENCY_TTL_SECONDS", 24 * 3600),
            idempotency_lock_s=_int(env, "IDEMPOTENCY_LOCK_SECONDS", 60),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 1024 * 1024),
            prices=_prices(env.get("PRICES")),
            trusted_proxies=_int(env, "TRUSTED_PROXIES", 0),
            ratelimit_timeout_ms=_int(env, "RATE_LIMIT_REDIS_TIMEOUT_MS", 50),
            db_pool_size=_int(env, "DB_POOL_SIZE", 20),
            log_level=env.get("LOG_LEVEL") or "INFO",
            outbound_allow_hosts=env.get("OUTBOUND_ALLOW_HOSTS", ""),
            bind=env.get("GATEWAY_BIND") or "127.0.0.1:8000",
            job_heartbeat_s=float(env.get("JOB_HEARTBEAT_SECONDS") or 5),
            job_ttl_s=_int(env, "JOB_TTL_SECONDS", 0),
            default_wait_s=_int(env, "DEFAULT_WAIT_SECONDS", 25),
            webhook_retry_schedule=tuple(
                float(x) for x in (env.get("WEBHOOK_RETRY_SCHEDULE") or "").split(",") if x),
            models_file=env.get("MODELS_FILE", ""),
            gpu_device=env.get("GPU_DEVICE") or "auto",
            gpu_max_models=_int(env, "GPU_MAX_MODELS", 1),
            gpu_batch_max=_int(env, "GPU_BATCH_MAX", 1),
            gpu_memory_limit_mb=_int(env, "GPU_MEMORY_LIMIT_MB", 0),
            listing_background_model=env.get("LISTING_BACKGROUND_MODEL", ""),
        )

    def replace(self, **changes) -> Config:
        return dataclasses.replace(self, **changes)
