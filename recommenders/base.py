"""The one contract every recommender component keeps, and the vectorised helpers they share.

In the spirit of `implicit` and scikit-learn: `fit` learns what is expensive from the model state,
`score` turns a batch of users into one row of item scores each (array in, array out),
`partial_fit_users` / `partial_fit_items` fold users and items in after the log changed them,
`forget_users` erases deleted users, and `save` / `load` write and read what `fit` learned as
plain arrays (recommenders/persistence.py). Ranking, masking of seen items and blending live
outside the components, so each one can be used alone, inside a blend, or in offline evaluation.
`test/test_recommender_contract.py` checks every registered component against this contract.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from recommenders.interaction_data import InteractionData
from recommenders.persistence import Value, load_arrays, save_arrays

R = TypeVar("R", bound="Recommender")
PARAMS_FILE, STATE_FILE = "params.json", "state.npz"


class Recommender(ABC):
    """fit once on the model state, then score users; the state may grow after fit."""

    name: str = "base"

    def params(self) -> dict[str, Any]:
        """The constructor arguments (JSON values) that `load` passes to build the same component."""
        return {}

    @abstractmethod
    def fit(self: R, data: InteractionData) -> R:
        """Learn what is expensive to learn (similarities, vectors) from the current state."""

    @abstractmethod
    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        """(len(users), data.n_items) non-negative scores from each user's live state; 0 = no signal."""

    def similar_items(self, data: InteractionData, items: np.ndarray) -> np.ndarray:
        """(len(items), data.n_items) similarities; components without an item notion return zeros."""
        return np.zeros((len(items), data.n_items))

    def score_items(self, data: InteractionData, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(len(users), len(items)): `score` at these items only, for a large catalog's candidates
        (recommenders/retrieval.py). Components whose full row is a pass over the catalog compute only
        the items asked for; the rest cut their full rows."""
        return self.score(data, users)[:, items]

    def similar_items_among(self, data: InteractionData, item: int, items: np.ndarray) -> np.ndarray:
        """(len(items),): `similar_items` of one item at these items only (see `score_items`)."""
        return self.similar_items(data, np.array([item]))[0, items]

    def partial_fit_users(self, data: InteractionData, users: np.ndarray) -> None:
        """Fold in users whose rows the log just changed. Default: nothing, the scores read live rows."""

    def partial_fit_items(self, data: InteractionData, items: np.ndarray) -> None:
        """Fold in items added to or edited in the catalog since the fit. Default: nothing to learn."""

    def forget_users(self, data: InteractionData, users: np.ndarray) -> None:
        """Erase what the component holds of deleted users, after `data` forgot their rows."""

    def state(self) -> dict[str, Value]:
        """What `fit` learned, as named arrays; empty for components that learn nothing."""
        return {}

    def restore(self, state: dict[str, Value]) -> None:
        """Take back what `state` returned (on a component built with the same params)."""

    def save(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / PARAMS_FILE).write_text(json.dumps(self.params()))
        save_arrays(path / STATE_FILE, self.state())

    @classmethod
    def load(cls: type[R], path: Path) -> R:
        component = cls(**json.loads((path / PARAMS_FILE).read_text()))
        component.restore(load_arrays(path / STATE_FILE))
        return component

    def recommend(self, data: InteractionData, users: np.ndarray, k: int) -> np.ndarray:
        """(len(users), k) top-k unseen item indices per user, best first, -1 padded (evaluation's path)."""
        return top_k_unseen(data, self.score(data, users), users, k)


def l2_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to unit length (all-zero rows stay zero); an empty matrix comes back as it is."""
    if matrix.shape[0] == 1 and matrix.shape[1] and matrix.format == "csr" and matrix.dtype == np.float64:
        # One user's row (a request): sklearn's input checks were 13% of a hybrid answer at ml-1m (py-spy).
        # Its sum of squares runs left to right, as a cumulative sum does, so the row is the same to the bit.
        squares = np.cumsum(matrix.data * matrix.data)
        if squares.size == 0 or squares[-1] == 0.0:
            return matrix.copy()
        return sp.csr_matrix((matrix.data / np.sqrt(squares[-1]), matrix.indices, matrix.indptr), shape=matrix.shape)
    return normalize(matrix).tocsr() if matrix.shape[0] and matrix.shape[1] else sp.csr_matrix(matrix)


def dot_rows(rows: sp.csr_matrix, matrix: sp.csr_matrix) -> np.ndarray:
    """rows @ matrix as a dense array, reading only the rows of `matrix` that `rows` uses.

    A user touches a few hundred of thousands of items: slicing those rows first and multiplying
    their transpose by a small dense block is several times cheaper than a sparse x sparse product.
    """
    if rows.shape[0] == 1 and rows.nnz and (np.diff(rows.indices) > 0).all():
        return _dot_row(rows.data, rows.indices, matrix)  # a canonical row: no duplicates to sum, already sorted
    used, column = np.unique(rows.indices, return_inverse=True)
    if used.size == 0:
        return np.zeros((rows.shape[0], matrix.shape[1]))
    if rows.shape[0] == 1:
        return _dot_row(np.bincount(column, weights=rows.data, minlength=used.size), used, matrix)
    block = np.zeros((rows.shape[0], used.size))  # rows[:, used], without scipy's indexing overhead
    np.add.at(block, (np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr)), column), rows.data)
    return np.asarray(matrix[used].T @ block.T).T


def dot_rows_at(rows: sp.csr_matrix, matrix: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
    """(rows.shape[0], len(columns)): (rows @ matrix)[:, columns], from only the entries of the rows'
    items that fall in `columns` (distinct). A candidate set's share of a 1M-item product: what `dot_rows`
    would compute and throw away is the whole catalog's width per user."""
    result = np.zeros((rows.shape[0], len(columns)))
    used = rows.indices < matrix.shape[0]  # items the matrix has no row for (added after a fit) add nothing
    if not used.any() or len(columns) == 0:
        return result
    entries, lengths = row_entries(matrix, rows.indices[used])
    owner = np.repeat(np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))[used], lengths)
    products = matrix.data[entries] * np.repeat(rows.data[used], lengths)
    order = np.argsort(columns, kind="stable")
    ascending, found = columns[order], matrix.indices[entries]
    position = np.searchsorted(ascending, found)
    hit = position < len(columns)
    hit[hit] = ascending[position[hit]] == found[hit]
    np.add.at(result, (owner[hit], order[position[hit]]), products[hit])
    return result


def entries_at(values: np.ndarray, items: np.ndarray) -> np.ndarray:
    """values[items], 0 for items past its end (added after the values were computed)."""
    known = items < len(values)
    result = np.zeros(len(items), dtype=np.float64)
    result[known] = values[items[known]]
    return result


# Above this many entries of `matrix` to read, one user's product goes through scipy (its row slicing
# and a transposed matrix-vector product, C loops behind ~0.2 ms of checks), below it through numpy (no
# checks, but arrays as long as the entries). Measured at ml-1m: numpy 0.09 against 0.20 ms below 2,000
# entries (content profiles), 0.23 against 0.27 at 10-20k, 0.33 against 0.30 at 20-40k, 3.3 against
# 0.5 ms past 80k (the neighbours of a heavy user's 200 items; scipy's sparse x sparse took 0.6 there).
SPARSE_PRODUCT_ENTRIES = 20_000


def _dot_row(weights: np.ndarray, used: np.ndarray, matrix: sp.csr_matrix) -> np.ndarray:
    """(1, matrix.shape[1]): sum over k of weights[k] * matrix[used[k]].

    One user's row (a request) cost scipy's slicing and product more in checks than in arithmetic.
    Both ways add the products in the order that path did (row by row of `used`, each row's entries
    in storage order), so the result is the same to the bit.
    """
    if int((matrix.indptr[used + 1] - matrix.indptr[used]).sum()) > SPARSE_PRODUCT_ENTRIES:
        return np.asarray(matrix[used].T @ weights)[None, :]
    entries, lengths = row_entries(matrix, used)
    products = matrix.data[entries] * np.repeat(weights, lengths)
    # float64 always: given no entries (the rows read are all empty), bincount returns int64 zeros
    sums = np.bincount(matrix.indices[entries], weights=products, minlength=matrix.shape[1])
    return sums.astype(np.float64, copy=False)[None, :]


def row_entries(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions in matrix.data / matrix.indices of the rows' entries, row after row, and each row's count."""
    starts = matrix.indptr[rows]
    lengths = matrix.indptr[rows + 1] - starts
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum())), lengths


def fitted_columns(rows: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """`rows` cut to the first n items (those a model was fitted on); as they are when none came since."""
    return rows if rows.shape[1] <= n else rows[:, :n]


def padded(scores: np.ndarray, n: int) -> np.ndarray:
    """Scores (a vector, or one row per user) of a model fitted on fewer items, 0 for items added since."""
    width = scores.shape[-1]
    if width >= n:
        return scores[..., :n]
    return np.concatenate([scores, np.zeros((*scores.shape[:-1], n - width))], axis=-1)


# Scores count as all equal when their spread is this small relative to their size: relative, because
# trending counts of month-old events are ~1e-34 (2^-110 after 110 half-lives) yet differ as much as fresh ones.
FLAT = 1e-9


def normalise(scores: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Min-max to 0..1 over the candidate items, so a 1-5 prediction never swamps a 0-1 cosine."""
    values = scores if candidates is None else scores[candidates]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(scores, dtype=np.float64)
    low, high = finite.min(), finite.max()
    if high - low <= FLAT * max(abs(low), abs(high)):
        return np.where(scores > 0, 1.0, 0.0) if high > 0 else np.zeros_like(scores, dtype=np.float64)
    return np.clip((scores - low) / (high - low), 0.0, 1.0)


def normalise_retrieved(scores: np.ndarray) -> np.ndarray:
    """`normalise` over the whole catalog, from the scores at retrieved candidates only (a vector, or one
    row per user): the catalog's least score is 0 (scores are non-negative and most items have none), so
    each row is scaled by its largest. Min-max over the candidates instead put a blend's top 10 at 1M
    items only 56% of the way the whole catalog's ranking did (bench/ann.py)."""
    high = scores.max(axis=-1, keepdims=True) if scores.shape[-1] else np.zeros((*scores.shape[:-1], 1))
    return np.divide(scores, high, out=np.zeros(scores.shape), where=high > 0)


def normalise_rows(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """`normalise` applied to each row of a users x items block over that row's candidates."""
    masked_low = np.where(candidates, scores, np.inf).min(axis=1, keepdims=True)
    masked_high = np.where(candidates, scores, -np.inf).max(axis=1, keepdims=True)
    span = masked_high - masked_low
    flat = ~(span > FLAT * np.maximum(np.abs(masked_low), np.abs(masked_high)))  # also rows with no candidate (nan)
    if not flat.any():  # the usual case: no row needs the constant below (a third of the time for one row)
        return np.clip((scores - masked_low) / span, 0.0, 1.0)
    with np.errstate(invalid="ignore"):
        scaled = np.clip((scores - masked_low) / np.where(flat, 1.0, span), 0.0, 1.0)
    constant = np.where((scores > 0) & (masked_high > 0), 1.0, 0.0)
    return np.where(flat, constant, scaled)


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None,
          allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best items, best first, by argpartition (no full sort).

    `exclude` are indices never returned (items already seen); `allowed` is an optional boolean
    mask (a category). Ties break by item index so the same state always ranks the same way.
    """
    ranked = np.round(np.asarray(scores, dtype=np.float64), 9)
    if exclude is not None and len(exclude):
        ranked[exclude] = -np.inf
    if allowed is not None:
        ranked[~allowed] = -np.inf
    valid = np.flatnonzero(np.isfinite(ranked))
    if valid.size == 0 or k <= 0:
        return np.empty(0, np.int64), np.empty(0)
    values = ranked[valid]
    if valid.size > k:
        part = np.argpartition(-values, k - 1)[:k]
        # Pull in every item tied with the k-th so the tie-break below is by index, not by chance.
        kth = values[part].min()
        part = np.flatnonzero(values >= kth)
        valid, values = valid[part], values[part]
    order = np.lexsort((valid, -values))[:k]
    return valid[order], values[order]


def top_k_unseen(data: InteractionData, scores: np.ndarray, users: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k of a users x items block, each user's seen items left out, ties by item index."""
    ranked = np.round(np.array(scores, dtype=np.float64), 9)
    cells = data.preference_rows(users, seen=True).tocoo()
    inside = cells.col < ranked.shape[1]
    ranked[cells.row[inside], cells.col[inside]] = -np.inf
    top = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    top[~np.isfinite(np.take_along_axis(ranked, top, axis=1))] = -1
    return np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)


def unseen_rows(data: InteractionData, users: np.ndarray) -> np.ndarray:
    """users x items boolean: True where the user has not seen the item (what blends normalise over).

    From the memoised seen items, not a dense copy of a CSR of them: for one user building that CSR
    (scipy's checks) and its copy took ~0.1 ms, this 0.01 ms."""
    unseen = np.ones((len(users), data.n_items), dtype=bool)
    for row, user in enumerate(users.tolist()):
        unseen[row, data.seen_items(user)] = False
    return unseen


def candidate_mask(data: InteractionData, user: int | None, allowed: np.ndarray | None) -> np.ndarray:
    """Boolean mask of items that may be recommended: unseen, and in the allowed set."""
    mask = np.ones(data.n_items, dtype=bool) if allowed is None else allowed.copy()
    mask[data.seen_items(user)] = False
    return mask
