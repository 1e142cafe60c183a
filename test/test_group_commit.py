"""Group commit: writers at the same moment share a transaction, and the model state after a group
is the state after the same events one by one (so processes that group differently still agree)."""
from __future__ import annotations

import threading
import time

import numpy as np

from config import load_settings
from recommenders.artifacts import load_engine, newest_artifact
from recommenders.records import EventType, LogKind
from service import RecommendationService
from service.group_commit import GroupCommitter


def test_concurrent_writers_share_commits_and_each_gets_its_own_answer(database_url, monkeypatch):
    service = RecommendationService.create(load_settings(database_url=database_url))
    groups: list[int] = []
    write = service._writes._write
    monkeypatch.setattr(service._writes, "_write", lambda records: groups.append(len(records)) or write(records))
    slow_commit = service.store.append_events

    def append_slowly(records):  # a commit that takes a while, as an fsync does: writers pile up behind it
        time.sleep(0.02)
        return slow_commit(records)

    monkeypatch.setattr(service.store, "append_events", append_slowly)
    answers: dict[int, tuple] = {}

    def writer(n: int) -> None:
        outcome = service.record_interaction(f"grouped-{n % 40 % 7}", "iphone" if n % 2 else "ipad", EventType.VIEW,
                                             event_id=f"group-{n % 40}")  # every event twice, as a retry
        answers[n] = (outcome.interaction.seq, outcome.duplicate)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(80)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(groups) == 80 and max(groups) > 1, groups  # fewer commits than writers
    by_event_id: dict[int, set] = {}
    for n, (seq, duplicate) in answers.items():
        by_event_id.setdefault(n % 40, set()).add((seq, duplicate))
    assert all(len({seq for seq, _ in pairs}) == 1 and {d for _, d in pairs} == {False, True}
               for pairs in by_event_id.values())  # one stored event per id; the other writer hears "duplicate"
    stored = [event for event in service.store.iter_interactions() if event.user_id.startswith("grouped-")]
    assert len(stored) == 40
    assert service.engine.position == max(event.seq for event in stored)  # every group applied
    service.close()


def test_a_writer_alone_commits_at_once():
    groups = []
    committer = GroupCommitter(lambda records: groups.append(len(records)) or [(record, True) for record in records])
    record = object()
    assert committer.submit(record) == (record, True)
    assert groups == [1]


def test_applying_a_group_equals_applying_its_events_one_by_one(sqlite_url):
    service = RecommendationService.create(load_settings(database_url=sqlite_url))
    items = [item.item_id for item in service.store.all_items()][:40]
    for n in range(120):
        service.record_interaction(f"batch-{n % 9}", items[(n * 7) % len(items)],
                                   (EventType.VIEW, EventType.PURCHASE, EventType.RATING)[n % 3],
                                   rating=4.0 if n % 3 == 2 else None)
    service.delete_user("batch-3")
    artifact = newest_artifact(service.settings.model_path)
    entries = service.store.read_log(artifact.fitted_through_seq, 10_000)
    assert {entry.kind for entry in entries} == {LogKind.EVENT, LogKind.FORGET_USER}

    one_by_one, grouped = load_engine(artifact), load_engine(artifact)
    for entry in entries:
        one_by_one.apply([entry])
    grouped.apply(entries)
    for user in [f"batch-{n}" for n in range(9)] + ["alice", "bob"]:
        for case in ("hybrid", "collaborative", "behavior_based"):
            assert [r.as_dict() for r in grouped.recommend(user, 10, case)] == \
                   [r.as_dict() for r in one_by_one.recommend(user, 10, case)], (user, case)
    np.testing.assert_array_equal(grouped.components["als"].user_factors, one_by_one.components["als"].user_factors)
    service.close()




def test_a_committed_event_is_acknowledged_even_if_the_store_fails_before_it_is_applied(sqlite_url, monkeypatch):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from recommenders.records import InteractionRecord

    service = RecommendationService.create(load_settings(database_url=sqlite_url))
    # Another process writes first, so this process must read the log before it can apply its own event...
    service.store.append_interaction(InteractionRecord("elsewhere", "ipad", EventType.VIEW, time.time()))

    def store_gone(*args, **kwargs):  # ...and right then the database goes away
        raise OperationalError("SELECT ...", {}, sqlite3.OperationalError("unable to open database file"))

    monkeypatch.setattr(service.store, "read_log", store_gone)
    outcome = service.record_interaction("acknowledged", "iphone", EventType.PURCHASE)
    assert not outcome.duplicate and outcome.interaction.seq > service.engine.position  # committed, not applied

    monkeypatch.undo()
    service.catch_up()  # what the log follower does once the store answers
    assert service.engine.position == outcome.interaction.seq
    assert service.engine.data.users.get("acknowledged") is not None
    service.close()
