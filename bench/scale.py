"""A synthetic shop at scale, written where both trainers read it, and the whole pipeline run on it.

    python bench/scale.py generate [--items 1000000] [--users 2000000] [--events 50000000] [--seed 0]
                                   [--database-url URL]
    python bench/scale.py run [--events 1e5,1e6,5e6] [--items N,...] [--users N,...] [--backend sqlite|postgresql]

`generate` writes a catalog, its users and their events into the service's store (the tables `python
main.py train` reads), through the Store: items and users by its bulk upserts, events by
`Store.append_event_frame`, which reserves their seqs in the log like any other write. Everything is
drawn with numpy in chunks of CHUNK_EVENTS events, so memory stays flat whatever the size.

The shop: items in categories whose sizes follow a power law, each item with a Zipf-like popularity;
users whose activity follows a power law, each leaning to a few categories (so there is collaborative
structure to learn); views, add-to-carts, purchases and ratings in a shop's proportions, over SPAN_DAYS.

`run` does, for each size: generate + load, `python main.py train` (local), `python main.py train
--engine spark` (when main.py has it), `python main.py serve` on that store and artifact, then bounded
load on it: uncached `GET /recommendations/<user>` over distinct users and `POST /interactions`. Each
step gets its wall time, the peak RSS of its process tree and events/s.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from _common import (RESULTS_DIR, BenchError, KeepAliveClient, format_table, machine_info, report_error, summarize,
                     write_results)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from main import MAIN_PATH, ServerProcess, ServerStartError  # noqa: E402
from recommenders.records import ItemRecord  # noqa: E402
from storage import Store  # noqa: E402

DEFAULT_ITEMS, DEFAULT_USERS, DEFAULT_EVENTS = 1_000_000, 2_000_000, 50_000_000
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
CHUNK_EVENTS = 1_000_000  # drawn at once: ~100 MB of arrays
WRITE_EVENTS = 100_000  # rows per Store.append_event_frame call (one transaction, ~7 MB of JSON)
WRITE_ITEMS, WRITE_USERS = 20_000, 100_000
SPAN_DAYS = 180
MAX_CATEGORIES = 1_000
ITEMS_PER_CATEGORY = 100  # below MAX_CATEGORIES * this, fewer categories: a small shop has fewer aisles
CATEGORY_EXPONENT = 1.0  # category sizes ~ 1 / rank
ITEM_EXPONENT = 0.8  # item popularity ~ 1 / rank^0.8: the top 1% of a 1M catalog draws ~40% of its events
USER_PARETO_SHAPE, USER_MAX_ACTIVITY = 1.5, 1_000.0  # activity weights 1 + Lomax(1.5), capped
TASTES = np.array([0.5, 0.3, 0.2])  # a user's three categories, of TASTE_SHARE of their events
TASTE_SHARE = 0.8  # the rest follow global popularity
EVENT_TYPES = np.array(["view", "add_to_cart", "purchase", "rating"])
EVENT_SHARES = np.array([0.70, 0.12, 0.05, 0.13])
RATING_IN_TASTE = np.array([0.03, 0.05, 0.15, 0.37, 0.40])  # 1..5 stars, in a category the user likes
RATING_ELSEWHERE = np.array([0.10, 0.15, 0.30, 0.25, 0.20])
DEPARTMENTS = ("kitchen", "garden", "books", "audio", "phones", "laptops", "toys", "sports", "beauty", "fashion",
               "shoes", "office", "pets", "baby", "tools", "auto", "games", "music", "film", "health")
SYLLABLES = ("ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "do", "zu", "fe", "ga", "hi", "jo", "ly",
             "mo", "nu", "pa", "qui", "ro", "si", "tu", "wa", "xe", "yo", "ber", "dan", "kor", "lin")
VOCABULARY, BRANDS = 5_000, 2_000
WORDS_PER_CATEGORY, BRANDS_PER_CATEGORY = 12, 6


@dataclass(frozen=True)
class ShopSize:
    items: int
    users: int
    events: int

    @property
    def label(self) -> str:
        """For file names: 1M items, 200k users, 2M events -> 1Mi-200ku-2Me."""
        return f"{short(self.items)}i-{short(self.users)}u-{short(self.events)}e"

    @property
    def categories(self) -> int:
        return max(2, min(MAX_CATEGORIES, self.items // ITEMS_PER_CATEGORY))


def short(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            return f"{n / scale:g}{unit}"
    return str(n)


def power_law(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Weights 1 / rank^exponent, the ranks shuffled so that popularity is unrelated to the id."""
    return 1.0 / (rng.permutation(n) + 1.0) ** exponent


class Shop:
    """The hidden structure every event is drawn from: who likes which categories, and how popular each
    item is within its category. Items are addressed in category order, so "an item of category c by
    popularity" is one searchsorted into the cumulative weights between c's bounds."""

    def __init__(self, size: ShopSize, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.size, self.seed = size, seed
        categories = size.categories
        category_share = power_law(categories, CATEGORY_EXPONENT, rng)
        # Every category gets one item, the rest go by the power law.
        self.item_category = np.concatenate([np.arange(categories), rng.choice(
            categories, size.items - categories, p=category_share / category_share.sum())]).astype(np.int32)
        self.item_weight = power_law(size.items, ITEM_EXPONENT, rng)
        self.by_category = np.argsort(self.item_category, kind="stable").astype(np.int32)
        self.cumulative = np.cumsum(self.item_weight[self.by_category])
        first = np.searchsorted(self.item_category[self.by_category], np.arange(categories + 1))
        self.category_bounds = np.concatenate([[0.0], self.cumulative])[first]
        user_weight = np.minimum(1.0 + rng.pareto(USER_PARETO_SHAPE, size.users), USER_MAX_ACTIVITY)
        self.user_cumulative = np.cumsum(user_weight)
        # Tastes are drawn by the categories' popularity: most people like what is popular.
        self.tastes = self._categories_by_mass(rng.random((size.users, len(TASTES))))

    def _categories_by_mass(self, uniform: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.category_bounds, uniform * self.category_bounds[-1], side="right") - 1
        return np.minimum(position, self.size.categories - 1).astype(np.int32)

    def events(self, n: int, start: float, end: float, rng: np.random.Generator) -> pd.DataFrame:
        """n events between start and end (Unix seconds), in time order, as Store.append_event_frame takes them."""
        users = np.searchsorted(self.user_cumulative, rng.random(n) * self.user_cumulative[-1], side="right")
        users = np.minimum(users, self.size.users - 1)
        slot = np.searchsorted(np.cumsum(np.append(TASTES * TASTE_SHARE, 1 - TASTE_SHARE)), rng.random(n), side="right")
        slot = np.minimum(slot, len(TASTES))
        in_taste = slot < len(TASTES)
        category = self.tastes[users, np.minimum(slot, len(TASTES) - 1)]
        low = np.where(in_taste, self.category_bounds[category], 0.0)
        high = np.where(in_taste, self.category_bounds[category + 1], self.cumulative[-1])
        position = np.searchsorted(self.cumulative, low + rng.random(n) * (high - low), side="right")
        items = self.by_category[np.minimum(position, self.size.items - 1)]
        kind = np.searchsorted(np.cumsum(EVENT_SHARES), rng.random(n), side="right").clip(0, len(EVENT_TYPES) - 1)
        stars = np.where(in_taste, _draw(RATING_IN_TASTE, rng, n), _draw(RATING_ELSEWHERE, rng, n)) + 1.0
        return pd.DataFrame({  # the draws are independent, so sorted times keep them random in time
            "user_id": np.strings.add("u", users.astype(str)),
            "item_id": np.strings.add("i", items.astype(str)),
            "event_type": EVENT_TYPES[kind],
            "rating": np.where(kind == 3, stars, np.nan),
            "timestamp": np.sort(rng.uniform(start, end, n)),
        })

    def items(self, start: int, stop: int, rng: np.random.Generator) -> list[ItemRecord]:
        """Items start..stop-1: text from their category's words and brands, so the content model has
        something to match; prices log-normal around their category's level."""
        words = _words(VOCABULARY, np.random.default_rng(self.seed + 1))
        brands = np.strings.capitalize(_words(BRANDS, np.random.default_rng(self.seed + 2)))
        layout = np.random.default_rng(self.seed + 3)  # the same per category whichever block is drawn
        category_words = layout.integers(0, VOCABULARY, (self.size.categories, WORDS_PER_CATEGORY))
        category_brands = layout.integers(0, BRANDS, (self.size.categories, BRANDS_PER_CATEGORY))
        category_price = layout.lognormal(3.5, 1.0, self.size.categories)
        category_names = [f"{DEPARTMENTS[c % len(DEPARTMENTS)]}-{c // len(DEPARTMENTS)}"
                          for c in range(self.size.categories)]
        n = stop - start
        category = self.item_category[start:stop]
        own = category_words[category[:, None], rng.integers(0, WORDS_PER_CATEGORY, (n, 7))]
        brand = brands[category_brands[category, rng.integers(0, BRANDS_PER_CATEGORY, n)]]
        noun, qualifier = words[own[:, 0]], words[own[:, 1]]
        name = np.strings.add(np.strings.add(np.strings.add(np.strings.add(brand, " "), np.strings.capitalize(
            qualifier)), " "), np.strings.add(noun, np.strings.add(" ", rng.integers(100, 999, n).astype(str))))
        description = [" ".join(row) for row in words[np.concatenate(
            [own[:, 2:], rng.integers(0, VOCABULARY, (n, 3))], axis=1)].tolist()]
        tags = words[own[:, [0, 2, 3]]].tolist()
        price = np.round(category_price[category] * rng.lognormal(0.0, 0.4, n), 2)
        return [ItemRecord(item_id=f"i{start + k}", name=name_, category=category_names[c], brand=brand_,
                           description=description_, tags=tuple(tags_), price=price_)
                for k, (name_, c, brand_, description_, tags_, price_) in enumerate(zip(
                    name.tolist(), category.tolist(), brand.tolist(), description, tags, price.tolist()))]


def _draw(probabilities: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.searchsorted(np.cumsum(probabilities), rng.random(n), side="right").clip(0, len(probabilities) - 1)


def _words(n: int, rng: np.random.Generator) -> np.ndarray:
    """n made-up words of two or three syllables (distinct enough for TF-IDF)."""
    syllables = np.array(SYLLABLES)
    parts = syllables[rng.integers(0, len(SYLLABLES), (n, 3))]
    two = np.strings.add(parts[:, 0], parts[:, 1])
    return np.where(rng.random(n) < 0.5, two, np.strings.add(two, parts[:, 2]))


def generate(size: ShopSize, database_url: str, seed: int = 0, end: float | None = None) -> dict[str, Any]:
    """Write the shop into the store at database_url (which must hold no events yet); the rows/s per table."""
    store = Store(database_url)
    try:
        if store.counts()["interactions"]:
            raise BenchError(f"{database_url} already holds events; generate writes into an empty store")
        started = time.perf_counter()
        shop = Shop(size, seed)
        figures = {"setup_seconds": round(time.perf_counter() - started, 2)}
        rng = np.random.default_rng(seed + 10)
        figures["items"] = _timed(size.items, WRITE_ITEMS, "items", lambda a, b: store.upsert_items(shop.items(a, b, rng)))
        figures["users"] = _timed(size.users, WRITE_USERS, "users",
                                  lambda a, b: store.add_users(f"u{n}" for n in range(a, b)))
        end = end if end is not None else (time.time() // 86_400) * 86_400  # today, 00:00 UTC: one day, one data set
        start = end - SPAN_DAYS * 86_400
        per_second = (end - start) / size.events

        def write_events(a: int, b: int) -> int:
            frame = shop.events(b - a, start + a * per_second, start + b * per_second, rng)
            return sum(store.append_event_frame(frame.iloc[k:k + WRITE_EVENTS]) for k in range(0, len(frame), WRITE_EVENTS))

        figures["events"] = _timed(size.events, CHUNK_EVENTS, "events", write_events)
        store.record_checkpoint(store.last_seq(), 0.0)  # a server's first start fits all of it at once
        figures["seconds"] = round(time.perf_counter() - started, 2)
        figures["store"] = store.counts()
    finally:
        store.close()
    return figures


def _timed(total: int, step: int, what: str, write) -> dict[str, float]:
    """write(a, b) for consecutive blocks of `step` up to `total`, under a progress bar; rows and rows/s."""
    started = time.perf_counter()
    with tqdm(total=total, unit=" " + what, unit_scale=True, desc=what, file=sys.stderr) as bar:
        for a in range(0, total, step):
            write(a, min(total, a + step))
            bar.update(min(total, a + step) - a)
    seconds = time.perf_counter() - started
    return {"rows": total, "seconds": round(seconds, 2), "rows_per_s": round(total / seconds if seconds else 0.0)}


def default_database_url(size: ShopSize) -> str:
    """A SQLite file of the bench's own, never the service's instance/ store."""
    return f"sqlite:///{RESULTS_DIR / 'scale' / size.label / 'store.db'}"


def count(text: str) -> int:
    """argparse type: 50000000, 5e7 or 50M."""
    units = {"k": 1_000, "m": 1_000_000}
    text = text.strip().lower()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(float(text))


def cmd_generate(args: argparse.Namespace) -> int:
    size = ShopSize(args.items, args.users, args.events)
    url = args.database_url or default_database_url(size)
    print(f"generating {size.label} ({size.categories:,} categories) into {url}", file=sys.stderr)
    try:
        figures = generate(size, url, args.seed)
    except BenchError as error:
        return report_error(error, hint=None)
    print(json.dumps({"size": size.label, "database_url": url, **figures}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    generate_parser = commands.add_parser("generate", help="write a synthetic shop into a store")
    generate_parser.add_argument("--items", type=count, default=DEFAULT_ITEMS)
    generate_parser.add_argument("--users", type=count, default=DEFAULT_USERS)
    generate_parser.add_argument("--events", type=count, default=DEFAULT_EVENTS)
    generate_parser.add_argument("--seed", type=int, default=0)
    generate_parser.add_argument("--database-url", help="the store to fill (default: a SQLite file under "
                                 "bench/results/scale/<size>/)")
    args = parser.parse_args(argv)
    return {"generate": cmd_generate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
