"""The data-set loaders (preprocess/loaders) and `python main.py load`, on small files written here.

The real data sets in ../shared/data are never read: these files copy their formats, with the
malformed rows a real export can have.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from config import load_settings
from main import MAIN_PATH
from preprocess.load_command import run_load
from preprocess.loaders import FORMATS, load_dataset
from recommenders.records import EventType, ItemRecord
from storage.store import Store
from web import create_app

COLUMNS = ["user_id", "item_id", "event_type", "rating", "timestamp"]


def write(path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    data = "".join(f"{line}\n" for line in lines).encode(encoding)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def assert_interactions_frame(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    for column in ("user_id", "item_id", "event_type"):
        assert pd.api.types.is_string_dtype(frame[column])
    assert frame["rating"].dtype == "float64" and frame["timestamp"].dtype == "float64"
    assert frame["timestamp"].is_monotonic_increasing
    assert set(frame["event_type"]) <= {kind.value for kind in EventType}


def items_by_id(dataset) -> dict[str, ItemRecord]:
    return {item.item_id: item for item in dataset.items}


# --- MovieLens ---------------------------------------------------------------------------------

GENRES = ["unknown", "Action", "Comedy", "Sci-Fi"]


def ml_100k_folder(folder: Path) -> Path:
    folder.mkdir()
    write(folder / "u.data", [
        "196\t242\t3\t881250949",
        "186\t302\t5\t881250000",   # earliest: sorts first
        "22\t377\t1 \t881250949",   # stray space after the rating, as in one public copy
        "22\t999\t4\t881251000",    # a movie u.item lacks
        "196\t302\t9\t881250949",   # rating outside 1..5
        "abc\t242\t3\t881250949",   # user not a number
        "22\t242\t3\tyesterday",    # timestamp not a number
        "22\t242\t3\t881250949\t7",  # a field too many
    ])
    write(folder / "u.genre", [f"{genre}|{position}" for position, genre in enumerate(GENRES)] + [""])
    write(folder / "u.item", [
        "242|Kolya (1996)|24-Jan-1997||http://example/k|0|0|1|0",
        "302|L.A. Confidential (1997)|01-Jan-1997||http://example/l|0|1|0|1",
        "377|Café Flesh (1982)|01-Jan-1982||http://example/c|0|0|1|1",
    ], encoding="ISO-8859-1")
    return folder


def test_ml_100k_parses_ratings_and_movies(tmp_path):
    dataset = load_dataset("ml-100k", ml_100k_folder(tmp_path / "ml-100k"))

    assert dataset.name == "ml-100k"
    frame = dataset.interactions
    assert_interactions_frame(frame)
    assert frame.index.tolist() == [1, 0, 2, 3]  # source row positions, in timestamp order (stable)
    assert frame["user_id"].tolist() == ["186", "196", "22", "22"]
    assert frame["item_id"].tolist() == ["302", "242", "377", "999"]
    assert frame["rating"].tolist() == [5.0, 3.0, 1.0, 4.0]
    assert set(frame["event_type"]) == {"rating"}

    items = items_by_id(dataset)
    assert items["302"] == ItemRecord("302", "L.A. Confidential (1997)", "action",
                                      description="Action Sci-Fi L.A. Confidential (1997)", tags=("action", "sci-fi"))
    assert items["377"].name == "Café Flesh (1982)"  # ISO-8859-1 decoded
    assert items["999"] == ItemRecord("999", "999")  # rated but not in u.item: a bare record

    assert dataset.bad_rows == 4
    notes = "\n".join(dataset.notes)
    for reason in ("rating not a number in 1..5", "user id not a number", "timestamp not Unix seconds",
                   "too many fields", "1 items have no catalog entry"):
        assert reason in notes


@pytest.mark.parametrize("ratings_name", ["ratings.dat", "ratings.dat.gz", "ratings_users1-2.dat.gz"])
def test_ml_1m_reads_plain_gzipped_and_subset_ratings(tmp_path, ratings_name):
    write(tmp_path / ratings_name, [
        "1::1193::5::978300760",
        "1::661::3::978302109",
        "2::1193::4::978300000",
        "2:1193::4::978300001",   # a single colon
        "2::661::0::978300002",   # rating outside 1..5
    ])
    write(tmp_path / "movies.dat", [
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
        "661::Star Wars: Episode IV (1977)::Action|Adventure|Sci-Fi",
    ], encoding="ISO-8859-1")

    dataset = load_dataset("ml-1m", tmp_path)

    assert dataset.name == "ml-1m"
    assert_interactions_frame(dataset.interactions)
    assert dataset.interactions[["user_id", "item_id"]].values.tolist() == [["2", "1193"], ["1", "1193"], ["1", "661"]]
    assert dataset.bad_rows == 2
    assert f"ratings read from {ratings_name}" in dataset.notes
    star_wars = items_by_id(dataset)["661"]
    assert (star_wars.name, star_wars.category, star_wars.tags) == (
        "Star Wars: Episode IV (1977)", "action", ("action", "adventure", "sci-fi"))
    assert star_wars.description == "Action Adventure Sci-Fi Star Wars: Episode IV (1977)"


def test_ml_1m_without_ratings_is_an_error(tmp_path):
    write(tmp_path / "movies.dat", ["1::Toy Story (1995)::Animation"])
    with pytest.raises(FileNotFoundError, match="ratings"):
        load_dataset("ml-1m", tmp_path)


# --- generic CSV -------------------------------------------------------------------------------

def test_csv_with_unix_timestamps_and_items(tmp_path):
    events = write(tmp_path / "events.csv", [
        "user_id,item_id,event_type,timestamp,rating",
        "alice,book-1,view,1700000100,",
        "alice,book-1,rating,1700000200,4.5",
        "bob,book-2,Purchase,1700000000,3",  # a rating on a non-rating event is ignored
        "bob,mystery,add_to_cart,1700000300,",
    ])
    items = write(tmp_path / "items.csv", [
        "item_id,name,category,description",
        "book-1,Dune,books,Desert planet epic",
        "book-2,,books,",  # no name: the id stands in
    ])

    dataset = load_dataset("csv", events, items)

    assert dataset.name == "csv-events" and dataset.bad_rows == 0
    frame = dataset.interactions
    assert_interactions_frame(frame)
    assert frame["event_type"].tolist() == ["purchase", "view", "rating", "add_to_cart"]
    assert frame["timestamp"].tolist() == [1700000000.0, 1700000100.0, 1700000200.0, 1700000300.0]
    assert frame["rating"].isna().tolist() == [True, True, False, True]
    assert frame.loc[frame["event_type"] == "rating", "rating"].item() == 4.5
    assert "timestamps read as Unix seconds" in dataset.notes
    catalog = items_by_id(dataset)
    assert catalog["book-1"] == ItemRecord("book-1", "Dune", "books", description="Desert planet epic")
    assert catalog["book-2"].name == "book-2"
    assert catalog["mystery"] == ItemRecord("mystery", "mystery")


def test_csv_with_iso_timestamps(tmp_path):
    events = write(tmp_path / "log.csv", [
        "user_id,item_id,event_type,timestamp",
        "u1,i1,view,2024-05-01T10:00:00Z",
        "u1,i2,view,2024-05-01T12:00:00+02:00",  # the same instant as the row above
        "u2,i1,purchase,2024-05-01 09:00",      # no offset: UTC
    ])

    dataset = load_dataset("csv", events)

    expected = pd.Timestamp("2024-05-01T10:00:00Z").timestamp()
    assert dataset.interactions["timestamp"].tolist() == [expected - 3600, expected, expected]
    assert dataset.interactions["item_id"].tolist() == ["i1", "i1", "i2"]
    assert "timestamps read as ISO 8601" in dataset.notes


def test_csv_bad_rows_are_counted_and_skipped(tmp_path):
    events = write(tmp_path / "events.csv", [
        "user_id,item_id,event_type,timestamp,rating",
        "u1,i1,rating,1700000000,5",
        "u1,i2,rating,1700000001,9",       # rating outside 1..5
        "u1,i3,rating,1700000002,",        # rating event without a rating
        "u1,i4,like,1700000003,",          # unknown event type
        "u1,i5,view,not-a-time,",          # bad timestamp
        "u1,i6,view,1700000000000,",       # milliseconds, not seconds
        ",i7,view,1700000004,",            # no user
        "u1,i8,view,1700000005,,surplus",  # a field too many
    ])

    dataset = load_dataset("csv", events)

    assert dataset.interactions["item_id"].tolist() == ["i1"]
    assert dataset.bad_rows == 7
    notes = "\n".join(dataset.notes)
    for reason in ("rating event without a rating in 1..5", "event_type not one of", "timestamp not Unix seconds",
                   "empty user_id", "too many fields"):
        assert reason in notes


def test_csv_without_a_required_column_is_an_error(tmp_path):
    events = write(tmp_path / "events.csv", ["user_id,item_id,timestamp", "u1,i1,1700000000"])
    with pytest.raises(ValueError, match="event_type"):
        load_dataset("csv", events)


# --- UCI Online Retail -------------------------------------------------------------------------

RETAIL_HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def online_retail_file(path: Path) -> Path:
    return write(path, [
        RETAIL_HEADER,
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom",
        "536366,85123A,WHITE HANGING HEART T-LIGHT HOLDER,2,2010-12-01 09:00:00,2.95,17850,United Kingdom",
        "536367,85123A,HEART T-LIGHT HOLDER,1,2010-12-01 09:30:00,3.05,13047,United Kingdom",
        '536367,22752,"SET 7 BABUSHKA NESTING BOXES, RED",2,2010-12-01 08:00:00,7.65,13047,United Kingdom',
        "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-1,2010-12-01 09:41:00,2.55,17850,United Kingdom",
        "536414,22139,,56,2010-12-01 11:52:00,0,,United Kingdom",  # no customer
        "536415,22752,SET 7 BABUSHKA NESTING BOXES,0,2010-12-01 12:00:00,7.65,13047,France",  # quantity 0
        "536370,POST,POSTAGE,3,2010-12-01 08:45:00,18,12583,France",
        "536370,BANK CHARGES,Bank Charges,1,2010-12-01 08:45:00,15,12583,France",
        "536371,22752,SET 7 BABUSHKA NESTING BOXES,1,someday,7.65,12583,France",  # bad date
        "536372,22752,SET 7 BABUSHKA NESTING BOXES,x,2010-12-01 08:45:00,7.65,12583,France",  # bad quantity
    ])


@pytest.mark.parametrize("as_folder", [False, True])
def test_online_retail_purchases_and_drops(tmp_path, as_folder):
    path = online_retail_file(tmp_path / "OnlineRetail.csv.gz")

    dataset = load_dataset("online-retail", tmp_path if as_folder else path)

    assert dataset.name == "online-retail"
    frame = dataset.interactions
    assert_interactions_frame(frame)
    assert set(frame["event_type"]) == {"purchase"} and frame["rating"].isna().all()
    # The repeated purchase of 85123A by 17850 stays two events; first by time is row 3.
    assert frame[["user_id", "item_id"]].values.tolist() == [
        ["13047", "22752"], ["17850", "85123A"], ["17850", "85123A"], ["13047", "85123A"]]
    assert frame.index.tolist() == [3, 0, 1, 2]
    assert frame["timestamp"].iloc[1] == pd.Timestamp("2010-12-01 08:26:00Z").timestamp()

    notes = "\n".join(dataset.notes)
    assert "dropped 1 cancellation rows" in notes
    assert "dropped 1 rows without a CustomerID" in notes
    assert "dropped 1 rows with a non-positive Quantity" in notes
    assert "dropped 2 rows with non-product stock codes (BANK CHARGES, POST)" in notes
    assert dataset.bad_rows == 2  # the bad date and the bad quantity

    catalog = items_by_id(dataset)
    assert set(catalog) == {"85123A", "22752"}
    heart = catalog["85123A"]
    assert (heart.name, heart.description, heart.category) == (
        "WHITE HANGING HEART T-LIGHT HOLDER", "WHITE HANGING HEART T-LIGHT HOLDER", "retail")
    assert heart.price == 2.95  # the median unit price of its purchases
    assert catalog["22752"].name == "SET 7 BABUSHKA NESTING BOXES, RED"


def test_formats_and_argument_errors(tmp_path):
    assert FORMATS == ("ml-100k", "ml-1m", "csv", "online-retail")
    with pytest.raises(ValueError, match="unknown format"):
        load_dataset("parquet", tmp_path)
    with pytest.raises(ValueError, match="csv format only"):
        load_dataset("ml-100k", tmp_path, items_path=tmp_path / "items.csv")


def test_records_carry_stable_event_ids(tmp_path):
    events = write(tmp_path / "events.csv", [
        "user_id,item_id,event_type,timestamp,rating",
        "u1,i1,rating,1700000100,4",
        "u2,i2,view,1700000000,",
    ])
    records = list(load_dataset("csv", events).records())
    assert [(r.event_id, r.user_id, r.event_type, r.rating, r.timestamp) for r in records] == [
        ("csv-events:1", "u2", EventType.VIEW, None, 1700000000.0),
        ("csv-events:0", "u1", EventType.RATING, 4.0, 1700000100.0),
    ]


# --- loading into the store --------------------------------------------------------------------

def shop_files(folder: Path) -> tuple[Path, Path]:
    """Two tastes (books, games) among six users, enough for the collaborative and content models."""
    items = [f"{kind}-{n}" for kind in ("book", "game") for n in range(1, 6)]
    catalog = write(folder / "items.csv", ["item_id,name,category,description"] + [
        f"{item},{item.title()},{item.split('-')[0]}s,A {item.split('-')[0]} people like" for item in items])
    lines = ["user_id,item_id,event_type,timestamp,rating"]
    clock = 1_700_000_000
    for user in range(1, 7):
        kind = "book" if user <= 3 else "game"
        for n in (user, user + 1, user + 2):
            clock += 60
            lines.append(f"user{user},{kind}-{(n - 1) % 5 + 1},view,{clock},")
            lines.append(f"user{user},{kind}-{(n - 1) % 5 + 1},rating,{clock + 30},5")
    return write(folder / "events.csv", lines), catalog


def run_cli(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run([sys.executable, str(MAIN_PATH), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_load_command_loads_once_and_the_api_serves_the_data(tmp_path):
    events, catalog = shop_files(tmp_path)
    database_url = f"sqlite:///{tmp_path / 'store.db'}"

    first = run_cli("load", "--format", "csv", str(events), "--items", str(catalog), database_url=database_url)
    assert first.returncode == 0, first.stderr
    assert "interactions: 36 loaded, 0 already in the store" in first.stdout
    assert "items:        10 upserted" in first.stdout and "bad rows:     0" in first.stdout
    assert "python main.py train" in first.stdout

    again = run_cli("load", "--format", "csv", str(events), "--items", str(catalog), database_url=database_url)
    assert again.returncode == 0, again.stderr
    assert "interactions: 0 loaded, 36 already in the store" in again.stdout
    store = Store(database_url)
    assert store.counts() == {"users": 6, "items": 10, "interactions": 36}
    store.close()

    app = create_app(load_settings(database_url=database_url, redis_url=None))
    try:
        response = app.test_client().get("/recommendations/user1?count=3")
        assert response.status_code == 200
        recommendations = response.get_json()["recommendations"]
        assert len(recommendations) == 3
        assert {rec["strategy"] for rec in recommendations} - {"popular"}
        assert {rec["item"] for rec in recommendations}.isdisjoint({"book-1", "book-2", "book-3"})  # seen
    finally:
        app.extensions["recommendation_service"].close()


def test_train_command_writes_the_artifact_a_server_then_loads_without_fitting(tmp_path, model_dir):
    events, catalog = shop_files(tmp_path)
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    assert run_cli("load", "--format", "csv", str(events), "--items", str(catalog), database_url=database_url).returncode == 0

    trained = run_cli("train", database_url=database_url)  # no terminal: one JSON line, no progress bar
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert (summary["users"], summary["items"], summary["interactions"]) == (6, 10, 36)
    store = Store(database_url)
    assert summary["fitted_through_seq"] == store.last_seq()
    store.close()
    assert Path(summary["artifact"]).parent == model_dir and (Path(summary["artifact"]) / "manifest.json").is_file()

    app = create_app(load_settings(database_url=database_url, redis_url=None))
    try:
        health = app.test_client().get("/health").get_json()
        assert health["model"]["artifact"] == summary["version"]  # loaded, not trained again
        assert [path.name for path in model_dir.iterdir()] == [summary["version"]]
    finally:
        app.extensions["recommendation_service"].close()


@pytest.mark.parametrize("database_url, reason", [
    ("postgresql://postgres@127.0.0.1:1/none", "the database cannot be reached"),
    ("mysql://host/db", "unsupported database backend: mysql"),
])
def test_train_command_says_why_it_cannot_train(database_url, reason):
    result = run_cli("train", database_url=database_url)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"Cannot train: {reason}") and "Traceback" not in result.stderr


def test_load_command_reports_a_missing_file(tmp_path):
    result = run_cli("load", "--format", "ml-100k", str(tmp_path / "nowhere"),
                     database_url=f"sqlite:///{tmp_path / 'store.db'}")
    assert result.returncode == 1
    assert "Cannot load" in result.stderr and "not a folder" in result.stderr


def test_reload_adds_only_rows_not_yet_stored(tmp_path, capsys):
    events, catalog = shop_files(tmp_path)
    database_url = f"sqlite:///{tmp_path / 'store.db'}"
    assert run_load("csv", events, catalog, database_url)["interactions"] == 36
    with events.open("a") as log:
        log.write("user1,book-5,purchase,1800000000,\nuser7,game-1,view,1800000001,\n")

    summary = run_load("csv", events, catalog, database_url)

    assert (summary["interactions"], summary["already_stored"], summary["new_users"]) == (2, 36, 1)
    store = Store(database_url)
    assert store.counts()["interactions"] == 38
    assert store.user_interactions("user7")[0].event_id == "csv-events:37"
    store.close()
    assert "2 loaded, 36 already in the store" in capsys.readouterr().out
