"""Which variant a user sees: a deterministic hash of (experiment, user) laid over the variants' shares.

The hash is SHA-256 (Python's hash() is salted per process), so every process and every restart puts
a user in the same place. For "fixed" allocation the shares are the configured ones; for "thompson"
they are each arm's posterior probability of being the best (Thompson sampling as probability
matching), estimated from Beta posteriors of the reward counts with a seed drawn from those counts:
every process holding the same counts computes the same shares. A user keeps their variant while the
shares stand still; as the posteriors move, the users near a boundary move to the winning side.
"""
from __future__ import annotations

import bisect
import hashlib
from itertools import accumulate

import numpy as np

THOMPSON_DRAWS = 20_000  # posterior draws per arm: P(best) to within ~0.4 percentage points


def user_position(experiment_id: str, user_id: str) -> float:
    """The user's place in [0, 1) for this experiment: the first 8 bytes of SHA-256, as a fraction."""
    digest = hashlib.sha256(f"{experiment_id}\x00{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def boundaries(shares: list[float]) -> list[float]:
    """The upper ends of the variants' slices of [0, 1), computed once per set of shares."""
    bounds = list(accumulate(shares))
    bounds[-1] = 1.0  # shares summing to 0.9999999 must not leave the top of the range unassigned
    return bounds


def pick(position: float, bounds: list[float]) -> int:
    """Index of the variant whose slice holds `position`: a bisection of a short list (~0.2 us; numpy's
    searchsorted costs ~1 us a call on one value, and a request asks about one user)."""
    return min(bisect.bisect_right(bounds, position), len(bounds) - 1)


def thompson_shares(successes: np.ndarray, trials: np.ndarray, seed_text: str = "") -> np.ndarray:
    """Each arm's probability of having the highest rate under Beta(1 + successes, 1 + failures)
    posteriors, from THOMPSON_DRAWS draws per arm seeded by the counts (so the same counts give the
    same shares in every process)."""
    successes, trials = np.asarray(successes, dtype=np.int64), np.asarray(trials, dtype=np.int64)
    seed_material = f"{seed_text}:{successes.tolist()}:{trials.tolist()}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed_material).digest()[:8], "big"))
    draws = rng.beta(1 + successes, 1 + trials - successes, size=(THOMPSON_DRAWS, len(trials)))
    wins = np.bincount(draws.argmax(axis=1), minlength=len(trials))
    return wins / THOMPSON_DRAWS
