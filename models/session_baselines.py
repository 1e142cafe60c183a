"""Two session baselines for the next-event protocol (models/next_event.py), written here as small
reference models: what a shop gets from the order of events alone, with no user model at all.

- `TransitionModel`, a first-order Markov chain: how often item b came right after item a in one
  user's time-ordered events. Fitted on the training events, and counted on as events replay.
- `SessionKNN`: items that co-occur with the user's last few items in training sessions (cosine
  over a sessions x items matrix). A session is one user's run of events with no gap over
  SESSION_GAP_SECONDS: an Online Retail invoice (its lines share one time) is one session, and so
  is a MovieLens rater's burst of ratings.

Both rank unseen items by their score, then by training popularity (so a list is always k long, as the
engine's are); both take item indices and return item indices.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

SESSION_GAP_SECONDS = 30 * 60  # the usual session cut in session-based recommendation (Ludewig & Jannach 2018)
SESSION_WINDOW = 3  # the last items that stand for the current session


def top_unseen(scores: np.ndarray, popularity: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    """The k best items by score, ties (and items without a score) by popularity, `seen` left out."""
    order = np.lexsort((-popularity, -scores))
    return order[~np.isin(order, seen)][:k]


def _user_runs(users: np.ndarray) -> np.ndarray:
    """Whether each event follows an event of the same user (events grouped by user, in time order)."""
    return np.r_[False, users[1:] == users[:-1]]


class TransitionModel:
    """Counts of item b right after item a in users' sequences (first-order Markov)."""

    def __init__(self, n_items: int, users: np.ndarray, items: np.ndarray) -> None:
        """`users`, `items`: the training events grouped by user, each user's in time order."""
        follows = _user_runs(users)
        pairs = (items[:-1][follows[1:]], items[1:][follows[1:]])
        # lil: one count added per replayed event costs microseconds, a row read stays sparse.
        self.counts = sp.csr_matrix((np.ones(len(pairs[0])), pairs), shape=(n_items, n_items)).tolil()
        self.popularity = np.bincount(items, minlength=n_items).astype(np.float64)

    def observe(self, previous: int | None, item: int) -> None:
        """A replayed event of a user whose last item was `previous` (None: their first event)."""
        if previous is not None:
            self.counts[previous, item] += 1
        self.popularity[item] += 1

    def recommend(self, previous: int | None, seen: np.ndarray, k: int) -> np.ndarray:
        scores = np.zeros(len(self.popularity)) if previous is None else self.counts[previous].toarray().ravel()
        return top_unseen(scores, self.popularity, seen, k)


class SessionKNN:
    """Item neighbours by co-occurrence in training sessions, summed over the user's last items."""

    def __init__(self, n_items: int, users: np.ndarray, items: np.ndarray, times: np.ndarray) -> None:
        """`users`, `items`, `times`: the training events grouped by user, each user's in time order."""
        same_session = _user_runs(users) & (np.diff(times, prepend=times[:1]) <= SESSION_GAP_SECONDS)
        session = np.cumsum(~same_session) - 1
        sessions = sp.csr_matrix((np.ones(len(items)), (session, items)), shape=(session[-1] + 1 if len(items) else 0,
                                                                                  n_items))
        sessions.data[:] = 1.0  # an item twice in one basket is one co-occurrence
        together = (sessions.T @ sessions).tocsr()
        counts = together.diagonal()
        norms = np.sqrt(np.where(counts > 0, counts, 1.0))
        together.setdiag(0.0)
        self.similarity = sp.csr_matrix(sp.diags(1 / norms) @ together @ sp.diags(1 / norms))
        self.similarity.eliminate_zeros()
        self.popularity = np.bincount(items, minlength=n_items).astype(np.float64)

    def recommend(self, recent: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
        """`recent`: the user's latest items, oldest first; the latest weighs most (linear decay)."""
        recent = np.asarray(recent[-SESSION_WINDOW:], dtype=np.int64)
        weights = np.arange(1, len(recent) + 1, dtype=np.float64) / max(len(recent), 1)
        scores = np.asarray(weights @ self.similarity[recent].toarray()).ravel() if len(recent) else \
            np.zeros(len(self.popularity))
        return top_unseen(scores, self.popularity, seen, k)
