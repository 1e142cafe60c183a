"""Rate limits (Flask-Limiter): RATE_LIMIT requests per client address and route; "" turns them off.

The counters live in Redis when REDIS_URL is set, so every process behind the load balancer shares
one budget per client; otherwise in process memory. A client over the limit gets 429
`{"error": "too_many_requests", "message"}` with Retry-After; every limited answer carries the
X-RateLimit-Limit / -Remaining / -Reset headers. The health checks are never limited: a load
balancer polling them must not take an instance out for being polled.

Socket.IO messages never pass through Flask-Limiter, so the credentials they carry (a `register_user`
token, a `subscribe_dashboard` key) have a budget of their own: RATE_LIMIT *failed* attempts per client
address and kind of credential (AttemptLimiter). Over it, every attempt of that kind is refused with
`too_many_requests`, a valid one too: otherwise a guess that happens to be right would stand out.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from utils.cache import REDIS_TIMEOUT_SECONDS
from web.context import SETTINGS_KEY
from web.errors import ApiError

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/health", "/health/live"})
ATTEMPTS_KEY = "socket_attempt_limiter"
STORAGE_RETRY_SECONDS = 5.0  # after a Redis failure, count in process memory this long before trying again


class AttemptLimiter:
    """Failed credential attempts over Socket.IO, per client address and kind, on the RATE_LIMIT budget.

    Counted in Redis when REDIS_URL is set (one budget across processes), else in process memory; while
    Redis fails, in process memory.
    """

    def __init__(self, limit: str, redis_url: str | None, namespace: str) -> None:
        self.limit = parse(limit)
        self._namespace = f"{namespace}:socketio-attempts"
        self._memory = FixedWindowRateLimiter(MemoryStorage())
        self._shared = None
        if redis_url:
            storage = storage_from_string(redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                          socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
            self._shared = FixedWindowRateLimiter(storage)
        self._shared_down_until = 0.0

    def blocked(self, kind: str) -> bool:
        """Whether this client has used up its failed attempts of `kind` (ask before checking one)."""
        return not self._call("test", kind)

    def failed(self, kind: str) -> None:
        """Count one failed attempt of `kind` by this client."""
        self._call("hit", kind)

    def retry_after(self, kind: str) -> int:
        """Seconds until this client's window of `kind` starts again."""
        reset = self._call("get_window_stats", kind).reset_time
        return max(1, int(reset - time.time() + 0.999))

    def _call(self, method: str, kind: str):
        identifiers = (self._namespace, kind, get_remote_address() or "unknown")
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            try:
                return getattr(self._shared, method)(self.limit, *identifiers)
            except Exception as error:  # Redis away: count here until it is back
                log.warning("rate limit storage unreachable, counting in this process: %s", error)
                self._shared_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
        return getattr(self._memory, method)(self.limit, *identifiers)


def current_attempt_limiter() -> AttemptLimiter | None:
    """The app's limiter of Socket.IO credential attempts; None when RATE_LIMIT is off."""
    return current_app.extensions.get(ATTEMPTS_KEY)


def too_many_attempts(limiter: AttemptLimiter, kind: str) -> dict:
    """The `error` payload for a client over its budget of `kind` attempts."""
    return {"error": "too_many_requests",
            "message": f"rate limit exceeded: {limiter.limit} failed attempts; retry in {limiter.retry_after(kind)} s"}


def init_rate_limits(app: Flask) -> Limiter | None:
    """Limit every route of `app`; returns the limiter (None when RATE_LIMIT is empty)."""
    settings = app.extensions[SETTINGS_KEY]
    if not settings.rate_limit:
        return None
    app.extensions[ATTEMPTS_KEY] = AttemptLimiter(settings.rate_limit, settings.redis_url, settings.redis_namespace)
    limiter = Limiter(
        get_remote_address,
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri=settings.redis_url or "memory://",
        # Without timeouts a hung Redis (stopped, or dropping packets) held every limited request forever.
        storage_options={"socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS}
        if settings.redis_url else {},
        key_prefix=f"{settings.redis_namespace}:ratelimit",
        headers_enabled=True,
        in_memory_fallback_enabled=True,  # a Redis outage limits per process instead of failing requests
    )
    limiter.request_filter(lambda: request.path in EXEMPT_PATHS)
    app.register_error_handler(RateLimitExceeded, _too_many_requests)
    return limiter


def _too_many_requests(exc: RateLimitExceeded) -> Response:
    """Names the limit ("5 per 1 minute"); Flask-Limiter adds Retry-After to the answer afterwards."""
    return ApiError(429, "too_many_requests", f"rate limit exceeded: {exc.description}").to_response()
