"""The application service: store + engine + cache behind one narrow interface."""
from service.errors import ConflictError, InvalidRequestError, NotFoundError
from service.recommendation_service import (InteractionOutcome, RecommendationResult, RecommendationService,
                                            loaded_engine, seed_demo_data, train)

__all__ = ["ConflictError", "InvalidRequestError", "InteractionOutcome", "NotFoundError", "RecommendationResult",
           "RecommendationService", "loaded_engine", "seed_demo_data", "train"]
