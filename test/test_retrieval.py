"""ANN retrieval (recommenders/retrieval.py): what a catalog too large to score whole is served from.

Proves, on a planted shop the tests make (taste groups, power-law popularity): the factor index finds
the exact top 100 by ALS score; lists served from retrieved candidates (recommendations, similar items, the push) are the exact lists; a user's
events change their candidates (fold-in queries the index); the indexes ship in the artifact; and a
product posted to a live server with the index on is recommendable and similar to its kind within a
second (it enters the content index at once).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from config.settings import load_settings
from live_server import start_server
from recommenders.artifacts import UnreadableArtifactError, load_engine, newest_artifact, write_artifact
from recommenders.engine import Engine
from recommenders.records import EventType, InteractionRecord, ItemRecord
from recommenders.retrieval import FACTORS_FILE
from web import create_app

GROUPS, ITEMS, USERS = 20, 1200, 600
MOKA_POT = {"item_id": "moka_pot", "name": "Moka Pot", "category": "kitchen", "brand": "Bialetti",
            "description": "Stovetop espresso maker", "tags": ["coffee"], "price": 39.9}


def _shop() -> tuple[list[ItemRecord], list[str], list[InteractionRecord]]:
    """Users who each lean to two taste groups; items in a group by power-law popularity."""
    rng = np.random.default_rng(7)
    items = [ItemRecord(f"i{i}", f"thing {i} of kind{i % GROUPS}", f"cat{i % GROUPS}", f"brand{i % 7}",
                        f"a kind{i % GROUPS} item with word{i % 97}", (f"tag{i % GROUPS}",), float(1 + i % 50))
             for i in range(ITEMS)]
    weights = 1.0 / (1 + np.arange(ITEMS // GROUPS)) ** 0.8
    weights /= weights.sum()
    events = []
    for user in range(USERS):
        taste = rng.integers(GROUPS, size=2)
        for _ in range(int(rng.integers(5, 30))):
            group = taste[0] if rng.random() < 0.7 else taste[1]
            item = group + GROUPS * int(rng.choice(len(weights), p=weights))
            kind = EventType.VIEW if rng.random() < 0.6 else EventType.PURCHASE
            events.append(InteractionRecord(f"u{user}", f"i{item}", kind, 1.7e9 + len(events)))
    return items, [f"u{user}" for user in range(USERS)], events


@pytest.fixture(scope="module")
def engines() -> tuple[Engine, Engine]:
    """The same shop fitted twice: scoring every item, and from ANN candidates."""
    items, users, events = _shop()
    return Engine.build(items, users, events), Engine.build(items, users, events, ann_min_items=1)


def test_the_factor_index_finds_the_exact_top_100(engines):
    _, ann = engines
    als = ann.components["als"]
    recalls = []
    for user in range(0, USERS, 10):
        vector = als.user_vectors(ann.data, np.array([user]))[0]
        exact = np.argsort(-(als.item_factors @ vector), kind="stable")[:100]
        recalls.append(np.isin(exact, ann.retrieval.factors.nearest(vector, 100)).mean())
    assert np.mean(recalls) >= 0.95


def test_lists_from_retrieved_candidates_are_the_exact_lists(engines):
    exact, ann = engines
    overlaps = [len({r.item for r in exact.recommend(f"u{user}", 10)} & {r.item for r in ann.recommend(f"u{user}", 10)})
                / 10 for user in range(0, USERS, 10)]
    assert np.mean(overlaps) >= 0.95
    similar = [len({r.item for r in exact.similar_items(f"i{item}", 10)} & {r.item for r in ann.similar_items(f"i{item}", 10)})
               / 10 for item in range(0, ITEMS, 60)]
    assert np.mean(similar) >= 0.9
    assert [r.item for r in ann.recommend("a-newcomer", 5)] == [r.item for r in exact.recommend("a-newcomer", 5)]
    # a product posted now has text only (no factors or neighbours yet): its text must fill a list of 100
    ann.add_item(ItemRecord("posted", "thing posted of kind1", "cat1", "brand1", "a kind1 item with word1", ("tag1",), 9.0))
    assert len(ann.retrieval.similar_candidates(ann.data, ann.data.items.get("posted"), 100)) > 100
    pushed = [len({r.item for r in exact.realtime_recommend(f"u{user}", 10, f"i{user}")}
                  & {r.item for r in ann.realtime_recommend(f"u{user}", 10, f"i{user}")}) / 10 for user in range(0, USERS, 20)]
    assert np.mean(pushed) >= 0.9


def test_a_users_events_change_their_candidates(engines):
    _, ann = engines
    user = ann.data.users.get("u3")
    before = ann.retrieval.candidates(ann.data, user)
    liked = ann.data.item_category[ann.data.seen_items(user)]
    other = next(group for group in range(GROUPS) if group not in set(liked.tolist()))
    for n in range(6):  # the other group's most popular items
        ann.observe(InteractionRecord("u3", f"i{other + GROUPS * n}", EventType.PURCHASE, 1.8e9 + n))
    after = ann.retrieval.candidates(ann.data, user)
    arrived = np.setdiff1d(after, before)
    assert arrived.size >= 20
    assert (ann.data.item_category[arrived] == other).mean() > 0.5  # from the group the user just turned to


def test_the_indexes_ship_in_the_artifact(engines, tmp_path):
    _, ann = engines
    artifact = write_artifact(ann, tmp_path / "models")
    assert artifact.manifest["retrieval"] is True
    loaded = load_engine(artifact, ann_min_items=1)
    for user in ("u1", "u2", "u5"):
        assert [r.item for r in loaded.recommend(user, 10)] == [r.item for r in ann.recommend(user, 10)]
    assert load_engine(artifact, ann_min_items=10 * ITEMS).retrieval is None  # under the threshold: every item scored
    (artifact.path / "retrieval" / FACTORS_FILE).write_bytes(b"not an index")
    with pytest.raises(UnreadableArtifactError):
        load_engine(artifact, ann_min_items=1)


def test_a_new_item_is_retrieved_at_once(tmp_path):
    """In one process: the posted item is among coffee_maker's similar items and a coffee lover's list
    (it has no factors or neighbours yet: only the content index can bring it, so this fails without
    the incremental add)."""
    client = create_app(load_settings(database_url=f"sqlite:///{tmp_path / 'store.db'}", redis_url=None,
                                      ann_min_items=1)).test_client()
    assert client.post("/items", json=MOKA_POT).status_code == 201
    assert client.post("/interactions", json={"user_id": "zed", "item_id": "coffee_maker", "rating": 5}).status_code == 201
    similar = [r["item"] for r in client.get("/similar/coffee_maker?count=100").json["similar"]]
    assert "moka_pot" in similar
    assert [r["item"] for r in client.get("/similar/moka_pot?count=3").json["similar"]][0] == "coffee_maker"
    assert "moka_pot" in [r["item"] for r in client.get("/recommendations/zed?count=100").json["recommendations"]]


def test_a_live_server_with_the_index_finds_a_posted_item_within_a_second(tmp_path):
    server = start_server(tmp_path, ANN_MIN_ITEMS="1", RETRAIN_INTERVAL_SECONDS="0")
    try:
        assert newest_artifact(tmp_path / "models").manifest["retrieval"] is True  # trained at start, with indexes
        posted = time.monotonic()
        assert requests.post(f"{server.url}/items", json=MOKA_POT, timeout=10).status_code == 201
        found = None
        while time.monotonic() - posted < 5:
            similar = requests.get(f"{server.url}/similar/coffee_maker?count=100", timeout=10).json()["similar"]
            if "moka_pot" in [r["item"] for r in similar]:
                found = time.monotonic() - posted
                break
            time.sleep(0.02)
        assert found is not None and found <= 1.0, found
    finally:
        server.stop()
