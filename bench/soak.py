"""Soak: a mixed load for a long time, to show the server neither fails nor grows.

Worker threads, each on its own keep-alive connection, send 70 % GET /recommendations for random
demo users (cached or not, as the events invalidate them), 10 % GET /similar, 10 % GET /popular
and 10 % POST /event with an event_id, while Socket.IO subscribers registered as random demo users
count the pushes. Every 10 s the server's resident memory (VmRSS) is sampled. Growth is measured
from the first sample after the warm-up (caches and allocator pools fill up first) to the end.
Start the server without rate limits, or the load is refused:

    RATE_LIMIT= python main.py serve &
    python bench/soak.py [--url http://127.0.0.1:5000] [--duration 600] [--subscribers 50]
"""
from __future__ import annotations

import os
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import BenchError, KeepAliveClient, bench_parser, catalog_item_ids, format_table, report_error, \
    summarize, verdict, write_results
from http_latency import DEMO_USERS
from realtime import Subscriber

# Request kind -> share of the load.
MIX = {"recommendations": 0.70, "similar": 0.10, "popular": 0.10, "event": 0.10}
BEHAVIOURS = ("view", "add_to_cart", "purchase")
SAMPLE_EVERY_S = 10.0
MAX_GROWTH = 0.10  # RSS may grow less than 10 % from the warm-up to the end
SETTLE_S = 2.0  # after the load, how long the last pushes get to arrive


class CountingSubscriber(Subscriber):
    """realtime.py's subscriber, counting pushes instead of keeping them: a soak delivers tens of thousands."""

    def __init__(self, url: str, user_id: str) -> None:
        self.received = 0
        super().__init__(url, user_id)

    def _on_push(self, payload: dict) -> None:
        self.received += 1


def listening_pid(port: int) -> int:
    """The pid of the process listening on `port`: its socket inode from /proc/net/tcp{,6}, then the
    process holding that inode among /proc/<pid>/fd."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir()):
                holders.add(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    if len(holders) != 1:
        found = "no process" if not holders else f"processes {sorted(holders)}"
        raise BenchError(f"{found} listening on port {port} found in /proc; pass --server-pid")
    return holders.pop()


def rss_kib(pid: int) -> int:
    match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    if match is None:
        raise BenchError(f"no VmRSS for pid {pid}")
    return int(match.group(1))


class Load:
    """What the workers share: the deadline, and per kind the timings, errors and events per user."""

    def __init__(self, url: str, users: list[str], items: list[str], categories: list[str], seconds: float) -> None:
        self.url, self.users, self.items, self.categories = url, users, items, categories
        self.deadline = time.monotonic() + seconds
        self.timings: dict[str, list[float]] = defaultdict(list)  # per kind; recommendations per source too
        self.errors: Counter[str] = Counter()
        self.events_by_user: Counter[str] = Counter()  # acknowledged: each pushes to that user's subscribers
        self._lock = threading.Lock()

    def work(self, seed: int) -> None:
        rng, client = random.Random(seed), KeepAliveClient(self.url)
        kinds, shares = list(MIX), list(MIX.values())
        try:
            while time.monotonic() < self.deadline:
                kind = rng.choices(kinds, shares)[0]
                method, path, body = self._request(kind, rng)
                try:
                    status, answer, elapsed_ms = client.request(method, path, body)
                except BenchError as error:
                    self._count_error(f"{kind}: {type(error.__cause__ or error).__name__}")
                    continue
                if not 200 <= status < 300:
                    self._count_error(f"{kind}: HTTP {status}")
                    continue
                row = f"{kind} ({answer.get('source')})" if kind == "recommendations" else kind
                with self._lock:
                    self.timings[row].append(elapsed_ms)
                    if kind == "event":
                        self.events_by_user[body["user_id"]] += 1
        finally:
            client.close()

    def _request(self, kind: str, rng: random.Random) -> tuple[str, str, dict | None]:
        if kind == "recommendations":
            return "GET", f"/recommendations/{rng.choice(self.users)}?count=10", None
        if kind == "similar":
            return "GET", f"/similar/{rng.choice(self.items)}?count=10", None
        if kind == "popular":
            category = rng.choice([None, *self.categories])
            return "GET", "/popular?count=10" + (f"&category={category}" if category else ""), None
        return "POST", "/event", {"user_id": rng.choice(self.users), "product_id": rng.choice(self.items),
                                  "event_type": rng.choice(BEHAVIOURS), "event_id": f"soak-{uuid.uuid4().hex}"}

    def _count_error(self, what: str) -> None:
        with self._lock:
            self.errors[what] += 1


def sample_memory(pid: int, started: float, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    """(seconds since the start, VmRSS KiB) every SAMPLE_EVERY_S until `stop`, and once more at the end."""
    while True:
        samples.append((round(time.monotonic() - started, 1), rss_kib(pid)))
        if stop.wait(SAMPLE_EVERY_S):
            samples.append((round(time.monotonic() - started, 1), rss_kib(pid)))
            return


def run(url: str, pid: int, seconds: float, workers: int, subscriber_count: int, warmup: float,
        seed: int) -> dict[str, Any]:
    """Connect the subscribers, run the load with the memory sampler beside it, and count what went wrong."""
    rng = random.Random(seed)
    setup = KeepAliveClient(url)
    try:
        items = catalog_item_ids(setup)
        categories = [c["name"] for c in setup.expect(200, "GET", "/categories")[0]["categories"]]
    finally:
        setup.close()
    subscribers: list[CountingSubscriber] = []
    try:
        for _ in range(subscriber_count):
            subscribers.append(CountingSubscriber(url, rng.choice(DEMO_USERS)))
        load = Load(url, DEMO_USERS, items, categories, seconds)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        started = time.monotonic()
        sampler = threading.Thread(target=sample_memory, args=(pid, started, stop, samples), daemon=True)
        sampler.start()
        threads = [threading.Thread(target=load.work, args=(seed + n + 1,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join()
        time.sleep(SETTLE_S)
        received = sum(s.received for s in subscribers)
        disconnected = sum(not s.client.connected for s in subscribers)
    finally:
        for subscriber in subscribers:
            subscriber.close()
    registered = Counter(s.user_id for s in subscribers)
    expected = sum(count * registered[user] for user, count in load.events_by_user.items())
    errors = Counter(load.errors)
    if disconnected:
        errors["subscriber: disconnected"] = disconnected
    if received < expected:
        errors["subscriber: pushes lost"] = expected - received
    return report(load, elapsed, samples, warmup, errors, received, expected, workers, subscriber_count)


def report(load: Load, elapsed: float, samples: list[tuple[float, int]], warmup: float, errors: Counter,
           received: int, expected: int, workers: int, subscriber_count: int) -> dict[str, Any]:
    """The JSON record: throughput, latencies per kind, errors, pushes and memory, with the verdicts."""
    total = sum(len(t) for t in load.timings.values()) + sum(load.errors.values())  # answered or failed
    warm = next(((t, kib) for t, kib in samples if t >= warmup), samples[0])
    growth = (samples[-1][1] - warm[1]) / warm[1]
    return {
        "duration_s": round(elapsed, 1), "workers": workers, "subscribers": subscriber_count,
        "requests": total, "throughput_rps": round(total / elapsed, 1),
        "latency_ms": {row: summarize(t, None) for row, t in sorted(load.timings.items())},
        "errors": dict(errors), "error_count": sum(errors.values()),
        "pushes": {"received": received, "expected": expected},
        "rss_kib": {"start": samples[0][1], "warm": warm[1], "warm_at_s": warm[0], "end": samples[-1][1],
                    "max": max(kib for _, kib in samples), "growth_after_warmup": round(growth, 4),
                    "samples": samples},
        "pass": {"zero_errors": not errors, "rss_growth_under_10_percent": growth < MAX_GROWTH},
    }


def print_report(url: str, pid: int, record: dict[str, Any]) -> None:
    print(f"{url} (pid {pid}): {record['duration_s']} s, {record['workers']} workers, "
          f"{record['subscribers']} Socket.IO subscribers")
    print(f"throughput: {record['throughput_rps']} req/s ({record['requests']} requests)")
    rows = [[row, s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]] for row, s in record["latency_ms"].items()]
    print(format_table(["request", "n", "p50 ms", "p99 ms", "max ms"], rows))
    print(f"errors: {record['error_count']}" + "".join(f"\n  {what}: {n}" for what, n in record["errors"].items()))
    if any("HTTP 429" in what for what in record["errors"]):
        print("  (429: the server rate-limits; start it with RATE_LIMIT= for a soak)")
    print(f"pushes: {record['pushes']['received']} received of {record['pushes']['expected']} expected")
    rss, mib = record["rss_kib"], lambda kib: f"{kib / 1024:.1f} MiB"
    print(f"server RSS: start {mib(rss['start'])}, after warm-up ({rss['warm_at_s']} s) {mib(rss['warm'])}, "
          f"end {mib(rss['end'])}, max {mib(rss['max'])}; growth after warm-up {rss['growth_after_warmup']:+.1%}")
    checks = record["pass"]
    print(f"zero errors: {verdict(checks['zero_errors'])}; "
          f"RSS growth after warm-up < {MAX_GROWTH:.0%}: {verdict(checks['rss_growth_under_10_percent'])}")


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], "soak")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--subscribers", type=int, default=50, help="Socket.IO clients, each a random demo user")
    parser.add_argument("--workers", type=int, default=4, help="load threads, one keep-alive connection each")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the RSS growth baseline")
    parser.add_argument("--server-pid", type=int, help="the server's pid (default: whoever listens on --url's port)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.workers < 1 or args.subscribers < 0:
        parser.error("--duration must be positive, --workers at least 1, --subscribers not negative")
    try:
        port = urlsplit(args.url).port or 80
        pid = args.server_pid or listening_pid(port)
        record = run(args.url, pid, args.duration, args.workers, args.subscribers, args.warmup, args.seed)
    except BenchError as error:
        return report_error(error)
    print_report(args.url, pid, record)
    write_results(args.out, {"url": args.url, "server_pid": pid, "warmup_s": args.warmup, **record})
    return 0 if all(record["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
