"""Matrix factorisation: implicit-feedback ALS for ranking, Surprise SVD for rating prediction.

Both fold a user in without a retrain: after an event the user's vector is solved again against
the fixed item factors (a k x k least-squares problem), so the next answer reflects the event.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from surprise import SVD, Dataset, Reader

from recommenders.base import Recommender
from recommenders.interaction_data import InteractionData

SEED = 42


class ALSRecommender(Recommender):
    """Hu, Koren & Volinsky's ALS (the `implicit` library) on log-damped preference confidences."""

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15,
                 alpha: float = 2.0) -> None:
        self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                             alpha=alpha, random_state=SEED, num_threads=1)
        self._fitted: dict[int, np.ndarray] = {}  # engine user -> vector from the fit
        self._folded: dict[int, np.ndarray] = {}  # users whose vector was re-solved since the fit
        self._n_items = 0

    def fit(self, data: InteractionData) -> "ALSRecommender":
        """Fit in canonical order (users with events and all items, sorted by id), then map back."""
        confidence = data.preference_matrix().astype(np.float32).tocsr()
        confidence.data = np.log1p(confidence.data)
        users = data.canonical_order(data.users, np.flatnonzero(np.diff(confidence.indptr)))
        items = data.canonical_order(data.items, np.arange(confidence.shape[1]))
        self.model.fit(confidence[users][:, items], show_progress=False)
        item_factors = np.empty_like(self.model.item_factors)
        item_factors[items] = self.model.item_factors
        self.model.item_factors = item_factors  # engine item order; YtY does not depend on the order
        self._fitted = dict(zip(users.tolist(), self.model.user_factors))
        self._n_items = confidence.shape[1]
        self._folded = {}
        return self

    def fold_in(self, data: InteractionData, user: int) -> None:
        """Re-solve the user's vector from their live row (called by the engine after each event)."""
        self._folded[user] = self.model.recalculate_user(0, self._live_row(data, user))

    def score(self, data: InteractionData, user: int) -> np.ndarray:
        vector = self._folded.get(user, self._fitted.get(user))
        if vector is None:  # a user with no events at the fit: solve from the live row
            vector = self.model.recalculate_user(0, self._live_row(data, user))
        scores = np.zeros(data.n_items)
        scores[: self._n_items] = np.maximum(self.model.item_factors @ vector, 0.0)
        return scores

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        scores = np.zeros(data.n_items)
        if item < self._n_items:
            factors = self.model.item_factors
            norms = np.linalg.norm(factors, axis=1) * np.linalg.norm(factors[item]) + 1e-9
            scores[: self._n_items] = np.maximum(factors @ factors[item] / norms, 0.0)
        return scores

    def _live_row(self, data: InteractionData, user: int) -> sp.csr_matrix:
        items, weights = data.preference_row(user)
        known = items < self._n_items
        return sp.csr_matrix((np.log1p(weights[known]).astype(np.float32), (np.zeros(known.sum(), np.int64), items[known])),
                             shape=(1, self._n_items))


class SVDRatingModel:
    """Rating prediction on the 1-5 scale: Surprise's SVD (Funk), biased, with its default settings.

    A user who rated after the fit is folded in by ridge regression of their ratings (minus the
    global mean and item biases) on the fixed item factors, with SVD's own regularisation.
    """

    def __init__(self) -> None:
        self.model = SVD(random_state=SEED)
        self._user_index: dict[int, int] = {}  # engine user -> SVD inner id
        self._item_index = np.empty(0, np.int64)  # engine item -> SVD inner id, -1 if unrated at fit
        self._folded: dict[int, tuple[float, np.ndarray]] = {}

    def fit(self, data: InteractionData) -> "SVDRatingModel":
        ratings = data.ratings.snapshot.tocoo()
        self._folded = {}
        if ratings.nnz == 0:
            self._item_index = np.full(data.n_items, -1, np.int64)
            return self
        frame = pd.DataFrame({"user": ratings.row, "item": ratings.col, "rating": ratings.data,
                              "user_id": data.users.ids_of(ratings.row), "item_id": data.items.ids_of(ratings.col)})
        # Surprise numbers users and items by first appearance and initialises factors in that order:
        # sort by external ids so a restart, which numbers them differently, fits the same model.
        frame = frame.sort_values(["user_id", "item_id"], kind="stable")[["user", "item", "rating"]]
        train = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
        self.model.fit(train)
        self._user_index = {int(train.to_raw_uid(inner)): inner for inner in train.all_users()}
        self._item_index = np.full(data.n_items, -1, np.int64)
        raw_items = np.array([train.to_raw_iid(inner) for inner in train.all_items()], dtype=np.int64)
        self._item_index[raw_items] = np.arange(len(raw_items))
        return self

    def fold_in(self, data: InteractionData, user: int) -> None:
        """Solve the user's bias and factors from their current ratings (after a new rating)."""
        if self.model.__dict__.get("qi") is None:
            return
        items, values = data.user_ratings(user)
        inner = self._inner_items(items)
        known = inner >= 0
        if not known.any():
            return
        q = self.model.qi[inner[known]]
        target = values[known] - self.model.trainset.global_mean - self.model.bi[inner[known]]
        design = np.hstack([np.ones((len(q), 1)), q])
        regularised = design.T @ design + self.model.reg_pu * len(q) * np.eye(design.shape[1])
        solution = np.linalg.solve(regularised, design.T @ target)
        self._folded[user] = (float(solution[0]), solution[1:])

    def predict(self, data: InteractionData, user: int, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for the items (clipped to 1-5); NaN before any fit on ratings."""
        if self.model.__dict__.get("qi") is None:
            return np.full(len(items), np.nan)
        bias, vector = self._user_terms(user)
        inner = self._inner_items(items)
        known = inner >= 0
        predictions = np.full(len(items), self.model.trainset.global_mean + bias)
        predictions[known] += self.model.bi[inner[known]] + self.model.qi[inner[known]] @ vector
        return np.clip(predictions, 1.0, 5.0)

    def _user_terms(self, user: int) -> tuple[float, np.ndarray]:
        if user in self._folded:
            return self._folded[user]
        inner = self._user_index.get(user)
        if inner is None:
            return 0.0, np.zeros(self.model.n_factors)
        return float(self.model.bu[inner]), self.model.pu[inner]

    def _inner_items(self, items: np.ndarray) -> np.ndarray:
        inner = np.full(len(items), -1, np.int64)
        fitted = items < len(self._item_index)
        inner[fitted] = self._item_index[items[fitted]]
        return inner
