"""Users: explicit creation (interactions also create users), the profile view, and erasure."""
from __future__ import annotations

from flask import Blueprint

from web.context import get_service, parse_body, parse_query
from web.schemas import UserBody, UserPath

bp = Blueprint("users", __name__)


@bp.post("/users")
def create_user() -> tuple[dict, int]:
    body = parse_body(UserBody)
    if get_service().create_user(body.user_id):
        return {"user_id": body.user_id, "status": "created"}, 201
    return {"user_id": body.user_id, "status": "exists"}, 200


@bp.get("/users/<user_id>")
def profile(user_id: str) -> dict:
    path = parse_query(UserPath, user_id=user_id)
    return get_service().user_profile(path.user_id)


@bp.delete("/users/<user_id>")
def delete_user(user_id: str) -> dict:
    """A privacy erasure: the user's profile, events, cached answers and model state (404 if unknown)."""
    path = parse_query(UserPath, user_id=user_id)
    get_service().delete_user(path.user_id)
    return {"user_id": path.user_id, "status": "deleted"}
