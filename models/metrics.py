"""Ranking and rating metrics, vectorised over all users at once.

A ranking is a users x k matrix of item indices, best first, with -1 where fewer than k items could
be recommended. The truth is a sparse users x items matrix whose non-zeros are the user's test
positives. Users without a test positive have no defined recall or NDCG and are skipped; k stays
the precision denominator even when the catalog has fewer than k unseen items.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def hit_matrix(recommended: np.ndarray, positives: sp.csr_matrix) -> np.ndarray:
    """Boolean users x k: whether each recommended item is one of the user's positives."""
    n_users, k = recommended.shape
    rows = np.repeat(np.arange(n_users), k)
    items = recommended.ravel()
    valid = items >= 0
    hits = np.zeros(n_users * k, dtype=bool)
    if valid.any():
        hits[valid] = np.asarray(positives.tocsr()[rows[valid], items[valid]]).ravel() > 0
    return hits.reshape(n_users, k)


def ranking_metrics(recommended: np.ndarray, positives: sp.csr_matrix, n_items: int) -> dict[str, float]:
    """precision, recall, NDCG, MAP and hit rate at k (the matrix width), and catalog coverage.

    - recall@k: hits / |positives| (not min(k, |positives|): a user with 30 positives has 30 to find).
    - NDCG@k: binary gains, log2 discount, ideal DCG over min(k, |positives|) hits at the top.
    - MAP@k: average precision at each hit, divided by min(k, |positives|) (the most hits possible in k),
      so a perfect list scores 1.
    - coverage: distinct items in all the lists given (users with or without positives) / catalog size.
    """
    recommended = np.asarray(recommended, dtype=np.int64)
    k = recommended.shape[1]
    listed = np.unique(recommended[recommended >= 0])
    coverage = len(listed) / n_items if n_items else 0.0
    positives = positives.tocsr()
    n_positives = np.diff(positives.indptr)
    judged = n_positives > 0
    names = [f"{name}@{k}" for name in ("precision", "recall", "ndcg", "map", "hit_rate")]
    if k == 0 or not judged.any():
        return {**dict.fromkeys(names, float("nan")), "coverage": coverage}
    hits = hit_matrix(recommended[judged], positives[judged]).astype(np.float64)
    n_positives = n_positives[judged]
    n_hits = hits.sum(axis=1)
    attainable = np.minimum(k, n_positives)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.cumsum(discounts)[attainable - 1]
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    values = [n_hits / k, n_hits / n_positives, hits @ discounts / ideal,
              (precision_at_rank * hits).sum(axis=1) / attainable, n_hits > 0]
    return {**{name: float(np.mean(value)) for name, value in zip(names, values)}, "coverage": coverage}


def rating_errors(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """RMSE and MAE of rating predictions (every prediction must be finite)."""
    errors = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    if errors.size == 0:
        return {"rmse": float("nan"), "mae": float("nan")}
    return {"rmse": float(np.sqrt(np.mean(errors ** 2))), "mae": float(np.mean(np.abs(errors)))}


def mean_reciprocal_rank(recommended: np.ndarray, positives: sp.csr_matrix) -> float:
    """MRR@k: 1 / the rank of the first positive in each list, 0 when none is in it; rows without a
    positive are skipped (as in `ranking_metrics`)."""
    positives = positives.tocsr()
    judged = np.diff(positives.indptr) > 0
    if not judged.any():
        return float("nan")
    hits = hit_matrix(np.asarray(recommended, dtype=np.int64)[judged], positives[judged])
    first = np.argmax(hits, axis=1)
    return float(np.mean(np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)))
