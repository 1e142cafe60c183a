"""Property tests of filters and standing rules (hypothesis): for random catalogs, rule sets, filters and
users, no list from any engine read or HTTP route ever holds an unavailable item (available_only, the
default), an excluded category, a category outside `categories`, a price out of range, a banned item,
or more items of one brand or category than a cap allows; and a list shorter than `count` is short only
because nothing else qualifies (every qualifying item left out is in a brand or category at its cap).

The engine is built on each random catalog; the route test drives one app (the demo catalog) through
the Flask test client, with random availability and price edits (PATCH /items) and random rules.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import load_settings
from recommenders.business_rules import ItemFilter
from recommenders.engine import Engine
from recommenders.records import EventType, InteractionRecord, ItemRecord, LogEntry, LogKind, RuleKind, RuleRecord
from web import create_app

CATEGORIES = ["books", "kitchen", "garden", "toys"]
BRANDS = ["acme", "globex", "initech", ""]


@dataclass(frozen=True)
class Meta:
    """What the oracle needs of an item."""

    category: str
    brand: str
    price: float | None
    available: bool


def qualifies(meta: Meta, item_id: str, filters: ItemFilter, banned: set[str]) -> bool:
    """The filter and ban semantics, written out plainly, independently of the engine's masks."""
    if item_id in banned or (filters.available_only and not meta.available):
        return False
    if filters.categories is not None and meta.category not in filters.categories:
        return False
    if meta.category in filters.exclude_categories:
        return False
    if filters.min_price is not None and (meta.price is None or meta.price < filters.min_price):
        return False
    if filters.max_price is not None and (meta.price is None or meta.price > filters.max_price):
        return False
    return True


def check_list(listed: list[str], count: int, catalog: dict[str, Meta], eligible: set[str], filters: ItemFilter,
               banned: set[str], caps: dict[str, int]) -> None:
    """`eligible`: the items this list could hold before filters and rules (unseen, not the context item)."""
    assert len(listed) == len(set(listed)) <= count
    for item_id in listed:
        assert item_id in eligible
        assert qualifies(catalog[item_id], item_id, filters, banned), (item_id, catalog[item_id], filters)
    groups = {field: Counter(getattr(catalog[i], field) for i in listed if getattr(catalog[i], field))
              for field in caps}
    for field, limit in caps.items():
        assert all(n <= limit for n in groups[field].values()), (field, limit, groups[field])
    if len(listed) < count:  # full length unless every qualifying item left out is in a full group
        for item_id in eligible - set(listed):
            meta = catalog[item_id]
            if qualifies(meta, item_id, filters, banned):
                full = [field for field, limit in caps.items()
                        if getattr(meta, field) and groups[field][getattr(meta, field)] >= limit]
                assert full, f"{item_id} qualifies and fits every cap, but a list of {len(listed)} < {count} left it out"


prices = st.one_of(st.none(), st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda p: round(p, 2)))
item_metas = st.builds(Meta, st.sampled_from(CATEGORIES), st.sampled_from(BRANDS), prices, st.booleans())
def category_sets(min_size: int = 0) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(CATEGORIES + ["unknown"]), min_size=min_size, max_size=3,
                    unique=True).map(lambda c: tuple(sorted(c)))


@st.composite
def item_filters(draw) -> ItemFilter:
    low = draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False)))
    high = draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False)))
    if low is not None and high is not None and low > high:
        low, high = high, low
    return ItemFilter(categories=draw(st.one_of(st.none(), category_sets(min_size=1))),  # a query cannot send ()
                      exclude_categories=draw(category_sets()), min_price=low, max_price=high,
                      available_only=draw(st.booleans()))


@st.composite
def rule_sets(draw, item_ids: list[str]) -> list[RuleRecord]:
    rules = []
    for n, kind in enumerate(draw(st.lists(st.sampled_from(list(RuleKind)), max_size=4))):
        if kind is RuleKind.CAP:
            rule = RuleRecord(f"r{n}", kind, field=draw(st.sampled_from(["brand", "category"])),
                              limit=draw(st.integers(1, 4)))
        else:
            items = tuple(draw(st.lists(st.sampled_from(item_ids), min_size=1, max_size=5, unique=True)))
            rule = RuleRecord(f"r{n}", kind, items=items, factor=draw(st.floats(0.1, 50)) if kind is RuleKind.BOOST else None,
                              until=draw(st.sampled_from([None, 1.0, 4e9])) if kind is RuleKind.BOOST else None)
        rules.append(rule)
    return rules


def banned_and_caps(rules: list[RuleRecord]) -> tuple[set[str], dict[str, int]]:
    banned = {item for rule in rules if rule.kind is RuleKind.BAN for item in rule.items}
    caps: dict[str, int] = {}
    for rule in rules:
        if rule.kind is RuleKind.CAP:
            caps[rule.field] = min(rule.limit, caps.get(rule.field, math.inf))
    return banned, caps


@st.composite
def scenarios(draw):
    metas = draw(st.lists(item_metas, min_size=5, max_size=40))
    catalog = {f"i{n}": meta for n, meta in enumerate(metas)}
    ids = list(catalog)
    users = [f"u{n}" for n in range(draw(st.integers(1, 5)))]
    history = {user: draw(st.lists(st.sampled_from(ids), max_size=8)) for user in users}
    return catalog, history, draw(rule_sets(ids)), draw(item_filters()), draw(st.sampled_from(users + ["newcomer"])), \
        draw(st.integers(1, 15))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_lists_keep_filters_and_rules(scenario):
    catalog, history, rules, filters, user, count = scenario
    items = [ItemRecord(item_id, item_id, meta.category, meta.brand, price=meta.price, available=meta.available)
             for item_id, meta in catalog.items()]
    events = [InteractionRecord(u, item, EventType.VIEW, 1000.0 + n, seq=0)
              for u, seen in history.items() for n, item in enumerate(seen)]
    engine = Engine.build(items, list(history), events)
    engine.apply([LogEntry(engine.position + 1 + n, LogKind.RULE, rule=rule) for n, rule in enumerate(rules)])
    banned, caps = banned_and_caps(rules)
    seen = set(history.get(user, ()))
    unseen = set(catalog) - seen
    product = sorted(catalog)[0]

    def ids(recommendations) -> list[str]:
        return [r.item for r in recommendations]

    for case in ("hybrid", "popular", "collaborative", "content_based"):
        if user == "newcomer" and case not in ("hybrid", "popular"):
            continue
        check_list(ids(engine.recommend(user, count, case, filters=filters)), count, catalog,
                   unseen if user != "newcomer" else set(catalog), filters, banned, caps)
    check_list(ids(engine.recommend(None, count, "content_based", product_id=product, filters=filters)), count,
               catalog, set(catalog) - {product}, filters, banned, caps)
    check_list(ids(engine.realtime_recommend(user, count, product, filters=filters)), count, catalog,
               unseen - {product}, filters, banned, caps)
    check_list(ids(engine.similar_items(product, count, filters)), count, catalog, set(catalog) - {product},
               filters, banned, caps)
    check_list(ids(engine.popular_items(count, filters=filters)), count, catalog, set(catalog), filters, banned, caps)
    check_list(ids(engine.popular_items(count, trending=True, filters=filters)), count, catalog, set(catalog),
               filters, banned, caps)


# -- through HTTP ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(load_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('rules') / 'store.db'}",
                                   redis_url=None, rate_limit=""))
    yield app.test_client()
    app.extensions["recommendation_service"].close()


def query_string(filters: ItemFilter, count: int) -> dict:
    query = {"count": count, "available_only": "true" if filters.available_only else "false"}
    if filters.categories is not None:
        query["categories"] = ",".join(filters.categories)
    if filters.exclude_categories:
        query["exclude_categories"] = ",".join(filters.exclude_categories)
    for bound in ("min_price", "max_price"):
        if getattr(filters, bound) is not None:
            query[bound] = repr(getattr(filters, bound))
    return query


@st.composite
def http_scenarios(draw, item_ids: list[str], users: list[str]):
    edits = draw(st.lists(st.tuples(st.sampled_from(item_ids), st.booleans(), prices), max_size=6))
    return edits, draw(rule_sets(item_ids)), draw(item_filters()), draw(st.sampled_from(users)), draw(st.integers(1, 25))


def test_routes_keep_filters_and_rules(client):
    """Random edits, rules, filters and users through every list route; the demo catalog's categories
    (electronics, kitchen, furniture, books) are mixed with the strategies' own, which then match nothing."""
    page = client.get("/items?limit=1000").get_json()["items"]
    ids = [item["item_id"] for item in page]
    users = ["alice", "bob", "carol", "newcomer"]

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(http_scenarios(ids, users))
    def check(scenario):
        edits, rules, filters, user, count = scenario
        for item_id, available, price in edits:
            assert client.patch(f"/items/{item_id}", json={"available": available, "price": price}).status_code == 200
        made = []
        for rule in rules:
            body = {key: value for key, value in rule.as_dict().items() if key not in ("rule_id", "created_at")}
            response = client.post("/rules", json=body)
            assert response.status_code == 201, response.get_json()
            made.append(response.get_json()["rule_id"])
        try:
            catalog = {item["item_id"]: Meta(item["category"], item["brand"], item["price"], item["available"])
                       for item in client.get("/items?limit=1000").get_json()["items"]}
            profile = client.get(f"/users/{user}")
            seen = {entry["item_id"] for entry in profile.get_json()["history"]} if profile.status_code == 200 else set()
            assert profile.status_code == 404 or profile.get_json()["interactions"] <= 20  # the history is complete
            banned, caps = banned_and_caps(rules)
            query = query_string(filters, count)
            unseen = set(catalog) - seen
            product = "iphone"
            lists = {
                f"/recommendations/{user}": ("recommendations", unseen),
                "/recommend": ("recommendations", unseen),
                "/realtime-recommend": ("recommendations", unseen - {product}),
                f"/similar/{product}": ("similar", set(catalog) - {product}),
                "/popular": ("items", set(catalog)),
            }
            for route, (key, eligible) in lists.items():
                extra = {"user_id": user, "product_id": product} if route == "/realtime-recommend" else \
                    {"user_id": user} if route == "/recommend" else {}
                response = client.get(route, query_string={**query, **extra})
                assert response.status_code == 200, (route, response.get_json())
                listed = [r["item"] for r in response.get_json()[key]]
                check_list(listed, count, catalog, eligible, filters, banned, caps)
        finally:
            for rule_id in made:
                assert client.delete(f"/rules/{rule_id}").status_code == 200

    check()
