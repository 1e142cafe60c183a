"""The application service: store + engine + cache behind one narrow interface."""
from service.errors import InvalidRequestError, NotFoundError
from service.recommendation_service import (InteractionOutcome, RecommendationResult, RecommendationService,
                                            build_engine, seed_demo_data)

__all__ = ["InvalidRequestError", "InteractionOutcome", "NotFoundError", "RecommendationResult",
           "RecommendationService", "build_engine", "seed_demo_data"]
