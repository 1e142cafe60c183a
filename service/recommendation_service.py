"""The application service: the one place that wires the store, the engine and the cache together.

The web layer and the Socket.IO handlers call it; it calls nothing above it. An event is
committed to the store first, then applied to the engine, then the user's cache is dropped:
once a write is acknowledged it is durable and visible to the next read.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from config import Settings
from preprocess.demo_catalog import demo_interactions, demo_items, demo_user_ids
from recommenders.engine import Engine, UnknownKeyError
from recommenders.hybrid import HybridPolicy
from recommenders.interaction_data import EventColumns, EventWeighting
from recommenders.records import EventType, InteractionRecord, ItemRecord, Recommendation
from service.errors import InvalidRequestError, NotFoundError
from storage import Store, UnknownItemError
from utils.cache import Cache, make_cache

HISTORY_SHOWN = 20


@dataclass
class RecommendationResult:
    recommendations: list[Recommendation]
    source: str  # "cache" or "computed"


@dataclass
class InteractionOutcome:
    interaction: InteractionRecord
    cache_invalidated: bool
    duplicate: bool = False  # the event_id was already stored; nothing new was applied
    recommendations: list[Recommendation] = field(default_factory=list)


class Notifier(Protocol):
    """Where fresh recommendations go after an event (the Socket.IO rooms, in the web layer)."""

    def push(self, user_id: str, payload: dict) -> None: ...


class EventPublisher(Protocol):
    """Tells the other server processes about a stored event or a deleted user (see service.event_bus)."""

    def publish(self, event: InteractionRecord) -> None: ...

    def publish_forget_user(self, user_id: str) -> None: ...


class RecommendationService:
    def __init__(self, settings: Settings, store: Store, engine: Engine, cache: Cache) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.cache = cache
        self.notifier: Notifier | None = None
        self.publisher: EventPublisher | None = None
        self.started_at = time.time()
        # Held while an event is applied, a user forgotten and a retrained engine takes over, so no
        # event or deletion reaches the old engine after the new one read the log.
        self._swap_lock = threading.Lock()
        # Users deleted since the running retrain began to read the log: its fit may hold them.
        self._deleted_during_fit: set[str] = set()

    @classmethod
    def create(cls, settings: Settings) -> "RecommendationService":
        """Open the store, seed the demo catalog into an empty one, and build the engine from it."""
        store = Store(settings.database_url)
        if settings.load_demo_data and store.is_empty():
            seed_demo_data(store)
        return cls(settings, store, build_engine(store, settings), make_cache(settings))

    def close(self) -> None:
        self.store.close()

    # -- reads ------------------------------------------------------------------------------
    def recommendations(self, user_id: str | None, count: int, case: str = "hybrid", method: str | None = None,
                        product_id: str | None = None, category: str | None = None) -> RecommendationResult:
        if user_id is None and case != "popular" and not (case == "content_based" and product_id):
            raise InvalidRequestError(f"user_id is required for case '{case}'"
                                      + (" (or give product_id)" if case == "content_based" else ""))
        variant = ("recommend", case, method, product_id, category)
        if user_id is None:
            return self._cached("popular", variant, count,
                                lambda k: self.engine.recommend(None, k, case, method, product_id, category))
        return self._cached_for_user(user_id, variant, count,
                                     lambda k: self.engine.recommend(user_id, k, case, method, product_id, category))

    def realtime_recommendations(self, user_id: str, count: int, product_id: str | None = None,
                                 event_type: EventType = EventType.VIEW) -> RecommendationResult:
        return self._cached_for_user(user_id, ("realtime", product_id, event_type.value), count,
                                     lambda k: self.engine.realtime_recommend(user_id, k, product_id, event_type))

    def similar_items(self, item_id: str, count: int) -> RecommendationResult:
        return self._cached("similar", item_id, count, lambda k: self.engine.similar_items(item_id, k))

    def popular(self, count: int, category: str | None = None, trending: bool = False) -> RecommendationResult:
        return self._cached("popular", ("trending" if trending else "popular", category), count,
                            lambda k: self.engine.popular_items(k, category, trending))

    # -- writes -----------------------------------------------------------------------------
    def record_interaction(self, user_id: str, item_id: str, event_type: EventType, rating: float | None = None,
                           timestamp: float | None = None, event_id: str | None = None) -> InteractionOutcome:
        """Commit, apply to the model, drop the user's cache, and compute fresh recommendations."""
        record = InteractionRecord(user_id=user_id, item_id=item_id, event_type=event_type, rating=rating,
                                   timestamp=time.time() if timestamp is None else timestamp, event_id=event_id)
        try:
            stored, created = self.store.append_interaction(record)
        except UnknownItemError:
            raise NotFoundError("item", item_id) from None
        if created:
            self._apply(stored)
            if self.publisher is not None:
                self.publisher.publish(stored)
        invalidated = self.cache.invalidate_user(user_id) or created
        fresh = self.engine.realtime_recommend(user_id, self.settings.default_count, item_id, event_type)
        if self.notifier is not None:
            self.notifier.push(user_id, {
                "user_id": user_id, "recommendations": [r.as_dict() for r in fresh],
                "trigger": {"item_id": item_id, "event_type": event_type.value}, "generated_at": time.time()})
        return InteractionOutcome(stored, cache_invalidated=invalidated, duplicate=not created, recommendations=fresh)

    def apply_remote_event(self, event: InteractionRecord) -> bool:
        """An event another process stored: apply it here too (once), so any process answers any user."""
        if self.engine.data.items.get(event.item_id) is None:
            item = self.store.get_item(event.item_id)  # created on the other process since our fit
            if item is None:
                return False
            self.engine.add_item(item)
        applied = self._apply(event)
        if applied:
            self.cache.invalidate_user(event.user_id)
        return applied

    # -- catalog and users ------------------------------------------------------------------
    def list_items(self, category: str | None, limit: int, offset: int) -> tuple[list[ItemRecord], int]:
        return self.store.list_items(category, limit, offset), self.store.count_items(category)

    def get_item(self, item_id: str) -> ItemRecord:
        item = self.store.get_item(item_id)
        if item is None:
            raise NotFoundError("item", item_id)
        return item

    def upsert_item(self, item: ItemRecord) -> bool:
        created = self.store.upsert_item(item)
        self.engine.add_item(item)
        self.cache.invalidate("similar", item.item_id)
        return created

    def categories(self) -> list[tuple[str, int]]:
        return self.store.categories()

    def create_user(self, user_id: str) -> bool:
        created = self.store.add_user(user_id)
        self.engine.add_user(user_id)
        return created

    def delete_user(self, user_id: str) -> None:
        """Erase the user (a privacy request): profile and events from the store, their cached answers,
        their own model state in every process now (Engine.forget_user), and what they taught the
        shared models at the next retrain, which reads the log without them. NotFoundError if unknown.
        """
        if not self.store.delete_user(user_id):
            raise NotFoundError("user", user_id)
        self.forget_deleted_user(user_id)
        if self.publisher is not None:
            self.publisher.publish_forget_user(user_id)

    def forget_deleted_user(self, user_id: str) -> None:
        """Forget a user deleted from the store by this process or (through the event bus) another one."""
        with self._swap_lock:
            self.engine.forget_user(user_id)
            self._deleted_during_fit.add(user_id)
        self.cache.invalidate_user(user_id)

    def user_profile(self, user_id: str) -> dict:
        cached = self.cache.get("profiles", user_id)
        if cached is not None:
            return cached
        user = self.store.get_user(user_id)
        if user is None:
            raise NotFoundError("user", user_id)
        history = self.store.user_interactions(user_id)
        profile = self.engine.user_profile(user_id)
        result = {"user_id": user_id, "created_at": user.created_at, "interactions": len(history),
                  "history": [{"item_id": h.item_id, "event_type": h.event_type.value, "rating": h.rating,
                               "timestamp": h.timestamp} for h in history[:HISTORY_SHOWN]],
                  "top_categories": profile["top_categories"]}
        self.cache.put("profiles", user_id, result)
        return result

    # -- model maintenance (scheduled jobs) -------------------------------------------------
    def retrain(self, run_fit: Callable[[Callable[[], Engine]], Engine] = lambda fit: fit()) -> dict:
        """Fit a new engine on the log and swap it in; requests keep using the old one meanwhile.

        `run_fit` runs the expensive part; the server passes one that uses a native thread so the
        event loop keeps serving. Events stored while it fits are replayed into the new engine
        under the swap lock, so none is lost and none is applied twice. Users deleted meanwhile are
        forgotten first, as the fit may have read their events before the deletion (a user who also
        came back during the fit loses their new events from the model until the next retrain).
        """
        with self._swap_lock:
            self._deleted_during_fit.clear()
        through = self.store.last_seq()
        fresh = run_fit(lambda: build_engine(self.store, self.settings, through_seq=through, replay=False))
        with self._swap_lock:
            for user_id in self._deleted_during_fit:
                fresh.forget_user(user_id)
            replayed = sum(fresh.observe(event) for event in self.store.iter_interactions(after_seq=through))
            self.engine = fresh
        self.store.record_checkpoint(through, fresh.fit_seconds)
        return {"fitted_through_seq": through, "replayed": int(replayed), "fit_seconds": round(fresh.fit_seconds, 3)}

    def compact(self) -> dict:
        """Fold recent single-event updates into the engine's snapshots (keeps reads fast)."""
        pending = self.engine.stats()["pending_rows"]
        self.engine.compact()
        return {"compacted_rows": pending}

    def rebase_trending(self) -> dict:
        self.engine.rebase_trending()
        return {}

    def expire_cache(self) -> dict:
        self.cache.expire()
        return {}

    # -- operations -------------------------------------------------------------------------
    def health(self) -> dict:
        store_ok = self.store.ping()
        return {"status": "ok" if store_ok else "degraded", "store": "ok" if store_ok else "unreachable",
                "model": {"loaded": True, "version": self.engine.fitted_through_seq,
                          **{key: value for key, value in self.engine.stats().items()
                             if key in ("users", "items", "interactions")}},
                "uptime_seconds": round(time.time() - self.started_at, 1)}

    def stats(self) -> dict:
        return {"cache": self.cache.stats(), "engine": self.engine.stats(), "store": self.store.counts()}

    # -- helpers ----------------------------------------------------------------------------
    def _cached(self, kind: str, key, count: int, compute, variant=None) -> RecommendationResult:
        """Serve `count` from the cached full-length list, computing it at max_count on a miss."""
        cached = self.cache.get(kind, key, variant)
        if cached is not None:
            return RecommendationResult(cached[:count], "cache")
        ranked = self._compute(compute)
        self.cache.put(kind, key, ranked, variant)
        return RecommendationResult(ranked[:count], "computed")

    def _cached_for_user(self, user_id: str, variant, count: int, compute) -> RecommendationResult:
        return self._cached("recommendations", user_id, count, compute, variant)

    def _apply(self, event: InteractionRecord) -> bool:
        with self._swap_lock:
            return self.engine.observe(event)

    def _compute(self, compute) -> list[Recommendation]:
        try:
            return compute(self.settings.max_count)
        except UnknownKeyError as error:
            raise NotFoundError(error.kind, error.key) from None


def seed_demo_data(store: Store) -> None:
    """Load the demo catalog, users and histories (only into an empty store)."""
    store.upsert_items(demo_items())
    store.add_users(demo_user_ids())
    store.append_interactions(demo_interactions())


def build_engine(store: Store, settings: Settings, through_seq: int | None = None, replay: bool = True) -> Engine:
    """The engine fitted on the log up to `through_seq` (default: the latest checkpoint).

    With `replay`, every later event then goes through the same `observe` path that applied it
    live, so a restart rebuilds exactly the state the previous process had. The very first start
    has no checkpoint: it fits on the whole log and records one.
    """
    weighting = EventWeighting(**settings.event_weights.model_dump())
    policy = HybridPolicy(**settings.hybrid.model_dump())
    first_start = through_seq is None and store.latest_checkpoint() is None
    if through_seq is None:
        through_seq = store.last_seq() if first_start else store.latest_checkpoint()
    engine = Engine.build(store.all_items(), store.all_user_ids(),
                          EventColumns.from_frame(store.interaction_frame(until_seq=through_seq)),
                          weighting, policy, settings.collaborative.model_dump())
    engine.fitted_through_seq = through_seq
    if first_start:
        store.record_checkpoint(through_seq, engine.fit_seconds)
    if replay:
        for event in store.iter_interactions(after_seq=through_seq):
            engine.observe(event)
    return engine
