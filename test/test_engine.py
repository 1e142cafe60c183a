"""The engine and its recommenders through their public interfaces, on small hand-made data."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recommenders.base import normalise, top_k
from recommenders.collaborative import keep_top_per_row
from recommenders.engine import Engine, UnknownKeyError, cases
from recommenders.records import EventType, InteractionRecord, ItemRecord
from recommenders.sparse_state import CooccurrenceCounts, IncrementalMatrix

FRUIT = [ItemRecord(f"fruit{i}", f"Fruit {i}", "fruit", "Orchard", "sweet fresh fruit juicy", ("fresh",)) for i in range(6)]
TOOLS = [ItemRecord(f"tool{i}", f"Tool {i}", "tools", "Forge", "steel hammer wrench sturdy", ("steel",)) for i in range(6)]
ITEMS = FRUIT + TOOLS


def rating(user: str, item: str, value: float, t: float = 0.0) -> InteractionRecord:
    return InteractionRecord(user, item, EventType.RATING, t, rating=value)


def event(user: str, item: str, kind: EventType, t: float = 0.0) -> InteractionRecord:
    return InteractionRecord(user, item, kind, t)


@pytest.fixture
def engine() -> Engine:
    """Fruit lovers and tool lovers; 'fan' has rated two fruits only."""
    return Engine.build(ITEMS, ["fan"], _initial_history())


def ids(recommendations) -> list[str]:
    return [r.item for r in recommendations]


@pytest.mark.parametrize("case", cases())
def test_every_case_ranks_the_users_taste_first_and_never_repeats_seen_items(engine, case):
    result = ids(engine.recommend("fan", 3, case))
    assert len(result) == 3
    assert not {"fruit0", "fruit1"} & set(result)
    if case != "popular":
        assert all(item.startswith("fruit") for item in result), result


def test_unknown_user_gets_popular_items_not_an_error(engine):
    result = engine.recommend("stranger", 4)
    assert len(result) == 4 and {r.strategy for r in result} == {"popular"}


def test_an_event_changes_the_next_answer_without_a_refit(engine):
    before = ids(engine.recommend("newcomer", 3, "content_based"))
    for item in ("tool0", "tool1", "tool2"):
        engine.observe(event("newcomer", item, EventType.VIEW))
    after = ids(engine.recommend("newcomer", 3, "content_based"))
    assert after != before
    assert all(item.startswith("tool") and item not in ("tool0", "tool1", "tool2") for item in after)


def test_purchases_weigh_more_than_views_in_behaviour(engine):
    engine.observe(event("shopper", "fruit0", EventType.VIEW, t=1))
    engine.observe(event("shopper", "tool0", EventType.PURCHASE, t=2))
    assert engine.recommend("shopper", 1, "behavior_based")[0].item.startswith("tool")


def test_cooccurrence_grows_with_each_event(engine):
    # Nobody has ever touched fruit5 and tool5 together; two users doing so links them.
    assert "tool5" not in ids(engine.realtime_recommend(None, 3, "fruit5"))
    for user in ("a", "b"):
        engine.observe(event(user, "fruit5", EventType.PURCHASE))
        engine.observe(event(user, "tool5", EventType.PURCHASE))
    # Right after buying fruit5, complements lead ("bought together"); while viewing, look-alikes count as much.
    assert ids(engine.realtime_recommend(None, 1, "fruit5", EventType.PURCHASE)) == ["tool5"]
    assert ids(engine.realtime_recommend(None, 1, "fruit5", EventType.VIEW))[0].startswith("fruit")


def test_a_new_item_is_recommendable_at_once_by_content(engine):
    engine.add_item(ItemRecord("fruit_new", "Fruit new", "fruit", "Orchard", "sweet fresh fruit juicy", ("fresh",)))
    assert "fruit_new" in ids(engine.similar_items("fruit0", 6))
    engine.observe(event("fan", "fruit_new", EventType.VIEW))  # and events on it are accepted


def test_category_filter_and_unknown_keys(engine):
    assert all(r.item.startswith("tool") for r in engine.recommend("fan", 3, "hybrid", category="tools"))
    with pytest.raises(UnknownKeyError):
        engine.recommend("fan", 3, category="nope")
    with pytest.raises(UnknownKeyError):
        engine.similar_items("nope", 3)
    with pytest.raises(UnknownKeyError):
        engine.observe(event("fan", "nope", EventType.VIEW))


def test_hybrid_weights_follow_history_size(engine):
    data, hybrid = engine.data, engine.hybrid
    fan = data.users.get("fan")
    assert hybrid.weights(data, fan) == pytest.approx({"collaborative": 0.3, "content": 0.7})
    heavy = data.users.get("fruitlover0")
    for i in range(20):
        engine.add_item(ItemRecord(f"extra{i}", f"Extra {i}", "fruit"))
        engine.observe(event("fruitlover0", f"extra{i}", EventType.VIEW))
    assert hybrid.weights(data, heavy) == pytest.approx({"collaborative": 0.7, "content": 0.3})
    assert list(hybrid.weights(data, fan, "switching")) == ["content"]
    assert sum(hybrid.weights(data, fan, "adaptive").values()) == pytest.approx(1.0)


def test_collaborative_predicts_ratings_on_the_rating_scale(engine):
    result = engine.recommend("fan", 3, "collaborative")
    predicted = [r.extra["predicted_rating"] for r in result if "predicted_rating" in r.extra]
    assert predicted and all(1.0 <= p <= 5.0 for p in predicted)
    assert all(0.0 <= r.score <= 1.0 for r in result)


def test_a_rebuild_that_replays_the_same_events_ranks_the_same(engine):
    """What a restart does: fit on the same log, replay the later events; user order must not matter."""
    later = [event("fan", "tool0", EventType.VIEW, t=20), rating("newcomer", "fruit3", 5, t=21)]
    for record in later:
        engine.observe(record)
    rebuilt = Engine.build(ITEMS, list(reversed(engine.data.users.ids_of(np.arange(engine.data.n_users)))),
                           _initial_history())
    for record in later:
        rebuilt.observe(record)
    for case in cases():
        for user in ("fan", "newcomer"):
            assert ids(rebuilt.recommend(user, 5, case)) == ids(engine.recommend(user, 5, case))


def _initial_history() -> list[InteractionRecord]:
    history = []
    for u in range(4):
        history += [rating(f"fruitlover{u}", f"fruit{i}", 5, t=i) for i in range(5)]
        history += [rating(f"toollover{u}", f"tool{i}", 5, t=i) for i in range(5)]
    return history + [rating("fan", "fruit0", 5, t=10), rating("fan", "fruit1", 4, t=11)]


def test_top_k_excludes_masks_and_breaks_ties_by_index():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.9])
    items, values = top_k(scores, 2, exclude=np.array([1]))
    assert items.tolist() == [2, 4] and values.tolist() == [0.9, 0.9]
    items, _ = top_k(scores, 10, allowed=np.array([True, False, False, True, False]))
    assert items.tolist() == [0, 3]


def test_normalise_puts_any_scale_on_zero_to_one():
    assert normalise(np.array([1.0, 3.0, 5.0])).tolist() == [0.0, 0.5, 1.0]
    assert normalise(np.array([2.0, 2.0])).tolist() == [1.0, 1.0]
    assert normalise(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_keep_top_per_row_keeps_the_largest_entries():
    matrix = sp.csr_matrix(np.array([[0.1, 0.5, 0.3, 0.0], [0.0, 0.2, 0.0, 0.9]]))
    kept = keep_top_per_row(matrix, 1).toarray()
    assert kept.tolist() == [[0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.9]]


def test_incremental_matrix_overlay_equals_a_rebuild():
    rows, cols, vals = np.array([0, 1, 1]), np.array([0, 1, 1]), np.array([1.0, 2.0, 3.0])
    added = IncrementalMatrix.from_triples(rows, cols, vals, (2, 3), "add")
    replaced = IncrementalMatrix.from_triples(rows, cols, vals, (2, 3), "replace")
    assert added.snapshot.toarray()[1, 1] == 5.0 and replaced.snapshot.toarray()[1, 1] == 3.0
    added.update(1, 2, 4.0)
    added.update(3, 0, 1.0)  # a row beyond the snapshot: the matrix grows
    assert added.row(1)[1].tolist() == [5.0, 4.0]
    added.compact()
    assert added.pending_rows == 0
    assert added.snapshot.toarray().tolist() == [[1, 0, 0], [0, 5, 4], [0, 0, 0], [1, 0, 0]]
    assert added.value(1, 2) == 4.0 and added.value(1, 0) == 0.0 and replaced.value(1, 1) == 3.0


def test_cooccurrence_touches_equal_a_rebuild_before_and_after_compaction():
    """A touch adds the pair both ways; rows read before compaction already hold it, new items included."""
    counts = CooccurrenceCounts(sp.csr_matrix(np.array([[0.0, 2.0], [2.0, 0.0]])))
    counts.touch(1, np.array([0]))
    counts.touch(3, np.array([0, 1]))  # item 3 is newer than the snapshot (and item 2 has no pairs)
    expected = np.array([[0, 3, 0, 1], [3, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=float)
    rows = np.array([3, 0, 2])
    assert counts.rows(rows).toarray().tolist() == expected[rows].tolist()
    counts.compact()
    assert counts.pending_rows == 0
    assert counts.snapshot.toarray().tolist() == expected.tolist()
    assert counts.rows(rows).toarray().tolist() == expected[rows].tolist()


def test_trending_favours_recent_activity_over_old_popularity(engine):
    now = engine.data.trending.reference
    for user in ("x", "y"):
        engine.observe(event(user, "tool5", EventType.PURCHASE, t=now))
    assert ids(engine.popular_items(1, trending=True)) == ["tool5"]
    assert ids(engine.popular_items(1)) != ["tool5"]  # all-time popularity still favours the old hits
    engine.rebase_trending(now + 3 * 24 * 3600)  # three days on, the same ranking, half the weight
    assert ids(engine.popular_items(1, trending=True)) == ["tool5"]
    assert engine.data.trending.scores.max() == pytest.approx(5.0)


def test_ease_scores_from_the_live_row_so_an_event_moves_it_without_a_refit(engine):
    ease = engine.components["ease"]
    newcomer_before = ease.score(engine.data, np.array([engine.data.add_user("ease-newcomer")]))[0]
    assert not newcomer_before.any()
    engine.observe(event("ease-newcomer", "tool0", EventType.PURCHASE))
    scores = ease.score(engine.data, np.array([engine.data.users.get("ease-newcomer")]))[0]
    best = engine.data.items.id_of(int(np.argmax(scores)))
    assert best.startswith("tool") and best != "tool0"


def test_every_recommendation_says_why(engine):
    for recommendation in engine.recommend("fan", 3):
        assert recommendation.extra["reason"] in ("because you liked Fruit 0", "because you liked Fruit 1")
    assert {r.extra["reason"] for r in engine.recommend("stranger", 3)} <= {"popular in fruit", "popular in tools"}
    assert {r.extra["reason"] for r in engine.similar_items("tool0", 3)} == {"similar to Tool 0"}
    engine.observe(event("a", "fruit5", EventType.PURCHASE))
    engine.observe(event("a", "tool5", EventType.PURCHASE))
    assert engine.realtime_recommend(None, 1, "fruit5", EventType.PURCHASE)[0].extra["reason"] == \
        "bought together with Fruit 5"


def test_als_folds_a_new_event_into_the_user_vector_without_a_refit(engine):
    als = engine.components["als"]
    engine.observe(event("als-newcomer", "tool0", EventType.PURCHASE))
    user = np.array([engine.data.users.get("als-newcomer")])
    scores = als.score(engine.data, user)[0]
    assert engine.data.items.id_of(int(np.argmax(scores))).startswith("tool")
    engine.observe(event("als-newcomer", "fruit0", EventType.PURCHASE))
    engine.observe(event("als-newcomer", "fruit1", EventType.PURCHASE))
    assert not np.allclose(als.score(engine.data, user)[0], scores)


def test_predicted_ratings_follow_a_new_rating(engine):
    def predicted() -> dict[str, float]:
        return {r.item: r.extra["predicted_rating"] for r in engine.recommend("fan", 6, "collaborative")
                if "predicted_rating" in r.extra}

    before = predicted()
    engine.observe(rating("fan", "fruit2", 1, t=30))  # the fan's ratings fall: so do the predictions
    after = predicted()
    shared = before.keys() & after.keys()
    assert shared and all(after[item] < before[item] for item in shared)


def test_compacting_a_replaced_row_leaves_no_stale_cells():
    ratings = IncrementalMatrix.from_triples(np.array([0, 0]), np.array([0, 1]), np.array([4.0, 5.0]), (1, 3), "replace")
    ratings.update(0, 2, 3.0)  # a replace-mode overlay holds the row's current cells: 0, 1 and now 2
    ratings.compact()
    assert ratings.snapshot.nnz == 3 and ratings.snapshot.toarray().tolist() == [[4.0, 5.0, 3.0]]
    assert ratings.row(0)[0].tolist() == [0, 1, 2]


def test_an_empty_shop_starts_and_learns_from_its_first_items_and_events():
    engine = Engine.build([], [], [])
    assert engine.recommend("u", 3) == []
    engine.add_item(ItemRecord("a", "Espresso cup", "kitchen", "Acme", "ceramic espresso cup"))
    engine.add_item(ItemRecord("b", "Espresso saucer", "kitchen", "Acme", "ceramic espresso saucer"))
    engine.add_item(ItemRecord("c", "Desk lamp", "furniture", "Lumo", "led desk lamp"))
    engine.observe(event("u", "a", EventType.PURCHASE))
    assert ids(engine.recommend("u", 1, "content_based")) == ["b"]
    assert ids(Engine.build([ItemRecord("x", "X"), ItemRecord("y", "Y")], [], []).recommend("v", 2)) == ["x", "y"]


def test_a_newcomers_push_keeps_what_is_popular_next_to_the_product():
    """A user with one event has no taste to speak of: half of what the push keeps of it is popularity
    (hybrid.NEWCOMER_POPULAR_SHARE), as their next choices mostly are, so the shop's hit shows next to
    the tools like the one on screen."""
    history = [rating(f"u{u}", "fruit0", 5, t=u) for u in range(30)]  # the hit
    history += [rating(f"u{u}", f"tool{u}", 4, t=40 + u) for u in range(4)]
    engine = Engine.build(ITEMS, ["newcomer"], history + [event("newcomer", "tool5", EventType.VIEW, t=50)])
    pushed = ids(engine.realtime_recommend("newcomer", 5, "tool5"))
    assert "fruit0" in pushed and sum(item.startswith("tool") for item in pushed) >= 3, pushed


def test_a_user_who_liked_only_an_item_without_known_text_gets_an_answer(engine):
    """Found by schemathesis: an item posted after the fit whose words, category and brand the content
    model never saw has an empty vector, and one user's profile summed over nothing came back as
    integers (a 500)."""
    engine.add_item(ItemRecord("odd", "zzqx", "newcategory", "newbrand"))
    engine.observe(rating("only_odd", "odd", 5, t=20))
    assert engine.components["content"].item_vectors[engine.data.items.get("odd")].nnz == 0
    assert len(engine.recommend("only_odd", 3)) == 3
    assert len(engine.recommend("only_odd", 3, "content_based")) == 3
