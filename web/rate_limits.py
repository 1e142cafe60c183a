"""Rate limits (Flask-Limiter): RATE_LIMIT requests per client address and route; "" turns them off.

The counters live in Redis when REDIS_URL is set, so every process behind the load balancer shares
one budget per client; otherwise in process memory. A client over the limit gets 429
`{"error": "too_many_requests", "message"}` with Retry-After; every limited answer carries the
X-RateLimit-Limit / -Remaining / -Reset headers. The health checks are never limited: a load
balancer polling them must not take an instance out for being polled.
"""
from __future__ import annotations

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from utils.cache import REDIS_TIMEOUT_SECONDS
from web.context import SETTINGS_KEY
from web.errors import ApiError

EXEMPT_PATHS = frozenset({"/health", "/health/live"})


def init_rate_limits(app: Flask) -> Limiter | None:
    """Limit every route of `app`; returns the limiter (None when RATE_LIMIT is empty)."""
    settings = app.extensions[SETTINGS_KEY]
    if not settings.rate_limit:
        return None
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
