"""Real-time recommendations: what to show next, given the product on screen and the user's taste.

Two signals, blended by one balance, TASTE_SHARE:
- the product (1 - TASTE_SHARE): "people who did this also did..." (co-occurrence, the behaviour
  signal) and items like it (content, which also covers a product nobody has touched yet). After a
  view, alternatives count as much as complements; after a purchase or add-to-cart, complements lead.
- the user's long-term taste (TASTE_SHARE): the hybrid's order for them (its learned ranker's, else its
  blend of collaborative and content weighted by their history; content carries their brand and
  category affinity; for a newcomer, half popularity). One click on another brand's phone must not wipe
  out a history of Apple ratings.
A signal with nothing to say (a new product, a new user) hands its share to the other; with neither, popular.
"""
from __future__ import annotations

import numpy as np

from recommenders.base import candidate_mask, normalise
from recommenders.business_rules import ListShape
from recommenders.content_based import ContentRecommender
from recommenders.event_based import EventBasedRecommender
from recommenders.hybrid import HybridRecommender, rank_contributions
from recommenders.interaction_data import InteractionData
from recommenders.records import EventType

# The user's share of the push, measured on the next-event protocol (bench/push_balance.py; HR@10 of
# the push): ml-100k peaks at 0.75 (0.422; 0.410 at 0.6), online-retail at 0.4 (0.301; 0.287 at 0.6,
# 0.178 at 0.8). 0.6 has the best mean of the two, and keeps a user's taste beside the product on screen.
TASTE_SHARE = 0.6
PRODUCT_WEIGHTS = {EventType.VIEW: {"behavior": 0.5, "content": 0.5},
                   EventType.ADD_TO_CART: {"behavior": 0.7, "content": 0.3},
                   EventType.PURCHASE: {"behavior": 0.8, "content": 0.2}}
RANK_OFFSET = 5.0  # of reciprocal-rank fusion; see reciprocal_rank for the measured reason
TASTE = "hybrid"  # the strategy label of the taste signal: its reason names the user's liked item


class RealtimeRecommender:
    """Not a fitted model of its own: it re-weights the engine's fitted components around a context."""

    def __init__(self, behavior: EventBasedRecommender, content: ContentRecommender, hybrid: HybridRecommender,
                 taste_share: float = TASTE_SHARE) -> None:
        self.behavior = behavior
        self.content = content
        self.hybrid = hybrid
        self.taste_share = taste_share

    def recommend(self, data: InteractionData, user: int | None, k: int, context_item: int | None = None,
                  event_type: EventType = EventType.VIEW, shape: ListShape | None = None,
                  among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Top-k (items, scores, labels); with `among` (retrieved candidates, unseen, allowed, not the
        product), every signal is computed at those items only and they alone are ranked."""
        if among is not None:
            candidates = np.ones(len(among), bool)
        else:
            candidates = candidate_mask(data, user, None if shape is None else shape.allowed)
            if context_item is not None:
                candidates[context_item] = False
        product = self._product(data, context_item, event_type, candidates, among)
        taste = self._taste(data, user, candidates, among)
        share = self.taste_share if product and taste is not None else float(taste is not None)
        contributions = {}
        if product:
            total = sum(product.values())
            fused = (1.0 - share) * reciprocal_rank(total, candidates)
            contributions = {name: fused * np.divide(part, total, out=np.zeros_like(part), where=total > 0)
                             for name, part in product.items()}
        if taste is not None:
            contributions[TASTE] = share * reciprocal_rank(taste, candidates)
        if not contributions:
            contributions = {"popular": normalise(data.popularity if among is None else data.popularity[among], candidates)}
        return rank_contributions(data, user, k, contributions, candidates, shape, items=among)

    def _product(self, data: InteractionData, context_item: int | None, event_type: EventType,
                 candidates: np.ndarray, among: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The product's signals that say something among the candidates, weighted to sum to 1."""
        if context_item is None:
            return {}
        parts = {"behavior": self.behavior, "content": self.content}
        if among is None:
            signals = {name: part.similar_items(data, np.array([context_item]))[0] for name, part in parts.items()}
        else:
            signals = {name: part.similar_items_among(data, context_item, among) for name, part in parts.items()}
        signals = {name: s for name, s in signals.items() if np.any(s[candidates] > 0)}
        weights = PRODUCT_WEIGHTS.get(event_type, PRODUCT_WEIGHTS[EventType.VIEW])
        total = sum(weights[name] for name in signals)
        return {name: (weights[name] / total) * normalise(s, candidates) for name, s in signals.items()}

    def _taste(self, data: InteractionData, user: int | None, candidates: np.ndarray,
               among: np.ndarray | None = None) -> np.ndarray | None:
        """The hybrid's order for the user (only the order counts); None for a user with no history."""
        if user is None or len(data.seen_items(user)) == 0:
            return None
        return self.hybrid.taste(data, user, candidates, among)


def reciprocal_rank(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """RANK_OFFSET / (RANK_OFFSET + rank) among the candidates with a signal (1 for the first), 0 elsewhere.

    Weighted reciprocal-rank fusion (Cormack et al., 2009) rather than a sum of min-max scores: the
    product's neighbours and the user's taste have unlike score shapes. Summed, items lukewarm on both
    outranked the user's favourites: after a view of one of the demo's 68 other-brand electronics
    items, alice kept two Apple items of ten or fewer after 11 of them (share 0.5; 1 at 0.6); fused
    with offset 5 at 0.6, four or more after every one. The offset sets how far each signal's top
    leads: at 20 (0.6), a brand-new product's look-alikes kept one place of ten, the 8th; at 60, 16
    views left alice two Apple items or fewer. The sum scores more on ml-100k's replay (HR@10 0.165 at
    0.5, 0.168 at 0.6, against 0.149), where the previous film is a weak hint of the next; the
    next-event protocol should settle both."""
    ranked = np.where(candidates & (scores > 0), scores, -np.inf)
    order = np.argsort(-ranked, kind="stable")
    rank = np.empty(len(scores))
    rank[order] = np.arange(len(scores))
    return np.where(np.isfinite(ranked), RANK_OFFSET / (RANK_OFFSET + rank), 0.0)
