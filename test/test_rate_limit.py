"""Rate limits per client and route: a JSON 429 with Retry-After, health exempt, one budget across
processes through Redis (the real server at 127.0.0.1:6379, under a namespace of this test's own)."""
from __future__ import annotations

import uuid

import pytest

from config import load_settings
from service import RecommendationService
from web import create_app

REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = "5 per minute"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """One store and engine behind every app of this module; each app has its own limiter."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('limits') / 'store.db'}",
                             redis_url=None, rate_limit=LIMIT)
    service = RecommendationService.create(settings)
    yield service
    service.close()


def client_for(service: RecommendationService, **overrides):
    return create_app(service.settings.model_copy(update=overrides), service=service).test_client()


def test_the_request_over_the_limit_gets_a_json_429_with_retry_after(service):
    client = client_for(service)
    for n in range(5):
        answer = client.get("/popular")
        assert answer.status_code == 200
        assert answer.headers["X-RateLimit-Remaining"] == str(4 - n)
    refused = client.get("/popular")
    assert refused.status_code == 429
    assert refused.get_json() == {"error": "too_many_requests", "message": "rate limit exceeded: 5 per 1 minute"}
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert client.get("/categories").status_code == 200  # the limit is per route


def test_health_checks_are_never_limited(service):
    client = client_for(service)
    for _ in range(10):
        assert client.get("/health").status_code == 200
        assert client.get("/health/live").status_code == 200
        assert "X-RateLimit-Limit" not in client.get("/health/live").headers


def test_an_empty_rate_limit_turns_limits_off(service):
    client = client_for(service, rate_limit="")
    assert all(client.get("/popular").status_code == 200 for _ in range(10))


def test_apps_sharing_redis_share_the_limit(service):
    settings = {"redis_url": REDIS_URL, "redis_namespace": f"test-limits-{uuid.uuid4().hex}"}
    first, second = client_for(service, **settings), client_for(service, **settings)
    for client in (first, second, first, second, first):
        assert client.get("/popular").status_code == 200
    assert second.get("/popular").status_code == 429
    assert first.get("/popular").status_code == 429
