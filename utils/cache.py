"""TTL caches, one per kind of answer, with per-user invalidation and hit statistics.

TTLs follow the engine README's table (config.CacheTTLs). Ranked lists are cached at the
largest `count` a client may ask for, so one entry answers every smaller `count`.
User-scoped kinds keep all of a user's variants (case, method, ...) under the user's key, so an
interaction drops every one of them in one step.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Hashable

from cachetools import TTLCache

USER_SCOPED = ("recommendations", "profiles")
KINDS = ("recommendations", "profiles", "similar", "popular")


@dataclass
class _Counter:
    hits: int = 0
    misses: int = 0


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

    def expire(self) -> None:
        """Drop expired entries now (TTLCache otherwise drops them lazily on access)."""
        with self._lock:
            for cache in self._caches.values():
                cache.expire()

    def stats(self) -> dict:
        with self._lock:
            result = {}
            for kind in KINDS:
                counter, cache = self._counters[kind], self._caches[kind]
                lookups = counter.hits + counter.misses
                result[kind] = {"hits": counter.hits, "misses": counter.misses,
                                "hit_rate": round(counter.hits / lookups, 4) if lookups else 0.0,
                                "size": len(cache), "max_size": int(cache.maxsize), "ttl_seconds": self._ttls[kind]}
            return result
