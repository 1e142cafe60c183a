"""The engine: the model state plus every recommender, behind string ids.

This is the only class the service talks to. It is given data (items, users, interactions) and
events; it never reads the database. Each public method takes the engine's lock, so an event
applied by one request is never half-seen by another.
"""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Iterable, Sequence

import numpy as np

from recommenders import registry
from recommenders.base import Recommender, candidate_mask, normalise, normalise_retrieved
from recommenders.business_rules import DEFAULT_FILTER, ItemFilter, ListShape, RuleBook, within_caps
from recommenders.collaborative import CollaborativeBlend
from recommenders.explanations import Explainer
from recommenders.exploration import explore
from recommenders.hybrid import BlendTuning, HybridPolicy, HybridRecommender, rank_contributions
from recommenders.interaction_data import EventColumns, EventWeighting, InteractionData
from recommenders.ranker import LearnedRanker, fit_ranker
from recommenders.realtime import RealtimeRecommender
from recommenders.records import EventType, InteractionRecord, ItemRecord, LogEntry, LogKind, Recommendation
from recommenders.retrieval import Retrieval


def cases() -> tuple[str, ...]:
    """The names GET /recommend takes as `case` (from the registry)."""
    return registry.cases()


def anonymous_case(case: str, product_id: str | None) -> bool:
    """Whether `case` answers without a user: popular, or one component's case around a product."""
    return case == "popular" or (case in registry.single_cases() and product_id is not None)


class UnknownKeyError(LookupError):
    """An item or category the engine does not know; `kind` says which."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"unknown {kind} '{key}'")
        self.kind = kind
        self.key = key


class Engine:
    def __init__(self, data: InteractionData, components: dict[str, Recommender],
                 policy: HybridPolicy = HybridPolicy(), collaborative_weights: dict[str, float] | None = None,
                 ranker: LearnedRanker | None = None, retrieval: Retrieval | None = None) -> None:
        self.data = data
        self.components = components
        weights = registry.collaborative_weights(collaborative_weights)
        # a part the trainer left out (registry.left_out) is absent: the blend re-weighs the others
        self.collaborative = CollaborativeBlend({name: components[name] for name in weights if name in components},
                                                weights)
        self.hybrid = HybridRecommender({"collaborative": self.collaborative, "content": components["content"],
                                         "behavior": components["behavior"], "popular": components["popular"]}, policy,
                                        ranker=ranker)
        self.ranker_report: dict = {}  # how the last ranker fit went (kept or not, and why)
        self.realtime = RealtimeRecommender(components["behavior"], components["content"], self.hybrid)
        self.explainer = Explainer(components["content"], components["item_based"])
        # Candidates from ANN indexes for a catalog too large to score whole (None: every item is scored).
        self.retrieval = retrieval
        self._lock = threading.RLock()
        self.fitted_at = 0.0
        self.fit_seconds = 0.0
        self.component_seconds: dict[str, float] = {}
        self.fitted_through_seq = data.last_seq  # log entries up to here are in the fit
        self.position = data.last_seq  # ... and up to here are applied (fit, then every later entry in order)
        self.rules = RuleBook()  # the standing rules, set from the store on load and kept by the log's RULE entries
        # The seq of the last entry that changed what lists may hold (a rule, an edit of a known item):
        # part of every cached answer's key (`lists_generation`), so such an entry retires them all.
        self.lists_seq = 0

    @classmethod
    def build(cls, items: Sequence[ItemRecord], user_ids: Iterable[str],
              interactions: Iterable[InteractionRecord] | EventColumns, weighting: EventWeighting = EventWeighting(),
              policy: HybridPolicy = HybridPolicy(), collaborative_weights: dict[str, float] | None = None,
              on_component: Callable[[str], None] | None = None, ranker: str = "off",
              ann_min_items: int | None = None, unscalable_max_items: int | None = None) -> "Engine":
        """A fitted engine from records or columns (what the store or a data loader returns).

        With `ranker` one of ranker.SPLITS, the second stage is learnt too (recommenders/ranker.py):
        the components are fitted a second time on 80% of each user's events, so the fit takes about twice as long.
        From `ann_min_items` items, the ANN indexes that retrieve candidates are built (recommenders/retrieval.py).
        Above `unscalable_max_items` items the components that do not scale are left out (registry.left_out)."""
        if not isinstance(interactions, EventColumns):
            interactions = EventColumns.from_records(interactions)
        data = InteractionData(items, user_ids, interactions, weighting)
        skipped = [] if unscalable_max_items is None else registry.left_out(data.n_items, unscalable_max_items)
        components = {name: entry.factory() for name, entry in registry.registrations().items() if name not in skipped}
        engine = cls(data, components, policy, collaborative_weights)
        engine.fit(on_component)
        if ranker != "off":
            every_user = engine.data.users.ids_of(range(engine.data.n_users))
            engine.hybrid.ranker, engine.ranker_report = fit_ranker(
                lambda part: cls.build(items, every_user, part, weighting, policy, collaborative_weights, ranker="off",
                                       unscalable_max_items=unscalable_max_items),
                engine.data, interactions, ranker)
            if on_component is not None:
                on_component("ranker")
        engine.index_for_retrieval(ann_min_items, on_component)
        return engine

    def index_for_retrieval(self, ann_min_items: int | None, on_component: Callable[[str], None] | None = None) -> None:
        """Build the ANN indexes (build_retrieval) for a catalog of `ann_min_items` items or more: every
        trainer's last step (Engine.build, the Spark trainer)."""
        if ann_min_items is not None and self.data.n_items >= ann_min_items:
            began = time.perf_counter()
            self.retrieval = self.build_retrieval()
            self.component_seconds["retrieval"] = time.perf_counter() - began
            if on_component is not None:
                on_component("retrieval")

    def build_retrieval(self) -> Retrieval:
        """The ANN indexes over this engine's fitted ALS factors and content vectors."""
        with self._lock:
            return Retrieval(self.components["als"], self.components["content"],
                             self.components["item_based"]).fit(self.data)

    @property
    def ranker(self) -> LearnedRanker | None:
        return self.hybrid.ranker

    def fit(self, on_component: Callable[[str], None] | None = None) -> None:
        """Fit every component on the current state; `on_component(name)` after each (progress bars)."""
        started = time.perf_counter()
        with self._lock:
            self.data.compact()
            for name, component in self.components.items():
                began = time.perf_counter()
                component.fit(self.data)
                self.component_seconds[name] = time.perf_counter() - began
                if on_component is not None:
                    on_component(name)
        self.fit_seconds = time.perf_counter() - started
        self.fitted_at = time.time()

    # -- writes: the log, applied in order ----------------------------------------------------
    def apply(self, entries: Sequence[LogEntry]) -> list[LogEntry]:
        """Apply the log entries past `position`, in order; returns those applied now.

        Every process applies the same entries in the same order through here, so two engines
        loaded from one artifact hold the same state once they reach the same position, however
        the entries were grouped. The users' models are folded in once per call, after all their
        events (a user's fold-in depends only on their final row), and before a deletion.
        """
        applied: list[LogEntry] = []
        with self._lock:
            touched: set[int] = set()
            for entry in entries:
                if entry.seq <= self.position:
                    continue
                if entry.kind == LogKind.EVENT:
                    touched.add(self._observe(entry.event))
                else:
                    self._fold_in(touched)
                    if entry.kind == LogKind.ITEM:
                        if entry.item.item_id in self.data.items:
                            self.lists_seq = entry.seq
                        self._add_items([entry.item])
                    elif entry.kind == LogKind.RULE:
                        self.rules.apply(entry.rule)
                        self.lists_seq = entry.seq
                    elif entry.kind == LogKind.FORGET_USER:
                        self._forget_user(entry.user_id)
                self.position = entry.seq
                applied.append(entry)
            self._fold_in(touched)
        return applied

    def observe(self, event: InteractionRecord) -> bool:
        """Apply one event: a stored one (seq > 0) as its log entry, an unstored one (offline evaluation) as is."""
        if event.seq:
            return bool(self.apply([LogEntry(event.seq, LogKind.EVENT, event=event, user_id=event.user_id)]))
        with self._lock:
            self._fold_in({self._observe(event)})
            return True

    def forget_user(self, user_id: str) -> bool:
        """Erase a deleted user's state now, so their next answers are a newcomer's (popular items).

        Their rows, recent events, ALS vector, SVD terms and place among others' neighbours go at
        once, and so does their share of popularity and co-occurrence. What they taught the fitted
        models (EASE, item-to-item, ALS item factors) goes at the next fit, which reads the log
        without them. Returns whether the engine knew the user.
        """
        with self._lock:
            return self._forget_user(user_id)

    def add_item(self, item: ItemRecord) -> None:
        with self._lock:
            self._add_items([item])

    def add_user(self, user_id: str) -> None:
        with self._lock:
            self.data.add_user(user_id)

    def compact(self) -> int:
        """Fold single-event updates into the snapshots; answers do not change. Returns the rows folded."""
        with self._lock:
            pending = self.data.events.pending_rows + self.data.ratings.pending_rows
            if pending or self.data.cooccurrence.pending_rows:
                self.data.compact()
                self.data.cooccurrence.compact()
            return pending

    def _observe(self, event: InteractionRecord) -> int:
        """The event in the model state; returns its user, whose models `_fold_in` must update."""
        self._item_index(event.item_id)
        return self.data.observe(event)[0]

    def _fold_in(self, users: set[int]) -> None:
        if users:
            batch = np.array(sorted(users), dtype=np.int64)
            for component in self.components.values():
                component.partial_fit_users(self.data, batch)
            users.clear()

    def _forget_user(self, user_id: str) -> bool:
        user = self.data.forget_user(user_id)
        if user is None:
            return False
        for component in self.components.values():
            component.forget_users(self.data, np.array([user]))
        return True

    def _add_items(self, items: list[ItemRecord]) -> None:
        indices = np.array([self.data.add_item(item)[0] for item in items], dtype=np.int64)
        for component in self.components.values():
            component.partial_fit_items(self.data, indices)
        if self.retrieval is not None:
            self.retrieval.add_items(self.data, indices)

    # -- reads ------------------------------------------------------------------------------
    def lists_generation(self, now: float | None = None) -> tuple[int, int]:
        """What the lists depend on beyond the user's events: the last rule or item edit applied, and how
        many boosts have ended. Equal in every process at the same log position, so it can key a shared cache.
        Read without the lock, which applying a log entry holds: a cached read must not wait for it."""
        return self.lists_seq, self.rules.expired_boosts(time.time() if now is None else now)

    def recommend(self, user_id: str | None, k: int, case: str = "hybrid", method: str | None = None,
                  product_id: str | None = None, category: str | None = None,
                  tuning: BlendTuning | None = None, filters: ItemFilter = DEFAULT_FILTER) -> list[Recommendation]:
        """Top-k for one user by one of the `cases()`; users with no history get popular items.

        A single component's case with `product_id` ranks the items that component finds like it.
        `tuning` gives the hybrid and collaborative blends other weights for this request. Every list
        holds only what `filters` and the standing rules allow (see business_rules).
        """
        single = registry.single_cases()
        if case not in ("hybrid", "collaborative") and case not in single:
            raise ValueError(f"unknown case '{case}'")
        with self._lock:
            user = None if user_id is None else self.data.users.get(user_id)
            product = None if product_id is None else self._item_index(product_id)
            shape = self._shape(filters, category)
            popular = self.components["popular"]
            if case in single and case != "popular" and product is not None:
                name = single[case]
                scores = self.components[name].similar_items(self.data, np.array([product]))[0]
                return self._single(scores, name, user, k, shape, context=product)
            if case == "popular" or user is None or len(self.data.seen_items(user)) == 0:
                head = self._retrieved(lambda retrieval: retrieval.popular_head(self.data), user, shape, k)
                if head is not None:
                    return self._single(popular.score_items(self.data, np.zeros(1, np.int64), head)[0], "popular",
                                        user, k, shape, items=head)
                return self._single(self._item_scores(popular), "popular", user, k, shape)
            collaborative, hybrid = self._blends(tuning)
            if case == "hybrid":
                among = self._retrieved(lambda retrieval: retrieval.candidates(self.data, user), user, shape, k)
                return self._labelled(*hybrid.recommend_labelled(self.data, user, k, method, shape, among), user=user)
            users = np.array([user])
            if case == "collaborative":
                result = self._single(collaborative.score(self.data, users)[0], "collaborative", user, k, shape)
                return self._with_predicted_ratings(result, user)
            name = single[case]
            return self._single(self.components[name].score(self.data, users)[0], name, user, k, shape)

    def _blends(self, tuning: BlendTuning | None) -> tuple[CollaborativeBlend, HybridRecommender]:
        """The collaborative blend and the hybrid as configured, or as `tuning` weighs them: new wrappers
        around the same fitted components, so a tuned request copies no model."""
        if tuning is None:
            return self.collaborative, self.hybrid
        collaborative, policy = self.collaborative, self.hybrid.policy
        if tuning.collaborative_weights is not None:
            collaborative = CollaborativeBlend(collaborative.parts,
                                               {**collaborative.weights, **dict(tuning.collaborative_weights)})
        if tuning.collaborative_tiers is not None:
            new, experienced, heavy = tuning.collaborative_tiers
            policy = replace(policy, collaborative_new=new, collaborative_experienced=experienced,
                             collaborative_heavy=heavy)
        hybrid = HybridRecommender({**self.hybrid.components, registry.COLLABORATIVE: collaborative}, policy,
                                   self.hybrid.method, self.hybrid.ranker)
        return collaborative, hybrid

    def realtime_recommend(self, user_id: str | None, k: int, product_id: str | None = None,
                           event_type: EventType = EventType.VIEW,
                           filters: ItemFilter = DEFAULT_FILTER) -> list[Recommendation]:
        """Next items given the user's latest events and the product on screen (if any)."""
        with self._lock:
            user = None if user_id is None else self.data.users.get(user_id)
            product = None if product_id is None else self._item_index(product_id)
            shape = self._shape(filters)
            among = self._retrieved(lambda retrieval: retrieval.candidates(self.data, user, product, k), user, shape,
                                    k, leave_out=product)
            ranked = self.realtime.recommend(self.data, user, k, product, event_type, shape, among)
            return self._labelled(*ranked, user=user, context=product, event_type=event_type)

    def explore(self, user_id: str | None, ranked: list[Recommendation], weight: float, candidates: Sequence[str],
                category: str | None = None, filters: ItemFilter = DEFAULT_FILTER) -> list[Recommendation]:
        """`ranked` (this engine's list for the user) with a `weight` share of its slots given to
        `candidates`, the least shown items first (see recommenders/exploration.py).

        Exploration never shows what a ranked list could not: only candidates the filters and the
        standing rules allow, that the user has not seen and the list does not hold, take a slot; and
        the caps hold over the final list (an explored item over a cap gives its slot back, and the
        ranked items it pushed out of the tail come back in order)."""
        if weight <= 0.0 or not ranked or not candidates:
            return ranked
        with self._lock:
            shape = self._shape(filters, category)
            user = None if user_id is None else self.data.users.get(user_id)
            allowed = candidate_mask(self.data, user, shape.allowed)
            allowed[[self.data.items.get(r.item) for r in ranked]] = False
            known = np.asarray([i for i in map(self.data.items.get, candidates) if i is not None], dtype=np.int64)
            merged = explore(ranked, weight, self.data.items.ids_of(known[allowed[known]]))
            if not shape.caps:
                return merged
            held = {r.item for r in merged}
            pool = merged + [r for r in ranked if r.item not in held]  # the pushed-out tail, in rank order
            kept = within_caps(np.array([self.data.items.get(r.item) for r in pool]), shape.caps, len(ranked))
            by_item = {r.item: r for r in pool}
            return [by_item[item] for item in self.data.items.ids_of(kept)]

    def similar_items(self, item_id: str, k: int, filters: ItemFilter = DEFAULT_FILTER) -> list[Recommendation]:
        """Items like this one: co-bought/co-rated neighbours and text neighbours, blended."""
        with self._lock:
            item = self._item_index(item_id)
            shape = self._shape(filters)
            parts = {"collaborative": self.components["item_based"], "content": self.components["content"]}
            among = self._retrieved(lambda retrieval: retrieval.similar_candidates(self.data, item, k), None, shape, k,
                                    leave_out=item)
            if among is not None:
                candidates = np.ones(len(among), bool)
                contributions = {name: 0.5 * normalise_retrieved(part.similar_items_among(self.data, item, among))
                                 for name, part in parts.items()}
            else:
                candidates = candidate_mask(self.data, None, shape.allowed)
                candidates[item] = False
                contributions = {name: 0.5 * normalise(part.similar_items(self.data, np.array([item]))[0], candidates)
                                 for name, part in parts.items()}
            ranked = rank_contributions(self.data, None, k, contributions, candidates, shape, items=among)
            return self._labelled(*ranked, context=item)

    def popular_items(self, k: int, category: str | None = None, trending: bool = False,
                      filters: ItemFilter = DEFAULT_FILTER) -> list[Recommendation]:
        """Most engaged-with items overall or in a category; `trending` favours recent activity."""
        with self._lock:
            name = "trending" if trending else "popular"
            return self._single(self._item_scores(self.components[name]), name, None, k,
                                self._shape(filters, category))

    def rebase_trending(self, now: float | None = None) -> None:
        with self._lock:
            self.data.trending.rebase(time.time() if now is None else now)

    def user_profile(self, user_id: str, top: int = 3) -> dict:
        """History size and the categories the user leans to, by preference weight."""
        with self._lock:
            user = self.data.users.get(user_id)
            if user is None:
                return {"history_size": 0, "top_categories": []}
            totals = self.data.category_preferences(user)
            order = np.argsort(-totals, kind="stable")[:top]
            return {"history_size": int(len(self.data.seen_items(user))),
                    "top_categories": [{"name": self.data.categories.id_of(i), "weight": round(float(totals[i]), 3)}
                                       for i in order if totals[i] > 0]}

    def stats(self) -> dict:
        with self._lock:
            return {"users": self.data.n_users, "items": self.data.n_items,
                    "interactions": self.data.n_interactions, "categories": len(self.data.categories),
                    "pending_rows": self.data.events.pending_rows + self.data.ratings.pending_rows,
                    "last_seq": self.data.last_seq, "position": self.position,
                    "fitted_through_seq": self.fitted_through_seq, "fitted_at": self.fitted_at,
                    "fit_seconds": round(self.fit_seconds, 4)}

    # -- helpers ----------------------------------------------------------------------------
    def _item_index(self, item_id: str) -> int:
        index = self.data.items.get(item_id)
        if index is None:
            raise UnknownKeyError("item", item_id)
        return index

    def _item_scores(self, component: Recommender) -> np.ndarray:
        """Scores of a component that ranks items the same for everyone (popular, trending)."""
        return component.score(self.data, np.zeros(1, np.int64))[0]

    def _shape(self, filters: ItemFilter, category: str | None = None) -> ListShape:
        """The request's filters and category (an unknown category is a 404 here, unlike in a filter),
        and the standing rules, as one list shape."""
        try:
            category_mask = self.data.category_mask(category)
        except KeyError:
            raise UnknownKeyError("category", category) from None
        allowed = filters.mask(self.data)
        if category_mask is not None:
            allowed = category_mask if allowed is None else allowed & category_mask
        return self.rules.shape(self.data, allowed, time.time())

    def _single(self, scores: np.ndarray, strategy: str, user: int | None, k: int, shape: ListShape,
                context: int | None = None, items: np.ndarray | None = None) -> list[Recommendation]:
        """One component's list; with `items` (retrieved, and only what the list may hold), `scores` are theirs."""
        if items is not None:
            candidates, normalised = np.ones(len(items), bool), normalise_retrieved(scores)
        else:
            candidates = candidate_mask(self.data, user, shape.allowed)
            if context is not None:
                candidates[context] = False
            normalised = normalise(scores, candidates)
        ranked, values, _ = rank_contributions(self.data, user, k, {strategy: normalised}, candidates, shape, items=items)
        return self._labelled(ranked, values, [strategy] * len(ranked), user=user, context=context)

    def _retrieved(self, retrieve: Callable[[Retrieval], np.ndarray], user: int | None, shape: ListShape, k: int,
                   leave_out: int | None = None) -> np.ndarray | None:
        """The retrieved candidates a list may hold (unseen, allowed, not `leave_out`); None without ANN
        indexes, or when the filters leave fewer than k of them: then the whole catalog is ranked."""
        if self.retrieval is None:
            return None
        found = retrieve(self.retrieval)
        keep = ~np.isin(found, self.data.seen_items(user))
        if shape.allowed is not None:
            keep &= shape.allowed[found]
        if leave_out is not None:
            keep &= found != leave_out
        return found[keep] if keep.sum() >= k else None

    def _labelled(self, items: np.ndarray, scores: np.ndarray, labels: list[str], user: int | None = None,
                  context: int | None = None, event_type: EventType = EventType.VIEW) -> list[Recommendation]:
        """API records with a `reason` each (see Explainer)."""
        ids = self.data.items.ids_of(items)
        reasons = self.explainer.reasons(self.data, items, labels, user, context, event_type)
        return [Recommendation(item, float(score), label, {"reason": reason})
                for item, score, label, reason in zip(ids, scores, labels, reasons)]

    def _with_predicted_ratings(self, result: list[Recommendation], user: int) -> list[Recommendation]:
        if "svd" not in self.components:  # left out by the trainer (registry.left_out): no predictions to add
            return result
        indices = np.array([self.data.items.get(r.item) for r in result], dtype=np.int64)
        predicted = self.components["svd"].predict_ratings(self.data, user, indices)
        for recommendation, rating in zip(result, predicted):
            if np.isfinite(rating):
                recommendation.extra["predicted_rating"] = round(float(rating), 2)
        return result
