"""Event-based (behaviour) recommendations: "people who viewed or bought this also ...".

Item co-occurrence counts how many users touched both items; it grows with every event. A user
is described by what they did *lately*: their recent events, weighted by event type (a purchase
says more than a view) and by recency; or a single product stands in for them ("also bought").
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommenders.base import Recommender, padded
from recommenders.interaction_data import InteractionData
from recommenders.sparse_state import IncrementalMatrix

RECENCY_DECAY = 0.8  # each older event counts 80% of the one after it


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

    def query(self, data: InteractionData, user: int | None,
              context_item: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The items describing the user right now (recent events, newest weighing most), or one product."""
        if context_item is not None:
            return np.array([context_item]), np.ones(1)
        if user is None:
            return np.empty(0, np.int64), np.empty(0)
        recent = data.recent.of(user)
        recency = RECENCY_DECAY ** np.arange(len(recent.items))[::-1]
        return recent.items, np.maximum(recent.weights, 0.5) * recency  # a low rating still shows interest

    def score(self, data: InteractionData, user: int | None, context_item: int | None = None) -> np.ndarray:
        """Co-occurrence with the user's recent items, or with `context_item` when one is given."""
        items, weights = self.query(data, user, context_item)
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

