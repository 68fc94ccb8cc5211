"""Request hooks, in the order they must run (each relies on the one before):

1. ``RequestContext``: request id, body-size limit, metrics. First, so every response,
   errors included, carries ``X-Request-ID`` and is counted.
   ``Cors`` (only with ``CORS_ORIGINS``): a browser's preflight from a configured origin
   is answered 204 here, before the database and authentication (a preflight carries no
   credentials, so ``Identify`` would refuse it 401); every response to such an origin,
   errors included, gets the ``Access-Control-*`` headers on the way out.
2. ``DatabaseSession``: a pooled connection per request, after routing so ``/health``
   answers without touching the database.
3. ``Identify``: who is calling (API key, OAuth and bearer tokens; or the admin key, with
   failed admin keys limited per client address), and the caller's rate limit, counted in
   the same Redis round trip that confirms the process's cached credentials and prices
   are current (``metering.generations``): a revoked key or a new price is seen on the
   very next request, on every process.
4. ``RateLimit``: the limit of unauthenticated routes (per client address), and the
   ``X-RateLimit-*`` headers of every limited response.
5. ``EdgeParams``: control characters in path and query parameters are refused here, once
   for every route (``gateway.edge``), after authentication and rate limiting so such a
   request is answered and counted like any other.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time

import falcon
import peewee

from core.errors import AuthError, Forbidden, PayloadTooLarge, RateLimited, ServiceUnavailable
from gateway import edge, metrics
from metering.db import checkin, checkout
from metering.ratelimit import STALE
from oauth.scopes import required_scope

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Bodies that are files: limited by the upload limit (UPLOAD_MAX_BYTES, and per plan where
# they are read), not MAX_BODY_BYTES. Exact paths, and the prefix of tus upload URLs.
UPLOAD_PATHS = ("/upload", "/uploadFile")
UPLOAD_PREFIX = "/uploads"

# Resource ``auth`` policies.
NONE, ACCOUNT, ADMIN, ADDRESS = "none", "account", "admin", "address"


class RequestContext:
    def __init__(self, config):
        self.max_body = config.max_body_bytes

    def process_request(self, req, resp):
        req.context.started = time.perf_counter()
        req.context.max_body = self.max_body
        given = req.get_header("X-Request-ID")
        req.context.request_id = given if given and SANE_REQUEST_ID.match(given) \
            else "req_" + secrets.token_hex(12)
        req.context.caller = None
        req.context.ratelimit = None
        upload = req.path in UPLOAD_PATHS or req.path == UPLOAD_PREFIX or \
            req.path.startswith(UPLOAD_PREFIX + "/")
        # A file body is limited by its resource, to the caller's plan, while it streams.
        if not upload and req.content_length and req.content_length > self.max_body:
            raise PayloadTooLarge(f"The request body is over {self.max_body} bytes")

    def process_response(self, req, resp, resource, req_succeeded):
        resp.set_header("X-Request-ID", req.context.request_id)
        route = req.uri_template or "unmatched"
        metrics.count_request(route, req.method, resp.status[:3],
                              time.perf_counter() - req.context.started)


# Response headers a browser script may read (beyond the CORS-safelisted ones): the ones
# the contract documents for callers (request id, receipts, limits, async and tus).
CORS_EXPOSE = ("X-Request-ID", "X-Txn-Receipt", "X-Credits-Used", "X-Run-ID",
               "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
               "Retry-After", "Location", "Idempotent-Replayed", "ETag",
               "Content-Disposition", "Upload-Offset", "Upload-Length", "Upload-Expires",
               "Upload-Metadata", "Upload-Content-Id", "Tus-Resumable")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class Cors(falcon.CORSMiddleware):
    """Falcon's CORS policy for ``CORS_ORIGINS``, plus a preflight answered before
    authentication. Origins not configured get no CORS headers at all (the browser then
    refuses the response to the script), and no credentials mode is offered: callers
    send their API key or token in ``Authorization``, never a cookie."""

    def __init__(self, origins):
        super().__init__(allow_origins="*" if origins == ("*",) else list(origins),
                         expose_headers=list(CORS_EXPOSE))

    def _allowed(self, origin) -> bool:
        return origin is not None and (self.allow_origins == "*"
                                       or origin in self.allow_origins)

    def process_resource(self, req, resp, resource, params):
        if (resource is None or req.method != "OPTIONS"
                or not req.get_header("Access-Control-Request-Method")
                or not self._allowed(req.get_header("Origin"))):
            return
        # ``Allow`` lists the route's own methods; the base class turns it into
        # Access-Control-Allow-Methods (and Allow-Headers, Max-Age) in process_response.
        methods = [m for m in _METHODS if hasattr(resource, "on_" + m.lower())
                   or (m == "HEAD" and hasattr(resource, "on_get"))]
        resp.set_header("Allow", ", ".join([*methods, "OPTIONS"]))
        resp.status = falcon.HTTP_204
        resp.complete = True  # no database, no authentication, no responder


class DatabaseSession:
    """A connection per request (``metering.db.checkout``/``checkin``): under gunicorn a
    request thread keeps its connection between requests; a request that ended in a server
    error hands it back to the pool, which drops it if it broke."""

    def process_resource(self, req, resp, resource, params):
        if resource is None or not getattr(resource, "uses_db", True):
            return
        try:
            checkout()
        except peewee.OperationalError:
            raise ServiceUnavailable("The database is unavailable") from None
        req.context.db_opened = True

    def process_response(self, req, resp, resource, req_succeeded):
        if getattr(req.context, "db_opened", False):
            checkin(req_succeeded and resp.status_code < 500)


class Identify:
    def __init__(self, config, authenticators, limiter=None, *, credentials=None, prices=None):
        self.admin_key = config.admin_key.encode()
        self.authenticators = authenticators
        self.limiter = limiter
        self.admin_guard = AdminGuard(limiter, config) if limiter is not None else None
        self.credentials = credentials  # oauth.credentials.CredentialCache (API keys)
        self.prices = prices  # metering.plans.PriceBook

    def process_resource(self, req, resp, resource, params):
        policy = getattr(resource, "auth", ACCOUNT) if resource is not None else NONE
        if policy == ADMIN:
            self._check_admin(req)
        elif policy == ACCOUNT:
            self._identify(req, resource)

    def _identify(self, req, resource):
        authorization, x_api_key = req.get_header("Authorization"), req.get_header("X-API-Key")
        caller = self._caller(req, resource, authorization, x_api_key, cached=True)
        decision = self._count(caller)
        if decision is STALE or (decision is None and caller.generation is not None):
            # The cached credential is not known to be current (a newer generation, or
            # Redis did not answer to confirm it): read it from the database.
            if self.credentials is not None:
                self.credentials.forget()
            caller = self._caller(req, resource, authorization, x_api_key, cached=False)
            decision = self._count(caller)
        fresh = decision is not None and decision is not STALE
        if self.credentials is not None:
            self.credentials.observe(decision.key_generation if fresh else None)
        if self.prices is not None:
            self.prices.observe(decision.price_generation if fresh else None)
        req.context.ratelimit = decision if fresh else None
        refuse_if_limited(req.context.ratelimit)
        # After counting: a request refused for its scope is still an authenticated
        # request (CONTRACT 3), counted and answered with its X-RateLimit headers.
        needed = required_scope(resource, req.method)
        if needed and caller.scopes is not None and needed not in caller.scopes:
            raise Forbidden(f"This credential lacks the {needed} scope")

    def _caller(self, req, resource, authorization, x_api_key, *, cached):
        caller = self.authenticators.identify(authorization, x_api_key, cached=cached)
        req.context.caller = caller
        return caller

    def _count(self, caller):
        if self.limiter is None:
            return None
        return self.limiter.gate(caller.rate_key, caller.limits.per_minute,
                                 caller.limits.per_day, expect=caller.generation)

    def _check_admin(self, req):
        if not self.admin_key:
            raise Forbidden("Admin routes are disabled: no ADMIN_KEY is configured")
        given = req.get_header("X-Administration-Key")
        if not given:
            raise AuthError("MISSING_AUTH_HEADER", "Send the X-Administration-Key header")
        guard = self.admin_guard
        address = guard.before(req) if guard is not None else None
        if not hmac.compare_digest(given.encode(), self.admin_key):
            if guard is not None:
                guard.failed(address)
            raise AuthError("AUTH_FAILED", "Wrong administration key")


class AdminGuard:
    """Wrong ``X-Administration-Key`` values are limited per client address.

    At most ``ADMIN_FAILURES_PER_WINDOW`` (10) wrong keys per ``ADMIN_FAILURE_WINDOW_SECONDS``
    (900) from one address (``TRUSTED_PROXIES`` decides what the address is). Beyond that
    every admin request from the address, the right key included, is ``429 RATE_LIMITED``
    with ``Retry-After`` until the window ends: answering a right key differently would
    tell a guesser when it found it. Right keys are not counted, so an operator's scripts
    are never limited by their own traffic. Redis down: the limiter fails open."""

    def __init__(self, limiter, config):
        self.limiter = limiter
        self.per_window = config.admin_failures_per_window
        self.window = config.admin_failure_window_s
        self.trusted_proxies = config.trusted_proxies

    def before(self, req) -> str:
        """The client's address, once it is known not to be over its limit."""
        address = client_address(req, self.trusted_proxies)
        self._refuse_if_over(self.limiter.peek_window("admin:fail:" + address,
                                                      self.per_window, self.window))
        return address

    def failed(self, address: str) -> None:
        self._refuse_if_over(self.limiter.check_window("admin:fail:" + address,
                                                       self.per_window, self.window))

    @staticmethod
    def _refuse_if_over(decision):
        if decision is not None and not decision.allowed:
            metrics.RATE_LIMITED.inc()
            raise RateLimited(f"Too many wrong administration keys from this address; retry "
                              f"in {decision.retry_after}s", retry_after=decision.retry_after)


class RateLimit:
    def __init__(self, config, limiter):
        self.limiter = limiter
        self.per_hour = config.signup_per_hour
        self.trusted_proxies = config.trusted_proxies

    def process_resource(self, req, resp, resource, params):
        if req.context.caller is not None:
            return  # counted by Identify, in the round trip that checked its caches
        if resource is not None and getattr(resource, "auth", None) == ADDRESS \
                and req.method == "POST":
            address = client_address(req, self.trusted_proxies)
            decision = self.limiter.check_hourly("addr:" + address, self.per_hour)
            req.context.ratelimit = decision
            refuse_if_limited(decision)

    def process_response(self, req, resp, resource, req_succeeded):
        decision = req.context.ratelimit
        if decision is not None:
            resp.set_header("X-RateLimit-Limit", str(decision.limit))
            resp.set_header("X-RateLimit-Remaining", str(decision.remaining))
            resp.set_header("X-RateLimit-Reset", str(decision.reset))


class EdgeParams:
    """Control characters in path and query parameters: 404 and 400 (``gateway.edge``)."""

    def process_resource(self, req, resp, resource, params):
        if resource is not None:
            edge.refuse_bad_params(req, params)


def identify_in_resource(req, authenticators, limiter, scope: str):
    """``Identify`` for a route that authenticates in its resource (``auth = NONE``: it
    also takes a password, the admin key or a signed link). The credential is read from
    the database, never the process cache, since no gate round trip confirms a cached key
    here (a revoked key is refused at once); the request is counted like any account
    request, then its scope is checked, as ``Identify`` does."""
    caller = authenticators.identify(req.get_header("Authorization"),
                                     req.get_header("X-API-Key"), cached=False)
    req.context.caller = caller
    decision = limiter.check(caller.rate_key, caller.limits.per_minute, caller.limits.per_day)
    req.context.ratelimit = decision
    refuse_if_limited(decision)
    if caller.scopes is not None and scope not in caller.scopes:
        raise Forbidden(f"This credential lacks the {scope} scope")
    return caller


def refuse_if_limited(decision) -> None:
    if decision is not None and not decision.allowed:
        metrics.RATE_LIMITED.inc()
        raise RateLimited(f"Rate limit of {decision.limit} exceeded; retry in "
                          f"{decision.retry_after}s", retry_after=decision.retry_after)


def client_address(req, trusted_proxies: int) -> str:
    """The caller's address, believing only as many X-Forwarded-For hops as configured."""
    if trusted_proxies > 0:
        forwarded = req.get_header("X-Forwarded-For") or ""
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies]
    return req.remote_addr or "unknown"
