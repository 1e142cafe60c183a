"""Read-only recommendation routes: the engine README's and the system README's.

Each embeds its ranked list through `ranked_json`: from the cache, that list is JSON rendered before.
Each takes the list filters of web/schemas.ListQuery; the standing rules (web/rules.py) apply to all.
"""
from __future__ import annotations

from flask import Blueprint, request

from web.context import get_service, parse_query, ranked_json
from web.request_timing import response_time_ms
from web.schemas import PopularQuery, RealtimeQuery, RecommendQuery, SimilarQuery, UserRecommendationsQuery

bp = Blueprint("recommendations", __name__)


@bp.get("/recommendations/<user_id>")
def for_user(user_id: str) -> dict:
    """Unknown users are a cold start the service answers with popular items, never an error."""
    query = parse_query(UserRecommendationsQuery, user_id=user_id)
    service = get_service()
    arm = service.experiments.assign(query.user_id)
    result = service.recommendations(query.user_id, query.count, filters=query.item_filter,
                                     **({} if arm is None else arm.variant.options))
    return {
        "recommendations": ranked_json(result),
        "user_id": query.user_id,
        "source": result.source,
        **service.served(query.user_id, result.recommendations, "recommendations", "hybrid", None, arm),
        "response_time_ms": response_time_ms(),
    }


@bp.get("/recommend")
def by_case() -> dict:
    """A request that names its case (or method) is outside any experiment: the client chose the
    recommender. Otherwise a user in the running experiment gets their variant's."""
    query = parse_query(RecommendQuery)
    service = get_service()
    chosen = "case" in request.args or "method" in request.args or query.user_id is None
    arm = None if chosen else service.experiments.assign(query.user_id)
    options = {"case": query.case, "method": query.method} if arm is None else arm.variant.options
    result = service.recommendations(query.user_id, query.count, product_id=query.product_id,
                                     category=query.category, filters=query.item_filter, **options)
    case, method = options["case"], options["method"]
    return {
        "user_id": query.user_id,
        "case": case,
        "method": method,
        "product_id": query.product_id,
        "recommendations": ranked_json(result),
        "source": result.source,
        **service.served(query.user_id, result.recommendations, "recommend", case, method, arm),
        "response_time_ms": response_time_ms(),
    }


@bp.get("/realtime-recommend")
def realtime() -> dict:
    query = parse_query(RealtimeQuery)
    service = get_service()
    result = service.realtime_recommendations(
        query.user_id, query.count, product_id=query.product_id, event_type=query.event_type,
        filters=query.item_filter,
    )
    return {
        "user_id": query.user_id,
        "product_id": query.product_id,
        "event_type": query.event_type.value,
        "recommendations": ranked_json(result),
        "source": result.source,
        **service.served(query.user_id, result.recommendations, "realtime", "realtime", None),
        "response_time_ms": response_time_ms(),
    }


@bp.get("/similar/<item_id>")
def similar(item_id: str) -> dict:
    query = parse_query(SimilarQuery, item_id=item_id)
    result = get_service().similar_items(query.item_id, query.count, query.item_filter)
    return {
        "item_id": query.item_id,
        "similar": ranked_json(result),
        "source": result.source,
        "response_time_ms": response_time_ms(),
    }


@bp.get("/popular")
def popular() -> dict:
    query = parse_query(PopularQuery)
    result = get_service().popular(query.count, category=query.category, trending=query.trending,
                                   filters=query.item_filter)
    return {
        "items": ranked_json(result),
        "category": query.category,
        "trending": query.trending,
        "source": result.source,
        "response_time_ms": response_time_ms(),
    }
