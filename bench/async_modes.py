"""The measurement behind ASYNC_MODE: the same app under gevent, eventlet and threading, same load.

Each candidate serves `web.create_app` (with its background jobs) on a free loopback port, with its
own temporary SQLite database seeded with the demo data and one BLAS thread:
  gevent     `python main.py serve`: gevent's pywsgi, the production path
  eventlet   eventlet.wsgi after eventlet.monkey_patch()   (skipped unless `pip install eventlet`)
  threading  gunicorn -k gthread --threads 32 -w 1          (skipped unless `pip install gunicorn`)
and gets the loads of bench/http_throughput.py (wrk on a cached GET and on /health/live) and
bench/realtime.py (POST /event to Socket.IO push). Neither eventlet nor gunicorn belongs in
requirements.txt: install them only to run this bench.

    python bench/async_modes.py [--duration 10] [--events 500] [--only gevent,threading]
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

import http_throughput
import realtime
from _common import BenchError, bench_parser, format_table, report_error, verdict, write_results

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # for main.ServerProcess: the production launcher and its health wait

from main import ServerProcess, ServerStartError  # noqa: E402

GUNICORN_THREADS = 32  # one per wrk connection


@dataclass(frozen=True)
class Variant:
    """One candidate: which library it needs (None: production's own) and how to start it on a port."""

    name: str
    server: str
    requires: str | None
    command: Callable[[int], list[str]] | None  # None: `python main.py serve`, exactly as production


VARIANTS = (
    Variant("gevent", "gevent pywsgi (main.py serve)", None, None),
    Variant("eventlet", "eventlet.wsgi", "eventlet",
            lambda port: [sys.executable, "-m", "bench._serve_variant", "eventlet", str(port)]),
    Variant("threading", f"gunicorn gthread x{GUNICORN_THREADS}", "gunicorn",
            lambda port: [sys.executable, "-m", "gunicorn", "-k", "gthread", "--threads", str(GUNICORN_THREADS),
                          "-w", "1", "-b", f"127.0.0.1:{port}", "--backlog", "1024", "--graceful-timeout", "5",
                          "--log-level", "warning", "--no-control-socket", "bench._serve_variant:threading_app()"]),
)


class VariantServer(ServerProcess):
    """A server started by its own command from the project root; start-up wait and stop as production's."""

    def __init__(self, command: list[str], port: int, env: dict[str, str], log: TextIO) -> None:
        super().__init__(port, "127.0.0.1", env=env, stdout=log, stderr=subprocess.STDOUT)
        self._command = command

    def command(self) -> list[str]:
        return self._command


def free_port() -> int:
    """A port nothing listens on now, so each mode starts clean and none meets a server left running."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(async_mode: str, database: Path) -> dict[str, str]:
    """The environment production gives the server, on a database of this run's own and no Redis."""
    env = {key: value for key, value in os.environ.items() if key not in ("REDIS_URL", "LOG_REQUESTS")}
    env.update(ASYNC_MODE=async_mode, DATABASE_URL=f"sqlite:///{database}", LOAD_DEMO_DATA="1", HOST="127.0.0.1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


def library_version(variant: Variant) -> str:
    return importlib.metadata.version(variant.requires or "gevent")


def measure_variant(variant: Variant, workdir: Path, duration: int, events: int, subscribers: int) -> dict[str, Any]:
    """Start the variant's server, run both loads against it, stop it; the figures or why there are none."""
    if variant.requires and importlib.util.find_spec(variant.requires) is None:
        return {"server": variant.server, "status": "skipped",
                "note": f"{variant.requires} is not installed (pip install {variant.requires}, for this bench only)"}
    port = free_port()
    env = server_env(variant.name, workdir / f"{variant.name}.db")
    log_path = workdir / f"{variant.name}.log"
    record: dict[str, Any] = {"server": variant.server, "version": library_version(variant)}
    with log_path.open("w") as log:
        server = (ServerProcess(port, "127.0.0.1", env=env, stdout=log, stderr=subprocess.STDOUT)
                  if variant.command is None else VariantServer(variant.command(port), port, env, log))
        try:
            with server:
                print(f"{variant.name}: serving at {server.url}, measuring ...", flush=True)
                record["throughput"] = http_throughput.measure(server.url, duration)
                record["realtime"] = realtime.measure(server.url, subscribers, events)
        except (ServerStartError, BenchError) as error:
            log.flush()
            tail = log_path.read_text().strip().splitlines()[-10:]
            return {**record, "status": "failed", "note": f"{error}", "log_tail": tail}
    record["status"] = "measured"
    record["ok"] = record["throughput"]["ok"] and record["realtime"]["ok"]
    return record


def comparison_table(variants: dict[str, dict[str, Any]]) -> str:
    headers = ["mode", "server", "live req/s", "live p99", "cached req/s", "cached p99", "ratio", "push p50",
               "push p99", "answer p50", "checks"]
    rows = []
    for name, record in variants.items():
        if record["status"] != "measured":
            rows.append([name, record["server"]] + ["-"] * (len(headers) - 3) + [record["status"]])
            continue
        live = record["throughput"]["results"][http_throughput.LIVE_ROW]
        cached = record["throughput"]["results"][http_throughput.CACHED_ROW]
        push = record["realtime"]["results"][realtime.PUSH_ROW]
        answer = record["realtime"]["results"][realtime.ANSWER_ROW]
        rows.append([name, record["server"], round(live["requests_per_s"]), live["p99_ms"],
                     round(cached["requests_per_s"]), cached["p99_ms"],
                     f"{record['throughput']['ratio']:.3f} {verdict(record['throughput']['pass'])}",
                     push["p50_ms"], f"{push['p99_ms']:.2f} {verdict(push['pass'])}", answer["p50_ms"],
                     check_summary(record)])
    return format_table(headers, rows)


def check_summary(record: dict[str, Any]) -> str:
    """'ok', or what went wrong: wrk errors (timeouts are requests starved for 2 s), cache misses, pushes."""
    problems = [f"{sum(record['throughput']['errors'].values())} wrk errors",
                f"{len(record['throughput']['not_cached'])} not cached"]
    problems += [f"{count} {name.replace('_', ' ')}" for name, count in record["realtime"]["checks"].items()]
    return ", ".join(problem for problem in problems if not problem.startswith("0 ")) or "ok"


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], "async_modes", url=False)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk load per endpoint and mode")
    parser.add_argument("--events", type=int, default=500, help="measured realtime events per mode (after warm-up)")
    parser.add_argument("--subscribers", type=int, default=5, help="Socket.IO clients, one user each")
    parser.add_argument("--only", help="comma-separated modes to run (default: all)")
    args = parser.parse_args(argv)
    chosen = [variant for variant in VARIANTS if not args.only or variant.name in args.only.split(",")]
    if not chosen or args.duration < 1 or args.events < 1 or args.subscribers < 1:
        parser.error(f"--only names modes among {', '.join(v.name for v in VARIANTS)}; counts must be at least 1")
    try:
        http_throughput.wrk_path()
    except BenchError as error:
        return report_error(error, hint=None)

    with tempfile.TemporaryDirectory(prefix="bench_async_modes_") as workdir:
        variants = {variant.name: measure_variant(variant, Path(workdir), args.duration, args.events, args.subscribers)
                    for variant in chosen}

    print(f"\nwrk {http_throughput.CONNECTIONS} connections x {args.duration} s per endpoint; "
          f"{args.events} realtime events over {args.subscribers} subscribers; times in ms")
    print(comparison_table(variants))
    for name, record in variants.items():
        if "note" in record:
            print(f"{name}: {record['status']}: {record['note']}")
            print("\n".join(f"    {line}" for line in record.get("log_tail", [])))
    write_results(args.out, {"duration_s": args.duration, "events": args.events, "subscribers": args.subscribers,
                             "variants": variants})
    if any(record["status"] == "failed" for record in variants.values()):
        return 2
    return 0 if all(record.get("ok", True) for record in variants.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
