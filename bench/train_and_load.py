"""The train job and the artifact it writes: fit time and peak memory, artifact size, load time, and
a serving process's memory, on the store DATABASE_URL names (e.g. ML-1M loaded with `main.py load`).

    DATABASE_URL=sqlite:////tmp/ml1m/store.db python bench/train_and_load.py --model-dir /tmp/ml1m/models

Each step runs as the user would run it: `python main.py train` as a child process (its JSON line
gives the fit time and its peak RSS), the artifact is loaded in fresh child processes (the median
of three loads), and `python main.py serve` is started on it and its RSS read once it answers.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bench_parser, format_table, machine_info, write_results  # noqa: E402

from main import MAIN_PATH, ServerProcess  # noqa: E402

LOADS = 3
LOAD_SCRIPT = """
import json, resource, sys, time
from config import load_settings
from recommenders.artifacts import load_engine, newest_artifact
started = time.perf_counter()
engine = load_engine(newest_artifact(load_settings().model_path))
print(json.dumps({"seconds": time.perf_counter() - started,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_json(command: list[str], env: dict[str, str]) -> dict:
    """Run a child that prints one JSON line last; its result."""
    output = subprocess.run(command, env=env, cwd=MAIN_PATH.parent, check=True, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL).stdout
    return json.loads(output.strip().splitlines()[-1])


def memory_mib(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[key].split()[0]) / 1024 for name, key in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0], "train_and_load", url=False)
    parser.add_argument("--model-dir", type=Path, required=True, help="MODEL_DIR for this bench (artifacts go here)")
    parser.add_argument("--port", type=int, default=5091)
    args = parser.parse_args()
    env = {**os.environ, "MODEL_DIR": str(args.model_dir), "OPENBLAS_NUM_THREADS": "1",
           "RETRAIN_INTERVAL_SECONDS": "0"}

    started = time.perf_counter()
    trained = run_json([sys.executable, str(MAIN_PATH), "train"], env)
    train_seconds = time.perf_counter() - started
    artifact = Path(trained["artifact"])
    size_mib = sum(path.stat().st_size for path in artifact.rglob("*") if path.is_file()) / 2**20
    loads = [run_json([sys.executable, "-c", LOAD_SCRIPT], env) for _ in range(LOADS)]
    load_seconds = statistics.median(load["seconds"] for load in loads)

    started = time.perf_counter()
    with ServerProcess(args.port, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        serve_start_seconds = time.perf_counter() - started
        time.sleep(1.0)  # past start-up: the follower and the jobs are running
        serve_memory = memory_mib(server.process.pid)

    record = {"bench": "train_and_load", "machine": machine_info(), "database_url": os.environ.get("DATABASE_URL"),
              "train": {**trained, "process_seconds": round(train_seconds, 2)},
              "artifact_mib": round(size_mib, 1), "load_seconds": round(load_seconds, 3),
              "load_peak_rss_mib": round(statistics.median(load["peak_rss_mib"] for load in loads), 1),
              "fit_to_load_ratio": round(trained["fit_seconds"] / load_seconds, 1),
              "serve_start_seconds": round(serve_start_seconds, 2),
              "serve_rss_mib": round(serve_memory["rss"], 1), "serve_peak_rss_mib": round(serve_memory["peak"], 1)}
    print(format_table(["what", "figure"], [
        ["events / users / items", f"{trained['interactions']:,} / {trained['users']:,} / {trained['items']:,}"],
        ["train job (process, s)", f"{train_seconds:.1f}"],
        ["fit (s)", f"{trained['fit_seconds']:.1f}"],
        ["train peak RSS (MiB)", f"{trained['peak_rss_mib']:.0f}"],
        ["artifact size (MiB)", f"{size_mib:.1f}"],
        [f"artifact load, median of {LOADS} (s)", f"{load_seconds:.3f}"],
        ["fit / load", f"{record['fit_to_load_ratio']:.0f}x"],
        ["serve: start until healthy (s)", f"{serve_start_seconds:.1f}"],
        ["serve RSS after start / peak (MiB)", f"{serve_memory['rss']:.0f} / {serve_memory['peak']:.0f}"],
    ]))
    write_results(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
