"""Every route of docs/api-contract.md answers 2xx with its documented fields for good input,
including the curl examples of the engine README and the system README."""
from __future__ import annotations

import re

import pytest

from config import load_settings
from web import create_app

TIME_MS = re.compile(r"^\d+\.\d{2}$")
ITEM_FIELDS = {"item_id", "name", "category", "brand", "description", "tags", "price", "available", "attributes"}
CACHE_FIELDS = {"hits", "misses", "hit_rate", "size", "max_size", "ttl_seconds"}
TIMING_FIELDS = {"count", "avg_ms", "p50_ms", "p99_ms"}


def build_client(database_url: str):
    return create_app(load_settings(database_url=database_url, redis_url=None)).test_client()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """Shared by the read-only tests: they leave the store as they found it."""
    client = build_client(f"sqlite:///{tmp_path_factory.mktemp('routes') / 'store.db'}")
    yield client
    client.application.extensions["recommendation_service"].close()


@pytest.fixture
def fresh_client(sqlite_url):
    """A store of its own for each test that writes."""
    client = build_client(sqlite_url)
    yield client
    client.application.extensions["recommendation_service"].close()


def ok_json(response, status: int = 200) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    return response.get_json()


def assert_recommendations(recommendations: list, count: int) -> None:
    assert len(recommendations) == count
    for rec in recommendations:
        assert isinstance(rec["item"], str) and isinstance(rec["score"], float) and isinstance(rec["strategy"], str)
    assert len({rec["item"] for rec in recommendations}) == count


def test_readme_recommendations_for_alice(client):
    body = ok_json(client.get("/recommendations/alice?count=5"))
    assert set(body) == {"recommendations", "user_id", "source", "recommendation_id", "response_time_ms"}
    assert body["user_id"] == "alice" and body["source"] in {"cache", "computed"}
    assert TIME_MS.match(body["response_time_ms"])
    assert_recommendations(body["recommendations"], 5)


def test_default_count(client):
    assert_recommendations(ok_json(client.get("/recommendations/bob"))["recommendations"], 10)


def test_readme_similar_items(client):
    body = ok_json(client.get("/similar/iphone?count=3"))
    assert set(body) == {"item_id", "similar", "source", "response_time_ms"}
    assert body["item_id"] == "iphone" and TIME_MS.match(body["response_time_ms"])
    assert_recommendations(body["similar"], 3)
    assert "iphone" not in {rec["item"] for rec in body["similar"]}


@pytest.mark.parametrize("trending", [False, True])
@pytest.mark.parametrize("category", ["electronics", None])
def test_readme_popular_items(client, category, trending):
    url = "/popular?count=10" + (f"&category={category}" if category else "") + ("&trending=true" if trending else "")
    body = ok_json(client.get(url))
    assert set(body) == {"items", "category", "trending", "source", "response_time_ms"}
    assert body["category"] == category and body["source"] in {"cache", "computed"}
    assert body["trending"] is trending
    assert {rec["strategy"] for rec in body["items"]} == {"trending" if trending else "popular"}
    assert_recommendations(body["items"], 10)
    if category:
        for rec in body["items"]:
            assert ok_json(client.get(f"/items/{rec['item']}"))["category"] == category


def test_readme_health(client):
    assert ok_json(client.get("/health"))["status"] == "ok"


def test_readme_stats(client):
    client.get("/health")
    body = ok_json(client.get("/stats"))
    assert {"cache", "requests", "engine", "store"} <= set(body)
    assert body["cache"] and all(set(kind) >= CACHE_FIELDS for kind in body["cache"].values())
    assert set(body["requests"]["GET /health"]) == TIMING_FIELDS
    assert body["requests"]["GET /health"]["count"] >= 1


@pytest.mark.parametrize(
    "query",
    [
        "user_id=alice&case=collaborative",
        "user_id=alice&case=content_based",
        "case=content_based&product_id=iphone",
        "user_id=alice&case=content_based&product_id=iphone",
        "user_id=alice&case=hybrid",
        "user_id=alice",
        "user_id=alice&case=hybrid&method=adaptive",
        "user_id=alice&case=hybrid&method=switching",
        "user_id=alice&case=behavior_based",
        "case=popular",
        "case=popular&category=kitchen",
        "user_id=bob&case=popular",
    ],
)
def test_system_readme_recommend_every_case(client, query):
    body = ok_json(client.get(f"/recommend?{query}&count=4"))
    params = dict(part.split("=") for part in query.split("&"))
    assert set(body) == {"user_id", "case", "method", "product_id", "recommendations", "source", "recommendation_id",
                         "response_time_ms"}
    assert body["case"] == params.get("case", "hybrid")
    assert body["method"] == params.get("method")
    assert body["user_id"] == params.get("user_id") and body["product_id"] == params.get("product_id")
    assert_recommendations(body["recommendations"], 4)


@pytest.mark.parametrize("query", ["user_id=alice", "user_id=alice&product_id=ipad&event_type=add_to_cart"])
def test_system_readme_realtime_recommend(client, query):
    body = ok_json(client.get(f"/realtime-recommend?{query}&count=5"))
    assert set(body) == {"user_id", "product_id", "event_type", "recommendations", "source", "recommendation_id",
                         "response_time_ms"}
    params = dict(part.split("=") for part in query.split("&"))
    assert body["user_id"] == "alice" and body["product_id"] == params.get("product_id")
    assert body["event_type"] == params.get("event_type", "view")
    assert_recommendations(body["recommendations"], 5)


def test_items_page(client):
    body = ok_json(client.get("/items?category=kitchen&limit=5&offset=2"))
    assert set(body) == {"items", "total"} and body["total"] >= 7
    assert len(body["items"]) == 5
    assert all(set(item) == ITEM_FIELDS and item["category"] == "kitchen" for item in body["items"])


def test_item_lookup(client):
    item = ok_json(client.get("/items/iphone"))
    assert set(item) == ITEM_FIELDS
    assert item["category"] == "electronics" and item["brand"] == "Apple" and isinstance(item["tags"], list)


def test_categories(client):
    categories = ok_json(client.get("/categories"))["categories"]
    assert {"electronics", "kitchen", "furniture", "books"} <= {c["name"] for c in categories}
    assert all(set(c) == {"name", "count"} and c["count"] > 0 for c in categories)


def test_user_profile(client):
    body = ok_json(client.get("/users/alice"))
    assert {"user_id", "created_at", "interactions", "history", "top_categories"} <= set(body)
    assert body["user_id"] == "alice" and body["interactions"] == len(body["history"]) == 3
    assert all(set(entry) >= {"item_id", "event_type", "rating", "timestamp"} for entry in body["history"])
    assert all(set(entry) == {"name", "weight"} for entry in body["top_categories"])


def test_readme_record_interaction(fresh_client):
    body = ok_json(
        fresh_client.post("/interactions", json={"user_id": "alice", "item_id": "iphone", "rating": 5}), 201
    )
    assert set(body) == {
        "user_id", "item_id", "rating", "event_type", "status", "cache_invalidated", "response_time_ms",
    }
    assert body | {"response_time_ms": None} == {
        "user_id": "alice", "item_id": "iphone", "rating": 5, "event_type": "rating",
        "status": "recorded", "cache_invalidated": True, "response_time_ms": None,
    }


def test_interaction_event_with_timestamp_and_int_ids_creates_user(fresh_client):
    sent = {"user_id": 12345, "item_id": "gaming_chair", "event_type": "purchase",
            "timestamp": "2026-01-02T03:04:05Z", "event_id": "evt-1"}
    body = ok_json(fresh_client.post("/interactions", json=sent), 201)
    assert (body["user_id"], body["event_type"], body["rating"]) == ("12345", "purchase", None)
    history = ok_json(fresh_client.get("/users/12345"))["history"]
    assert history[0]["item_id"] == "gaming_chair" and history[0]["timestamp"] == 1767323045.0


def test_system_readme_event(fresh_client):
    sent = {"user_id": "alice", "product_id": "ipad", "event_type": "view", "timestamp": 1767323045}
    body = ok_json(fresh_client.post("/event", json=sent), 201)
    assert set(body) == {"status", "user_id", "product_id", "event_type", "recommendations", "recommendation_id",
                         "response_time_ms"}
    assert body["status"] == "recorded"
    assert (body["user_id"], body["product_id"], body["event_type"]) == ("alice", "ipad", "view")
    assert body["recommendations"] and TIME_MS.match(body["response_time_ms"])


def test_create_then_update_item(fresh_client):
    item = {"item_id": "moka_pot", "name": "Moka Pot", "category": "kitchen", "brand": "Bialetti",
            "description": "Stovetop espresso maker.", "tags": ["coffee", "espresso"], "price": 39.9}
    created = {**item, "available": True, "attributes": {}}  # the defaults of the fields left out
    assert ok_json(fresh_client.post("/items", json=item), 201) == {"item": created, "status": "created"}
    updated = ok_json(fresh_client.post("/items", json={"item_id": "moka_pot", "name": "Moka Pot 6 cups"}))
    assert updated["status"] == "updated" and updated["item"]["name"] == "Moka Pot 6 cups"
    assert ok_json(fresh_client.get("/items/moka_pot"))["name"] == "Moka Pot 6 cups"


def test_create_user_then_exists(fresh_client):
    created = ok_json(fresh_client.post("/users", json={"user_id": "dora"}), 201)
    assert created == {"user_id": "dora", "status": "created"}
    assert ok_json(fresh_client.post("/users", json={"user_id": "dora"})) == {"user_id": "dora", "status": "exists"}
    assert ok_json(fresh_client.get("/users/dora"))["interactions"] == 0
