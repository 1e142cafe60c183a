"""What the blueprints share: the app's service and settings, the two input validators, and the
rendering of recommendation lists."""
from __future__ import annotations

from typing import TypeVar

import orjson
from flask import current_app, request
from pydantic import BaseModel

from config.settings import Settings
from recommenders.records import Recommendation
from service import RecommendationResult, RecommendationService
from utils.cache import RankedList
from web.json_provider import to_json

SERVICE_KEY = "recommendation_service"
SETTINGS_KEY = "settings"
QUERIES_KEY = "validated_queries"
QUERIES_KEPT = 1024  # validated query strings an app keeps; it forgets them all when it has this many
QUERY_KEPT_MAX_BYTES = 256  # longer query strings are validated every time, never kept

Model = TypeVar("Model", bound=BaseModel)


def get_service() -> RecommendationService:
    return current_app.extensions[SERVICE_KEY]


def get_settings() -> Settings:
    return current_app.extensions[SETTINGS_KEY]


def parse_query(model: type[Model], **path_values: str) -> Model:
    """Validate the query string together with the URL's path values (which win over the query).

    The result only depends on the model, the raw query string, the path values and the settings,
    and models are frozen: so an app keeps the models it validated, by those inputs, and a repeated
    query (a client polling the same answer) gets the same model back without being parsed and
    validated again. Invalid input is never kept: it is refused each time, the same way.
    """
    extensions = current_app.extensions
    query_string = request.query_string
    key = (model, query_string, *path_values.items()) if len(query_string) <= QUERY_KEPT_MAX_BYTES else None
    kept = extensions.get(QUERIES_KEY)
    if kept is None:
        kept = extensions.setdefault(QUERIES_KEY, {})
    elif key is not None:
        found = kept.get(key)
        if found is not None:
            return found
    parsed = model.model_validate({**request.args.to_dict(), **path_values},
                                  context={"settings": extensions[SETTINGS_KEY]})
    if key is not None:
        if len(kept) >= QUERIES_KEPT:
            kept.clear()
        kept[key] = parsed
    return parsed


def parse_body(model: type[Model]) -> Model:
    """Validate the JSON body; Flask answers 415 for another content type and 400 for malformed JSON."""
    return model.model_validate(request.get_json(), context={"settings": get_settings()})


def recommendations_json(recommendations: list[Recommendation]) -> list[dict]:
    return [recommendation.as_dict() for recommendation in recommendations]


def render_recommendations(recommendations: list[Recommendation]) -> bytes:
    return to_json(recommendations_json(recommendations))


def ranked_json(result: RecommendationResult) -> orjson.Fragment:
    """The result's recommendations as JSON that the answer embeds as is: the same bytes as
    `recommendations_json`'s list would give, rendered once per cached list and count (RankedList),
    so a cached answer is bytes ready to send. Every route that serves a ranked list uses it."""
    ranked = result.ranked
    if isinstance(ranked, RankedList):
        return orjson.Fragment(ranked.json(len(result.recommendations), render_recommendations))
    return orjson.Fragment(render_recommendations(result.recommendations))
