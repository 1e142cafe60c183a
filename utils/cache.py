"""TTL caches, one per kind of answer, with per-user invalidation and hit statistics.

TTLs follow the engine README's table (config.CacheTTLs). Ranked lists are cached at the
largest `count` a client may ask for, so one entry answers every smaller `count`; a `RankedList`
keeps the JSON of the counts it was asked for, so a cached answer is bytes ready to send.
User-scoped kinds keep all of a user's variants (case, method, ...) under the user's key, so an
interaction drops every one of them in one step.

`RecommendationCache` lives in one process; `RedisRecommendationCache` is shared by every server
process, so an interaction handled by one process drops the answers all of them would serve. It
keeps a `RecommendationCache` of its own process in front of Redis, so a shared cache never makes a
read slower than a local one. `make_cache` picks one from the settings. While Redis is unreachable,
the Redis cache keeps the answers in that process's cache only (see `RedisRecommendationCache`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Hashable

import redis
from cachetools import TLRUCache

from recommenders.records import Recommendation

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_SECONDS = 1.0
HIT_FLUSH_SECONDS = 1.0  # how often a process adds its local-tier hits to Redis's cluster-wide counters
RENDERED_COUNTS_KEPT = 4  # per cached list: the JSON of this many distinct counts is kept
USER_SCOPED = ("recommendations", "profiles")
KINDS = ("recommendations", "profiles", "similar", "popular")
# The kinds a log entry retires: the service's `_after` drops a user's answers at each of their events,
# and an item edit or a rule moves the engine's lists generation, which is part of every list's key
# (so it retires popular lists too). Nothing but their TTL and a model swap drops the others.
LOG_INVALIDATED = ("recommendations", "profiles", "similar")

# When an answer was computed: (the model version, the log position of the engine that computed it).
Stamp = tuple[Any, int]


class RankedList(list):
    """A ranked list of Recommendations as the caches keep it (max_count long), which keeps the JSON of
    its first `count` items once rendered, for every later answer with that count.

    `render` turns a list of Recommendations into JSON bytes (the web layer's serialiser). Only
    RENDERED_COUNTS_KEPT counts are kept per list, so a client asking for every count from 1 to 100
    cannot grow an entry's memory beyond a few times its list's JSON; other counts render each time.
    """

    __slots__ = ("_json",)

    def __init__(self, recommendations: Any = ()) -> None:
        super().__init__(recommendations)
        self._json: dict[int, bytes] = {}

    def json(self, count: int, render: Callable[[list[Recommendation]], bytes]) -> bytes:
        rendered = self._json.get(count)
        if rendered is None:
            rendered = render(self[:count])
            if len(self._json) < RENDERED_COUNTS_KEPT:
                self._json[count] = rendered
        return rendered


@dataclass
class _Counter:
    hits: int = 0
    misses: int = 0


def _kind_stats(hits: int, misses: int, size: int, max_size: int | None, ttl: int) -> dict:
    """One kind's /stats entry, the same shape for both backends."""
    lookups = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "size": size, "max_size": max_size, "ttl_seconds": ttl}


class _Entries:
    """At most `maxsize` entries, each with its own expiry (time.monotonic() seconds): cachetools'
    TLRUCache, whose time-to-use is the expiry stored with each value (a copy of a shared entry keeps
    the lifetime it has left in Redis); the least recently used goes first when it is full."""

    __slots__ = ("_items",)

    def __init__(self, maxsize: int) -> None:
        self._items: TLRUCache = TLRUCache(maxsize, ttu=lambda _key, item, _now: item[0], timer=time.monotonic)

    @property
    def maxsize(self) -> int:
        return int(self._items.maxsize)

    def get(self, key: Hashable) -> Any | None:
        item = self._items.get(key)
        return None if item is None else item[1]

    def set(self, key: Hashable, value: Any, expires: float) -> None:
        self._items[key] = (expires, value)

    def pop(self, key: Hashable) -> Any | None:
        item = self._items.pop(key, None)
        return None if item is None else item[1]

    def expire(self) -> None:
        self._items.expire()

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class RecommendationCache:
    def __init__(self, ttls: dict[str, int], max_entries: int = 10_000) -> None:
        self._ttls = dict(ttls)
        self._caches = {kind: _Entries(max_entries) for kind in KINDS}
        self._counters = {kind: _Counter() for kind in KINDS}
        self._lock = threading.Lock()

    def get(self, kind: str, key: Hashable, variant: Hashable = None, as_of: Callable[[], Stamp] | None = None) -> Any | None:
        """The cached value or None; `variant` distinguishes answers within a user-scoped entry.
        (`as_of` is for the Redis cache, which has the same interface.)"""
        with self._lock:
            entry = self._caches[kind].get(key)
            value = entry.get(variant) if entry is not None and kind in USER_SCOPED else entry
            counter = self._counters[kind]
            if value is None:
                counter.misses += 1
            else:
                counter.hits += 1
            return value

    def put(self, kind: str, key: Hashable, value: Any, variant: Hashable = None, as_of: Stamp | None = None,
            ttl: float | None = None) -> None:
        """Keep `value` for the kind's TTL, or for `ttl` seconds when given (a copy of a shared entry keeps
        the lifetime it has left). A user's later variants do not extend the user's entry.
        (`as_of` is for the Redis cache, which has the same interface.)"""
        with self._lock:
            cache, now = self._caches[kind], time.monotonic()
            expires = now + (self._ttls[kind] if ttl is None else ttl)
            if kind in USER_SCOPED:
                entry = cache.get(key)
                if entry is None:
                    entry = {}
                    cache.set(key, entry, expires)
                entry[variant] = value
            else:
                cache.set(key, value, expires)

    def invalidate_user(self, user_id: str) -> bool:
        """Drop everything cached for the user; True if anything was there."""
        with self._lock:
            return any([self._caches[kind].pop(user_id) is not None for kind in USER_SCOPED])

    def invalidate(self, kind: str, key: Hashable) -> None:
        with self._lock:
            self._caches[kind].pop(key)

    def clear(self) -> None:
        """Drop every cached answer (after a new model is swapped in); the counters stay."""
        with self._lock:
            for cache in self._caches.values():
                cache.clear()

    def expire(self) -> None:
        """Drop expired entries now (otherwise they go when a lookup meets them, or the least recently used
        when a kind is full)."""
        with self._lock:
            for cache in self._caches.values():
                cache.expire()

    def hit_counts(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) per kind: what a once-a-second dashboard needs, without sizes."""
        with self._lock:
            return {kind: (counter.hits, counter.misses) for kind, counter in self._counters.items()}

    def stats(self) -> dict:
        self.expire()  # sizes count live entries only
        with self._lock:
            result = {}
            for kind in KINDS:
                counter, cache = self._counters[kind], self._caches[kind]
                result[kind] = _kind_stats(counter.hits, counter.misses, len(cache), cache.maxsize,
                                           self._ttls[kind])
            return result

    def status(self) -> str | None:
        """None: no Redis behind this cache (the Redis cache answers "ok" or "unreachable")."""
        return None


# Reads the entry (a hash field when a field is given, else a plain key) and counts the hit or miss
# in the same round trip, so the counters are cluster-wide and cost no extra request. A hit comes
# with the milliseconds the key has left, which a copy in a process's local tier keeps.
_GET_AND_COUNT = """
local value
if ARGV[2] then value = redis.call('HGET', KEYS[1], ARGV[2]) else value = redis.call('GET', KEYS[1]) end
redis.call('HINCRBY', KEYS[2], ARGV[1] .. (value and ':hits' or ':misses'), 1)
if not value then return false end
return {value, redis.call('PTTL', KEYS[1])}
"""
# Entries are written with the stamp of their computation under names of their own (a hash field or
# key with this prefix): a process of the previous release, which stored bare values under bare names,
# never reads one during a rolling restart, nor does this one read theirs.
STAMPED = "stamped:"


def _dump(value: Any) -> str:
    """Deterministic JSON, so equal keys and variants map to the same Redis key or field in every process."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _encode(value: Any, as_of: Stamp | None) -> str:
    """JSON, never pickle: a shared cache must not run code on load. Lists are ranked Recommendations."""
    if isinstance(value, list):
        value = [{f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.init} for r in value]
    return json.dumps({"as_of": as_of, "value": value}, separators=(",", ":"))  # extra fields keep their order


def _decode(raw: str) -> tuple[Stamp | None, Any]:
    stored = json.loads(raw)
    value, as_of = stored["value"], stored["as_of"]
    return (None if as_of is None else tuple(as_of),
            RankedList(Recommendation(**r) for r in value) if isinstance(value, list) else value)


def _may_keep(kind: str, written: Stamp | None, reader: Stamp) -> bool:
    """Whether a process whose engine is at `reader` may keep a copy of a shared entry computed at `written`.

    The copy is dropped only by what this process applies from now on. So the entry must come from
    the same model, and, for the kinds the log invalidates, from an engine that had applied at least
    every log entry this one has: an entry that a process behind this one computed (and stored after
    this process dropped the shared one) may lack an event of this user, and nothing here would drop
    it again. Such an entry is served, as before, but not kept.
    """
    if written is None or written[0] != reader[0]:
        return False
    return kind not in LOG_INVALIDATED or written[1] >= reader[1]


def _tolerant(fallback: Any, local: bool = False) -> Callable:
    """Redis being down turns a cache call into a miss or a no-op (the answer is computed), never an error.

    With `local`, the call goes to the same method of the process's own cache instead, so answers
    stay cached while Redis is away. That cache is emptied when an outage starts and when it ends;
    in between, this process's log follower drops from it what every process's writes change.
    """
    def decorate(method: Callable) -> Callable:
        def without_redis(self: "RedisRecommendationCache", *args: Any, **kwargs: Any) -> Any:
            return getattr(self._local, method.__name__)(*args, **kwargs) if local else fallback

        @functools.wraps(method)
        def call(self: "RedisRecommendationCache", *args: Any, **kwargs: Any) -> Any:
            if self.down and time.monotonic() < self._retry_at:
                return without_redis(self, *args, **kwargs)  # no timeout's worth of waiting while known down
            try:
                if self.down:
                    self._clear_answers()  # invalidations were lost meanwhile: drop before serving
                    self.down = False
                    self._local.clear()
                    log.warning("Redis cache reachable again: the answers cached before the outage were dropped")
                return method(self, *args, **kwargs)
            except redis.RedisError as error:
                if not self.down:
                    log.warning("Redis cache unreachable, caching in this process until it is back: %s", error)
                    self._local.clear()  # what a previous outage left there missed the invalidations since
                self.down, self._retry_at = True, time.monotonic() + REDIS_RETRY_SECONDS
                return without_redis(self, *args, **kwargs)
        return call
    return decorate


class RedisRecommendationCache:
    """The same cache kept in Redis, shared by every server process that uses the same namespace, with
    a local tier in front: this process's own `RecommendationCache`.

    Reads: a hit in the local tier needs no Redis round trip. A miss there goes to Redis, and a hit
    in Redis is copied into the local tier (decoded once per process and entry), with the lifetime it
    has left there, when `_may_keep` allows. Writes go to both tiers, and so do invalidations and
    `clear`. This is correct because every process applies every log entry, and the service drops
    the answers each entry changes in the process that applies it: a process's local tier is
    invalidated exactly when its own engine changes. Entries carry the model version and log
    position they were computed at (`as_of`), so that an entry computed by a process that lags
    behind this one is served but never kept here.

    User-scoped kinds are one hash per (kind, user), `{ns}:{kind}:{user_id}`, one field per variant;
    the other kinds are plain keys `{ns}:{kind}:stamped:{json key}`. Values are JSON
    `{"as_of": [model version, log position], "value": ...}`. Redis evicts by its own policy, so
    there is no entry limit there.

    Hits and misses are counted cluster-wide in the hash `{ns}:stats`. A lookup that reaches Redis is
    counted there by the same script that reads the entry. Hits in the local tier are counted in
    process memory and added to that hash in one pipelined HINCRBY per kind, at most once every
    HIT_FLUSH_SECONDS (on the first local hit after that, at `expire`, the cache-cleanup job's
    call, and before `hit_counts` reads the hash). So `/stats` and the dashboard see this process's
    hits at once and the other processes' within about a second.

    Redis is optional at run time: while it is unreachable, lookups, writes and invalidations go to
    the local tier only (`local_max_entries` per kind), which is emptied when the outage starts and
    ends. Redis is tried again every REDIS_RETRY_SECONDS, and short timeouts keep a hung Redis from
    holding requests. When it answers again the namespace's answers are dropped before anything is
    served, since invalidations were lost meanwhile. `status()` ("ok" / "unreachable") is /health's.
    """

    def __init__(self, redis_url: str, ttls: dict[str, int], namespace: str = "recs",
                 local_max_entries: int = 10_000) -> None:
        self._ttls = dict(ttls)
        self._local = RecommendationCache(ttls, local_max_entries)  # the local tier; all there is while Redis is down
        self._ns = namespace
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                           socket_connect_timeout=REDIS_TIMEOUT_SECONDS)  # pooled; gevent-friendly
        self._get_and_count = self._redis.register_script(_GET_AND_COUNT)
        self.down = False
        self._retry_at = 0.0
        self._local_hits = dict.fromkeys(KINDS, 0)  # served by the local tier, not yet added to {ns}:stats
        self._hits_lock = threading.Lock()
        self._flush_at = time.monotonic() + HIT_FLUSH_SECONDS

    @_tolerant("unreachable")
    def status(self) -> str:
        """"ok" when Redis answers a PING; "unreachable" while it does not (answers are then cached here).
        Like any call, the first to succeed after an outage drops the stale answers first."""
        self._redis.ping()
        return "ok"

    def get(self, kind: str, key: Hashable, variant: Hashable = None, as_of: Callable[[], Stamp] | None = None) -> Any | None:
        """The cached value or None; `variant` distinguishes answers within a user-scoped entry.

        `as_of` says where the reader's engine is now (see `_may_keep`); without it, a value found in
        Redis is not copied into the local tier.
        """
        value = self._local.get(kind, key, variant)
        if value is None:
            return self._shared_get(kind, key, variant, as_of)
        if not self.down:
            with self._hits_lock:
                self._local_hits[kind] += 1
            if time.monotonic() >= self._flush_at:
                self._flush_hits()
        return value

    @_tolerant(None)
    def _shared_get(self, kind: str, key: Hashable, variant: Hashable, as_of: Callable[[], Stamp] | None) -> Any | None:
        field = [STAMPED + _dump(variant)] if kind in USER_SCOPED else []
        found = self._get_and_count(keys=[self._key(kind, key), self._stats_key], args=[kind, *field])
        if found is None:
            return None
        raw, ttl_ms = found
        written, value = _decode(raw)
        # Read the reader's position only now: what it applied during the round trip counts too.
        if as_of is not None and ttl_ms != 0 and _may_keep(kind, written, as_of()):
            self._local.put(kind, key, value, variant, ttl=ttl_ms / 1000 if ttl_ms > 0 else None)
        return value

    @_tolerant(None, local=True)
    def put(self, kind: str, key: Hashable, value: Any, variant: Hashable = None, as_of: Stamp | None = None) -> None:
        """Store in both tiers; `as_of` is where the engine was when it computed `value`."""
        # The local tier first: a log entry applied while Redis answers must find it there to drop it.
        self._local.put(kind, key, value, variant)
        name, ttl, encoded = self._key(kind, key), self._ttls[kind], _encode(value, as_of)
        if kind not in USER_SCOPED:
            self._redis.set(name, encoded, ex=ttl)
            return
        # EXPIRE NX sets the TTL only on a hash that has none, i.e. the one HSET just created:
        # later variants do not extend the user's entry, as in the local cache.
        with self._redis.pipeline() as pipe:
            pipe.hset(name, STAMPED + _dump(variant), encoded)
            pipe.expire(name, ttl, nx=True)
            pipe.execute()

    @_tolerant(False, local=True)
    def invalidate_user(self, user_id: str) -> bool:
        """Drop everything cached for the user in both tiers (one DEL); True if anything was there."""
        here = self._local.invalidate_user(user_id)
        return self._redis.delete(*(self._key(kind, user_id) for kind in USER_SCOPED)) > 0 or here

    @_tolerant(None, local=True)
    def invalidate(self, kind: str, key: Hashable) -> None:
        self._local.invalidate(kind, key)
        self._redis.delete(self._key(kind, key))

    def expire(self) -> None:
        """Drop the local tier's expired entries (Redis drops its own) and add its hits to the shared counters."""
        self._local.expire()
        self._flush_hits()

    @_tolerant({kind: (0, 0) for kind in KINDS})
    def hit_counts(self) -> dict[str, tuple[int, int]]:
        """Cluster-wide (hits, misses) per kind, this process's latest local-tier hits included, in one
        round trip: cheap enough for a live dashboard."""
        with self._redis.pipeline(transaction=False) as pipe:
            taken = self._take_local_hits(pipe)
            pipe.hgetall(self._stats_key)
            counters = self._execute_counting(pipe, taken)[-1]
        return {kind: (int(counters.get(f"{kind}:hits", 0)), int(counters.get(f"{kind}:misses", 0)))
                for kind in KINDS}

    def stats(self) -> dict:
        """Cluster-wide counters; sizes come from SCAN, fine for /stats but never for a request path."""
        return {kind: _kind_stats(hits, misses, self._size(kind), None, self._ttls[kind])
                for kind, (hits, misses) in self.hit_counts().items()}

    @_tolerant(None)
    def _flush_hits(self) -> None:
        with self._redis.pipeline(transaction=False) as pipe:
            taken = self._take_local_hits(pipe)
            if taken:
                self._execute_counting(pipe, taken)

    def _take_local_hits(self, pipe: Any) -> dict[str, int]:
        """Queue the local-tier hits counted since the last flush on `pipe`, and take them off the count."""
        self._flush_at = time.monotonic() + HIT_FLUSH_SECONDS
        with self._hits_lock:
            taken = {kind: hits for kind, hits in self._local_hits.items() if hits}
            for kind in taken:
                self._local_hits[kind] = 0
        for kind, hits in taken.items():
            pipe.hincrby(self._stats_key, f"{kind}:hits", hits)
        return taken

    def _execute_counting(self, pipe: Any, taken: dict[str, int]) -> list:
        """Run `pipe`; if Redis fails, the hits it carried are counted again for the next flush."""
        try:
            return pipe.execute()
        except redis.RedisError:
            with self._hits_lock:
                for kind, hits in taken.items():
                    self._local_hits[kind] += hits
            raise

    @_tolerant(0)
    def _size(self, kind: str) -> int:
        return self._count(f"{kind}:*")

    @_tolerant(None, local=True)
    def clear(self) -> None:
        """Drop every cached answer of the namespace, and this process's copies (after a model swap); counters stay."""
        self._local.clear()
        self._clear_answers()

    def _clear_answers(self) -> None:
        for kind in KINDS:
            keys = list(self._redis.scan_iter(match=self._pattern(f"{kind}:*"), count=1000))
            if keys:
                self._redis.delete(*keys)

    @property
    def _stats_key(self) -> str:
        return f"{self._ns}:stats"

    def _key(self, kind: str, key: Hashable) -> str:
        """User-scoped kinds are keyed by the user id as is; other keys (tuples, None, ids) as JSON."""
        return f"{self._ns}:{kind}:{key}" if kind in USER_SCOPED else f"{self._ns}:{kind}:{STAMPED}{_dump(key)}"

    def _pattern(self, suffix: str) -> str:
        """A SCAN pattern under the namespace, which is escaped so it matches only itself."""
        return re.sub(r"([*?\[\]\\])", r"\\\1", self._ns) + ":" + suffix

    def _count(self, suffix: str) -> int:
        return sum(1 for _ in self._redis.scan_iter(match=self._pattern(suffix), count=1000))


Cache = RecommendationCache | RedisRecommendationCache


def make_cache(settings: Settings) -> Cache:
    """Redis when REDIS_URL is set, so several server processes share one cache; else in-process."""
    ttls = settings.ttl.model_dump()
    if settings.redis_url:
        return RedisRecommendationCache(settings.redis_url, ttls, namespace=settings.redis_namespace,
                                        local_max_entries=settings.cache_max_entries)
    return RecommendationCache(ttls, settings.cache_max_entries)
