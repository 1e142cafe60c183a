"""Reference models: the yardsticks our recommenders are measured against, behind one small interface.

`fit(train)` learns from the training pairs; `recommend(users, k)` returns a users x k matrix of item
indices, best first, never an item the user has seen in training (-1 where nothing is left);
rating models also `predict(users, items)`. Every model learns from the same binary matrix of
training positives (SVD: from the explicit ratings), and ranks all of a user's unseen items.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import scipy.sparse as sp

from models.metrics import ranking_metrics
from models.split import SEED, TEST_FRACTION, Pairs

EASE_LAMBDAS = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
EASE_MAX_ITEMS = 10_000  # a dense float64 item x item matrix of 10k items is 800 MB; past that, the most popular 10k
TUNING_K = 10


class Reference(ABC):
    """A reference model; `requires_ratings` models are skipped on data sets without explicit ratings."""

    name: str = "reference"
    kind = "reference"
    requires_ratings = False
    predicts_ratings = False

    def __init__(self) -> None:
        self.train: Pairs | None = None

    @abstractmethod
    def fit(self, train: Pairs) -> "Reference":
        """Learn from the training pairs."""

    @abstractmethod
    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        """Top-k unseen item indices per user, -1 padded."""

    @abstractmethod
    def describe(self) -> str:
        """The settings used, for the report."""


def top_k_unseen(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """Row-wise top-k of a dense users x items score block, seen items excluded, ties broken by item index."""
    scores = np.array(scores, dtype=np.float64)
    seen = seen.tocoo()
    scores[seen.row, seen.col] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top[~np.isfinite(np.take_along_axis(scores, top, axis=1))] = -1
    return np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)


class PopularityBaseline(Reference):
    """The number of users with a training positive on the item: the same list for everyone."""

    name = "popularity_baseline"

    def fit(self, train: Pairs) -> "PopularityBaseline":
        self.train = train
        self.counts = np.asarray(train.positives.sum(axis=0)).ravel()
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        return top_k_unseen(np.broadcast_to(self.counts, (len(users), len(self.counts))), self.train.seen[users], k)

    def describe(self) -> str:
        return "count of training positives per item"


class SurpriseSVD(Reference):
    """scikit-surprise SVD with default parameters on the explicit training ratings.

    Rankings and predictions come from its fitted `pu`, `qi`, `bu`, `bi` and global mean, in batch:
    est = mean + bu + bi + pu . qi, with Surprise's own fallbacks (an unknown user or item has zero
    bias and no factor term) and, for `predict`, its clipping to the rating scale. Ranking uses the
    unclipped estimate, so two items both above 5 stars still rank by how far above.
    """

    name = "surprise_svd"
    requires_ratings = True
    predicts_ratings = True

    def fit(self, train: Pairs) -> "SurpriseSVD":
        from surprise import SVD, Dataset, Reader

        self.train = train
        rated = train.ratings.tocoo()
        self.scale = (float(rated.data.min()), float(rated.data.max()))
        frame = pd.DataFrame({"user": rated.row, "item": rated.col, "rating": rated.data})
        trainset = Dataset.load_from_df(frame, Reader(rating_scale=self.scale)).build_full_trainset()
        self.algo = SVD(random_state=SEED).fit(trainset)
        self.mean = trainset.global_mean
        self.bu, self.pu = self._by_index(trainset.to_raw_uid, trainset.n_users, self.algo.bu, self.algo.pu, train.n_users)
        self.bi, self.qi = self._by_index(trainset.to_raw_iid, trainset.n_items, self.algo.bi, self.algo.qi, train.n_items)
        return self

    @staticmethod
    def _by_index(to_raw, n_inner: int, bias: np.ndarray, factors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Surprise's inner-id arrays re-indexed by our indices; zeros where Surprise never saw the index."""
        raw = np.array([to_raw(inner) for inner in range(n_inner)], dtype=np.int64)
        full_bias, full_factors = np.zeros(n), np.zeros((n, factors.shape[1]))
        full_bias[raw], full_factors[raw] = bias, factors
        return full_bias, full_factors

    def estimate(self, users: np.ndarray) -> np.ndarray:
        """Unclipped predicted ratings, users x every item."""
        return self.mean + self.bu[users][:, None] + self.bi[None, :] + self.pu[users] @ self.qi.T

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        return top_k_unseen(self.estimate(users), self.train.seen[users], k)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of (user, item) pairs, clipped to the rating scale as Surprise's predict does."""
        estimate = self.mean + self.bu[users] + self.bi[items] + np.einsum("ij,ij->i", self.pu[users], self.qi[items])
        return np.clip(estimate, *self.scale)

    def describe(self) -> str:
        return f"default parameters (100 factors, 20 epochs), random_state={SEED}"


class ImplicitALS(Reference):
    """`implicit` ALS with its default settings (a fixed random_state only) on the binary training positives."""

    name = "implicit_als"

    def fit(self, train: Pairs) -> "ImplicitALS":
        from implicit.cpu.als import AlternatingLeastSquares

        self.train = train
        self.model = AlternatingLeastSquares(random_state=SEED)
        self.model.fit(train.positives.astype(np.float32), show_progress=False)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        n = min(k, self.train.n_items)
        ids, scores = self.model.recommend(users, self.train.seen[users], N=n, filter_already_liked_items=True)
        ids = np.asarray(ids, dtype=np.int64).reshape(len(users), n)
        ids[np.asarray(scores).reshape(len(users), n) <= np.finfo(np.float32).min] = -1  # implicit's "filtered" mark
        return np.pad(ids, ((0, 0), (0, k - n)), constant_values=-1)

    def describe(self) -> str:
        return f"AlternatingLeastSquares() defaults (100 factors, reg 0.01, alpha 1, 15 iterations), random_state={SEED}"


class ImplicitItemCosine(Reference):
    """`implicit` CosineRecommender (defaults: 20 neighbours per item) on the binary training positives.

    Scores are its own (liked items @ similarity); the ranking is over all unseen items, so a user
    whose neighbours cover fewer than k items still gets k items (zero-score ones by index).
    """

    name = "implicit_item_cosine"

    def fit(self, train: Pairs) -> "ImplicitItemCosine":
        from implicit.nearest_neighbours import CosineRecommender
        from implicit.utils import ParameterWarning

        self.train = train
        self.model = CosineRecommender()
        with warnings.catch_warnings():  # its own normalize() hands its own fit a COO matrix, and it warns about that
            warnings.simplefilter("ignore", ParameterWarning)
            self.model.fit(train.positives, show_progress=False)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        scores = (self.train.positives[users] @ self.model.similarity).toarray()
        return top_k_unseen(scores, self.train.seen[users], k)

    def describe(self) -> str:
        return "CosineRecommender() defaults (K=20)"


def ease_weights(positives: sp.spmatrix, regularisation: float) -> np.ndarray:
    """EASE (Steck 2019) closed form: B = I - P / diag(P) with P = (X^T X + lambda I)^-1, so diag(B) = 0."""
    gram = np.asarray((positives.T @ positives).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += regularisation
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


class EASE(Reference):
    """EASE on the binary training positives; lambda tuned by NDCG@10 on a validation split of train.

    The validation split holds out 20% of each user's training pairs (the test protocol, applied
    inside train, with another seed); the best lambda of EASE_LAMBDAS is then refitted on all of
    train. Past EASE_MAX_ITEMS items only the most popular EASE_MAX_ITEMS are modelled (the rest are
    never recommended), to keep the dense item x item inverse in memory.
    """

    name = "ease"

    def __init__(self, lambdas: tuple[float, ...] = EASE_LAMBDAS, max_items: int = EASE_MAX_ITEMS) -> None:
        super().__init__()
        self.lambdas = lambdas
        self.max_items = max_items
        self.validation_ndcg: dict[float, float] = {}

    def fit(self, train: Pairs) -> "EASE":
        self.train = train
        popularity = np.asarray(train.positives.sum(axis=0)).ravel()
        self.modelled = np.sort(np.argsort(-popularity, kind="stable")[:self.max_items])
        fit_part, validation = train.holdout(TEST_FRACTION, SEED + 1)
        for regularisation in self.lambdas:
            self.weights = ease_weights(fit_part.positives[:, self.modelled], regularisation)
            users = np.flatnonzero(np.diff(validation.positives.indptr))
            ranked = self._rank(fit_part, users, TUNING_K)
            self.validation_ndcg[regularisation] = ranking_metrics(
                ranked, validation.positives[users], train.n_items)[f"ndcg@{TUNING_K}"]
        self.regularisation = max(self.validation_ndcg, key=self.validation_ndcg.get)
        self.weights = ease_weights(train.positives[:, self.modelled], self.regularisation)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        return self._rank(self.train, users, k)

    def _rank(self, known: Pairs, users: np.ndarray, k: int) -> np.ndarray:
        scores = np.full((len(users), known.n_items), -np.inf)
        scores[:, self.modelled] = known.positives[users][:, self.modelled] @ self.weights
        return top_k_unseen(scores, known.seen[users], k)

    def describe(self) -> str:
        tried = ", ".join(f"{lam:g}: {ndcg:.4f}" for lam, ndcg in self.validation_ndcg.items())
        capped = f"; modelled the {len(self.modelled)} most popular items" if len(self.modelled) < self.train.n_items else ""
        return f"lambda={self.regularisation:g}, chosen by validation NDCG@{TUNING_K} ({tried}){capped}"


REFERENCES: dict[str, type[Reference]] = {model.name: model for model in
                                          (PopularityBaseline, SurpriseSVD, ImplicitALS, ImplicitItemCosine, EASE)}
