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
    totals = data.category_preferences(user)
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
    counts = np.zeros(liked.size)
    gain = np.zeros(liked.size + 1)  # "everything else" never closes the gap
    value = (1 - weight) * scores
    picked = np.empty(k, dtype=np.int64)
    for size in range(1, k + 1):
        # KL(p || q~) after one more item of liked column c differs from its value after an item of
        # any other column only in the term of c: the gap shrinks by p_c log(1 + (1 - a) / (size a_c)),
        # a_c = q~_c without the item. The rest is equal for every choice, so only that gain counts.
        mixed = (1 - SMOOTHING) * counts / size + SMOOTHING * p
        gain[:-1] = p * np.log1p((1 - SMOOTHING) / (size * mixed))
        best = int(np.argmax(value + weight * gain[bucket]))
        picked[size - 1] = best
        value[best] = -np.inf
        if bucket[best] < liked.size:
            counts[bucket[best]] += 1
    return picked
