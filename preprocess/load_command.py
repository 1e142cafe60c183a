"""`python main.py load`: one data set into the service's store, safe to run again.

Every loaded interaction carries the event id `<data set>:<row position>` (Dataset.event_ids).
Before writing, the load reads which of those ids the store already has and appends only the
others, so a second run adds nothing and a run after an interrupted one (or after rows were
appended to a CSV) adds exactly the missing rows. Rows go in batches of BATCH_ROWS, one
transaction each, so a running server's own writes are not held up for the whole load.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from preprocess.loaders import load_dataset
from recommenders.records import InteractionRecord
from storage.store import Store

BATCH_ROWS = 10_000

_T = TypeVar("_T")


def run_load(format: str, path: Path, items_path: Path | None, database_url: str) -> dict:
    """Load the data set into the store at `database_url`; print and return a summary."""
    started = time.perf_counter()
    dataset = load_dataset(format, Path(path), None if items_path is None else Path(items_path), progress=True)
    store = Store(database_url)
    try:
        stored = _stored_event_ids(store, dataset.name)
        new = replace(dataset, interactions=dataset.interactions[~dataset.event_ids().isin(stored)])
        items = store.upsert_items(dataset.items)
        new_users = store.add_users(dataset.interactions["user_id"].unique().tolist())
        loaded = _append(store, new.records(), len(new.interactions))
        if loaded:
            # Where the next start's bulk fit stops (fit_seconds 0: this process fitted nothing).
            # Without it a store a server has used would replay every loaded row through the
            # one-event update path at start-up: 29 s instead of 4 s for ml-100k.
            store.record_checkpoint(store.last_seq(), 0.0)
        totals = store.counts()
    finally:
        store.close()
    summary = {
        "dataset": dataset.name,
        "items": items,
        "users": int(dataset.interactions["user_id"].nunique()),
        "new_users": new_users,
        "interactions": loaded,
        "already_stored": len(dataset.interactions) - len(new.interactions),
        "bad_rows": dataset.bad_rows,
        "notes": dataset.notes,
        "store": totals,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(_summary_text(summary, path), flush=True)
    return summary


def _stored_event_ids(store: Store, name: str) -> set[str]:
    """The ids this data set already put in the store.

    The Store has no lookup by event id, so this reads the whole log once (about as long as the
    server's own start-up read of it).
    """
    prefix = f"{name}:"
    return {event.event_id for event in store.iter_interactions()
            if event.event_id is not None and event.event_id.startswith(prefix)}


def _append(store: Store, records: Iterable[InteractionRecord], total: int) -> int:
    loaded = 0
    with tqdm(total=total, unit="rows", unit_scale=True, desc="store") as bar:
        for batch in _batched(records, BATCH_ROWS):
            loaded += store.append_interactions(batch)
            bar.update(len(batch))
    return loaded


def _batched(iterable: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """itertools.batched arrived in Python 3.12."""
    iterator = iter(iterable)
    while batch := list(islice(iterator, size)):
        yield batch


def _summary_text(summary: dict, path: Path) -> str:
    store = summary["store"]
    lines = [
        f"Loaded {summary['dataset']} from {path} in {summary['seconds']} s",
        f"  items:        {summary['items']:,} upserted",
        f"  users:        {summary['users']:,} ({summary['new_users']:,} new)",
        f"  interactions: {summary['interactions']:,} loaded, {summary['already_stored']:,} already in the store",
        f"  bad rows:     {summary['bad_rows']:,}",
        *(f"  note: {note}" for note in summary["notes"]),
        f"  store now:    {store['users']:,} users, {store['items']:,} items, {store['interactions']:,} interactions",
        ("Next: `python main.py train` fits a model on them (a server that starts trains one itself); a "
         "server already running applies them from the log and swaps the new model in when it appears."),
    ]
    return "\n".join(lines)
