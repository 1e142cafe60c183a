"""The engine's model state: who did what with which item, in index space.

Built once from the store's interactions, then updated one event at a time by `observe`.
Recommenders read it; they never query the database.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recommenders.records import EventType, InteractionRecord, ItemRecord
from recommenders.sparse_state import Combine, CooccurrenceCounts, IdMap, IncrementalMatrix, resized, stacked_rows

RECENT_EVENTS_KEPT = 20
MEMO_ENTRIES = 4096  # derived values kept between two events (a few per recently read user)
HISTORY_SCORED = 200  # heavy users are scored from their 200 strongest preferences
TRENDING_HALF_LIFE = 3 * 24 * 3600.0  # a trend halves in three days
EVENT_TYPES = list(EventType)
TYPE_CODES = {t: code for code, t in enumerate(EVENT_TYPES)}


@dataclass(frozen=True)
class EventWeighting:
    """Implicit preference an event adds to a user-item cell.

    A rating r counts max(r - rating_neutral, 0): a 2-star rating marks the item as seen but is
    not a reason to recommend things like it.
    """

    view: float = 1.0
    add_to_cart: float = 3.0
    purchase: float = 5.0
    rating_neutral: float = 2.0

    def event_weight(self, event_type: EventType) -> float:
        return {EventType.VIEW: self.view, EventType.ADD_TO_CART: self.add_to_cart, EventType.PURCHASE: self.purchase}.get(
            event_type, 0.0
        )

    def rating_weight(self, ratings: np.ndarray) -> np.ndarray:
        return np.maximum(ratings - self.rating_neutral, 0.0)

    def weights(self, types: np.ndarray, ratings: np.ndarray) -> np.ndarray:
        """Each event's preference weight, vectorised over type codes (TYPE_CODES) and ratings (NaN if none)."""
        event_weights = np.array([self.event_weight(t) for t in EVENT_TYPES])[types]
        return np.where(types == TYPE_CODES[EventType.RATING], self.rating_weight(np.nan_to_num(ratings)), event_weights)

    def weight(self, event_type: EventType, rating: float | None) -> float:
        if event_type == EventType.RATING:
            return float(self.rating_weight(np.array([rating or 0.0]))[0])
        return self.event_weight(event_type)


class RecentEvents:
    """Each user's latest events, oldest first: what they are doing right now.

    Held as arrays sorted by (user, time) with an index pointer per user, plus the events that
    arrived since they were built; no per-user Python objects at build time.
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray,
                 types: np.ndarray, n_users: int) -> None:
        order = np.lexsort((times, users))
        self._columns = np.column_stack([items, weights, times, types]).astype(np.float64)[order]
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=n_users))])
        self._new: dict[int, list[tuple[float, float, float, float]]] = {}

    def append(self, user: int, item: int, weight: float, timestamp: float, event_type: EventType) -> None:
        events = self._new.setdefault(user, [])
        events.append((item, weight, timestamp, TYPE_CODES[event_type]))
        del events[:-RECENT_EVENTS_KEPT]

    def of(self, user: int, n: int = RECENT_EVENTS_KEPT) -> "Recent":
        """The user's last `n` events, oldest first."""
        rows = np.empty((0, 4))
        if user + 1 < len(self._indptr):
            start, end = self._indptr[user], self._indptr[user + 1]
            rows = self._columns[max(start, end - n):end]
        new = self._new.get(user)
        if new:
            rows = np.vstack([rows, np.array(new, dtype=np.float64)])
        rows = rows[-n:]
        return Recent(rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2], rows[:, 3].astype(np.int64))

    def state(self) -> dict[str, np.ndarray]:
        """Each user's last RECENT_EVENTS_KEPT events as the arrays `from_state` takes (for artifacts)."""
        n_users = len(self._indptr) - 1
        old_users = np.repeat(np.arange(n_users), np.diff(self._indptr))
        new = [(user, row) for user, rows in self._new.items() for row in rows]
        users = np.concatenate([old_users, np.array([user for user, _ in new], dtype=np.int64)])
        columns = np.vstack([self._columns, np.array([row for _, row in new], dtype=np.float64).reshape(-1, 4)])
        order = np.argsort(users, kind="stable")  # per user: build-time events, then newer ones
        users, columns = users[order], columns[order]
        counts = np.bincount(users, minlength=max(n_users, int(users.max()) + 1 if users.size else 0))
        ends = np.cumsum(counts)[users]
        keep = ends - np.arange(len(users)) <= RECENT_EVENTS_KEPT  # the newest few of each user
        kept_users = users[keep]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(kept_users, minlength=len(counts)))])
        return {"columns": columns[keep], "indptr": indptr}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "RecentEvents":
        recent = cls.__new__(cls)
        recent._columns, recent._indptr, recent._new = state["columns"], state["indptr"], {}
        return recent

    def forget(self, user: int) -> None:
        """Drop every event of the user (a deleted user): copies the build-time arrays once."""
        self._new.pop(user, None)
        if user + 1 < len(self._indptr):
            start, end = self._indptr[user], self._indptr[user + 1]
            self._columns = np.delete(self._columns, np.s_[start:end], axis=0)
            self._indptr[user + 1:] -= end - start


@dataclass(frozen=True)
class Recent:
    """Parallel arrays of one user's recent events."""

    items: np.ndarray
    weights: np.ndarray
    times: np.ndarray
    types: np.ndarray

    def behaviour_share(self) -> float:
        """Share that are views, carts or purchases rather than ratings."""
        return float(np.mean(self.types != TYPE_CODES[EventType.RATING])) if self.items.size else 0.0


class TrendingCounter:
    """Popularity that fades: each event counts 2^-(age / half_life), so last week's hits sink.

    Scores are kept relative to a reference time so an event costs one addition; `rebase` moves the
    reference to now (a periodic job) so the numbers stay readable and never overflow.
    """

    def __init__(self, items: np.ndarray, weights: np.ndarray, times: np.ndarray, n_items: int,
                 half_life_seconds: float, reference: float) -> None:
        self.half_life = half_life_seconds
        self.reference = reference
        self.scores = np.bincount(items, weights=weights * self._factor(times), minlength=n_items).astype(np.float64)

    def add(self, item: int, weight: float, timestamp: float) -> None:
        if item >= len(self.scores):
            self.scores = np.concatenate([self.scores, np.zeros(item + 1 - len(self.scores))])
        self.scores[item] += weight * self._factor(np.float64(timestamp))

    def state(self) -> dict:
        return {"scores": self.scores, "reference": self.reference, "half_life": self.half_life}

    @classmethod
    def from_state(cls, state: dict) -> "TrendingCounter":
        counter = cls.__new__(cls)
        counter.scores, counter.reference, counter.half_life = state["scores"], state["reference"], state["half_life"]
        return counter

    def rebase(self, now: float) -> None:
        self.scores *= self._factor(np.float64(self.reference), now)
        self.reference = now

    def _factor(self, times: np.ndarray, reference: float | None = None) -> np.ndarray:
        ages = (self.reference if reference is None else reference) - times
        return np.exp2(-np.clip(ages, -50 * self.half_life, 1000 * self.half_life) / self.half_life)


class InteractionData:
    """Users, items and interactions as sparse matrices, with cheap single-event updates."""

    def __init__(self, items: Sequence[ItemRecord], user_ids: Iterable[str],
                 interactions: Iterable[InteractionRecord] | EventColumns, weighting: EventWeighting,
                 trending_half_life: float = TRENDING_HALF_LIFE, popularity: np.ndarray | None = None,
                 cooccurrence: sp.csr_matrix | None = None) -> None:
        """`popularity` and `cooccurrence` (items x items, zero diagonal) may come computed elsewhere: the
        Spark trainer's, whose co-occurrence is pruned per item; by default they are computed here, in full."""
        self.weighting = weighting
        self.items = IdMap(item.item_id for item in items)
        self.item_records: list[ItemRecord] = list(items)
        self._index_catalog()
        self.users = IdMap(user_ids)

        if not isinstance(interactions, EventColumns):
            interactions = EventColumns.from_records(interactions)
        users, items_, types, ratings, times, seqs = _indexed(interactions, self.users, self.items)
        self.n_interactions = len(users)
        self.user_events = np.bincount(users, minlength=len(self.users)).astype(np.int64)  # so forgetting is exact
        self.last_seq = int(seqs.max()) if len(seqs) else 0  # the store's sequence number applied last
        shape = (len(self.users), len(self.items))
        is_rating = types == TYPE_CODES[EventType.RATING]
        weights = weighting.weights(types, ratings)
        self.events = IncrementalMatrix.from_triples(users[~is_rating], items_[~is_rating], weights[~is_rating], shape, "add")
        self.ratings = IncrementalMatrix.from_triples(users[is_rating], items_[is_rating], ratings[is_rating], shape, "replace")
        self.recent = RecentEvents(users, items_, weights, times, types, len(self.users))
        self._preference: sp.csr_matrix | None = None
        self._memo: dict[tuple[str, int | None], Any] = {}
        self._memo_version: tuple[int, int] = (-1, -1)
        # Popularity is each item's column sum of preferences, so a deleted user's share can be taken out.
        self.popularity = (np.asarray(self.preference_matrix().sum(axis=0)).ravel().astype(np.float64)
                           if popularity is None else popularity)
        self.last_event_time = float(times.max()) if len(times) else 0.0
        self.trending = TrendingCounter(items_, weights, times, len(self.items), trending_half_life,
                                        reference=max(self.last_event_time, time.time()))
        # Item co-occurrence: how many users touched both items; grows when a user touches an item first.
        seen = self.seen_matrix()
        if cooccurrence is None:
            cooccurrence = (seen.T @ seen).tocsr()
            cooccurrence.setdiag(0.0)
            cooccurrence.eliminate_zeros()
        self.cooccurrence = CooccurrenceCounts(cooccurrence)
        self.item_users = np.asarray(seen.sum(axis=0)).ravel().astype(np.float64)  # distinct users per item

    # -- artifacts --------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the state holds, as named arrays (see recommenders/artifacts.py)."""
        self.compact()
        self.cooccurrence.compact()
        records = self.item_records
        recent, trending = self.recent.state(), self.trending.state()
        return {
            "item_ids": [item.item_id for item in records], "item_names": [item.name for item in records],
            "item_categories": [item.category for item in records], "item_brands": [item.brand for item in records],
            "item_descriptions": [item.description for item in records],
            "item_tags": ["\x1f".join(item.tags) for item in records],
            "item_prices": np.array([np.nan if item.price is None else item.price for item in records], np.float64),
            "item_available": self.item_available,
            "item_attributes": [json.dumps(dict(item.attributes)) for item in records],
            "user_ids": self.users.ids_of(range(self.n_users)),
            "events": self.events.snapshot, "ratings": self.ratings.snapshot,
            "recent_columns": recent["columns"], "recent_indptr": recent["indptr"],
            "popularity": self.popularity, "trending_scores": trending["scores"],
            "trending_reference": trending["reference"], "trending_half_life": trending["half_life"],
            # counts are whole numbers: float32 holds them exactly below 2^24 users, at half the size
            "cooccurrence": self.cooccurrence.snapshot.astype(np.float32), "item_users": self.item_users,
            "user_events": self.user_events, "n_interactions": self.n_interactions, "last_seq": self.last_seq, "last_event_time": self.last_event_time,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], weighting: EventWeighting) -> "InteractionData":
        """The state `state()` returned, without refitting anything."""
        data = cls.__new__(cls)
        data.weighting = weighting
        n = len(state["item_ids"])  # artifacts written before items had availability and attributes lack them
        available = state.get("item_available", np.ones(n, dtype=bool)).tolist()
        attributes = state.get("item_attributes", ["{}"] * n)
        columns = zip(state["item_ids"], state["item_names"], state["item_categories"], state["item_brands"],
                      state["item_descriptions"], state["item_tags"], state["item_prices"].tolist(), available,
                      attributes)
        data.item_records = [ItemRecord(item_id, name, category, brand, description,
                                        tuple(tags.split("\x1f")) if tags else (), None if np.isnan(price) else price,
                                        bool(usable), tuple(sorted(json.loads(attrs).items())))
                             for item_id, name, category, brand, description, tags, price, usable, attrs in columns]
        data.items = IdMap(state["item_ids"])
        data._index_catalog()
        data.users = IdMap(state["user_ids"])
        shape = (data.n_users, data.n_items)
        data.events = IncrementalMatrix(resized(state["events"], shape), "add")
        data.ratings = IncrementalMatrix(resized(state["ratings"], shape), "replace")
        data.recent = RecentEvents.from_state({"columns": state["recent_columns"], "indptr": state["recent_indptr"]})
        data._preference, data._memo, data._memo_version = None, {}, (-1, -1)
        data.popularity = state["popularity"]
        data.trending = TrendingCounter.from_state({"scores": state["trending_scores"],
                                                    "reference": state["trending_reference"],
                                                    "half_life": state["trending_half_life"]})
        data.cooccurrence = CooccurrenceCounts(state["cooccurrence"].astype(np.float64))
        data.item_users = state["item_users"]
        data.user_events = state["user_events"]
        data.n_interactions, data.last_seq = int(state["n_interactions"]), int(state["last_seq"])
        data.last_event_time = float(state["last_event_time"])
        return data

    # -- growth ---------------------------------------------------------------------------
    def add_user(self, user_id: str) -> int:
        index = self.users.add(user_id)
        if index >= len(self.user_events):
            self.user_events = np.append(self.user_events, np.zeros(index + 1 - len(self.user_events), np.int64))
        self.events.resize(len(self.users), len(self.items))
        self.ratings.resize(len(self.users), len(self.items))
        return index

    def add_item(self, item: ItemRecord) -> tuple[int, bool]:
        """Index of the item and whether it is new; an existing item's metadata is replaced."""
        index = self.items.get(item.item_id)
        if index is not None:
            self.item_records[index] = item
            self.item_category[index], self.item_brand[index], self.item_price[index], self.item_available[index] = \
                self._catalog_row(item)
            return index, False
        index = self.items.add(item.item_id)
        self.item_records.append(item)
        category, brand, price, available = self._catalog_row(item)
        self.item_category = np.append(self.item_category, category)
        self.item_brand = np.append(self.item_brand, brand)
        self.item_price = np.append(self.item_price, price)
        self.item_available = np.append(self.item_available, available)
        self.popularity = np.append(self.popularity, 0.0)
        self.item_users = np.append(self.item_users, 0.0)
        self.cooccurrence.resize(len(self.items), len(self.items))
        self.events.resize(len(self.users), len(self.items))
        self.ratings.resize(len(self.users), len(self.items))
        return index, True

    # -- events ---------------------------------------------------------------------------
    def observe(self, event: InteractionRecord) -> tuple[int, int]:
        """Apply one stored event; returns (user index, item index). The item must be known."""
        user = self.add_user(event.user_id)
        item = self.items.get(event.item_id)
        if item is None:
            raise KeyError(event.item_id)
        weight = self.weighting.weight(event.event_type, event.rating)
        seen = self.seen_items(user)
        if not (seen == item).any():  # np.isin on one value costs 10x more
            self._add_cooccurrence(item, seen)
        if event.event_type == EventType.RATING:
            old_rating = self.ratings.value(user, item)  # a new rating replaces the old
            previous = self.weighting.weight(EventType.RATING, old_rating) if old_rating else 0.0
            self.ratings.update(user, item, float(event.rating))
            self.popularity[item] += weight - previous
        else:
            self.events.update(user, item, weight)
            self.popularity[item] += weight
        self.recent.append(user, item, weight, event.timestamp, event.event_type)
        self.trending.add(item, weight, event.timestamp)
        self.n_interactions += 1
        self.user_events[user] += 1
        self.last_seq = max(self.last_seq, event.seq)
        self.last_event_time = max(self.last_event_time, event.timestamp)
        return user, item

    def forget_user(self, user_id: str) -> int | None:
        """Empty the user's rows and recent events; their index, or None for an unknown user.

        The id keeps its index, so the user is now like a newcomer with no history. Their share of
        popularity, co-occurrence and n_interactions is taken out exactly; of trending, their latest
        events' share.
        """
        user = self.users.get(user_id)
        if user is None:
            return None
        items, weights = self.preference_row(user)
        self.popularity[items] -= weights
        seen = self.seen_items(user)
        self.item_users[seen] -= 1
        pairs = sp.csr_matrix((np.ones(len(seen)), (np.zeros(len(seen), np.int64), seen)), shape=(1, self.n_items))
        together = (pairs.T @ pairs).tocsr()
        together.setdiag(0.0)
        self.cooccurrence.add(-together)
        recent = self.recent.of(user)  # trending keeps only a decayed sum: the latest events are taken out
        for item, weight, moment in zip(recent.items.tolist(), recent.weights.tolist(), recent.times.tolist()):
            self.trending.add(item, -weight, moment)
        self.n_interactions -= int(self.user_events[user])
        self.user_events[user] = 0
        self.events = _without_row(self.events, user, "add")
        self.ratings = _without_row(self.ratings, user, "replace")
        self.recent.forget(user)
        self._preference = None
        self._memo, self._memo_version = {}, (-1, -1)  # n_interactions did not change: reset by hand
        return user

    def _add_cooccurrence(self, item: int, others: np.ndarray) -> None:
        """The user touched `item` for the first time: it now co-occurs with each of their other items."""
        self.item_users[item] += 1
        self.cooccurrence.touch(item, others)

    def memo(self, name: str, compute: Callable[[], Any], key: int | None = None) -> Any:
        """A value derived from the state (per user with `key`), computed again only after an event
        or a new item. One request asks for a user's seen items and preferences several times."""
        version = (self.n_interactions, self.n_items)
        if self._memo_version != version or len(self._memo) > MEMO_ENTRIES:
            self._memo, self._memo_version = {}, version
        cached = self._memo.get((name, key))
        if cached is None:
            cached = self._memo[(name, key)] = compute()
        return cached

    def compact(self) -> None:
        """Fold single-event updates into the snapshots that whole-matrix models read."""
        self.events.compact()
        self.ratings.compact()
        self._preference = None

    # -- reads ------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    def preference_row(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(items, preference weights > 0) of one user, up to the latest event."""
        return self.memo("preference_row", lambda: self._preference_row(user), key=user)

    def _preference_row(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        event_items, event_values = self.events.row(user)
        rating_items, rating_values = self.ratings.row(user)
        items = np.concatenate([event_items, rating_items])
        values = np.concatenate([event_values, self.weighting.rating_weight(rating_values)])
        if _increasing(items):  # no item both viewed and rated (all of ml-1m): nothing to sum, no sort
            unique, summed = items, values.astype(np.float64)
        else:
            unique, inverse = np.unique(items, return_inverse=True)
            summed = np.bincount(inverse, weights=values, minlength=len(unique))
        positive = summed > 0
        return unique[positive], summed[positive]

    def category_preferences(self, user: int) -> np.ndarray:
        """The user's summed preference weight per category (index as in `categories`)."""
        items, weights = self.preference_row(user)
        categories = self.item_category[items]
        known = categories >= 0
        return np.bincount(categories[known], weights=weights[known], minlength=len(self.categories))

    def strongest_preferences(self, user: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's `limit` strongest (items, weights): bounds the cost of scoring heavy users."""
        items, weights = self.preference_row(user)
        if len(items) <= limit:
            return items, weights
        keep = np.sort(np.argpartition(-weights, limit - 1)[:limit])
        return items[keep], weights[keep]

    def preference_rows(self, users: np.ndarray, seen: bool = False, limit: int | None = None) -> sp.csr_matrix:
        """The users' live rows as one len(users) x n_items CSR: preference weights, or 1 per seen item
        with `seen`; with `limit`, only each user's `limit` strongest preferences."""
        if len(users) == 1:  # a request asks for one user's rows several times: build them once
            if limit is not None and not seen and len(self.preference_row(int(users[0]))[0]) <= limit:
                limit = None  # the same row as without a limit: share it (scipy's CSR checks cost ~40 us a row)
            return self.memo(f"rows:{seen}:{limit}", lambda: self._rows(users, seen, limit), key=int(users[0]))
        return self._rows(users, seen, limit)

    def _rows(self, users: np.ndarray, seen: bool, limit: int | None) -> sp.csr_matrix:
        if seen:
            rows = [(items, np.ones(len(items))) for items in map(self.seen_items, users.tolist())]
        elif limit is not None:
            rows = [self.strongest_preferences(user, limit) for user in users.tolist()]
        else:
            rows = [self.preference_row(user) for user in users.tolist()]
        return stacked_rows(rows, self.n_items)

    def seen_items(self, user: int | None) -> np.ndarray:
        """Every item the user interacted with, liked or not: never recommended back."""
        if user is None:
            return np.empty(0, np.int64)
        return self.memo("seen_items", lambda: _union(self.events.row(user)[0], self.ratings.row(user)[0]), key=user)

    def preference_matrix(self) -> sp.csr_matrix:
        """All users' preferences as of the last compaction (what whole-matrix models fit on)."""
        if self._preference is None:
            ratings = self.ratings.snapshot.copy()
            ratings.data = self.weighting.rating_weight(ratings.data)
            shape = (self.n_users, self.n_items)
            matrix = resized(self.events.snapshot, shape) + resized(ratings, shape)
            matrix.eliminate_zeros()
            self._preference = matrix.tocsr()
        return self._preference

    def seen_matrix(self) -> sp.csr_matrix:
        """Binary users x items: 1 where the user did anything with the item (as of the last compaction)."""
        shape = (self.n_users, self.n_items)
        seen = (resized(self.events.snapshot, shape) + resized(self.ratings.snapshot, shape)).tocsr()
        seen.data = np.ones_like(seen.data)
        return seen

    def canonical_order(self, ids: IdMap, indices: np.ndarray) -> np.ndarray:
        """`indices` sorted by their external ids: an order that does not depend on arrival order.

        Models with random initialisation per row (ALS, SVD) fit in this order, so a restart, which
        numbers users and items differently from the live process, fits exactly the same model.
        """
        names = np.array(ids.ids_of(indices), dtype=object)
        return indices[np.argsort(names, kind="stable")]

    def user_ratings(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        return self.memo("user_ratings", lambda: self.ratings.row(user), key=user)

    def category_mask(self, category: str | None) -> np.ndarray | None:
        """Boolean mask of the category's items, None for "all", KeyError for an unknown category."""
        if category is None:
            return None
        index = self.categories.get(category)
        if index is None:
            raise KeyError(category)
        return self.item_category == index

    def _index_catalog(self) -> None:
        """Per-item columns of what filters and rules read (category and brand codes, -1 for none; price,
        NaN for none; availability), so a request's mask is array operations, never a loop over items."""
        records = self.item_records
        self.categories = IdMap(sorted({item.category for item in records if item.category}))
        self.brands = IdMap(sorted({item.brand for item in records if item.brand}))
        rows = [self._catalog_row(item) for item in records]
        columns = list(zip(*rows)) if rows else [(), (), (), ()]
        self.item_category = np.array(columns[0], dtype=np.int64)
        self.item_brand = np.array(columns[1], dtype=np.int64)
        self.item_price = np.array(columns[2], dtype=np.float64)
        self.item_available = np.array(columns[3], dtype=bool)

    def _catalog_row(self, item: ItemRecord) -> tuple[int, int, float, bool]:
        """The item's entries in the catalog columns, adding a new category or brand to its id map."""
        return (self.categories.add(item.category) if item.category else -1,
                self.brands.add(item.brand) if item.brand else -1,
                np.nan if item.price is None else item.price, item.available)


@dataclass(frozen=True)
class EventColumns:
    """Interactions as parallel arrays: the fast way in for millions of events (loaders, evaluation).

    user_ids / item_ids hold strings; event_types strings of EventType values; rating NaN unless a
    rating; timestamp Unix seconds; seq the store's sequence number (0 when not stored).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    event_types: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    seqs: np.ndarray

    @classmethod
    def from_frame(cls, frame: "pd.DataFrame") -> "EventColumns":
        """From a frame with columns user_id, item_id, event_type, rating, timestamp (and optional seq)."""
        n = len(frame)
        seqs = frame["seq"].to_numpy(np.int64) if "seq" in frame else np.zeros(n, np.int64)
        return cls(frame["user_id"].astype(str).to_numpy(), frame["item_id"].astype(str).to_numpy(),
                   frame["event_type"].astype(str).to_numpy(), frame["rating"].to_numpy(np.float64),
                   frame["timestamp"].to_numpy(np.float64), seqs)

    @classmethod
    def from_records(cls, records: Iterable[InteractionRecord]) -> "EventColumns":
        rows = [(r.user_id, r.item_id, r.event_type.value, np.nan if r.rating is None else r.rating, r.timestamp,
                 r.seq) for r in records]
        columns = list(zip(*rows)) if rows else [()] * 6
        dtypes = (object, object, object, np.float64, np.float64, np.int64)
        return cls(*(np.array(column, dtype) for column, dtype in zip(columns, dtypes)))


def _increasing(items: np.ndarray) -> bool:
    """Whether the indices are sorted without repeats (as one CSR row's are)."""
    return bool((items[1:] > items[:-1]).all())


def _union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """np.union1d, without its sort when the two rows together are already sorted and distinct:
    for a user with 400 ratings and no other events, 7 us instead of 50 (reading the rows takes 6)."""
    items = np.concatenate([first, second])
    return items if _increasing(items) else np.unique(items)


def _without_row(matrix: IncrementalMatrix, row: int, combine: Combine) -> IncrementalMatrix:
    """A compacted copy of `matrix` with one row emptied; models fitted on the old snapshot keep it."""
    matrix.compact()
    snapshot = matrix.snapshot
    start, end = snapshot.indptr[row], snapshot.indptr[row + 1]
    indptr = snapshot.indptr.copy()
    indptr[row + 1:] -= end - start
    emptied = sp.csr_matrix((np.delete(snapshot.data, np.s_[start:end]), np.delete(snapshot.indices, np.s_[start:end]),
                             indptr), shape=snapshot.shape)
    return IncrementalMatrix(emptied, combine)


def _indexed(columns: EventColumns, users: IdMap, items: IdMap) -> tuple[np.ndarray, ...]:
    """(user, item, type code, rating, time, seq) in index space, vectorised over unique ids.

    Events for items not in the catalog are dropped: the store never holds them, and a loader's
    stray row must not crash a rebuild.
    """
    user_codes, unique_users = pd.factorize(columns.user_ids)
    item_codes, unique_items = pd.factorize(columns.item_ids)
    user_index = np.array([users.add(u) for u in unique_users], dtype=np.int64)
    item_index = np.array([-1 if (i := items.get(item)) is None else i for item in unique_items], dtype=np.int64)
    codes = pd.Series(columns.event_types, dtype=object).map({t.value: code for t, code in TYPE_CODES.items()})
    if codes.isna().any():
        raise ValueError(f"unknown event types: {sorted(set(columns.event_types[codes.isna().to_numpy()]))}")
    types = codes.to_numpy(np.int64)
    user_idx = user_index[user_codes] if len(user_codes) else np.empty(0, np.int64)
    item_idx = item_index[item_codes] if len(item_codes) else np.empty(0, np.int64)
    known = item_idx >= 0
    return (user_idx[known], item_idx[known], types[known], columns.ratings[known], columns.timestamps[known],
            columns.seqs[known])
