"""A generic event log: `user_id,item_id,event_type,timestamp[,rating]` with a header row, and an
optional catalog `item_id,name,category,description`. Ids are any non-empty strings."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from preprocess.loaders.common import MAX_ID_LENGTH, RowFilter, assemble, ratings, read_table, timestamps
from preprocess.loaders.dataset import Dataset
from recommenders.records import EventType, ItemRecord

EVENT_FIELDS = ("user_id", "item_id", "event_type", "timestamp")
ITEM_FIELDS = ("item_id", "name", "category", "description")
EVENT_TYPES = [kind.value for kind in EventType]
NAME_LENGTH = MAX_ID_LENGTH - len("csv-:") - 10  # room for ":<row position>" in a 64-character event id


def load_csv(path: Path, items_path: Path | None = None, progress: bool = False) -> Dataset:
    """Event types are matched case-insensitively; `rating` rows need a rating in 1..5 (other rows'
    ratings are ignored); timestamps are Unix seconds or ISO 8601, decided per column.

    The data set is named after the file (`csv-events` for events.csv), so two logs get distinct
    event ids while a reload of the same file recognises its rows.
    """
    table, skipped = read_table(path, progress)
    table.columns = table.columns.str.strip().str.lower()
    _require(table, EVENT_FIELDS, path)
    rows = RowFilter(table.index)
    event_type = table["event_type"].str.strip().str.lower()
    rows.reject(f"event_type not one of {', '.join(EVENT_TYPES)}", ~event_type.isin(EVENT_TYPES))
    is_rating = event_type == EventType.RATING.value
    rating, bad_ratings = ratings(table["rating"] if "rating" in table else pd.Series("", index=table.index))
    rows.reject("rating event without a rating in 1..5", is_rating & bad_ratings)
    timestamp, bad_timestamps, kind = timestamps(table["timestamp"])
    rows.reject(f"timestamp not {kind}", bad_timestamps)
    events = pd.DataFrame({"user_id": table["user_id"].str.strip(), "item_id": table["item_id"].str.strip(),
                           "event_type": event_type, "rating": rating.where(is_rating), "timestamp": timestamp})
    items, notes = ([], []) if items_path is None else _read_items(items_path)
    name = "csv-" + path.name.split(".")[0][:NAME_LENGTH]
    return assemble(name, events, rows, skipped, items, [f"timestamps read as {kind}", *notes])


def _read_items(path: Path) -> tuple[list[ItemRecord], list[str]]:
    """The catalog file; a missing name falls back to the id, a repeated id keeps its last row."""
    table, skipped = read_table(path)
    table.columns = table.columns.str.strip().str.lower()
    _require(table, ITEM_FIELDS[:1], path)
    table = table.reindex(columns=list(ITEM_FIELDS), fill_value="").apply(lambda column: column.str.strip())
    usable = table["item_id"].str.len().between(1, MAX_ID_LENGTH)
    table = table[usable].drop_duplicates("item_id", keep="last")
    table["name"] = table["name"].where(table["name"] != "", table["item_id"])
    items = [ItemRecord(item_id, name, category, description=description)
             for item_id, name, category, description in zip(*(table[column] for column in ITEM_FIELDS))]
    notes = [f"skipped {n:,} catalog rows: {why}"
             for n, why in ((skipped, "too many fields"), (int((~usable).sum()), "empty or too long item_id")) if n]
    return items, notes


def _require(table: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{path.name} has no {', '.join(missing)} column (its header: {', '.join(table.columns)})")
