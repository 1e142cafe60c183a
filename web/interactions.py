"""Write routes for user behaviour: ratings and events change what the user is recommended next."""
from __future__ import annotations

from flask import Blueprint

from web.context import get_service, parse_body, recommendations_json
from web.request_timing import response_time_ms
from web.schemas import EventBody, InteractionBody

bp = Blueprint("interactions", __name__)


@bp.post("/interactions")
def record_interaction() -> tuple[dict, int]:
    """Echo what was stored (an event_id replay answers with the first recording)."""
    body = parse_body(InteractionBody)
    outcome = get_service().record_interaction(
        body.user_id, body.item_id, body.event_type, rating=body.rating,
        timestamp=body.timestamp, event_id=body.event_id, recommendation_id=body.recommendation_id, value=body.value,
    )
    stored = outcome.interaction
    return {
        "user_id": stored.user_id,
        "item_id": stored.item_id,
        "rating": stored.rating,
        "event_type": stored.event_type.value,
        "status": "recorded",
        "cache_invalidated": outcome.cache_invalidated,
        "response_time_ms": response_time_ms(),
    }, 201


@bp.post("/event")
def record_event() -> tuple[dict, int]:
    """The system README's real-time path: record the event and answer with fresh recommendations."""
    body = parse_body(EventBody)
    service = get_service()
    outcome = service.record_interaction(
        body.user_id, body.product_id, body.event_type, timestamp=body.timestamp, event_id=body.event_id,
        recommend=True, recommendation_id=body.recommendation_id, value=body.value,
    )
    stored = outcome.interaction
    return {
        "status": "recorded",
        "user_id": stored.user_id,
        "product_id": stored.item_id,
        "event_type": stored.event_type.value,
        "recommendations": recommendations_json(outcome.recommendations),
        **service.served(stored.user_id, outcome.recommendations, "event", "realtime", None, outcome.assignment),
        "response_time_ms": response_time_ms(),
    }, 201
