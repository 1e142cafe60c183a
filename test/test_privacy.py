"""DELETE /users/<id>: the user's profile, history, cached answers and model state go, and what their
events taught the shared models goes at the next retrain; a restart does not bring any of it back."""
from __future__ import annotations

import time

import pytest
import requests

from config import load_settings
from live_server import start_server
from web import create_app, get_service

# Two items only the linker's purchases connect; their words and categories share nothing.
ITEM_A = {"item_id": "privacy-a", "name": "Walnut desk lamp", "category": "lighting", "brand": "Lumen"}
ITEM_B = {"item_id": "privacy-b", "name": "Sourdough starter kit", "category": "baking", "brand": "Crumb"}
BOUGHT_WITH_A = f"bought together with {ITEM_A['name']}"


@pytest.fixture
def start_app(sqlite_url):
    """Starts apps on this test's SQLite file (several calls = restarts) and closes their services."""
    clients = []

    def start():
        clients.append(create_app(load_settings(database_url=sqlite_url, redis_url=None)).test_client())
        return clients[-1]

    yield start
    for client in clients:
        client.application.extensions["recommendation_service"].close()


def service_of(client):
    with client.application.app_context():
        return get_service()


def post(client, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return response.get_json()


def purchase(client, user_id: str, item_id: str) -> None:
    post(client, "/event", {"user_id": user_id, "product_id": item_id, "event_type": "purchase"})


def recommendations(client, user_id: str) -> dict:
    response = client.get(f"/recommendations/{user_id}?count=10")
    assert response.status_code == 200
    return response.get_json()


def next_after_buying_a(client, bystander: str) -> dict:
    response = client.get(f"/realtime-recommend?user_id={bystander}&product_id=privacy-a&event_type=purchase")
    assert response.status_code == 200
    return response.get_json()


def history_size(client, user_id: str) -> int:
    return service_of(client).engine.user_profile(user_id)["history_size"]


def strategies(url: str, user_id: str) -> set[str]:
    answer = requests.get(f"{url}/recommendations/{user_id}?count=10", timeout=5).json()
    return {r["strategy"] for r in answer["recommendations"]}


def eventually(check, timeout: float = 5.0) -> bool:
    """The event bus is asynchronous: poll until `check` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_not_found(response, user_id: str) -> None:
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": f"unknown user '{user_id}'"}


def test_delete_removes_the_profile_the_history_and_the_cached_answers(start_app):
    client = start_app()
    for item in ("coffee_maker", "kitchen_knife", "cookbook"):
        purchase(client, "erased", item)
    assert client.get("/users/erased").get_json()["interactions"] == 3  # the profile is cached now
    recommendations(client, "erased")
    assert recommendations(client, "erased")["source"] == "cache"

    response = client.delete("/users/erased")
    assert response.status_code == 200
    assert response.get_json() == {"user_id": "erased", "status": "deleted"}

    assert_not_found(client.get("/users/erased"), "erased")
    store = service_of(client).store
    assert store.get_user("erased") is None and store.user_interactions("erased") == []
    answer = recommendations(client, "erased")
    assert answer["source"] == "computed"
    assert answer["recommendations"] == recommendations(client, "never-seen")["recommendations"]
    assert {r["strategy"] for r in answer["recommendations"]} == {"popular"}
    assert history_size(client, "erased") == 0
    assert_not_found(client.delete("/users/erased"), "erased")


def test_unknown_user_gets_404(start_app):
    assert_not_found(start_app().delete("/users/nobody-here"), "nobody-here")


def test_after_a_retrain_items_the_deleted_user_alone_linked_are_no_longer_bought_together(start_app):
    client = start_app()
    for item in (ITEM_A, ITEM_B):
        post(client, "/items", item)
    purchase(client, "linker", "privacy-a")
    purchase(client, "linker", "privacy-b")
    before = next_after_buying_a(client, "bystander-1")["recommendations"]
    assert {"item": "privacy-b", "strategy": "behavior", "reason": BOUGHT_WITH_A} in [
        {key: r[key] for key in ("item", "strategy", "reason")} for r in before]

    assert client.delete("/users/linker").status_code == 200
    service_of(client).retrain()

    after = next_after_buying_a(client, "bystander-2")  # a new bystander: nothing cached
    assert after["source"] == "computed"
    assert BOUGHT_WITH_A not in {r["reason"] for r in after["recommendations"]}
    assert "behavior" not in {r["strategy"] for r in after["recommendations"]}


def test_forgetting_a_user_leaves_every_other_users_state_as_it_was(start_app):
    client = start_app()
    purchase(client, "alice", "cookbook")  # not compacted yet: forgetting bob must keep it
    purchase(client, "dave", "ipad")  # a user added after bob
    data = service_of(client).engine.data

    def state(user_id: str) -> list:
        user = data.users.get(user_id)
        recent = data.recent.of(user)
        return [array.tolist() for array in (*data.preference_row(user), data.seen_items(user), recent.items,
                                             recent.weights, recent.types)]

    others = [user_id for user_id in service_of(client).store.all_user_ids() if user_id != "bob"]
    before = {user_id: state(user_id) for user_id in others}
    assert service_of(client).engine.forget_user("bob")
    assert {user_id: state(user_id) for user_id in others} == before
    assert state("bob") == [[]] * 6


def test_a_user_deleted_while_a_retrain_fits_stays_forgotten_after_the_swap(start_app):
    client = start_app()
    service = service_of(client)
    assert history_size(client, "bob") > 0

    def fit_then_delete(work):
        result = work()  # the train job read the log while bob was still in it
        if service.store.get_user("bob") is not None:
            service.delete_user("bob")
        return result

    service.retrain(fit_then_delete)
    assert history_size(client, "bob") == 0
    assert {r["strategy"] for r in recommendations(client, "bob")["recommendations"]} == {"popular"}


def test_a_restart_does_not_bring_deleted_users_back(start_app):
    client = start_app()
    purchase(client, "late-shopper", "cookbook")  # after the first start's checkpoint: replayed on start
    for user_id in ("carol", "late-shopper"):  # carol's events are in the checkpoint's fit
        assert client.delete(f"/users/{user_id}").status_code == 200

    restarted = start_app()
    for user_id in ("carol", "late-shopper"):
        assert_not_found(restarted.get(f"/users/{user_id}"), user_id)
        assert history_size(restarted, user_id) == 0
    stats = restarted.get("/stats").get_json()
    assert stats["engine"]["interactions"] == stats["store"]["interactions"]


@pytest.mark.slow
def test_a_user_deleted_through_one_server_process_is_forgotten_by_the_other(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}  # one store: each server follows its log
    first = start_server(tmp_path / "a", **env)
    try:
        second = start_server(tmp_path / "b", **env)
        try:
            for item in ("coffee_maker", "kitchen_knife", "cookbook"):
                answer = requests.post(f"{first.url}/event", json={"user_id": "roamer", "product_id": item,
                                                                    "event_type": "purchase"}, timeout=5)
                assert answer.status_code == 201
            assert eventually(lambda: strategies(second.url, "roamer") != {"popular"})  # the log brought the events

            assert requests.delete(f"{first.url}/users/roamer", timeout=5).status_code == 200
            assert eventually(lambda: strategies(second.url, "roamer") == {"popular"})  # ...and the deletion
        finally:
            second.stop()
    finally:
        first.stop()

