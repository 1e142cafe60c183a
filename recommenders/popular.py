"""Popularity: the cold-start answer and the baseline every other recommender must beat."""
from __future__ import annotations

import numpy as np

from recommenders.base import Recommender
from recommenders.interaction_data import InteractionData


class PopularityRecommender(Recommender):
    """Score = an item's summed preference weight over all users (purchases count more than views).

    It reads the live counters in the model state, so each event moves it at once; no fit needed.
    """

    name = "popular"

    def fit(self, data: InteractionData) -> "PopularityRecommender":
        return self

    def score(self, data: InteractionData, user: int | None = None) -> np.ndarray:
        return np.log1p(data.popularity)


class TrendingRecommender(Recommender):
    """Popularity weighted by recency (see TrendingCounter): what is hot now, not what sold last year."""

    name = "trending"

    def fit(self, data: InteractionData) -> "TrendingRecommender":
        return self

    def score(self, data: InteractionData, user: int | None = None) -> np.ndarray:
        scores = data.trending.scores
        return np.concatenate([scores, np.zeros(data.n_items - len(scores))]) if len(scores) < data.n_items else scores
