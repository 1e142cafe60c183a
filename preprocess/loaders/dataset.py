"""The loaders' common result: a catalog plus a columnar event log, ready for the store or an evaluation."""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recommenders.records import EventType, InteractionRecord, ItemRecord

if TYPE_CHECKING:  # pandas stays out of `import preprocess.loaders` (the CLI parser imports it)
    import pandas as pd

COLUMNS = ("user_id", "item_id", "event_type", "rating", "timestamp")


@dataclass
class Dataset:
    """One loaded data set.

    `interactions` has the COLUMNS (ids and event_type as str, rating NaN unless a rating,
    timestamp in Unix seconds), sorted by timestamp (stable). Its index is each row's position
    among the source file's data rows (lines with too many fields not counted), so a row keeps
    its `event_ids` entry across loads.
    Every item an interaction names has a record in `items` (a bare one if the source has none).
    """

    name: str
    items: list[ItemRecord]
    interactions: pd.DataFrame
    bad_rows: int = 0
    notes: list[str] = field(default_factory=list)

    def event_ids(self) -> pd.Index:
        """`<name>:<row position>`, e.g. `ml-100k:12345`: a reload can tell which rows are stored."""
        return self.name + ":" + self.interactions.index.astype(str)

    def records(self) -> Iterator[InteractionRecord]:
        """The interactions as store records, in timestamp order, each with its event id."""
        kinds = {kind.value: kind for kind in EventType}
        columns = (self.interactions[name].tolist() for name in COLUMNS)
        for event_id, user_id, item_id, event_type, rating, timestamp in zip(self.event_ids(), *columns):
            yield InteractionRecord(user_id, item_id, kinds[event_type], timestamp,
                                    None if math.isnan(rating) else rating, event_id=event_id)
