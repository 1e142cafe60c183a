"""Loaders for public recommendation data sets, each returning a `Dataset`.

    ml-100k        MovieLens 100K folder (u.data, u.item, u.genre)
    ml-1m          MovieLens 1M folder (ratings.dat[.gz] or ratings*.dat.gz, movies.dat)
    csv            a generic event log: user_id,item_id,event_type,timestamp[,rating]
    online-retail  UCI Online Retail transactions (OnlineRetail.csv[.gz] or its folder)

This module imports no pandas, so the CLI can list FORMATS without paying for it; the format
modules are imported when a data set is loaded.
"""
from __future__ import annotations

from pathlib import Path

from preprocess.loaders.dataset import Dataset

__all__ = ["FORMATS", "Dataset", "load_dataset"]

FORMATS = ("ml-100k", "ml-1m", "csv", "online-retail")


def load_dataset(format: str, path: Path, items_path: Path | None = None, progress: bool = False) -> Dataset:
    """Parse one data set; malformed rows are counted in `bad_rows`, never raised.

    Raises FileNotFoundError for missing files and ValueError for an unknown format, a missing
    column or `items_path` given to a format that has its own catalog.
    """
    from preprocess.loaders import csv_events, movielens, online_retail

    if format not in FORMATS:
        raise ValueError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    if format == "csv":
        return csv_events.load_csv(path, None if items_path is None else Path(items_path), progress)
    if items_path is not None:
        raise ValueError(f"--items applies to the csv format only; {format} has its own catalog")
    loaders = {"ml-100k": movielens.load_ml_100k, "ml-1m": movielens.load_ml_1m,
               "online-retail": online_retail.load_online_retail}
    return loaders[format](path, progress)
