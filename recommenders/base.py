"""The small interface every recommender shares, and the vectorised helpers they use.

A recommender turns the model state into one score per item (`score`), array in, array out.
Ranking, masking of seen items and blending live outside it, so every recommender can be
used alone, inside the hybrid, or side by side in offline evaluation.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from recommenders.interaction_data import InteractionData


class Recommender(ABC):
    """fit once on the model state, then score users; the state may grow after fit."""

    name: str = "base"

    @abstractmethod
    def fit(self, data: InteractionData) -> "Recommender":
        """Learn what is expensive to learn (similarities, vectors) from the current state."""

    @abstractmethod
    def score(self, data: InteractionData, user: int) -> np.ndarray:
        """One non-negative score per item (length data.n_items); higher is better, 0 = no signal."""

    def similar_items(self, data: InteractionData, item: int) -> np.ndarray:
        """One similarity per item to `item`; recommenders without an item notion return zeros."""
        return np.zeros(data.n_items)

    def recommend(self, data: InteractionData, user: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k unseen (items, scores) for one user; the array-in/array-out path used in evaluation."""
        scores = self.score(data, user)
        return top_k(scores, k, exclude=data.seen_items(user))


def l2_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to unit length (all-zero rows stay zero); an empty matrix comes back as it is."""
    return normalize(matrix).tocsr() if matrix.shape[0] and matrix.shape[1] else sp.csr_matrix(matrix)


def padded(scores: np.ndarray, n: int) -> np.ndarray:
    """Scores of a model fitted on fewer items, padded with 0 for items added since."""
    if len(scores) >= n:
        return scores[:n]
    return np.concatenate([scores, np.zeros(n - len(scores))])


def normalise(scores: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Min-max to 0..1 over the candidate items, so a 1-5 prediction never swamps a 0-1 cosine."""
    values = scores if candidates is None else scores[candidates]
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(scores, dtype=np.float64)
    low, high = finite.min(), finite.max()
    if high - low < 1e-12:
        return np.where(scores > 0, 1.0, 0.0) if high > 0 else np.zeros_like(scores, dtype=np.float64)
    return np.clip((scores - low) / (high - low), 0.0, 1.0)


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


def candidate_mask(data: InteractionData, user: int | None, allowed: np.ndarray | None) -> np.ndarray:
    """Boolean mask of items that may be recommended: unseen, and in the allowed set."""
    mask = np.ones(data.n_items, dtype=bool) if allowed is None else allowed.copy()
    mask[data.seen_items(user)] = False
    return mask
