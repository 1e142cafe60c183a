"""Real-time recommendations: what to show next, given what the user is doing this minute.

Blends "people who did this also did..." around the current product and the user's latest
events (behaviour), the product's own text neighbours (content, which also covers a product
nobody has touched yet), and the user's longer-term collaborative taste.
"""
from __future__ import annotations

import numpy as np

from recommenders.collaborative import CollaborativeRecommender
from recommenders.content_based import ContentRecommender
from recommenders.event_based import EventBasedRecommender
from recommenders.hybrid import candidate_mask, rank_contributions
from recommenders.interaction_data import InteractionData
from recommenders.base import normalise

WEIGHTS = {"behavior": 0.6, "content": 0.25, "collaborative": 0.15}


class RealtimeRecommender:
    """Not a fitted model of its own: it re-weights the engine's fitted components around a context."""

    def __init__(self, behavior: EventBasedRecommender, content: ContentRecommender,
                 collaborative: CollaborativeRecommender) -> None:
        self.behavior = behavior
        self.content = content
        self.collaborative = collaborative

    def recommend(self, data: InteractionData, user: int | None, k: int, context_item: int | None = None,
                  context_weight: float = 1.0, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        candidates = candidate_mask(data, user, allowed)
        if context_item is not None:
            candidates[context_item] = False
        has_history = user is not None and len(data.seen_items(user)) > 0
        signals = {"behavior": self.behavior.score(data, user, context_item, context_weight)}
        if context_item is not None:
            signals["content"] = self.content.similar_items(data, context_item)
        elif has_history:
            signals["content"] = self.content.score(data, user)
        if has_history:
            signals["collaborative"] = self.collaborative.score(data, user)
        signals = {name: s for name, s in signals.items() if np.any(s[candidates] > 0)}
        if not signals:
            return rank_contributions(data, user, k, {"popular": normalise(data.popularity, candidates)}, candidates)
        total = sum(WEIGHTS[name] for name in signals)
        contributions = {name: WEIGHTS[name] / total * normalise(s, candidates) for name, s in signals.items()}
        return rank_contributions(data, user, k, contributions, candidates)
