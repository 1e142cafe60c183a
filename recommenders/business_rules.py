"""Filters a request names and the shop's standing rules, turned into what ranking needs.

A request's filters (categories, price range, availability) and the standing rules become one
`ListShape`: a mask of the items a list may hold (filters, bans), a boost factor per item (boosts
not yet expired) and caps per brand or category (diversity). The mask is applied before the top-k,
so a filtered list is still full length when enough items qualify. Everything reads the per-item
columns of InteractionData (category and brand codes, price, availability): a request costs array
operations over the catalog, never a Python loop over its items.
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from recommenders.base import top_k
from recommenders.interaction_data import InteractionData
from recommenders.records import RuleKind, RuleRecord

CAP_FIELDS = ("brand", "category")
OVERFETCH = 4  # a capped list ranks 4k candidates first, and all of them only if those were not enough


@dataclass(frozen=True)
class ItemFilter:
    """What one request allows. `categories` None means any; an unknown category matches nothing.
    A price bound leaves out items without a price (they cannot be shown to be in range)."""

    categories: tuple[str, ...] | None = None
    exclude_categories: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    available_only: bool = True

    def key(self) -> tuple | None:
        """The filter in a cache key (hashable, and JSON for Redis), None for the default. The web layer
        gives categories sorted and unique and prices as floats, so equal filters give equal keys."""
        if self == DEFAULT_FILTER:
            return None
        return (self.categories, self.exclude_categories, self.min_price, self.max_price, self.available_only)

    def mask(self, data: InteractionData) -> np.ndarray | None:
        """Items this filter lets through, None when it lets through every item."""
        checks = []
        if self.available_only:
            checks.append(data.item_available)
        if self.categories is not None:
            checks.append(np.isin(data.item_category, _codes(data, self.categories)))
        if self.exclude_categories:
            checks.append(~np.isin(data.item_category, _codes(data, self.exclude_categories)))
        with np.errstate(invalid="ignore"):  # NaN (no price) compares False: out of any range
            if self.min_price is not None:
                checks.append(data.item_price >= self.min_price)
            if self.max_price is not None:
                checks.append(data.item_price <= self.max_price)
        # one check (the usual: available items) is returned as it is, not stacked and reduced: 4% of a
        # retrieved answer at 1M items; callers combine masks into new arrays and never write to it
        return functools.reduce(np.logical_and, checks) if checks else None


DEFAULT_FILTER = ItemFilter()


@dataclass(frozen=True)
class ListShape:
    """What ranking applies to one list: `allowed` items (None = all), `boost` factors (None = none),
    and `caps`, (group code per item, most items per group) pairs; a code of -1 is in no group."""

    allowed: np.ndarray | None = None
    boost: np.ndarray | None = None
    caps: tuple[tuple[np.ndarray, int], ...] = ()

    def at(self, items: np.ndarray) -> "ListShape":
        """The shape over a candidate set, by position in `items` (which the caller already limited to
        the allowed items): for ranking a few hundred retrieved candidates instead of the catalog."""
        return ListShape(None, None if self.boost is None else self.boost[items],
                         tuple((codes[items], limit) for codes, limit in self.caps))

    def capped_top(self, scores: np.ndarray, k: int, candidates: np.ndarray) -> np.ndarray:
        """The k best candidates, best first, within the caps (scores already boosted)."""
        fetch = OVERFETCH * k
        while True:
            ranked, _ = top_k(scores, fetch, allowed=candidates)
            kept = within_caps(ranked, self.caps, k)
            if len(kept) >= k or len(ranked) < fetch or fetch >= len(scores):
                return kept
            fetch = len(scores)  # the head was not enough: rank every candidate once


class RuleBook:
    """The standing rules in force, kept up to date by the log's RULE entries (Engine.apply)."""

    def __init__(self, rules: Sequence[RuleRecord] = ()) -> None:
        self._rules: dict[str, RuleRecord] = {}
        self._version = 0
        self._boost_ends: tuple[float, ...] = ()
        self._built: tuple[tuple, tuple[np.ndarray | None, np.ndarray | None]] | None = None
        self.replace(rules)

    def replace(self, rules: Sequence[RuleRecord]) -> None:
        self._rules = {rule.rule_id: rule for rule in rules if not rule.deleted}
        self._changed()

    def apply(self, rule: RuleRecord) -> None:
        """A rule as its log entry carries it: set, or gone once deleted."""
        if rule.deleted:
            self._rules.pop(rule.rule_id, None)
        else:
            self._rules[rule.rule_id] = rule
        self._changed()

    def _changed(self) -> None:
        self._version += 1
        # Replaced whole, so `expired_boosts` reads it without the engine's lock (every cached read asks).
        self._boost_ends = tuple(sorted(rule.until for rule in self._rules.values()
                                        if rule.kind is RuleKind.BOOST and rule.until is not None))

    def rules(self) -> list[RuleRecord]:
        return list(self._rules.values())

    def expired_boosts(self, now: float) -> int:
        """How many boosts have ended by `now`: it only grows, and every process counts the same, so it
        is part of the cache key and a list cached while a boost applied is not served after it ends."""
        return bisect.bisect_right(self._boost_ends, now)

    def shape(self, data: InteractionData, allowed: np.ndarray | None, now: float) -> ListShape:
        """The list shape of these rules over `allowed` (the request's filters)."""
        banned, boost = self._arrays(data, now)
        if banned is not None:
            allowed = ~banned if allowed is None else allowed & ~banned
        caps = tuple((data.item_brand if rule.field == "brand" else data.item_category, rule.limit)
                     for rule in self._rules.values() if rule.kind is RuleKind.CAP)
        return ListShape(allowed, boost, caps)

    def _arrays(self, data: InteractionData, now: float) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The ban mask and boost factors, built once per rule change, catalog growth or boost expiry
        (a loop over the rules' own item lists, not over the catalog)."""
        key = (self._version, data.n_items, self.expired_boosts(now))
        if self._built is not None and self._built[0] == key:
            return self._built[1]
        banned = boost = None
        for rule in self._rules.values():
            indices = _indices(data, rule.items)
            if rule.kind is RuleKind.BAN:
                banned = np.zeros(data.n_items, dtype=bool) if banned is None else banned
                banned[indices] = True
            elif rule.kind is RuleKind.BOOST and (rule.until is None or rule.until > now):
                boost = np.ones(data.n_items) if boost is None else boost
                boost[indices] *= rule.factor
        self._built = (key, (banned, boost))
        return banned, boost


def within_caps(ranked: np.ndarray, caps: tuple[tuple[np.ndarray, int], ...], k: int) -> np.ndarray:
    """The first k of `ranked` that a greedy pass down the list keeps: an item is skipped when a group
    it is in already holds its cap of the items kept before it.

    Vectorised in rounds: every item before the first one over a cap is kept (the caps count exactly
    those); that item's group is then full, so it and every later item of a full group are skipped,
    and the next round counts again. Each round fills at least one group, so there are few rounds.
    """
    keep = np.ones(len(ranked), dtype=bool)
    while True:
        index = np.flatnonzero(keep)
        over = np.zeros(len(index), dtype=bool)
        for codes, limit in caps:
            groups = codes[ranked[index]]
            over |= (groups >= 0) & (_rank_in_group(groups) >= limit)
        if not over.any() or np.argmax(over) >= k:
            return ranked[index[:k]]
        first = int(np.argmax(over))
        kept, rest = ranked[index[:first]], index[first:]
        for codes, limit in caps:
            groups = codes[kept]
            full = np.bincount(groups[groups >= 0], minlength=int(codes.max()) + 1) >= limit
            later = codes[ranked[rest]]
            keep[rest[(later >= 0) & full[np.maximum(later, 0)]]] = False


def _rank_in_group(groups: np.ndarray) -> np.ndarray:
    """For each position, how many earlier positions hold the same group code."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    first_of_group = np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    ranks = np.empty(len(groups), dtype=np.int64)
    ranks[order] = np.arange(len(groups)) - first_of_group
    return ranks


def _codes(data: InteractionData, categories: tuple[str, ...]) -> np.ndarray:
    known = [data.categories.get(category) for category in categories]
    return np.array([code for code in known if code is not None], dtype=np.int64)


def _indices(data: InteractionData, item_ids: tuple[str, ...]) -> np.ndarray:
    """Indices of the rule's items this engine knows; an item added later joins at the next rebuild."""
    known = [data.items.get(item_id) for item_id in item_ids]
    return np.array([index for index in known if index is not None], dtype=np.int64)
