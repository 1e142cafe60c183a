"""The application service: the one place that wires the store, the engine and the cache together.

The web layer and the Socket.IO handlers call it; it calls nothing above it. An event is
committed to the store first, then applied to the engine, then the user's cache is dropped:
once a write is acknowledged it is durable and visible to the next read.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol

from cachetools import TTLCache

from config import Settings
from experiments.records import Impression
from preprocess.demo_catalog import demo_interactions, demo_items, demo_user_ids
from recommenders.business_rules import DEFAULT_FILTER, ItemFilter
from recommenders.artifacts import (Artifact, UnreadableArtifactError, list_artifacts, load_engine, newest_artifact,
                                    write_artifact)
from recommenders.engine import Engine, UnknownKeyError, anonymous_case
from recommenders.registry import single_cases
from recommenders.hybrid import BlendTuning, HybridPolicy
from recommenders.interaction_data import EventColumns, EventWeighting
from recommenders.records import (EventType, InteractionRecord, ItemRecord, LogEntry, LogKind, Recommendation,
                                  RuleRecord)
from service.errors import ConflictError, InvalidRequestError, NotFoundError
from service.experiments import Assignment, Experiments
from service.group_commit import GroupCommitter
from service.impressions import ImpressionLog
from storage import Store, UnknownItemError
from storage.experiment_store import ExperimentStore
from utils.cache import Cache, RankedList, make_cache

log = logging.getLogger(__name__)

HISTORY_SHOWN = 20


@dataclass
class RecommendationResult:
    recommendations: list[Recommendation]
    source: str  # "cache" or "computed"
    # The full-length list `recommendations` is the head of, as cached: it keeps their rendered JSON.
    ranked: RankedList | None = field(default=None, repr=False, compare=False)


@dataclass
class InteractionOutcome:
    interaction: InteractionRecord
    cache_invalidated: bool
    duplicate: bool = False  # the event_id was already stored; nothing new was applied
    recommendations: list[Recommendation] = field(default_factory=list)
    assignment: Assignment | None = None  # the experiment variant `recommendations` come from, if any


class Notifier(Protocol):
    """Where fresh recommendations go after an event (this process's Socket.IO rooms, in the web layer)."""

    def listening(self, user_id: str) -> bool: ...

    def push(self, user_id: str, payload: dict) -> None: ...


@dataclass
class Applied:
    """What a run of log entries changed here: whose answers to drop and whom to push to."""

    entries: int = 0
    users: dict[str, InteractionRecord | None] = field(default_factory=dict)  # user -> their latest event here

    @classmethod
    def of(cls, entries: list[LogEntry]) -> "Applied":
        applied = cls()
        for entry in entries:
            applied.note(entry)
        return applied

    def note(self, entry: LogEntry) -> None:
        self.entries += 1
        if entry.kind == LogKind.EVENT:
            self.users[entry.event.user_id] = entry.event
        elif entry.kind == LogKind.FORGET_USER:
            self.users[entry.user_id] = None
        # An item edit or a rule moves the engine's lists_generation, which keys every cached list.


class RecommendationService:
    """Store + engine + cache. The engine follows the store's log: every write is committed first,
    then applied here through `catch_up`, in log order, exactly like the other processes apply it."""

    def __init__(self, settings: Settings, store: Store, engine: Engine, cache: Cache) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.cache = cache
        self.notifier: Notifier | None = None
        self.model_version: str | None = None  # the artifact the engine was loaded from
        self.started_at = time.time()
        # Held while log entries are applied and while a newly loaded engine takes over, so every
        # entry reaches exactly one engine, once, in order.
        self._apply_lock = threading.RLock()
        self._writes = GroupCommitter(self._write_events)
        self._unreadable_versions: set[str] = set()
        # The list computed right after an event, by (user, event seq): POST /event answers with it
        # and the push to the user's sockets sends it, whichever asks first computes it.
        self._lists_after_event: TTLCache = TTLCache(maxsize=1024, ttl=10.0)
        # Runs work the answer does not wait for (pushes); the server makes it a greenlet of its own.
        self.defer: Callable[[Callable[[], None]], object] = lambda work: work()
        # Runs a blocking call; the server moves SQLite's group commits (a C call holding the event
        # loop through its fsync) to a native thread, so the next group can gather meanwhile.
        self.run_blocking: Callable[[Callable[[], Any]], Any] = lambda work: work()
        self.experiments = Experiments(ExperimentStore(store.sql_engine), settings)
        self.experiments.refresh(force_bandit=True)  # a restarted process serves the running experiment at once
        self.impressions = ImpressionLog(self._write_impressions, settings.impression_buffer_max)

    @classmethod
    def create(cls, settings: Settings) -> "RecommendationService":
        """Open the store, seed the demo catalog into an empty one, load (or first train) the model."""
        store = Store(settings.database_url)
        if settings.load_demo_data and store.is_empty():
            seed_demo_data(store)
        engine, artifact = _newest_readable(store, settings)
        if engine is None:  # first start, or a bulk load since the newest: fit rather than replay
            artifact = train(store, settings)
            engine = loaded_engine(store, settings, artifact)
        service = cls(settings, store, engine, make_cache(settings))
        service.model_version = artifact.version
        return service

    def close(self) -> None:
        self.impressions.flush()  # the lists served since the last batch
        self.store.close()

    # -- following the log ------------------------------------------------------------------
    def catch_up(self, written: list[LogEntry] | None = None, limit: int = 1000) -> int:
        """Apply every log entry after the engine's position; returns how many.

        Safe to call from anywhere at any time: entries already applied are skipped, so the
        writers, the log follower and a model swap can all call it. Writers pass the entries they
        have `written`: when those come next, they are applied without reading the log back.
        """
        total = 0
        while True:
            with self._apply_lock:
                if written and self.engine.position >= written[-1].seq:
                    return total  # the follower applied them while their writer waited
                if written and written[0].seq == self.engine.position + 1:
                    entries = written  # the group just committed, in hand (its seqs are contiguous)
                else:
                    entries = self.store.read_log(self.engine.position, limit)
                applied = Applied.of(self.engine.apply(entries))
            self._after(applied)
            total += applied.entries
            if len(entries) < limit or (written and self.engine.position >= written[-1].seq):
                return total

    def _after(self, applied: Applied) -> None:
        """Drop the answers the entries changed now; push fresh lists to this process's subscribers
        after the writers have their answers."""
        listened = []
        for user_id, event in applied.users.items():
            self.cache.invalidate_user(user_id)
            if event is not None and self.notifier is not None and self.notifier.listening(user_id):
                listened.append(event)
        if listened:
            self.defer(lambda: self._push(listened))

    def _push(self, events: list[InteractionRecord]) -> None:
        for event in events:
            fresh, arm = self._list_after(event)
            self.notifier.push(event.user_id, {
                "user_id": event.user_id, "recommendations": [r.as_dict() for r in fresh],
                "trigger": {"item_id": event.item_id, "event_type": event.event_type.value},
                "generated_at": time.time(), **self.served(event.user_id, fresh, "push", "realtime", None, arm)})

    def _list_after(self, event: InteractionRecord) -> tuple[list[Recommendation], Assignment | None]:
        """The list after a stored event, computed once for the answer and the push: the real-time
        list, or while the user is in an experiment, their variant's list (the event dropped its cache)."""
        arm = self.experiments.assign(event.user_id)
        if arm is not None:
            return self.recommendations(event.user_id, self.settings.default_count,
                                        **arm.variant.options).recommendations, arm
        key = (event.user_id, event.seq, self.engine.lists_generation())
        fresh = self._lists_after_event.get(key)
        if fresh is None:
            fresh = self._lists_after_event[key] = self.engine.realtime_recommend(
                event.user_id, self.settings.default_count, event.item_id, event.event_type)
        return fresh, None

    def served(self, user_id: str | None, recommendations: list[Recommendation], surface: str, case: str | None,
               method: str | None, arm: Assignment | None = None) -> dict:
        """Log a served list as an impression; the fields that name it in the answer (a variant's list is
        logged under its variant's case and method)."""
        if arm is None:
            return {"recommendation_id": self.impressions.record(user_id, recommendations, surface, case, method)}
        named = {"experiment_id": arm.experiment_id, "variant": arm.variant.name}
        return {"recommendation_id": self.impressions.record(user_id, recommendations, surface, arm.variant.case,
                                                             arm.variant.method, **named), **named}

    def _write_impressions(self, batch: list[Impression]) -> None:
        """A batch of the impression log, written where blocking calls go (a native thread when serving)."""
        self.run_blocking(lambda: self.experiments.store.append_impressions(batch))

    def load_model(self, artifact: Artifact, run: Callable[[Callable[[], Engine]], Engine] = lambda work: work()) -> dict:
        """Load an artifact, bring it up to the live position from the log, and swap it in.

        `run` does the expensive part (the server passes one that uses a native thread), while the
        old engine keeps answering; the last entries are applied under the lock, so none is lost.
        """
        started = time.perf_counter()
        fresh = run(lambda: loaded_engine(self.store, self.settings, artifact))
        with self._apply_lock:
            # Entries past the old engine's position reach only the new one, so `_after` runs for
            # them here: a writer's (or the follower's) catch_up will find them applied already.
            old_position, missed = self.engine.position, Applied()
            start = min(old_position, fresh.position)
            while entries := self.store.read_log(start, 1000):
                fresh.apply(entries)
                for entry in entries:
                    if entry.seq > old_position:
                        missed.note(entry)
                start = entries[-1].seq
            behind = old_position - fresh.position
            self.engine, self.model_version = fresh, artifact.version
        self.cache.clear()  # answers from the old model: a fresh start would not give them
        self._after(missed)
        return {"version": artifact.version, "fitted_through_seq": artifact.fitted_through_seq,
                "position": fresh.position, "replayed_through": fresh.position - artifact.fitted_through_seq,
                "skipped_ahead": max(-behind, 0),
                "seconds": round(time.perf_counter() - started, 3)}

    def retrain(self, run: Callable[[Callable[[], Engine]], Engine] = lambda work: work()) -> dict:
        """Train in this process (the same job as `python main.py train`), then load the result."""
        run(lambda: train(self.store, self.settings))
        return self.check_for_new_model(run)

    def check_for_new_model(self, run: Callable[[Callable[[], Engine]], Engine] = lambda work: work()) -> dict:
        """Load the newest artifact in MODEL_DIR if it is not the one in use (a scheduled job)."""
        artifact = newest_artifact(self.settings.model_path)
        if artifact is None or artifact.version in (self.model_version, *self._unreadable_versions):
            return {"version": self.model_version, "swapped": False}
        try:
            return {**self.load_model(artifact, run), "swapped": True}
        except UnreadableArtifactError as error:  # keep serving the model in use; do not retry this one
            self._unreadable_versions.add(artifact.version)
            log.error("not swapping in an unreadable model artifact: %s", error)
            return {"version": self.model_version, "swapped": False, "unreadable": artifact.version}

    # -- reads ------------------------------------------------------------------------------
    # Filters are part of the cache key (with the engine's lists_generation), not applied on top of a
    # cached list. A cached list holds max_count items, so filtering it would leave answers short; on top
    # of a cached full ranking instead, every entry is catalog-sized (31 KB of JSON against 10 KB on the
    # 308-item demo catalog) and each hit filters and renders again (15 us to render 100 items), while a
    # keyed hit sends JSON rendered once (3.4 us in the service); a filtered miss costs what an unfiltered
    # one does (1.9 against 2.1 ms for the hybrid at k=100), so keying only adds entries.
    def recommendations(self, user_id: str | None, count: int, case: str = "hybrid", method: str | None = None,
                        product_id: str | None = None, category: str | None = None,
                        filters: ItemFilter = DEFAULT_FILTER, exploration: float | None = None,
                        hybrid_weights: tuple[float, float, float] | None = None,
                        collaborative_weights: tuple[tuple[str, float], ...] | None = None) -> RecommendationResult:
        """`exploration` (default EXPLORATION_WEIGHT) is the share of slots given to the least shown items;
        `hybrid_weights` and `collaborative_weights` tune the blends (see BlendTuning)."""
        if user_id is None and not anonymous_case(case, product_id):
            raise InvalidRequestError(f"user_id is required for case '{case}'"
                                      + (" (or give product_id)" if case in single_cases() else ""))
        explored = self.settings.exploration_weight if exploration is None else exploration
        variant = ("recommend", case, method, product_id, category, explored, hybrid_weights, collaborative_weights,
                   *self._list_key(filters))
        tuning = (None if hybrid_weights is None and collaborative_weights is None
                  else BlendTuning(hybrid_weights, collaborative_weights))

        def compute(k: int) -> list[Recommendation]:
            ranked = self.engine.recommend(user_id, k, case, method, product_id, category, tuning, filters)
            return self.engine.explore(user_id, ranked, explored, self.experiments.exploration_candidates(),
                                       category, filters)

        if user_id is None:
            return self._cached("popular", variant, count, compute)
        return self._cached_for_user(user_id, variant, count, compute)

    def realtime_recommendations(self, user_id: str, count: int, product_id: str | None = None,
                                 event_type: EventType = EventType.VIEW,
                                 filters: ItemFilter = DEFAULT_FILTER) -> RecommendationResult:
        variant = ("realtime", product_id, event_type.value, *self._list_key(filters))
        return self._cached_for_user(user_id, variant, count, lambda k: self.engine.realtime_recommend(
            user_id, k, product_id, event_type, filters))

    def similar_items(self, item_id: str, count: int, filters: ItemFilter = DEFAULT_FILTER) -> RecommendationResult:
        return self._cached("similar", (item_id, *self._list_key(filters)), count,
                            lambda k: self.engine.similar_items(item_id, k, filters))

    def popular(self, count: int, category: str | None = None, trending: bool = False,
                filters: ItemFilter = DEFAULT_FILTER) -> RecommendationResult:
        return self._cached("popular", ("trending" if trending else "popular", category, *self._list_key(filters)),
                            count, lambda k: self.engine.popular_items(k, category, trending, filters))

    def _list_key(self, filters: ItemFilter) -> tuple:
        return filters.key(), self.engine.lists_generation()

    # -- writes -----------------------------------------------------------------------------
    def record_interaction(self, user_id: str, item_id: str, event_type: EventType, rating: float | None = None,
                           timestamp: float | None = None, event_id: str | None = None,
                           recommend: bool = False, recommendation_id: str | None = None,
                           value: float | None = None) -> InteractionOutcome:
        """Commit (with the events written at the same moment), apply to the model through the log,
        and, with `recommend`, compute fresh recommendations for the answer."""
        record = InteractionRecord(user_id=user_id, item_id=item_id, event_type=event_type, rating=rating,
                                   timestamp=time.time() if timestamp is None else timestamp, event_id=event_id,
                                   recommendation_id=recommendation_id, value=value)
        try:
            stored, created = self._writes.submit(record)
        except UnknownItemError:
            raise NotFoundError("item", item_id) from None
        if not created:
            if not _same_event(stored, record, timestamp_given=timestamp is not None):
                raise ConflictError(f"event_id '{event_id}' was recorded for another event")
            # A retry of a stored event_id applies nothing new, but may reach a process that has not
            # yet applied the original: read the log to its end.
            self.catch_up()
        fresh, arm = self._list_after(stored) if recommend else ([], None)
        return InteractionOutcome(stored, cache_invalidated=created, duplicate=not created, recommendations=fresh,
                                  assignment=arm)

    def _write_events(self, records: list[InteractionRecord]) -> list[tuple[InteractionRecord, bool] | Exception]:
        """One group's commit, then its new entries applied (GroupCommitter's `write`)."""
        if self.store.backend == "sqlite" and len(records) > 1:
            results = self.run_blocking(lambda: self.store.append_events(records))
        else:  # psycopg waits for PostgreSQL cooperatively; one writer alone is quicker in place
            results = self.store.append_events(records)
        stored = {result[0].seq: result[0] for result in results if isinstance(result, tuple) and result[1]}
        self._apply_committed([LogEntry(seq, LogKind.EVENT, event=event, user_id=event.user_id)
                               for seq, event in sorted(stored.items())])
        return results

    def _apply_committed(self, written: list[LogEntry] | None = None) -> None:
        """Apply what this process just committed. If the store fails right now, the write still
        stands (answering 503 would invite a retry that stores it twice): the follower applies it."""
        try:
            self.catch_up(written)
        except Exception as error:
            if self.store.unavailable_reason(error) is None:
                raise
            log.warning("committed, not applied yet (%s): the log follower will", self.store.unavailable_reason(error))

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
        self._apply_committed()
        return created

    def patch_item(self, item_id: str, changes: dict[str, Any]) -> ItemRecord:
        """Change only the named fields (POST /items replaces the whole item); one log entry, like an upsert."""
        item = self.store.patch_item(item_id, changes)
        if item is None:
            raise NotFoundError("item", item_id)
        self._apply_committed()
        return item

    # -- standing rules: each change is a log entry, so every process applies it -----------
    def add_rule(self, rule: RuleRecord) -> RuleRecord:
        """Store the rule under a new id; from the next read on (here, and in every process once it
        has applied the entry) no list breaks it."""
        stored = self.store.add_rule(replace(rule, rule_id=uuid.uuid4().hex))
        self._apply_committed()
        return stored

    def rules(self) -> list[RuleRecord]:
        return self.store.rules()

    def delete_rule(self, rule_id: str) -> None:
        if not self.store.delete_rule(rule_id):
            raise NotFoundError("rule", rule_id)
        self._apply_committed()

    def categories(self) -> list[tuple[str, int]]:
        return self.store.categories()

    def create_user(self, user_id: str) -> bool:
        created = self.store.add_user(user_id)
        self.engine.add_user(user_id)
        return created

    def delete_user(self, user_id: str) -> None:
        """Erase the user (a privacy request): profile and events from the store, and, through the log
        entry the deletion writes, their state in every process's engine and their cached answers.
        What they taught the fitted models goes at the next training. NotFoundError if unknown.
        This process's unwritten impressions are written first, so the deletion takes theirs too.
        """
        self.impressions.flush()
        if not self.store.delete_user(user_id):
            raise NotFoundError("user", user_id)
        self._apply_committed()

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
    def compact(self) -> dict:
        """Fold recent single-event updates into the engine's snapshots (keeps reads fast)."""
        return {"compacted_rows": self.engine.compact()}

    def rebase_trending(self) -> dict:
        self.engine.rebase_trending()
        return {}

    def expire_cache(self) -> dict:
        self.cache.expire()
        return {}

    # -- operations -------------------------------------------------------------------------
    def health(self) -> dict:
        """Readiness: "degraded" (503) when the store cannot be read or cannot commit (a full disk), since
        every write would fail. Redis down is reported but degrades nothing: answers are then cached in
        this process. `reasons` says what is wrong, one line per part."""
        reasons = []
        if not self.store.ping():
            store = "unreachable"
            reasons.append("store: the database cannot be reached")
        elif (why := self.store.commit_probe()) is not None:
            store = "cannot_commit"
            reasons.append(f"store: {why}")
        else:
            store = "ok"
        redis = self.cache.status() or "not_configured"
        if redis == "unreachable":
            reasons.append("redis: unreachable; answers are computed and cached in this process until it is back")
        return {"status": "ok" if store == "ok" else "degraded", "store": store, "redis": redis, "reasons": reasons,
                "model": {"loaded": True, "version": self.engine.fitted_through_seq, "artifact": self.model_version,
                          "position": self.engine.position,
                          **{key: value for key, value in self.engine.stats().items()
                             if key in ("users", "items", "interactions")}},
                "uptime_seconds": round(time.time() - self.started_at, 1)}

    def stats(self) -> dict:
        return {"cache": self.cache.stats(), "engine": self.engine.stats(), "store": self.store.counts(),
                "experiments": {"running": self.experiments.running_id(), "impressions": self.impressions.stats()}}

    # -- helpers ----------------------------------------------------------------------------
    def _cached(self, kind: str, key, count: int, compute, variant=None) -> RecommendationResult:
        """Serve `count` from the cached full-length list, computing it at max_count on a miss.

        Lists are cached with the (model version, log position) they were computed at, and a lookup
        says where this engine is, so a shared cache can tell whether it may keep a copy in this process.
        """
        def as_of() -> tuple[str | None, int]:
            return self.model_version, self.engine.position

        cached = self.cache.get(kind, key, variant, as_of)
        if cached is not None:
            return RecommendationResult(cached[:count], "cache", cached)
        computed_as_of = as_of()
        ranked = RankedList(self._compute(compute))
        self.cache.put(kind, key, ranked, variant, computed_as_of)
        return RecommendationResult(ranked[:count], "computed", ranked)

    def _cached_for_user(self, user_id: str, variant, count: int, compute) -> RecommendationResult:
        return self._cached("recommendations", user_id, count, compute, variant)

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


def _same_event(stored: InteractionRecord, retried: InteractionRecord, timestamp_given: bool) -> bool:
    """Whether a request with a stored event_id is a retry of that event: the same user, item, type,
    rating, recommendation_id and value, and the same time if the client gave one (the server dates the
    others on arrival)."""
    return ((stored.user_id, stored.item_id, stored.event_type, stored.rating, stored.recommendation_id, stored.value)
            == (retried.user_id, retried.item_id, retried.event_type, retried.rating, retried.recommendation_id,
                retried.value)
            and (not timestamp_given or abs(stored.timestamp - retried.timestamp) < 1e-3))


def _newest_readable(store: Store, settings: Settings) -> tuple[Engine | None, Artifact | None]:
    """The newest artifact that covers the last bulk load and reads, loaded; (None, None) if none does."""
    bulk_loaded_through = store.latest_checkpoint() or 0
    for artifact in reversed(list_artifacts(settings.model_path)):
        if artifact.fitted_through_seq < bulk_loaded_through:
            break  # older ones cover even less
        try:
            return loaded_engine(store, settings, artifact), artifact
        except UnreadableArtifactError as error:
            log.error("skipping an unreadable model artifact: %s", error)
    return None, None


def loaded_engine(store: Store, settings: Settings, artifact: Artifact) -> Engine:
    """The artifact's engine with every later log entry applied: the state any process reaches."""
    engine = load_engine(artifact, HybridPolicy(**settings.hybrid.model_dump()), settings.collaborative_weights,
                         settings.ann_min_items)
    engine.rules.replace(store.rules())  # rules are not in the artifact; the replayed log keeps them current
    apply_log(store, engine)
    return engine


def apply_log(store: Store, engine: Engine, page: int = 1000) -> None:
    """Apply the log after the engine's position, in order, to its end."""
    while entries := store.read_log(engine.position, page):
        engine.apply(entries)


def train(store: Store, settings: Settings, on_component: Callable[[str], None] | None = None,
          spark_master: str | None = None) -> Artifact:
    """Fit a new engine on the whole log and write it as an artifact: `python main.py train` and the
    serving process's scheduled retrain both come here. With `spark_master`, the fit runs on Spark
    (training/spark_trainer.py) and the artifact is the same."""
    through = store.last_seq()
    if spark_master is None:
        engine = Engine.build(store.all_items(), store.all_user_ids(),
                              EventColumns.from_frame(store.interaction_frame(until_seq=through)),
                              EventWeighting(**settings.event_weights.model_dump()),
                              HybridPolicy(**settings.hybrid.model_dump()), settings.collaborative_weights,
                              on_component, settings.ranker, settings.ann_min_items,
                              settings.unscalable_max_items)
    elif settings.ranker != "off":
        raise ValueError("the Spark trainer does not learn the ranker: set RANKER=off or train with --engine local")
    else:
        from training.spark_trainer import fit_from_store  # pyspark loads only for a Spark train

        engine = fit_from_store(store, settings, through, spark_master, on_component)
    engine.fitted_through_seq = engine.position = through
    artifact = write_artifact(engine, settings.model_path, settings.model_keep,
                              trained_by="local" if spark_master is None else "spark")
    store.record_checkpoint(through, engine.fit_seconds)
    return artifact
