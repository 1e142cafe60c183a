"""The demo data must be deterministic, internally consistent and tell the README's story."""
from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from preprocess.demo_catalog import demo_interactions, demo_items, demo_user_ids
from recommenders.records import EventType

README_ITEM_CATEGORIES = {
    "iphone": "electronics", "macbook": "electronics", "ipad": "electronics", "airpods": "electronics",
    "coffee_maker": "kitchen", "kitchen_knife": "kitchen", "cookbook": "kitchen", "gaming_chair": "furniture",
}
README_RATINGS = {
    "alice": {"iphone": 5, "macbook": 4, "coffee_maker": 3},
    "bob": {"iphone": 5, "macbook": 4, "gaming_chair": 5},
    "carol": {"coffee_maker": 4, "kitchen_knife": 5, "cookbook": 4},
}


@pytest.fixture(scope="module")
def items():
    return demo_items()


@pytest.fixture(scope="module")
def events():
    return demo_interactions()


def test_every_call_returns_the_same_data(items, events):
    assert demo_items() == items
    assert demo_interactions() == events
    assert demo_user_ids() == demo_user_ids()


def test_readme_items_exist_with_their_categories(items):
    by_id = {item.item_id: item for item in items}
    for item_id, category in README_ITEM_CATEGORIES.items():
        assert by_id[item_id].category == category
        assert by_id[item_id].name and by_id[item_id].description and by_id[item_id].tags
    assert {by_id[i].brand for i in ("iphone", "macbook", "ipad", "airpods")} == {"Apple"}


def test_readme_users_have_exactly_their_readme_ratings(events):
    for user, expected in README_RATINGS.items():
        own = [e for e in events if e.user_id == user]
        assert all(e.event_type is EventType.RATING for e in own)
        assert {e.item_id: e.rating for e in own} == expected
        assert len(own) == len(expected)


def test_item_ids_are_unique(items):
    ids = [item.item_id for item in items]
    assert len(ids) == len(set(ids))


def test_users_are_unique_and_include_readme_users(events):
    users = demo_user_ids()
    assert len(users) == len(set(users))
    assert set(README_RATINGS) <= set(users)
    assert {e.user_id for e in events} <= set(users)


def test_every_interaction_references_an_existing_item(items, events):
    ids = {item.item_id for item in items}
    assert all(e.item_id in ids for e in events)


def test_all_four_categories_have_at_least_fifty_items(items):
    counts = Counter(item.category for item in items)
    assert set(counts) == {"electronics", "kitchen", "furniture", "books"}
    assert min(counts.values()) >= 50


def test_generated_items_are_well_formed(items):
    for item in items:
        assert item.name and item.brand and item.description
        assert 3 <= len(item.tags) <= 6
        assert item.price is not None and item.price > 0


def test_only_rating_events_carry_a_rating_from_one_to_five(events):
    for e in events:
        if e.event_type is EventType.RATING:
            assert e.rating in {1, 2, 3, 4, 5}
        else:
            assert e.rating is None
        assert e.seq == 0 and e.event_id is None


def test_every_purchase_follows_a_view_of_the_same_item_by_the_same_user(events):
    viewed: set[tuple[str, str]] = set()
    for e in events:
        if e.event_type is EventType.VIEW:
            viewed.add((e.user_id, e.item_id))
        elif e.event_type is EventType.PURCHASE:
            assert (e.user_id, e.item_id) in viewed


def test_timestamps_are_non_decreasing(events):
    stamps = [e.timestamp for e in events]
    assert stamps == sorted(stamps)


def test_funnel_narrows_from_views_to_purchases(events):
    counts = Counter(e.event_type for e in events)
    assert counts[EventType.VIEW] > counts[EventType.ADD_TO_CART] > counts[EventType.PURCHASE] > 0
    assert len(events) < 5000


def test_several_users_rate_all_apple_products_together(events):
    rated: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.event_type is EventType.RATING:
            rated[e.user_id].add(e.item_id)
    assert sum({"iphone", "macbook", "ipad", "airpods"} <= ids for ids in rated.values()) >= 3
