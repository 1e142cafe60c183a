"""The README's story seen through HTTP: alice gets Apple products, interactions change her list
at once, the cache serves repeated asks, and a restarted service answers the same."""
from __future__ import annotations

import pytest

from config import load_settings
from web import create_app

ALICE_RATED = {"iphone", "macbook", "coffee_maker"}


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


@pytest.fixture
def client(start_app):
    return start_app()


def recommend(client, user_id: str, count: int = 5) -> dict:
    response = client.get(f"/recommendations/{user_id}?count={count}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def items_of(body: dict) -> list[str]:
    return [rec["item"] for rec in body["recommendations"]]


def category_of(client, item_id: str) -> str:
    return client.get(f"/items/{item_id}").get_json()["category"]


def rate(client, user_id: str, item_id: str, rating: float) -> None:
    response = client.post("/interactions", json={"user_id": user_id, "item_id": item_id, "rating": rating})
    assert response.status_code == 201, response.get_data(as_text=True)


def cache_totals(client) -> tuple[int, int]:
    kinds = client.get("/stats").get_json()["cache"].values()
    return sum(kind["hits"] for kind in kinds), sum(kind["misses"] for kind in kinds)


def test_alice_gets_unrated_apple_products_first(client):
    items = items_of(recommend(client, "alice"))
    assert len(items) == 5 and not ALICE_RATED & set(items)
    assert {"ipad", "airpods"} <= set(items)
    apple_rank = max(items.index("ipad"), items.index("airpods"))
    home_ranks = [rank for rank, item in enumerate(items) if category_of(client, item) in {"kitchen", "furniture"}]
    assert all(apple_rank < rank for rank in home_ranks), items


def test_rating_an_item_removes_it_and_recomputes(client):
    before = recommend(client, "alice")
    assert recommend(client, "alice")["source"] == "cache"
    rate(client, "alice", "ipad", 5)
    after = recommend(client, "alice")
    assert after["source"] == "computed"
    assert "ipad" in items_of(before) and "ipad" not in items_of(after)


def test_loving_a_kitchen_product_raises_kitchen_items(client):
    kitchen = {item["item_id"] for item in client.get("/items?category=kitchen&limit=1000").get_json()["items"]}
    before = items_of(recommend(client, "alice", count=20))
    rate(client, "alice", "kitchen_knife", 5)
    after = recommend(client, "alice", count=20)
    assert after["source"] == "computed" and "kitchen_knife" not in items_of(after)
    assert len(kitchen & set(items_of(after))) > len(kitchen & set(before)), (before, items_of(after))


def test_larger_count_is_served_from_the_cache(client):
    first = recommend(client, "carol", count=1)
    second = recommend(client, "carol", count=5)
    assert first["source"] == "computed" and second["source"] == "cache"
    assert len(second["recommendations"]) == 5
    assert items_of(second)[0] == items_of(first)[0]


def test_restart_on_the_same_store_answers_the_same(start_app):
    client = start_app()
    rate(client, "alice", "cookbook", 5)
    rate(client, "bob", "airpods", 4)
    purchase = {"user_id": "bob", "product_id": "ipad", "event_type": "purchase"}
    assert client.post("/event", json=purchase).status_code == 201
    before = {user: recommend(client, user, count=10)["recommendations"] for user in ("alice", "bob")}

    restarted = start_app()
    for user, expected in before.items():
        answer = recommend(restarted, user, count=10)["recommendations"]
        assert [(r["item"], r["strategy"]) for r in answer] == [(r["item"], r["strategy"]) for r in expected]
        assert [r["score"] for r in answer] == pytest.approx([r["score"] for r in expected], abs=1e-3)


def test_unknown_user_gets_popular_items(client):
    body = recommend(client, "newcomer_42", count=5)
    assert len(body["recommendations"]) == 5
    assert {rec["strategy"] for rec in body["recommendations"]} == {"popular"}


def test_stats_count_cache_hits_and_misses(client):
    hits, misses = cache_totals(client)
    recommend(client, "bob")
    recommend(client, "bob")
    new_hits, new_misses = cache_totals(client)
    assert new_misses > misses and new_hits > hits
    timing = client.get("/stats").get_json()["requests"]["GET /recommendations/<user_id>"]
    assert timing["count"] == 2 and 0 < timing["p50_ms"] <= timing["p99_ms"]


def test_post_event_answers_with_the_list_it_pushes_computed_once(client):
    """POST /event and the push to the user's socket share one real-time list: the engine computes it once."""
    from web.extensions import socketio

    engine = client.application.extensions["recommendation_service"].engine
    computed = []
    realtime_recommend = engine.realtime_recommend
    engine.realtime_recommend = lambda *args, **kwargs: computed.append(args) or realtime_recommend(*args, **kwargs)
    subscriber = socketio.test_client(client.application)
    subscriber.emit("register_user", {"user_id": "alice"})
    subscriber.get_received()
    computed.clear()

    answer = client.post("/event", json={"user_id": "alice", "product_id": "ipad", "event_type": "view"})
    pushes = [p["args"][0] for p in subscriber.get_received() if p["name"] == "realtime_recommendation"]
    subscriber.disconnect()

    assert answer.status_code == 201
    assert len(pushes) == 1 and pushes[0]["recommendations"] == answer.get_json()["recommendations"]
    assert len(computed) == 1
