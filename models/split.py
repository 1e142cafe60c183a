"""The protocol's splits: which (user, item) pairs a model learns from and which it is judged on.

The unit of the 80/20 split is the distinct (user, item) pair, not the event: a customer who bought
the same mug three times has it wholly in train or wholly in test, so a test positive is always an
item the user has not seen in training (the only items the full ranking may recommend).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommenders.records import EventType

SEED = 42
TEST_FRACTION = 0.2
FOLD_IN_FRACTION = 0.1
POSITIVE_RATING = 4.0  # a rating counts as a positive from 4 stars up; any view, cart or purchase counts


def holdout(users: np.ndarray, fraction: float, seed: int, times: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the rows held out: round(fraction * n) of each user's n rows, at least 1, at most n - 1.

    Users with fewer than 2 rows keep them all, so no user loses all training rows. Without `times`
    the held-out rows are random; with it they are each user's latest (random among equal times).
    Vectorised: a random key per row, one lexsort by (user, [time,] key), rank within the user.
    """
    users = np.asarray(users)
    key = np.random.default_rng(seed).random(len(users))
    order = np.lexsort((key, users) if times is None else (key, np.asarray(times), users))
    _, starts, counts = np.unique(users[order], return_index=True, return_counts=True)
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    n_held = np.where(n >= 2, np.clip(np.floor(fraction * n + 0.5), 1, n - 1), 0)
    held = np.empty(len(users), dtype=bool)
    held[order] = rank >= n - n_held
    return held


@dataclass
class Pairs:
    """Distinct (user, item) pairs in index space, with whether each is a positive and its latest rating.

    `frame` has columns user, item (int indices), rating (float, NaN if never rated), positive (bool).
    The matrices are users x items CSR, built on first use.
    """

    frame: pd.DataFrame
    n_users: int
    n_items: int

    @classmethod
    def from_events(cls, events: pd.DataFrame, n_users: int, n_items: int) -> "Pairs":
        """Collapse events (user, item, event_type, rating, timestamp) to pairs. A pair is positive if its
        latest rating is >= POSITIVE_RATING (a re-rating replaces the old one, as in the engine) or it
        has any view, add-to-cart or purchase."""
        behaviour = (events["event_type"] != EventType.RATING.value).to_numpy()
        ordered = events.assign(behaviour=behaviour).sort_values("timestamp", kind="stable")
        frame = (ordered.groupby(["user", "item"], sort=True)
                 .agg(behaviour=("behaviour", "any"), rating=("rating", "last"))  # last skips NaN: latest rating
                 .reset_index())
        positive = frame.pop("behaviour").to_numpy() | (frame["rating"] >= POSITIVE_RATING).to_numpy()
        return cls(frame.assign(positive=positive), n_users, n_items)

    def holdout(self, fraction: float, seed: int) -> tuple["Pairs", "Pairs"]:
        """(kept, held out): a per-user random split of the pairs (see `holdout`)."""
        held = holdout(self.frame["user"].to_numpy(), fraction, seed)
        return self.subset(~held), self.subset(held)

    def subset(self, mask: np.ndarray) -> "Pairs":
        return Pairs(self.frame[mask].reset_index(drop=True), self.n_users, self.n_items)

    @property
    def has_ratings(self) -> bool:
        return bool(self.frame["rating"].notna().any())

    @cached_property
    def seen(self) -> sp.csr_matrix:
        """1 for every pair, liked or not: what a ranking must never return."""
        return self._matrix(np.ones(len(self.frame), dtype=bool))

    @cached_property
    def positives(self) -> sp.csr_matrix:
        """1 for every positive pair: what reference models learn from and what test hits are."""
        return self._matrix(self.frame["positive"].to_numpy())

    @cached_property
    def ratings(self) -> sp.csr_matrix:
        """The explicit rating of every rated pair (ratings are never 0, so 0 means unrated)."""
        return self._matrix(self.frame["rating"].notna().to_numpy(), self.frame["rating"].to_numpy())

    def _matrix(self, keep: np.ndarray, values: np.ndarray | None = None) -> sp.csr_matrix:
        rows, columns = self.frame["user"].to_numpy()[keep], self.frame["item"].to_numpy()[keep]
        data = np.ones(len(rows)) if values is None else values[keep].astype(np.float64)
        return sp.csr_matrix((data, (rows, columns)), shape=(self.n_users, self.n_items))


def pair_keys(frame: pd.DataFrame, n_items: int) -> np.ndarray:
    """One integer per (user, item) row of a frame with index columns user, item: for set operations."""
    return frame["user"].to_numpy(np.int64) * n_items + frame["item"].to_numpy(np.int64)
