"""Event-based (behaviour) recommendations: "people who viewed or bought this also ...".

Item co-occurrence (InteractionData.cooccurrence) counts how many users touched both items; it
grows with every event. A user is described by what they did *lately*: their recent events,
weighted by event type (a purchase says more than a view) and by recency; or a single product
stands in for them ("also bought"). Nothing is fitted: every count is part of the model state.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommenders.base import Recommender, dot_rows_at, entries_at, padded
from recommenders.interaction_data import InteractionData
from recommenders.sparse_state import stacked_rows

RECENCY_DECAY = 0.8  # each older event counts 80% of the one after it


class EventBasedRecommender(Recommender):
    name = "behavior"

    def fit(self, data: InteractionData) -> "EventBasedRecommender":
        return self

    def recent_rows(self, data: InteractionData, users: np.ndarray) -> sp.csr_matrix:
        """users x items: each user's recent events, newest weighing most (duplicates add up)."""
        rows = []
        for user in users.tolist():  # at most the ~20 recent events of each
            recent = data.recent.of(user)
            recency = RECENCY_DECAY ** np.arange(len(recent.items))[::-1]
            rows.append((recent.items, np.maximum(recent.weights, 0.5) * recency))  # a low rating still shows interest
        return stacked_rows(rows, data.n_items)

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        """Co-occurrence with each user's recent items, cosine-normalised by the items' user counts."""
        return self._cooccurring(data, self.recent_rows(data, users))

    def similar_items(self, data: InteractionData, items: np.ndarray) -> np.ndarray:
        one_each = sp.csr_matrix((np.ones(len(items)), (np.arange(len(items)), items)), shape=(len(items), data.n_items))
        return self._cooccurring(data, one_each)

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        queries = self.recent_rows(data, users)
        columns = np.unique(queries.indices)
        if columns.size == 0:
            return np.zeros((len(users), len(items)))
        counts = data.cooccurrence.rows(columns)
        weighted = sp.csr_matrix(queries[:, columns].toarray() * _inverse_norms(data, columns)[None, :])
        return dot_rows_at(weighted, counts, items) * _inverse_norms(data, items)[None, :]

    def similar_items_among(self, data: InteractionData, item: int, items: np.ndarray) -> np.ndarray:
        counts = data.cooccurrence.rows(np.array([item]))
        return (dot_rows_at(sp.csr_matrix(np.ones((1, 1))), counts, items)[0]
                * _inverse_norms(data, np.array([item])) * _inverse_norms(data, items))

    @staticmethod
    def _cooccurring(data: InteractionData, queries: sp.csr_matrix) -> np.ndarray:
        norms = np.sqrt(padded(data.item_users, data.n_items))
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        columns = np.unique(queries.indices)
        if columns.size == 0:
            return np.zeros((queries.shape[0], data.n_items))
        counts = data.cooccurrence.rows(columns)  # only the queried items' rows, overlay included
        counts.resize((len(columns), data.n_items))
        weighted = queries[:, columns].toarray() * inverse[columns][None, :]
        return np.asarray(counts.T @ weighted.T).T * inverse[None, :]


def _inverse_norms(data: InteractionData, items: np.ndarray) -> np.ndarray:
    """1 / sqrt(user count) at these items (0 for an item nobody touched): the cosine's denominators."""
    norms = np.sqrt(entries_at(data.item_users, items))
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
