"""The offline evaluation: metrics against hand-computed values, the split, the reference models on
planted structure, EASE's closed form, and one end-to-end `main.py evaluate` on a generated csv."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import main
from models.tuning import simplex_grid
from models.metrics import ranking_metrics, rating_errors
from models.references import REFERENCES, SurpriseSVD, ease_weights, top_k_unseen
from models.split import Pairs, holdout

LOG2_3 = math.log2(3)


def truth(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """A users x items matrix of test positives from lists of item indices."""
    users = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
    items = np.concatenate([np.array(row, dtype=np.int64) for row in rows])
    return sp.csr_matrix((np.ones(len(items)), (users, items)), shape=(len(rows), n_items))


# -- metrics ---------------------------------------------------------------------------------------

def test_ranking_metrics_match_hand_computed_values_and_skip_users_without_positives():
    recommended = np.array([[0, 1, 2], [3, 4, -1], [1, 0, 2]])
    positives = truth([[1, 5], [], [0, 1, 2, 3]], n_items=6)  # the middle user has no positive: skipped
    metrics = ranking_metrics(recommended, positives, n_items=6)
    # user 0: one hit at rank 2 of 2 positives; user 2: hits at ranks 1-3 of 4 positives
    ndcg_user0 = (1 / LOG2_3) / (1 + 1 / LOG2_3)
    assert metrics["precision@3"] == pytest.approx((1 / 3 + 1) / 2)
    assert metrics["recall@3"] == pytest.approx((1 / 2 + 3 / 4) / 2)  # hits / |positives|, not / min(k, |positives|)
    assert metrics["ndcg@3"] == pytest.approx((ndcg_user0 + 1) / 2)
    assert metrics["map@3"] == pytest.approx(((1 / 2) / 2 + 1) / 2)  # AP divided by min(k, |positives|)
    assert metrics["hit_rate@3"] == pytest.approx(1.0)
    assert metrics["coverage"] == pytest.approx(5 / 6)  # items 0-4 appear in some list


def test_k_larger_than_the_catalog_keeps_k_as_the_precision_denominator():
    metrics = ranking_metrics(np.array([[2, 0, 1, -1, -1]]), truth([[1]], n_items=3), n_items=3)
    assert metrics["precision@5"] == pytest.approx(1 / 5)
    assert metrics["recall@5"] == pytest.approx(1.0)
    assert metrics["ndcg@5"] == pytest.approx(0.5)  # one hit at rank 3: 1/log2(4), ideal 1
    assert metrics["map@5"] == pytest.approx(1 / 3)
    assert metrics["coverage"] == pytest.approx(1.0)


def test_no_user_with_a_positive_gives_undefined_ranking_metrics_but_a_coverage():
    metrics = ranking_metrics(np.array([[0, 1]]), truth([[]], n_items=4), n_items=4)
    assert math.isnan(metrics["ndcg@2"]) and metrics["coverage"] == pytest.approx(0.5)


def test_rating_errors():
    errors = rating_errors(np.array([3.0, 4.0, 5.0]), np.array([4.0, 4.0, 3.0]))
    assert errors["rmse"] == pytest.approx(math.sqrt(5 / 3)) and errors["mae"] == pytest.approx(1.0)


# -- split -----------------------------------------------------------------------------------------

def test_holdout_is_reproducible_per_user_and_never_empties_a_users_training_rows():
    sizes = {0: 1, 1: 2, 2: 5, 3: 7, 4: 10, 5: 13}
    users = np.random.default_rng(1).permutation(np.repeat(list(sizes), list(sizes.values())))
    held = holdout(users, 0.2, seed=42)
    assert np.array_equal(held, holdout(users, 0.2, seed=42))
    assert not np.array_equal(held, holdout(users, 0.2, seed=7))
    counts = {user: int(held[users == user].sum()) for user in sizes}
    assert counts == {0: 0, 1: 1, 2: 1, 3: 1, 4: 2, 5: 3}  # round(0.2 n), at least 1 from 2 rows, at most n - 1


def test_holdout_with_times_holds_out_each_users_latest_rows():
    users = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1])
    times = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 0, 1, 0], dtype=float)
    held = holdout(users, 0.2, seed=0, times=times)
    assert set(times[held & (users == 0)]) == {8, 9} and set(times[held & (users == 1)]) == {1}


def test_pairs_collapse_events_and_split_by_pair():
    events = pd.DataFrame({"user": [0, 0, 0, 1, 1], "item": [0, 0, 1, 0, 2],
                           "event_type": ["rating", "rating", "view", "rating", "purchase"],
                           "rating": [5.0, 2.0, np.nan, 4.0, np.nan], "timestamp": [1.0, 2.0, 3.0, 1.0, 2.0]})
    pairs = Pairs.from_events(events, n_users=2, n_items=3)
    frame = pairs.frame.set_index(["user", "item"])
    assert len(frame) == 4
    assert frame.loc[(0, 0), "rating"] == 2.0 and not frame.loc[(0, 0), "positive"]  # the latest rating counts
    assert frame.loc[(0, 1), "positive"] and frame.loc[(1, 2), "positive"]  # any non-rating event is a positive
    assert pairs.seen.nnz == 4 and pairs.positives.nnz == 3 and pairs.ratings.nnz == 2


# -- reference models on planted structure ---------------------------------------------------------

def planted_events(n_users: int = 80, n_items: int = 40, seed: int = 0) -> pd.DataFrame:
    """Two taste groups: a user rates 4-5 many of their group's items (low indices more often, so
    popularity means something) and 1-2 a few of the other group's; some likes are views instead."""
    rng = np.random.default_rng(seed)
    half = n_items // 2
    users, items = np.divmod(np.arange(n_users * n_items), n_items)
    own_group = (items // half) == (users % 2)
    rank = items % half
    liked = own_group & (rng.random(len(items)) < np.linspace(0.9, 0.3, half)[rank])
    disliked = ~own_group & (rng.random(len(items)) < 0.1)
    keep = liked | disliked
    is_view = liked & (rng.random(len(items)) < 0.15)
    rating = np.where(liked, rng.choice([4.0, 5.0], len(items)), rng.choice([1.0, 2.0], len(items)))
    return pd.DataFrame({"user": users[keep], "item": items[keep],
                         "event_type": np.where(is_view, "view", "rating")[keep],
                         "rating": np.where(is_view, np.nan, rating)[keep],
                         "timestamp": rng.random(int(keep.sum())) * 1e6})


@pytest.fixture(scope="module")
def split() -> tuple[Pairs, Pairs]:
    events = planted_events()
    return Pairs.from_events(events, int(events["user"].max()) + 1, int(events["item"].max()) + 1).holdout(0.2, 42)


def ndcg(recommended: np.ndarray, test: Pairs, users: np.ndarray) -> float:
    return ranking_metrics(recommended, test.positives[users], test.n_items)[f"ndcg@{recommended.shape[1]}"]


@pytest.mark.parametrize("name", list(REFERENCES))
def test_each_reference_beats_random_and_never_recommends_a_seen_item(split, name):
    train, test = split
    users = np.flatnonzero(np.diff(test.positives.indptr))
    model = REFERENCES[name]().fit(train)
    ranked = model.recommend(users, 10)
    random = top_k_unseen(np.random.default_rng(0).random((len(users), train.n_items)), train.seen[users], 10)
    assert ndcg(ranked, test, users) > 1.3 * ndcg(random, test, users)
    assert not hit_any(ranked, train.seen[users])


def hit_any(ranked: np.ndarray, seen: sp.csr_matrix) -> bool:
    rows, columns = np.nonzero(ranked >= 0)
    return bool(np.asarray(seen[rows, ranked[rows, columns]]).any())


@pytest.mark.parametrize("name", list(REFERENCES))
def test_a_list_longer_than_the_unseen_items_is_padded_with_minus_one(split, name):
    train, _ = split
    users = np.arange(5)
    ranked = REFERENCES[name]().fit(train).recommend(users, train.n_items + 5)
    unseen = train.n_items - np.diff(train.seen.indptr)[users]
    assert np.array_equal((ranked >= 0).sum(axis=1), unseen)
    assert not hit_any(ranked, train.seen[users])


def test_svd_batch_predictions_equal_surprises_own_predict(split):
    train, test = split
    unrated = train.frame.assign(rating=train.frame["rating"].where(train.frame["item"] != 0))  # Surprise never sees item 0
    model = SurpriseSVD().fit(Pairs(unrated, train.n_users, train.n_items))
    users, items = np.r_[test.frame["user"], 0, 1], np.r_[test.frame["item"], 0, 0]
    expected = [model.algo.predict(int(u), int(i)).est for u, i in zip(users, items)]
    assert np.allclose(model.predict(users, items), expected)


def test_ease_closed_form_equals_a_ridge_regression_per_item():
    """Column j of B is the ridge regression of item j on all the other items (Steck 2019, eq. 2)."""
    rng = np.random.default_rng(3)
    positives = sp.csr_matrix((rng.random((30, 8)) < 0.4).astype(float))
    dense, regularisation = positives.toarray(), 5.0
    weights = ease_weights(positives, regularisation)
    for j in range(8):
        others = np.delete(np.arange(8), j)
        x = dense[:, others]
        direct = np.linalg.solve(x.T @ x + regularisation * np.eye(7), x.T @ dense[:, j])
        assert np.allclose(weights[others, j], direct) and weights[j, j] == 0.0


# -- end to end ------------------------------------------------------------------------------------

def test_evaluate_on_a_generated_csv_writes_the_table_the_json_and_the_report(tmp_path, capsys):
    events = planted_events(n_users=60, n_items=30, seed=5)
    names = np.array(["sci-fi space robots", "romance love wedding"])
    (tmp_path / "items.csv").write_text("item_id,name,category,description\n" + "".join(
        f"i{i},Item {i},{['scifi', 'romance'][i // 15]},{names[i // 15]}\n" for i in range(30)))
    pd.DataFrame({"user_id": "u" + events["user"].astype(str), "item_id": "i" + events["item"].astype(str),
                  "event_type": events["event_type"], "timestamp": events["timestamp"].round(),
                  "rating": events["rating"]}).to_csv(tmp_path / "events.csv", index=False)
    out = tmp_path / "report"
    code = main.main(["evaluate", "--dataset", "csv", "--data-dir", str(tmp_path / "events.csv"),
                      "--items", str(tmp_path / "items.csv"), "--json", str(tmp_path / "out.json"),
                      "--out-dir", str(out), "--tune"])
    assert code == 0
    printed = capsys.readouterr().out
    document = json.loads((tmp_path / "out.json").read_text())
    assert {"dataset", "protocol", "results"} <= set(document) and document["dataset"] == "csv"
    keys = {"kind", "precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10", "coverage", "rmse", "mae",
            "fit_seconds"}
    for name, result in document["results"].items():
        assert set(result) == keys and name in printed
        assert result["kind"] == ("reference" if name in REFERENCES else "ours")
        assert (result["rmse"] is not None) == (name in ("surprise_svd", "user_based", "svd"))
    assert {"hybrid_weighted", "hybrid_adaptive", "hybrid_switching", *REFERENCES} <= set(document["results"])
    hybrid = document["fold_in"]["models"]["hybrid"]
    assert hybrid["full_retrain_ndcg@10"] > 0 and hybrid["fold_in_ndcg@10"] > 0
    tuned = document["tuning"]["weights"]
    assert set(tuned) == {"user_based", "ease", "als"} and sum(tuned.values()) == pytest.approx(1.0)
    assert "COLLABORATIVE_WEIGHT_EASE=" in printed
    report = (out / "report.md").read_text()
    assert "## Protocol" in report and "| hybrid_weighted | ours |" in report and "](metrics.png)" in report
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_rejects_an_unknown_model_name(tmp_path, capsys):
    (tmp_path / "events.csv").write_text("user_id,item_id,event_type,timestamp\nu1,i1,view,1\n")
    assert main.main(["evaluate", "--dataset", "csv", "--data-dir", str(tmp_path / "events.csv"),
                      "--models", "ease,magic", "--out-dir", str(tmp_path)]) == 1
    assert "magic" in capsys.readouterr().err


def test_simplex_grid_covers_every_weighting_that_sums_to_one():
    grid = simplex_grid(["a", "b", "c"], step=0.5)
    assert len(grid) == 6 and all(sum(w.values()) == pytest.approx(1.0) for w in grid)
    assert {"a": 0.5, "b": 0.5, "c": 0.0} in grid and {"a": 0.0, "b": 0.0, "c": 1.0} in grid
