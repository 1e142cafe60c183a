"""Collaborative filtering: user-based (cosine neighbours, with rating prediction) and item-to-item.

Both read the user's *current* row at request time, so a new event changes the next answer at
once; what they learn in `fit` (normalised matrices, the item-item neighbour graph) refreshes at
the next compaction or retrain.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommenders.base import Recommender, candidate_mask, l2_rows, normalise, padded
from recommenders.ease import EaseRecommender
from recommenders.matrix_factorization import ALSRecommender
from recommenders.interaction_data import HISTORY_SCORED, InteractionData


class UserBasedRecommender(Recommender):
    """Score of item i = sum over the k most similar users v of cos(u, v) * preference(v, i)."""

    name = "user_based"

    def __init__(self, neighbours: int = 50) -> None:
        self.neighbours = neighbours
        self._users: sp.csr_matrix = sp.csr_matrix((0, 0))  # users x items, rows L2-normalised
        self._by_item: sp.csr_matrix = sp.csr_matrix((0, 0))  # items x users (the transpose, row-sliceable)
        self._ratings: sp.csr_matrix = sp.csr_matrix((0, 0))
        self._rating_means = np.zeros(0)

    def fit(self, data: InteractionData) -> "UserBasedRecommender":
        self._users = l2_rows(data.preference_matrix())
        self._by_item = self._users.T.tocsr()
        self._ratings = data.ratings.snapshot.tocsr()
        counts = np.diff(self._ratings.indptr)
        sums = np.asarray(self._ratings.sum(axis=1)).ravel()
        self._rating_means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        return self

    def neighbours_of(self, data: InteractionData, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(user indices, cosine) of the most similar other users, from the user's live row."""
        items, weights = data.strongest_preferences(user, HISTORY_SCORED)
        known = items < self._by_item.shape[0]
        items, weights = items[known], weights[known]
        if items.size == 0 or self._by_item.shape[1] == 0:
            return np.empty(0, np.int64), np.empty(0)
        weights = weights / np.linalg.norm(weights)
        similarity = self._by_item[items].T @ weights
        if user < len(similarity):
            similarity[user] = 0.0
        k = min(self.neighbours, int(np.count_nonzero(similarity > 0)))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0)
        kth = similarity[np.argpartition(-similarity, k - 1)[k - 1]]
        # Every user tied with the k-th is a neighbour: who is chosen never depends on index order.
        top = np.flatnonzero(similarity >= kth)
        return top, similarity[top]

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        neighbours, similarity = self.neighbours_of(data, user)
        if neighbours.size == 0:
            return np.zeros(data.n_items)
        scores = self._users[neighbours].T @ similarity
        return padded(np.asarray(scores).ravel(), data.n_items)

    def predict_ratings(self, data: InteractionData, user: int, items: np.ndarray) -> np.ndarray:
        """Mean-centred neighbour prediction on the 1-5 scale; NaN where no neighbour rated the item."""
        neighbours, similarity = self.neighbours_of(data, user)
        rated_items, rated_values = data.user_ratings(user)
        own_mean = rated_values.mean() if rated_values.size else np.nan
        result = np.full(len(items), np.nan)
        fitted = items < self._ratings.shape[1]
        if neighbours.size == 0 or not fitted.any():
            return result
        neighbour_ratings = self._ratings[neighbours][:, items[fitted]]
        rated = neighbour_ratings.copy()
        rated.data = np.ones_like(rated.data)
        centred = neighbour_ratings - rated.multiply(self._rating_means[neighbours][:, None])
        numerator = np.asarray(centred.T @ similarity).ravel()
        denominator = np.asarray(rated.T @ np.abs(similarity)).ravel()
        base = own_mean if np.isfinite(own_mean) else 3.0
        with np.errstate(invalid="ignore", divide="ignore"):
            predicted = np.where(denominator > 0, base + numerator / denominator, np.nan)
        result[fitted] = np.clip(predicted, 1.0, 5.0)
        return result


class ItemBasedRecommender(Recommender):
    """Amazon-style item-to-item: score of item j = sum over the user's items i of sim(i, j) * preference(i).

    Similarity is the cosine between item columns, pruned to each item's `neighbours` best so the
    graph stays sparse on large catalogs.
    """

    name = "item_based"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours
        self.similarity: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, data: InteractionData) -> "ItemBasedRecommender":
        # log-damped: forty repeat purchases of one item must not outweigh the rest of a basket
        preference = data.preference_matrix().copy()
        preference.data = np.log1p(preference.data)
        by_item = l2_rows(preference.T.tocsr())
        similarity = (by_item @ by_item.T).tocsr()
        similarity.setdiag(0.0)
        similarity.eliminate_zeros()
        self.similarity = keep_top_per_row(similarity, self.neighbours)
        return self

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        items, weights = data.preference_row(user)
        known = items < self.similarity.shape[0]
        if not known.any():
            return np.zeros(data.n_items)
        scores = self.similarity[items[known]].T @ weights[known]
        return padded(np.asarray(scores).ravel(), data.n_items)

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        if item >= self.similarity.shape[0]:
            return np.zeros(data.n_items)
        return padded(self.similarity[item].toarray().ravel(), data.n_items)


def keep_top_per_row(matrix: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest entries, vectorised: sort all entries by (row, -value), rank within row."""
    matrix = matrix.tocsr()
    counts = np.diff(matrix.indptr)
    if counts.size == 0 or counts.max() <= k:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((-matrix.data, rows))
    rank = np.arange(len(order)) - matrix.indptr[rows[order]]
    keep = order[rank < k]
    return sp.csr_matrix((matrix.data[keep], (rows[keep], matrix.indices[keep])), shape=matrix.shape)


class CollaborativeRecommender(Recommender):
    """The collaborative signal the API serves: taste neighbours (user-based), EASE and ALS, blended.

    Each is min-max normalised over the user's *unseen* items first: seen items often hold a
    recommender's top scores, and normalising over them would squash what is left to rank. The
    weights suit the catalog (`python main.py evaluate --tune` finds them on a validation split);
    item-to-item serves "similar items".
    """

    name = "collaborative"

    def __init__(self, weights: dict[str, float] | None = None) -> None:
        self.weights = dict(weights or DEFAULT_COLLABORATIVE_WEIGHTS)
        self.user_based = UserBasedRecommender()
        self.ease = EaseRecommender()
        self.als = ALSRecommender()
        self.item_based = ItemBasedRecommender()

    @property
    def parts(self) -> dict[str, Recommender]:
        return {"user_based": self.user_based, "ease": self.ease, "als": self.als}

    def fit(self, data: InteractionData) -> "CollaborativeRecommender":
        for model in (*self.parts.values(), self.item_based):
            model.fit(data)
        return self

    def part_scores(self, data: InteractionData, user: int) -> dict[str, np.ndarray]:
        """Each part's scores, normalised over the user's unseen items (what the weights blend)."""
        unseen = candidate_mask(data, user, None)
        return {name: normalise(model.score(data, user), unseen) for name, model in self.parts.items()
                if self.weights.get(name, 0.0) > 0}

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        return sum(self.weights[name] * scores for name, scores in self.part_scores(data, user).items())

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        return self.item_based.similar_items(data, item)


DEFAULT_COLLABORATIVE_WEIGHTS = {"user_based": 0.4, "ease": 0.4, "als": 0.2}
