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
from typing import TYPE_CHECKING

import numpy as np

from recommenders.base import (candidate_mask, normalise, normalise_retrieved, normalise_rows, top_k, top_k_unseen,
                               unseen_rows)
from recommenders.business_rules import ListShape
from recommenders.calibration import POOL, calibrated_order, interest_shares
from recommenders.interaction_data import InteractionData
from recommenders.registry import COLLABORATIVE

if TYPE_CHECKING:
    from recommenders.ranker import LearnedRanker

METHODS = ("weighted", "adaptive", "switching")
DOMINANT_SHARE = 0.7  # a component giving this share of an item's score names its strategy
# A newcomer's taste (at most new_user_max_interactions events) is half popularity: their first choices
# are mostly popular ones, and the blend of a few items has nothing to say about that. Next-event HR@10
# of the push for users new after the cut-off (models/next_event.py; 0 / 0.3 / 0.5 / 0.7 / 0.8): ml-1m
# 0.1973 / 0.2225 / 0.2270 / 0.2468 / -, ml-100k 0.4833 / - / 0.5021 / - / 0.4625, online-retail
# 0.2952 / - / 0.2882 / - / -. 0.5 keeps the most over the three (all events: +3.1%, +3.3%, -0.6%).
NEWCOMER_POPULAR_SHARE = 0.5
RANKED_OUT = 0.01  # with a ranker, items it did not see rank below its candidates, scaled into 0..RANKED_OUT


@dataclass(frozen=True)
class HybridPolicy:
    """History-size tiers of the "weighted" method (see config.HybridWeights)."""

    new_user_max_interactions: int = 4
    heavy_user_min_interactions: int = 20
    collaborative_new: float = 0.3
    collaborative_experienced: float = 0.5
    collaborative_heavy: float = 0.7


@dataclass(frozen=True)
class BlendTuning:
    """A blend of its own for one request (an experiment's variant): the collaborative share of the
    "weighted" hybrid for new, experienced and heavy users, and weights of collaborative parts by name
    (the rest keep theirs). None keeps what is configured."""

    collaborative_tiers: tuple[float, float, float] | None = None
    collaborative_weights: tuple[tuple[str, float], ...] | None = None


class HybridRecommender:
    """Blends whole recommenders (the collaborative blend, content, behaviour, popular) per user.

    Not a fitted component: the engine fits the components it blends.
    """

    name = "hybrid"

    def __init__(self, components: dict, policy: HybridPolicy = HybridPolicy(), method: str = "weighted",
                 ranker: "LearnedRanker | None" = None) -> None:
        self.components = components  # keys: collaborative, content, behavior, popular
        self.policy = policy
        self.method = method
        self.ranker = ranker  # the learned second stage, which orders this blend's candidates (None: the blend's order)

    def weight_rows(self, data: InteractionData, users: np.ndarray, method: str | None = None) -> dict[str, np.ndarray]:
        """How much each component counts for each user now; each user's weights sum to 1."""
        method = method or self.method
        history = np.array([len(data.seen_items(user)) for user in users.tolist()], dtype=np.float64)
        zeros = np.zeros(len(users))
        if method == "switching":
            choice = self._switch(data, users, history)
            weights = {name: (choice == name).astype(np.float64) for name in ("content", "behavior", COLLABORATIVE)}
        elif method == "adaptive":
            collaborative = history / (history + 10.0)
            share = np.array([data.recent.of(user).behaviour_share() for user in users.tolist()])
            weights = {COLLABORATIVE: collaborative, "content": 1.0 - collaborative, "behavior": 0.5 * share,
                       "popular": 0.1 / (1.0 + history)}
        else:
            collaborative = self._tier(history)
            weights = {COLLABORATIVE: collaborative, "content": 1.0 - collaborative}
        weights = {name: weights.get(name, zeros) for name in ("popular", COLLABORATIVE, "content", "behavior")}
        newcomer = history == 0  # nothing known: popular items only
        weights["popular"] = np.where(newcomer, 1.0, weights["popular"])
        for name in (COLLABORATIVE, "content", "behavior"):
            weights[name] = np.where(newcomer, 0.0, weights[name])
        total = sum(weights.values())
        return {name: w / total for name, w in weights.items()}

    def weights(self, data: InteractionData, user: int, method: str | None = None) -> dict[str, float]:
        """One user's non-zero weights."""
        rows = self.weight_rows(data, np.array([user]), method)
        return {name: float(w[0]) for name, w in rows.items() if w[0] > 0}

    def score(self, data: InteractionData, users: np.ndarray, method: str | None = None) -> np.ndarray:
        """users x items blended scores, each component normalised over each user's unseen items."""
        unseen = unseen_rows(data, users)
        weights = self.weight_rows(data, users, method)
        blended = np.zeros((len(users), data.n_items))
        for name, w in weights.items():
            if w.any():
                blended += w[:, None] * normalise_rows(self.components[name].score(data, users), unseen)
        return blended

    def recommend(self, data: InteractionData, users: np.ndarray, k: int) -> np.ndarray:
        if self.ranker is None:
            return top_k_unseen(data, self.score(data, users), users, k)
        found = self.ranker.candidates(self, data, users)
        scores = np.full((len(users), data.n_items), -np.inf)
        scores[found.rows, found.items] = self.ranker.predict(found)
        return top_k_unseen(data, scores, users, k)

    def blend(self, data: InteractionData, user: int, weights: dict[str, float],
              candidates: np.ndarray, among: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Each component's weighted contribution for one user, normalised over `candidates`; with
        `among` (retrieved items, all of them candidates), at those items only."""
        users = np.array([user])
        if among is None:
            return {name: weight * normalise(self.components[name].score(data, users)[0], candidates)
                    for name, weight in weights.items()}
        return {name: weight * normalise_retrieved(self.components[name].score_items(data, users, among)[0])
                for name, weight in weights.items()}

    def recommend_labelled(self, data: InteractionData, user: int, k: int, method: str | None = None,
                           shape: ListShape | None = None,
                           among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-k (items, scores, strategy per item): the strategy is the dominant component, or "hybrid".

        `among`: retrieved candidates (recommenders/retrieval.py), unseen and allowed; only they are scored,
        each component normalised over them, and the blend's order ranks them (not the ranker's, which
        learnt on whole-catalog candidates)."""
        if among is not None:
            candidates = np.ones(len(among), bool)
        else:
            candidates = candidate_mask(data, user, None if shape is None else shape.allowed)
        if self.ranker is not None and method in (None, self.method) and among is None:
            contributions, order = self._ranked(data, user)
        else:
            contributions, order = self.blend(data, user, self.weights(data, user, method), candidates, among), None
        items, scores, labels = rank_contributions(data, user, POOL * k, contributions, candidates, shape, order,
                                                   items=among)
        order = calibrated_order(scores, data.item_category[items], interest_shares(data, user), k)
        return items[order], scores[order], [labels[i] for i in order]

    def taste(self, data: InteractionData, user: int, candidates: np.ndarray,
              among: np.ndarray | None = None) -> np.ndarray:
        """The user's long-term order over items, for the real-time push to keep: the ranker's where one
        was learnt (it learnt what people do next), else the blend's; with `among`, at those items only."""
        if self.ranker is not None and among is None:
            return self._ranked(data, user)[1]
        weights = self.weights(data, user)
        if len(data.seen_items(user)) <= self.policy.new_user_max_interactions:
            weights = {**{name: (1 - NEWCOMER_POPULAR_SHARE) * w for name, w in weights.items()},
                       "popular": NEWCOMER_POPULAR_SHARE}
        return sum(self.blend(data, user, weights, candidates, among).values())

    def _ranked(self, data: InteractionData, user: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The blend's contributions (they name each item's strategy) and the ranker's order: its
        candidates by predicted relevance scaled to RANKED_OUT..1, then every other item by blended score
        below them, so a filter that leaves few candidates still gets a full list (and a boost still lifts)."""
        users = np.array([user])
        found = self.ranker.candidates(self, data, users)
        contributions = {name: w[0] * found.signals[name][0] for name, w in found.weights.items() if w[0] > 0}
        order = RANKED_OUT * sum(contributions.values())
        order[found.items] = RANKED_OUT + (1 - RANKED_OUT) * normalise(self.ranker.predict(found))
        return contributions, order

    def _tier(self, history: np.ndarray) -> np.ndarray:
        policy = self.policy
        return np.select([history <= policy.new_user_max_interactions, history < policy.heavy_user_min_interactions],
                         [policy.collaborative_new, policy.collaborative_experienced], policy.collaborative_heavy)

    def _switch(self, data: InteractionData, users: np.ndarray, history: np.ndarray) -> np.ndarray:
        share = np.array([data.recent.of(user).behaviour_share() for user in users.tolist()])
        return np.select([history <= self.policy.new_user_max_interactions, share >= 0.5],
                         ["content", "behavior"], COLLABORATIVE)


def rank_contributions(data: InteractionData, user: int | None, k: int, contributions: dict[str, np.ndarray],
                       candidates: np.ndarray, shape: ListShape | None = None, order: np.ndarray | None = None,
                       items: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Top-k of summed contributions (or of `order`, a ranker's scores) among the candidates, each
    labelled with its dominant component; with a `shape`, scores are boosted (the answer shows the
    boosted score) and the caps hold. With `items`, every array is over those items, not the catalog."""
    if order is not None:
        scores = order
    else:
        scores = sum(contributions.values()) if contributions else np.zeros(len(candidates))
    if shape is not None and items is not None:
        shape = shape.at(items)
    if shape is not None and shape.boost is not None:
        scores = scores * shape.boost
    # among equal scores, the more popular first (any increasing rescale of popularity orders the same)
    popularity_01 = data.memo("popularity_01", lambda: normalise(data.popularity))
    tie_break = 1e-6 * (popularity_01 if items is None else popularity_01[items])
    if shape is not None and shape.caps:
        ranked = shape.capped_top(scores + tie_break, k, candidates)
    else:
        ranked, _ = top_k(scores + tie_break, k, allowed=candidates)
    labels = _labels(contributions, ranked)
    return (ranked if items is None else items[ranked]), scores[ranked], labels


def _labels(contributions: dict[str, np.ndarray], items: np.ndarray) -> list[str]:
    if not contributions or items.size == 0:
        return ["hybrid"] * len(items)
    names = list(contributions)
    matrix = np.vstack([contributions[name][items] for name in names])
    totals = matrix.sum(axis=0)
    best = matrix.argmax(axis=0)
    share = np.divide(matrix.max(axis=0), totals, out=np.zeros_like(totals), where=totals > 0)
    return [names[b] if s >= DOMINANT_SHARE or len(names) == 1 else "hybrid" for b, s in zip(best, share)]
