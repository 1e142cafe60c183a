"""Neighbourhood collaborative filtering: user-based (cosine neighbours, with rating prediction) and
item-to-item; and the collaborative blend the API serves.

Both score from the user's *current* row, so a new event changes the next answer at once; what
they learn in `fit` (normalised matrices, the item-item neighbour graph) changes at the next fit.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommenders.base import (Recommender, dot_rows, dot_rows_at, fitted_columns, l2_rows, normalise_retrieved,
                               normalise_rows, padded, top_k_unseen, unseen_rows)
from recommenders.interaction_data import HISTORY_SCORED, InteractionData
from recommenders.persistence import Value
from recommenders.sparse_state import csr_of


class UserBasedRecommender(Recommender):
    """Score of item i = sum over the k most similar users v of cos(u, v) * preference(v, i)."""

    name = "user_based"

    def __init__(self, neighbours: int = 50) -> None:
        self.neighbours = neighbours
        self._users: sp.csr_matrix = sp.csr_matrix((0, 0))  # users x items, rows L2-normalised
        self._ratings: sp.csr_matrix = sp.csr_matrix((0, 0))
        self._derive()

    def params(self) -> dict:
        return {"neighbours": self.neighbours}

    def fit(self, data: InteractionData) -> "UserBasedRecommender":
        self._users = l2_rows(data.preference_matrix())
        self._ratings = data.ratings.snapshot.tocsr()
        self._derive()
        return self

    def state(self) -> dict[str, Value]:
        return {"users": self._users, "ratings": self._ratings}

    def restore(self, state: dict[str, Value]) -> None:
        self._users, self._ratings = state["users"], state["ratings"]
        self._derive()

    def _derive(self) -> None:
        """What follows from the fitted matrices: the transpose (row-sliceable by item) and rating means."""
        self._by_item = self._users.T.tocsr()
        counts = np.diff(self._ratings.indptr)
        sums = np.asarray(self._ratings.sum(axis=1)).ravel()
        self._rating_means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)

    def forget_users(self, data: InteractionData, users: np.ndarray) -> None:
        """Deleted users stop being anyone's neighbour at once."""
        for name in ("_users", "_ratings"):
            matrix = getattr(self, name)
            keep = np.ones(matrix.shape[0])
            keep[users[users < matrix.shape[0]]] = 0.0
            kept = (sp.diags(keep) @ matrix).tocsr()
            kept.eliminate_zeros()
            setattr(self, name, kept)
        self._derive()

    def neighbours_of(self, data: InteractionData, users: np.ndarray) -> sp.csr_matrix:
        """users x fitted users: cosine to each user's k most similar others (every user tied with
        the k-th included, so who is chosen never depends on index order), from the live rows."""
        n_fitted_items, n_fitted_users = self._by_item.shape
        rows = fitted_columns(data.preference_rows(users, limit=HISTORY_SCORED), n_fitted_items)
        if n_fitted_users == 0 or rows.nnz == 0:
            return sp.csr_matrix((len(users), n_fitted_users))
        similarity = dot_rows(l2_rows(rows), self._by_item)
        fitted = users < n_fitted_users
        similarity[np.flatnonzero(fitted), users[fitted]] = 0.0
        if n_fitted_users > self.neighbours:
            kth = -np.partition(-similarity, self.neighbours - 1, axis=1)[:, self.neighbours - 1:self.neighbours]
            similarity[similarity < kth] = 0.0
        similarity[similarity < 0] = 0.0
        # CSR from the nonzero cells, as sp.csr_matrix(similarity) builds it, without its detour through COO
        rows, columns = np.nonzero(similarity)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(users)))])
        return csr_of(similarity[rows, columns], columns, indptr, similarity.shape)

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        return padded(dot_rows(self.neighbours_of(data, users), self._users), data.n_items)

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return dot_rows_at(self.neighbours_of(data, users), self._users, items)

    def predict_ratings(self, data: InteractionData, user: int, items: np.ndarray) -> np.ndarray:
        """Mean-centred neighbour prediction on the 1-5 scale; NaN where no neighbour rated the item."""
        similar = self.neighbours_of(data, np.array([user]))
        neighbours, similarity = similar.indices, similar.data
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

    def params(self) -> dict:
        return {"neighbours": self.neighbours}

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

    def state(self) -> dict[str, Value]:
        return {"similarity": self.similarity}

    def restore(self, state: dict[str, Value]) -> None:
        self.similarity = state["similarity"]

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        rows = fitted_columns(data.preference_rows(users), self.similarity.shape[0])
        return padded(dot_rows(rows, self.similarity), data.n_items)

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return dot_rows_at(data.preference_rows(users), self.similarity, items)

    def similar_items_among(self, data: InteractionData, item: int, items: np.ndarray) -> np.ndarray:
        query = sp.csr_matrix(([1.0], ([0], [item])), shape=(1, max(data.n_items, item + 1)))
        return dot_rows_at(query, self.similarity, items)[0]

    def similar_items(self, data: InteractionData, items: np.ndarray) -> np.ndarray:
        known = np.minimum(items, max(self.similarity.shape[0] - 1, 0))
        if self.similarity.shape[0] == 0:
            return np.zeros((len(items), data.n_items))
        rows = np.asarray(self.similarity[known].todense())
        rows[items >= self.similarity.shape[0]] = 0.0
        return padded(rows, data.n_items)


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


class CollaborativeBlend:
    """The collaborative signal the API serves: the registered collaborative parts (user-based
    neighbours, EASE, ALS, ...), blended by weight.

    Each is min-max normalised over the user's *unseen* items first: seen items often hold a
    recommender's top scores, and normalising over them would squash what is left to rank. The
    weights suit the catalog (`python main.py evaluate --tune` finds them on a validation split).
    It learns nothing itself: the engine fits, folds and saves the parts.
    """

    name = "collaborative"

    def __init__(self, parts: dict[str, Recommender], weights: dict[str, float]) -> None:
        self.parts = parts
        self.weights = weights  # as configured, parts left out by the trainer included (what a tuned copy starts from)
        # The weights of the parts present, scaled back to the configured total: a trainer may leave parts out
        # (registry.left_out), and the blend must keep its share against content in the hybrid.
        present = {name: weight for name, weight in weights.items() if name in parts}
        kept = sum(present.values())
        scale = sum(weights.values()) / kept if kept > 0 else 1.0
        self.used_weights = {name: weight * scale for name, weight in present.items()}

    def part_scores(self, data: InteractionData, users: np.ndarray) -> dict[str, np.ndarray]:
        """Each weighted part's scores, normalised over each user's unseen items."""
        unseen = unseen_rows(data, users)
        return {name: normalise_rows(model.score(data, users), unseen) for name, model in self.parts.items()
                if self.used_weights.get(name, 0.0) > 0}

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        return self.combine(self.part_scores(data, users), (len(users), data.n_items))

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The blend at retrieved candidates (all unseen), each part normalised as over the catalog."""
        return self.combine({name: normalise_retrieved(model.score_items(data, users, items))
                             for name, model in self.parts.items() if self.used_weights.get(name, 0.0) > 0},
                            (len(users), len(items)))

    def combine(self, part_scores: dict[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
        """The weighted sum of normalised part scores (as `part_scores` returns them; unweighted parts are skipped)."""
        blended = np.zeros(shape)
        for name, scores in part_scores.items():
            if self.used_weights.get(name, 0.0) > 0:
                blended += self.used_weights[name] * scores
        return blended

    def recommend(self, data: InteractionData, users: np.ndarray, k: int) -> np.ndarray:
        return top_k_unseen(data, self.score(data, users), users, k)
