"""Ingest: POST /interactions under load, with durable commits, at concurrency 1, 8 and 32.

wrk posts views, add-to-carts and purchases of random catalog items by random users (a Lua script,
so the client costs little) for --duration seconds per concurrency. Every answer must be 201, and
the store must hold exactly as many new events as there were 201 answers. By default the bench starts
its own `python main.py serve` on SQLite and on PostgreSQL (a database it creates and drops) and
measures both in one run; --url measures a server you started instead.

    python bench/ingest.py [--duration 10] [--concurrency 1,8,32] [--url http://127.0.0.1:5000]
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from _common import (DEFAULT_ADMIN_URL, BenchError, KeepAliveClient, bench_parser, catalog_item_ids, format_table,
                     loopback_url, report_error, scratch_database, verdict, write_results)
from http_throughput import parse_wrk, wrk_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from main import ServerProcess  # noqa: E402

TARGET_EVENTS_PER_S, TARGET_P99_MS, TARGET_CONCURRENCY = 2000.0, 50.0, 32
USERS = 5000
# Lua for wrk: a fresh random event per request (users and items drawn uniformly, event types mixed).
POST_SCRIPT = """local items = {%s}
local kinds = {"view", "view", "view", "add_to_cart", "purchase"}
math.randomseed(%d + os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{"user_id": "ingest-%%d", "item_id": "%%s", "event_type": "%%s"}',
    math.random(%d), items[math.random(#items)], kinds[math.random(#kinds)])
  return wrk.format(nil, "/interactions", nil, body)
end
"""


def stored_events(client: KeepAliveClient) -> int:
    return client.expect(200, "GET", "/stats")[0]["store"]["interactions"]


def run(url: str, concurrency: int, duration: int, items: list[str], seed: int) -> dict[str, Any]:
    """One wrk run at `concurrency` connections; its figures, checked against the store's count."""
    client = KeepAliveClient(url)
    before = stored_events(client)
    lua = POST_SCRIPT % (", ".join(f'"{item}"' for item in items), seed, USERS)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        command = [wrk_path(), f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{duration}s", "--latency",
                   "-s", script.name, url + "/interactions"]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if completed.returncode != 0:
        raise BenchError(f"wrk exited with {completed.returncode}: {completed.stderr or completed.stdout}")
    figures = parse_wrk(completed.stdout)
    stored = stored_events(client) - before
    accepted = figures["requests"] - figures["non_2xx"]
    # wrk stops with up to one request per connection in flight: stored, but its answer never counted.
    return {"concurrency": concurrency, **figures, "events_stored": stored,
            "stored_matches_accepted": accepted <= stored <= accepted + concurrency, "wrk_output": completed.stdout}


@contextmanager
def own_servers(workdir: Path, admin_url: str, port: int) -> Iterator[dict[str, str]]:
    """A SQLite server and a PostgreSQL server (on a database of its own), each on the demo catalog."""
    env = {**os.environ, "RETRAIN_INTERVAL_SECONDS": "0", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("REDIS_URL", None)
    with scratch_database(admin_url, "ingest") as postgres:
        servers = {"sqlite": ServerProcess(port, env={**env, "DATABASE_URL": f"sqlite:///{workdir / 'ingest.db'}",
                                                       "MODEL_DIR": str(workdir / "sqlite-models")},
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                   "postgresql": ServerProcess(port + 1, env={**env, "DATABASE_URL": postgres,
                                                              "MODEL_DIR": str(workdir / "pg-models")},
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
        try:
            for server in servers.values():
                server.start()
            yield {backend: server.url for backend, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()


def measure(urls: dict[str, str], levels: list[int], duration: int, seed: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for backend, url in urls.items():
        items = random.Random(seed).sample(catalog_item_ids(KeepAliveClient(url)), 50)
        results[backend] = [run(url, level, duration, items, seed) for level in levels]
    return results


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0], "ingest", url=False)
    parser.add_argument("--url", type=loopback_url, help="measure this server only (default: start SQLite and PostgreSQL ones)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32", help="connection counts, comma-separated")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL, help="PostgreSQL database to create the bench's database from")
    parser.add_argument("--port", type=int, default=5093)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]
    try:
        if args.url:
            results = measure({"given": args.url}, levels, args.duration, args.seed)
        else:
            with tempfile.TemporaryDirectory(prefix="ingest-") as workdir, \
                    own_servers(Path(workdir), args.admin_url, args.port) as urls:
                results = measure(urls, levels, args.duration, args.seed)
    except BenchError as error:
        return report_error(error)

    rows, passed = [], True
    for backend, runs in results.items():
        for figures in runs:
            meets = None
            if figures["concurrency"] == TARGET_CONCURRENCY:
                meets = (figures["requests_per_s"] >= TARGET_EVENTS_PER_S and figures["p99_ms"] <= TARGET_P99_MS
                         and figures["non_2xx"] == 0 and figures["stored_matches_accepted"])
                passed = passed and meets
            rows.append([backend, figures["concurrency"], f"{figures['requests_per_s']:,.0f}", figures["p50_ms"],
                         figures["p99_ms"], figures["requests"], figures["non_2xx"] + figures["socket_errors"],
                         "yes" if figures["stored_matches_accepted"] else "NO", verdict(meets)])
    print(f"\nPOST /interactions, {args.duration} s per level; target at concurrency {TARGET_CONCURRENCY}: "
          f">= {TARGET_EVENTS_PER_S:,.0f} events/s, p99 <= {TARGET_P99_MS:g} ms")
    print(format_table(["backend", "connections", "events/s", "p50 ms", "p99 ms", "requests", "errors",
                        "stored ~ 201s", "result"], rows))
    write_results(args.out, {"bench": "ingest", "duration_s": args.duration, "results": results,
                             "target": {"concurrency": TARGET_CONCURRENCY, "events_per_s": TARGET_EVENTS_PER_S,
                                        "p99_ms": TARGET_P99_MS}, "pass": passed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
