"""The learned second stage: LightGBM LambdaRank re-ranks the candidates the engine's components find.

Each component (the collaborative parts, content, popularity) and the hybrid's blend put
their top CANDIDATES_PER_SIGNAL unseen items forward; a gradient-boosted ranker orders the union by
features of each (user, item) pair: every signal's normalised score and rank, the blend's score (the
README's weights by history size live on as this feature), the item's popularity, recency, age and
price band, the user's activity and affinity for the item's category.

It learns the way it will be used: the engine's components are refitted on 80% of each user's events,
and the ranker learns to put the other 20% first among the candidates those components find: each
user's latest events ("temporal", what people do next) or a random fifth ("random", what the offline
holdout protocol holds out). A share of the users is kept back; the ranker is kept only if it beats
the blend's own order there by NDCG@10.

It is off by default (RANKER=off), by measurement (docs/evaluation.md, "The learned ranker"): on the
holdout protocol the random-split ranker adds about 1% NDCG@10 to the blend, and on the next-event
protocol, which replays what users did after a cut-off through the live path, either split loses to
the blend (ml-100k push HR@10 0.36 against 0.41): it learnt from users with long histories and ranks
worse for the newcomers who make up most of what happens next.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable

import lightgbm
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommenders.base import normalise_rows, unseen_rows
from recommenders.calibration import interest_shares
from recommenders.interaction_data import TYPE_CODES, EventColumns, EventWeighting, InteractionData
from recommenders.persistence import Value
from recommenders.registry import COLLABORATIVE
from recommenders.sparse_state import IdMap

if TYPE_CHECKING:
    from recommenders.engine import Engine
    from recommenders.hybrid import HybridRecommender

CANDIDATES_PER_SIGNAL = 30  # the union over 7 signals is ~100 items: LightGBM predicts 100 rows in ~0.1 ms
LATER_SHARE = 0.2  # each user's latest fifth of events is what the ranker learns to predict
MIN_TRAINING_USERS = 100  # below this a ranker learns noise: the blend serves
MAX_TRAINING_USERS = 4000  # ~3 MB of features; more users add fit time, not NDCG (measured on ml-1m)
VALIDATION_SHARE = 0.25
K = 10
SEED = 42
DAY = 86400.0
SPLITS = ("temporal", "random")
# Measured on ml-100k (holdout NDCG@10 of the served ranker against the blend's 0.3790, docs/evaluation.md):
# 31 leaves fit the training users' noise (0.3373-0.3701), and so do many trees (at rate 0.05: 0.3823
# after 25, 0.3709 after 200); a rate of 0.05 gets in 25-50 trees what 0.02 gets in 100-200. Prediction
# is row by row in LightGBM, ~45 ns per row and tree, on the request path: trees are latency.
BOOSTER_PARAMS = {"objective": "lambdarank", "metric": "ndcg", "ndcg_eval_at": [K], "learning_rate": 0.05,
                  "num_leaves": 15, "min_data_in_leaf": 100, "feature_fraction": 0.9, "bagging_fraction": 0.8,
                  "bagging_freq": 1, "lambdarank_truncation_level": 20, "num_threads": 1, "seed": SEED,
                  "verbose": -1}
MAX_TREES = 60
EARLY_STOPPING = 15
MAX_GRADE = 2  # labels: 1 for a weak like (a 3-star rating, a view), 2 for a strong one (4-5 stars, cart, purchase)
# The trees learn corrections to the blend's order, not an order from nothing: boosting starts from
# BLEND_PRIOR x the blended score (LightGBM's init_score). Without it the ranker lost 3-4% NDCG@10 to the
# blend on ml-100k; with 5 it gains ~1% (2 measured the same; at 20 and 50 the trees learnt nothing
# that beat the blend on validation).
BLEND_PRIOR = 5.0


@dataclass
class Candidates:
    """A batch's candidates: (row in the batch, item) pairs with their features, ordered by row."""

    rows: np.ndarray
    items: np.ndarray
    features: np.ndarray  # float32, len(rows) x len(feature_names)
    blend: np.ndarray  # the hybrid's blended score: the order without a ranker
    weights: dict[str, np.ndarray]  # each blend part's weight per user, as the blend used them
    signals: dict[str, np.ndarray]  # batch x items normalised scores, for the served list's labels


# The blend's own parts that are signals too. Not behaviour: its co-occurrence with the user's recent
# items cost more than the rest of the candidates together (1.1 ms of a user at ml-1m), and without it
# online-retail's ranker scored the same (holdout NDCG@10 0.2837 either way; validation 0.1445 against
# 0.1418, with 88 candidates a user instead of 97). It still counts where the blend weighs it.
OWN_SIGNALS = ("content", "popular")


def signal_names(hybrid: "HybridRecommender") -> list[str]:
    """The signals whose scores and ranks are features: each collaborative part, then the blend's other parts."""
    return [*hybrid.components[COLLABORATIVE].parts, COLLABORATIVE, *OWN_SIGNALS, "blend"]


def feature_names(hybrid: "HybridRecommender") -> list[str]:
    signals = signal_names(hybrid)
    return ([f"{s}_score" for s in signals] + [f"{s}_rank" for s in signals]
            + ["item_popularity", "item_users", "item_trend", "item_age_days", "item_price_band",
               "user_history", "user_behaviour_share", "user_category_affinity"])


def candidates(hybrid: "HybridRecommender", data: InteractionData, users: np.ndarray,
               item_first_seen: np.ndarray, price_band: np.ndarray) -> Candidates:
    """Every signal's top unseen items for each user, with the pair features; array in, array out."""
    unseen = unseen_rows(data, users)
    collaborative = hybrid.components[COLLABORATIVE]
    signals = {name: normalise_rows(part.score(data, users), unseen) for name, part in collaborative.parts.items()}
    signals[COLLABORATIVE] = normalise_rows(collaborative.combine(signals, unseen.shape), unseen)
    weights = hybrid.weight_rows(data, users)
    for name in ("content", "behavior", "popular"):
        if name in OWN_SIGNALS or weights[name].any():
            signals[name] = normalise_rows(hybrid.components[name].score(data, users), unseen)
    signals["blend"] = sum(weights[name][:, None] * signals[name] for name in weights if weights[name].any())

    chosen = np.zeros(unseen.shape, bool)
    ranks = {}
    n = min(CANDIDATES_PER_SIGNAL, data.n_items)
    batch = np.arange(len(users))[:, None]
    for name in signal_names(hybrid):
        masked = np.where(unseen, signals[name], -1.0)
        top = np.argpartition(-masked, n - 1, axis=1)[:, :n]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(masked, top, axis=1), axis=1, kind="stable"), 1)
        rank = np.full(unseen.shape, n, np.float32)
        rank[batch, top] = np.arange(n, dtype=np.float32)
        ranks[name] = rank
        chosen[batch, top] = True
    chosen &= unseen
    rows, items = np.nonzero(chosen)

    history = (~unseen).sum(axis=1).astype(np.float32)
    behaviour = np.array([data.recent.of(user).behaviour_share() for user in users.tolist()], np.float32)
    affinity = _category_affinity(data, users)
    category = data.item_category[items]
    age = np.full(len(items), np.nan, np.float32)
    known = items < len(item_first_seen)
    age[known] = (data.last_event_time - item_first_seen[items[known]]) / DAY
    band = np.full(len(items), np.nan, np.float32)
    band[items < len(price_band)] = price_band[items[items < len(price_band)]]
    trend = data.trending.scores[np.minimum(items, len(data.trending.scores) - 1)]
    columns = ([signals[s][rows, items] for s in signal_names(hybrid)] + [ranks[s][rows, items] for s in signal_names(hybrid)]
               + [_share_of_most(np.maximum(data.popularity, 0.0), items), _share_of_most(data.item_users, items),
                  trend / max(float(data.trending.scores.max(initial=0.0)), 1e-300), age, band,
                  np.log1p(history[rows]), behaviour[rows],
                  _affinity_of(affinity, rows, category)])
    features = np.column_stack(columns).astype(np.float32)
    return Candidates(rows, items, features, signals["blend"][rows, items], weights, signals)


def _share_of_most(counts: np.ndarray, items: np.ndarray) -> np.ndarray:
    """log(1 + count) of `items` over that of the most counted item: a fit on fewer events reads the same."""
    return np.log1p(counts[items]) / max(float(np.log1p(counts.max(initial=0.0))), 1e-12)


def _category_affinity(data: InteractionData, users: np.ndarray) -> np.ndarray:
    """users x categories: each user's share of preference weight per category (a bincount per user:
    one sparse product over a one-hot catalog matrix cost more than the whole list for one user)."""
    return np.array([interest_shares(data, user) for user in users.tolist()], np.float32).reshape(
        len(users), len(data.categories))


def _affinity_of(affinity: np.ndarray, rows: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Each pair's user affinity for the item's category; NaN for an uncategorised item."""
    if affinity.shape[1] == 0:
        return np.full(len(rows), np.nan, np.float32)
    return np.where(category >= 0, affinity[rows, np.maximum(category, 0)], np.nan)


def price_bands(data: InteractionData) -> np.ndarray:
    """Each item's price as a percentile within its category (0 cheapest, 1 dearest; NaN without a price)."""
    frame = pd.DataFrame({"category": data.item_category, "price": data.item_price})
    return frame.groupby("category")["price"].rank(pct=True).to_numpy(np.float32)


def first_seen(data: InteractionData, columns: EventColumns) -> np.ndarray:
    """The time of each item's first event (NaN for items without one): the item's age is measured from it."""
    items = _indices(data.items, columns.item_ids)
    known = items >= 0
    first = np.full(data.n_items, np.nan)
    frame = pd.DataFrame({"item": items[known], "time": columns.timestamps[known]}).groupby("item")["time"].min()
    first[frame.index.to_numpy()] = frame.to_numpy()
    return first


def later_events(columns: EventColumns, share: float = LATER_SHARE, split: str = "temporal") -> np.ndarray:
    """Mask of each user's latest `share` of events by time (floor: a user with under 5 keeps all);
    with split "random", a random `share` of each user's events instead."""
    times = columns.timestamps if split == "temporal" else np.random.default_rng(SEED).random(len(columns.timestamps))
    frame = pd.DataFrame({"user": pd.factorize(columns.user_ids)[0], "time": times})
    frame["order"] = np.arange(len(frame))
    frame = frame.sort_values(["user", "time", "order"], kind="stable")
    position = frame.groupby("user").cumcount().to_numpy()
    size = frame.groupby("user")["user"].transform("size").to_numpy()
    later = np.zeros(len(frame), bool)
    later[frame["order"].to_numpy()] = position >= size - np.floor(share * size)
    return later


def relevance(columns: EventColumns, weighting: EventWeighting) -> np.ndarray:
    """A graded label per event: its preference weight, capped at 3 (a 5-star rating, a purchase)."""
    types = pd.Series(columns.event_types).map({t.value: code for t, code in TYPE_CODES.items()}).to_numpy()
    return np.minimum(np.ceil(weighting.weights(types, columns.ratings)), MAX_GRADE).astype(np.int32)


def ndcg_at_k(candidates: Candidates, order_by: np.ndarray, labels: np.ndarray, ideal: np.ndarray) -> float:
    """Mean NDCG@K over the batch's users when each user's candidates are ranked by `order_by`.

    `ideal` is each row's ideal DCG over *all* its later positives, so a target the candidates missed
    counts against both orders alike."""
    order = np.lexsort((-order_by, candidates.rows))
    rows, gains = candidates.rows[order], (2.0 ** labels[order] - 1)
    position = np.arange(len(rows)) - np.searchsorted(rows, rows)
    top = position < K
    dcg = np.bincount(rows[top], weights=gains[top] / np.log2(position[top] + 2), minlength=len(ideal)).astype(float)
    return float(np.mean(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)))


class LearnedRanker:
    """A fitted LightGBM ranker and what its features need from the fit (item ages, price bands)."""

    def __init__(self, booster_text: str, names: list[str], item_first_seen: np.ndarray, price_band: np.ndarray,
                 report: dict) -> None:
        self.booster = lightgbm.Booster(model_str=booster_text)
        self.booster_text = booster_text
        self.names = names
        self.item_first_seen = item_first_seen
        self.price_band = price_band
        self.report = report  # validation NDCG@10 of ranker and blend, sizes, fit seconds

    def candidates(self, hybrid: "HybridRecommender", data: InteractionData, users: np.ndarray) -> Candidates:
        return candidates(hybrid, data, users, self.item_first_seen, self.price_band)

    def predict(self, found: Candidates) -> np.ndarray:
        if not len(found.rows):
            return np.empty(0)
        return BLEND_PRIOR * found.blend + self.booster.predict(found.features, num_threads=1)

    def state(self) -> dict[str, Value]:
        return {"booster": [self.booster_text], "names": self.names, "item_first_seen": self.item_first_seen,
                "price_band": self.price_band, "report": [json.dumps(self.report)]}

    @classmethod
    def from_state(cls, state: dict[str, Value]) -> "LearnedRanker":
        return cls(state["booster"][0], state["names"], state["item_first_seen"], state["price_band"],
                   json.loads(state["report"][0]))


def fit_ranker(build: Callable[[EventColumns], "Engine"], data: InteractionData,
               columns: EventColumns, split: str = "temporal") -> tuple[LearnedRanker | None, dict]:
    """Learn a ranker on a `split` of `columns`; None where it does not pay (the report says why).

    `build(part)` is the engine (no ranker) fitted on the 80% part, over the same users and items as
    `data`, so both index spaces agree.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown ranker split '{split}'; choose from {', '.join(SPLITS)} or off")

    started = time.perf_counter()
    later = later_events(columns, split=split)
    held = _subset(columns, later)
    users, items = _indices(data.users, held.user_ids), _indices(data.items, held.item_ids)
    labels = relevance(held, data.weighting)
    keep = (users >= 0) & (items >= 0) & (labels > 0)
    if len(np.unique(users[keep])) < MIN_TRAINING_USERS:  # before the second fit: small shops learn no ranker
        return None, {"split": split, "kept": False, "reason": f"under {MIN_TRAINING_USERS} users with later likes"}
    engine = build(_subset(columns, ~later))
    fit_data, hybrid = engine.data, engine.hybrid
    targets = sp.csr_matrix((labels[keep].astype(np.float64), (users[keep], items[keep])),
                            shape=(fit_data.n_users, fit_data.n_items))
    targets.data = np.minimum(targets.data, MAX_GRADE)  # repeats of one item sum; the label stays a grade
    targets = (targets - targets.multiply(fit_data.seen_matrix() > 0)).tocsr()  # only unseen items are ranked
    targets.eliminate_zeros()
    chosen = np.flatnonzero(np.diff(targets.indptr))
    report: dict = {"split": split, "users_with_later_events": int(len(chosen)), "later_share": LATER_SHARE}
    if len(chosen) < MIN_TRAINING_USERS:
        return None, {**report, "kept": False, "reason": f"under {MIN_TRAINING_USERS} users with later likes"}
    rng = np.random.default_rng(SEED)
    if len(chosen) > MAX_TRAINING_USERS:
        chosen = np.sort(rng.choice(chosen, MAX_TRAINING_USERS, replace=False))
    validation = rng.random(len(chosen)) < VALIDATION_SHARE
    first, bands = first_seen(fit_data, _subset(columns, ~later)), price_bands(fit_data)
    sets = []
    for part in (chosen[~validation], chosen[validation]):
        found = candidates(hybrid, fit_data, part, first, bands)
        wanted = targets[part]
        gains = np.asarray(wanted[found.rows, found.items]).ravel().astype(np.int32)
        sets.append((found, gains, _ideal_dcg(wanted)))
    names = feature_names(hybrid)
    train, valid = (lightgbm.Dataset(found.features, gains, group=np.bincount(found.rows), feature_name=names,
                                     init_score=BLEND_PRIOR * found.blend, free_raw_data=False)
                    for found, gains, _ in sets)
    booster = lightgbm.train(BOOSTER_PARAMS, train, MAX_TREES, valid_sets=[valid],
                             callbacks=[lightgbm.early_stopping(EARLY_STOPPING, verbose=False)])
    found, gains, ideal = sets[1]
    ranked = ndcg_at_k(found, BLEND_PRIOR * found.blend + booster.predict(found.features, num_threads=1), gains, ideal)
    blended = ndcg_at_k(found, found.blend, gains, ideal)
    report.update({"training_users": int((~validation).sum()), "validation_users": int(validation.sum()),
                   "candidates_per_user": round(len(sets[0][0].rows) / max(int((~validation).sum()), 1), 1),
                   "trees": int(booster.best_iteration or booster.num_trees()),
                   "validation_ndcg@10_ranker": round(ranked, 4), "validation_ndcg@10_blend": round(blended, 4),
                   "kept": bool(ranked > blended), "fit_seconds": round(time.perf_counter() - started, 2)})
    if not report["kept"]:
        return None, {**report, "reason": "the blend ranks the validation users' later events better"}
    text = booster.model_to_string(num_iteration=booster.best_iteration or None)
    return LearnedRanker(text, names, first_seen(data, columns), price_bands(data), report), report


def _indices(ids: IdMap, values: np.ndarray) -> np.ndarray:
    """Indices of `values` in `ids`, -1 for unknown ones, vectorised."""
    return pd.Index(ids.ids_of(range(len(ids)))).get_indexer(values)


def _subset(columns: EventColumns, mask: np.ndarray) -> EventColumns:
    return EventColumns(*(getattr(columns, f.name)[mask] for f in fields(EventColumns)))


def _ideal_dcg(targets: sp.csr_matrix) -> np.ndarray:
    """Each row's best possible DCG@K over its graded targets."""
    ideal = np.zeros(targets.shape[0])
    for row in range(targets.shape[0]):  # once per fit, over a few thousand users
        gains = np.sort(targets.data[targets.indptr[row]:targets.indptr[row + 1]])[::-1][:K]
        ideal[row] = np.sum((2.0 ** gains - 1) / np.log2(np.arange(len(gains)) + 2))
    return ideal
