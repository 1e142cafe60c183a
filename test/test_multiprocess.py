"""Two server processes sharing PostgreSQL and the real Redis (127.0.0.1:6379), as in production.

Redis carries the shared cache, Socket.IO's message queue and the event bus that keeps every
process's engine up to date. Each test run uses its own Redis namespace.
"""
from __future__ import annotations

import time
import uuid

import pytest
import requests
from test_realtime_push import Subscriber, items, post_event

from live_server import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory, postgres_url):
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": "redis://127.0.0.1:6379/0",
           "REDIS_NAMESPACE": f"test-{uuid.uuid4().hex[:8]}"}
    first = start_server(tmp_path_factory.mktemp("process_a"), **env)
    try:
        second = start_server(tmp_path_factory.mktemp("process_b"), **env)
    except BaseException:
        first.stop()
        raise
    yield first, second
    second.stop()
    first.stop()


def test_a_subscriber_on_one_process_receives_the_push_for_an_event_posted_to_the_other(two_servers):
    process_a, process_b = two_servers
    alice_on_a = Subscriber(process_a.url, "alice")
    bob_on_a = Subscriber(process_a.url, "bob")
    try:
        before = items(alice_on_a.registered["recommendations"])
        post_event(process_b.url, "alice", "coffee_maker", "purchase")
        push = alice_on_a.wait_for_push()
        assert push["trigger"] == {"item_id": "coffee_maker", "event_type": "purchase"}
        assert items(push["recommendations"]) != before
        alice_on_a.client.sleep(0.3)
        assert bob_on_a.pushes == []
    finally:
        alice_on_a.close()
        bob_on_a.close()


def test_either_process_answers_for_events_the_other_recorded(two_servers):
    process_a, process_b = two_servers
    user = f"roamer-{uuid.uuid4().hex[:8]}"
    cold = requests.get(f"{process_a.url}/recommendations/{user}", timeout=5).json()
    assert {r["strategy"] for r in cold["recommendations"]} == {"popular"}

    for product in ("coffee_maker", "kitchen_knife", "cookbook"):
        post_event(process_b.url, user, product)
    wait_until_engines_agree(process_a.url, process_b.url)

    # A's cached cold-start answer was dropped (shared cache, and again when A applied the events
    # from the bus), and A's engine applied B's events, so A answers from the kitchen history.
    warm = requests.get(f"{process_a.url}/recommendations/{user}", timeout=5).json()
    assert warm["source"] == "computed"
    top5 = items(warm["recommendations"])[:5]
    categories = [requests.get(f"{process_a.url}/items/{item}", timeout=5).json()["category"] for item in top5]
    assert categories.count("kitchen") >= 4, list(zip(top5, categories))


def wait_until_engines_agree(*urls: str, timeout: float = 5.0) -> None:
    """The event bus is asynchronous (sub-millisecond here): wait until every engine holds every event."""
    deadline = time.monotonic() + timeout
    while True:
        counts = {requests.get(f"{url}/stats", timeout=5).json()["engine"]["interactions"] for url in urls}
        if len(counts) == 1:
            return
        assert time.monotonic() < deadline, f"engines still disagree: {counts}"
        time.sleep(0.02)
