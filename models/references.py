"""Reference models: the yardsticks our recommenders are measured against, behind one small interface.

`fit(train)` learns from the training pairs; `recommend(users, k)` returns a users x k matrix of item
indices, best first, never an item the user has seen in training (-1 where nothing is left);
rating models also `predict(users, items)`. Every model learns from the same binary matrix of
training positives (SVD: from the explicit ratings), and ranks all of a user's unseen items.

The `implicit` ALS and cosine rows run at the library's defaults, as a user would first try them; the
`TunedReference` rows (iALS, RP3beta, ItemKNN with shrinkage, EASE, SLIM) each choose their
hyperparameters on a validation split cut from train, on one shared budget of TUNING_TRIALS
configurations, so a row of ours is measured against each model at its best, not at its defaults.
"""
from __future__ import annotations

import itertools
import time
import warnings
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from tqdm import tqdm

from models.metrics import ranking_metrics
from models.split import SEED, TEST_FRACTION, Pairs
from recommenders.collaborative import keep_top_per_row

# Configurations per tuned reference, the same budget for every one: with 12, `evaluate --tune` on the ml-1m
# subset took 10 min 14 s while other jobs shared the two cores (EASE alone 120 s: one inverse per trial).
TUNING_TRIALS = 8
TUNING_K = 10
MAX_VALIDATION_USERS = 2000  # validation users scored per trial (a seeded sample past that)
EASE_LAMBDAS = (10.0, 50.0, 100.0, 200.0, 350.0, 500.0, 1000.0, 3000.0)
EASE_MAX_ITEMS = 10_000  # a dense float64 item x item matrix of 10k items is 800 MB; past that, the most popular 10k
SLIM_MAX_ITEMS = 500


class Reference(ABC):
    """A reference model; `requires_ratings` models are skipped on data sets without explicit ratings."""

    name: str = "reference"
    kind = "reference"
    requires_ratings = False
    predicts_ratings = False

    def __init__(self, progress: bool = False) -> None:
        self.train: Pairs | None = None
        self.progress = progress  # a bar over a long fit's steps

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
    """Row-wise top-k of a dense users x items score block, seen items excluded, ties broken by item index.

    Only the entries at or above each row's k-th largest score can make its top k, so a partial sort finds
    that score and only those entries are sorted: a full sort of every row cost a second per 2,000 users of
    ml-1m, and the tuned references rank their validation users once per trial.
    """
    scores = np.array(scores, dtype=np.float64)
    seen = seen.tocoo()
    scores[seen.row, seen.col] = -np.inf
    n_users, n_items = scores.shape
    if n_items > k:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
        rows, items = np.nonzero(scores >= kth[:, None])
    else:
        rows, items = np.divmod(np.arange(scores.size), n_items)
    ranked = scores[rows, items]
    order = np.lexsort((items, -ranked, rows))
    rows, items, ranked = rows[order], items[order], ranked[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = (rank < k) & np.isfinite(ranked)
    top = np.full((n_users, k), -1, dtype=np.int64)
    top[rows[keep], rank[keep]] = items[keep]
    return top


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


class TunedReference(Reference):
    """A reference whose hyperparameters are chosen on a validation split cut from train, on the budget every
    tuned reference shares, so no row wins by having been searched harder.

    The validation split holds out 20% of each user's training pairs (the test protocol applied inside
    train, with another seed). Each of TUNING_TRIALS configurations of `space` (all of it when smaller; else a
    seeded sample) is fitted on the kept part and scored by NDCG@10 on the held-out part, over at most
    `max_validation_users` users; the best (the first on a tie) is then refitted on all of train.
    """

    space: dict[str, tuple] = {}

    def __init__(self, progress: bool = False, trials: int = TUNING_TRIALS,
                 max_validation_users: int = MAX_VALIDATION_USERS) -> None:
        super().__init__(progress)
        self.trials = trials
        self.max_validation_users = max_validation_users
        self.tried: list[tuple[dict, float]] = []

    def configurations(self) -> list[dict]:
        """The configurations to try: the whole grid if it has at most `trials`, else a seeded, stratified sample.

        Each parameter's values fill the trials in turn and are then shuffled per parameter (a Latin hypercube
        over the grid), so every value of a parameter with at most `trials` values is tried: 8 plain draws
        from iALS's 270 configurations can miss the one regularisation that matters. A configuration drawn
        twice is replaced by a seeded draw from the rest of the grid.
        """
        grid = list(itertools.product(*self.space.values()))
        if len(grid) > self.trials:
            rng = np.random.default_rng(SEED)
            columns = [[values[i % len(values)] for i in rng.permutation(self.trials)] for values in self.space.values()]
            chosen = list(dict.fromkeys(zip(*columns)))
            rest = [config for config in grid if config not in chosen]
            grid = chosen + [rest[i] for i in rng.choice(len(rest), self.trials - len(chosen), replace=False)]
        return [dict(zip(self.space, config)) for config in grid]

    def fit(self, train: Pairs) -> "TunedReference":
        started = time.perf_counter()
        fit_part, validation = train.holdout(TEST_FRACTION, SEED + 1)
        users = np.flatnonzero(np.diff(validation.positives.indptr))
        if len(users) > self.max_validation_users:
            users = np.sort(np.random.default_rng(SEED).choice(users, self.max_validation_users, replace=False))
        self.tried = []
        for config in tqdm(self.configurations(), desc=f"  tuning {self.name}", unit="trial", leave=False,
                           disable=not self.progress):
            self.learn(fit_part, config)
            ranked = top_k_unseen(self.scores(fit_part, users), fit_part.seen[users], TUNING_K)
            ndcg = ranking_metrics(ranked, validation.positives[users], train.n_items)[f"ndcg@{TUNING_K}"]
            self.tried.append((config, ndcg))
        self.config, self.validation_ndcg = max(self.tried, key=lambda tried: tried[1])
        self.validation_users = len(users)
        self.tuning_seconds = time.perf_counter() - started
        self.train = train
        self.learn(train, self.config)
        return self

    @abstractmethod
    def learn(self, known: Pairs, config: dict) -> None:
        """Fit one configuration on the binary positives of `known`."""

    @abstractmethod
    def scores(self, known: Pairs, users: np.ndarray) -> np.ndarray:
        """Dense users x items scores from the last `learn` (the caller masks what `known` has seen)."""

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        return top_k_unseen(self.scores(self.train, users), self.train.seen[users], k)

    def tuning(self) -> dict:
        """The search as data for the JSON report: the chosen configuration, its score, and every trial."""
        return {"chosen": self.config, f"validation_ndcg@{TUNING_K}": self.validation_ndcg,
                "validation_users": self.validation_users, "tuning_seconds": self.tuning_seconds,
                "trials": [{**config, f"ndcg@{TUNING_K}": ndcg} for config, ndcg in self.tried]}

    def describe(self) -> str:
        chosen = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in self.config.items())
        return (f"{chosen}: best validation NDCG@{TUNING_K} {self.validation_ndcg:.4f} of {len(self.tried)} "
                f"configurations over {self.validation_users} validation users ({self.tuning_seconds:.0f} s)")


class ItemItemReference(TunedReference):
    """A tuned model that scores a user's binary row times an item x item weight matrix.

    Past `max_items` items only the most popular `max_items` are modelled (the rest are never recommended),
    for models whose fit grows too fast with the catalog.
    """

    max_items: int | None = None

    def learn(self, known: Pairs, config: dict) -> None:
        popularity = np.asarray(known.positives.sum(axis=0)).ravel()
        self.modelled = np.sort(np.argsort(-popularity, kind="stable")[:self.max_items])
        self.weights = self.item_weights(known.positives[:, self.modelled], config)

    @abstractmethod
    def item_weights(self, positives: sp.csr_matrix, config: dict) -> np.ndarray | sp.spmatrix:
        """The modelled items' weights: a user's score for item j is their binary row times column j."""

    def scores(self, known: Pairs, users: np.ndarray) -> np.ndarray:
        scores = np.full((len(users), known.n_items), -np.inf)
        product = known.positives[users][:, self.modelled] @ self.weights
        scores[:, self.modelled] = product.toarray() if sp.issparse(product) else product
        return scores

    def describe(self) -> str:
        capped = (f"; modelled the {len(self.modelled)} most popular items" if len(self.modelled) < self.train.n_items
                  else "")
        return super().describe() + capped


def ease_weights(positives: sp.spmatrix, regularisation: float) -> np.ndarray:
    """EASE (Steck 2019) closed form: B = I - P / diag(P) with P = (X^T X + lambda I)^-1, so diag(B) = 0."""
    gram = np.asarray((positives.T @ positives).toarray(), dtype=np.float64)
    gram[np.diag_indices_from(gram)] += regularisation
    inverse = np.linalg.inv(gram)
    weights = -inverse / np.diag(inverse)[None, :]
    weights[np.diag_indices_from(weights)] = 0.0
    return weights


class EASE(ItemItemReference):
    """EASE on the binary training positives, lambda tuned; the dense item x item inverse caps the catalog at
    EASE_MAX_ITEMS."""

    name = "ease"
    space = {"lambda": EASE_LAMBDAS}
    max_items = EASE_MAX_ITEMS

    def item_weights(self, positives: sp.csr_matrix, config: dict) -> np.ndarray:
        return ease_weights(positives, config["lambda"])


class TunedALS(TunedReference):
    """`implicit` iALS tuned over factors, regularisation, alpha (the positives' confidence) and iterations.

    Rendle et al. 2022 ("Revisiting the performance of iALS") found a well-regularised iALS with many
    factors close to EASE. Their regularisation scaled by each user's and item's frequency is not in
    `implicit` (one constant lambda for every row), so only the constant is tuned here.
    """

    name = "ials_tuned"
    # regularisation up to 1000: with the positives weighted by alpha, the best of 0.1-100 on ml-1m was 100
    space = {"factors": (64, 128, 256), "regularization": (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
             "alpha": (1.0, 5.0, 10.0, 25.0, 50.0), "iterations": (10, 15, 20)}

    def learn(self, known: Pairs, config: dict) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(**config, random_state=SEED)
        self.model.fit(known.positives.astype(np.float32), show_progress=False)

    def scores(self, known: Pairs, users: np.ndarray) -> np.ndarray:
        return self.model.user_factors[users] @ self.model.item_factors.T


def top_neighbours(weights: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """`keep_top_per_row` on an item x item matrix, after dropping every entry below its row's k-th largest
    (a partial sort of the dense rows finds it): on ml-1m's near-dense similarities the full sort alone took
    five seconds a trial."""
    weights = weights.tocsr()
    counts = np.diff(weights.indptr)
    if counts.size == 0 or counts.max() <= k:
        return weights
    entries = weights.tocoo()
    dense = np.full(weights.shape, -np.inf)
    dense[entries.row, entries.col] = entries.data
    kth = -np.partition(-dense, k - 1, axis=1)[:, k - 1]
    keep = entries.data >= kth[entries.row]
    above = sp.csr_matrix((entries.data[keep], (entries.row[keep], entries.col[keep])), shape=weights.shape)
    return keep_top_per_row(above, k)


def rp3beta_weights(positives: sp.csr_matrix, alpha: float, beta: float, neighbours: int) -> sp.csr_matrix:
    """RP3beta (Paudel et al. 2017; Dacrema et al. 2019): W = P_iu^alpha P_ui^alpha, the item -> user -> item
    random walk's transition probabilities with each step's entries raised to alpha, every column divided
    by its item's popularity^beta (so popular targets are damped), diagonal zero, top `neighbours` per row."""
    user_item = normalize(positives, norm="l1", axis=1)
    item_user = normalize(positives.T.tocsr(), norm="l1", axis=1)
    user_item.data **= alpha
    item_user.data **= alpha
    popularity = np.asarray(positives.sum(axis=0)).ravel()
    damping = np.power(popularity, -beta, out=np.zeros_like(popularity), where=popularity > 0)
    weights = ((item_user @ user_item) @ sp.diags(damping)).tocsr()
    weights = (weights - sp.diags(weights.diagonal())).tocsr()
    weights.eliminate_zeros()
    return top_neighbours(weights, neighbours)


class RP3beta(ItemItemReference):
    """RP3beta tuned over alpha, beta and the neighbours kept per item."""

    name = "rp3beta"
    space = {"alpha": (0.5, 0.75, 1.0, 1.25, 1.5), "beta": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
             "neighbours": (50, 100, 200, 500)}

    def item_weights(self, positives: sp.csr_matrix, config: dict) -> sp.csr_matrix:
        return rp3beta_weights(positives, config["alpha"], config["beta"], config["neighbours"])


def feature_weighted(positives: sp.csr_matrix, weighting: str) -> sp.csr_matrix:
    """The users x items positives with `implicit`'s BM25 or TF-IDF weights (applied to the item x user
    matrix, as its BM25Recommender and TFIDFRecommender do), or as they are ("none")."""
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    weigh = {"none": lambda items: items, "bm25": bm25_weight, "tfidf": tfidf_weight}[weighting]
    return sp.csr_matrix(weigh(positives.T.tocsr()).T)


def shrunk_cosine(positives: sp.csr_matrix, neighbours: int, shrink: float, weighting: str) -> sp.csr_matrix:
    """Item-item cosine with a shrink term, sim_ij = x_i . x_j / (|x_i| |x_j| + shrink), so a pair seen
    together by few users counts for less; diagonal zero, top `neighbours` per row."""
    columns = feature_weighted(positives, weighting)
    gram = (columns.T @ columns).tocoo()
    norms = np.sqrt(np.asarray(columns.multiply(columns).sum(axis=0)).ravel())
    off_diagonal = gram.row != gram.col
    rows, cols = gram.row[off_diagonal], gram.col[off_diagonal]
    similarity = gram.data[off_diagonal] / (norms[rows] * norms[cols] + shrink)
    return top_neighbours(sp.csr_matrix((similarity, (rows, cols)), shape=gram.shape), neighbours)


class TunedItemKNN(ItemItemReference):
    """Item-based nearest neighbours with shrinkage, tuned over neighbours, shrink and feature weighting."""

    name = "itemknn_tuned"
    space = {"neighbours": (10, 50, 100, 200, 500, 1000), "shrink": (0.0, 10.0, 50.0, 100.0, 200.0, 500.0),
             "weighting": ("none", "bm25", "tfidf")}

    def item_weights(self, positives: sp.csr_matrix, config: dict) -> sp.csr_matrix:
        return shrunk_cosine(positives, config["neighbours"], config["shrink"], config["weighting"])


def slim_weights(positives: sp.csr_matrix, alpha: float, l1_ratio: float) -> sp.csr_matrix:
    """SLIM ElasticNet (Ning & Karypis 2011, as in Dacrema et al. 2019): column j of W is scikit-learn's
    non-negative ElasticNet of item j's column on every item's, item j's own column zeroed while it is the
    target (so w_jj = 0), no intercept."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet

    columns = positives.tocsc().astype(np.float64)
    model = ElasticNet(alpha=alpha, l1_ratio=l1_ratio, positive=True, fit_intercept=False, copy_X=False,
                       selection="random", max_iter=100, tol=1e-4, random_state=SEED)
    rows, values = [], []
    for item in range(columns.shape[1]):
        own = slice(columns.indptr[item], columns.indptr[item + 1])
        target = columns[:, item].toarray().ravel()
        kept = columns.data[own].copy()
        columns.data[own] = 0.0
        with warnings.catch_warnings():  # 100 passes is the budget Dacrema et al. give it; not every item converges
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(columns, target)
        columns.data[own] = kept
        rows.append(np.flatnonzero(model.coef_))
        values.append(model.coef_[rows[-1]])
    items = np.repeat(np.arange(columns.shape[1]), [len(row) for row in rows])
    return sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), items)), shape=(columns.shape[1],) * 2)


class SLIM(ItemItemReference):
    """SLIM ElasticNet tuned over alpha and l1_ratio, on the SLIM_MAX_ITEMS most popular items.

    One ElasticNet per item: a fit on the whole ml-1m subset's catalog (3,883 items) took 45-73 s on one core,
    13 of them (the trials and the refit) about 12 minutes; on the 500 most popular items (63% of the
    positives) a fit takes 3-4 s.
    """

    name = "slim"
    space = {"alpha": (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), "l1_ratio": (0.05, 0.1, 0.25, 0.5, 0.75)}
    max_items = SLIM_MAX_ITEMS

    def item_weights(self, positives: sp.csr_matrix, config: dict) -> sp.csr_matrix:
        return slim_weights(positives, config["alpha"], config["l1_ratio"])


REFERENCES: dict[str, type[Reference]] = {
    model.name: model for model in (PopularityBaseline, SurpriseSVD, ImplicitALS, ImplicitItemCosine,
                                    TunedALS, RP3beta, TunedItemKNN, EASE, SLIM)}
