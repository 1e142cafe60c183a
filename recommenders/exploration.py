"""Item-level exploration: a share of a list's slots goes to the least shown items, the way Amazon
Personalize explores new items, so a product nobody was shown yet gets a chance to be clicked.

The slots are spread evenly (with a weight of 0.2, positions 5, 10, 15, ... counting from 1), so the
head of a cached list, which smaller `count`s are served from, explores in the same proportion.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from recommenders.records import Recommendation

REASON = "new to the shop: shown so that it gets a chance"


def exploration_slots(length: int, weight: float) -> np.ndarray:
    """Positions (0-based) of a list of `length` that explore: every position where the running
    count of explored slots, floor(position * weight), steps up."""
    ends = np.floor(np.arange(1, length + 1) * weight)
    return np.flatnonzero(ends > np.concatenate(([0.0], ends[:-1])))


def explore(ranked: list[Recommendation], weight: float, candidates: Sequence[str]) -> list[Recommendation]:
    """`ranked` with its exploration slots given to `candidates` (least shown first) not already in it;
    the ranked items keep their order in the other slots, and the list its length. The caller passes
    only candidates the list may show (Engine.explore: filters, rules, history, caps)."""
    if weight <= 0.0 or not ranked or len(candidates) == 0:
        return ranked
    slots = exploration_slots(len(ranked), weight)
    shown = np.fromiter((r.item for r in ranked), dtype=object, count=len(ranked))
    candidates = np.asarray(candidates, dtype=object)
    fresh = candidates[~np.isin(candidates, shown)][:len(slots)]
    slots = slots[:len(fresh)]
    result = np.empty(len(ranked), dtype=object)
    result[slots] = [Recommendation(item, 0.0, "exploration", {"reason": REASON}) for item in fresh.tolist()]
    kept = np.ones(len(ranked), dtype=bool)
    kept[slots] = False
    head = np.empty(int(kept.sum()), dtype=object)
    head[:] = ranked[:len(head)]
    result[kept] = head
    return result.tolist()
