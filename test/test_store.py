"""The Store through its public interface, on SQLite and on a real PostgreSQL."""
from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from recommenders.records import EventType, InteractionRecord, ItemRecord
from storage import Store, UnknownItemError

T0 = 1_700_000_000.123456  # microseconds that must survive the round trip


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    yield store
    store.close()


def item(item_id: str, category: str = "books", **fields) -> ItemRecord:
    return ItemRecord(item_id=item_id, name=f"Name {item_id}", category=category, **fields)


def view(user_id: str, item_id: str = "i1", timestamp: float = T0, **fields) -> InteractionRecord:
    return InteractionRecord(user_id, item_id, EventType.VIEW, timestamp, **fields)


@pytest.fixture
def catalog(store):
    store.upsert_items([item("i1"), item("i2", "games"), item("i3", "games")])
    return store


def test_item_round_trip_and_upsert_reports_create_vs_update(store):
    original = item("i1", brand="Acme", description="A book.", tags=("paper", "new"), price=9.99)
    assert store.upsert_item(original) is True
    assert store.get_item("i1") == original

    changed = item("i1", "comics", tags=(), price=None)
    assert store.upsert_item(changed) is False
    assert store.get_item("i1") == changed
    assert store.get_item("nope") is None
    assert store.count_items() == 1


def test_bulk_upsert_listing_and_categories(store):
    assert store.is_empty()
    items = [item("b"), item("a", "games"), item("d", ""), item("c", "games"), item("a", "toys")]
    assert store.upsert_items(items) == 4  # "a" twice: counted once, last version wins
    assert not store.is_empty()

    assert [i.item_id for i in store.all_items()] == ["a", "b", "c", "d"]
    assert store.get_item("a").category == "toys"
    assert [i.item_id for i in store.list_items(limit=2, offset=1)] == ["b", "c"]
    assert [i.item_id for i in store.list_items(category="games")] == ["c"]
    assert store.count_items("toys") == 1 and store.count_items("none") == 0
    assert store.categories() == [("books", 1), ("games", 1), ("toys", 1)]

    assert store.upsert_items([item("b", "games", price=1.5)]) == 1
    assert store.get_item("b").price == 1.5
    assert store.categories() == [("games", 2), ("toys", 1)]


def test_users(store):
    before = time.time()
    assert store.add_user("u2") is True
    assert store.add_user("u2") is False
    assert store.add_users(["u1", "u2", "u3", "u1"]) == 2
    assert store.all_user_ids() == ["u1", "u2", "u3"]
    user = store.get_user("u2")
    assert user.user_id == "u2" and before - 1 <= user.created_at <= time.time() + 1
    assert store.get_user("nobody") is None


def test_append_round_trip_creates_user(catalog):
    rec = InteractionRecord("u1", "i2", EventType.RATING, T0, rating=4.5, event_id="e-1")
    stored, created = catalog.append_interaction(rec)

    assert created is True and stored.seq > 0
    assert stored == InteractionRecord("u1", "i2", EventType.RATING, T0, 4.5, stored.seq, "e-1")
    assert catalog.user_interactions("u1") == [stored]
    assert catalog.get_user("u1") is not None
    assert catalog.counts() == {"users": 1, "items": 3, "interactions": 1}


def test_seq_strictly_increasing(catalog):
    assert catalog.last_seq() == 3  # the catalog's three ITEM entries
    seqs = [catalog.append_interaction(view(f"u{n % 2}"))[0].seq for n in range(5)]
    assert all(a < b for a, b in zip(seqs, seqs[1:]))
    assert catalog.last_seq() == seqs[-1]


def test_unknown_item_writes_nothing(catalog):
    with pytest.raises(UnknownItemError) as raised:
        catalog.append_interaction(view("u1", "missing"))
    assert raised.value.item_id == "missing"
    assert catalog.counts() == {"users": 0, "items": 3, "interactions": 0}


def test_rating_outside_range_is_rejected(catalog):
    with pytest.raises(ValueError):
        catalog.append_interaction(InteractionRecord("u1", "i1", EventType.RATING, T0, rating=9))
    assert catalog.counts()["interactions"] == 0


def test_event_id_makes_append_idempotent(catalog):
    first, created = catalog.append_interaction(view("u1", event_id="e-1"))
    again, created_again = catalog.append_interaction(view("u1", "i2", T0 + 60, event_id="e-1"))
    assert (created, created_again) == (True, False)
    assert again == first
    assert catalog.counts()["interactions"] == 1


def test_concurrent_retries_of_one_event_store_it_once(catalog):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: catalog.append_interaction(view("u1", event_id="race")), range(8)))
    assert sum(created for _, created in results) == 1
    assert len({rec.seq for rec, _ in results}) == 1
    assert catalog.counts()["interactions"] == 1


def test_iter_interactions_pages_in_seq_order(catalog):
    stored = [catalog.append_interaction(view(f"u{n % 3}", timestamp=T0 + n))[0] for n in range(10)]

    assert list(catalog.iter_interactions(batch_size=3)) == stored
    assert list(catalog.iter_interactions(after_seq=stored[3].seq, batch_size=3)) == stored[4:]
    assert list(catalog.iter_interactions(after_seq=stored[-1].seq, batch_size=3)) == []
    assert list(catalog.iter_interactions(after_seq=stored[1].seq, until_seq=stored[6].seq, batch_size=2)) == stored[2:7]


def test_latest_checkpoint_is_the_newest_recorded(store):
    assert store.latest_checkpoint() is None
    store.record_checkpoint(12, 0.5)
    store.record_checkpoint(7, 0.1)  # newest wins, even if it is a lower seq (a restore)
    assert store.latest_checkpoint() == 7


def test_user_interactions_newest_first_with_limit(catalog):
    stored = [catalog.append_interaction(view(user, f"i{n % 3 + 1}"))[0] for n, user in enumerate("ababa")]
    mine = [rec for rec in stored if rec.user_id == "a"]
    assert catalog.user_interactions("a") == mine[::-1]
    assert catalog.user_interactions("a", limit=2) == mine[:0:-1]
    assert catalog.user_interactions("nobody") == []


def test_append_interactions_bulk(catalog):
    recs = [
        InteractionRecord(f"u{n % 50}", f"i{n % 3 + 1}", EventType.RATING, T0 + n, rating=1 + n % 5)
        for n in range(3000)
    ]
    assert catalog.append_interactions(recs, batch_size=1000) == 3000
    assert catalog.counts() == {"users": 50, "items": 3, "interactions": 3000}

    loaded = list(catalog.iter_interactions(batch_size=700))
    assert [(r.user_id, r.item_id, r.timestamp, r.rating) for r in loaded] == [
        (r.user_id, r.item_id, r.timestamp, r.rating) for r in recs
    ]


def test_append_interactions_is_all_or_nothing(catalog):
    recs = [view("u1"), view("u2"), view("u3", "missing")]
    with pytest.raises(UnknownItemError):
        catalog.append_interactions(recs, batch_size=2)
    assert catalog.counts() == {"users": 0, "items": 3, "interactions": 0}


def test_delete_user_removes_history(catalog):
    for user in ("u1", "u2", "u1"):
        catalog.append_interaction(view(user))
    assert catalog.delete_user("u1") is True
    assert catalog.get_user("u1") is None and catalog.user_interactions("u1") == []
    assert catalog.counts() == {"users": 1, "items": 3, "interactions": 1}
    assert catalog.delete_user("u1") is False


def test_seq_not_reused_after_deleting_the_newest_rows(catalog):
    catalog.append_interaction(view("u1"))
    deleted, _ = catalog.append_interaction(view("u2"))
    catalog.delete_user("u2")
    newer, _ = catalog.append_interaction(view("u3"))
    assert newer.seq > deleted.seq


def test_sqlite_reopen_sees_the_same_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'not' / 'yet' / 'there.db'}"
    first = Store(url)
    first.upsert_item(item("i1"))
    stored, _ = first.append_interaction(view("u1"))
    first.close()

    reopened = Store(url)
    assert reopened.get_item("i1") == item("i1")
    assert reopened.user_interactions("u1") == [stored]
    reopened.close()


def test_sqlite_uses_wal(sqlite_url):
    Store(sqlite_url).close()
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://"])
def test_plain_postgresql_urls_use_psycopg3(postgres_url, scheme, monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # SQLAlchemy 2.0's default driver for postgresql://
    store = Store(postgres_url.replace("postgresql+psycopg://", scheme, 1))
    assert store.ping()
    store.close()


def test_ping_is_false_when_the_database_is_gone(tmp_path):
    path = tmp_path / "sub" / "store.db"
    store = Store(f"sqlite:///{path}")
    assert store.ping() is True
    store.close()  # drops pooled connections, so the next ping has to reopen the file
    shutil.rmtree(path.parent)
    path.mkdir(parents=True)  # a directory where the database file was
    assert store.ping() is False


def test_interaction_frame_holds_the_same_log_as_the_records(catalog):
    stored = [catalog.append_interaction(view(f"u{n % 3}", f"i{1 + n % 3}", timestamp=T0 + n))[0] for n in range(7)]
    catalog.append_interaction(InteractionRecord("u9", "i2", EventType.RATING, T0 + 9, rating=4.0))
    frame = catalog.interaction_frame(after_seq=stored[0].seq, batch_size=3)
    expected = list(catalog.iter_interactions(after_seq=stored[0].seq))
    assert frame["seq"].tolist() == [r.seq for r in expected]
    assert frame["user_id"].tolist() == [r.user_id for r in expected]
    assert frame["timestamp"].tolist() == pytest.approx([r.timestamp for r in expected], abs=1e-6)
    assert frame["rating"].isna().sum() == 6 and frame["rating"].iloc[-1] == 4.0
    assert len(catalog.interaction_frame(after_seq=expected[-1].seq)) == 0


def test_a_store_made_before_a_column_existed_gets_it_at_start_up(database_url):
    """An older database lacks the newer nullable columns; opening it adds them, and data stays."""
    import sqlalchemy as sa

    Store(database_url).close()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:  # the items table as a version without `price` made it
        conn.exec_driver_sql("ALTER TABLE items DROP COLUMN price")
        conn.exec_driver_sql("INSERT INTO items (item_id, name, category, brand, description, tags, updated_at) "
                             "VALUES ('old', 'Old', 'books', '', '', '[]', '2026-01-01 00:00:00')")
    engine.dispose()
    store = Store(database_url)
    try:
        assert store.get_item("old").price is None
        store.upsert_items([item("new", price=9.5)])
        assert store.get_item("new").price == 9.5
    finally:
        store.close()


def test_append_event_frame_reads_back_as_written_with_consecutive_seqs(catalog):
    catalog.append_interaction(view("u0"))
    catalog.add_users(["u1", "u2"])
    frame = pd.DataFrame({"user_id": ["u1", "u2", "u1"], "item_id": ["i1", "i3", "i2"],
                          "event_type": ["view", "rating", "purchase"], "rating": [None, 4.0, None],
                          "timestamp": [T0, T0 + 1.5, T0 + 2]})
    before = catalog.last_seq()
    assert catalog.append_event_frame(frame) == 3
    assert catalog.last_seq() == before + 3
    stored = catalog.interaction_frame(after_seq=before)
    assert stored["seq"].tolist() == [before + 1, before + 2, before + 3]
    assert stored[["user_id", "item_id", "event_type"]].values.tolist() == frame[["user_id", "item_id",
                                                                                  "event_type"]].values.tolist()
    assert stored["rating"].isna().tolist() == [True, False, True] and stored["rating"].iloc[1] == 4.0
    assert stored["timestamp"].tolist() == pytest.approx(frame["timestamp"].tolist(), abs=1e-6)
    assert [r.event_type for r in catalog.iter_interactions(after_seq=before)] == [
        EventType.VIEW, EventType.RATING, EventType.PURCHASE]


def test_append_event_frame_is_all_or_nothing(catalog):
    catalog.add_users(["u1"])
    frame = pd.DataFrame({"user_id": ["u1", "nobody"], "item_id": ["i1", "i1"], "event_type": ["view", "view"],
                          "rating": [None, None], "timestamp": [T0, T0]})
    with pytest.raises(ValueError):
        catalog.append_event_frame(frame)
    assert catalog.counts()["interactions"] == 0
