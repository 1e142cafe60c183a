"""HTTP throughput under load: cached recommendations against the trivial /health/live, with wrk.

wrk holds 32 keep-alive connections on 2 threads for --duration seconds per endpoint:
  (a) GET /recommendations/<user>?count=10, rotating over a fixed set of users whose answers
      were cached first (a sample answer before and after the load must say source "cache");
  (b) GET /health/live, which touches neither store nor model: the framework's ceiling here.
The ratio (a)/(b) says how much of that ceiling the cached route keeps; the target is >= 0.9
(issue 9). Run it against a live server (needs Debian's wrk: apt-get install -y wrk):

    python main.py serve &
    python bench/http_throughput.py [--url http://127.0.0.1:5000] [--duration 10]

With --redis-url URL it starts its own two servers on one fresh store, `python main.py serve` with
its in-process cache and the same with REDIS_URL=URL (a namespace of its own, deleted afterwards),
both running throughout, and measures them in turn for --rounds rounds. A shared cache must never
make a read slower than a local one: the target is cached req/s with Redis / without >= 0.95, i.e.
1.0 within this machine's noise.

    python bench/http_throughput.py --redis-url redis://127.0.0.1:6379/0 [--duration 10] [--rounds 2]

With --workers N it starts its own servers instead, one after the other on one fresh store:
`python main.py serve` (one worker), then `python main.py serve --workers N` (nginx in front), and
compares their cached throughput; the target is >= 0.85 x N (1.7 for two workers).

    python bench/http_throughput.py --workers 2 [--duration 10]
"""
from __future__ import annotations

import os
import re
import shutil
import uuid
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from _common import (RESULTS_DIR, BenchError, KeepAliveClient, bench_parser, format_table, report_error, verdict,
                     write_results)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # for main.ServerProcess: the production launcher and its health wait

from main import ServerProcess, ServerStartError  # noqa: E402

CONNECTIONS, THREADS = 32, 2
RATIO_TARGET = 0.9
REDIS_RATIO_TARGET = 0.95  # cached req/s with REDIS_URL / without: 1.0 within the noise of one run
WORKERS_TARGET_PER_WORKER = 0.85  # N workers must serve >= 0.85 x N times one worker's cached req/s
CACHED_USERS = ("alice", "bob", "carol", "user_001", "user_002", "user_003", "user_004", "user_005")
CACHED_ROW, LIVE_ROW = "GET /recommendations (cached)", "GET /health/live"
# wrk prints latencies with the unit that fits: 812.00us, 3.21ms, 1.02s, 1.50m, 1.00h.
LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
LATENCY = r"([\d.]+)(us|ms|s|m|h)\b"
# Lua for wrk: each thread cycles through the paths, so the load spreads over several cache entries.
ROTATE_SCRIPT = """local paths = {%s}
local next_path = 0
request = function()
  next_path = next_path %% #paths + 1
  return wrk.format("GET", paths[next_path])
end
"""


def latency_ms(text: str) -> float:
    """'3.21ms' -> 3.21; '812.00us' -> 0.812; '1.02s' -> 1020.0."""
    match = re.fullmatch(LATENCY, text.strip())
    if match is None:
        raise BenchError(f"unreadable wrk latency {text!r}")
    return float(match.group(1)) * LATENCY_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), request count and errors from wrk --latency's text."""
    def find(pattern: str) -> re.Match:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk's output has no line matching {pattern!r}:\n{output}")
        return match

    result: dict[str, Any] = {"requests_per_s": float(find(r"^Requests/sec:\s+([\d.]+)").group(1))}
    for percent in (50, 75, 90, 99):
        result[f"p{percent}_ms"] = round(latency_ms(find(rf"^[ \t]+{percent}%[ \t]+(\S+)").group(1)), 3)
    result["max_ms"] = round(latency_ms(find(rf"^[ \t]+Latency[ \t]+\S+[ \t]+\S+[ \t]+({LATENCY})").group(1)), 3)
    result["requests"] = int(find(r"^[ \t]+(\d+) requests in").group(1))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    result["socket_errors"] = sum(map(int, socket_errors.groups())) if socket_errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return result


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk")
    return path


def run_wrk(url: str, paths: list[str], duration: int) -> dict[str, Any]:
    """One wrk run rotating over `paths`; its parsed figures plus the raw output."""
    lua = ROTATE_SCRIPT % ", ".join(f'"{path}"' for path in paths)
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(lua)
        script.flush()
        command = [wrk_path(), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency",
                   "-s", script.name, url + paths[0]]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if completed.returncode != 0:
        raise BenchError(f"wrk exited with {completed.returncode}: {completed.stderr or completed.stdout}")
    return {**parse_wrk(completed.stdout), "paths": paths, "wrk_output": completed.stdout}


def cached_sources(client: KeepAliveClient, paths: list[str]) -> dict[str, str]:
    """The `source` each path answers with now."""
    return {path: client.expect(200, "GET", path)[0].get("source") for path in paths}


def process_tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds (user + system) of a process and all its descendants, by command name, from /proc."""
    stats: dict[int, tuple[int, str, float]] = {}  # pid -> (parent pid, command, CPU seconds)
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        command, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        stats[int(entry)] = (int(fields[1]), command, (int(fields[11]) + int(fields[12])) / tick)
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    totals: dict[str, float] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        if pid in stats:
            _, command, seconds = stats[pid]
            totals[command] = totals.get(command, 0.0) + seconds
        pending += children.get(pid, [])
    return totals


def cpu_per_request(server_pid: int, run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """`run()` (a wrk run) and the CPU it cost per request, in us: the server's processes by command, and wrk."""
    before, wrk_before = process_tree_cpu(server_pid), os.times()
    figures = run()
    after, wrk_after = process_tree_cpu(server_pid), os.times()
    requests = max(figures["requests"], 1)
    per_request = {command: round(1e6 * (seconds - before.get(command, 0.0)) / requests, 1)
                   for command, seconds in after.items()}
    wrk_seconds = (wrk_after.children_user + wrk_after.children_system
                   - wrk_before.children_user - wrk_before.children_system)
    return figures, {**per_request, "wrk": round(1e6 * wrk_seconds / requests, 1)}


def measure(url: str, duration: int = 10, server_pid: int | None = None) -> dict[str, Any]:
    """Warm the cache, load both endpoints in turn, and compare; also used by bench/async_modes.py.

    With `server_pid`, also the CPU per cached request of that process tree (by command) and of wrk.
    """
    paths = [f"/recommendations/{user}?count=10" for user in CACHED_USERS]
    client = KeepAliveClient(url)
    cpu: dict[str, float] | None = None
    try:
        cached_sources(client, paths)  # fills the cache (a first answer may be computed)
        sources_before = cached_sources(client, paths)
        client.close()  # idle during the load, a server may drop it (gunicorn after 2 s); reopened after
        if server_pid is None:
            cached = run_wrk(url, paths, duration)
        else:
            cached, cpu = cpu_per_request(server_pid, lambda: run_wrk(url, paths, duration))
        rows = {CACHED_ROW: cached, LIVE_ROW: run_wrk(url, ["/health/live"], duration)}
        sources_after = cached_sources(client, paths)
    finally:
        client.close()
    not_cached = sorted({path for sources in (sources_before, sources_after)
                         for path, source in sources.items() if source != "cache"})
    errors = {row: figures["socket_errors"] + figures["non_2xx"] for row, figures in rows.items()}
    ratio = rows[CACHED_ROW]["requests_per_s"] / rows[LIVE_ROW]["requests_per_s"]
    return {"connections": CONNECTIONS, "threads": THREADS, "duration_s": duration, "results": rows,
            "ratio": round(ratio, 3), "ratio_target": RATIO_TARGET, "pass": ratio >= RATIO_TARGET,
            "not_cached": not_cached, "errors": errors, "ok": not not_cached and not any(errors.values()),
            **({} if cpu is None else {"cpu_us_per_cached_request": cpu})}


def throughput_table(record: dict[str, Any]) -> str:
    headers = ["", "req/s", "p50", "p90", "p99", "max", "requests", "errors"]
    rows = [[row, round(figures["requests_per_s"]), figures["p50_ms"], figures["p90_ms"], figures["p99_ms"],
             figures["max_ms"], figures["requests"], record["errors"][row]]
            for row, figures in record["results"].items()]
    return format_table(headers, rows)


class Workers(ServerProcess):
    """`python main.py serve --workers N` on 127.0.0.1: its /health answers once nginx is in front."""

    def __init__(self, count: int, env: dict[str, str], log) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        super().__init__(port, "127.0.0.1", env=env, stdout=log, stderr=subprocess.STDOUT, startup_timeout=300)
        self.count = count

    def command(self) -> list[str]:
        return [*super().command(), "--workers", str(self.count)]


def server_env() -> dict[str, str]:
    """This environment without what would change what the bench's own servers do."""
    return {key: value for key, value in os.environ.items()
            if key not in ("HOST", "PORT", "REDIS_URL", "REDIS_NAMESPACE", "LOG_REQUESTS", "RATE_LIMIT")}


def start_server(server: Workers, log, log_path: Path, name: str) -> None:
    try:
        server.start()
    except ServerStartError as error:
        log.flush()
        tail = "\n".join(log_path.read_text().strip().splitlines()[-10:])
        raise BenchError(f"{name} did not start: {error}\n{tail}") from error


def measure_redis(redis_url: str, duration: int, rounds: int) -> dict[str, Any]:
    """`serve` without and with REDIS_URL on one fresh demo store, both up throughout, measured in turn
    (`rounds` times each, so a drift in the machine's load hits both alike); the cached req/s ratio."""
    import redis

    namespace = f"bench-http-{uuid.uuid4().hex[:12]}"
    env = {**server_env(), "RETRAIN_INTERVAL_SECONDS": "0"}
    variants = {"local cache": {}, "Redis cache": {"REDIS_URL": redis_url, "REDIS_NAMESPACE": namespace}}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    servers: dict[str, Workers] = {}
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as error:
        raise BenchError(f"Redis at {redis_url} does not answer: {error}") from error
    with tempfile.TemporaryDirectory(prefix="bench_http_redis_") as workdir:
        env.update(DATABASE_URL=f"sqlite:///{workdir}/server.db", MODEL_DIR=f"{workdir}/models", LOAD_DEMO_DATA="1")
        logs = []
        try:
            for name, extra in variants.items():  # the first seeds the store and trains; the second loads that
                log_path = Path(workdir) / f"{name.split()[0].lower()}.log"
                logs.append(log_path.open("w"))
                servers[name] = Workers(1, {**env, **extra}, logs[-1])
                start_server(servers[name], logs[-1], log_path, f"serve ({name})")
            for round_number in range(1, rounds + 1):  # in turn; the local one first in odd rounds, last in even
                order = list(servers.items())
                for name, server in order if round_number % 2 else reversed(order):
                    print(f"round {round_number}/{rounds}: serve with the {name} at {server.url}: measuring ...",
                          flush=True)
                    runs[name].append(measure(server.url, duration))
        finally:
            for server in servers.values():
                server.stop(timeout=60)
            for log in logs:
                log.close()
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.delete(*keys)
    cached = {name: [run["results"][CACHED_ROW]["requests_per_s"] for run in measured] for name, measured in runs.items()}
    ratio = sum(cached["Redis cache"]) / sum(cached["local cache"])
    return {"redis_url": redis_url, "rounds": rounds, "runs": runs,
            "redis_ratio": round(ratio, 3), "redis_ratio_target": REDIS_RATIO_TARGET,
            "redis_ratio_per_round": [round(redis / local, 3)
                                      for redis, local in zip(cached["Redis cache"], cached["local cache"])],
            "pass": ratio >= REDIS_RATIO_TARGET and all(run["pass"] for measured in runs.values() for run in measured),
            "ok": all(run["ok"] for measured in runs.values() for run in measured)}


def redis_table(record: dict[str, Any]) -> str:
    headers = ["", "req/s", "p50", "p90", "p99", "max", "requests", "errors", "cached / live"]
    rows = [[f"{name}, round {number}: {row}", round(figures["requests_per_s"]), figures["p50_ms"],
             figures["p90_ms"], figures["p99_ms"], figures["max_ms"], figures["requests"], run["errors"][row],
             f"{run['ratio']:.3f}" if row == CACHED_ROW else ""]
            for number in range(1, record["rounds"] + 1) for name, measured in record["runs"].items()
            for run in [measured[number - 1]] for row, figures in run["results"].items()]
    return format_table(headers, rows)


def main_redis(redis_url: str, duration: int, rounds: int, out: Path) -> int:
    try:
        record = measure_redis(redis_url, duration, rounds)
    except BenchError as error:
        return report_error(error, hint="Is redis-server running at --redis-url?")
    print(f"wrk, {CONNECTIONS} connections on {THREADS} threads, {duration} s per endpoint, server and round, "
          "times in ms")
    print(redis_table(record))
    for name, measured in record["runs"].items():
        print(f"ratio cached / live, {name}: " + ", ".join(f"{run['ratio']:.3f}" for run in measured)
              + f"   target >= {RATIO_TARGET:g}  {verdict(all(run['pass'] for run in measured))}")
    print("cached req/s, Redis cache / local cache, per round: "
          + ", ".join(f"{ratio:.3f}" for ratio in record["redis_ratio_per_round"]))
    print(f"cached req/s, Redis cache / local cache (all rounds): {record['redis_ratio']:.3f}   "
          f"target >= {REDIS_RATIO_TARGET:g}  {verdict(record['redis_ratio'] >= REDIS_RATIO_TARGET)}")
    return finish(out, record)


def finish(out: Path, record: dict[str, Any]) -> int:
    """Say whether the checks held, write the record, and give the exit code."""
    if not record["ok"]:
        print("CHECK FAILED: socket errors, non-2xx answers or uncached answers (see the JSON)")
    write_results(out, record)
    return 0 if record["ok"] and record["pass"] else 1


def measure_workers(count: int, duration: int) -> dict[str, Any]:
    """One worker, then `count` behind nginx, on one fresh demo store: each one's `measure`, and the ratio."""
    env = server_env()
    runs: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_http_workers_") as workdir:
        env.update(DATABASE_URL=f"sqlite:///{workdir}/server.db", MODEL_DIR=f"{workdir}/models", LOAD_DEMO_DATA="1")
        for workers in (1, count):  # the first seeds the store and trains; the second loads that artifact
            log_path = Path(workdir) / f"workers-{workers}.log"
            with log_path.open("w") as log:
                server = Workers(workers, env, log)
                start_server(server, log, log_path, f"serve --workers {workers}")
                try:
                    print(f"serve --workers {workers} at {server.url}: measuring ...", flush=True)
                    runs[workers] = measure(server.url, duration, server.process.pid)
                finally:
                    server.stop(timeout=60)
    cached = {workers: record["results"][CACHED_ROW]["requests_per_s"] for workers, record in runs.items()}
    ratio, target = cached[count] / cached[1], WORKERS_TARGET_PER_WORKER * count
    # What this machine allows, from CPU per request rather than from req/s (which other load moves):
    # one worker serves at most 1 / (its CPU per request) a second, with a core of its own; N workers
    # at most cores / (the CPU a request costs in all: workers, nginx, and wrk, which shares the cores).
    cores = min(count, os.cpu_count() or 1)
    one_worker = sum(us for command, us in runs[1]["cpu_us_per_cached_request"].items() if command != "wrk")
    ceiling = cores * one_worker / sum(runs[count]["cpu_us_per_cached_request"].values())
    return {"workers": count, "runs": {str(workers): record for workers, record in runs.items()},
            "workers_ratio": round(ratio, 3), "workers_ratio_target": target, "pass": ratio >= target,
            "workers_ratio_ceiling": round(ceiling, 3), "cores": os.cpu_count(),
            "ok": all(record["ok"] for record in runs.values())}


def workers_table(record: dict[str, Any]) -> str:
    headers = ["", "req/s", "p50", "p90", "p99", "max", "requests", "errors"]
    rows = [[f"{workers} worker{'s' if workers != '1' else ''}: {row}", round(figures["requests_per_s"]),
             figures["p50_ms"], figures["p90_ms"], figures["p99_ms"], figures["max_ms"], figures["requests"],
             run["errors"][row]]
            for workers, run in record["runs"].items() for row, figures in run["results"].items()]
    return format_table(headers, rows)


def main_workers(count: int, duration: int, out: Path) -> int:
    try:
        record = measure_workers(count, duration)
    except BenchError as error:
        return report_error(error, hint="Is nginx installed (apt-get install -y nginx)?")
    print(f"wrk, {CONNECTIONS} connections on {THREADS} threads, {duration} s per endpoint and server, times in ms")
    print(workers_table(record))
    for workers, run in record["runs"].items():
        print(f"CPU per cached request, {workers} worker(s), us: "
              + ", ".join(f"{command} {us:g}" for command, us in sorted(run["cpu_us_per_cached_request"].items())))
    print(f"cached req/s, {count} workers / 1 worker: {record['workers_ratio']:.3f}   "
          f"target >= {record['workers_ratio_target']:g}  {verdict(record['pass'])}")
    print(f"the most {count} workers can reach on this machine's {record['cores']} cores, with that CPU per request: "
          f"{record['workers_ratio_ceiling']:.3f} x one worker")
    return finish(out, record)


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], "http_throughput")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per endpoint")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="start `serve` and then `serve --workers N` (ignores --url) and compare them")
    parser.add_argument("--redis-url", metavar="URL",
                        help="start `serve` without and with REDIS_URL=URL (ignores --url) and compare them")
    parser.add_argument("--rounds", type=int, help="measure each server this many times in turn, so a drift in the "
                                                   "machine's load hits every row alike (default 1; 2 with --redis-url)")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1")
    if args.workers is not None and args.workers < 2:
        parser.error("--workers must be at least 2")
    if args.workers and args.redis_url:
        parser.error("--workers and --redis-url are separate runs")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")

    try:
        wrk_path()
    except BenchError as error:
        return report_error(error, hint=None)
    if args.workers:
        # Its own file by default, so a --workers run does not overwrite the single-server figures.
        out = args.out if args.out != RESULTS_DIR / "http_throughput.json" else \
            RESULTS_DIR / f"http_throughput_workers{args.workers}.json"
        return main_workers(args.workers, args.duration, out)
    if args.redis_url:
        out = args.out if args.out != RESULTS_DIR / "http_throughput.json" else RESULTS_DIR / "http_throughput_redis.json"
        return main_redis(args.redis_url, args.duration, args.rounds or 2, out)
    rounds = args.rounds or 1
    try:
        records = [measure(args.url, args.duration) for _ in range(rounds)]
    except BenchError as error:
        return report_error(error)

    print(f"{args.url}: wrk, {CONNECTIONS} connections on {THREADS} threads, {args.duration} s per endpoint"
          + (f" and round ({rounds} rounds, cached and live in turn)" if rounds > 1 else "") + ", times in ms")
    for number, record in enumerate(records, 1):
        if rounds > 1:
            print(f"round {number}: ratio {record['ratio']:.3f}")
        print(throughput_table(record))
        if record["not_cached"]:
            print(f"CHECK FAILED: not answered from the cache: {', '.join(record['not_cached'])}")
        for row, count in record["errors"].items():
            if count:
                print(f"CHECK FAILED: {row}: {count} socket errors or non-2xx answers")
    record = records[0] if rounds == 1 else combined(records)
    print(f"ratio cached / live{' (all rounds)' if rounds > 1 else ''}: {record['ratio']:.3f}   "
          f"target >= {RATIO_TARGET:g}  {verdict(record['pass'])}")
    write_results(args.out, {"url": args.url, **record})
    return 0 if record["ok"] and record["pass"] else 1


def combined(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds' `measure` as one: the ratio of their total requests/s, each round kept as it was."""
    totals = {row: sum(record["results"][row]["requests_per_s"] for record in records) for row in (CACHED_ROW, LIVE_ROW)}
    ratio = totals[CACHED_ROW] / totals[LIVE_ROW]
    return {"rounds": records, "ratio": round(ratio, 3), "ratio_target": RATIO_TARGET, "pass": ratio >= RATIO_TARGET,
            "ok": all(record["ok"] for record in records)}


if __name__ == "__main__":
    sys.exit(main())
