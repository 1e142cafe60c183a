"""`python main.py evaluate --protocol next-event`: does real-time learning pay?

The run: order every event by time and cut at one global time (the CUTOFF_QUANTILE of event times), so
no model ever sees a later event than the one it is asked about. Fit two engines on everything up to
the cut-off, as the service does (`Engine.build`). Replay the later events in time order: one engine
learns from each through `Engine.observe` (fold-in), the other never does (frozen). Before each scored
event, every row's list for that user is scored against that event and the user's next HORIZON - 1.

Only events whose item is new to the user are scored (and only such items are targets): every list
leaves out what the user has seen, so a repeat could never be hit. Scored events are the first
EVENTS_PER_USER such events of a fixed-seed sample of users; every replayed event still reaches the
fold-in engine and the transition counts, as it would in production.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm import tqdm

from models.evaluate import IndexedData, index_dataset
from models.metrics import mean_reciprocal_rank, ranking_metrics
from models.session_baselines import SESSION_GAP_SECONDS, SESSION_WINDOW, SessionKNN, TransitionModel
from models.split import SEED
from preprocess.loaders.dataset import Dataset
from recommenders.engine import Engine
from recommenders.interaction_data import EventColumns
from recommenders.records import EventType, ItemRecord, Recommendation

K = 10
# The last fifth of the time line is replayed: the same share the holdout protocol tests, and late
# enough that the fitted model has seen most of the catalog.
CUTOFF_QUANTILE = 0.8
HORIZON = 3  # the scored event and the user's next two: a list shown now may be acted on a little later
MAX_USERS = 1000
EVENTS_PER_USER = 5  # with MAX_USERS, at most 5,000 scored events: ml-1m runs in minutes
# The service folds single-event updates into the snapshots every 30 s; the replay does it every 1,000
# events (ml-1m replays 97,528), else the pending rows pile up and slow every read.
COMPACT_EVERY = 1000
ROWS = ("realtime_push", "hybrid_fold_in", "hybrid_frozen", "popular_frozen", "transitions", "session_knn")

EngineFactory = Callable[[Sequence[ItemRecord], list[str], EventColumns], Engine]


def next_event_scores(dataset: Dataset, engine_factory: EngineFactory = Engine.build,
                      cutoff_quantile: float = CUTOFF_QUANTILE, horizon: int = HORIZON,
                      max_users: int = MAX_USERS, events_per_user: int = EVENTS_PER_USER, seed: int = SEED,
                      progress: bool = True) -> dict:
    """HR@10, NDCG@10, MRR@10 per row on one loaded data set; returns the JSON document.

    `engine_factory(items, user_ids, columns)` builds a fitted engine (twice: the learning one and the
    frozen one), so a caller can measure another configuration of the engine on the same events.
    """
    if not 0.0 < cutoff_quantile < 1.0:
        raise ValueError(f"the cut-off quantile must be between 0 and 1, not {cutoff_quantile}")
    if horizon < 1 or max_users < 1 or events_per_user < 1:
        raise ValueError("the horizon, the number of users and the events per user must be at least 1")
    started = time.perf_counter()
    index = index_dataset(dataset.items, dataset.interactions)
    events = index.events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    cutoff = float(events["timestamp"].quantile(cutoff_quantile))
    replayed = events["timestamp"].to_numpy() > cutoff
    if replayed.all() or not replayed.any():
        raise ValueError("the cut-off leaves no events on one side; the data set needs events at several times")
    scored, targets, next_items = _plan(events, replayed, horizon, max_users, events_per_user, seed, index.n_items)
    train = events[~replayed]
    user_ids = index.user_ids.tolist()
    engines = [engine_factory(index.items, user_ids, index.columns(train)) for _ in range(2)]
    lists, seconds = _replay(index, events, replayed, scored, engines, progress)
    scored_users = events["user"].to_numpy()[scored]
    known = np.isin(scored_users, train["user"].to_numpy())  # users with events before the cut-off
    results = {}
    for name in ROWS:
        metrics = ranking_metrics(lists[name], targets, index.n_items)
        results[name] = {"hit_rate@10": metrics["hit_rate@10"], "ndcg@10": metrics["ndcg@10"],
                         "mrr@10": mean_reciprocal_rank(lists[name], targets),
                         "next_hit_rate@10": ranking_metrics(lists[name], next_items, index.n_items)["hit_rate@10"],
                         "known_users_hit_rate@10": ranking_metrics(lists[name][known], targets[known],
                                                                    index.n_items)["hit_rate@10"],
                         "new_users_hit_rate@10": ranking_metrics(lists[name][~known], targets[~known],
                                                                  index.n_items)["hit_rate@10"],
                         "ms_per_list": 1000 * seconds[name] / max(len(scored), 1)}
    protocol = {
        "cutoff_quantile": cutoff_quantile, "cutoff": cutoff,
        "cutoff_utc": pd.Timestamp(cutoff, unit="s").isoformat(),
        "events": len(events), "events_fitted": int((~replayed).sum()), "events_replayed": int(replayed.sum()),
        "events_scored": len(scored), "users_scored": int(len(np.unique(scored_users))),
        "scored_events_of_users_known_at_cutoff": int(known.sum()),
        "horizon": horizon, "events_per_user": events_per_user, "max_users": max_users, "seed": seed, "k": K,
        "session": f"one user's events with gaps of at most {SESSION_GAP_SECONDS // 60} min; "
                   f"session-kNN uses the last {SESSION_WINDOW} items",
    }
    return {"dataset": dataset.name, "protocol": protocol, "results": results,
            "runtime_seconds": time.perf_counter() - started}


def _plan(events: pd.DataFrame, replayed: np.ndarray, horizon: int, max_users: int, events_per_user: int,
          seed: int, n_items: int) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
    """Which replayed events are scored (row positions in `events`, in time order), and per scored event
    its targets (its item and the user's next horizon - 1 items still new to them) and its own item."""
    new_to_user = ~events.duplicated(["user", "item"]).to_numpy()
    scorable = replayed & new_to_user
    candidates = np.unique(events["user"].to_numpy()[scorable])
    sample = np.random.default_rng(seed).choice(candidates, min(max_users, len(candidates)), replace=False)
    later = events[replayed].assign(new=new_to_user[replayed])
    later = later[later["user"].isin(sample)]
    grouped = later.groupby("user", sort=False)
    rank_among_new = grouped["new"].cumsum() - 1
    chosen = (later["new"] & (rank_among_new < events_per_user)).to_numpy()
    target_rows, target_items = [], []
    for offset in range(horizon):  # the user's event `offset` places later, if it is new to them
        item, new = grouped["item"].shift(-offset), grouped["new"].shift(-offset, fill_value=False)
        keep = chosen & new.to_numpy(dtype=bool) & item.notna().to_numpy()
        target_rows.append(np.flatnonzero(keep[chosen]))
        target_items.append(item.to_numpy()[keep].astype(np.int64))
    rows, items = np.concatenate(target_rows), np.concatenate(target_items)
    n_scored = int(chosen.sum())
    targets = sp.csr_matrix((np.ones(len(rows)), (rows, items)), shape=(n_scored, n_items))
    targets.sum_duplicates()
    targets.data[:] = 1.0  # an item twice in the horizon is one target
    own = later["item"].to_numpy()[chosen]
    next_items = sp.csr_matrix((np.ones(n_scored), (np.arange(n_scored), own)), shape=(n_scored, n_items))
    return later.index.to_numpy()[chosen], targets, next_items


def _replay(index: IndexedData, events: pd.DataFrame, replayed: np.ndarray, scored: np.ndarray,
            engines: list[Engine], progress: bool) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every replayed event in time order; before each scored one, each row's top K for its user."""
    learning, frozen = engines
    train = events[~replayed]
    by_user = train.sort_values("user", kind="stable")  # grouped by user, each user's in time order
    transitions = TransitionModel(index.n_items, by_user["user"].to_numpy(), by_user["item"].to_numpy())
    sessions = SessionKNN(index.n_items, by_user["user"].to_numpy(), by_user["item"].to_numpy(),
                          by_user["timestamp"].to_numpy())
    # Each user's latest event so far (item, type), and the scored users' items: seen, and since the cut-off.
    last = {int(user): (int(item), kind) for user, item, kind in
            train.groupby("user")[["item", "event_type"]].last().itertuples(name=None)}
    scored_users = set(events["user"].to_numpy()[scored].tolist())
    history = {int(user): items.tolist() for user, items in
               train[train["user"].isin(scored_users)].groupby("user")["item"]}
    since_cutoff: dict[int, list[int]] = {user: [] for user in scored_users}
    item_ids = np.array([item.item_id for item in index.items], dtype=object)
    position = {item_id: i for i, item_id in enumerate(item_ids)}

    def indices(recommendations: list[Recommendation]) -> np.ndarray:
        return np.array([position[r.item] for r in recommendations], dtype=np.int64)

    def frozen_list(user_id: str, case: str, new: list[int]) -> np.ndarray:
        """The frozen engine does not know the items seen since the cut-off; the service would still
        not show them again (it reads the history from the store), so they are left out here too."""
        ranked = indices(frozen.recommend(user_id, K + len(new), case=case))
        return ranked[~np.isin(ranked, new)][:K]

    answers: dict[str, list[np.ndarray]] = {name: [] for name in ("realtime_push", *ROWS[1:])}
    seconds = dict.fromkeys(answers, 0.0)
    records = index.records(events[replayed])
    is_scored = np.zeros(len(events), dtype=bool)
    is_scored[scored] = True
    users, items = events["user"].to_numpy(), events["item"].to_numpy()
    for step, (row, record) in enumerate(tqdm(zip(np.flatnonzero(replayed), records), total=len(records),
                                              desc="  replay", unit="event", leave=False, disable=not progress)):
        if step % COMPACT_EVERY == 0:
            learning.compact()  # as the service's background job does; answers do not change, reads get faster
        user, item = int(users[row]), int(items[row])
        previous = last.get(user)
        if is_scored[row]:
            user_id = record.user_id
            seen = np.array(history.get(user, []) + since_cutoff[user], dtype=np.int64)
            askers = {
                "realtime_push": lambda: indices(learning.realtime_recommend(
                    user_id, K, product_id=None if previous is None else item_ids[previous[0]],
                    event_type=EventType.VIEW if previous is None else EventType(previous[1]))),
                "hybrid_fold_in": lambda: indices(learning.recommend(user_id, K)),
                "hybrid_frozen": lambda: frozen_list(user_id, "hybrid", since_cutoff[user]),
                "popular_frozen": lambda: frozen_list(user_id, "popular", since_cutoff[user]),
                "transitions": lambda: transitions.recommend(None if previous is None else previous[0], seen, K),
                "session_knn": lambda: sessions.recommend(seen[-SESSION_WINDOW:], seen, K),
            }
            for name, ask in askers.items():
                began = time.perf_counter()
                ranked = ask()
                seconds[name] += time.perf_counter() - began
                answers[name].append(np.pad(ranked, (0, K - len(ranked)), constant_values=-1))
        learning.observe(record)
        transitions.observe(None if previous is None else previous[0], item)
        last[user] = (item, record.event_type.value)
        if user in since_cutoff:
            since_cutoff[user].append(item)
    lists = {name: np.array(rows, dtype=np.int64).reshape(-1, K) for name, rows in answers.items()}
    return lists, seconds


def run_next_event(dataset: str, data_dir: Path, items_path: Path | None = None, json_path: Path | None = None,
                   out_dir: Path | None = None, max_users: int | None = None, progress: bool = True) -> int:
    """The CLI entry: load, replay, print the table, write next_event.md (and the JSON if asked)."""
    from models.report import next_event_markdown, write_json
    from preprocess.loaders import load_dataset

    loaded = load_dataset(dataset, Path(data_dir), None if items_path is None else Path(items_path), progress=progress)
    evaluation = next_event_scores(loaded, max_users=MAX_USERS if max_users is None else max_users, progress=progress)
    text = next_event_markdown(evaluation)
    print(text)
    folder = Path(out_dir or Path("reports") / dataset)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "next_event.md").write_text(text + "\n", encoding="utf-8")
    print(f"\nReport: {folder / 'next_event.md'}")
    if json_path is not None:
        write_json(evaluation, Path(json_path))
        print(f"JSON: {json_path}")
    return 0
