"""`python main.py evaluate`: every recommender of ours and every reference, on one split, one protocol.

The run: load a data set, split its (user, item) pairs per user 80/20 with a fixed seed, give our
recommenders the training events through the engine's own InteractionData and the references the
training matrices, rank every unseen item for each test user, score the top 10 against the test
positives, then check that the engine's real-time update path (fold-in) keeps ranking quality.
"""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from config import load_settings
from models.metrics import ranking_metrics, rating_errors
from models.tuning import tune_collaborative
from models.references import REFERENCES, Reference, TunedReference
from models.split import FOLD_IN_FRACTION, POSITIVE_RATING, SEED, TEST_FRACTION, Pairs, holdout, pair_keys
from recommenders import registry
from recommenders.engine import Engine
from recommenders.hybrid import METHODS, HybridPolicy, HybridRecommender
from recommenders.interaction_data import EventColumns, EventWeighting, InteractionData
from recommenders.records import EventType, InteractionRecord, ItemRecord

K = 10
BATCH_USERS = 256
RANKER_SPLIT = "random"  # how this protocol's engines learn their ranker (see ours())


class EngineBlend:
    """A blend the engine wires (the collaborative blend, the hybrid by `method`, the hybrid with its
    learned ranker), fitted through a fresh engine on the training events, so it is measured exactly
    as it serves."""

    def __init__(self, pick: Callable[[Engine], object], method: str | None = None, ranker: str = "off") -> None:
        self.pick = pick
        self.method = method  # named in the report
        self.ranker = ranker
        self.ranker_report: dict = {}

    def fit(self, data: InteractionData, columns: EventColumns) -> "EngineBlend":
        engine = Engine.build(data.item_records, data.users.ids_of(range(data.n_users)), columns, data.weighting,
                              ranker=self.ranker, unscalable_max_items=load_settings().unscalable_max_items)
        self.model, self.ranker_report = self.pick(engine), engine.ranker_report
        return self

    def recommend(self, data: InteractionData, users: np.ndarray, k: int) -> np.ndarray:
        return self.model.recommend(data, users, k)


class SparkBlend(EngineBlend):
    """The blend of an engine trained by the Spark trainer on the same training events, written as an
    artifact and read back: what a server given the Spark artifact serves (`--models hybrid_spark`)."""

    def fit(self, data: InteractionData, columns: EventColumns) -> "SparkBlend":
        from recommenders.artifacts import load_engine, write_artifact
        from training.spark_trainer import export_parquet, fit_on_spark, spark_session

        settings = load_settings()
        spark = spark_session(settings.spark_master)
        try:
            with tempfile.TemporaryDirectory(prefix="evaluate-spark-", dir=settings.spark_work_dir) as work:
                events = Path(work) / "events.parquet"
                export_parquet([pd.DataFrame({"user_id": columns.user_ids, "item_id": columns.item_ids,
                                              "event_type": columns.event_types, "rating": columns.ratings,
                                              "timestamp": columns.timestamps,
                                              "seq": np.arange(1, len(columns.user_ids) + 1)})], events)
                engine = fit_on_spark(spark, spark.read.parquet(str(events)), data.item_records,
                                      data.users.ids_of(range(data.n_users)), data.weighting, HybridPolicy(), None,
                                      settings.unscalable_max_items, settings.spark_cooccurrence_per_item)
                self.model = self.pick(load_engine(write_artifact(engine, Path(work) / "models", trained_by="spark")))
        finally:
            spark.stop()
        return self


def _hybrid(method: str) -> Callable[[Engine], HybridRecommender]:
    return lambda engine: HybridRecommender(engine.hybrid.components, engine.hybrid.policy, method)


def ours() -> dict[str, Callable[[], object]]:
    """Our models, each made fresh (unfitted): every registered component (named `<name>_engine` where
    a reference has the same name), the collaborative blend, and the hybrid by each method."""
    models: dict[str, Callable[[], object]] = {
        (f"{name}_engine" if name in REFERENCES else name): entry.factory
        for name, entry in registry.registrations().items()}
    models["collaborative"] = lambda: EngineBlend(lambda engine: engine.collaborative)
    for method in METHODS:
        models[f"hybrid_{method}"] = lambda method=method: EngineBlend(_hybrid(method), method)
    # The ranker learns on a random share of each user's events: what this protocol holds out (one learnt
    # on each user's latest events ranks what comes next, which the next-event protocol measures).
    models["hybrid_ranked"] = lambda: EngineBlend(lambda engine: engine.hybrid, "weighted", ranker=RANKER_SPLIT)
    models["hybrid_spark"] = lambda: SparkBlend(_hybrid("weighted"), "weighted")
    return models


# Models that run only when --models names them: hybrid_spark starts Spark (a Java runtime, minutes at ml-1m).
OPT_IN = ("hybrid_spark",)


def model_names() -> tuple[str, ...]:
    return (*ours(), *REFERENCES)


# The engine's models whose fold-in is checked: the served hybrid, and ALS, which re-solves a user's
# factors after each event.
FOLD_IN_MODELS: dict[str, Callable[[Engine], object]] = {"hybrid": lambda engine: engine.hybrid,
                                                        "als": lambda engine: engine.components["als"]}


@dataclass
class IndexedData:
    """A loaded data set in index space: item i is items[i], user u is user_ids[u]."""

    items: list[ItemRecord]
    user_ids: np.ndarray
    events: pd.DataFrame  # user, item (indices), event_type (str), rating, timestamp

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def columns(self, events: pd.DataFrame) -> EventColumns:
        """Events as the engine's columnar input (how it is built from millions of events)."""
        item_ids = np.array([item.item_id for item in self.items], dtype=object)
        frame = pd.DataFrame({"user_id": self.user_ids[events["user"]], "item_id": item_ids[events["item"]],
                              "event_type": events["event_type"].to_numpy(), "rating": events["rating"].to_numpy(),
                              "timestamp": events["timestamp"].to_numpy()})
        return EventColumns.from_frame(frame)

    def records(self, events: pd.DataFrame) -> list[InteractionRecord]:
        """Events as the engine's records (the engine's own input; one Python object per event)."""
        kinds = {kind.value: kind for kind in EventType}
        item_ids = np.array([item.item_id for item in self.items], dtype=object)
        columns = (self.user_ids[events["user"]].tolist(), item_ids[events["item"]].tolist(),
                   events["event_type"].tolist(), events["timestamp"].tolist(), events["rating"].tolist())
        return [InteractionRecord(user, item, kinds[kind], timestamp, None if math.isnan(rating) else rating)
                for user, item, kind, timestamp, rating in zip(*columns)]


def index_dataset(items: Sequence[ItemRecord], interactions: pd.DataFrame) -> IndexedData:
    """Catalog order gives item indices, first appearance gives user indices; events for unknown items are dropped."""
    catalog = list({item.item_id: item for item in items}.values())
    item = pd.Index([record.item_id for record in catalog]).get_indexer(interactions["item_id"])
    known = interactions[item >= 0]
    users, user_ids = pd.factorize(known["user_id"])
    events = pd.DataFrame({"user": users, "item": item[item >= 0], "event_type": known["event_type"].astype(str).to_numpy(),
                           "rating": known["rating"].to_numpy(dtype=np.float64),
                           "timestamp": known["timestamp"].to_numpy(dtype=np.float64)})
    return IndexedData(catalog, np.asarray(user_ids, dtype=object), events)


def rank_users(model, data: InteractionData, users: np.ndarray, k: int) -> np.ndarray:
    """Our model's public batched `recommend`: a users x k matrix of item indices, -1 padded."""
    return model.recommend(data, users, k)


class OurModel:
    """One of our recommenders behind the references' interface (fit / recommend / predict)."""

    kind = "ours"
    requires_ratings = False

    def __init__(self, name: str, data: InteractionData, columns: EventColumns) -> None:
        self.name = name
        self.data = data
        self.columns = columns  # what `data` was built from: the engine's blends are built from it as served
        self.model = ours()[name]()

    @property
    def predicts_ratings(self) -> bool:
        return hasattr(self.model, "predict_ratings")

    def fit(self, train: Pairs) -> "OurModel":
        """`train` is already in `data`: our models learn from the engine's state, as in production."""
        if isinstance(self.model, EngineBlend):
            self.model.fit(self.data, self.columns)
        else:
            self.model.fit(self.data)
        return self

    def recommend(self, users: np.ndarray, k: int) -> np.ndarray:
        return rank_users(self.model, self.data, users, k)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """predict_ratings per user over that user's pairs; NaN where the model has no prediction."""
        predicted = np.full(len(users), np.nan)
        order = np.argsort(users, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(users[order]) != 0])
        for rows in np.split(order, starts[1:]):
            predicted[rows] = self.model.predict_ratings(self.data, int(users[rows[0]]), items[rows])
        return predicted

    def describe(self) -> str:
        method = getattr(self.model, "method", None)
        described = f"engine defaults, method={method}" if method else "engine defaults"
        report = getattr(self.model, "ranker_report", {})
        if report.get("kept"):
            return (f"{described}, ranker ({report['split']} split, {report['trees']} trees): validation NDCG@10 "
                    f"{report['validation_ndcg@10_ranker']:.4f} against the blend's {report['validation_ndcg@10_blend']:.4f}")
        return f"{described}, no ranker kept: {report['reason']}" if report else described


def _ranked_in_batches(model: OurModel | Reference, users: np.ndarray, k: int, progress: bool) -> np.ndarray:
    """recommend() over user batches, with a progress bar counting users."""
    with tqdm(total=len(users), desc=f"  {model.name}", unit="user", leave=False, disable=not progress) as bar:
        blocks = []
        for start in range(0, len(users), BATCH_USERS):
            batch = users[start:start + BATCH_USERS]
            blocks.append(model.recommend(batch, k))
            bar.update(len(batch))
    return np.vstack(blocks) if blocks else np.empty((0, k), np.int64)


@dataclass
class RatingTest:
    """The test pairs with an explicit rating, and the fallback for a model that cannot predict one."""

    users: np.ndarray
    items: np.ndarray
    actual: np.ndarray
    fallback: np.ndarray  # the user's mean training rating, else the global training mean

    @classmethod
    def build(cls, train: Pairs, test: Pairs, users: np.ndarray) -> "RatingTest":
        rated = test.frame[test.frame["rating"].notna() & test.frame["user"].isin(users)]
        ratings = train.ratings
        counts = np.diff(ratings.indptr)
        sums = np.asarray(ratings.sum(axis=1)).ravel()
        global_mean = ratings.data.mean() if ratings.nnz else np.nan
        means = np.divide(sums, counts, out=np.full(len(sums), global_mean), where=counts > 0)
        user = rated["user"].to_numpy()
        return cls(user, rated["item"].to_numpy(), rated["rating"].to_numpy(), means[user])


def evaluate_model(model: OurModel | Reference, train: Pairs, test: Pairs, users: np.ndarray, ratings: RatingTest,
                   k: int, progress: bool) -> tuple[dict, list[str]]:
    """Fit, rank every unseen item for `users`, score the top k; RMSE/MAE where the model predicts ratings."""
    started = time.perf_counter()
    model.fit(train)
    fit_seconds = time.perf_counter() - started
    ranked = _ranked_in_batches(model, users, k, progress)
    entry = {"kind": model.kind, **ranking_metrics(ranked, test.positives[users], train.n_items),
             "rmse": None, "mae": None, "fit_seconds": fit_seconds}
    notes = []
    if model.predicts_ratings and len(ratings.actual):
        predicted = model.predict(ratings.users, ratings.items)
        missing = np.isnan(predicted)
        entry.update(rating_errors(np.where(missing, ratings.fallback, predicted), ratings.actual))
        if missing.any():
            notes.append(f"{model.name} had no rating prediction for {missing.mean():.1%} of the test ratings; "
                         "the user's mean training rating stands in for those")
    return entry, notes


def fold_in_check(index: IndexedData, train_events: pd.DataFrame, test: Pairs, users: np.ndarray, k: int,
                  progress: bool) -> dict:
    """NDCG@k of the engine fitted on 90% of each user's training events and fed the latest 10% through
    `Engine.observe` (timestamp order, no retrain), next to the engine fitted on all training events.

    The engines are built as served by default (no ranker): with the ranker, the two extra fits cost more
    than a minute on ml-1m, and fold-in kept as much (docs/evaluation.md, "The learned ranker")."""
    held = holdout(train_events["user"].to_numpy(), FOLD_IN_FRACTION, SEED, times=train_events["timestamp"].to_numpy())
    full = Engine.build(index.items, index.user_ids.tolist(), index.columns(train_events))
    engine = Engine.build(index.items, index.user_ids.tolist(), index.columns(train_events[~held]))
    started = time.perf_counter()
    for record in tqdm(index.records(train_events[held].sort_values("timestamp", kind="stable")), desc="  fold-in",
                       unit="event", leave=False, disable=not progress):
        engine.observe(record)
    observe_seconds = time.perf_counter() - started
    models = {}
    for name, pick in FOLD_IN_MODELS.items():
        scores = [ranking_metrics(rank_users(pick(e), e.data, users, k), test.positives[users], index.n_items)[f"ndcg@{k}"]
                  for e in (full, engine)]
        models[name] = {f"full_retrain_ndcg@{k}": scores[0], f"fold_in_ndcg@{k}": scores[1],
                        "relative_change": scores[1] / scores[0] - 1 if scores[0] else None}
    return {"events_fitted": int((~held).sum()), "events_folded_in": int(held.sum()),
            "observe_seconds": observe_seconds, "models": models}


def evaluate(dataset: str, items: Sequence[ItemRecord], interactions: pd.DataFrame,
             models: Sequence[str] | None = None, max_users: int | None = None, progress: bool = True,
             tune: bool = False) -> dict:
    """The whole run on one loaded data set; returns the JSON document (see `report.write_json`)."""
    models = models or [name for name in model_names() if name not in OPT_IN]
    unknown = sorted(set(models) - set(model_names()))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(model_names())}")
    started = time.perf_counter()
    index = index_dataset(items, interactions)
    train, test = Pairs.from_events(index.events, index.n_users, index.n_items).holdout(TEST_FRACTION, SEED)
    in_train = np.isin(pair_keys(index.events, index.n_items), pair_keys(train.frame, index.n_items))
    train_events = index.events[in_train]
    columns = index.columns(train_events)
    data = InteractionData(index.items, index.user_ids.tolist(), columns, EventWeighting())

    tested = np.unique(test.frame["user"].to_numpy())
    if max_users is not None and max_users < len(tested):
        tested = np.sort(np.random.default_rng(SEED).choice(tested, max_users, replace=False))
    users = tested[np.diff(test.positives.indptr)[tested] > 0]  # ranking metrics need a test positive
    ratings = RatingTest.build(train, test, tested)

    results, settings, tuned, notes = {}, {}, {}, []
    for name in tqdm(models, desc="models", unit="model", disable=not progress):
        model = REFERENCES[name](progress=progress) if name in REFERENCES else OurModel(name, data, columns)
        if model.requires_ratings and not train.has_ratings:
            notes.append(f"{name} skipped: the data set has no explicit ratings")
            continue
        results[name], model_notes = evaluate_model(model, train, test, users, ratings, K, progress)
        settings[name] = model.describe()
        if isinstance(model, TunedReference):
            tuned[name] = model.tuning()
        notes += model_notes
    fold_in = fold_in_check(index, train_events, test, users, K, progress)
    evaluation = {"dataset": dataset, "protocol": _protocol(K, index, train, test, users, ratings),
                  "results": results, "fold_in": fold_in, "settings": settings, "tuned": tuned, "notes": notes}
    if tune:
        evaluation["tuning"] = tune_collaborative(index, train_events, train, progress)
    return {**evaluation, "runtime_seconds": time.perf_counter() - started}


def _protocol(k: int, index: IndexedData, train: Pairs, test: Pairs, users: np.ndarray, ratings: RatingTest) -> dict:
    """The protocol as data: what was split how, and what the numbers are over."""
    return {
        "split": f"per-user random {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} of distinct (user, item) pairs; "
                 "users with one pair stay wholly in train",
        "seed": SEED,
        "positives": f"rating >= {POSITIVE_RATING:g}, or any view / add_to_cart / purchase",
        "candidates": "every item the user has not seen in training",
        "k": k,
        "users": index.n_users, "items": index.n_items, "events": len(index.events),
        "train_pairs": len(train.frame), "test_pairs": len(test.frame),
        "test_positives": int(test.positives[users].nnz), "ranked_users": len(users),
        "rating_test_pairs": len(ratings.actual),
        "fold_in": f"engine fitted on each user's earliest {1 - FOLD_IN_FRACTION:.0%} of training events, "
                   f"the latest {FOLD_IN_FRACTION:.0%} fed through Engine.observe in timestamp order, no retrain",
    }


def run_evaluation(dataset: str, data_dir: Path, items_path: Path | None = None, json_path: Path | None = None,
                   out_dir: Path | None = None, models: Sequence[str] | None = None, max_users: int | None = None,
                   progress: bool = True, tune: bool = False) -> int:
    """The CLI entry: load, evaluate, print the table, write report.md + chart (and the JSON if asked)."""
    from models.report import format_table, write_json, write_report
    from preprocess.loaders import load_dataset

    loaded = load_dataset(dataset, Path(data_dir), None if items_path is None else Path(items_path), progress=progress)
    evaluation = evaluate(dataset, loaded.items, loaded.interactions, models, max_users, progress=progress,
                          tune=tune)
    evaluation["notes"] = [*loaded.notes, *evaluation["notes"]]
    print(format_table(evaluation))
    if "tuning" in evaluation:
        tuning = evaluation["tuning"]
        print(f"\nTuned collaborative weights (validation NDCG@10 {tuning['validation_ndcg@10']:.4f} over "
              f"{tuning['validation_users']} users, {tuning['grid']} combinations): {tuning['env']}")
    report = write_report(evaluation, Path(out_dir or Path("reports") / dataset))
    print(f"\nReport: {report}")
    if json_path is not None:
        write_json(evaluation, Path(json_path))
        print(f"JSON: {json_path}")
    return 0
