"""The engine: the model state plus every recommender, behind string ids.

This is the only class the service talks to. It is given data (items, users, interactions) and
events; it never reads the database. Each public method takes the engine's lock, so an event
applied by one request is never half-seen by another.
"""
from __future__ import annotations

import threading
import time
from typing import Iterable, Sequence

import numpy as np

from recommenders.base import candidate_mask, normalise
from recommenders.collaborative import CollaborativeRecommender
from recommenders.content_based import ContentRecommender
from recommenders.event_based import EventBasedRecommender
from recommenders.explanations import Explainer
from recommenders.hybrid import HybridPolicy, HybridRecommender, rank_contributions
from recommenders.interaction_data import EventColumns, EventWeighting, InteractionData
from recommenders.matrix_factorization import SVDRatingModel
from recommenders.popular import PopularityRecommender, TrendingRecommender
from recommenders.realtime import RealtimeRecommender
from recommenders.records import EventType, InteractionRecord, ItemRecord, Recommendation

CASES = ("hybrid", "collaborative", "content_based", "behavior_based", "popular")


class UnknownKeyError(LookupError):
    """An item or category the engine does not know; `kind` says which."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"unknown {kind} '{key}'")
        self.kind = kind
        self.key = key


class Engine:
    def __init__(self, data: InteractionData, policy: HybridPolicy = HybridPolicy(),
                 collaborative_weights: dict[str, float] | None = None) -> None:
        self.data = data
        self.popular = PopularityRecommender()
        self.trending = TrendingRecommender()
        self.content = ContentRecommender()
        self.collaborative = CollaborativeRecommender(collaborative_weights)
        self.rating_model = SVDRatingModel()
        self.behavior = EventBasedRecommender()
        self.hybrid = HybridRecommender({"collaborative": self.collaborative, "content": self.content,
                                         "behavior": self.behavior, "popular": self.popular}, policy)
        self.realtime = RealtimeRecommender(self.behavior, self.content, self.collaborative)
        self.explainer = Explainer(self.content, self.collaborative.item_based)
        self._lock = threading.RLock()
        self.fitted_at = 0.0
        self.fit_seconds = 0.0
        self.fitted_through_seq = data.last_seq  # events up to here are in the fit
        self._applied_seqs: set[int] = set()  # stored events applied since the fit

    @classmethod
    def build(cls, items: Sequence[ItemRecord], user_ids: Iterable[str],
              interactions: Iterable[InteractionRecord] | EventColumns, weighting: EventWeighting = EventWeighting(),
              policy: HybridPolicy = HybridPolicy(), collaborative_weights: dict[str, float] | None = None) -> "Engine":
        """A fitted engine from records or columns (what the store or a data loader returns)."""
        engine = cls(InteractionData(items, user_ids, interactions, weighting), policy, collaborative_weights)
        engine.fit()
        return engine

    def fit(self) -> None:
        started = time.perf_counter()
        with self._lock:
            self.data.compact()
            self.hybrid.fit(self.data)
            self.rating_model.fit(self.data)
        self.fit_seconds = time.perf_counter() - started
        self.fitted_at = time.time()

    # -- writes -----------------------------------------------------------------------------
    def observe(self, event: InteractionRecord) -> bool:
        """Apply one event to every part of the state it touches, and nothing else.

        Idempotent for stored events (seq > 0): a replay after a retrain, or the same event arriving
        from another process, is applied once. Returns whether it was applied now.
        """
        with self._lock:
            if event.seq and (event.seq <= self.fitted_through_seq or event.seq in self._applied_seqs):
                return False
            item = self._item_index(event.item_id)
            user = self.data.users.get(event.user_id)
            first_touch = user is None or item not in self.data.seen_items(user)
            user, _ = self.data.observe(event)
            if first_touch:
                self.behavior.observe_new_pair(self.data, user, item)
            self.collaborative.als.fold_in(self.data, user)
            if event.event_type == EventType.RATING:
                self.rating_model.fold_in(self.data, user)
            if event.seq:
                self._applied_seqs.add(event.seq)
            return True

    def forget_user(self, user_id: str) -> bool:
        """Erase a deleted user's own state now, so their next answers are a newcomer's (popular items).

        Their rows, recent events and ALS vector go at once. Other users' user-based neighbours
        lose them at the next compaction (every 30 s). What their events taught the shared models
        (co-occurrence counts, popularity and trending, EASE, item-to-item, ALS item factors) goes
        at the next retrain, which fits on the log without them; so do SVD's fitted terms for the
        user, which show (as predicted ratings) only if the same id comes back before then.
        Returns whether the engine knew the user.
        """
        with self._lock:
            user = self.data.forget_user(user_id)
            if user is None:
                return False
            self.collaborative.als.fold_in(self.data, user)  # solved again from the now empty row: zeros
            return True

    def add_item(self, item: ItemRecord) -> None:
        with self._lock:
            index, _ = self.data.add_item(item)
            self.content.add_item(self.data, item, index)

    def add_user(self, user_id: str) -> None:
        with self._lock:
            self.data.add_user(user_id)

    def compact(self) -> None:
        """Fold recent events into the snapshots and refresh the cheap whole-matrix model (user-based)."""
        with self._lock:
            self.data.compact()
            self.behavior.compact()
            self.collaborative.user_based.fit(self.data)

    # -- reads ------------------------------------------------------------------------------
    def recommend(self, user_id: str | None, k: int, case: str = "hybrid", method: str | None = None,
                  product_id: str | None = None, category: str | None = None) -> list[Recommendation]:
        """Top-k for one user by one of the CASES; users with no history get popular items."""
        with self._lock:
            user = None if user_id is None else self.data.users.get(user_id)
            product = None if product_id is None else self._item_index(product_id)
            allowed = self._category_mask(category)
            if case == "content_based" and product is not None:
                return self._single(self.content.similar_items(self.data, product), "content", user, k, allowed,
                                    context=product)
            if case == "popular" or user is None or len(self.data.seen_items(user)) == 0:
                return self._single(self.popular.score(self.data), "popular", user, k, allowed)
            if case == "hybrid":
                return self._labelled(*self.hybrid.recommend_labelled(self.data, user, k, method, allowed), user=user)
            if case == "collaborative":
                result = self._single(self.collaborative.score(self.data, user), "collaborative", user, k, allowed)
                return self._with_predicted_ratings(result, user)
            if case == "content_based":
                return self._single(self.content.score(self.data, user), "content", user, k, allowed)
            if case == "behavior_based":
                return self._single(self.behavior.score(self.data, user), "behavior", user, k, allowed)
            raise ValueError(f"unknown case '{case}'")

    def realtime_recommend(self, user_id: str | None, k: int, product_id: str | None = None,
                           event_type: EventType = EventType.VIEW) -> list[Recommendation]:
        """Next items given the user's latest events and the product on screen (if any)."""
        with self._lock:
            user = None if user_id is None else self.data.users.get(user_id)
            product = None if product_id is None else self._item_index(product_id)
            return self._labelled(*self.realtime.recommend(self.data, user, k, product, event_type), user=user,
                                  context=product, event_type=event_type)

    def similar_items(self, item_id: str, k: int) -> list[Recommendation]:
        """Items like this one: co-bought/co-rated neighbours and text neighbours, blended."""
        with self._lock:
            item = self._item_index(item_id)
            candidates = candidate_mask(self.data, None, None)
            candidates[item] = False
            signals = {"collaborative": self.collaborative.similar_items(self.data, item),
                       "content": self.content.similar_items(self.data, item)}
            contributions = {name: 0.5 * normalise(s, candidates) for name, s in signals.items()}
            return self._labelled(*rank_contributions(self.data, None, k, contributions, candidates), context=item)

    def popular_items(self, k: int, category: str | None = None, trending: bool = False) -> list[Recommendation]:
        """Most engaged-with items overall or in a category; `trending` favours recent activity."""
        with self._lock:
            recommender = self.trending if trending else self.popular
            return self._single(recommender.score(self.data), recommender.name, None, k, self._category_mask(category))

    def rebase_trending(self, now: float | None = None) -> None:
        with self._lock:
            self.data.trending.rebase(time.time() if now is None else now)

    def user_profile(self, user_id: str, top: int = 3) -> dict:
        """History size and the categories the user leans to, by preference weight."""
        with self._lock:
            user = self.data.users.get(user_id)
            if user is None:
                return {"history_size": 0, "top_categories": []}
            items, weights = self.data.preference_row(user)
            categories = self.data.item_category[items]
            known = categories >= 0
            totals = np.bincount(categories[known], weights=weights[known], minlength=len(self.data.categories))
            order = np.argsort(-totals, kind="stable")[:top]
            return {"history_size": int(len(self.data.seen_items(user))),
                    "top_categories": [{"name": self.data.categories.id_of(i), "weight": round(float(totals[i]), 3)}
                                       for i in order if totals[i] > 0]}

    def knows_item(self, item_id: str) -> bool:
        return item_id in self.data.items

    def stats(self) -> dict:
        with self._lock:
            return {"users": self.data.n_users, "items": self.data.n_items,
                    "interactions": self.data.n_interactions, "categories": len(self.data.categories),
                    "pending_rows": self.data.events.pending_rows + self.data.ratings.pending_rows,
                    "last_seq": self.data.last_seq, "fitted_at": self.fitted_at,
                    "fit_seconds": round(self.fit_seconds, 4)}

    # -- helpers ----------------------------------------------------------------------------
    def _item_index(self, item_id: str) -> int:
        index = self.data.items.get(item_id)
        if index is None:
            raise UnknownKeyError("item", item_id)
        return index

    def _category_mask(self, category: str | None) -> np.ndarray | None:
        try:
            return self.data.category_mask(category)
        except KeyError:
            raise UnknownKeyError("category", category) from None

    def _single(self, scores: np.ndarray, strategy: str, user: int | None, k: int, allowed: np.ndarray | None,
                context: int | None = None) -> list[Recommendation]:
        candidates = candidate_mask(self.data, user, allowed)
        if context is not None:
            candidates[context] = False
        items, values, _ = rank_contributions(self.data, user, k, {strategy: normalise(scores, candidates)}, candidates)
        return self._labelled(items, values, [strategy] * len(items), user=user, context=context)

    def _labelled(self, items: np.ndarray, scores: np.ndarray, labels: list[str], user: int | None = None,
                  context: int | None = None, event_type: EventType = EventType.VIEW) -> list[Recommendation]:
        """API records with a `reason` each (see Explainer)."""
        ids = self.data.items.ids_of(items)
        reasons = self.explainer.reasons(self.data, items, labels, user, context, event_type)
        return [Recommendation(item, float(score), label, {"reason": reason})
                for item, score, label, reason in zip(ids, scores, labels, reasons)]

    def _with_predicted_ratings(self, result: list[Recommendation], user: int) -> list[Recommendation]:
        indices = np.array([self.data.items.get(r.item) for r in result], dtype=np.int64)
        predicted = self.rating_model.predict(self.data, user, indices)
        for recommendation, rating in zip(result, predicted):
            if np.isfinite(rating):
                recommendation.extra["predicted_rating"] = round(float(rating), 2)
        return result
