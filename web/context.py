"""What the blueprints share: the app's service and settings, and the two input validators."""
from __future__ import annotations

from typing import TypeVar

from flask import current_app, request
from pydantic import BaseModel

from config.settings import Settings
from recommenders.records import Recommendation
from service import RecommendationService

SERVICE_KEY = "recommendation_service"
SETTINGS_KEY = "settings"

Model = TypeVar("Model", bound=BaseModel)


def get_service() -> RecommendationService:
    return current_app.extensions[SERVICE_KEY]


def get_settings() -> Settings:
    return current_app.extensions[SETTINGS_KEY]


def parse_query(model: type[Model], **path_values: str) -> Model:
    """Validate the query string together with the URL's path values (which win over the query)."""
    return model.model_validate({**request.args.to_dict(), **path_values}, context={"settings": get_settings()})


def parse_body(model: type[Model]) -> Model:
    """Validate the JSON body; Flask answers 415 for another content type and 400 for malformed JSON."""
    return model.model_validate(request.get_json(), context={"settings": get_settings()})


def recommendations_json(recommendations: list[Recommendation]) -> list[dict]:
    return [recommendation.as_dict() for recommendation in recommendations]
