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
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from _common import (DEFAULT_ADMIN_URL, RESULTS_DIR, BenchError, KeepAliveClient, format_table, report_error,
                     scratch_database, summarize, write_results)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from main import MAIN_PATH, ServerProcess, ServerStartError  # noqa: E402
from recommenders.records import ItemRecord  # noqa: E402
from storage import Store  # noqa: E402

DEFAULT_ITEMS, DEFAULT_USERS, DEFAULT_EVENTS = 1_000_000, 2_000_000, 50_000_000
CHUNK_EVENTS = 1_000_000  # drawn at once: ~100 MB of arrays
WRITE_EVENTS = 100_000  # rows per Store.append_event_frame call (one transaction, ~7 MB of JSON)
WRITE_ITEMS, WRITE_USERS = 20_000, 100_000
SPAN_DAYS = 180
WARMUP_GETS = 50  # the first uncached GETs of a server, not counted
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
        # Each category's own words, brands and price level: the content model's signal.
        layout = np.random.default_rng(seed + 1)
        self.words = _words(VOCABULARY, layout)
        self.brands = np.strings.capitalize(_words(BRANDS, layout))
        self.category_words = layout.integers(0, VOCABULARY, (categories, WORDS_PER_CATEGORY))
        self.category_brands = layout.integers(0, BRANDS, (categories, BRANDS_PER_CATEGORY))
        self.category_price = layout.lognormal(3.5, 1.0, categories)
        self.category_names = [f"{DEPARTMENTS[c % len(DEPARTMENTS)]}-{c // len(DEPARTMENTS)}" for c in range(categories)]

    def _categories_by_mass(self, uniform: np.ndarray) -> np.ndarray:
        position = np.searchsorted(self.category_bounds, uniform * self.category_bounds[-1], side="right") - 1
        return np.minimum(position, self.size.categories - 1).astype(np.int32)

    def events(self, n: int, start: float, end: float, rng: np.random.Generator) -> pd.DataFrame:
        """n events between start and end (Unix seconds), in time order, as Store.append_event_frame takes them."""
        users = np.searchsorted(self.user_cumulative, rng.random(n) * self.user_cumulative[-1], side="right")
        users = np.minimum(users, self.size.users - 1)
        slot = _draw(np.append(TASTES * TASTE_SHARE, 1 - TASTE_SHARE), rng, n)  # the last: no taste
        in_taste = slot < len(TASTES)
        category = self.tastes[users, np.minimum(slot, len(TASTES) - 1)]
        low = np.where(in_taste, self.category_bounds[category], 0.0)
        high = np.where(in_taste, self.category_bounds[category + 1], self.cumulative[-1])
        position = np.searchsorted(self.cumulative, low + rng.random(n) * (high - low), side="right")
        items = self.by_category[np.minimum(position, self.size.items - 1)]
        kind = _draw(EVENT_SHARES, rng, n)
        stars = np.where(in_taste, _draw(RATING_IN_TASTE, rng, n), _draw(RATING_ELSEWHERE, rng, n)) + 1.0
        return pd.DataFrame({  # the draws are independent, so sorted times keep them random in time
            "user_id": np.strings.add("u", users.astype(str)),
            "item_id": np.strings.add("i", items.astype(str)),
            "event_type": EVENT_TYPES[kind],
            "rating": np.where(kind == 3, stars, np.nan),
            "timestamp": np.sort(rng.uniform(start, end, n)),
        })

    def items(self, start: int, stop: int, rng: np.random.Generator) -> list[ItemRecord]:
        """Items start..stop-1: name, description and tags from their category's words, a brand of the
        category's, a price log-normal around its level."""
        n = stop - start
        category = self.item_category[start:stop]
        own = self.words[self.category_words[category[:, None], rng.integers(0, WORDS_PER_CATEGORY, (n, 7))]]
        anywhere = self.words[rng.integers(0, VOCABULARY, (n, 3))]
        brand = self.brands[self.category_brands[category, rng.integers(0, BRANDS_PER_CATEGORY, n)]]
        price = np.round(self.category_price[category] * rng.lognormal(0.0, 0.4, n), 2)
        model = rng.integers(100, 1000, n)
        return [ItemRecord(item_id=f"i{start + k}", name=f"{brand_} {words[1].capitalize()} {words[0]} {model_}",
                           category=self.category_names[c], brand=brand_, description=" ".join(words[2:] + extra),
                           tags=tuple(dict.fromkeys((words[0], words[2], words[3]))), price=price_)
                for k, (words, extra, c, brand_, price_, model_) in enumerate(zip(
                    own.tolist(), anywhere.tolist(), category.tolist(), brand.tolist(), price.tolist(), model.tolist()))]


def _draw(probabilities: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    return np.searchsorted(np.cumsum(probabilities), rng.random(n), side="right").clip(0, len(probabilities) - 1)


def _words(n: int, rng: np.random.Generator) -> np.ndarray:
    """n made-up words of two or three syllables (distinct enough for TF-IDF)."""
    syllables = np.array(SYLLABLES)
    parts = syllables[rng.integers(0, len(SYLLABLES), (n, 3))]
    two = np.strings.add(parts[:, 0], parts[:, 1])
    return np.where(rng.random(n) < 0.5, two, np.strings.add(two, parts[:, 2]))


def generate(size: ShopSize, database_url: str, seed: int = 0) -> dict[str, Any]:
    """Write the shop into the store at database_url (which must hold no events yet); the rows/s per table."""
    store = Store(database_url)
    try:
        if store.counts()["interactions"]:
            raise BenchError(f"{database_url} already holds events; generate writes into an empty store")
        started = time.perf_counter()
        shop = Shop(size, seed)
        figures = {"setup_seconds": round(time.perf_counter() - started, 2)}
        rng = np.random.default_rng(seed + 10)
        figures["items"] = _timed(size.items, WRITE_ITEMS, "items",
                                  lambda a, b: store.upsert_items(shop.items(a, b, rng)))
        figures["users"] = _timed(size.users, WRITE_USERS, "users",
                                  lambda a, b: store.add_users(f"u{n}" for n in range(a, b)))
        end = (time.time() // 86_400) * 86_400  # today, 00:00 UTC: the same data all day for one seed
        start = end - SPAN_DAYS * 86_400
        per_second = (end - start) / size.events

        def write_events(a: int, b: int) -> int:
            frame = shop.events(b - a, start + a * per_second, start + b * per_second, rng)
            return sum(store.append_event_frame(frame.iloc[k:k + WRITE_EVENTS])
                       for k in range(0, len(frame), WRITE_EVENTS))

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


class TreeMemory:
    """Peak RSS of a process and all its descendants (a Spark job's JVM, a server's workers), polled
    from /proc: ru_maxrss would give the largest single process, not the sum of a tree."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "TreeMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def now_mib(self) -> float:
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        total, pending = 0, [self.pid]
        while pending:
            pid = pending.pop()
            pending.extend(children.get(pid, ()))
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except OSError:
                pass
        return total * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mib = max(self.peak_mib, self.now_mib())


def run_step(name: str, command: list[str], env: dict[str, str], log: Path | None,
             memory_limit_gib: float | None = None) -> dict[str, Any]:
    """One pipeline step as a child process: wall time, peak RSS of its tree, and its last stdout line
    as JSON (the summary `main.py train` and `scale.py generate` print).

    With a `log`, the child's stderr goes there (so `main.py train` prints JSON rather than its
    terminal summary) and a line here shows the elapsed time and peak RSS; without, the child's own
    progress bars show. A memory limit (address space) makes a step that would not fit fail alone,
    instead of the kernel's OOM killer choosing among the shared machine's processes."""
    def limit() -> None:
        if memory_limit_gib is not None:
            cap = int(memory_limit_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    started = time.perf_counter()
    # stdout to a file, not a pipe: a chatty child (Spark's logging) would fill a pipe read only at the end.
    with open(log or os.devnull, "w") as errors, tempfile.TemporaryFile("w+") as out, \
            tqdm(desc=name, bar_format="{desc}: {elapsed} {postfix}", file=sys.stderr, disable=log is None) as bar:
        process = subprocess.Popen(command, env=env, cwd=MAIN_PATH.parent, stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=errors if log else None, text=True, preexec_fn=limit)
        with TreeMemory(process.pid) as memory:
            while process.poll() is None:
                time.sleep(1.0)
                bar.set_postfix_str(f"peak RSS {memory.peak_mib:,.0f} MiB", refresh=True)
        out.seek(0)
        output = out.read()
    result: dict[str, Any] = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": round(memory.peak_mib),
                              "returncode": process.returncode}
    lines = output.strip().splitlines()
    if process.returncode == 0 and lines:
        result["output"] = json.loads(lines[-1])
    else:
        result["error"] = f"exit code {process.returncode}: " + (
            log.read_text()[-2000:].strip() if log else "see its output above")
    return result


def spark_available() -> bool:
    """Whether this checkout's `main.py train` has --engine (the Spark trainer, issue 12)."""
    usage = subprocess.run([sys.executable, str(MAIN_PATH), "train", "--help"], capture_output=True, text=True,
                           cwd=MAIN_PATH.parent).stdout
    return "--engine" in usage


def serve_under_load(env: dict[str, str], port: int, size: ShopSize, args: argparse.Namespace,
                     log: Path) -> dict[str, Any]:
    """`python main.py serve` on the store and artifact: time until healthy and RSS, then uncached GET
    /recommendations over distinct users for --get-seconds, then wrk POST /interactions for --post-seconds."""
    from ingest import run as post_events  # wrk posting views, add-to-carts and purchases; checks the count

    server_env = {**env, "RETRAIN_INTERVAL_SECONDS": "0", "LOAD_DEMO_DATA": "false", "RATE_LIMIT": "",
                  "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    server_env.pop("REDIS_URL", None)
    started = time.perf_counter()
    with open(log, "w") as output, ServerProcess(port, env=server_env, stdout=output, stderr=output,
                                                 startup_timeout=args.startup_timeout) as server:
        start_seconds = time.perf_counter() - started
        memory = TreeMemory(server.process.pid)
        figures: dict[str, Any] = {"start": {"seconds": round(start_seconds, 2),
                                             "rss_mib": round(memory.now_mib()),
                                             "events_per_s": round(size.events / start_seconds)}}
        with memory:
            figures["get_uncached"] = uncached_gets(server.url, size, args.get_seconds, args.seed)
            items = [f"i{n}" for n in np.random.default_rng(args.seed).choice(size.items, min(size.items, 1000), replace=False)]
            posted = post_events(server.url, args.post_concurrency, args.post_seconds, items, args.seed)
            posted.pop("wrk_output")
            figures["post"] = posted
        figures["peak_rss_mib"] = round(memory.peak_mib)
    return figures


def uncached_gets(url: str, size: ShopSize, seconds: float, seed: int) -> dict[str, Any]:
    """GET /recommendations/<user>?count=10, each user once (so never from the cache), for `seconds`."""
    client = KeepAliveClient(url)
    users = np.random.default_rng(seed).permutation(size.users)
    samples, cached = [], 0
    started = time.perf_counter()
    try:
        for n, user in enumerate(users):
            answer, elapsed_ms = client.expect(200, "GET", f"/recommendations/u{user}?count=10")
            cached += answer.get("source") != "computed"
            if n >= WARMUP_GETS:
                samples.append(elapsed_ms)
            if time.perf_counter() - started > seconds:
                break
    finally:
        client.close()
    summary = summarize(samples, None)
    return {**summary, "requests_per_s": round(len(samples) / (time.perf_counter() - started), 1),
            "not_computed": cached}


def count(text: str) -> int:
    """argparse type: 50000000, 5e7 or 50M."""
    units = {"k": 1_000, "m": 1_000_000}
    text = text.strip().lower()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(float(text))


def counts(text: str) -> list[int]:
    return [count(part) for part in text.split(",") if part.strip()]


def sizes(args: argparse.Namespace) -> list[ShopSize]:
    """One size per --events value; --items/--users give one value for all or one per size, and scale
    with the events at the default shop's proportions when not given."""
    def per_size(values: list[int] | None, share: float) -> list[int]:
        if values is None:
            return [max(100, round(events * share)) for events in args.events]
        if len(values) not in (1, len(args.events)):
            raise SystemExit("--items and --users take one value, or one per --events value")
        return values * len(args.events) if len(values) == 1 else values

    items = per_size(args.items, DEFAULT_ITEMS / DEFAULT_EVENTS)
    users = per_size(args.users, DEFAULT_USERS / DEFAULT_EVENTS)
    return [ShopSize(*numbers) for numbers in zip(items, users, args.events)]


@contextmanager
def fresh_store(size: ShopSize, args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    """An empty store for one run: a SQLite file in the (emptied) workdir, or a PostgreSQL database of its own."""
    if args.backend == "postgresql":
        with scratch_database(args.admin_url, f"scale_{size.label.replace('-', '_').replace('.', '_')}") as url:
            yield url
        return
    yield f"sqlite:///{workdir / 'store.db'}"


def run_size(size: ShopSize, args: argparse.Namespace, spark: bool) -> dict[str, Any]:
    """Every step of the pipeline on one size; the figures per step."""
    workdir = RESULTS_DIR / "scale" / f"run-{args.backend}-{size.label}"
    shutil.rmtree(workdir, ignore_errors=True)  # this bench's own files: an earlier run's store and artifacts
    workdir.mkdir(parents=True)
    record: dict[str, Any] = {"size": size.label, "items": size.items, "users": size.users, "events": size.events,
                              "categories": size.categories, "backend": args.backend, "steps": {}}
    steps = record["steps"]
    with fresh_store(size, args, workdir) as url:
        env = {**os.environ, "DATABASE_URL": url}
        steps["generate"] = run_step("generate + load", [
            sys.executable, __file__, "generate", "--items", str(size.items), "--users", str(size.users),
            "--events", str(size.events), "--seed", str(args.seed), "--database-url", url], env, None)
        if "error" in steps["generate"]:
            return record
        artifacts = []
        if args.local_max_events is not None and size.events > args.local_max_events:
            steps["train_local"] = {"skipped": f"above --local-max-events {args.local_max_events:,}"}
        else:
            steps["train_local"] = run_step("train (local)", [sys.executable, str(MAIN_PATH), "train"],
                                            {**env, "MODEL_DIR": str(workdir / "models-local")}, workdir / "train-local.log",
                                            args.train_memory_gib)
            artifacts.append("models-local")
        if not spark:
            steps["train_spark"] = {"skipped": "main.py train has no --engine yet (the Spark trainer is not merged)"}
        else:
            steps["train_spark"] = run_step("train (spark)", [sys.executable, str(MAIN_PATH), "train", "--engine", "spark"],
                                            {**env, "MODEL_DIR": str(workdir / "models-spark")}, workdir / "train-spark.log")
            artifacts.append("models-spark")
        trained = [name for name in artifacts if "output" in steps["train_" + name.split("-")[1]]]
        if not trained:
            steps["serve"] = {"skipped": "no artifact: no trainer succeeded"}
        else:
            try:
                steps["serve"] = {"artifact": trained[0], **serve_under_load(
                    {**env, "MODEL_DIR": str(workdir / trained[0])}, args.port, size, args, workdir / "serve.log")}
            except (BenchError, ServerStartError) as error:
                steps["serve"] = {"error": str(error)}
    for step in steps.values():
        if "seconds" in step:
            step["events_per_s"] = round(size.events / step["seconds"])
    return record


def step_table(record: dict[str, Any]) -> str:
    """One row per step: wall time, peak RSS of its process tree, events/s (or the request rate)."""
    steps, rows = record["steps"], []
    for name, label in (("generate", "generate + load"), ("train_local", "train, local"),
                        ("train_spark", "train, spark")):
        step = steps.get(name, {})
        if "seconds" in step:
            note = step.get("error", "")[-60:].replace("\n", " ") or _note(step.get("output", {}))
            rows.append([label, step["seconds"], f"{step['peak_rss_mib']:,}", f"{step['events_per_s']:,}", note])
        elif step:
            rows.append([label, "-", "-", "-", step.get("skipped", "")])
    serve = steps.get("serve", {})
    if "start" in serve:
        get, post = serve["get_uncached"], serve["post"]
        rows += [["serve: start until healthy", serve["start"]["seconds"], f"{serve['start']['rss_mib']:,}",
                  f"{serve['start']['events_per_s']:,}", f"artifact {serve['artifact']}"],
                 ["GET /recommendations uncached", "-", f"{serve['peak_rss_mib']:,}", f"{get['requests_per_s']:,} req/s",
                  f"p50 {get['p50_ms']} ms, p99 {get['p99_ms']} ms, n {get['n']}"],
                 [f"POST /interactions (wrk, {post['concurrency']} conns)", "-", f"{serve['peak_rss_mib']:,}",
                  f"{post['requests_per_s']:,.0f}", f"p50 {post['p50_ms']} ms, p99 {post['p99_ms']} ms"]]
    elif serve:
        rows.append(["serve", "-", "-", "-", serve.get("skipped") or serve.get("error", "")[-80:]])
    return format_table(["step", "wall s", "peak RSS MiB", "events/s", "note"], rows)


def _note(output: dict[str, Any]) -> str:
    """The trainer's own fit time, or the generator's write rate per table."""
    if "fit_seconds" in output:
        return f"fit {output['fit_seconds']} s"
    if "events" in output:
        return "rows/s written: " + ", ".join(f"{what} {output[what]['rows_per_s']:,}" for what in ("items", "users", "events"))
    return ""


def crossover(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Local against Spark train time per size, and the smallest size from which Spark is the one to
    use: faster, or the only one that fits (local failed or skipped), at that size and every larger one."""
    rows = []
    for record in records:
        local, spark = record["steps"].get("train_local", {}), record["steps"].get("train_spark", {})
        local_s = local.get("seconds") if "output" in local else None
        spark_s = spark.get("seconds") if "output" in spark else None
        rows.append({"size": record["size"], "events": record["events"], "local_seconds": local_s,
                     "spark_seconds": spark_s, "local_peak_rss_mib": local.get("peak_rss_mib"),
                     "spark_peak_rss_mib": spark.get("peak_rss_mib"),
                     "local_over_spark": round(local_s / spark_s, 2) if local_s and spark_s else None,
                     "spark_wins": spark_s is not None and (local_s is None or spark_s < local_s)})
    rows.sort(key=lambda row: row["events"])
    first = next((k for k in range(len(rows)) if all(row["spark_wins"] for row in rows[k:])), None)
    found = None if first is None or not any(row["spark_seconds"] for row in rows) else rows[first]["size"]
    return {"rows": rows, "spark_from": found}


def cmd_run(args: argparse.Namespace) -> int:
    spark = spark_available()
    if not spark:
        print("note: `python main.py train` has no --engine option on this checkout; the Spark step is skipped",
              file=sys.stderr)
    records = []
    for size in sizes(args):
        print(f"\n== {size.label}: {size.items:,} items ({size.categories:,} categories), {size.users:,} users, "
              f"{size.events:,} events, {args.backend}", file=sys.stderr)
        record = run_size(size, args, spark)
        records.append(record)
        print(step_table(record))
        write_results(RESULTS_DIR / f"scale-{args.backend}-{size.label}.json", {"bench": "scale", **record})
    if len(records) > 1:
        table = crossover(records)
        print("\nlocal against Spark, train wall time")
        print(format_table(["size", "local s", "spark s", "local / spark", "local RSS MiB", "spark RSS MiB"], [
            [row["size"], row["local_seconds"] or "-", row["spark_seconds"] or "-", row["local_over_spark"] or "-",
             row["local_peak_rss_mib"] or "-", row["spark_peak_rss_mib"] or "-"] for row in table["rows"]]))
        print(f"Spark is the one to use from: {table['spark_from'] or 'not within these sizes'}")
        write_results(args.out, {"bench": "scale", "backend": args.backend, "crossover": table, "runs": records})
    failed = any("error" in step for record in records for step in record["steps"].values())
    return 1 if failed else 0


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
    run_parser = commands.add_parser("run", help="generate, train (local, Spark), serve under load; per size")
    run_parser.add_argument("--events", type=counts, default=[DEFAULT_EVENTS], help="one size per value: 1e5,1e6,5e6")
    run_parser.add_argument("--items", type=counts, help="one value, or one per size (default: events / 50)")
    run_parser.add_argument("--users", type=counts, help="one value, or one per size (default: events / 25)")
    run_parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    run_parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL,
                            help="PostgreSQL database to create the run's own database from (dropped at the end)")
    run_parser.add_argument("--local-max-events", type=count, help="skip the local trainer above this many events")
    run_parser.add_argument("--train-memory-gib", type=float, default=20.0,
                            help="address-space limit of the local trainer: past it, it fails instead of swapping")
    run_parser.add_argument("--get-seconds", type=float, default=20.0)
    run_parser.add_argument("--post-seconds", type=int, default=10)
    run_parser.add_argument("--post-concurrency", type=int, default=8)
    run_parser.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds for the server to be healthy")
    run_parser.add_argument("--port", type=int, default=5300)
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scale-sweep.json",
                            help="the crossover's JSON when several sizes run")
    args = parser.parse_args(argv)
    return {"generate": cmd_generate, "run": cmd_run}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
