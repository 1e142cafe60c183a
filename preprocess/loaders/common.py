"""What every format loader needs: reading a file into string columns, vectorised field parsers,
the bookkeeping of skipped rows, and the final assembly of a `Dataset`."""
from __future__ import annotations

import gzip
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from preprocess.loaders.dataset import COLUMNS, Dataset
from recommenders.records import ItemRecord

MAX_ID_LENGTH = 64  # the store's user_id and item_id columns
# Unix seconds from 1970 to the end of year 9999 (the last a datetime holds); a millisecond
# timestamp lands past it and counts as bad instead of becoming an event in the year 50000.
TIMESTAMP_RANGE = (0.0, 253_402_300_800.0)
_EPOCH = pd.Timestamp(0, tz="UTC")


def locate(folder: Path, *patterns: str) -> Path:
    """The file matching the first pattern that matches anything in `folder` (glob patterns, in order)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    for pattern in patterns:
        matches = sorted(folder.glob(pattern))
        if len(matches) > 1:
            raise ValueError(f"several files match {pattern} in {folder}: {', '.join(m.name for m in matches)}")
        if matches:
            return matches[0]
    raise FileNotFoundError(f"no {' or '.join(patterns)} in {folder}")


def read_table(path: Path, progress: bool = False, **read_csv_options: Any) -> tuple[pd.DataFrame, int]:
    """The file's fields as strings ("" when empty or missing) and the number of lines skipped
    for having too many fields.

    `.gz` files are decompressed; with `progress` a bar follows the bytes read from disk. The C
    parser cannot report bad lines to a callback, so they are counted from its ParserWarnings.
    """
    with ExitStack() as stack:
        stream: Any = stack.enter_context(path.open("rb"))
        if progress:
            stream = stack.enter_context(tqdm.wrapattr(stream, "read", total=path.stat().st_size, desc=path.name))
        if path.name.endswith(".gz"):
            stream = stack.enter_context(gzip.GzipFile(fileobj=stream))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            try:
                frame = pd.read_csv(stream, dtype=str, keep_default_na=False, on_bad_lines="warn",
                                    encoding_errors="replace", **read_csv_options)
            except pd.errors.EmptyDataError:
                raise ValueError(f"{path.name} is empty") from None
    skipped = 0
    for warning in caught:
        if issubclass(warning.category, pd.errors.ParserWarning):
            skipped += str(warning.message).count("Skipping line")
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return frame.fillna(""), skipped  # the python engine leaves missing fields NaN


class RowFilter:
    """The rows a loader leaves out, and why; each row counts once, under the first reason that hits it.

    `reject` is for malformed rows (they make up Dataset.bad_rows); `drop` is for well-formed rows
    the format leaves out on purpose (e.g. cancellations), noted even when none matched.
    """

    def __init__(self, index: pd.Index) -> None:
        self.excluded = pd.Series(False, index=index)
        self.rejected: dict[str, int] = {}
        self.dropped: dict[str, int] = {}

    def reject(self, reason: str, rows: pd.Series) -> None:
        self._add(self.rejected, reason, rows)

    def drop(self, reason: str, rows: pd.Series) -> None:
        self._add(self.dropped, reason, rows)

    def _add(self, counts: dict[str, int], reason: str, rows: pd.Series) -> None:
        counts[reason] = counts.get(reason, 0) + int((rows & ~self.excluded).sum())
        self.excluded |= rows


def integer_ids(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numeric ids as canonical strings ("196" also from " 196" or "196.0"), and the mask of bad ones."""
    numbers = pd.to_numeric(values, errors="coerce")
    bad = ~numbers.between(0, 2**53) | (numbers % 1 != 0)
    return numbers.where(~bad, 0).astype("int64").astype(str), bad


def ratings(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Ratings as floats, and the mask of those that are missing, not numbers or outside 1..5."""
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers, ~numbers.between(1, 5)


def unix_seconds(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Unix-seconds strings as floats, and the mask of unparsable or out-of-range ones."""
    return _in_range(pd.to_numeric(values, errors="coerce"))


def iso_seconds(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 strings ("2024-05-01T10:00:00Z", "2024-05-01 10:00") as Unix seconds; no offset means UTC."""
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    return _in_range((parsed - _EPOCH) / pd.Timedelta(seconds=1))


def timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series, str]:
    """Unix seconds or ISO 8601, decided once for the column (by the majority of its non-empty
    values, so a few bad rows do not flip it); returns seconds, bad mask and the kind found."""
    numeric = pd.to_numeric(values, errors="coerce").notna().sum()
    if 2 * numeric >= (values.str.strip() != "").sum():
        return *unix_seconds(values), "Unix seconds"
    return *iso_seconds(values), "ISO 8601"


def _in_range(seconds: pd.Series) -> tuple[pd.Series, pd.Series]:
    return seconds.astype("float64"), ~seconds.between(*TIMESTAMP_RANGE, inclusive="left")


def assemble(name: str, events: pd.DataFrame, rows: RowFilter, skipped_lines: int,
             items: list[ItemRecord], notes: list[str]) -> Dataset:
    """The Dataset from parsed columns: excluded rows removed, timestamp order, a record for every item.

    `events` has the COLUMNS, indexed by source row position; `skipped_lines` are lines the parser
    could not split (they count as bad rows too).
    """
    for column in ("user_id", "item_id"):
        rows.reject(f"empty {column}", events[column] == "")
        rows.reject(f"{column} longer than {MAX_ID_LENGTH} characters", events[column].str.len() > MAX_ID_LENGTH)
    kept = events.loc[~rows.excluded, list(COLUMNS)].sort_values("timestamp", kind="stable")
    kept = kept.astype({"user_id": str, "item_id": str, "event_type": str, "rating": "float64",
                        "timestamp": "float64"})
    known = {item.item_id for item in items}
    bare = [ItemRecord(item_id, name=item_id) for item_id in kept["item_id"].unique() if item_id not in known]
    notes = [*notes, *(f"dropped {n:,} {reason}" for reason, n in rows.dropped.items())]
    if skipped_lines:
        notes.append(f"skipped {skipped_lines:,} lines with too many fields")
    notes += [f"skipped {n:,} rows: {reason}" for reason, n in rows.rejected.items() if n]
    if bare:
        notes.append(f"{len(bare):,} items have no catalog entry; they get bare records")
    return Dataset(name, [*items, *bare], kept, skipped_lines + sum(rows.rejected.values()), notes)


def most_frequent(keys: pd.Series, values: pd.Series) -> pd.Series:
    """The most frequent non-empty value per key (ties: the alphabetically first), indexed by key."""
    frame = pd.DataFrame({"key": keys, "value": values})
    counts = frame[frame["value"] != ""].value_counts().reset_index(name="n")
    counts = counts.sort_values(["key", "n", "value"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("key").set_index("key")["value"]

