"""Real-time recommendations: what to show next, given the product on screen and the user's latest events.

Two groups of signals, blended:
- about the product (70%): "people who did this also did..." (co-occurrence, the behaviour signal)
  and items like it (content, which also covers a product nobody has touched yet). After a view,
  alternatives count as much as complements; after a purchase or add-to-cart, complements lead.
- about the user (30%): their recent events, their content profile and their collaborative taste.
A group with no signal (a new product, a new user) hands its share to the other; with neither, popular.
"""
from __future__ import annotations

import numpy as np

from recommenders.base import candidate_mask, normalise
from recommenders.business_rules import ListShape
from recommenders.collaborative import CollaborativeBlend
from recommenders.content_based import ContentRecommender
from recommenders.event_based import EventBasedRecommender
from recommenders.hybrid import rank_contributions
from recommenders.interaction_data import InteractionData
from recommenders.records import EventType

PRODUCT_SHARE = 0.7
PRODUCT_WEIGHTS = {EventType.VIEW: {"behavior": 0.5, "content": 0.5},
                   EventType.ADD_TO_CART: {"behavior": 0.7, "content": 0.3},
                   EventType.PURCHASE: {"behavior": 0.8, "content": 0.2}}
USER_WEIGHTS = {"behavior": 0.6, "content": 0.25, "collaborative": 0.15}


class RealtimeRecommender:
    """Not a fitted model of its own: it re-weights the engine's fitted components around a context."""

    def __init__(self, behavior: EventBasedRecommender, content: ContentRecommender,
                 collaborative: CollaborativeBlend) -> None:
        self.behavior = behavior
        self.content = content
        self.collaborative = collaborative

    def recommend(self, data: InteractionData, user: int | None, k: int, context_item: int | None = None,
                  event_type: EventType = EventType.VIEW,
                  shape: ListShape | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        candidates = candidate_mask(data, user, None if shape is None else shape.allowed)
        product_signals, user_signals = {}, {}
        if context_item is not None:
            candidates[context_item] = False
            product = np.array([context_item])
            product_signals = {"behavior": self.behavior.similar_items(data, product)[0],
                               "content": self.content.similar_items(data, product)[0]}
        if user is not None and len(data.seen_items(user)) > 0:
            users = np.array([user])
            user_signals = {"behavior": self.behavior.score(data, users)[0], "content": self.content.score(data, users)[0],
                            "collaborative": self.collaborative.score(data, users)[0]}
        groups = [(PRODUCT_SHARE, PRODUCT_WEIGHTS.get(event_type, PRODUCT_WEIGHTS[EventType.VIEW]), product_signals),
                  (1.0 - PRODUCT_SHARE, USER_WEIGHTS, user_signals)]
        contributions = _blend(groups, candidates)
        if not contributions:
            contributions = {"popular": normalise(data.popularity, candidates)}
        return rank_contributions(data, user, k, contributions, candidates, shape)


def _blend(groups: list[tuple[float, dict[str, float], dict[str, np.ndarray]]],
           candidates: np.ndarray) -> dict[str, np.ndarray]:
    """Weighted sum per strategy label; signals with nothing to say among the candidates drop out."""
    live = [(share, weights, {name: s for name, s in signals.items() if np.any(s[candidates] > 0)})
            for share, weights, signals in groups]
    live = [(share, weights, signals) for share, weights, signals in live if signals]
    total_share = sum(share for share, _, _ in live)
    contributions: dict[str, np.ndarray] = {}
    for share, weights, signals in live:
        total_weight = sum(weights[name] for name in signals)
        for name, scores in signals.items():
            part = (share / total_share) * (weights[name] / total_weight) * normalise(scores, candidates)
            contributions[name] = contributions.get(name, 0.0) + part
    return contributions
