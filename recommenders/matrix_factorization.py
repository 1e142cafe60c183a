"""Matrix factorisation: implicit-feedback ALS for ranking, Surprise SVD for rating prediction.

Both fold a user in without a retrain: after an event the user's vector is solved again against
the fixed item factors (a k x k least-squares problem), so the next answer reflects the event.
A solve costs history x k^2, so a heavy user is solved from HISTORY_SCORED of their items, like
every other per-user score: at ml-1m a user with 2,000 ratings took 1.2 ms in ALS and 1.4 ms in
SVD; capped, fold-in stays under 1 ms at p99.
Their learned factors are saved as plain arrays; the libraries are needed to fit, not to serve.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.linalg import lapack
from implicit.cpu.als import AlternatingLeastSquares
from surprise import SVD, Dataset, Reader

from recommenders.base import Recommender, padded
from recommenders.interaction_data import HISTORY_SCORED, InteractionData
from recommenders.persistence import Value

SEED = 42


def _grown(rows: np.ndarray, n: int, fill=0) -> np.ndarray:
    """`rows` (a vector or a matrix) with at least n rows, new rows set to `fill`.

    Grown to the next power of two: a copy per new user made ingest quadratic (9% of the server's
    time at 5,000 new users); the size depends on n alone, so every process holds the same arrays.
    """
    if len(rows) >= n:
        return rows
    capacity = 1 << (n - 1).bit_length()
    return np.concatenate([rows, np.full((capacity - len(rows), *rows.shape[1:]), fill, dtype=rows.dtype)])


GRAM_BLOCK = 65_536  # rows of item factors turned to float64 at a time


def gram(factors: np.ndarray) -> np.ndarray:
    """Y^T Y in float64, a block of rows at a time: the whole float64 copy of 1M x 64 factors was a 512 MB
    allocation on a server's first fold-in (and 23% of its first minute's request time at 1M items)."""
    total = np.zeros((factors.shape[1], factors.shape[1]))
    for start in range(0, len(factors), GRAM_BLOCK):
        block = factors[start:start + GRAM_BLOCK].astype(np.float64)
        total += block.T @ block
    return total


def solve_positive_definite(system: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """x with system @ x = rhs, for a regularised normal-equations matrix: LAPACK's Cholesky solve
    directly, a quarter of the time of np.linalg.solve at k = 100 (0.04 against 0.11 ms)."""
    _, solution, info = lapack.dposv(system, rhs)
    if info != 0:  # not positive definite after all (round-off): the general solver
        return np.linalg.solve(system, rhs)
    return solution


class ALSRecommender(Recommender):
    """Hu, Koren & Volinsky's ALS (the `implicit` library) on log-damped preference confidences."""

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15,
                 alpha: float = 2.0) -> None:
        self.model = AlternatingLeastSquares(factors=factors, regularization=regularization, iterations=iterations,
                                             alpha=alpha, random_state=SEED, num_threads=1)
        self.user_factors = np.zeros((0, factors), np.float32)  # engine user -> vector
        self.solved = np.zeros(0, bool)  # users whose vector is in user_factors (fitted or folded in)
        self._gram: np.ndarray | None = None

    def params(self) -> dict:
        return {"factors": self.model.factors, "regularization": self.model.regularization,
                "iterations": self.model.iterations, "alpha": self.model.alpha}

    @property
    def item_factors(self) -> np.ndarray:
        return self.model.item_factors

    def fit(self, data: InteractionData) -> "ALSRecommender":
        """Fit in canonical order (users with events and all items, sorted by id), then map back."""
        confidence = data.preference_matrix().astype(np.float32).tocsr()
        confidence.data = np.log1p(confidence.data)
        users = data.canonical_order(data.users, np.flatnonzero(np.diff(confidence.indptr)))
        items = data.canonical_order(data.items, np.arange(confidence.shape[1]))
        self.model.fit(confidence[users][:, items], show_progress=False)
        item_factors = np.empty_like(self.model.item_factors)
        item_factors[items] = self.model.item_factors
        self._set_item_factors(item_factors)  # engine item order; YtY does not depend on the order
        self.user_factors = np.zeros((data.n_users, self.model.factors), np.float32)
        self.user_factors[users] = self.model.user_factors
        self.solved = np.zeros(data.n_users, bool)
        self.solved[users] = True
        return self

    def state(self) -> dict[str, Value]:
        return {"item_factors": self.model.item_factors, "user_factors": self.user_factors, "solved": self.solved}

    def restore(self, state: dict[str, Value]) -> None:
        self._set_item_factors(state["item_factors"])
        self.user_factors, self.solved = state["user_factors"], state["solved"]

    def _set_item_factors(self, item_factors: np.ndarray) -> None:
        self.model.item_factors = item_factors
        self._gram = None  # Y^T Y of these factors, computed at the first solve

    def partial_fit_users(self, data: InteractionData, users: np.ndarray) -> None:
        """The users' vectors are stale after their events: the next `score` solves them from their live rows.

        Solving at the read rather than at the event costs one solve per read instead of one per
        event in every process: each server applies every event, and one of them serves the user's
        next answer. At 1,300 events/s the eager solve was 20% of a server's CPU (py-spy).
        """
        self.solved = _grown(self.solved, data.n_users, False)
        self.solved[users] = False

    def forget_users(self, data: InteractionData, users: np.ndarray) -> None:
        self.partial_fit_users(data, users)  # solved from the now empty rows: zeros

    def user_vectors(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        """The users' vectors, solved again from their live rows where an event made them stale: what
        `score` multiplies, and what queries the ANN index (recommenders/retrieval.py)."""
        stale = users >= len(self.solved)
        stale[~stale] = ~self.solved[users[~stale]]
        if stale.any():  # newcomers, and users with events since their last solve
            fresh = np.unique(users[stale])
            self.user_factors = _grown(self.user_factors, data.n_users)
            self.solved = _grown(self.solved, data.n_users, False)
            self.user_factors[fresh] = self._solve(data, fresh)
            self.solved[fresh] = True
        return self.user_factors[users]

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        vectors = self.user_vectors(data, users)
        return padded(np.maximum(vectors @ self.model.item_factors.T, 0.0).astype(np.float64), data.n_items)

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        vectors = self.user_vectors(data, users)
        known = items < len(self.model.item_factors)  # items added after the fit have no factors yet
        scores = np.zeros((len(users), len(items)))
        scores[:, known] = np.maximum(vectors @ self.model.item_factors[items[known]].T, 0.0)
        return scores

    def similar_items(self, data: InteractionData, items: np.ndarray) -> np.ndarray:
        factors = self.model.item_factors
        known = items < len(factors)
        scores = np.zeros((len(items), data.n_items))
        if known.any():
            norms = np.linalg.norm(factors, axis=1)
            query = factors[items[known]]
            cosine = query @ factors.T / (norms[None, :] * np.linalg.norm(query, axis=1)[:, None] + 1e-9)
            scores[known, :len(factors)] = np.maximum(cosine, 0.0)
        return scores

    def _solve(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        """The users' vectors from their live rows: the ALS normal equations against the item factors.

        (YtY + Y_u^T (C_u - I) Y_u + reg I) x = Y_u^T c_u, with c = alpha * log1p(weight), as
        `implicit` solves them (recalculate_user agrees to 1e-6); in numpy it takes half the time
        (0.12 against 0.23 ms at p50 on ml-1m), which matters on the write path.
        """
        factors = self.model.item_factors
        if self._gram is None:
            self._gram = gram(factors)
        vectors = np.zeros((len(users), self.model.factors), np.float32)
        for n, user in enumerate(users.tolist()):  # a k x k solve per user
            items, weights = data.strongest_preferences(user, HISTORY_SCORED)
            fitted = items < len(factors)  # items added after the fit have no factors yet
            if not fitted.any():
                continue
            confidence = self.model.alpha * np.log1p(weights[fitted])
            chosen = factors[items[fitted]].astype(np.float64)
            system = self._gram + (chosen.T * (confidence - 1.0)) @ chosen
            system.flat[::len(system) + 1] += self.model.regularization
            vectors[n] = solve_positive_definite(system, chosen.T @ confidence)
        return vectors


class SVDRatingModel(Recommender):
    """Rating prediction on the 1-5 scale: Surprise's SVD (Funk), biased, with its default settings.

    Its score is the predicted rating of every item. A user whose ratings changed after the fit is
    folded in by ridge regression of their ratings (minus the global mean and item biases) on the
    fixed item factors, with SVD's own regularisation.
    """

    name = "svd"

    def __init__(self, factors: int = 100) -> None:
        self.factors = factors
        self.global_mean = np.nan  # NaN until a fit saw ratings
        self.regularization = 0.02
        self.item_bias = np.zeros(0)  # by engine item; items unrated at the fit have no terms
        self.item_vectors = np.zeros((0, factors))
        self.item_known = np.zeros(0, bool)
        self.user_bias = np.zeros(0)  # by engine user
        self.user_vectors = np.zeros((0, factors))
        self.fingerprint = np.zeros((0, 2))  # (count, sum) of the ratings the user's terms were solved from
        self._stale = np.zeros(0, bool)  # users with events since their terms were solved (not saved: the log marks them)

    def params(self) -> dict:
        return {"factors": self.factors}

    def fit(self, data: InteractionData) -> "SVDRatingModel":
        ratings = data.ratings.snapshot.tocoo()
        self.global_mean = np.nan
        self.item_known = np.zeros(data.n_items, bool)
        self.user_bias, self.user_vectors = np.zeros(data.n_users), np.zeros((data.n_users, self.factors))
        self.fingerprint, self._stale = np.zeros((data.n_users, 2)), np.zeros(data.n_users, bool)
        self.item_bias, self.item_vectors = np.zeros(data.n_items), np.zeros((data.n_items, self.factors))
        if ratings.nnz == 0:
            return self
        frame = pd.DataFrame({"user": ratings.row, "item": ratings.col, "rating": ratings.data,
                              "user_id": data.users.ids_of(ratings.row), "item_id": data.items.ids_of(ratings.col)})
        # Surprise numbers users and items by first appearance and initialises factors in that order:
        # sort by external ids so a restart, which numbers them differently, fits the same model.
        frame = frame.sort_values(["user_id", "item_id"], kind="stable")[["user", "item", "rating"]]
        train = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
        model = SVD(n_factors=self.factors, random_state=SEED).fit(train)
        self.global_mean, self.regularization = float(train.global_mean), float(model.reg_pu)
        users = np.array([train.to_raw_uid(inner) for inner in train.all_users()], dtype=np.int64)
        items = np.array([train.to_raw_iid(inner) for inner in train.all_items()], dtype=np.int64)
        self.user_bias[users], self.user_vectors[users] = model.bu, model.pu
        self.item_bias[items], self.item_vectors[items], self.item_known[items] = model.bi, model.qi, True
        self.fingerprint[users] = self._fingerprints(data, users)
        return self

    def state(self) -> dict[str, Value]:
        return {"global_mean": self.global_mean, "regularization": self.regularization, "item_bias": self.item_bias,
                "item_vectors": self.item_vectors, "item_known": self.item_known, "user_bias": self.user_bias,
                "user_vectors": self.user_vectors, "fingerprint": self.fingerprint}

    def restore(self, state: dict[str, Value]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def partial_fit_users(self, data: InteractionData, users: np.ndarray) -> None:
        """The users' terms are stale after their events: solved again at their next read if their
        ratings changed (a view leaves them as they are); see ALSRecommender.partial_fit_users."""
        self._grow(data)
        self._stale[users] = True

    def forget_users(self, data: InteractionData, users: np.ndarray) -> None:
        self._grow(data)
        self.user_bias[users], self.user_vectors[users], self.fingerprint[users] = 0.0, 0.0, 0.0
        self._stale[users] = False

    def _refresh(self, data: InteractionData, users: np.ndarray) -> None:
        """Solve the stale users whose ratings changed since their terms were solved."""
        self._grow(data)
        for user in np.unique(users[self._stale[users]]).tolist():  # one small ridge solve per user who rated
            self._stale[user] = False
            items, values = data.user_ratings(user)
            fingerprint = _fingerprint(values)
            if tuple(self.fingerprint[user]) != fingerprint:
                self.fingerprint[user] = fingerprint
                self._solve(data, user, items, values)

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        if np.isnan(self.global_mean):
            return np.zeros((len(users), data.n_items))
        self._refresh(data, users)
        fitted = users < len(self.user_bias)
        bias, vectors = np.zeros(len(users)), np.zeros((len(users), self.factors))
        bias[fitted], vectors[fitted] = self.user_bias[users[fitted]], self.user_vectors[users[fitted]]
        item_terms = np.where(self.item_known, self.item_bias, 0.0)[None, :] + vectors @ self.item_vectors.T
        predictions = self.global_mean + bias[:, None] + padded(item_terms, data.n_items)
        return np.clip(predictions, 1.0, 5.0)

    def predict_ratings(self, data: InteractionData, user: int, items: np.ndarray) -> np.ndarray:
        """Predicted ratings for the items (clipped to 1-5); NaN before any fit on ratings."""
        if np.isnan(self.global_mean):
            return np.full(len(items), np.nan)
        self._refresh(data, np.array([user]))
        bias = self.user_bias[user] if user < len(self.user_bias) else 0.0
        vector = self.user_vectors[user] if user < len(self.user_vectors) else np.zeros(self.factors)
        known = items < len(self.item_known)
        known[known] = self.item_known[items[known]]
        predictions = np.full(len(items), self.global_mean + bias)
        predictions[known] += self.item_bias[items[known]] + self.item_vectors[items[known]] @ vector
        return np.clip(predictions, 1.0, 5.0)

    def _solve(self, data: InteractionData, user: int, items: np.ndarray, values: np.ndarray) -> None:
        """Ridge regression of the user's ratings on the item terms; `items` and `values` are their ratings."""
        if len(items) > HISTORY_SCORED:  # an even sample over the user's ratings, and always the latest
            latest = np.isin(items, data.recent.of(user).items, kind="table")
            latest[np.linspace(0, len(items) - 1, HISTORY_SCORED - np.count_nonzero(latest)).astype(np.int64)] = True
            items, values = items[latest], values[latest]
        known = items < len(self.item_known)
        known[known] = self.item_known[items[known]]
        if not known.any() or np.isnan(self.global_mean):
            return
        q = self.item_vectors[items[known]]
        target = values[known] - self.global_mean - self.item_bias[items[known]]
        # The normal equations of the design [1 | q] (bias, then factors), built by blocks.
        regularised = np.empty((self.factors + 1, self.factors + 1))
        regularised[0, 0] = len(q)
        regularised[0, 1:] = regularised[1:, 0] = q.sum(axis=0)
        regularised[1:, 1:] = q.T @ q
        regularised.flat[::self.factors + 2] += self.regularization * len(q)
        solution = solve_positive_definite(regularised, np.concatenate([[target.sum()], q.T @ target]))
        self.user_bias[user], self.user_vectors[user] = solution[0], solution[1:]

    def _grow(self, data: InteractionData) -> None:
        self.user_bias = _grown(self.user_bias, data.n_users)
        self.user_vectors = _grown(self.user_vectors, data.n_users)
        self.fingerprint = _grown(self.fingerprint, data.n_users)
        self._stale = _grown(self._stale, data.n_users, False)

    @staticmethod
    def _fingerprints(data: InteractionData, users: np.ndarray) -> np.ndarray:
        rows = [data.user_ratings(user)[1] for user in users.tolist()]
        return np.array([_fingerprint(values) for values in rows], dtype=np.float64).reshape(-1, 2)


def _fingerprint(ratings: np.ndarray) -> tuple[int, float]:
    """(count, sum) of a user's ratings: it changes when they rate, not when they view."""
    return len(ratings), float(ratings.sum())
