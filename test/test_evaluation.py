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
from models.references import (REFERENCES, TUNING_TRIALS, PopularityBaseline, SurpriseSVD, TunedReference,
                               ease_weights, rp3beta_weights, shrunk_cosine, slim_weights, top_k_unseen,
                               top_neighbours)
from recommenders.collaborative import keep_top_per_row
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


# -- tuned references ------------------------------------------------------------------------------

TUNED = [name for name, model in REFERENCES.items() if issubclass(model, TunedReference)]


@pytest.fixture(scope="module")
def tuned_fits(split) -> dict[str, TunedReference]:
    train, _ = split
    return {name: REFERENCES[name]().fit(train) for name in TUNED}


def test_the_tuned_references_are_the_ones_the_issue_asks_for():
    assert set(TUNED) == {"ials_tuned", "rp3beta", "itemknn_tuned", "ease", "slim"}
    assert {"implicit_als", "implicit_item_cosine", "popularity_baseline", "surprise_svd"} <= set(REFERENCES)


@pytest.mark.parametrize("name", TUNED)
def test_each_tuned_reference_beats_popularity_on_planted_structure(split, tuned_fits, name):
    train, test = split
    users = np.flatnonzero(np.diff(test.positives.indptr))
    popularity = PopularityBaseline().fit(train).recommend(users, 10)
    assert ndcg(tuned_fits[name].recommend(users, 10), test, users) > 1.1 * ndcg(popularity, test, users)


@pytest.mark.parametrize("name", TUNED)
def test_every_tuned_reference_tries_the_same_number_of_distinct_configurations_from_its_grid(tuned_fits, name):
    model = tuned_fits[name]
    tried = [config for config, _ in model.tried]
    assert len(tried) == TUNING_TRIALS and len({tuple(config.items()) for config in tried}) == TUNING_TRIALS
    assert all(set(config) == set(model.space) and all(config[key] in model.space[key] for key in config)
               for config in tried)
    assert tried == REFERENCES[name]().configurations()  # the sample is seeded: the same every run
    for key, values in model.space.items():  # stratified: every value of a short axis is tried
        assert len(values) > TUNING_TRIALS or {config[key] for config in tried} == set(values)
    assert model.config == max(model.tried, key=lambda trial: trial[1])[0]


class Blend(TunedReference):
    """A toy tuned model: `signal` parts item co-occurrence, the rest noise; the most signal is clearly best."""

    name = "blend"
    space = {"signal": (0.0, 0.25, 1.0)}

    def learn(self, known: Pairs, config: dict) -> None:
        self.signal = config["signal"]
        self.learned_from = known
        self.cooccurrence = (known.positives.T @ known.positives).toarray()

    def scores(self, known: Pairs, users: np.ndarray) -> np.ndarray:
        noise = np.random.default_rng(0).random((len(users), known.n_items)) * self.cooccurrence.max()
        return self.signal * (known.positives[users] @ self.cooccurrence) + (1 - self.signal) * noise


def test_the_tuner_keeps_the_best_trial_and_refits_it_on_all_of_train(split):
    train, _ = split
    model = Blend().fit(train)
    scores = dict((config["signal"], ndcg) for config, ndcg in model.tried)
    assert set(scores) == {0.0, 0.25, 1.0}  # a grid smaller than the budget is tried whole
    assert scores[1.0] > scores[0.25] > scores[0.0]
    assert model.config == {"signal": 1.0} and model.validation_ndcg == scores[1.0]
    assert model.signal == 1.0 and model.learned_from is train
    assert "signal=1" in model.describe() and model.tuning()["chosen"] == {"signal": 1.0}


def test_a_grid_larger_than_the_budget_is_sampled_to_the_budget():
    class Wide(Blend):
        space = {"signal": tuple(np.linspace(0, 1, 50)), "unused": (1, 2)}

    assert len(Wide(trials=7).configurations()) == 7 and len(Wide(trials=200).configurations()) == 100
    repeats = Wide(trials=4).configurations()  # 4 trials over 2 values of `unused`: each value twice
    assert sorted(config["unused"] for config in repeats) == [1, 1, 2, 2]
    crowded = Blend(trials=8)
    crowded.space = {"a": (1, 2), "b": (1, 2, 3, 4, 5)}  # the hypercube repeats (a, b) pairs: the rest is drawn
    assert len({tuple(config.values()) for config in crowded.configurations()}) == 8


def test_top_k_unseen_equals_a_full_stable_sort_with_ties_broken_by_item_index():
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 4, (30, 12)).astype(float)  # many ties
    seen = rng.random((30, 12)) < 0.3
    seen[0] = True  # a user who has seen everything
    seen[1] = np.arange(12) != 3  # and one with a single unseen item
    masked = np.where(seen, -np.inf, scores)
    seen = sp.csr_matrix(seen)
    for k in (1, 5, 12, 15):
        expected = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        expected[~np.isfinite(np.take_along_axis(masked, expected, axis=1))] = -1
        expected = np.pad(expected, ((0, 0), (0, k - expected.shape[1])), constant_values=-1)
        assert np.array_equal(top_k_unseen(scores, seen, k), expected)


def test_top_neighbours_keeps_what_keep_top_per_row_keeps():
    weights = sp.random(40, 40, density=0.5, random_state=8, format="csr")
    weights.data = np.round(weights.data * 4) - 1  # ties and negative entries
    for k in (1, 3, 20, 40):
        assert (top_neighbours(weights, k) != keep_top_per_row(weights, k)).nnz == 0


def test_rp3beta_weights_match_the_dense_definition():
    rng = np.random.default_rng(4)
    positives = sp.csr_matrix((rng.random((25, 9)) < 0.4).astype(float))
    dense = positives.toarray()
    user_item = dense / np.maximum(dense.sum(axis=1, keepdims=True), 1)
    item_user = dense.T / np.maximum(dense.T.sum(axis=1, keepdims=True), 1)
    popularity = dense.sum(axis=0)
    expected = (item_user ** 0.8) @ (user_item ** 0.8) / np.where(popularity > 0, popularity, 1) ** 0.3
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(rp3beta_weights(positives, 0.8, 0.3, neighbours=9).toarray(), expected)
    pruned = rp3beta_weights(positives, 0.8, 0.3, neighbours=2).toarray()
    assert (np.count_nonzero(pruned, axis=1) <= 2).all()
    assert np.allclose(pruned.max(axis=1), expected.max(axis=1))


def test_shrunk_cosine_matches_the_dense_definition():
    rng = np.random.default_rng(5)
    positives = sp.csr_matrix((rng.random((25, 9)) < 0.4).astype(float))
    dense = positives.toarray()
    norms = np.sqrt((dense ** 2).sum(axis=0))
    expected = dense.T @ dense / (np.outer(norms, norms) + 7.0)
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(shrunk_cosine(positives, 9, 7.0, "none").toarray(), expected)
    assert not np.allclose(shrunk_cosine(positives, 9, 7.0, "bm25").toarray(), expected)


def test_slim_weights_are_non_negative_with_a_zero_diagonal_and_fit_a_copied_item():
    rng = np.random.default_rng(6)
    dense = (rng.random((40, 6)) < 0.5).astype(float)
    dense[:, 5] = dense[:, 2]  # item 5 is item 2 again: each is the other's best predictor
    weights = slim_weights(sp.csr_matrix(dense), alpha=1e-3, l1_ratio=0.5).toarray()
    assert (weights >= 0).all() and np.allclose(np.diag(weights), 0.0)
    assert weights[5, 2] > 0.5 and weights[2, 5] > 0.5


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
    assert set(document["tuned"]) == set(TUNED) and "## Tuned references" in report
    for name, tuning in document["tuned"].items():
        assert set(tuning["chosen"]) == set(REFERENCES[name].space) and len(tuning["trials"]) == TUNING_TRIALS
        chosen = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                           for key, value in tuning["chosen"].items())
        assert f"| {name} | {chosen} | {tuning['validation_ndcg@10']:.4f} |" in report
        assert f"- {name}: {chosen}: best validation NDCG@10" in report
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


def test_the_bar_is_our_best_row_against_the_best_tuned_reference_and_the_chart_draws_it(tmp_path, capsys):
    """An untuned reference never sets the bar (issue 11 compares with tuned ones), and the chart
    command reads the runs' JSON and says the ratio."""
    from models.report import against_tuned, main as report_main, write_json

    results = {"hybrid_weighted": {"kind": "ours", "ndcg@10": 0.30}, "hybrid_ranked": {"kind": "ours", "ndcg@10": 0.33},
               "ease": {"kind": "reference", "ndcg@10": 0.30}, "ials_tuned": {"kind": "reference", "ndcg@10": 0.31},
               "implicit_als": {"kind": "reference", "ndcg@10": 0.50}}
    evaluation = {"dataset": "toy", "results": results, "tuned": {"ease": {}, "ials_tuned": {}}}
    summary = against_tuned(evaluation)
    assert (summary["ours"], summary["tuned"]) == ("hybrid_ranked", "ials_tuned")
    assert summary["ratio"] == pytest.approx(0.33 / 0.31) and summary["met"]
    assert against_tuned({**evaluation, "tuned": {}}) is None
    write_json(evaluation, tmp_path / "toy.json")
    assert report_main([str(tmp_path / "chart.png"), str(tmp_path / "toy.json")]) == 0
    assert (tmp_path / "chart.png").stat().st_size > 0
    assert "hybrid_ranked 0.3300 / ials_tuned 0.3100 = 1.065" in capsys.readouterr().out
