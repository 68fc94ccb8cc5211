"""The app factory: ``create_app(config)`` wires the services, middleware and routes.

The services come from the composition root (``gateway.services``) that the worker and
the commands use too; this module adds only what HTTP needs on top (the rate limiter,
the authenticators, the action service). Tests pass their own ``Deps``.
"""

from __future__ import annotations

import dataclasses
import logging

import falcon

from actions.registry import Registry
from actions.runner import ActionService
from core.clock import SYSTEM, Clock
from gateway import edge, errors, metrics, middleware, openapi
from gateway.routes import route_table
from gateway.services import Services, build_services
from jobs.content.stats import Analytics
from metering.concurrency import WaitSlots
from metering.payments.providers import build_provider
from metering.payments.purchases import PurchaseService
from metering.plans import PriceBook
from metering.ratelimit import RateLimiter
from oauth import provider, tokens
from oauth.credentials import ApiKeyAuthenticator, Authenticators, CredentialCache
from oauth.social import SocialLogin


@dataclasses.dataclass
class Deps:
    """The web tier's dependencies: the shared services plus the HTTP-only ones."""

    services: Services
    limiter: RateLimiter
    authenticators: Authenticators
    actions: ActionService
    # Identity services, built once: the middleware's authenticators and the identity
    # routes share them.
    oauth_server: provider.Server
    tokens: tokens.TokenService
    social_login: SocialLogin
    wait_slots: WaitSlots  # caps on concurrent waits and SSE streams (threads they hold)
    openapi: object = None
    # Buying credits (docs/PAYMENTS.md): the configured PayPal provider, built once.
    payments: PurchaseService | None = None
    # Views and downloads of content items (jobs.content.stats.Analytics)
    analytics: Analytics | None = None
    # Per-process caches the rate-limit round trip keeps current (metering.generations)
    credentials: CredentialCache | None = None
    prices: PriceBook | None = None

    # The shared services, by the names resources use.
    config = property(lambda self: self.services.config)
    redis = property(lambda self: self.services.redis)
    registry = property(lambda self: self.services.registry)
    storage = property(lambda self: self.services.storage)
    library = property(lambda self: self.services.library)  # the content library
    clock = property(lambda self: self.services.clock)  # every business rule's "now"
    ids = property(lambda self: self.services.ids)  # the id generator
    generations = property(lambda self: self.services.generations)


def build_deps(config, *, registry: Registry | None = None, clock: Clock = SYSTEM) -> Deps:
    s = build_services(config, role="web", clock=clock, registry=registry)
    token_service = tokens.TokenService.from_config(config, clock)
    credentials, prices = CredentialCache(), PriceBook()
    return Deps(
        services=s,
        limiter=RateLimiter(s.redis_url, prefix=config.redis_prefix,
                            timeout_ms=config.ratelimit_timeout_ms,
                            on_fail_open=metrics.RATE_LIMIT_FAIL_OPEN.inc, clock=clock),
        authenticators=Authenticators([ApiKeyAuthenticator(config, clock, credentials),
                                       *provider.authenticators(config, clock),
                                       tokens.JwtAuthenticator(config, token_service)]),
        actions=ActionService(s.registry, config, clock=clock, ids=s.ids, redis=s.redis,
                              policy=s.policy, models=s.models, library=s.library,
                              prices=prices),
        oauth_server=provider.Server.from_config(config, clock),
        tokens=token_service,
        social_login=SocialLogin.from_config(config, s.redis, clock),
        wait_slots=WaitSlots.from_config(config, s.redis, clock),
        payments=PurchaseService(build_provider(config.payments, config.public_base_url),
                                 config.payments, clock=clock, ids=s.ids),
        analytics=Analytics(s.redis, config.redis_prefix, clock),
        credentials=credentials, prices=prices,
    )


class GatewayApp(falcon.App):
    """A Falcon app that keeps its dependencies, so tests and commands can reach them."""

    deps: Deps


def create_app(config, *, deps: Deps | None = None) -> GatewayApp:
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    deps = deps or build_deps(config)
    cors = [middleware.Cors(config.cors_origins)] if config.cors_origins else []
    app = GatewayApp(
        middleware=[
            middleware.RequestContext(config),
            *cors,
            middleware.DatabaseSession(),
            middleware.Identify(config, deps.authenticators, deps.limiter,
                                credentials=deps.credentials, prices=deps.prices),
            middleware.RateLimit(config, deps.limiter),
            middleware.EdgeParams(),
        ],
    )
    app.req_options.strip_url_path_trailing_slash = False
    edge.install(app)  # JSON and form bodies refuse NUL and unpaired surrogates
    app.resp_options.default_media_type = falcon.MEDIA_JSON
    errors.install(app)
    table = route_table(deps)
    deps.openapi = openapi.builder(table, deps)
    for path, resource in table:
        app.add_route(path, resource)
    app.deps = deps
    return app
