"""The arithmetic of experiments, without a server: the intervals and p-values against scipy and
textbook values, the SHA-256 split (shares within tolerance on 10,000 users, the same in every
process), Thompson sampling moving traffic to a clearly better arm, and where exploration puts its slots.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from config.settings import PROJECT_ROOT
from experiments.allocation import boundaries, pick, thompson_shares, user_position
from experiments.records import VariantCounts
from experiments.statistics import mean_ci, proportion_ci, two_proportion_p_value, variant_results
from recommenders.records import Recommendation
from recommenders.exploration import explore, exploration_slots


def test_wilson_interval_matches_the_textbook_formula():
    successes, trials, z = 30, 200, stats.norm.ppf(0.975)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z / (1 + z * z / trials) * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    assert proportion_ci(successes, trials) == pytest.approx([centre - half, centre + half], abs=1e-12)
    assert proportion_ci(0, 10)[0] == 0.0 and proportion_ci(10, 10)[1] == pytest.approx(1.0)
    assert proportion_ci(0, 0) is None


def test_p_value_is_the_two_proportion_z_test_on_large_counts():
    a, n, b, m = 120, 1000, 90, 1000
    pooled = (a + b) / (n + m)
    z = (a / n - b / m) / math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
    assert two_proportion_p_value(a, n, b, m) == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_p_value_is_fishers_exact_test_on_small_counts():
    assert two_proportion_p_value(3, 10, 0, 10) == pytest.approx(stats.fisher_exact([[3, 7], [0, 10]]).pvalue)
    assert two_proportion_p_value(0, 10, 0, 12) == 1.0  # nobody clicked anywhere: no difference shown
    assert two_proportion_p_value(1, 10, 0, 0) is None


def test_revenue_interval_is_students_t_on_the_per_impression_values():
    values = np.array([0, 0, 12.5, 0, 40, 0, 0, 3, 0, 0], dtype=float)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean_ci(values.sum(), (values ** 2).sum(), len(values)) == pytest.approx([max(expected[0], 0), expected[1]])
    assert mean_ci(5.0, 25.0, 1) is None


def test_results_give_lift_and_significance_against_the_control():
    counts = [VariantCounts("control", impressions=2000, users=400, clicks=100),
              VariantCounts("hybrid", impressions=2000, users=410, clicks=160, conversions=20, revenue=400.0,
                            revenue_squares=8000.0)]
    control, hybrid = variant_results(counts, "control")
    assert control["lift"] is None and control["p_value"] is None
    assert hybrid["ctr"] == 0.08 and hybrid["lift"] == pytest.approx(0.6)
    assert hybrid["p_value"] < 0.001
    assert hybrid["revenue_per_impression"] == 0.2 and hybrid["conversion_rate"] == 0.01
    by_purchase = variant_results(counts, "control", reward="purchase")[1]
    assert by_purchase["lift"] is None  # the control converted nobody: no ratio to give
    assert by_purchase["p_value"] < 0.001


def test_the_split_follows_the_shares_on_10000_users():
    shares = [0.2, 0.3, 0.5]
    positions = np.array([user_position("exp-1", f"user_{n}") for n in range(10_000)])
    observed = np.bincount([pick(position, boundaries(shares)) for position in positions], minlength=3) / 10_000
    assert observed == pytest.approx(shares, abs=0.015)  # 3 standard errors of a share at n = 10,000
    assert pick(0.0, boundaries(shares)) == 0 and pick(0.2, boundaries(shares)) == 1
    assert pick(0.99999999, boundaries([1 / 3] * 3)) == 2
    other = np.array([user_position("exp-2", f"user_{n}") for n in range(10_000)])
    assert np.corrcoef(positions, other)[0, 1] == pytest.approx(0.0, abs=0.05)  # experiments split independently


def test_a_users_place_is_the_same_in_another_process():
    """Python's hash() would differ per process (PYTHONHASHSEED); the split must not."""
    code = "from experiments.allocation import user_position; print(repr(user_position('exp-1', 'alice')))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}, cwd=PROJECT_ROOT)
    assert float(other.stdout) == user_position("exp-1", "alice")


def test_thompson_sends_most_traffic_to_a_clearly_better_arm():
    shares = thompson_shares(np.array([50, 80, 50]), np.array([1000, 1000, 1000]), "exp")
    assert shares.sum() == pytest.approx(1.0) and shares[1] > 0.95
    even = thompson_shares(np.array([0, 0, 0]), np.array([0, 0, 0]), "exp")
    assert even == pytest.approx([1 / 3] * 3, abs=0.02)  # nothing known yet: every arm alike
    assert np.array_equal(thompson_shares([5, 6], [50, 50], "exp"), thompson_shares([5, 6], [50, 50], "exp"))


def test_exploration_gives_its_share_of_slots_to_unseen_items_in_every_head():
    assert exploration_slots(10, 0.2).tolist() == [4, 9]
    assert exploration_slots(10, 0.0).tolist() == []
    ranked = [Recommendation(f"top_{n}", 1.0 - n / 100, "hybrid") for n in range(100)]
    candidates = np.array(["top_3", "new_a", "new_b"] + [f"new_{n}" for n in range(50)], dtype=object)
    explored = explore(ranked, 0.2, candidates)
    assert len(explored) == 100
    assert [r.item for r in explored[:10]] == ["top_0", "top_1", "top_2", "top_3", "new_a",
                                               "top_4", "top_5", "top_6", "top_7", "new_b"]
    assert sum(r.strategy == "exploration" for r in explored[:20]) == 4
    assert explore(ranked, 0.2, np.empty(0, dtype=object)) is ranked
