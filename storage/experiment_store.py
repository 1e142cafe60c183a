"""Experiments and impressions in the store, and the counts an experiment's result is computed from.

Attribution happens here, when a result is asked for, from what is stored: exact, the same in every
process, and nothing to keep up while serving. An event is attributed to an impression when it
carries that impression's recommendation_id and its item was in the list shown to its user; an event
without one (or with an id that names no such list) goes to the latest list that showed its item to
its user within ATTRIBUTION_WINDOW_SECONDS before it. The rows come from SQL; the matching by time is
pandas's merge_asof, because date arithmetic in SQL differs between SQLite and PostgreSQL.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from itertools import chain

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Engine, func, insert, select, true, update
from sqlalchemy.exc import IntegrityError

from experiments.records import Experiment, Impression, Variant, VariantCounts
from recommenders.records import EventType
from storage.experiment_schema import ExperimentRow, ImpressionRow, ItemImpressionCount
from storage.schema import Interaction, Item
from storage.store import _DIALECT_INSERTS, _json_rows  # the same package's upsert dialects, JSON rows



class ExperimentRunningError(RuntimeError):
    """Another experiment is running; one runs at a time, so no user is in two."""


class ExperimentStore:
    """Shares the Store's SQLAlchemy engine (and so its pool and its schema set-up)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = engine.dialect.name
        self._insert_lists = insert(ImpressionRow).from_select(
            [column.name for column in IMPRESSION_COLUMNS], _json_rows(dialect, "lists", IMPRESSION_COLUMNS))
        counts = _DIALECT_INSERTS[dialect](ItemImpressionCount).from_select(
            ["item_id", "impressions"], _json_rows(dialect, "counts", COUNT_COLUMNS).where(true()))
        self._count_items = counts.on_conflict_do_update(
            index_elements=[ItemImpressionCount.item_id],
            set_={"impressions": ItemImpressionCount.impressions + counts.excluded.impressions})
        # How a time goes into the JSON: as SQLAlchemy stores it on SQLite, ISO 8601 for PostgreSQL to parse.
        self._json_time = ((lambda t: _datetime(t).strftime("%Y-%m-%d %H:%M:%S.%f")) if dialect == "sqlite"
                           else (lambda t: _datetime(t).isoformat()))

    # --- experiments ---

    def create_experiment(self, experiment: Experiment) -> None:
        row = {"experiment_id": experiment.experiment_id, "name": experiment.name,
               "allocation": experiment.allocation, "reward": experiment.reward, "control": experiment.control,
               "variants": [variant.as_dict() for variant in experiment.variants], "status": "running",
               "running_slot": 1, "created_at": _datetime(experiment.created_at), "stopped_at": None}
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(ExperimentRow).values(row))
        except IntegrityError as error:
            raise ExperimentRunningError("another experiment is running; stop it first") from error

    def experiments(self) -> list[Experiment]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(ExperimentRow).order_by(ExperimentRow.created_at.desc()))
            return [_experiment(row) for row in rows]

    def experiment(self, experiment_id: str) -> Experiment | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(ExperimentRow).where(ExperimentRow.experiment_id == experiment_id)).first()
        return None if row is None else _experiment(row)

    def running_experiment(self) -> Experiment | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(ExperimentRow).where(ExperimentRow.running_slot == 1)).first()
        return None if row is None else _experiment(row)

    def stop_experiment(self, experiment_id: str, now: float) -> Experiment | None:
        """Stops it if it runs; a stopped one stays as it was. None if there is no such experiment."""
        with self._engine.begin() as conn:
            conn.execute(update(ExperimentRow)
                         .where(ExperimentRow.experiment_id == experiment_id, ExperimentRow.status == "running")
                         .values(status="stopped", running_slot=None, stopped_at=_datetime(now)))
        return self.experiment(experiment_id)

    # --- impressions ---

    def append_impressions(self, impressions: list[Impression]) -> None:
        """One transaction of two statements whatever the batch's size: the lists, then each shown item's count.

        Each statement takes the whole batch as one JSON parameter, which the database expands into rows
        (SQLite's json_each, PostgreSQL's json_array_elements). An executemany bound every row in
        Python, handing the interpreter lock back and forth with the request loop at each row's step:
        it cost 14% of the cached-read throughput, and this 3% (bench/README, "Impressions").
        """
        if not impressions:
            return
        lists = orjson.dumps([[impression.recommendation_id, impression.user_id, impression.surface, impression.case,
                               impression.method, impression.experiment_id, impression.variant, impression.items,
                               self._json_time(impression.shown_at)] for impression in impressions])
        shown = Counter(chain.from_iterable(impression.items for impression in impressions))
        with self._engine.begin() as conn:
            conn.execute(self._insert_lists, {"lists": lists.decode()})
            if shown:  # sorted, so two processes adding counts take the rows' locks in one order
                conn.execute(self._count_items, {"counts": orjson.dumps(sorted(shown.items())).decode()})

    def least_shown_items(self, limit: int) -> list[str]:
        """Available catalog items by how often they were shown, fewest first (never shown ones first of
        all). Unavailable items are never shown, so without the condition they would fill the list."""
        shown = func.coalesce(ItemImpressionCount.impressions, 0)
        stmt = (select(Item.item_id).outerjoin(ItemImpressionCount, ItemImpressionCount.item_id == Item.item_id)
                .where(Item.available).order_by(shown, Item.item_id).limit(limit))
        with self._engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    # --- results ---

    def variant_counts(self, experiment: Experiment, window_seconds: float,
                       bucket_seconds: float = 60.0) -> list[VariantCounts]:
        """Per variant: impressions, distinct users, impressions clicked (any attributed event),
        impressions converted (an attributed purchase), and the attributed purchase value with its squares."""
        in_experiment = select(ImpressionRow.user_id).where(ImpressionRow.experiment_id == experiment.experiment_id)
        since = _datetime(experiment.created_at)
        with self._engine.connect() as conn:
            lists = pd.DataFrame(conn.execute(
                select(ImpressionRow.recommendation_id, ImpressionRow.user_id, ImpressionRow.variant,
                       ImpressionRow.shown_at).where(ImpressionRow.experiment_id == experiment.experiment_id)).all(),
                columns=["recommendation_id", "user_id", "variant", "shown_at"])
            shown = pd.DataFrame(conn.execute(  # every list these users saw: another one may have the click
                select(ImpressionRow.recommendation_id, ImpressionRow.user_id, ImpressionRow.items,
                       ImpressionRow.shown_at)
                .where(ImpressionRow.user_id.in_(in_experiment),
                       ImpressionRow.shown_at >= since - timedelta(seconds=window_seconds))).all(),
                columns=["recommendation_id", "user_id", "items", "shown_at"])
            events = pd.DataFrame(conn.execute(
                select(Interaction.user_id, Interaction.item_id, Interaction.event_type, Interaction.occurred_at,
                       Interaction.recommendation_id, Interaction.value)
                .where(Interaction.user_id.in_(in_experiment), Interaction.recorded_at >= since)).all(),
                columns=["user_id", "item_id", "event_type", "occurred_at", "recommendation_id", "value"])
        shown = shown.assign(item_id=shown["items"].map(orjson.loads)).drop(columns="items").explode("item_id")
        attributed = attribute(events, shown.dropna(subset=["item_id"]), window_seconds)
        return _count_variants(experiment, lists, attributed, bucket_seconds)


def attribute(events: pd.DataFrame, shown: pd.DataFrame, window_seconds: float) -> pd.DataFrame:
    """The events with the recommendation_id each is attributed to (rows without one dropped).

    `events`: user_id, item_id, event_type, occurred_at, recommendation_id, value; `shown`: one row per
    shown item, recommendation_id, user_id, item_id, shown_at.
    """
    columns = ["event_type", "value", "attributed_to"]
    if events.empty or shown.empty:
        return pd.DataFrame(columns=columns)
    events = events.assign(t=_seconds(events["occurred_at"]), row=np.arange(len(events)))
    shown = shown.assign(t=_seconds(shown["shown_at"]))
    by_id = events.merge(shown[["recommendation_id", "user_id", "item_id"]],
                         on=["recommendation_id", "user_id", "item_id"], how="inner")
    by_id = by_id.drop_duplicates("row").assign(attributed_to=lambda frame: frame["recommendation_id"])
    rest = events[~events["row"].isin(by_id["row"])].sort_values("t")
    by_time = pd.merge_asof(rest.drop(columns="recommendation_id"),
                            shown.sort_values("t")[["t", "user_id", "item_id", "recommendation_id"]],
                            on="t", by=["user_id", "item_id"], direction="backward", tolerance=window_seconds,
                            allow_exact_matches=True).rename(columns={"recommendation_id": "attributed_to"})
    both = pd.concat([by_id[columns], by_time[columns]], ignore_index=True)
    return both[both["attributed_to"].notna()]


def _count_variants(experiment: Experiment, lists: pd.DataFrame, attributed: pd.DataFrame,
                    bucket_seconds: float) -> list[VariantCounts]:
    purchase = attributed["event_type"] == EventType.PURCHASE.value
    per_list = pd.DataFrame({
        "clicked": attributed.groupby("attributed_to").size() > 0,  # every list with an attributed event
        "converted": purchase.groupby(attributed["attributed_to"]).any(),
        "revenue": attributed["value"].where(purchase, 0.0).fillna(0.0).astype(float)
                   .groupby(attributed["attributed_to"]).sum(),
    })
    lists = lists.join(per_list, on="recommendation_id")
    lists[["clicked", "converted"]] = lists[["clicked", "converted"]].fillna(False).astype(bool)
    lists["revenue"] = lists["revenue"].fillna(0.0).astype(float)
    lists["bucket"] = (_seconds(lists["shown_at"]) // bucket_seconds) * bucket_seconds
    counts = []
    for variant in experiment.variants:
        mine = lists[lists["variant"] == variant.name]
        traffic = mine.groupby("bucket").size()
        counts.append(VariantCounts(
            name=variant.name, impressions=len(mine), users=int(mine["user_id"].nunique()),
            clicks=int(mine["clicked"].sum()), conversions=int(mine["converted"].sum()),
            revenue=float(mine["revenue"].sum()), revenue_squares=float((mine["revenue"] ** 2).sum()),
            traffic=[(float(start), int(n)) for start, n in traffic.items()]))
    return counts


def _seconds(moments: pd.Series) -> pd.Series:
    """Aware datetimes as Unix seconds."""
    return (pd.to_datetime(moments, utc=True) - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)


IMPRESSION_COLUMNS = tuple(ImpressionRow.__table__.columns)
COUNT_COLUMNS = (ItemImpressionCount.__table__.c.item_id, ItemImpressionCount.__table__.c.impressions)


def _datetime(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def _experiment(row) -> Experiment:
    return Experiment(
        experiment_id=row.experiment_id, name=row.name, allocation=row.allocation, reward=row.reward,
        control=row.control, variants=tuple(Variant.from_dict(variant) for variant in row.variants), status=row.status,
        created_at=row.created_at.timestamp(),
        stopped_at=None if row.stopped_at is None else row.stopped_at.timestamp())
