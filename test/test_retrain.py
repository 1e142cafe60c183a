"""Retraining while events arrive: the new engine is swapped in with every event, none twice."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests

from config import load_settings
from live_server import start_server
from recommenders.records import EventType
from recommenders.artifacts import newest_artifact
from service import RecommendationService, loaded_engine

USERS = [f"retrain-user-{n}" for n in range(8)]


def slow_fit(fit):
    """Widen the window in which events arrive between the retrain's read of the log and its swap."""
    engine = fit()
    time.sleep(0.03)
    return engine


def test_events_during_retrains_are_all_in_the_swapped_engine(database_url):
    settings = load_settings(database_url=database_url)
    service = RecommendationService.create(settings)
    item_ids = [item.item_id for item in service.store.all_items()]
    stop, retrains = threading.Event(), []

    def keep_retraining() -> None:
        while not stop.is_set():
            retrains.append(service.retrain(slow_fit))

    retrainer = threading.Thread(target=keep_retraining)
    retrainer.start()
    try:
        n = 0
        while n < 240 or len(retrains) < 3:  # events keep arriving until three retrains have swapped
            service.record_interaction(USERS[n % len(USERS)], item_ids[(n * 7) % len(item_ids)], EventType.VIEW)
            n += 1
            assert n < 20_000, f"only {len(retrains)} retrains finished"
    finally:
        stop.set()
        retrainer.join()

    assert len(retrains) >= 3 and any(r["swapped"] and r["replayed_through"] for r in retrains), retrains
    engine = service.engine
    assert engine.stats()["interactions"] == service.store.counts()["interactions"]
    for user in USERS:  # each user's events, exactly as stored, are in the live engine
        stored = {event.item_id for event in service.store.user_interactions(user)}
        seen = set(engine.data.items.ids_of(engine.data.seen_items(engine.data.users.get(user))))
        assert seen == stored
    # ...and the live state is the one a restart rebuilds from the newest artifact and the log.
    restarted = loaded_engine(service.store, settings, newest_artifact(settings.model_path))
    for user in USERS:
        assert [r.item for r in restarted.recommend(user, 10)] == [r.item for r in engine.recommend(user, 10)]
    service.close()


@pytest.mark.slow
def test_the_server_retrains_on_schedule_while_serving_events(tmp_path):
    server = start_server(tmp_path, RETRAIN_INTERVAL_SECONDS="1")
    try:
        session = requests.Session()
        deadline = time.monotonic() + 3.5
        posted = 0
        while time.monotonic() < deadline:
            answer = session.post(f"{server.url}/event", json={"user_id": USERS[posted % len(USERS)],
                                                              "product_id": "coffee_maker", "event_type": "view"})
            assert answer.status_code == 201
            posted += 1
        stats = session.get(f"{server.url}/stats").json()
        assert stats["jobs"]["retrain"]["runs"] >= 2 and stats["jobs"]["retrain"]["error"] is None
        assert stats["engine"]["interactions"] == stats["store"]["interactions"]
        assert np.isfinite(stats["jobs"]["retrain"]["next_run"])
    finally:
        server.stop()


def _damaged_copy(artifact_path, version_ms: str):
    """A copy of an artifact under a newer name, with its state cut short (a disk error, a hand copy)."""
    import shutil

    copy = artifact_path.with_name(f"{artifact_path.name.rsplit('-', 1)[0]}-{version_ms}")
    shutil.copytree(artifact_path, copy)
    (copy / "state.npz").write_bytes((copy / "state.npz").read_bytes()[:100])
    return copy


def test_an_unreadable_newest_artifact_is_skipped_at_start_and_never_swapped_in(sqlite_url):
    settings = load_settings(database_url=sqlite_url)
    first = RecommendationService.create(settings)
    good = first.model_version
    first.close()
    damaged = _damaged_copy(newest_artifact(settings.model_path).path, "9999999999998")

    service = RecommendationService.create(settings)  # starts from the newest artifact that reads
    assert service.model_version == good
    later = _damaged_copy(damaged.with_name(good), "9999999999999")
    assert service.check_for_new_model() == {"version": good, "swapped": False, "unreadable": later.name}
    assert service.check_for_new_model() == {"version": good, "swapped": False}  # not tried again
    assert service.recommendations("alice", 3).recommendations  # still serving
    service.close()
