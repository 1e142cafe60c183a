"""Experiments through the Flask test client: what POST /experiments refuses (422, 409, 401, 404), that
every served list carries a fresh recommendation_id and, in an experiment, the variant the SHA-256
split gives (whose recommender then serves it, cache included), that /recommend with its own case stays
outside, that events are attributed by recommendation_id and by the window (and not outside it),
that `value` is validated and stored, and that EXPLORATION_WEIGHT gives slots to the least shown items.
"""
from __future__ import annotations

import time

import pytest

from config import load_settings
from experiments.allocation import boundaries, pick, user_position
from service import RecommendationService
from web import create_app
from web.experiment_responses import ExperimentResult
from web.extensions import socketio

WINDOW = 60.0
TWO_ARMS = {"name": "popular-vs-hybrid", "variants": [
    {"name": "control", "share": 0.5, "case": "popular"},
    {"name": "hybrid", "share": 0.5, "case": "hybrid", "method": "adaptive"}]}


def arms(**changes) -> dict:
    return {**TWO_ARMS, **changes}


def variant(**changes) -> dict:
    return {"name": "v", "share": 0.5, **changes}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    settings = load_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('experiments') / 'store.db'}",
                             redis_url=None, rate_limit="", attribution_window_seconds=WINDOW)
    shared = RecommendationService.create(settings)
    yield shared
    shared.close()


@pytest.fixture
def client(service):
    return create_app(service.settings, service).test_client()


@pytest.fixture
def experiment(client):
    """A running two-arm experiment, stopped after the test."""
    answer = client.post("/experiments", json=TWO_ARMS)
    assert answer.status_code == 201, answer.get_json()
    yield answer.get_json()
    client.post(f"/experiments/{answer.get_json()['experiment_id']}/stop")


INVALID = {
    "one variant": arms(variants=[variant(share=1.0)]),
    "shares not summing to 1": arms(variants=[variant(name="a"), variant(name="b", share=0.4)]),
    "duplicate names": arms(variants=[variant(), variant()]),
    "unknown case": arms(variants=[variant(name="a"), variant(name="b", case="magic")]),
    "method with a non-hybrid case": arms(variants=[variant(name="a"), variant(name="b", case="popular",
                                                                               method="adaptive")]),
    "fixed without a share": arms(variants=[variant(name="a"), {"name": "b"}]),
    "share 0": arms(variants=[variant(name="a", share=1.0), variant(name="b", share=0)]),
    "share over 1": arms(variants=[variant(name="a", share=1.5), variant(name="b", share=-0.5)]),
    "share as text": arms(variants=[variant(name="a", share="0.5"), variant(name="b")]),
    "exploration over 1": arms(variants=[variant(name="a", exploration=1.5), variant(name="b")]),
    "control not a variant": arms(control="nobody"),
    "unknown allocation": arms(allocation="random"),
    "unknown reward": arms(reward="likes"),
    "empty name": arms(name=""),
    "unknown field": arms(owner="me"),
    "variant name with a space": arms(variants=[variant(name="a b"), variant(name="b")]),
    "some thompson shares": arms(allocation="thompson", variants=[variant(name="a"), {"name": "b"}]),
    "hybrid weights with another case": arms(variants=[variant(name="a"), variant(
        name="b", case="popular", hybrid_weights={"new": 1, "experienced": 1, "heavy": 1})]),
    "hybrid weights with the adaptive method": arms(variants=[variant(name="a"), variant(
        name="b", method="adaptive", hybrid_weights={"new": 1, "experienced": 1, "heavy": 1})]),
    "a hybrid weight over 1": arms(variants=[variant(name="a"), variant(
        name="b", hybrid_weights={"new": 2, "experienced": 1, "heavy": 1})]),
    "a hybrid weight missing": arms(variants=[variant(name="a"), variant(name="b", hybrid_weights={"new": 1})]),
    "an unknown collaborative part": arms(variants=[variant(name="a"), variant(
        name="b", collaborative_weights={"magic": 1})]),
    "collaborative weights all 0": arms(variants=[variant(name="a"), variant(
        name="b", collaborative_weights={"user_based": 0, "ease": 0, "als": 0})]),
    "collaborative weights with the popular case": arms(variants=[variant(name="a"), variant(
        name="b", case="popular", collaborative_weights={"ease": 1})]),
    "a negative collaborative weight": arms(variants=[variant(name="a"), variant(
        name="b", collaborative_weights={"ease": -1})]),
}


@pytest.mark.parametrize("body", INVALID.values(), ids=INVALID.keys())
def test_invalid_experiments_are_refused(client, body):
    answer = client.post("/experiments", json=body)
    assert answer.status_code == 422 and answer.get_json()["error"] == "validation_error", answer.get_json()
    assert client.get("/experiments").get_json()["experiments"] == [] or all(
        e["status"] == "stopped" for e in client.get("/experiments").get_json()["experiments"])


def test_one_experiment_runs_at_a_time_and_unknown_ones_are_404(client, experiment):
    again = client.post("/experiments", json=arms(name="another"))
    assert again.status_code == 409 and again.get_json()["error"] == "conflict"
    assert client.get("/experiments/exp-nothing").status_code == 404
    assert client.post("/experiments/exp-nothing/stop").status_code == 404
    assert client.get("/experiments/a%20b").status_code == 422


def test_writes_need_the_api_key_when_one_is_set(service):
    client = create_app(service.settings.model_copy(update={"api_key": "secret"}), service).test_client()
    assert client.post("/experiments", json=TWO_ARMS).status_code == 401
    assert client.post("/experiments/exp-x/stop").status_code == 401
    assert client.get("/experiments").status_code == 200


def expected_variant(experiment: dict, user_id: str) -> str:
    bounds = boundaries([v["share"] for v in experiment["variants"]])
    return experiment["variants"][pick(user_position(experiment["experiment_id"], user_id), bounds)]["name"]


def test_users_get_their_variants_list_and_every_answer_a_new_id(client, experiment):
    seen_ids = set()
    for n in range(40):
        user = f"split_{n}"
        for _ in range(2):  # the second answer comes from the cache: still the variant's list
            answer = client.get(f"/recommendations/{user}?count=5").get_json()
            assert answer["experiment_id"] == experiment["experiment_id"]
            assert answer["variant"] == expected_variant(experiment, user)
            assert answer["recommendation_id"] not in seen_ids
            seen_ids.add(answer["recommendation_id"])
    alice = expected_variant(experiment, "alice")
    listed = client.get("/recommendations/alice?count=5").get_json()["recommendations"]
    popular = client.get("/recommend?user_id=alice&case=popular&count=5").get_json()["recommendations"]
    assert (listed == popular) == (alice == "control")


def test_recommend_naming_a_case_is_outside_the_experiment(client, experiment):
    named = client.get("/recommend?user_id=alice&case=hybrid").get_json()
    assert "experiment_id" not in named and "variant" not in named and named["recommendation_id"]
    unnamed = client.get("/recommend?user_id=alice").get_json()
    assert unnamed["variant"] == expected_variant(experiment, "alice")
    assert unnamed["case"] == ("popular" if unnamed["variant"] == "control" else "hybrid")


def test_pushes_and_event_answers_carry_the_variant(client, experiment):
    subscriber = socketio.test_client(client.application)
    subscriber.emit("register_user", {"user_id": "carol"})
    registered = [p["args"][0] for p in subscriber.get_received() if p["name"] == "registered"][0]
    answer = client.post("/event", json={"user_id": "carol", "product_id": "ipad", "event_type": "view"}).get_json()
    pushed = [p["args"][0] for p in subscriber.get_received() if p["name"] == "realtime_recommendation"][0]
    subscriber.disconnect()
    variant_name = expected_variant(experiment, "carol")
    for payload in (registered, answer, pushed):
        assert payload["variant"] == variant_name and payload["experiment_id"] == experiment["experiment_id"]
    assert len({registered["recommendation_id"], answer["recommendation_id"], pushed["recommendation_id"]}) == 3


def result_of(client, experiment: dict) -> dict:
    """The result's variants by name, the answer checked against its documented (closed) model."""
    answer = client.get(f"/experiments/{experiment['experiment_id']}")
    assert answer.status_code == 200
    ExperimentResult.model_validate(answer.get_json())
    return {variant["name"]: variant for variant in answer.get_json()["variants"]}


def test_events_are_attributed_by_id_and_by_window(client, experiment):
    users = {name: next(f"{name}_{n}" for n in range(1000) if expected_variant(experiment, f"{name}_{n}") == "hybrid")
             for name in ("by_id", "by_window", "too_late", "not_shown", "buyer")}
    lists = {name: client.get(f"/recommendations/{user}?count=5").get_json() for name, user in users.items()}
    shown = {name: answer["recommendations"][2]["item"] for name, answer in lists.items()}
    now = time.time()

    def interact(name: str, item: str, **fields) -> None:
        body = {"user_id": users[name], "item_id": item, "event_type": "view", **fields}
        answer = client.post("/interactions", json=body)
        assert answer.status_code == 201, answer.get_json()

    interact("by_id", shown["by_id"], recommendation_id=lists["by_id"]["recommendation_id"],
             timestamp=now + 10 * WINDOW)  # an id attributes whenever the event happens
    interact("by_window", shown["by_window"], timestamp=now + WINDOW / 2)
    interact("too_late", shown["too_late"], timestamp=now + 2 * WINDOW)
    catalog = [item["item_id"] for item in client.get("/items?limit=1000").get_json()["items"]]
    unshown = next(i for i in catalog if i not in {r["item"] for r in lists["not_shown"]["recommendations"]})
    interact("not_shown", unshown, recommendation_id=lists["not_shown"]["recommendation_id"])
    interact("buyer", shown["buyer"], event_type="purchase", value=25.0, timestamp=now + 1)
    interact("buyer", shown["buyer"], event_type="add_to_cart", value=99.0, timestamp=now + 2)  # not revenue

    hybrid = result_of(client, experiment)["hybrid"]
    assert (hybrid["impressions"], hybrid["users"]) == (5, 5)
    assert hybrid["clicks"] == 3  # by_id, by_window, buyer
    assert (hybrid["conversions"], hybrid["revenue"]) == (1, 25.0)
    assert hybrid["revenue_per_impression"] == 5.0 and hybrid["ctr"] == pytest.approx(3 / 5)
    assert sum(bucket["impressions"] for bucket in hybrid["traffic"]) == 5


def test_value_and_recommendation_id_are_validated_and_stored(client):
    event = {"user_id": "valued", "product_id": "ipad", "event_type": "purchase"}
    for bad in ({"value": -1}, {"value": "3"}, {"value": True}, {"value": 1e13},
                {"event_type": "view", "value": 3.0}, {"recommendation_id": "x" * 65},
                {"recommendation_id": "a b"}, {"recommendation_id": ""}):
        answer = client.post("/event", json={**event, **bad})
        assert answer.status_code == 422, bad
    nan = client.post("/event", data='{"user_id": "valued", "product_id": "ipad", "event_type": "purchase", '
                                     '"value": NaN}', content_type="application/json")
    assert nan.status_code == 422
    rated = client.post("/interactions", json={"user_id": "valued", "item_id": "ipad", "rating": 4, "value": 2.0})
    assert rated.status_code == 422
    stored = client.post("/event", json={**event, "value": 19.5, "recommendation_id": "never-served",
                                         "event_id": "valued-1"})
    assert stored.status_code == 201  # an unknown recommendation_id is no error
    assert client.post("/event", json={**event, "value": 19.5, "recommendation_id": "never-served",
                                       "event_id": "valued-1"}).status_code == 201  # the same event again
    assert client.post("/event", json={**event, "value": 20.0, "recommendation_id": "never-served",
                                       "event_id": "valued-1"}).status_code == 409
    service = client.application.extensions["recommendation_service"]
    latest = service.store.user_interactions("valued", limit=1)[0]
    assert (latest.value, latest.recommendation_id) == (19.5, "never-served")


def test_stopping_ends_the_split(client):
    created = client.post("/experiments", json=TWO_ARMS).get_json()
    stopped = client.post(f"/experiments/{created['experiment_id']}/stop")
    assert stopped.status_code == 200 and stopped.get_json()["status"] == "stopped"
    assert client.post(f"/experiments/{created['experiment_id']}/stop").get_json()["status"] == "stopped"
    answer = client.get("/recommendations/alice").get_json()
    assert "variant" not in answer and "experiment_id" not in answer
    listed = client.get("/experiments").get_json()["experiments"]
    assert listed[0]["experiment_id"] == created["experiment_id"] and listed[0]["stopped_at"] is not None


def test_exploration_weight_gives_slots_to_the_least_shown_items(tmp_path):
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'store.db'}", redis_url=None, rate_limit="",
                             exploration_weight=0.2)
    service = RecommendationService.create(settings)
    try:
        client = create_app(settings, service).test_client()
        answer = client.get("/recommendations/alice?count=10").get_json()["recommendations"]
        explored = [n for n, r in enumerate(answer) if r["strategy"] == "exploration"]
        assert explored == [4, 9]
        never_shown = set(service.experiments.store.least_shown_items(1000)[:200])
        assert {answer[n]["item"] for n in explored} <= never_shown
    finally:
        service.close()


def test_explored_items_obey_the_filters_and_the_standing_rules(tmp_path):
    """Exploration fills its slots only with what a ranked list could show: of the least shown items,
    banned ones, unavailable ones, those outside the request's filter and those over a cap are passed over."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'store.db'}", redis_url=None, rate_limit="",
                             exploration_weight=0.5)
    service = RecommendationService.create(settings)
    try:
        client = create_app(settings, service).test_client()
        least_shown = service.experiments.store.least_shown_items(12)
        banned, unavailable = least_shown[:3], least_shown[3:6]
        excluded = client.get(f"/items/{least_shown[6]}").get_json()["category"]
        assert client.post("/rules", json={"type": "ban", "items": banned}).status_code == 201
        assert client.post("/rules", json={"type": "cap", "field": "brand", "limit": 1}).status_code == 201
        for item_id in unavailable:
            assert client.patch(f"/items/{item_id}", json={"available": False}).status_code == 200
        service.experiments.refresh(force_bandit=True)
        answer = client.get(f"/recommendations/alice?count=10&exclude_categories={excluded}").get_json()
        explored = [r["item"] for r in answer["recommendations"] if r["strategy"] == "exploration"]
        # A cap of one per brand leaves few candidates: most brands are in the 100-item list already cached.
        assert explored and len(answer["recommendations"]) == 10
        assert not set(explored) & set(banned + unavailable)
        items = [client.get(f"/items/{r['item']}").get_json() for r in answer["recommendations"]]
        assert excluded not in {item["category"] for item in items}
        brands = [item["brand"] for item in items if item["brand"]]
        assert len(brands) == len(set(brands))
    finally:
        service.close()


def test_thompson_moves_traffic_to_the_arm_that_gets_the_clicks(client, service):
    body = {"name": "bandit", "allocation": "thompson", "variants": [
        {"name": "popular", "case": "popular"}, {"name": "hybrid", "case": "hybrid"},
        {"name": "content", "case": "content_based"}]}
    created = client.post("/experiments", json=body)
    assert created.status_code == 201, created.get_json()
    experiment = created.get_json()
    try:
        assert [v["share"] for v in experiment["variants"]] == pytest.approx([1 / 3] * 3)
        for n in range(90):  # only the hybrid arm's lists are clicked
            answer = client.get(f"/recommendations/bandit_{n}?count=5").get_json()
            if answer["variant"] == "hybrid":
                assert client.post("/interactions", json={
                    "user_id": f"bandit_{n}", "item_id": answer["recommendations"][0]["item"], "event_type": "view",
                    "recommendation_id": answer["recommendation_id"]}).status_code == 201
        service.impressions.flush()
        service.experiments.refresh(force_bandit=True)  # the background job does this every few seconds
        result = result_of(client, experiment)
        assert result["hybrid"]["share"] > 0.95 and result["hybrid"]["clicks"] == result["hybrid"]["impressions"] > 0
        later = [client.get(f"/recommendations/later_{n}").get_json()["variant"] for n in range(100)]
        assert later.count("hybrid") >= 90
    finally:
        client.post(f"/experiments/{experiment['experiment_id']}/stop")


def test_deleting_a_user_deletes_their_impressions(client, experiment):
    assert client.post("/users", json={"user_id": "forget_me"}).status_code == 201
    name = expected_variant(experiment, "forget_me")
    client.get("/recommendations/forget_me")
    assert result_of(client, experiment)[name]["users"] == 1  # a result writes the impressions first
    client.get("/recommendations/forget_me")  # this one is still in the buffer at the deletion
    assert client.delete("/users/forget_me").status_code == 200
    assert (result_of(client, experiment)[name]["users"], result_of(client, experiment)[name]["impressions"]) == (0, 0)


def test_a_variant_sets_the_hybrids_weights(client):
    """A variant whose collaborative share is 1 at every history size ranks as the collaborative blend does
    (served hybrid lists are then calibrated to the user's categories, a re-pick from the top 5 x count)."""
    body = {"name": "tiers", "variants": [
        {"name": "control", "share": 0.5},
        {"name": "collaborative_only", "share": 0.5, "hybrid_weights": {"new": 1, "experienced": 1, "heavy": 1}}]}
    created = client.post("/experiments", json=body)
    assert created.status_code == 201, created.get_json()
    experiment = created.get_json()
    try:
        assert experiment["variants"][1]["hybrid_weights"] == {"new": 1, "experienced": 1, "heavy": 1}
        users = [u for u in ("alice", "bob", "carol", *(f"user_{n:03d}" for n in range(1, 41)))
                 if expected_variant(experiment, u) == "collaborative_only"][:5]
        assert users
        for user in users:
            served = client.get(f"/recommendations/{user}?count=5").get_json()["recommendations"]
            blend = client.get(f"/recommend?user_id={user}&case=collaborative&count=25").get_json()["recommendations"]
            assert {r["item"] for r in served} <= {r["item"] for r in blend}, user
            assert {r["strategy"] for r in served} == {"collaborative"}
    finally:
        client.post(f"/experiments/{experiment['experiment_id']}/stop")


def test_a_variant_sets_the_collaborative_weights(client, service):
    """A variant's collaborative_weights rank as a server configured with those COLLABORATIVE_WEIGHT_* does
    (a second service on the same store and model artifact)."""
    weights = {"user_based": 1.0, "ease": 0.0, "als": 0.0}
    body = {"name": "parts", "variants": [
        {"name": "control", "share": 0.5, "case": "collaborative"},
        {"name": "user_based_only", "share": 0.5, "case": "collaborative", "collaborative_weights": weights}]}
    created = client.post("/experiments", json=body)
    assert created.status_code == 201, created.get_json()
    experiment = created.get_json()
    configured = RecommendationService.create(service.settings.model_copy(update={
        "collaborative_weights": weights, "model_dir": service.settings.model_path}))
    try:
        assert experiment["variants"][1]["collaborative_weights"] == weights
        other = create_app(configured.settings, configured).test_client()
        compared, differs = 0, 0
        for user in ("alice", "bob", "carol", *(f"user_{n:03d}" for n in range(1, 41))):
            served = client.get(f"/recommendations/{user}?count=5").get_json()
            if served["variant"] == "user_based_only":
                expected = other.get(f"/recommend?user_id={user}&case=collaborative&count=5").get_json()
                assert served["recommendations"] == expected["recommendations"], user
                default = client.get(f"/recommend?user_id={user}&case=collaborative&count=5").get_json()
                compared, differs = compared + 1, differs + (default["recommendations"] != served["recommendations"])
        assert compared >= 5 and differs >= 1  # the weights changed what those users see
    finally:
        client.post(f"/experiments/{experiment['experiment_id']}/stop")
        configured.close()
