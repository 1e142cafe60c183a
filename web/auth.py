"""API-key authentication: who may write, who may read, and who may subscribe to a user's pushes.

With no API_KEY configured (the demo default; an empty value counts as none) everything is open.
With a key:
- the write and admin routes in PROTECTED_ROUTES need it in the `X-API-Key` header;
- with API_KEY_READS, so does every read, except what load balancers and browsers fetch without
  one: the health checks, the API docs, the landing page, the demo and dashboard pages and static files;
- `/stats` without the key shows only its summary (PUBLIC_STATS_KEYS), with it everything;
- registering for a user's Socket.IO pushes needs a token for that user from `POST /auth/token`.
  Tokens are signed with HMAC-SHA256(API_KEY, TOKEN_SECRET_LABEL), so there is no second secret to
  configure, every process holding the key accepts them, and changing the key revokes them all.
  DELETE /users/<id> revokes the user's: a token issued before the user's latest deletion is refused.
A missing or wrong key gets 401 `{"error": "unauthorized", "message"}` with `WWW-Authenticate: ApiKey`.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import Blueprint, Flask, Response, current_app, request
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.exceptions import NotFound

from config.settings import Settings
from web.context import get_service, get_settings, parse_body
from web.errors import ApiError
from web.schemas import BodyModel, Id

API_KEY_HEADER = "X-API-Key"
# (method, url rule) pairs that always need the key. DELETE /users/<user_id> is listed before its
# route exists so that it is protected from the moment it is added.
PROTECTED_ROUTES = frozenset({
    ("POST", "/interactions"),
    ("POST", "/event"),
    ("POST", "/items"),
    ("PATCH", "/items/<item_id>"),
    ("POST", "/rules"),
    ("DELETE", "/rules/<rule_id>"),
    ("POST", "/users"),
    ("DELETE", "/users/<user_id>"),
    ("POST", "/auth/token"),
    ("POST", "/experiments"),
    ("POST", "/experiments/<experiment_id>/stop"),
})
READ_METHODS = frozenset({"GET", "HEAD"})
# Reads that stay open under API_KEY_READS.
# Pages that load without the key; their data still needs it (the dashboard asks for the key itself).
PUBLIC_READ_PATHS = frozenset({"/", "/health", "/health/live", "/openapi.json", "/docs", "/demo/realtime",
                               "/dashboard"})
PUBLIC_READ_PREFIXES = ("/docs/", "/static/")
# Cache hit rates and response times say how the service performs, not what it holds; the user,
# item and connection counts, the model and the background jobs are for operators.
PUBLIC_STATS_KEYS = ("cache", "requests")
TOKEN_SECRET_LABEL = b"recommendation-service: Socket.IO registration token v1"

bp = Blueprint("auth", __name__)


class TokenRequest(BodyModel):
    """POST /auth/token."""

    user_id: Id


def init_auth(app: Flask) -> None:
    app.before_request(_require_key)
    app.after_request(_summarise_stats)
    app.register_blueprint(bp)


@bp.post("/auth/token")
def issue_token() -> dict:
    """A Socket.IO registration token for one user, for the backend that logged the user in."""
    key = _configured_key()
    if key is None:
        raise NotFound("no API_KEY is configured, so Socket.IO registration needs no token")
    body = parse_body(TokenRequest)
    max_age = get_settings().token_max_age_seconds
    return {"user_id": body.user_id, "token": _serializer(key).dumps(body.user_id), "expires_in": max_age}


def verify_token(user_id: str, token: str | None) -> bool:
    """Whether `token` was issued for `user_id` under the configured key, has not expired, and was
    issued after the user's latest deletion (DELETE /users/<id> revokes the tokens issued before it).

    A token's issue time has whole seconds, so one issued in the second of the deletion counts as
    issued before it: a token for a re-created user works from the next second on.
    """
    key = _configured_key()
    if key is None or token is None:
        return False
    try:
        signed_for, issued_at = _serializer(key).loads(
            token, max_age=get_settings().token_max_age_seconds, return_timestamp=True)
    except BadData:  # bad signature, expired, or not ours at all
        return False
    if signed_for != user_id:
        return False
    deleted_at = get_service().store.user_deleted_at(user_id)  # the log is shared: every process agrees
    return deleted_at is None or issued_at.timestamp() > deleted_at


def has_valid_key() -> bool:
    """Whether the request carries the configured key (compared in constant time)."""
    key = _configured_key()
    provided = request.headers.get(API_KEY_HEADER)
    return key is not None and provided is not None and hmac.compare_digest(provided.encode(), key.encode())


def _configured_key() -> str | None:
    return get_settings().api_key or None


def _serializer(key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(hmac.new(key.encode(), TOKEN_SECRET_LABEL, hashlib.sha256).digest())


def needs_key(method: str, rule: str | None, path: str, settings: Settings) -> bool:
    """The one access policy: does this request need X-API-Key? (The OpenAPI document reads it too.)"""
    if not settings.api_key:
        return False
    if (method, rule) in PROTECTED_ROUTES:
        return True
    public = path in PUBLIC_READ_PATHS or path.startswith(PUBLIC_READ_PREFIXES)
    return settings.api_key_reads and method in READ_METHODS and not public


def _needs_key() -> bool:
    rule = request.url_rule.rule if request.url_rule is not None else None
    return needs_key(request.method, rule, request.path, get_settings())


def _require_key() -> Response | None:
    """The before_request policy: a 401 answer for a request that needs the key and lacks it."""
    if _configured_key() is None or not _needs_key() or has_valid_key():
        return None
    message = "invalid API key" if API_KEY_HEADER in request.headers else f"missing {API_KEY_HEADER} header"
    response = ApiError(401, "unauthorized", message).to_response()
    response.headers["WWW-Authenticate"] = "ApiKey"
    return response


def _summarise_stats(response: Response) -> Response:
    """Cut a keyless `/stats` answer down to PUBLIC_STATS_KEYS (the view itself knows nothing of keys)."""
    is_stats = request.url_rule is not None and request.url_rule.rule == "/stats"
    if not is_stats or response.status_code != 200 or _configured_key() is None or has_valid_key():
        return response
    full = response.get_json()
    response.set_data(current_app.json.dumps({name: full[name] for name in PUBLIC_STATS_KEYS if name in full}))
    return response
