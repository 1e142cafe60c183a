"""Event-based (behaviour) recommendations: "people who viewed or bought this also ...".

Item co-occurrence counts how many users touched both items; it grows with every event. A user
is described by what they did *lately*: their recent events, weighted by event type (a purchase
says more than a view) and by recency, optionally with the product they are looking at now.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommenders.base import Recommender, padded
from recommenders.interaction_data import InteractionData
from recommenders.sparse_state import IncrementalMatrix

RECENCY_DECAY = 0.8  # each older event counts 80% of the one after it
CONTEXT_BOOST = 2.0  # the product on screen counts twice the user's latest event


class EventBasedRecommender(Recommender):
    name = "behavior"

    def __init__(self) -> None:
        self.cooccurrence = IncrementalMatrix(sp.csr_matrix((0, 0)), "add")
        self.item_users = np.zeros(0)  # distinct users per item: the normaliser

    def fit(self, data: InteractionData) -> "EventBasedRecommender":
        seen = data.seen_matrix()
        counts = (seen.T @ seen).tocsr()
        counts.setdiag(0.0)
        counts.eliminate_zeros()
        self.cooccurrence = IncrementalMatrix(counts, "add")
        self.item_users = np.asarray(seen.sum(axis=0)).ravel()
        return self

    def observe_new_pair(self, data: InteractionData, user: int, item: int) -> None:
        """The user touched `item` for the first time: it now co-occurs with each of their other items.

        Touches only the user's history (a few cells), never the whole matrix.
        """
        others = data.seen_items(user)
        others = others[others != item]
        self.item_users = padded(self.item_users, data.n_items)
        self.item_users[item] += 1
        for other in others.tolist():
            self.cooccurrence.update(item, other, 1.0)
            self.cooccurrence.update(other, item, 1.0)

    def compact(self) -> None:
        self.cooccurrence.compact()

    def query(self, data: InteractionData, user: int | None, context_item: int | None = None,
              context_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The items describing the user right now and how much each counts."""
        if user is None:
            items, weights = np.empty(0, np.int64), np.empty(0)
        else:
            recent = data.recent.of(user)
            items, weights = recent.items, recent.weights
        recency = RECENCY_DECAY ** np.arange(len(items))[::-1]
        weights = np.maximum(weights, 0.5) * recency  # a low rating still shows where the user is looking
        if context_item is not None:
            items = np.append(items, context_item)
            weights = np.append(weights, CONTEXT_BOOST * context_weight * max(weights.max(initial=0.0), 1.0))
        return items, weights

    def score(self, data: InteractionData, user: int | None, context_item: int | None = None,
              context_weight: float = 1.0) -> np.ndarray:
        items, weights = self.query(data, user, context_item, context_weight)
        scores = np.zeros(data.n_items)
        norms = np.sqrt(padded(self.item_users, data.n_items))
        for item, weight in zip(items.tolist(), weights.tolist()):  # at most the ~20 recent events
            columns, counts = self.cooccurrence.row(item)
            if columns.size == 0 or norms[item] == 0:
                continue
            np.add.at(scores, columns, weight * counts / (norms[item] * norms[columns]))
        return scores

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        return self.score(data, None, context_item=item)

