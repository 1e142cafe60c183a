"""Calibrated lists (Steck, 2018, "Calibrated recommendations"): the user's interests in proportion.

A blend scores every item against the user's whole profile, a centroid, so a minor interest loses
every slot to the major one: bob rated two Apple products and a gaming chair, and all ten of his
items were electronics. The served list is re-picked greedily from the top of the ranking, each
step taking the item that best trades its score against the gap (KL divergence) between the
categories the user likes and the categories the list shows. Only the served lists go through
here (like business-rule caps): a pick from a capped ranking keeps the caps.
"""
from __future__ import annotations

import numpy as np

from recommenders.interaction_data import InteractionData

CALIBRATION = 0.2  # Steck's lambda: the weight of the category gap against the score (0 = the ranking as is)
POOL = 5  # re-pick from the top POOL * k of the ranking: deep enough for a minor interest's best items
SMOOTHING = 0.01  # Steck's alpha: q is mixed with this much of p, so the divergence stays finite


def interest_shares(data: InteractionData, user: int) -> np.ndarray:
    """The user's preference weight per category, summing to 1 (all zeros without a categorised like)."""
    items, weights = data.preference_row(user)
    categories = data.item_category[items]
    known = categories >= 0
    totals = np.bincount(categories[known], weights=weights[known], minlength=len(data.categories))
    total = totals.sum()
    return totals / total if total > 0 else totals


def calibrated_order(scores: np.ndarray, categories: np.ndarray, shares: np.ndarray, k: int,
                     weight: float = CALIBRATION) -> np.ndarray:
    """Positions of the k picks among ranked items (`scores` best first, `categories` -1 for none)."""
    liked = np.flatnonzero(shares > 0)
    if weight <= 0 or liked.size < 2 or len(scores) <= k:
        return np.arange(min(k, len(scores)))
    # Columns: the liked categories, then one for everything else (it only dilutes what the list shows).
    column = np.full(len(shares) + 1, liked.size)
    column[liked] = np.arange(liked.size)
    bucket = column[categories]  # category -1 reads the last entry: "everything else"
    p = shares[liked]
    adding = np.eye(liked.size + 1)  # row c: what one more item of column c adds to the counts
    counts = np.zeros(liked.size + 1)
    open_ = np.ones(len(scores), dtype=bool)
    picked = []
    for size in range(1, k + 1):
        q = (counts + adding)[:, :-1] / size
        gap = (p * np.log(p / ((1 - SMOOTHING) * q + SMOOTHING * p))).sum(axis=1)
        value = np.where(open_, (1 - weight) * scores - weight * gap[bucket], -np.inf)
        best = int(np.argmax(value))
        picked.append(best)
        open_[best] = False
        counts[bucket[best]] += 1
    return np.array(picked, dtype=np.int64)
