"""The HTTP API (docs/api-contract.md) as a Flask app factory with one blueprint per resource."""
from __future__ import annotations

from flask import Flask
from flask.sessions import NullSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from config.settings import Settings, load_settings
from service import RecommendationService
from web import (catalog, demo, experiments, interactions, landing, openapi, recommendations, rules, socket_events,
                 system, users)
from web.auth import init_auth
from web.context import SERVICE_KEY, SETTINGS_KEY, get_service
from web.dashboard import init_dashboard
from web.errors import register_error_handlers
from web.extensions import socketio
from web.json_provider import OrjsonProvider
from web.observability import init_observability
from web.rate_limits import init_rate_limits
from web.request_timing import RequestTimer

__all__ = ["create_app", "get_service"]


class _NoSessions(SecureCookieSessionInterface):
    """The API keeps no sessions (no SECRET_KEY), so every request gets Flask's empty, read-only
    NullSession: one shared instance instead of a new one per request (2% of a write's CPU)."""

    _null = NullSession()

    def make_null_session(self, app: Flask) -> NullSession:
        return self._null


class RecommendationApp(Flask):
    json_provider_class = OrjsonProvider
    session_interface = _NoSessions()


def create_app(settings: Settings | None = None, service: RecommendationService | None = None) -> Flask:
    """Build the app around `service`, or one created from `settings`; the caller owns its lifetime."""
    settings = settings or load_settings()
    app = RecommendationApp(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[SERVICE_KEY] = service if service is not None else RecommendationService.create(settings)
    RequestTimer().init_app(app)
    register_error_handlers(app)
    for module in (recommendations, interactions, catalog, rules, users, system, demo, landing, experiments):
        app.register_blueprint(module.bp)
    subscriptions = app.extensions[socket_events.SUBSCRIPTIONS_KEY] = socket_events.Subscriptions()
    socketio.init_app(app, async_mode=settings.async_mode, serializer=socket_events.GuardedPacket)
    app.extensions[SERVICE_KEY].notifier = socket_events.SocketIONotifier(socketio, subscriptions)
    init_rate_limits(app)  # before auth: limits also slow down guessing the API key
    init_auth(app)
    init_observability(app)  # before the dashboard, which reads its counters
    init_dashboard(app)
    app.register_blueprint(openapi.bp)  # its document is built on first request, from every route
    if settings.trusted_proxies:  # outermost, so Socket.IO's handlers see the client's address too
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    return app
