"""Every bad input of the contract answers its 4xx status with a JSON error body, never HTML or 500."""
from __future__ import annotations

import pytest

from config import load_settings
from web import create_app

RATED = {"user_id": "visitor", "item_id": "iphone", "rating": 5}
RATED_TEXT = '{"user_id": "visitor", "item_id": "iphone", "rating": %s}'  # for what json.dumps cannot write
EVENT = {"user_id": "visitor", "product_id": "iphone", "event_type": "view"}
JSON = "application/json"


def with_(body: dict, **changes) -> dict:
    """`body` with some fields replaced; a value of ... removes the field."""
    return {k: v for k, v in {**body, **changes}.items() if v is not ...}


def raw(text: str, content_type: str | None = JSON) -> dict:
    return {"data": text, "content_type": content_type}


# (method, url, request kwargs, status)
CASES = {
    # bodies that are not a JSON object
    "non-JSON body": ("POST", "/interactions", raw("user_id=alice", "text/plain"), 415),
    "form body": ("POST", "/interactions", {"data": {"user_id": "alice"}}, 415),
    "JSON without content type": ("POST", "/interactions", raw('{"user_id": "alice"}', None), 415),
    "malformed JSON": ("POST", "/interactions", raw('{"user_id": "alice",'), 400),
    "empty JSON body": ("POST", "/interactions", raw(""), 400),
    "JSON array body": ("POST", "/interactions", {"json": [RATED]}, 422),
    "JSON string body": ("POST", "/event", raw('"view"'), 422),
    "JSON null body": ("POST", "/users", raw("null"), 422),
    "body over max_body_bytes": ("POST", "/interactions", {"json": with_(RATED, user_id="a" * 70_000)}, 413),
    # missing and unknown fields
    "missing user_id": ("POST", "/interactions", {"json": with_(RATED, user_id=...)}, 422),
    "missing item_id": ("POST", "/interactions", {"json": with_(RATED, item_id=...)}, 422),
    "missing rating for a rating": ("POST", "/interactions", {"json": with_(RATED, rating=...)}, 422),
    "null rating for a rating": ("POST", "/interactions", {"json": with_(RATED, rating=None)}, 422),
    "rating on a view": ("POST", "/interactions", {"json": with_(RATED, event_type="view")}, 422),
    "unknown body field": ("POST", "/interactions", {"json": with_(RATED, stars=5)}, 422),
    "missing event_type": ("POST", "/event", {"json": with_(EVENT, event_type=...)}, 422),
    "missing product_id": ("POST", "/event", {"json": with_(EVENT, product_id=...)}, 422),
    "rating on /event": ("POST", "/event", {"json": with_(EVENT, rating=5)}, 422),
    "missing item name": ("POST", "/items", {"json": {"item_id": "thing"}}, 422),
    "missing user_id on /users": ("POST", "/users", {"json": {}}, 422),
    # wrongly typed fields
    "boolean user_id": ("POST", "/interactions", {"json": with_(RATED, user_id=True)}, 422),
    "object user_id": ("POST", "/interactions", {"json": with_(RATED, user_id={"id": "alice"})}, 422),
    "list item_id": ("POST", "/interactions", {"json": with_(RATED, item_id=["iphone"])}, 422),
    "float item_id": ("POST", "/interactions", {"json": with_(RATED, item_id=1.5)}, 422),
    "boolean product_id": ("POST", "/event", {"json": with_(EVENT, product_id=False)}, 422),
    "rating 0": ("POST", "/interactions", {"json": with_(RATED, rating=0)}, 422),
    "rating 6": ("POST", "/interactions", {"json": with_(RATED, rating=6)}, 422),
    "rating NaN": ("POST", "/interactions", raw(RATED_TEXT % "NaN"), 422),
    "rating Infinity": ("POST", "/interactions", raw(RATED_TEXT % "Infinity"), 422),
    "rating as text": ("POST", "/interactions", {"json": with_(RATED, rating="5")}, 422),
    "rating true": ("POST", "/interactions", {"json": with_(RATED, rating=True)}, 422),
    "rating list": ("POST", "/interactions", {"json": with_(RATED, rating=[5])}, 422),
    "unknown event_type": ("POST", "/interactions", {"json": with_(RATED, event_type="like", rating=...)}, 422),
    "rating event on /event": ("POST", "/event", {"json": with_(EVENT, event_type="rating")}, 422),
    "numeric event_type": ("POST", "/event", {"json": with_(EVENT, event_type=1)}, 422),
    "unparseable timestamp": ("POST", "/event", {"json": with_(EVENT, timestamp="yesterday")}, 422),
    "negative timestamp": ("POST", "/event", {"json": with_(EVENT, timestamp=-1)}, 422),
    "boolean timestamp": ("POST", "/event", {"json": with_(EVENT, timestamp=True)}, 422),
    "timestamp past year 9999": ("POST", "/event", {"json": with_(EVENT, timestamp=4.6e16)}, 422),
    "NUL in an item name": ("POST", "/items", {"json": {"item_id": "thing", "name": "a\u0000b"}}, 422),
    "NUL in a category": ("GET", "/items?category=%00", {}, 422),
    "non-ASCII id": ("GET", "/recommendations/%C3%A9", {}, 422),
    "offset past the database's integers": ("GET", "/items?offset=99999999999999999999", {}, 422),
    "negative price": ("POST", "/items", {"json": {"item_id": "thing", "name": "Thing", "price": -1}}, 422),
    "price as text": ("POST", "/items", {"json": {"item_id": "thing", "name": "Thing", "price": "9.99"}}, 422),
    "tags not a list": ("POST", "/items", {"json": {"item_id": "thing", "name": "Thing", "tags": "x"}}, 422),
    "boolean user on /users": ("POST", "/users", {"json": {"user_id": True}}, 422),
    # bad ids
    "empty id in body": ("POST", "/interactions", {"json": with_(RATED, user_id="")}, 422),
    "65-char id in body": ("POST", "/interactions", {"json": with_(RATED, user_id="u" * 65)}, 422),
    "id with a slash in body": ("POST", "/event", {"json": with_(EVENT, user_id="a/b")}, 422),
    "id with a space in body": ("POST", "/users", {"json": {"user_id": "a b"}}, 422),
    "id with a newline in body": ("POST", "/users", {"json": {"user_id": "alice\n"}}, 422),
    "65-char id in path": ("GET", "/recommendations/" + "u" * 65, {}, 422),
    "id with a space in path": ("GET", "/similar/a%20b", {}, 422),
    "id with a slash in path": ("GET", "/recommendations/a/b", {}, 404),
    "empty id in query": ("GET", "/realtime-recommend?user_id=", {}, 422),
    "65-char id in query": ("GET", "/recommend?user_id=" + "u" * 65, {}, 422),
    # count and paging
    "count abc": ("GET", "/recommendations/alice?count=abc", {}, 422),
    "count 0": ("GET", "/recommendations/alice?count=0", {}, 422),
    "count -1": ("GET", "/similar/iphone?count=-1", {}, 422),
    "count 1.5": ("GET", "/popular?count=1.5", {}, 422),
    "count 101": ("GET", "/recommend?case=popular&count=101", {}, 422),
    "count empty": ("GET", "/realtime-recommend?user_id=alice&count=", {}, 422),
    "limit 0": ("GET", "/items?limit=0", {}, 422),
    "limit 1001": ("GET", "/items?limit=1001", {}, 422),
    "offset -1": ("GET", "/items?offset=-1", {}, 422),
    # cases and methods
    "unknown case": ("GET", "/recommend?user_id=alice&case=magic", {}, 422),
    "unknown method": ("GET", "/recommend?user_id=alice&method=magic", {}, 422),
    "method with a non-hybrid case": ("GET", "/recommend?user_id=alice&case=collaborative&method=adaptive", {}, 422),
    "no user for hybrid": ("GET", "/recommend", {}, 422),
    "no user for content_based without product": ("GET", "/recommend?case=content_based", {}, 422),
    "no user for realtime": ("GET", "/realtime-recommend", {}, 422),
    "unknown realtime event_type": ("GET", "/realtime-recommend?user_id=alice&event_type=like", {}, 422),
    # unknown things
    "unknown item in an interaction": ("POST", "/interactions", {"json": with_(RATED, item_id="no_such_item")}, 404),
    "integer id of an unknown item": ("POST", "/interactions", {"json": with_(RATED, item_id=42)}, 404),
    "unknown product in an event": ("POST", "/event", {"json": with_(EVENT, product_id="no_such_item")}, 404),
    "unknown item for /similar": ("GET", "/similar/no_such_item", {}, 404),
    "unknown product for realtime": ("GET", "/realtime-recommend?user_id=alice&product_id=no_such_item", {}, 404),
    "unknown category": ("GET", "/popular?category=no_such_category", {}, 404),
    "unknown item": ("GET", "/items/no_such_item", {}, 404),
    "unknown user profile": ("GET", "/users/no_such_user", {}, 404),
    "unknown route": ("GET", "/no/such/route", {}, 404),
    "wrong method on a read route": ("DELETE", "/health", {}, 405),
    "wrong method on a write route": ("GET", "/interactions", {}, 405),
    "PUT on an item": ("PUT", "/items/iphone", {"json": {"name": "x"}}, 405),
}

CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
         415: "unsupported_media_type", 422: "validation_error"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """One app for the whole table: no bad request may change the store."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('errors') / 'store.db'}", redis_url=None)
    client = create_app(settings).test_client()
    yield client
    client.application.extensions["recommendation_service"].close()


@pytest.mark.parametrize(("method", "url", "kwargs", "status"), CASES.values(), ids=CASES.keys())
def test_bad_input_answers_json_error(client, method, url, kwargs, status):
    response = client.open(url, method=method, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/json"
    body = response.get_json()
    assert body["error"] == CODES[status] and isinstance(body["message"], str) and body["message"]
    if status == 422 and "details" in body:
        assert all(set(detail) == {"field", "message"} for detail in body["details"])


def test_validation_errors_name_every_bad_field(client):
    body = client.post("/interactions", json={"user_id": True, "item_id": "", "rating": 9}).get_json()
    assert {detail["field"] for detail in body["details"]} == {"user_id", "item_id", "rating"}


def test_method_not_allowed_lists_allowed_methods(client):
    assert "GET" in client.delete("/health").headers["Allow"]


def test_unexpected_error_is_json_500(client, monkeypatch):
    service = client.application.extensions["recommendation_service"]
    monkeypatch.setattr(service, "health", lambda: 1 / 0)
    response = client.get("/health")
    assert response.status_code == 500 and response.content_type == "application/json"
    assert response.get_json()["error"] == "internal_error"


def test_no_bad_request_reached_the_store(client):
    assert client.get("/users/visitor").status_code == 404
