"""What every bench shares: loopback-only URLs, HTTP calls, percentiles, the table and the JSON record.

The benches are scripts (`python bench/<name>.py`), so they import this module by its bare name.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import ipaddress
import json
import math
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"  # trust auth, as on CI
RESULTS_DIR = Path(__file__).resolve().parent / "results"
WARMUP_ITERATIONS = 50  # run before every latency measurement, never counted
UNREACHABLE_HINT = "Is the server running? Start it with `python main.py serve`."


class BenchError(RuntimeError):
    """The server is unreachable or answered something the bench cannot go on with."""


def loopback_url(value: str) -> str:
    """argparse type: the benches send load, so they accept only a server on this machine."""
    host = urlsplit(value).hostname or ""
    try:
        is_loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise argparse.ArgumentTypeError(f"{value!r} is not on this machine: use 127.0.0.1, localhost or [::1]")
    return value.rstrip("/")


def bench_parser(description: str, name: str, url: bool = True) -> argparse.ArgumentParser:
    """A parser with --out, and --url (loopback only) unless the bench starts its own servers."""
    parser = argparse.ArgumentParser(description=description)
    if url:
        parser.add_argument("--url", type=loopback_url, default=DEFAULT_URL,
                            help="server to measure (this machine only)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="where to write the JSON results")
    return parser


class KeepAliveClient:
    """One persistent HTTP connection, so the figures hold no TCP handshakes.

    Plain http.client rather than requests: on a cached GET of ~0.4 ms, requests adds ~0.5 ms at
    p50 and ~1.8 ms at p99 of its own client-side work, which would swamp what the benches measure.
    It never reads proxy variables, so bench traffic stays on loopback.
    """

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.connection = connection_class(parts.hostname, parts.port, timeout=timeout)
        self.url = url

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict, float]:
        """(status, JSON answer, elapsed ms) for one request, timed from send to the last byte."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        start = time.perf_counter()
        try:
            self.connection.request(method, path, body=payload, headers=headers)
            response = self.connection.getresponse()
            raw = response.read()
        except OSError as error:  # refused, reset, timed out; http.client's errors are OSErrors too
            self.connection.close()  # reconnect on the next request instead of reusing a broken one
            raise BenchError(f"{method} {path} failed against {self.url}: {error}") from error
        elapsed_ms = (time.perf_counter() - start) * 1000
        try:
            answer = json.loads(raw)
        except ValueError:
            raise BenchError(f"{method} {path} answered {response.status} without JSON: {raw[:200]!r}") from None
        return response.status, answer, elapsed_ms

    def expect(self, status: int | tuple[int, ...], method: str, path: str, body: dict | None = None) -> tuple[dict, float]:
        """Like `request`, but a status outside `status` is an error."""
        expected = status if isinstance(status, tuple) else (status,)
        got, answer, elapsed_ms = self.request(method, path, body)
        if got not in expected:
            raise BenchError(f"{method} {path} answered {got}, expected {expected}: {answer}")
        return answer, elapsed_ms

    def close(self) -> None:
        self.connection.close()


def catalog_item_ids(client: KeepAliveClient) -> list[str]:
    """Up to 1000 item ids from GET /items; an empty catalog is an error (the benches rate items)."""
    answer, _ = client.expect(200, "GET", "/items?limit=1000")
    items = [item["item_id"] for item in answer["items"]]
    if not items:
        raise BenchError("the server's catalog is empty; start it with the demo data (LOAD_DEMO_DATA=1)")
    return items


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (no interpolation: a value that was measured)."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summarize(samples: list[float], target_p99_ms: float | None) -> dict[str, Any]:
    """n, p50/p90/p99/max in ms and, when the row has a target, whether p99 meets it."""
    ordered = sorted(samples)
    summary: dict[str, Any] = {"n": len(ordered)}
    for name, fraction in (("p50_ms", 0.50), ("p90_ms", 0.90), ("p99_ms", 0.99)):
        summary[name] = round(percentile(ordered, fraction), 3)
    summary["max_ms"] = round(ordered[-1], 3)
    summary["target_p99_ms"] = target_p99_ms
    summary["pass"] = None if target_p99_ms is None else summary["p99_ms"] < target_p99_ms
    return summary


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else "PASS" if passed else "MISS"


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned; floats with 2 decimals."""
    cells = [headers] + [[f"{cell:.2f}" if isinstance(cell, float) else str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                  for column, (cell, width) in enumerate(zip(row, widths)))
        for row in cells
    )


def latency_table(results: dict[str, dict[str, Any]]) -> str:
    """The rows of `summarize` results, with their p99 target and PASS/MISS."""
    headers = ["", "n", "p50", "p90", "p99", "max", "target (p99)", "result"]
    rows = [[row, summary["n"], summary["p50_ms"], summary["p90_ms"], summary["p99_ms"], summary["max_ms"],
             "-" if summary["target_p99_ms"] is None else f"< {summary['target_p99_ms']:g} ms", verdict(summary["pass"])]
            for row, summary in results.items()]
    return format_table(headers, rows)


def machine_info() -> dict[str, Any]:
    """What the figures depend on: a 2-core run is not comparable with an 8-core one."""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(out: Path, record: dict[str, Any]) -> None:
    """Write `record` plus the machine info as JSON to `out` and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**record, "machine": machine_info()}, indent=2) + "\n")
    print(f"wrote {out}")


def report_error(error: BenchError, hint: str | None = UNREACHABLE_HINT) -> int:
    """Print why the bench could not run (and the usual remedy); the exit code for it (2)."""
    print(f"error: {error}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
    return 2


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A PostgreSQL database of the bench's own on admin_url's server, dropped on exit; its URL.
    Never the shared tables: other sessions use the same server."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
