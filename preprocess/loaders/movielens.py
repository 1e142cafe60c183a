"""MovieLens 100K and 1M: explicit 1-5 ratings plus the movie catalog, whose title and genres are
the item text the content model reads. Both files are ISO-8859-1."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from preprocess.loaders.common import RowFilter, assemble, integer_ids, locate, ratings, read_table, unix_seconds
from preprocess.loaders.dataset import Dataset
from recommenders.records import EventType, ItemRecord

ENCODING = "ISO-8859-1"
RATING_FIELDS = ["user_id", "item_id", "rating", "timestamp"]


def load_ml_100k(folder: Path, progress: bool = False) -> Dataset:
    """`u.data` (tab-separated user item rating timestamp) and `u.item` (`|`-separated, a 0/1 flag
    per genre, in the order `u.genre` names them)."""
    table, skipped = read_table(locate(folder, "u.data", "u.data.gz"), progress, sep="\t", header=None,
                                names=RATING_FIELDS, quoting=csv.QUOTE_NONE)
    genre_table, _ = read_table(locate(folder, "u.genre"), sep="|", header=None, names=["genre", "position"],
                                encoding=ENCODING, quoting=csv.QUOTE_NONE)
    genres = genre_table.loc[genre_table["genre"] != ""].sort_values("position", key=pd.to_numeric)["genre"].tolist()
    movies, movie_lines = read_table(locate(folder, "u.item", "u.item.gz"), sep="|", header=None,
                                     names=["item_id", "title", "release_date", "video_release_date", "url", *genres],
                                     encoding=ENCODING, quoting=csv.QUOTE_NONE)
    movies["genres"] = _flagged_genres(movies[genres])
    return _ratings_dataset("ml-100k", table, RowFilter(table.index), skipped, movies, movie_lines, [])


def load_ml_1m(folder: Path, progress: bool = False) -> Dataset:
    """`ratings.dat` (`UserID::MovieID::Rating::Timestamp`; also gzipped, or any `ratings*.dat.gz`
    such as a subset) and `movies.dat` (`MovieID::Title::Genres`, genres `|`-separated)."""
    path = locate(folder, "ratings.dat", "ratings.dat.gz", "ratings*.dat.gz")
    # "::" as a separator needs pandas' slow python engine; split on ":" with the C engine instead
    # and require the fields between the doubled colons to be empty.
    table, skipped = read_table(path, progress, sep=":", header=None, quoting=csv.QUOTE_NONE,
                                names=["user_id", "_1", "item_id", "_2", "rating", "_3", "timestamp"])
    rows = RowFilter(table.index)
    rows.reject("fields not separated by '::'", (table[["_1", "_2", "_3"]] != "").any(axis=1))
    # Titles contain ":" ("Star Wars: Episode IV"), so the 3,883-line catalog takes the python engine.
    movies, movie_lines = read_table(locate(folder, "movies.dat", "movies.dat.gz"), sep="::", engine="python",
                                     header=None, names=["item_id", "title", "genres"], encoding=ENCODING,
                                     quoting=csv.QUOTE_NONE)
    return _ratings_dataset("ml-1m", table, rows, skipped, movies, movie_lines, [f"ratings read from {path.name}"])


def _flagged_genres(flags: pd.DataFrame) -> pd.Series:
    """`Action|Comedy` per row from one "0"/"1" column per genre (columns in genre order)."""
    set_flags = flags.eq("1").rename_axis(columns="genre").stack()
    set_flags = set_flags[set_flags].reset_index("genre")
    return set_flags.groupby(level=0)["genre"].agg("|".join).reindex(flags.index, fill_value="")


def _ratings_dataset(name: str, table: pd.DataFrame, rows: RowFilter, skipped: int,
                     movies: pd.DataFrame, movie_lines: int, notes: list[str]) -> Dataset:
    """The part both MovieLens formats share: validate the rating columns, map the movies to items."""
    user_ids, bad_users = integer_ids(table["user_id"])
    item_ids, bad_items = integer_ids(table["item_id"])
    rating, bad_ratings = ratings(table["rating"])
    timestamp, bad_timestamps = unix_seconds(table["timestamp"])
    rows.reject("user id not a number", bad_users)
    rows.reject("item id not a number", bad_items)
    rows.reject("rating not a number in 1..5", bad_ratings)
    rows.reject("timestamp not Unix seconds", bad_timestamps)
    events = pd.DataFrame({"user_id": user_ids, "item_id": item_ids, "event_type": EventType.RATING.value,
                           "rating": rating, "timestamp": timestamp})
    items, catalog_notes = _movie_items(movies, movie_lines)
    return assemble(name, events, rows, skipped, items, [*notes, *catalog_notes])


def _movie_items(movies: pd.DataFrame, skipped_lines: int) -> tuple[list[ItemRecord], list[str]]:
    """name = title, category = first genre (lowercase), description = genres then title, tags = genres.

    Catalog lines that cannot be used only cost those movies their metadata (they get bare
    records if rated), so they are reported in the notes rather than as bad rows.
    """
    item_ids, bad = integer_ids(movies["item_id"])
    movies = movies.assign(item_id=item_ids)[~bad]
    items = []
    for item_id, title, genre_text in zip(movies["item_id"], movies["title"], movies["genres"]):
        genres = genre_text.split("|") if genre_text else []
        items.append(ItemRecord(item_id, name=title, category=genres[0].lower() if genres else "",
                                description=" ".join([*genres, title]), tags=tuple(g.lower() for g in genres)))
    notes = [f"skipped {n:,} catalog lines: {why}"
             for n, why in ((skipped_lines, "too many fields"), (int(bad.sum()), "movie id not a number")) if n]
    return items, notes
