"""The result of an experiment from its counts: rates with 95% intervals, lift over the control and a
significance test, all from scipy.stats. Pure functions of the counts, so a simulation computes the
same figures in-process as GET /experiments/<id> does from the store.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from experiments.records import VariantCounts

CONFIDENCE = 0.95
# Below this expected count in any cell of the 2x2 table the chi-squared approximation is poor,
# so the p-value comes from Fisher's exact test instead (the usual rule of thumb).
MIN_EXPECTED_FOR_CHI2 = 5.0


def proportion_ci(successes: int, trials: int) -> list[float] | None:
    """Wilson score interval: unlike the normal one it stays inside [0, 1] and behaves at 0 or n successes."""
    if trials == 0:
        return None
    interval = stats.binomtest(successes, trials).proportion_ci(CONFIDENCE, method="wilson")
    return [float(interval.low), float(interval.high)]


def mean_ci(total: float, squares: float, n: int) -> list[float] | None:
    """Student t interval of a mean from its sum and sum of squares (revenue per impression), cut at 0."""
    if n < 2:
        return None
    mean = total / n
    variance = max(squares - n * mean * mean, 0.0) / (n - 1)
    if variance == 0.0:
        return [mean, mean]
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=math.sqrt(variance / n))
    return [max(float(low), 0.0), float(high)]  # revenue is never negative


def two_proportion_p_value(successes: int, trials: int, control_successes: int, control_trials: int) -> float | None:
    """Two-sided p-value that the two rates differ: the chi-squared test of the 2x2 table without
    continuity correction (the same as the two-proportion z-test), or Fisher's exact test when a cell
    expects fewer than five. None when either side has no trials."""
    if trials == 0 or control_trials == 0:
        return None
    table = np.array([[successes, trials - successes], [control_successes, control_trials - control_successes]])
    if table.sum(axis=0).min() == 0:  # nobody (or everybody) succeeded in both: no evidence of a difference
        return 1.0
    expected = stats.contingency.expected_freq(table)
    if expected.min() < MIN_EXPECTED_FOR_CHI2:
        return float(stats.fisher_exact(table).pvalue)
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _rate(successes: int, trials: int) -> float | None:
    return successes / trials if trials else None


def variant_results(counts: list[VariantCounts], control: str, reward: str = "click",
                    shares: dict[str, float] | None = None) -> list[dict]:
    """Per variant: counts, CTR, conversion rate and revenue per impression with 95% intervals, and the
    lift of the reward's rate (CTR for "click", conversion rate for "purchase") over the control with
    its p-value. The control's own lift and p-value are None."""
    base = next(c for c in counts if c.name == control)
    results = []
    for c in counts:
        successes, base_successes = ((c.clicks, base.clicks) if reward == "click" else (c.conversions, base.conversions))
        rate, base_rate = _rate(successes, c.impressions), _rate(base_successes, base.impressions)
        is_control = c.name == control
        results.append({
            "name": c.name,
            "share": None if shares is None else shares.get(c.name),
            "users": c.users,
            "impressions": c.impressions,
            "clicks": c.clicks,
            "ctr": _rate(c.clicks, c.impressions),
            "ctr_ci": proportion_ci(c.clicks, c.impressions),
            "conversions": c.conversions,
            "conversion_rate": _rate(c.conversions, c.impressions),
            "conversion_rate_ci": proportion_ci(c.conversions, c.impressions),
            "revenue": c.revenue,
            "revenue_per_impression": c.revenue / c.impressions if c.impressions else None,
            "revenue_per_impression_ci": mean_ci(c.revenue, c.revenue_squares, c.impressions),
            "lift": None if is_control or rate is None or not base_rate else rate / base_rate - 1.0,
            "p_value": None if is_control else two_proportion_p_value(successes, c.impressions, base_successes,
                                                                      base.impressions),
            "traffic": [{"start": start, "impressions": n} for start, n in c.traffic],
        })
    return results
