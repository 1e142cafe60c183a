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


class EaseRecommender(Recommender):
    name = "ease"

    def __init__(self, l2: float = 200.0, max_items: int = 5000) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.modelled = np.empty(0, np.int64)  # item indices with a row/column in `weights`
        self.position = np.empty(0, np.int64)  # item index -> row in `weights`, -1 if not modelled
        self.weights = np.zeros((0, 0), np.float32)

    def fit(self, data: InteractionData) -> "EaseRecommender":
        liked = data.preference_matrix().copy()
        liked.data = np.ones_like(liked.data)
        counts = np.asarray(liked.sum(axis=0)).ravel()
        order = np.argsort(-counts, kind="stable")[: self.max_items]
        self.modelled = np.sort(order[counts[order] > 0])
        self.position = np.full(data.n_items, -1, np.int64)
        self.position[self.modelled] = np.arange(len(self.modelled))
        columns = liked[:, self.modelled]
        gram = (columns.T @ columns).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)
        np.fill_diagonal(weights, 0.0)
        self.weights = weights.astype(np.float32)
        return self

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        items, _ = data.strongest_preferences(user, HISTORY_SCORED)
        items = items[items < len(self.position)]
        rows = self.position[items]
        rows = rows[rows >= 0]
        scores = np.zeros(data.n_items)
        if rows.size:
            scores[self.modelled] = np.maximum(self.weights[rows].sum(axis=0), 0.0)
        return scores

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        scores = np.zeros(data.n_items)
        if item < len(self.position) and self.position[item] >= 0:
            scores[self.modelled] = np.maximum(self.weights[self.position[item]], 0.0)
        return scores
