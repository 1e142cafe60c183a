"""Filters and business rules through the public interfaces: item availability and attributes, PATCH
against POST, the list filters and their validation, standing rules (ban, boost until a time, caps)
on every list route, the POST /event answer and the Socket.IO push, cached answers that a rule or an
item edit retires, the API key on the new write routes, and rules that every process and a restart
learn from the store's log (SQLite and PostgreSQL).
"""
from __future__ import annotations

import time
import uuid
from collections import Counter

import pytest
import requests

from config import load_settings
from recommenders.engine import Engine
from recommenders.records import EventType, InteractionRecord, ItemRecord, LogEntry, LogKind, RuleKind, RuleRecord
from service import RecommendationService
from test_realtime_push import Subscriber
from web import create_app

KEY = "rules-key-0123456789"
LIST_ROUTES = {  # route -> (its own query, the answer's list)
    "/recommendations/alice": ({}, "recommendations"),
    "/recommend": ({"user_id": "alice"}, "recommendations"),
    "/realtime-recommend": ({"user_id": "alice", "product_id": "iphone"}, "recommendations"),
    "/similar/iphone": ({}, "similar"),
    "/popular": ({}, "items"),
}


@pytest.fixture(scope="module")
def client(service):
    return create_app(service.settings, service=service).test_client()


@pytest.fixture
def rule(client):
    """Sets rules for one test and removes them after it, so the module's shared store stays clean."""
    made = []

    def add(**body) -> dict:
        response = client.post("/rules", json=body)
        assert response.status_code == 201, response.get_json()
        made.append(response.get_json()["rule_id"])
        return response.get_json()

    yield add
    for rule_id in made:
        client.delete(f"/rules/{rule_id}")


def listed(client, route: str, **query) -> list[str]:
    own, key = LIST_ROUTES[route]
    response = client.get(route, query_string={**own, **query})
    assert response.status_code == 200, response.get_json()
    return [r["item"] for r in response.get_json()[key]]


def catalog(client) -> dict[str, dict]:
    return {item["item_id"]: item for item in client.get("/items?limit=1000").get_json()["items"]}


def new_item(client, **fields) -> str:
    item_id = f"item-{uuid.uuid4().hex[:8]}"
    body = {"item_id": item_id, "name": "Test item", "category": "kitchen", **fields}
    assert client.post("/items", json=body).status_code == 201
    return item_id


# -- item fields, PATCH against POST --------------------------------------------------------------

def test_items_carry_availability_and_attributes_and_patch_changes_only_what_it_names(client):
    item_id = new_item(client, brand="Bialetti", price=39.9, tags=["coffee"], attributes={"colour": "red", "cups": 6})
    item = client.get(f"/items/{item_id}").get_json()
    assert item["available"] is True and item["attributes"] == {"colour": "red", "cups": 6}

    patched = client.patch(f"/items/{item_id}", json={"available": False, "price": 35.0})
    assert patched.status_code == 200
    assert patched.get_json() == {**item, "available": False, "price": 35.0}
    assert client.get(f"/items/{item_id}").get_json() == patched.get_json()

    replaced = client.post("/items", json={"item_id": item_id, "name": "Renamed"}).get_json()["item"]
    assert replaced["brand"] == "" and replaced["tags"] == [] and replaced["attributes"] == {}  # POST replaces all
    assert replaced["available"] is True and replaced["price"] is None


@pytest.mark.parametrize("body, field", [
    ({}, "body"),
    ({"colour": "red"}, "colour"),
    ({"name": None}, "name"),
    ({"name": ""}, "name"),
    ({"available": "no"}, "available"),
    ({"price": -1}, "price"),
    ({"attributes": {"size": {"nested": 1}}}, "attributes"),
    ({"attributes": {"n": 2**60}}, "attributes"),
    ({"attributes": {f"k{n}": n for n in range(51)}}, "attributes"),
])
def test_patch_refuses_bad_fields_with_422(client, body, field):
    response = client.patch("/items/iphone", json=body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"] == "validation_error"
    assert any(detail["field"].startswith(field) for detail in response.get_json()["details"]), response.get_json()


def test_patch_of_an_unknown_item_is_404(client):
    response = client.patch("/items/no-such-item", json={"available": False})
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


# -- filters --------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    {"min_price": "50", "max_price": "10"},
    {"min_price": "-1"},
    {"max_price": "nan"},
    {"max_price": "cheap"},
    {"available_only": "maybe"},
    {"categories": ",".join(f"c{n}" for n in range(51))},
    {"categories": ""},
    {"exclude_categories": "books,,kitchen"},
])
def test_bad_filters_get_422_on_every_list_route(client, query):
    for route, (own, _) in LIST_ROUTES.items():
        response = client.get(route, query_string={**own, **query})
        assert response.status_code == 422, (route, query, response.get_json())
        assert response.get_json()["error"] == "validation_error"
        assert all(detail["field"] != "body" for detail in response.get_json()["details"])  # a query has none


def test_filters_apply_before_the_top_k_so_lists_stay_full_length(client):
    items = catalog(client)
    for route in LIST_ROUTES:
        excluded = listed(client, route, exclude_categories="electronics,kitchen", count=30)
        assert len(excluded) == 30
        assert not {items[i]["category"] for i in excluded} & {"electronics", "kitchen"}
        only = listed(client, route, categories="books", count=20)
        assert len(only) == 20 and {items[i]["category"] for i in only} == {"books"}
        priced = listed(client, route, min_price="20", max_price="60", count=25)
        assert len(priced) == 25 and all(20 <= items[i]["price"] <= 60 for i in priced)
        assert listed(client, route, categories="no-such-category") == []  # matches nothing, no error


def test_an_unavailable_item_leaves_every_list_at_once_even_a_cached_one(client):
    top = listed(client, "/popular", count=5)
    assert client.get("/popular", query_string={"count": 5}).get_json()["source"] == "cache"
    assert client.patch(f"/items/{top[0]}", json={"available": False}).status_code == 200
    try:
        for route in LIST_ROUTES:
            assert top[0] not in listed(client, route, count=100), route
        assert top[0] in listed(client, "/popular", count=5, available_only="false")
    finally:
        client.patch(f"/items/{top[0]}", json={"available": True})
    assert listed(client, "/popular", count=5) == top


# -- standing rules -------------------------------------------------------------------------------

def test_rules_are_listed_and_deleted(client, rule):
    ban = rule(type="ban", items=["iphone", "iphone", "ipad"])
    cap = rule(type="cap", field="brand", limit=2)
    assert ban["items"] == ["iphone", "ipad"] and set(ban) == {"rule_id", "type", "items", "created_at"}
    assert set(cap) == {"rule_id", "type", "field", "limit", "created_at"}
    shown = client.get("/rules").get_json()["rules"]
    assert [r["rule_id"] for r in shown][-2:] == [ban["rule_id"], cap["rule_id"]]
    assert client.delete(f"/rules/{ban['rule_id']}").get_json() == {"rule_id": ban["rule_id"], "status": "deleted"}
    assert ban["rule_id"] not in [r["rule_id"] for r in client.get("/rules").get_json()["rules"]]
    assert client.delete(f"/rules/{ban['rule_id']}").status_code == 404


@pytest.mark.parametrize("body", [
    {"type": "ban", "items": []},
    {"type": "ban"},
    {"type": "boost", "items": ["iphone"], "factor": 0},
    {"type": "boost", "items": ["iphone"], "factor": 2, "until": "next week"},
    {"type": "cap", "field": "colour", "limit": 2},
    {"type": "cap", "field": "brand", "limit": 0},
    {"type": "cap", "field": "brand", "limit": 2, "items": ["iphone"]},
    {"type": "sell"},
])
def test_bad_rules_get_422(client, body):
    response = client.post("/rules", json=body)
    assert response.status_code == 422, response.get_json()


def test_a_banned_item_is_in_no_list_and_the_event_answer(client, rule):
    before = {route: listed(client, route, count=50) for route in LIST_ROUTES}
    banned = {route: items[0] for route, items in before.items()}
    rule(type="ban", items=sorted(set(banned.values())))
    for route in LIST_ROUTES:
        now = listed(client, route, count=50)
        assert len(now) == 50 and not set(now) & set(banned.values()), route
    answer = client.post("/event", json={"user_id": "alice", "product_id": "macbook", "event_type": "view"})
    assert not {r["item"] for r in answer.get_json()["recommendations"]} & set(banned.values())
    assert listed(client, "/popular", available_only="false", count=50)[0] != banned["/popular"]  # never shown


def test_a_boost_lifts_items_until_it_ends_by_itself(client, rule):
    ranked = listed(client, "/popular", count=100)
    lifted = ranked[60]
    rule(type="boost", items=[lifted], factor=1000, until=time.time() + 1.5)
    assert listed(client, "/popular", count=10)[0] == lifted
    time.sleep(1.6)
    assert listed(client, "/popular", count=100).index(lifted) == 60  # the cached boosted list is not served


def test_a_cap_keeps_lists_diverse_and_still_full_when_enough_items_qualify(client, rule):
    items = catalog(client)
    rule(type="cap", field="category", limit=1)
    for route in LIST_ROUTES:
        shown = listed(client, route, count=10)
        categories = Counter(items[i]["category"] for i in shown)
        assert max(categories.values()) == 1, (route, categories)
        # one item per category qualifies, and every item without a category (none of them alice's)
        qualifying = len({item["category"] for item in items.values() if item["category"]}) + \
            sum(1 for item in items.values() if not item["category"])
        assert len(shown) == min(10, qualifying), route


def test_a_cap_looks_past_the_head_of_the_ranking():
    """The engine ranks 4k candidates first; here all of them are kitchen items, and the lone chair,
    ranked last, must still fill the second place of a list capped at one item per category."""
    items = [ItemRecord(f"pan-{n}", "Pan", "kitchen") for n in range(12)] + [ItemRecord("chair", "Chair", "furniture")]
    events = [InteractionRecord(f"shopper-{n}", f"pan-{n}", EventType.PURCHASE, 1000.0) for n in range(12)]
    engine = Engine.build(items, [f"shopper-{n}" for n in range(12)], events)
    engine.apply([LogEntry(engine.position + 1, LogKind.RULE, rule=RuleRecord("cap", RuleKind.CAP, field="category",
                                                                               limit=1))])
    shown = [r.item for r in engine.popular_items(2)]
    assert shown[0].startswith("pan-") and shown[1] == "chair"


# -- the API key ----------------------------------------------------------------------------------

def test_the_new_write_routes_need_the_key_and_reads_do_not(service):
    secured = create_app(service.settings.model_copy(update={"api_key": KEY}), service=service).test_client()
    assert secured.patch("/items/iphone", json={"available": True}).status_code == 401
    assert secured.post("/rules", json={"type": "cap", "field": "brand", "limit": 3}).status_code == 401
    assert secured.delete("/rules/anything").status_code == 401
    assert secured.get("/rules").status_code == 200
    made = secured.post("/rules", json={"type": "cap", "field": "brand", "limit": 3}, headers={"X-API-Key": KEY})
    assert made.status_code == 201
    assert secured.delete(f"/rules/{made.get_json()['rule_id']}", headers={"X-API-Key": KEY}).status_code == 200
    assert secured.patch("/items/iphone", json={"available": True}, headers={"X-API-Key": KEY}).status_code == 200


# -- every process, and a restart, learn the rules from the log ------------------------------------

def test_every_process_and_a_restart_apply_rules_and_item_edits(database_url):
    settings = load_settings(database_url=database_url, redis_url=None, rate_limit="")
    first = RecommendationService.create(settings)
    second = RecommendationService.create(settings)
    try:
        top = [r.item for r in second.popular(5).recommendations]
        rule = first.add_rule(_ban(top[0]))
        first.patch_item(top[1], {"available": False})
        second.catch_up()  # what its log follower does
        assert not {top[0], top[1]} & {r.item for r in second.popular(5).recommendations}
        first.retrain()  # the artifact now covers the rule's entry, which a restart does not replay
        restarted = RecommendationService.create(settings)
        try:
            assert not {top[0], top[1]} & {r.item for r in restarted.popular(5).recommendations}
            assert restarted.get_item(top[1]).available is False
            first.delete_rule(rule.rule_id)
            restarted.catch_up()
            assert top[0] in [r.item for r in restarted.popular(5).recommendations]
        finally:
            restarted.close()
    finally:
        first.close()
        second.close()


def _ban(item_id: str):
    from web.schemas import RuleBody
    return RuleBody.model_validate({"type": "ban", "items": [item_id]}).to_record()


# -- pushes ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_push_keeps_the_rules(server):
    user = f"pushed-{uuid.uuid4().hex[:6]}"
    shown = requests.get(f"{server.url}/realtime-recommend",
                         params={"user_id": user, "product_id": "coffee_maker", "count": 3}, timeout=5).json()
    banned = [r["item"] for r in shown["recommendations"]]
    assert requests.post(f"{server.url}/rules", json={"type": "ban", "items": banned}, timeout=5).status_code == 201
    subscriber = Subscriber(server.url, user)
    try:
        requests.post(f"{server.url}/event", json={"user_id": user, "product_id": "coffee_maker",
                                                   "event_type": "view"}, timeout=5)
        pushed = [r["item"] for r in subscriber.wait_for_push()["recommendations"]]
        assert pushed and not set(pushed) & set(banned)
    finally:
        subscriber.close()


# -- a store made before items had these fields ---------------------------------------------------

def test_a_store_made_before_rules_and_item_availability_is_upgraded_at_start(database_url):
    """Drop what this change added, as an older version's store lacks it; opening the store adds it back."""
    import sqlalchemy as sa

    from storage import Store

    store = Store(database_url)
    store.upsert_items([ItemRecord("kettle", "Kettle", "kitchen")])
    store.close()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE items DROP COLUMN available")
        conn.exec_driver_sql("ALTER TABLE items DROP COLUMN attributes")
        conn.exec_driver_sql("DROP TABLE rules")
    engine.dispose()

    store = Store(database_url)
    try:
        assert store.get_item("kettle") == ItemRecord("kettle", "Kettle", "kitchen")  # available, no attributes
        assert store.patch_item("kettle", {"available": False}).available is False
        rule = store.add_rule(RuleRecord("r1", RuleKind.CAP, field="brand", limit=2))
        assert store.rules() == [rule]
        assert [entry.kind for entry in store.read_log(0)] == [LogKind.ITEM, LogKind.ITEM, LogKind.RULE]
    finally:
        store.close()
