"""The durable log: events, item changes and user deletions in one seq order, on SQLite and PostgreSQL."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from recommenders.records import EventType, InteractionRecord, ItemRecord, LogEntry, LogKind
from storage import LogWakeup, Store

T0 = 1_700_000_000.0
ROOT = Path(__file__).resolve().parent.parent
postgresql_only = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def store(database_url):
    store = Store(database_url)
    yield store
    store.close()


def item(item_id: str, name: str = "") -> ItemRecord:
    return ItemRecord(item_id=item_id, name=name or f"Name {item_id}", category="books")


def view(user_id: str, item_id: str = "i1", **fields) -> InteractionRecord:
    return InteractionRecord(user_id, item_id, EventType.VIEW, T0, **fields)


def summary(entries: list[LogEntry]) -> list[tuple]:
    """(kind, the user or item it is about) per entry: what an applying process acts on."""
    return [(e.kind, e.item.item_id if e.kind is LogKind.ITEM else e.user_id) for e in entries]


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_read_log_interleaves_all_kinds_in_commit_order(store):
    store.upsert_items([item("i1"), item("i2")])
    first, _ = store.append_interaction(view("u1"))
    store.upsert_item(item("i1", "Renamed"))
    store.append_interactions([view("u2", "i2"), view("u1", "i2")])
    store.append_interaction(view("u3"))
    store.delete_user("u3")

    log = store.read_log(0)
    assert summary(log) == [
        (LogKind.ITEM, "i1"), (LogKind.ITEM, "i2"), (LogKind.EVENT, "u1"), (LogKind.ITEM, "i1"),
        (LogKind.EVENT, "u2"), (LogKind.EVENT, "u1"), (LogKind.FORGET_USER, "u3"),
    ]
    seqs = [e.seq for e in log]
    assert all(a < b for a, b in zip(seqs, seqs[1:]))
    assert seqs[-1] == store.last_seq()
    assert log[2].event == first and log[2].seq == first.seq
    assert [e.event.seq for e in log if e.event] == [e.seq for e in log if e.kind is LogKind.EVENT]
    assert {e.item for e in log if e.item} == {item("i1", "Renamed"), item("i2")}  # the current version
    assert log[-1] == LogEntry(log[-1].seq, LogKind.FORGET_USER, user_id="u3")


def test_read_log_pages_with_limit(store):
    store.upsert_items([item("i1"), item("i2")])
    for n in range(4):
        store.append_interaction(view(f"u{n}", f"i{n % 2 + 1}"))
        store.upsert_item(item(f"i{n % 2 + 1}", f"v{n}"))
    store.delete_user("u0")
    everything = store.read_log(0)
    assert len(everything) == 2 + 4 + 4 + 1 - 1  # u0's one event went with u0

    paged, position = [], 0
    while page := store.read_log(position, limit=3):
        assert len(page) <= 3
        paged += page
        position = page[-1].seq
    assert paged == everything
    assert store.read_log(everything[4].seq, limit=2) == everything[5:7]
    assert store.read_log(store.last_seq()) == []


def test_deleted_users_events_vanish_but_their_forget_entry_stays(store):
    store.upsert_item(item("i1"))
    gone = [store.append_interaction(view("u1"))[0] for _ in range(3)]
    kept, _ = store.append_interaction(view("u2"))
    assert store.delete_user("u1") is True

    log = store.read_log(0)
    assert summary(log) == [(LogKind.ITEM, "i1"), (LogKind.EVENT, "u2"), (LogKind.FORGET_USER, "u1")]
    assert log[1].event == kept
    assert log[2].seq > max(rec.seq for rec in gone + [kept])


def test_a_retry_or_an_unknown_user_takes_no_seq(store):
    store.upsert_item(item("i1"))
    store.append_interaction(view("u1", event_id="e-1"))
    before = store.last_seq()
    assert store.append_interaction(view("u1", event_id="e-1"))[1] is False
    assert store.delete_user("nobody") is False
    assert store.last_seq() == before
    assert store.append_interaction(view("u2"))[0].seq == before + 1


def test_seqs_are_not_reused_after_deleting_the_newest_rows_and_reopening(database_url):
    store = Store(database_url)
    store.upsert_item(item("i1"))
    newest, _ = store.append_interaction(view("u1"))
    store.delete_user("u1")
    forget = store.last_seq()
    store.close()

    reopened = Store(database_url)
    assert reopened.append_interaction(view("u2"))[0].seq == forget + 1 > newest.seq
    reopened.close()


def test_counter_starts_past_an_existing_databases_rows(database_url):
    store = Store(database_url)
    store.upsert_item(item("i1"))
    store.append_interactions([view("u1"), view("u2")])
    store.upsert_item(item("i1", "Renamed"))  # the highest seq is a change, not an event
    highest = store.last_seq()
    store.close()
    execute(database_url, "DELETE FROM log_position")

    store = Store(database_url)
    assert store.last_seq() == highest == 4
    assert store.append_interaction(view("u3"))[0].seq == highest + 1
    store.record_checkpoint(100, 0.0)  # a fit through seqs whose rows were deleted since
    store.close()
    execute(database_url, "DROP TABLE log_position")

    store = Store(database_url)
    assert store.last_seq() == 100
    assert store.append_interaction(view("u4"))[0].seq == 101
    store.close()


def test_a_database_from_before_the_log_keeps_its_events_and_goes_on(database_url):
    """interactions.seq was AUTOINCREMENT (SQLite) or BIGSERIAL (PostgreSQL); explicit seqs work there."""
    store = Store(database_url)
    store.upsert_item(item("i1"))
    store.add_users(["u1"])
    store.close()
    if database_url.startswith("sqlite"):
        seq_column, moment, t0 = "INTEGER PRIMARY KEY AUTOINCREMENT", "DATETIME", "2023-11-14 22:13:20"
    else:
        seq_column, moment, t0 = "BIGSERIAL PRIMARY KEY", "TIMESTAMP WITH TIME ZONE", "2023-11-14 22:13:20+00"
    execute(
        database_url,
        "DROP TABLE interactions", "DROP TABLE log_changes", "DROP TABLE log_position",
        f"""CREATE TABLE interactions (seq {seq_column}, event_id VARCHAR(64) UNIQUE,
            user_id VARCHAR(64) NOT NULL REFERENCES users (user_id), item_id VARCHAR(64) NOT NULL REFERENCES items (item_id),
            event_type VARCHAR(16) NOT NULL, rating FLOAT, occurred_at {moment} NOT NULL, recorded_at {moment} NOT NULL)""",
        *(f"INSERT INTO interactions (user_id, item_id, event_type, occurred_at, recorded_at) "
          f"VALUES ('u1', 'i1', 'view', '{t0}', '{t0}')" for _ in range(3)),
    )

    store = Store(database_url)
    assert store.last_seq() == 3
    assert store.append_interaction(view("u1"))[0].seq == 4
    store.upsert_item(item("i2"))
    log = store.read_log(0)
    assert [e.seq for e in log] == [1, 2, 3, 4, 5]
    assert log[0].event == InteractionRecord("u1", "i1", EventType.VIEW, T0, seq=1)
    store.close()


def test_concurrent_writers_commit_in_seq_order(database_url):
    """Writers of both kinds from threads; a tailer following read_log meanwhile must miss nothing,
    and whenever last_seq() says N, every seq up to N must already be readable."""
    store = Store(database_url)
    store.upsert_items([item(f"i{n}") for n in range(4)])
    writers, rounds = 4, 40
    done = threading.Event()
    tailed: list[LogEntry] = []
    holes: list[int] = []

    def write(worker: int) -> list[int]:
        seqs = []
        for n in range(rounds):
            if n % 4 == 3:
                store.upsert_item(item(f"i{n % 4}", f"w{worker}-{n}"))
            else:
                seqs.append(store.append_interaction(view(f"u{worker}", f"i{n % 4}"))[0].seq)
        return seqs

    def tail() -> None:
        position = 0
        while True:
            finished = done.is_set()
            last = store.last_seq()
            visible = {e.seq for e in store.read_log(0, limit=10_000)}
            holes.extend(seq for seq in range(1, last + 1) if seq not in visible)
            while page := store.read_log(position, limit=7):
                tailed.extend(page)
                position = page[-1].seq
            if finished:
                return

    tailer = threading.Thread(target=tail)
    tailer.start()
    results: list[list[int]] = [[] for _ in range(writers)]
    threads = [threading.Thread(target=lambda w=w: results[w].extend(write(w))) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    tailer.join()

    log = store.read_log(0, limit=10_000)
    assert [e.seq for e in log] == list(range(1, 4 + writers * rounds + 1))  # nothing missing, no gaps
    assert sorted(seq for seqs in results for seq in seqs) == [e.seq for e in log if e.kind is LogKind.EVENT]
    assert [(e.seq, e.kind) for e in tailed] == [(e.seq, e.kind) for e in log]
    assert holes == []
    store.close()


@postgresql_only
def test_wakeup_on_postgresql_returns_at_a_commit_or_after_the_timeout(store, database_url):
    store.upsert_item(item("i1"))
    wakeup = store.log_wakeup(poll_seconds=0.05)
    started = time.monotonic()
    assert wakeup.wait(0.3) is False
    assert 0.25 <= time.monotonic() - started < 1

    writer = Store(database_url)  # its own engine: another process, as far as the database can tell
    appending: list[float] = []
    timer = threading.Timer(0.2, lambda: (appending.append(time.monotonic()), writer.append_interaction(view("u1"))))
    timer.start()
    assert wakeup.wait(5) is True
    assert time.monotonic() - appending[0] < 1
    timer.join()

    writer.append_interaction(view("u2"))
    writer.upsert_item(item("i1", "Renamed"))
    time.sleep(0.1)
    assert wakeup.wait(1) is True
    assert wakeup.wait(0.2) is False  # both were taken by the one wake-up before
    wakeup.close()
    writer.close()


@postgresql_only
def test_wakeup_ignores_entries_already_applied(store, database_url):
    """A server is not woken to read back what it wrote and applied itself; a newer entry wakes it."""
    store.upsert_item(item("i1"))
    wakeup = store.log_wakeup(poll_seconds=0.05)
    store.append_interaction(view("u1"))
    applied = store.last_seq()
    assert wakeup.wait(0.3, applied_through=lambda: applied) is False
    store.append_interaction(view("u2"))
    assert wakeup.wait(1, applied_through=lambda: applied) is True
    wakeup.close()


@postgresql_only
def test_wakeup_survives_a_lost_connection(store, database_url):
    wakeup = store.log_wakeup(poll_seconds=0.05)
    execute(database_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND query LIKE 'LISTEN%%'")
    started = time.monotonic()
    assert wakeup.wait(0.5) is False
    assert time.monotonic() - started < 1.5
    assert wakeup.wait(1) is True  # reconnected: what was committed meanwhile went unannounced
    store.upsert_item(item("i1"))
    assert wakeup.wait(1) is True
    wakeup.close()


def test_wakeup_never_raises_when_the_database_is_unreachable():
    wakeup = LogWakeup("postgresql://postgres@127.0.0.1:1/test", poll_seconds=0.05)  # nothing listens on port 1
    started = time.monotonic()
    assert wakeup.wait(0.3) is False
    assert 0.25 <= time.monotonic() - started < 1.5
    wakeup.close()


def test_wakeup_on_sqlite_polls(sqlite_url):
    store = Store(sqlite_url)
    wakeup = store.log_wakeup(poll_seconds=0.05)
    started = time.monotonic()
    assert wakeup.wait(5) is False
    assert time.monotonic() - started < 1
    wakeup.close()
    store.close()


@postgresql_only
def test_wakeup_lets_other_greenlets_run_under_gevent(database_url):
    """The server runs monkey-patched: a wait must yield to the hub, not block the process."""
    script = f"""
from gevent import monkey; monkey.patch_all()
import time, gevent
from recommenders.records import EventType, InteractionRecord, ItemRecord
from storage import Store
store = Store({database_url!r})
store.upsert_item(ItemRecord("i1", "one"))
wakeup = store.log_wakeup(poll_seconds=0.05)
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
assert wakeup.wait(0.5) is False
assert len(ticks) >= 20, ticks  # 50 at 10 ms each, if the wait yielded
gevent.spawn_later(0.2, store.append_interaction, InteractionRecord("u1", "i1", EventType.VIEW, 1.0))
started = time.monotonic()
assert wakeup.wait(5) is True and time.monotonic() - started < 1
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
