"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): item-item weights in closed form.

B = I - P / diag(P) with P = (X^T X + l2 I)^-1 over the binary user x item matrix, diagonal zero.
A user's score is their *live* binary row times B, so a new event changes the next answer at once
with no refit: the fitted part is a fixed item x item matrix. It is dense, so only the most
popular `max_items` items are modelled (memory max_items^2 floats); the rest score 0.
"""
from __future__ import annotations

import numpy as np

from recommenders.base import Recommender
from recommenders.interaction_data import HISTORY_SCORED, InteractionData
from recommenders.persistence import Value
from recommenders.sparse_state import csr_of


class EaseRecommender(Recommender):
    name = "ease"

    def __init__(self, l2: float = 200.0, max_items: int = 5000) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.modelled = np.empty(0, np.int64)  # item indices with a row/column in `weights`
        self.weights = np.zeros((0, 0), np.float32)
        self._derive()

    def params(self) -> dict:
        return {"l2": self.l2, "max_items": self.max_items}

    def fit(self, data: InteractionData) -> "EaseRecommender":
        liked = data.preference_matrix().copy()
        liked.data = np.ones_like(liked.data)
        counts = np.asarray(liked.sum(axis=0)).ravel()
        order = np.argsort(-counts, kind="stable")[: self.max_items]
        self.modelled = np.sort(order[counts[order] > 0])
        columns = liked[:, self.modelled]
        gram = (columns.T @ columns).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.weights = weights.astype(np.float32)
        self._derive()
        return self

    def state(self) -> dict[str, Value]:
        return {"modelled": self.modelled, "weights": self.weights}

    def restore(self, state: dict[str, Value]) -> None:
        self.modelled, self.weights = state["modelled"], state["weights"]
        self._derive()

    def _derive(self) -> None:
        """Item index -> row of `weights` (-1 where not modelled)."""
        self.position = np.full(int(self.modelled.max()) + 1 if len(self.modelled) else 0, -1, np.int64)
        self.position[self.modelled] = np.arange(len(self.modelled))

    def _positions(self, items: np.ndarray) -> np.ndarray:
        positions = np.full(len(items), -1, np.int64)
        known = items < len(self.position)
        positions[known] = self.position[items[known]]
        return positions

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(users), data.n_items))
        scores[:, self.modelled] = self._modelled_scores(data, users)
        return scores

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        positions = self._positions(items)
        scores = np.zeros((len(users), len(items)))
        scores[:, positions >= 0] = self._modelled_scores(data, users)[:, positions[positions >= 0]]
        return scores

    def _modelled_scores(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        """(len(users), len(modelled)): each user's binary live row (strongest preferences) times B, in
        B's float32: a float64 row would make scipy copy the whole items x items matrix on every call."""
        rows = data.preference_rows(users, limit=HISTORY_SCORED)
        positions = self._positions(rows.indices)
        modelled = positions >= 0
        # CSR arrays directly: via COO, scipy's conversions cost more than the product for one user
        indptr = np.concatenate([[0], np.cumsum(modelled)])[rows.indptr]
        liked = csr_of(np.ones(indptr[-1], np.float32), positions[modelled], indptr, (len(users), len(self.modelled)))
        # A row limited to the strongest preferences comes in strength order, and ties may order differently in
        # two processes at one log position (one compacted, one not): float32 sums in item order agree to the bit.
        liked.sort_indices()
        return np.maximum(liked @ self.weights, 0.0)

    def similar_items(self, data: InteractionData, items: np.ndarray) -> np.ndarray:
        positions = self._positions(items)
        modelled = np.flatnonzero(positions >= 0)
        scores = np.zeros((len(items), data.n_items))
        scores[np.ix_(modelled, self.modelled)] = np.maximum(self.weights[positions[modelled]], 0.0)
        return scores
