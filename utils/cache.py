"""TTL caches, one per kind of answer, with per-user invalidation and hit statistics.

TTLs follow the engine README's table (config.CacheTTLs). Ranked lists are cached at the
largest `count` a client may ask for, so one entry answers every smaller `count`.
User-scoped kinds keep all of a user's variants (case, method, ...) under the user's key, so an
interaction drops every one of them in one step.

`RecommendationCache` lives in one process; `RedisRecommendationCache` is shared by every server
process, so an interaction handled by one process drops the answers all of them would serve.
`make_cache` picks one from the settings. While Redis is unreachable, the Redis cache keeps the
answers in a `RecommendationCache` of its own process instead (see `RedisRecommendationCache`).
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
from cachetools import TTLCache

from recommenders.records import Recommendation

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_SECONDS = 1.0
USER_SCOPED = ("recommendations", "profiles")
KINDS = ("recommendations", "profiles", "similar", "popular")


@dataclass
class _Counter:
    hits: int = 0
    misses: int = 0


def _kind_stats(hits: int, misses: int, size: int, max_size: int | None, ttl: int) -> dict:
    """One kind's /stats entry, the same shape for both backends."""
    lookups = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": round(hits / lookups, 4) if lookups else 0.0,
            "size": size, "max_size": max_size, "ttl_seconds": ttl}


class RecommendationCache:
    def __init__(self, ttls: dict[str, int], max_entries: int = 10_000) -> None:
        self._ttls = dict(ttls)
        self._caches = {kind: TTLCache(maxsize=max_entries, ttl=self._ttls[kind]) for kind in KINDS}
        self._counters = {kind: _Counter() for kind in KINDS}
        self._lock = threading.Lock()

    def get(self, kind: str, key: Hashable, variant: Hashable = None) -> Any | None:
        """The cached value or None; `variant` distinguishes answers within a user-scoped entry."""
        with self._lock:
            entry = self._caches[kind].get(key)
            value = entry.get(variant) if entry is not None and kind in USER_SCOPED else entry
            counter = self._counters[kind]
            if value is None:
                counter.misses += 1
            else:
                counter.hits += 1
            return value

    def put(self, kind: str, key: Hashable, value: Any, variant: Hashable = None) -> None:
        with self._lock:
            cache = self._caches[kind]
            if kind in USER_SCOPED:
                entry = cache.get(key)
                if entry is None:
                    entry = cache[key] = {}
                entry[variant] = value
            else:
                cache[key] = value

    def invalidate_user(self, user_id: str) -> bool:
        """Drop everything cached for the user; True if anything was there."""
        with self._lock:
            return any([self._caches[kind].pop(user_id, None) is not None for kind in USER_SCOPED])

    def invalidate(self, kind: str, key: Hashable) -> None:
        with self._lock:
            self._caches[kind].pop(key, None)

    def clear(self) -> None:
        """Drop every cached answer (after a new model is swapped in); the counters stay."""
        with self._lock:
            for cache in self._caches.values():
                cache.clear()

    def expire(self) -> None:
        """Drop expired entries now (TTLCache otherwise drops them lazily on access)."""
        with self._lock:
            for cache in self._caches.values():
                cache.expire()

    def hit_counts(self) -> dict[str, tuple[int, int]]:
        """(hits, misses) per kind: what a once-a-second dashboard needs, without sizes."""
        with self._lock:
            return {kind: (counter.hits, counter.misses) for kind, counter in self._counters.items()}

    def stats(self) -> dict:
        with self._lock:
            result = {}
            for kind in KINDS:
                counter, cache = self._counters[kind], self._caches[kind]
                result[kind] = _kind_stats(counter.hits, counter.misses, len(cache), int(cache.maxsize),
                                           self._ttls[kind])
            return result

    def status(self) -> str | None:
        """None: no Redis behind this cache (the Redis cache answers "ok" or "unreachable")."""
        return None


# Reads the entry (a hash field when a field is given, else a plain key) and counts the hit or miss
# in the same round trip, so the counters are cluster-wide and cost no extra request.
_GET_AND_COUNT = """
local value
if ARGV[2] then value = redis.call('HGET', KEYS[1], ARGV[2]) else value = redis.call('GET', KEYS[1]) end
redis.call('HINCRBY', KEYS[2], ARGV[1] .. (value and ':hits' or ':misses'), 1)
return value
"""


def _dump(value: Any) -> str:
    """Deterministic JSON, so equal keys and variants map to the same Redis key or field in every process."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _encode(value: Any) -> str:
    """JSON, never pickle: a shared cache must not run code on load. Lists are ranked Recommendations."""
    return _dump([{f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.init} for r in value]
                 if isinstance(value, list) else value)


def _decode(raw: str | None) -> Any | None:
    if raw is None:
        return None
    value = json.loads(raw)
    return [Recommendation(**r) for r in value] if isinstance(value, list) else value


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
    """The same cache kept in Redis, shared by every server process that uses the same namespace.

    User-scoped kinds are one hash per (kind, user), `{ns}:{kind}:{user_id}`, one field per variant;
    the other kinds are plain keys `{ns}:{kind}:{json key}`. Hits and misses are counted in the hash
    `{ns}:stats`. Redis evicts by its own policy, so there is no entry limit here.

    Redis is optional at run time: while it is unreachable, lookups, writes and invalidations go to
    a cache in this process (`local_max_entries` per kind), emptied when the outage starts and ends.
    Redis is tried again every REDIS_RETRY_SECONDS, and short timeouts keep a hung Redis from
    holding requests. When it answers again the namespace's answers are dropped before anything is
    served, since invalidations were lost meanwhile. `status()` ("ok" / "unreachable") is /health's.
    """

    def __init__(self, redis_url: str, ttls: dict[str, int], namespace: str = "recs",
                 local_max_entries: int = 10_000) -> None:
        self._ttls = dict(ttls)
        self._local = RecommendationCache(ttls, local_max_entries)  # used only while Redis is down
        self._ns = namespace
        self._redis = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                           socket_connect_timeout=REDIS_TIMEOUT_SECONDS)  # pooled; gevent-friendly
        self._get_and_count = self._redis.register_script(_GET_AND_COUNT)
        self.down = False
        self._retry_at = 0.0

    @_tolerant("unreachable")
    def status(self) -> str:
        """"ok" when Redis answers a PING; "unreachable" while it does not (answers are then cached here).
        Like any call, the first to succeed after an outage drops the stale answers first."""
        self._redis.ping()
        return "ok"

    @_tolerant(None, local=True)
    def get(self, kind: str, key: Hashable, variant: Hashable = None) -> Any | None:
        """The cached value or None; `variant` distinguishes answers within a user-scoped entry."""
        field = [_dump(variant)] if kind in USER_SCOPED else []
        return _decode(self._get_and_count(keys=[self._key(kind, key), self._stats_key], args=[kind, *field]))

    @_tolerant(None, local=True)
    def put(self, kind: str, key: Hashable, value: Any, variant: Hashable = None) -> None:
        name, ttl = self._key(kind, key), self._ttls[kind]
        if kind not in USER_SCOPED:
            self._redis.set(name, _encode(value), ex=ttl)
            return
        # EXPIRE NX sets the TTL only on a hash that has none, i.e. the one HSET just created:
        # later variants do not extend the user's entry, as in the local cache.
        with self._redis.pipeline() as pipe:
            pipe.hset(name, _dump(variant), _encode(value))
            pipe.expire(name, ttl, nx=True)
            pipe.execute()

    @_tolerant(False, local=True)
    def invalidate_user(self, user_id: str) -> bool:
        """Drop everything cached for the user (one DEL); True if anything was there."""
        return self._redis.delete(*(self._key(kind, user_id) for kind in USER_SCOPED)) > 0

    @_tolerant(None, local=True)
    def invalidate(self, kind: str, key: Hashable) -> None:
        self._redis.delete(self._key(kind, key))

    def expire(self) -> None:
        """Nothing to do: Redis drops expired keys itself. Kept so both caches share one interface."""

    @_tolerant({kind: (0, 0) for kind in KINDS})
    def hit_counts(self) -> dict[str, tuple[int, int]]:
        """Cluster-wide (hits, misses) per kind in one HGETALL: cheap enough for a live dashboard."""
        counters = self._redis.hgetall(self._stats_key)
        return {kind: (int(counters.get(f"{kind}:hits", 0)), int(counters.get(f"{kind}:misses", 0)))
                for kind in KINDS}

    def stats(self) -> dict:
        """Cluster-wide counters; sizes come from SCAN, fine for /stats but never for a request path."""
        return {kind: _kind_stats(hits, misses, self._size(kind), None, self._ttls[kind])
                for kind, (hits, misses) in self.hit_counts().items()}

    @_tolerant(0)
    def _size(self, kind: str) -> int:
        return self._count(f"{kind}:*")

    @_tolerant(None, local=True)
    def clear(self) -> None:
        """Drop every cached answer of the namespace (after a model swap); counters stay."""
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
        return f"{self._ns}:{kind}:{key if kind in USER_SCOPED else _dump(key)}"

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
