"""Every registered recommender keeps one contract (like scikit-learn's check_estimator).

`check_recommender` fits a component on a small data set the test makes itself and checks:
score shapes for a batch, batch == one-by-one, scores at a candidate set == the full rows there, fold-in after an event changes the user's scores,
forgetting a user makes them score like a newcomer, and save -> load gives identical scores.
It runs on every registered component, and on a toy one registered here: registering it is the
only change needed for the engine to fit, fold, save and load it and for the API to serve it.
"""
from __future__ import annotations

import numpy as np
import pytest

from recommenders import registry
from recommenders.artifacts import load_engine, write_artifact
from recommenders.base import Recommender
from recommenders.engine import Engine
from recommenders.interaction_data import EventWeighting, InteractionData
from recommenders.records import EventType, InteractionRecord, ItemRecord
from web import create_app

T0 = 1_700_000_000.0
ITEMS = [ItemRecord(f"{kind}{n}", f"{kind} {n}", kind, f"brand{n % 3}", f"a {kind} with words {n % 4}", (f"tag{n % 2}",))
         for kind in ("fruit", "tool", "book") for n in range(8)]


def _data() -> InteractionData:
    """Three tastes, a few users each, ratings and behaviour events mixed."""
    events = []
    for u in range(12):
        kind = ("fruit", "tool", "book")[u % 3]
        for n in range(u % 4, u % 4 + 4):
            event_type = (EventType.RATING, EventType.VIEW, EventType.PURCHASE)[n % 3]
            events.append(InteractionRecord(f"user{u}", f"{kind}{n}", event_type, T0 + u * 100 + n,
                                            rating=4.0 + n % 2 if event_type == EventType.RATING else None))
    return InteractionData(ITEMS, [f"user{u}" for u in range(12)], events, EventWeighting())


def check_recommender(make: callable, tmp_path) -> None:
    data = _data()
    component: Recommender = make().fit(data)
    users = np.array([0, 3, 7])
    scores = component.score(data, users)
    assert scores.shape == (3, data.n_items)
    assert np.all(np.isfinite(scores)) and np.all(scores >= 0)
    one_by_one = np.vstack([component.score(data, np.array([user])) for user in users])
    np.testing.assert_allclose(scores, one_by_one, atol=1e-5)  # float32 models: BLAS sums in another order

    # a candidate set's scores (large catalogs score only those) are the full rows' at those items
    some = np.array([17, 2, 9, 0, 23])
    np.testing.assert_allclose(component.score_items(data, users, some), scores[:, some], atol=1e-5)
    np.testing.assert_allclose(component.similar_items_among(data, 4, some),
                               component.similar_items(data, np.array([4]))[0, some], atol=1e-9)

    # fold-in: a rating of an item others liked but the user never touched changes their scores
    user, before = 3, component.score(data, np.array([3]))[0]
    event = InteractionRecord("user3", "tool2", EventType.RATING, T0 + 10_000, rating=5.0)
    data.observe(event)
    component.partial_fit_users(data, np.array([user]))
    after = component.score(data, np.array([user]))[0]
    assert not np.array_equal(before, after), f"{component.name}: an event did not change the user's scores"

    # forget: the user now scores exactly like a newcomer
    forgotten = data.forget_user("user3")
    component.forget_users(data, np.array([forgotten]))
    newcomer = data.add_user("newcomer")
    component.partial_fit_users(data, np.array([newcomer]))
    np.testing.assert_allclose(component.score(data, np.array([forgotten]))[0],
                               component.score(data, np.array([newcomer]))[0], atol=1e-9)

    # save -> load: identical scores for every user
    component.save(tmp_path / component.name)
    loaded = type(component).load(tmp_path / component.name)
    everyone = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score(data, everyone), component.score(data, everyone))
    items = np.arange(data.n_items)
    np.testing.assert_array_equal(loaded.similar_items(data, items), component.similar_items(data, items))


@pytest.mark.parametrize("name", sorted(registry.registrations()))
def test_every_registered_recommender_keeps_the_contract(name, tmp_path):
    check_recommender(registry.registrations()[name].factory, tmp_path)


class RecentItemsRecommender(Recommender):
    """A toy: scores items by how recently the user touched their category (learns the categories)."""

    name = "toy_recent"

    def fit(self, data: InteractionData) -> "RecentItemsRecommender":
        self.categories = data.item_category.copy()
        return self

    def state(self) -> dict:
        return {"categories": self.categories}

    def restore(self, state: dict) -> None:
        self.categories = state["categories"]

    def score(self, data: InteractionData, users: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(users), data.n_items))
        for row, user in enumerate(users.tolist()):  # toy: a loop is fine here
            recent = data.recent.of(user)
            for rank, item in enumerate(recent.items.tolist()):
                scores[row, :len(self.categories)] += (self.categories == self.categories[item]) * (rank + 1)
        return scores


TOY = registry.Registration("toy_recent", RecentItemsRecommender, case="toy_recent")


def test_a_toy_recommender_needs_only_its_registration(tmp_path, sqlite_url):
    with registry.registered(TOY):
        check_recommender(TOY.factory, tmp_path / "contract")
        engine = Engine.build(ITEMS, [], [])
        assert "toy_recent" in engine.components and "toy_recent" in registry.cases()
        artifact = write_artifact(engine, tmp_path / "models")
        assert (artifact.path / "components" / "toy_recent" / "state.npz").is_file()
        assert "toy_recent" in load_engine(artifact).components

        app = create_app(_settings(sqlite_url, tmp_path / "app-models"))
        client = app.test_client()
        client.post("/interactions", json={"user_id": "alice", "item_id": "kitchen_knife", "rating": 5})
        answer = client.get("/recommend?user_id=alice&case=toy_recent&count=3")
        assert answer.status_code == 200, answer.get_json()
        assert {r["strategy"] for r in answer.get_json()["recommendations"]} == {"toy_recent"}
    assert "toy_recent" not in registry.cases()


def _settings(database_url: str, model_dir):
    from config import load_settings

    return load_settings(database_url=database_url, model_dir=model_dir)


def test_an_engine_loaded_from_its_artifact_gives_identical_answers(tmp_path):
    data = _data()
    engine = Engine.build(ITEMS, data.users.ids_of(range(data.n_users)),
                          [InteractionRecord(f"user{u}", f"fruit{u % 8}", EventType.PURCHASE, T0 + u) for u in range(12)])
    artifact = write_artifact(engine, tmp_path)
    loaded = load_engine(artifact)
    for case in registry.cases():
        assert [r.as_dict() for r in loaded.recommend("user1", 10, case)] == \
               [r.as_dict() for r in engine.recommend("user1", 10, case)], case
