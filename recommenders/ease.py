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


class EaseRecommender(Recommender):
    name = "ease"

    def __init__(self, l2: float = 200.0, max_items: int = 5000) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.modelled = np.empty(0, np.int64)  # item indices with a row/column in `weights`
        self.weights = np.zeros((0, 0), np.float32)

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
        return self

    def state(self) -> dict[str, Value]:
        return {"modelled": self.modelled, "weights": self.weights}

    def restore(self, state: dict[str, Value]) -> None:
        self.modelled, self.weights = state["modelled"], state["weights"]

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        rows = data.preference_rows(users, limit=HISTORY_SCORED)[:, self.modelled]
        rows.data = np.ones_like(rows.data)
        scores = np.zeros((len(users), data.n_items))
        scores[:, self.modelled] = np.maximum(rows @ self.weights, 0.0)
        return scores

    def similar_items(self, data: InteractionData, items: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.modelled, items)
        modelled = (position < len(self.modelled)) & (self.modelled[np.minimum(position, len(self.modelled) - 1)] == items) \
            if len(self.modelled) else np.zeros(len(items), bool)
        scores = np.zeros((len(items), data.n_items))
        scores[np.ix_(np.flatnonzero(modelled), self.modelled)] = np.maximum(self.weights[position[modelled]], 0.0)
        return scores
