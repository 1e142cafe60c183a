"""Issue 9, cheap reads: a cached answer is JSON rendered once, byte for byte the answer a computation
gives; with Redis, a process keeps what it reads from the shared cache, and the invalidation every
process applies from the log drops it there; a repeated query string is not validated again.

Against real apps (Flask's test client) on throwaway SQLite stores and the real Redis at 6379, each
test in a namespace of its own.
"""
from __future__ import annotations

import json
import re
import uuid

import pytest
import redis

from config import load_settings
from web import create_app
from web.context import parse_query
from web.schemas import UserRecommendationsQuery

REDIS_URL = "redis://127.0.0.1:6379/0"
# Every route that serves a ranked list from the cache, each asked for several counts of one entry.
ROUTES = [
    "/recommendations/alice?count={count}",
    "/recommend?user_id=bob&case=hybrid&method=adaptive&count={count}",
    "/recommend?case=content_based&product_id=coffee_maker&count={count}",
    "/realtime-recommend?user_id=carol&product_id=iphone&event_type=add_to_cart&count={count}",
    "/similar/iphone?count={count}",
    "/popular?category=electronics&count={count}",
    "/popular?trending=true&count={count}",
]
COUNTS = [3, 10, 1, 25, 3]
VARYING = re.compile(r'"(source|response_time_ms|recommendation_id)":"[^"]*"')  # differ per request


@pytest.fixture
def namespace():
    name = f"test-cached-reads-{uuid.uuid4().hex}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def start_app(sqlite_url):
    """Starts apps on this test's SQLite file (several = several server processes) and closes them."""
    clients = []

    def start(**settings):
        clients.append(create_app(load_settings(database_url=sqlite_url, **settings)).test_client())
        return clients[-1]

    yield start
    for client in clients:
        client.application.extensions["recommendation_service"].close()


def answer(client, path: str, source: str) -> str:
    """The answer's text, with `source` checked and the two fields that differ per request blanked."""
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    assert response.get_json()["source"] == source, path
    return VARYING.sub(r'"\1":"-"', response.get_data(as_text=True))


@pytest.mark.parametrize("backend", ["local", "redis"])
@pytest.mark.parametrize("route", ROUTES)
def test_a_cached_answer_is_the_computed_answer_byte_for_byte_for_every_count(start_app, namespace, backend, route):
    client = start_app(redis_url=REDIS_URL if backend == "redis" else None, redis_namespace=namespace)
    cache = client.application.extensions["recommendation_service"].cache
    computed = {}
    for count in COUNTS:
        cache.clear()
        computed[count] = answer(client, route.format(count=count), "computed")
    cache.clear()
    answer(client, route.format(count=COUNTS[-1]), "computed")
    for count in COUNTS:  # every count from the one cached entry, some of them twice
        assert answer(client, route.format(count=count), "cache") == computed[count], count
    body = client.get(route.format(count=10)).get_json()
    listed = next(value for value in body.values() if isinstance(value, list))
    assert all(list(rec)[:3] == ["item", "score", "strategy"] for rec in listed)  # the contract's field order


def test_two_processes_on_one_redis_serve_each_others_answers_and_both_drop_them_at_an_event(start_app, namespace):
    """B serves what A computed, first from Redis, then from its own tier, identically; an event A
    stores reaches B through the log, and applying it drops B's copy."""
    a, b = (start_app(redis_url=REDIS_URL, redis_namespace=namespace) for _ in range(2))
    path = "/recommendations/alice?count=10"
    computed = answer(a, path, "computed")
    assert answer(b, path, "cache") == computed  # from Redis
    assert answer(b, path, "cache") == computed  # from B's own tier
    assert "ipad" in items(computed)
    rated = a.post("/interactions", json={"user_id": "alice", "item_id": "ipad", "rating": 5})
    assert rated.status_code == 201
    fresh = answer(a, path, "computed")
    assert "ipad" not in items(fresh)
    assert answer(b, path, "cache") == computed  # B has not applied the event yet: its engine is where it was
    b.application.extensions["recommendation_service"].catch_up()  # what B's log follower does
    assert answer(b, path, "computed") == fresh  # applying the event dropped B's copy (and the shared entry)
    assert answer(b, path, "cache") == fresh


def items(text: str) -> list[str]:
    return [rec["item"] for rec in json.loads(text)["recommendations"]]


def test_a_repeated_query_string_is_validated_once_per_app_and_bad_ones_every_time(start_app):
    roomy, tight = start_app(redis_url=None), start_app(redis_url=None, max_count=20)
    for _ in range(2):  # the same query, valid under one app's settings and not the other's
        assert roomy.get("/recommendations/alice?count=50").status_code == 200
        refused = tight.get("/recommendations/alice?count=50")
        assert refused.status_code == 422 and refused.get_json()["error"] == "validation_error"
        assert "count must be at most 20" in refused.get_data(as_text=True)
    for client in (roomy, tight):
        with client.application.test_request_context("/recommendations/alice?count=7&x=1"):
            first = parse_query(UserRecommendationsQuery, user_id="alice")
            assert parse_query(UserRecommendationsQuery, user_id="alice") is first  # not validated again
            assert (first.user_id, first.count) == ("alice", 7)
            assert parse_query(UserRecommendationsQuery, user_id="bob").user_id == "bob"  # path values count
