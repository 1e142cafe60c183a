"""The engine README's interactive shell, talking to a running server over HTTP.

Log in as a demo user (alice, bob, carol) or any new id, then get recommendations, rate items,
record views/add-to-cart/purchases, browse the catalog and watch the cache work. It reads from and
writes to the streams it is given, so tests can script it; bad input re-prompts and server errors
are shown as one line, so a session never ends in a traceback.
"""
from __future__ import annotations

import json
import sys
import time
from typing import Callable, Collection, TextIO

from shell.api_client import ApiClient, ApiError

DEMO_USERS = (
    ("alice", "likes Apple products"),
    ("bob", "likes tech + gaming"),
    ("carol", "likes cooking"),
)
EVENT_TYPES = (("view", "View"), ("add_to_cart", "Add to cart"), ("purchase", "Purchase"))
CATALOG_PAGE = 50  # items shown when the user asks to see the catalog
CATEGORY_PAGE = 15  # categories offered at once, the largest first
BROWSE_PAGE = 20  # items of a category shown at once
MAX_COUNT = 100  # the API's largest `count`
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class EndOfInput(Exception):
    """The input ended (Ctrl-D, or the end of a script): leave the shell quietly."""


def _table(headers: list[str], rows: list[list[str]], numeric: Collection[int] = ()) -> str:
    """Rows as aligned text columns; columns in `numeric` are right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]

    def line(cells: list) -> str:
        return "  ".join(
            str(cell).rjust(width) if index in numeric else str(cell).ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, rows)])


def _local_time(seconds: float) -> str:
    """Unix seconds as this machine's local date and time, to the second."""
    return time.strftime(TIME_FORMAT, time.localtime(seconds))


def _is_time(key: str, value: object) -> bool:
    """Whether a stats value is a moment in Unix seconds (`fitted_at`, `last_run`, ...), not a duration."""
    return (key.endswith("_at") or key in ("time", "last_run")) and isinstance(value, (int, float)) \
        and not isinstance(value, bool) and value > 0


def _summary(values: dict) -> str:
    """A one-line `key=value` view of a stats section; moments as local date-times, nested values as JSON."""
    def shown(key: str, value: object) -> object:
        if _is_time(key, value):
            return _local_time(value)
        return json.dumps(value, separators=(',', ':')) if isinstance(value, (dict, list)) else value

    return ", ".join(f"{key}={shown(key, value)}" for key, value in values.items()) or "-"


class Shell:
    """One interactive session: a logged-in user and a menu loop."""

    def __init__(self, client: ApiClient, stdin: TextIO, stdout: TextIO) -> None:
        self.client = client
        self._in, self._out = stdin, stdout
        self.user: str | None = None
        self._items: dict[str, dict] = {}  # item_id -> item, filled as items are shown
        self._last_list: list[str] = []  # item ids of the last numbered list, for "#N" answers

    # --- input and output -------------------------------------------------------------------
    def _say(self, text: str = "") -> None:
        self._out.write(text + "\n")
        self._out.flush()

    def _ask(self, prompt: str) -> str:
        self._out.write(prompt)
        self._out.flush()
        line = self._in.readline()
        if not line:
            raise EndOfInput
        return line.strip()

    def _choose(self, title: str, options: list[str]) -> int:
        """Show a numbered list and return the 0-based index picked; re-prompt until valid."""
        self._say()
        self._say(title)
        for number, option in enumerate(options, 1):
            self._say(f"  {number}. {option}")
        while True:
            answer = self._ask(f"Choose [1-{len(options)}]: ")
            if answer.isdigit() and 1 <= int(answer) <= len(options):
                return int(answer) - 1
            self._say(f"Please enter a number from 1 to {len(options)}.")

    def _ask_number(self, prompt: str, low: float, high: float, default: float | None = None,
                    integer: bool = True) -> float:
        """A number in [low, high]; blank means `default` when there is one."""
        while True:
            answer = self._ask(prompt)
            if not answer and default is not None:
                return default
            try:
                value = int(answer) if integer else float(answer)
            except ValueError:
                value = None
            if value is not None and low <= value <= high:
                return value
            self._say(f"Please enter {'a whole number' if integer else 'a number'} from {low:g} to {high:g}.")

    def _ask_count(self, default: int) -> int:
        return int(self._ask_number(f"How many? [{default}]: ", 1, MAX_COUNT, default))

    def _ask_item(self, prompt: str) -> str:
        """An item id typed in, "#N" for line N of the last list shown, or blank to list the catalog."""
        while True:
            answer = self._ask(f"{prompt} (id, #N from the last list, blank to list items): ")
            if not answer:
                self._show_catalog()
            elif answer.startswith("#"):
                position = answer[1:]
                if position.isdigit() and 1 <= int(position) <= len(self._last_list):
                    return self._last_list[int(position) - 1]
                self._say(f"There is no line {answer} in the last list.")
            else:
                return answer

    # --- presentation -------------------------------------------------------------------------
    def _item(self, item_id: str) -> dict:
        """The catalog entry for an id, fetched once; a placeholder if the server doesn't know it."""
        if item_id not in self._items:
            try:
                self._items[item_id] = self.client.item(item_id)
            except ApiError:
                self._items[item_id] = {"item_id": item_id, "name": item_id, "category": "?"}
        return self._items[item_id]

    def _show_ranked(self, title: str, entries: list[dict], answer: dict, round_trip_ms: float) -> None:
        """Scored items (recommendations, similar, popular) as a numbered table plus timings."""
        self._say()
        self._say(title)
        if entries:
            rows = []
            for rank, entry in enumerate(entries, 1):
                item = self._item(entry["item"])
                rows.append([str(rank), item["name"], item.get("category") or "-",
                             f"{entry['score']:.3f}", entry.get("strategy", "-"), entry.get("reason") or "-"])
            self._say(_table(["#", "Item", "Category", "Score", "Strategy", "Why"], rows, numeric={0, 3}))
        else:
            self._say("(nothing to show)")
        self._last_list = [entry["item"] for entry in entries]
        self._say(f"source: {answer.get('source', '-')} | server {answer.get('response_time_ms', '?')} ms"
                  f" | round trip {round_trip_ms:.1f} ms")

    def _show_items(self, title: str, items: list[dict], first: int = 1) -> None:
        """Items as a numbered table; numbers from `first` continue the last list (a further page of it)."""
        self._say()
        self._say(title)
        rows = [[str(number), item["item_id"], item["name"], item.get("category") or "-", item.get("brand") or "-",
                 "-" if item.get("price") is None else f"{item['price']:.2f}"]
                for number, item in enumerate(items, first)]
        self._say(_table(["#", "Id", "Name", "Category", "Brand", "Price"], rows, numeric={0, 5}))
        self._items.update((item["item_id"], item) for item in items)
        shown = [item["item_id"] for item in items]
        self._last_list = shown if first == 1 else self._last_list[:first - 1] + shown

    def _show_catalog(self) -> None:
        answer = self.client.items(limit=CATALOG_PAGE)
        shown = len(answer["items"])
        self._show_items(f"Catalog ({shown} of {answer['total']} items)", answer["items"])

    @staticmethod
    def _timed(call: Callable[[], dict]) -> tuple[dict, float]:
        """The answer of `call` and its round trip in ms, as the user experiences it."""
        start = time.perf_counter()
        answer = call()
        return answer, (time.perf_counter() - start) * 1000

    # --- session ------------------------------------------------------------------------------
    def login(self) -> None:
        """Pick a demo user or type any id; unknown ids are created through POST /users."""
        options = [f"{name} ({taste})" for name, taste in DEMO_USERS] + ["another user (new ids are created)"]
        while True:
            choice = self._choose("Log in as:", options)
            user_id = DEMO_USERS[choice][0] if choice < len(DEMO_USERS) else self._ask("User id: ")
            if not user_id:
                continue
            try:
                status = self.client.create_user(user_id)["status"]
            except ApiError as error:
                self._say(f"Cannot log in as {user_id!r}: {error.message or error.error}")
                continue
            self.user = user_id
            if status == "created":
                self._say(f"Created user {user_id}. Recommendations start from popular items until you rate some.")
            else:
                self._say(f"Logged in as {user_id}.")
            return

    def show_recommendations(self) -> None:
        count = self._ask_count(10)
        answer, took = self._timed(lambda: self.client.recommendations(self.user, count))
        self._show_ranked(f"Recommendations for {self.user}", answer["recommendations"], answer, took)

    def rate_item(self) -> None:
        item_id = self._ask_item("Item to rate")
        rating = self._ask_number("Rating (1-5): ", 1, 5, integer=False)
        rating = int(rating) if float(rating).is_integer() else rating
        answer, took = self._timed(lambda: self.client.record_interaction(self.user, item_id, rating=rating))
        self._report_recorded(f"{self.user} rated {self._item(item_id)['name']} {rating}/5", answer, took)

    def record_event(self) -> None:
        choice = self._choose("What happened?", [label for _, label in EVENT_TYPES])
        event_type, label = EVENT_TYPES[choice]
        item_id = self._ask_item("Item")
        answer, took = self._timed(
            lambda: self.client.record_interaction(self.user, item_id, event_type=event_type))
        self._report_recorded(f"{label}: {self.user} -> {self._item(item_id)['name']}", answer, took)

    def _report_recorded(self, what: str, answer: dict, round_trip_ms: float) -> None:
        invalidated = "recommendations refreshed" if answer.get("cache_invalidated") else "cache untouched"
        self._say(f"Recorded. {what} ({invalidated}; server {answer.get('response_time_ms', '?')} ms"
                  f", round trip {round_trip_ms:.1f} ms)")

    def _pick_category(self, title: str, categories: list[dict], first_option: str | None = None) -> str | None:
        """A category name chosen from GET /categories' list; None if `first_option` is chosen.

        The largest categories come first, CATEGORY_PAGE at a time: a last option shows the next ones
        (from the last page, the first ones again).
        """
        ranked = sorted(categories, key=lambda entry: (-entry["count"], entry["name"]))
        start = 0
        while True:
            page = ranked[start:start + CATEGORY_PAGE]
            names: list[str | None] = [None] if first_option else []
            options = [first_option] if first_option else []
            for entry in page:
                names.append(entry["name"])
                options.append(f"{entry['name']} ({entry['count']} items)")
            heading = title
            if len(ranked) > CATEGORY_PAGE:
                end = start + len(page)
                heading = f"{title} ({start + 1}-{end} of {len(ranked)}, the largest first)"
                options.append(f"More categories ({end + 1}-{min(end + CATEGORY_PAGE, len(ranked))})"
                               if end < len(ranked) else f"Back to the largest categories (1-{CATEGORY_PAGE})")
            choice = self._choose(heading, options)
            if choice < len(names):
                return names[choice]
            start = start + CATEGORY_PAGE if start + CATEGORY_PAGE < len(ranked) else 0

    def browse_categories(self) -> None:
        categories = self.client.categories()["categories"]
        if not categories:
            self._say("The catalog has no categories yet.")
            return
        category = self._pick_category("Categories:", categories)
        offset = 0
        while True:
            answer = self.client.items(category=category, limit=BROWSE_PAGE, offset=offset)
            items, total = answer["items"], answer["total"]
            shown = f"{offset + 1}-{offset + len(items)} of {total}" if total > len(items) else str(total)
            self._show_items(f"{category} ({shown} items)", items, first=offset + 1)
            offset += len(items)
            if not items or offset >= total:
                return
            if self._ask(f"Enter for the next {min(BROWSE_PAGE, total - offset)}, anything else to stop: "):
                return

    def find_similar(self) -> None:
        item_id = self._ask_item("Similar to which item")
        count = self._ask_count(5)
        answer, took = self._timed(lambda: self.client.similar(item_id, count))
        self._show_ranked(f"Items similar to {self._item(item_id)['name']}", answer["similar"], answer, took)

    def show_popular(self) -> None:
        categories = self.client.categories()["categories"]
        category = self._pick_category("Popular items in:", categories, first_option="all categories")
        count = self._ask_count(10)
        answer, took = self._timed(lambda: self.client.popular(category, count))
        self._show_ranked(f"Popular items ({category or 'all categories'})", answer["items"], answer, took)

    def show_stats(self) -> None:
        stats = self.client.stats()
        cache_rows = []
        for kind, entry in stats.get("cache", {}).items():
            lookups = entry.get("hits", 0) + entry.get("misses", 0)
            hit_rate = f"{100 * entry.get('hits', 0) / lookups:.1f}%" if lookups else "-"
            cache_rows.append([kind, str(entry.get("hits", 0)), str(entry.get("misses", 0)), hit_rate,
                               f"{entry.get('size', '?')}/{entry.get('max_size', '?')}",
                               f"{entry.get('ttl_seconds', '?')} s"])
        self._say()
        self._say("Cache")
        self._say(_table(["Kind", "Hits", "Misses", "Hit rate", "Size/max", "TTL"], cache_rows, numeric={1, 2, 3, 4, 5}))
        request_rows = [[endpoint, str(entry.get("count", 0)), *(f"{entry.get(key, 0):.2f}" for key in
                                                                  ("avg_ms", "p50_ms", "p99_ms"))]
                        for endpoint, entry in stats.get("requests", {}).items()]
        self._say()
        self._say("Response times")
        self._say(_table(["Endpoint", "Requests", "Avg ms", "p50 ms", "p99 ms"], request_rows, numeric={1, 2, 3, 4}))
        self._say()
        self._say(f"Engine: {_summary(stats.get('engine', {}))}")
        self._say(f"Store: {_summary(stats.get('store', {}))}")

    def run(self) -> int:
        """The whole session; returns the process exit code (1 if the server can't be reached)."""
        try:
            self.client.health()
        except ApiError as error:
            self._say(f"Cannot reach the server at {self.client.base_url}: {error.message or error.error}")
            self._say("Start it with `python main.py serve` (or choose option 1 in `python main.py`).")
            return 1
        self._say(f"Connected to {self.client.base_url}")
        menu: list[tuple[str, Callable[[], None] | None]] = [
            ("Get recommendations", self.show_recommendations),
            ("Rate an item", self.rate_item),
            ("Record a view / add to cart / purchase", self.record_event),
            ("Browse categories", self.browse_categories),
            ("Find similar items", self.find_similar),
            ("View popular items", self.show_popular),
            ("Performance stats", self.show_stats),
            ("Switch user", self.login),
            ("Quit", None),
        ]
        try:
            self.login()
            while True:
                _, action = menu[self._choose(f"[{self.user}] What next?", [label for label, _ in menu])]
                if action is None:
                    break
                try:
                    action()
                except ApiError as error:
                    self._say(f"Error: {error}")
        except (EndOfInput, KeyboardInterrupt):
            self._say()
        self._say("Goodbye.")
        return 0


def run_shell(base_url: str, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Run a shell session against the server at `base_url` (stdin/stdout unless streams are given)."""
    client = ApiClient(base_url)
    try:
        return Shell(client, stdin or sys.stdin, stdout or sys.stdout).run()
    finally:
        client.close()
