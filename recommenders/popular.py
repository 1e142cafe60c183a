"""Popularity: the cold-start answer and the baseline every other recommender must beat."""
from __future__ import annotations

import numpy as np

from recommenders.base import Recommender, entries_at, padded
from recommenders.interaction_data import InteractionData


class PopularityRecommender(Recommender):
    """Score = an item's summed preference weight over all users (purchases count more than views).

    It reads the live counters in the model state, so each event moves it at once; no fit needed.
    """

    name = "popular"

    def fit(self, data: InteractionData) -> "PopularityRecommender":
        return self

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        return np.repeat(np.log1p(np.maximum(data.popularity, 0.0))[None, :], len(users), axis=0)

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.repeat(np.log1p(np.maximum(data.popularity[items], 0.0))[None, :], len(users), axis=0)


class TrendingRecommender(Recommender):
    """Popularity weighted by recency (see TrendingCounter): what is hot now, not what sold last year."""

    name = "trending"

    def fit(self, data: InteractionData) -> "TrendingRecommender":
        return self

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        scores = padded(np.maximum(data.trending.scores, 0.0), data.n_items)
        return np.repeat(scores[None, :], len(users), axis=0)

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.repeat(np.maximum(entries_at(data.trending.scores, items), 0.0)[None, :], len(users), axis=0)
