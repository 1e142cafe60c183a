"""The learned second stage (recommenders/ranker.py) through the engine's public interface.

A planted shop: old items sold all year, new items released late in it. Every shopper's latest
purchases are new releases of their favourite category, so what comes next is "new and in my
category", which the blend (neighbours, popularity, text) does not know and the item's age tells.
The ranker must learn that, be kept and serve, survive an artifact round trip, and stand aside
where it cannot help (a small shop, RANKER off).
"""
from __future__ import annotations

import numpy as np
import pytest

from recommenders.artifacts import load_engine, write_artifact
from recommenders.business_rules import ItemFilter
from recommenders.engine import Engine
from recommenders.records import EventType, InteractionRecord, ItemRecord

DAY = 86400.0
CATEGORIES = ("garden", "kitchen", "toys", "books")
OLD, NEW = 12, 8  # items per category


def _catalog() -> tuple[list[ItemRecord], dict[str, bool]]:
    items, is_new = [], {}
    for category in CATEGORIES:
        for index in range(OLD + NEW):
            item_id = f"{category}-{index}"
            items.append(ItemRecord(item_id, f"{category.title()} item {index}", category, "Acme",
                                    f"{category} goods"))
            is_new[item_id] = index >= OLD
    return items, is_new


def _planted_shop(users: int, seed: int = 7) -> tuple[list[ItemRecord], list[InteractionRecord], dict[str, bool]]:
    """Each shopper buys 12 old items of mostly one category over 300 days, and 3 new releases of
    that category (released on day 270) in the last 30; every other shopper buys one release early."""
    items, is_new = _catalog()
    rng = np.random.default_rng(seed)
    events = []

    def shopper(user: str, favourite: str, releases: int) -> None:
        for t in np.sort(rng.uniform(0, 300, 12)):
            category = favourite if rng.random() < 0.7 else CATEGORIES[rng.integers(len(CATEGORIES))]
            events.append(InteractionRecord(user, f"{category}-{rng.zipf(1.5) % OLD}", EventType.PURCHASE, t * DAY))
        early = max(releases - 3, 0)  # one release bought before day 300, the rest after it
        times = np.r_[rng.uniform(270, 300, early), np.sort(rng.uniform(300, 330, releases - early))]
        for index, t in zip(rng.choice(NEW, releases, replace=False), times):
            events.append(InteractionRecord(user, f"{favourite}-{OLD + index}", EventType.PURCHASE, t * DAY))

    for user in range(users):
        shopper(f"u{user}", CATEGORIES[user % len(CATEGORIES)], 3 + user % 2)
    return items, events, is_new


@pytest.fixture(scope="module")
def shop() -> tuple[Engine, dict[str, bool]]:
    items, events, is_new = _planted_shop(400)
    return Engine.build(items, sorted({e.user_id for e in events}), events, ranker="temporal"), is_new


def test_the_ranker_learns_what_the_blend_misses_is_kept_and_serves(shop):
    """On held-back shoppers, the ranker puts their next purchases (new releases: the item's age tells)
    far above where the blend has them; and the served lists are its order, not the blend's."""
    engine, _ = shop
    report = engine.ranker_report
    assert engine.ranker is not None and report["kept"] and report["split"] == "temporal"
    assert report["validation_ndcg@10_ranker"] > 2 * report["validation_ndcg@10_blend"], report
    users = [f"u{i}" for i in range(0, 400, 9)]
    ranked = [[r.item for r in engine.recommend(user, 10)] for user in users]
    ranker, engine.hybrid.ranker = engine.hybrid.ranker, None
    try:
        blended = [[r.item for r in engine.recommend(user, 10)] for user in users]
    finally:
        engine.hybrid.ranker = ranker
    assert sum(a != b for a, b in zip(ranked, blended)) > len(users) // 2


def test_an_artifact_serves_the_same_ranked_lists(shop, tmp_path):
    engine, _ = shop
    loaded = load_engine(write_artifact(engine, tmp_path))
    assert loaded.ranker is not None and loaded.ranker_report == engine.ranker_report
    for user in ("u1", "u2", "u3", "u50"):
        assert [(r.item, r.score, r.strategy) for r in loaded.recommend(user, 10)] == \
               [(r.item, r.score, r.strategy) for r in engine.recommend(user, 10)]


def test_a_filter_leaving_few_candidates_still_fills_the_list(shop):
    """The ranker sees ~100 candidates; a filter may leave fewer than k of them, and the rest of
    the list comes from the blend's order below them."""
    engine, _ = shop
    books = engine.recommend("u0", 20, filters=ItemFilter(categories=("books",)))  # u0 is a gardener
    assert len(books) == 20 and {r.item.split("-")[0] for r in books} == {"books"}


def test_a_fresh_event_reaches_the_ranked_list_at_once(shop):
    engine, _ = shop
    before = [r.item for r in engine.recommend("u5", 10)]
    engine.observe(InteractionRecord("u5", before[0], EventType.PURCHASE, 331 * DAY))
    assert before[0] not in [r.item for r in engine.recommend("u5", 10)]


def test_a_small_shop_serves_the_blend_and_says_why():
    items, events, _ = _planted_shop(30)
    engine = Engine.build(items, sorted({e.user_id for e in events}), events, ranker="temporal")
    assert engine.ranker is None and not engine.ranker_report["kept"]
    assert "under 100 users" in engine.ranker_report["reason"]
    assert len(engine.recommend("u1", 10)) == 10


def test_ranker_off_by_default_and_an_unknown_split_is_refused():
    items, events, _ = _planted_shop(150)
    users = sorted({e.user_id for e in events})
    assert Engine.build(items, users, events).ranker is None
    with pytest.raises(ValueError, match="unknown ranker split"):
        Engine.build(items, users, events, ranker="sideways")
