"""Tune the collaborative blend (user-based, EASE, ALS) on a validation split of the training data.

The parts are fitted once. Each validation user's normalised part scores are computed once, and
every weight combination on a simplex grid is then a cheap vectorised re-rank of those vectors.
The test split is never looked at. The winner comes back as the COLLABORATIVE_WEIGHT_* settings
to use for this catalog.
"""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from models.metrics import ranking_metrics
from models.split import SEED, Pairs, pair_keys
from recommenders import registry
from recommenders.collaborative import CollaborativeBlend
from recommenders.interaction_data import EventWeighting, InteractionData

if TYPE_CHECKING:
    from models.evaluate import IndexedData

VALIDATION_FRACTION = 0.2
GRID_STEP = 0.1
MAX_VALIDATION_USERS = 1000
K = 10
BATCH_USERS = 256


def simplex_grid(parts: list[str], step: float = GRID_STEP) -> list[dict[str, float]]:
    """Every weighting of `parts` in multiples of `step` that sums to 1."""
    units = round(1 / step)
    return [{part: n * step for part, n in zip(parts, counts)}
            for counts in itertools.product(range(units + 1), repeat=len(parts)) if sum(counts) == units]


def tune_collaborative(index: "IndexedData", train_events: pd.DataFrame, train: Pairs, progress: bool = True) -> dict:
    """Best collaborative weights by NDCG@10 on a per-user validation split of `train`."""
    fit_pairs, validation = train.holdout(VALIDATION_FRACTION, SEED + 1)
    keep = np.isin(pair_keys(train_events, index.n_items), pair_keys(fit_pairs.frame, index.n_items))
    data = InteractionData(index.items, index.user_ids.tolist(), index.columns(train_events[keep]), EventWeighting())
    parts = {name: registry.registrations()[name].factory().fit(data) for name in registry.collaborative_weights()}
    model = CollaborativeBlend(parts, {part: 1.0 for part in parts})

    users = np.unique(validation.frame["user"].to_numpy())
    users = users[np.diff(validation.positives.indptr)[users] > 0]
    if len(users) > MAX_VALIDATION_USERS:
        users = np.sort(np.random.default_rng(SEED).choice(users, MAX_VALIDATION_USERS, replace=False))
    parts = list(model.parts)
    scores = {part: np.empty((len(users), data.n_items), np.float32) for part in parts}
    seen = np.zeros((len(users), data.n_items), bool)
    with tqdm(total=len(users), desc="  tuning: scoring", unit="user", disable=not progress) as bar:
        for start in range(0, len(users), BATCH_USERS):
            batch = users[start:start + BATCH_USERS]
            for part, values in model.part_scores(data, batch).items():
                scores[part][start:start + len(batch)] = values
            seen[start:start + len(batch)] = data.preference_rows(batch, seen=True).toarray() > 0
            bar.update(len(batch))

    results = []
    for weights in simplex_grid(parts):
        blended = sum(w * scores[part] for part, w in weights.items() if w)
        blended[seen] = -np.inf
        top = np.argpartition(-blended, K, axis=1)[:, :K]
        order = np.take_along_axis(blended, top, axis=1).argsort(axis=1)[:, ::-1]
        ranked = np.take_along_axis(top, order, axis=1)
        ndcg = ranking_metrics(ranked, validation.positives[users], data.n_items)[f"ndcg@{K}"]
        results.append((ndcg, weights))
    best_ndcg, best = max(results, key=lambda result: result[0])
    return {"weights": {part: round(w, 2) for part, w in best.items()}, "validation_ndcg@10": best_ndcg,
            "validation_users": int(len(users)), "grid": len(results),
            "env": " ".join(f"COLLABORATIVE_WEIGHT_{part.upper()}={w:.1f}" for part, w in best.items())}
