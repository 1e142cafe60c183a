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
