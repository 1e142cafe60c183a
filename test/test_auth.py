"""API-key authentication: the route policy and /stats through Flask's test client, tokens, and
Socket.IO registration against a real server with real python-socketio clients."""
from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests
import socketio
from itsdangerous import TimestampSigner

from web import create_app
from web.auth import verify_token

KEY = "test-key-0123456789"
KEY_HEADER = {"X-API-Key": KEY}
WRONG_KEY_HEADER = {"X-API-Key": "not-the-key"}
FULL_STATS = {"cache", "requests", "engine", "store", "realtime", "jobs", "experiments"}


@pytest.fixture(scope="module")
def make_client(service):
    def make(**overrides):
        app = create_app(service.settings.model_copy(update=overrides), service=service)
        if not any("DELETE" in rule.methods for rule in app.url_map.iter_rules() if rule.rule == "/users/<user_id>"):
            # DELETE /users/<user_id> is protected before it exists; a stand-in shows the policy covers it.
            app.add_url_rule("/users/<user_id>", "delete_user_stand_in", lambda user_id: ("", 204), methods=["DELETE"])
        return app.test_client()
    return make


@pytest.fixture(scope="module")
def secured(make_client):
    return make_client(api_key=KEY)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def writes() -> list[tuple[str, str, dict | None]]:
    """One valid request per protected route, on fresh ids so any order of tests can run them."""
    user, item, doomed = unique("writer"), unique("item"), unique("doomed")
    return [
        ("POST", "/interactions", {"user_id": user, "item_id": "iphone", "rating": 4}),
        ("POST", "/event", {"user_id": user, "product_id": "ipad", "event_type": "view"}),
        ("POST", "/items", {"item_id": item, "name": "Test item", "category": "kitchen"}),
        ("POST", "/users", {"user_id": doomed}),
        ("DELETE", f"/users/{doomed}", None),
        ("POST", "/auth/token", {"user_id": user}),
    ]


def assert_unauthorized(response, message: str) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json() == {"error": "unauthorized", "message": message}
    assert response.headers["WWW-Authenticate"] == "ApiKey"


@pytest.mark.parametrize("headers, message", [({}, "missing X-API-Key header"), (WRONG_KEY_HEADER, "invalid API key")],
                         ids=["no key", "wrong key"])
def test_every_write_without_the_right_key_is_401(secured, headers, message):
    for method, path, body in writes():
        assert_unauthorized(secured.open(path, method=method, json=body, headers=headers), message)


def test_every_write_with_the_key_succeeds(secured):
    for method, path, body in writes():
        response = secured.open(path, method=method, json=body, headers=KEY_HEADER)
        assert 200 <= response.status_code < 300, (method, path, response.get_data(as_text=True))


def test_a_refused_write_changes_nothing(secured):
    user = unique("refused")
    secured.post("/users", json={"user_id": user})
    assert secured.get(f"/users/{user}").status_code == 404


@pytest.mark.parametrize("path", ["/recommendations/alice", "/popular", "/items/ipad", "/users/alice",
                                  "/realtime-recommend?user_id=alice", "/categories"])
def test_reads_stay_open_by_default(secured, path):
    assert secured.get(path).status_code == 200


def test_api_key_reads_protects_every_read_except_health_docs_and_the_demo(make_client):
    client = make_client(api_key=KEY, api_key_reads=True)
    for path in ["/recommendations/alice", "/popular", "/items", "/users/alice", "/stats", "/no-such-route"]:
        assert_unauthorized(client.get(path), "missing X-API-Key header")
        assert client.get(path, headers=KEY_HEADER).status_code in (200, 404)
    for path in ["/health", "/health/live", "/demo/realtime", "/static/demo/no-such-file.css",
                 "/openapi.json", "/docs", "/docs/index.html"]:
        assert client.get(path).status_code != 401, path
    assert client.get("/health").status_code == 200
    assert client.get("/health/live").status_code == 200


def test_stats_without_the_key_is_the_summary_and_with_it_everything(secured):
    summary = secured.get("/stats").get_json()
    assert set(summary) == {"cache", "requests"}
    assert summary["cache"]["recommendations"]["hit_rate"] >= 0
    assert set(secured.get("/stats", headers=KEY_HEADER).get_json()) == FULL_STATS
    assert set(secured.get("/stats", headers=WRONG_KEY_HEADER).get_json()) == {"cache", "requests"}


def test_with_no_key_configured_everything_is_open(make_client):
    client = make_client()
    for method, path, body in writes()[:-1]:
        response = client.open(path, method=method, json=body)
        assert 200 <= response.status_code < 300, (method, path, response.get_data(as_text=True))
    assert set(client.get("/stats").get_json()) == FULL_STATS
    answer = client.post("/auth/token", json={"user_id": "alice"})
    assert answer.status_code == 404
    assert answer.get_json()["message"] == "no API_KEY is configured, so Socket.IO registration needs no token"


def issue_token(client, user_id: str) -> str:
    response = client.post("/auth/token", json={"user_id": user_id}, headers=KEY_HEADER)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["user_id"] == user_id and body["expires_in"] == 24 * 3600
    return body["token"]


def test_a_token_is_valid_for_its_user_only_and_under_its_key_only(secured, make_client):
    token = issue_token(secured, "alice")
    other_key = make_client(api_key="another-key")
    with secured.application.app_context():
        assert verify_token("alice", token)
        assert not verify_token("bob", token)
        assert not verify_token("alice", None)
        assert not verify_token("alice", token[:-2] + "xx")
    with other_key.application.app_context():
        assert not verify_token("alice", token)


def test_a_token_expires_after_token_max_age(secured, make_client, monkeypatch):
    short_lived = make_client(api_key=KEY, token_max_age_seconds=60)
    token = issue_token(secured, "alice")
    with short_lived.application.app_context():
        assert verify_token("alice", token)
        now = int(time.time())
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda signer: now + 61)
        assert not verify_token("alice", token)


def test_token_requests_are_validated(secured):
    response = secured.post("/auth/token", json={"user_id": "not an id!"}, headers=KEY_HEADER)
    assert response.status_code == 422 and response.get_json()["error"] == "validation_error"


# -- a real server and real Socket.IO clients -------------------------------------------------

PUSH_WAIT = 5.0


class Listener:
    """One Socket.IO connection: what it was answered and pushed after asking to register as a user."""

    def __init__(self, url: str) -> None:
        self.events: dict[str, list[dict]] = {"registered": [], "realtime_recommendation": [], "error": []}
        self._arrived = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        for name in self.events:
            self.client.on(name, lambda payload, name=name: self._record(name, payload))
        self.client.connect(url, transports=["websocket"], wait_timeout=5)

    def _record(self, name: str, payload: dict) -> None:
        with self._arrived:
            self.events[name].append(payload)
            self._arrived.notify_all()

    def register(self, user_id: str, token: str | None = None) -> object:
        message = {"user_id": user_id} if token is None else {"user_id": user_id, "token": token}
        return self.client.call("register_user", message, timeout=5)

    def wait_for(self, name: str) -> dict:
        with self._arrived:
            assert self._arrived.wait_for(lambda: self.events[name], PUSH_WAIT), f"no {name} event"
            return self.events[name][0]


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory):
    from live_server import start_server

    live = start_server(tmp_path_factory.mktemp("secured-server"), API_KEY=KEY, RATE_LIMIT="")
    yield live
    live.stop()


@pytest.fixture
def listeners(secured_server):
    opened: list[Listener] = []

    def open_listener() -> Listener:
        opened.append(Listener(secured_server.url))
        return opened[-1]

    yield open_listener
    for listener in opened:
        listener.client.disconnect()


def server_token(url: str, user_id: str) -> str:
    response = requests.post(f"{url}/auth/token", json={"user_id": user_id}, headers=KEY_HEADER, timeout=5)
    response.raise_for_status()
    return response.json()["token"]


@pytest.mark.slow
def test_only_alices_token_subscribes_to_alices_pushes(secured_server, listeners):
    url = secured_server.url
    no_token, bobs_token, alices_token = listeners(), listeners(), listeners()
    refused = "registering as alice needs a valid token from POST /auth/token"

    assert no_token.register("alice") is None
    assert no_token.wait_for("error") == {"error": "unauthorized", "message": refused}
    assert bobs_token.register("alice", server_token(url, "bob")) is None
    assert bobs_token.wait_for("error") == {"error": "unauthorized", "message": refused}
    assert alices_token.register("alice", server_token(url, "alice"))["user_id"] == "alice"

    event = {"user_id": "alice", "product_id": "kitchen_knife", "event_type": "purchase"}
    refused_write = requests.post(f"{url}/event", json=event, timeout=5)
    assert refused_write.status_code == 401 and refused_write.json()["error"] == "unauthorized"
    requests.post(f"{url}/event", json=event, headers=KEY_HEADER, timeout=5).raise_for_status()

    assert alices_token.wait_for("realtime_recommendation")["user_id"] == "alice"
    alices_token.client.sleep(0.3)  # long enough for a stray push to the others to have arrived
    for intruder in (no_token, bobs_token):
        assert intruder.events["registered"] == [] and intruder.events["realtime_recommendation"] == []
