"""The app factory: ``create_app(config)`` wires stores, services and routes.

Dependencies are built here from the config (or passed in by tests), never imported as
globals by resources.
"""

from __future__ import annotations

import dataclasses
import logging

import falcon

from actions.outbound import OutboundPolicy
from actions.registry import Registry, default_registry
from actions.runner import ActionService
from core.clock import SYSTEM, Clock
from core.ids import new_id
from gateway import errors, middleware, openapi
from gateway.routes import route_table
from jobs.connection import redis_client, resolve_redis_url
from jobs.gpu.catalogue import Catalogue
from jobs.storage import Storage
from metering import db
from metering.ratelimit import RateLimiter
from oauth import provider, tokens
from oauth.credentials import ApiKeyAuthenticator, Authenticators


@dataclasses.dataclass
class Deps:
    config: object
    redis: object
    limiter: RateLimiter
    authenticators: Authenticators
    actions: ActionService
    registry: Registry
    storage: object = None
    openapi: object = None
    clock: Clock = SYSTEM  # every business rule's "now" (tests inject a ManualClock)
    ids: object = new_id  # the id generator


def build_deps(config, *, registry=None, clock: Clock = SYSTEM) -> Deps:
    from gateway import metrics

    db.bind(config.database_url, config.db_pool_size)
    redis_url = resolve_redis_url(config)
    registry = registry or default_registry()
    redis = redis_client(redis_url)
    return Deps(
        config=config,
        redis=redis,
        limiter=RateLimiter(redis_url, prefix=config.redis_prefix,
                            timeout_ms=config.ratelimit_timeout_ms,
                            on_fail_open=metrics.RATE_LIMIT_FAIL_OPEN.inc),
        authenticators=Authenticators([ApiKeyAuthenticator(config),
                                       *provider.authenticators(config),
                                       *tokens.authenticators(config)]),
        actions=ActionService(registry, config, clock=clock, redis=redis,
                              policy=OutboundPolicy.from_config(config),
                              models=Catalogue.from_config(config)),
        registry=registry,
        storage=Storage(config),
        clock=clock,
    )


class GatewayApp(falcon.App):
    """A Falcon app that keeps its dependencies, so tests and commands can reach them."""

    deps: Deps


def create_app(config, *, deps: Deps | None = None) -> GatewayApp:
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    deps = deps or build_deps(config)
    app = GatewayApp(
        middleware=[
            middleware.RequestContext(config),
            middleware.DatabaseSession(),
            middleware.Identify(config, deps.authenticators),
            middleware.RateLimit(config, deps.limiter),
        ],
    )
    app.req_options.strip_url_path_trailing_slash = False
    app.resp_options.default_media_type = falcon.MEDIA_JSON
    errors.install(app)
    table = route_table(deps)
    deps.openapi = openapi.builder(table, deps)
    for path, resource in table:
        app.add_route(path, resource)
    app.deps = deps
    return app
