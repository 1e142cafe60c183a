"""Hybrid: blend collaborative, content, behaviour and popularity with weights that follow the user.

Three methods:
- "weighted" (default, the engine README's tiers): new users lean on content (70/30), experienced
  users are balanced (50/50), heavy users lean on collaborative (70/30).
- "adaptive": the same idea as a smooth curve, plus behaviour in proportion to how much of the
  user's recent activity is browsing/buying, plus a popularity prior that fades with history.
- "switching": one recommender at a time, chosen by what is known about the user.
Every component is min-max normalised over the candidate items before blending.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommenders.base import Recommender, candidate_mask, normalise, top_k
from recommenders.interaction_data import InteractionData

METHODS = ("weighted", "adaptive", "switching")
DOMINANT_SHARE = 0.7  # a component giving this share of an item's score names its strategy


@dataclass(frozen=True)
class HybridPolicy:
    """History-size tiers of the "weighted" method (see config.HybridWeights)."""

    new_user_max_interactions: int = 4
    heavy_user_min_interactions: int = 20
    collaborative_new: float = 0.3
    collaborative_experienced: float = 0.5
    collaborative_heavy: float = 0.7


class HybridRecommender(Recommender):
    name = "hybrid"

    def __init__(self, components: dict[str, Recommender], policy: HybridPolicy = HybridPolicy(),
                 method: str = "weighted") -> None:
        self.components = components  # keys: collaborative, content, behavior, popular
        self.policy = policy
        self.method = method

    def fit(self, data: InteractionData) -> "HybridRecommender":
        for component in self.components.values():
            component.fit(data)
        return self

    def weights(self, data: InteractionData, user: int | None, method: str | None = None) -> dict[str, float]:
        """How much each component counts for this user now; sums to 1."""
        method = method or self.method
        history = 0 if user is None else len(data.seen_items(user))
        if history == 0:
            return {"popular": 1.0}
        if method == "switching":
            return {self._switch(data, user, history): 1.0}
        if method == "adaptive":
            collaborative = history / (history + 10.0)
            weights = {"collaborative": collaborative, "content": 1.0 - collaborative,
                       "behavior": 0.5 * data.recent.of(user).behaviour_share(), "popular": 0.1 / (1.0 + history)}
        else:
            collaborative = self._tier(history)
            weights = {"collaborative": collaborative, "content": 1.0 - collaborative}
        total = sum(weights.values())
        return {name: w / total for name, w in weights.items() if w > 0}

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        candidates = candidate_mask(data, user, None)
        return self.blend(data, user, self.weights(data, user), candidates)[0]

    def blend(self, data: InteractionData, user: int | None, weights: dict[str, float],
              candidates: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(blended scores, each component's weighted contribution), normalised over `candidates`."""
        contributions = {name: weight * normalise(self.components[name].score(data, user), candidates)
                         for name, weight in weights.items()}
        return sum(contributions.values()), contributions

    def recommend_labelled(self, data: InteractionData, user: int | None, k: int, method: str | None = None,
                           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-k (items, scores, strategy per item): the strategy is the dominant component, or "hybrid"."""
        candidates = candidate_mask(data, user, allowed)
        contributions = self.blend(data, user, self.weights(data, user, method), candidates)[1]
        return rank_contributions(data, user, k, contributions, candidates)

    def _tier(self, history: int) -> float:
        if history <= self.policy.new_user_max_interactions:
            return self.policy.collaborative_new
        if history < self.policy.heavy_user_min_interactions:
            return self.policy.collaborative_experienced
        return self.policy.collaborative_heavy

    def _switch(self, data: InteractionData, user: int, history: int) -> str:
        if history <= self.policy.new_user_max_interactions:
            return "content"
        if data.recent.of(user).behaviour_share() >= 0.5:
            return "behavior"
        return "collaborative"


def rank_contributions(data: InteractionData, user: int | None, k: int, contributions: dict[str, np.ndarray],
                       candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Top-k of summed contributions among the candidates, each labelled with its dominant component."""
    scores = sum(contributions.values()) if contributions else np.zeros(data.n_items)
    # among equal scores, the more popular first (any increasing rescale of popularity orders the same)
    tie_break = 1e-6 * data.memo("popularity_01", lambda: normalise(data.popularity))
    items, _ = top_k(scores + tie_break, k, allowed=candidates)
    return items, scores[items], _labels(contributions, items)


def _labels(contributions: dict[str, np.ndarray], items: np.ndarray) -> list[str]:
    if not contributions or items.size == 0:
        return ["hybrid"] * len(items)
    names = list(contributions)
    matrix = np.vstack([contributions[name][items] for name in names])
    totals = matrix.sum(axis=0)
    best = matrix.argmax(axis=0)
    share = np.divide(matrix.max(axis=0), totals, out=np.zeros_like(totals), where=totals > 0)
    return [names[b] if s >= DOMINANT_SHARE or len(names) == 1 else "hybrid" for b, s in zip(best, share)]
