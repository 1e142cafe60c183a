"""ANN retrieval at scale: the factor index's recall against exact scoring, its build time and memory,
and uncached GET /recommendations on a live server that serves from it.

    python bench/scale.py generate --items 1000000 ...     # a store with a large catalog
    ANN_MIN_ITEMS=100000 python main.py train              # writes the artifact with the indexes
    RETRAIN_INTERVAL_SECONDS=0 python main.py serve --port 5099 &
    python bench/ann.py --model-dir instance/models --url http://127.0.0.1:5099

- recall@100: for sampled users, the share of the exact top 100 by ALS score (every item's factors times
  the user's vector, in numpy) that the index returns among its 100 nearest.
- the index: build seconds (the train job's, from the manifest), size on disk, and the RSS it adds when
  loaded into a process.
- GET /recommendations: one keep-alive client asks for distinct users' lists in turn, so every answer is
  computed (`source` says so; cached ones are not counted), for --duration seconds. With --exact-url (a
  server on the same store and artifact with ANN_MIN_ITEMS above the catalog: every item scored), each
  user is asked of both in turn, and the table gives both and their ratio from the one run.
- `--compare N`: hnswlib against faiss (HNSW with inner product, and IVF) on N of the artifact's item
  factors, same queries: what chose the library (recommenders/retrieval.py).
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (WARMUP_ITERATIONS, BenchError, KeepAliveClient, bench_parser, format_table, loopback_url,  # noqa: E402
                     machine_info, report_error, summarize, write_results)

from recommenders.artifacts import COMPONENTS, RETRIEVAL, newest_artifact  # noqa: E402
from recommenders.persistence import load_arrays  # noqa: E402
from recommenders.retrieval import BUILD_EF, LINKS, NORM_HEAD, SEARCH_EF_PER_RESULT, FactorIndex  # noqa: E402

TOP = 100


def exact_top(factors: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Each vector's TOP items by inner product over every item, in blocks (a 1M x 64 product per user)."""
    return np.vstack([np.argpartition(-(factors @ vector), TOP)[:TOP] for vector in vectors])


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([np.isin(e, f).mean() for f, e in zip(found, exact)]))


def timed_queries(search, vectors: np.ndarray) -> tuple[np.ndarray, dict]:
    """Every vector's result, and the query latency summary."""
    found, times = [], []
    for vector in vectors:
        started = time.perf_counter()
        found.append(search(vector))
        times.append((time.perf_counter() - started) * 1000)
    return np.vstack(found), summarize(times, None)


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2 ** 20


def index_figures(artifact_path: Path, factors: np.ndarray, vectors: np.ndarray, manifest: dict) -> dict:
    before = rss_mib()
    index = FactorIndex.load(artifact_path / RETRIEVAL, factors)
    loaded = rss_mib()
    exact = exact_top(factors, vectors)
    found, latency = timed_queries(lambda vector: index.nearest(vector, TOP), vectors)
    files = sum(path.stat().st_size for path in (artifact_path / RETRIEVAL).iterdir())
    return {"items": int(len(factors)), "indexed": index.size, "users_sampled": int(len(vectors)),
            f"recall@{TOP}": round(recall(found, exact), 4), "query": latency,
            "build_seconds": manifest.get("component_seconds", {}).get("retrieval"),
            "index_files_mib": round(files / 2 ** 20, 1), "factor_index_rss_mib": round(loaded - before, 1),
            "params": {"M": LINKS, "ef_construction": BUILD_EF, "ef_search": SEARCH_EF_PER_RESULT * TOP, "norm_head": NORM_HEAD}}


def compare_libraries(factors: np.ndarray, vectors: np.ndarray, n: int) -> list[dict]:
    """hnswlib and faiss on the first n items' factors, with the same HNSW parameters, one query thread."""
    import faiss
    import hnswlib

    sample = np.ascontiguousarray(factors[:n], dtype=np.float32)
    exact = exact_top(sample, vectors)
    rows = []

    def measure(name: str, build, search) -> None:
        started = time.perf_counter()
        build()
        built = time.perf_counter() - started
        found, latency = timed_queries(search, vectors)
        rows.append({"library": name, "items": n, "build_seconds": round(built, 1),
                     f"recall@{TOP}": round(recall(found, exact), 4), "query": latency})
        print(f"  {name}: build {built:.1f} s, recall@{TOP} {rows[-1][f'recall@{TOP}']}, p99 {latency['p99_ms']} ms")

    hnsw = hnswlib.Index(space="ip", dim=sample.shape[1])
    hnsw.init_index(max_elements=n, M=LINKS, ef_construction=BUILD_EF, random_seed=1)

    def hnsw_search(vector):
        return hnsw.knn_query(vector[None, :].astype(np.float32), k=TOP)[0][0]

    measure("hnswlib HNSW", lambda: (hnsw.add_items(sample, np.arange(n)), hnsw.set_ef(SEARCH_EF_PER_RESULT * TOP)), hnsw_search)
    faiss.omp_set_num_threads(1)
    graph = faiss.IndexHNSWFlat(sample.shape[1], LINKS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction, graph.hnsw.efSearch = BUILD_EF, SEARCH_EF_PER_RESULT * TOP
    measure("faiss HNSW", lambda: graph.add(sample), lambda vector: graph.search(vector[None, :], TOP)[1][0])
    lists = max(16, int(4 * np.sqrt(n)))
    inverted = faiss.IndexIVFFlat(faiss.IndexFlatIP(sample.shape[1]), sample.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    inverted.nprobe = max(1, lists // 16)
    measure(f"faiss IVF ({lists} lists, nprobe {inverted.nprobe})",
            lambda: (inverted.train(sample[np.random.default_rng(0).permutation(n)[:50 * lists]]), inverted.add(sample)),
            lambda vector: inverted.search(vector[None, :], TOP)[1][0])
    return rows


def serve_figures(urls: dict[str, str], user_ids: list[str], duration: float) -> dict:
    """Uncached GET /recommendations over distinct users for `duration` seconds, each user asked of every
    server in `urls` (name -> URL) in turn, so they share the machine's moments alike."""
    clients = {name: KeepAliveClient(url) for name, url in urls.items()}
    for user_id in user_ids[:WARMUP_ITERATIONS]:  # a fresh server's first answers build its memos: not counted
        for client in clients.values():
            client.request("GET", f"/recommendations/{user_id}?count=10")
    user_ids = user_ids[WARMUP_ITERATIONS:]
    client_ms = {name: [] for name in urls}
    server_ms = {name: [] for name in urls}
    overlap, cached = [], 0
    deadline = time.monotonic() + duration
    for user_id in user_ids:
        if time.monotonic() > deadline:
            break
        lists = {}
        for name, client in clients.items():
            status, answer, elapsed = client.request("GET", f"/recommendations/{user_id}?count=10")
            if status != 200:
                raise BenchError(f"GET /recommendations/{user_id} answered {status}: {answer}")
            if answer.get("source") != "computed":
                cached += 1
                continue
            client_ms[name].append(elapsed)
            server_ms[name].append(float(answer["response_time_ms"]))
            lists[name] = {r["item"] for r in answer["recommendations"]}
        if len(lists) == 2 and all(lists.values()):
            first, second = lists.values()
            overlap.append(len(first & second) / max(len(first), 1))
    figures = {name: {"client": summarize(client_ms[name], 10.0), "server": summarize(server_ms[name], 10.0)}
               for name in urls}
    figures["cached_skipped"] = cached
    if overlap:
        figures["top10_overlap"] = round(float(np.mean(overlap)), 4)
    return figures


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0], "ann")
    parser.add_argument("--model-dir", type=Path, required=True, help="MODEL_DIR of the server (its newest artifact)")
    parser.add_argument("--users", type=int, default=500, help="users sampled for recall (and asked for lists)")
    parser.add_argument("--seed", type=int, default=0, help="of the user sample: another seed, other users (uncached)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of GET /recommendations")
    parser.add_argument("--compare", type=int, default=0, help="also compare the libraries on this many items")
    parser.add_argument("--exact-url", type=loopback_url, help="a server on the same artifact scoring every item")
    parser.add_argument("--no-serve", action="store_true", help="only the index figures (no server needed)")
    args = parser.parse_args()
    artifact = newest_artifact(args.model_dir)
    if artifact is None or not (artifact.path / RETRIEVAL).is_dir():
        print(f"No artifact with ANN indexes in {args.model_dir}: train with ANN_MIN_ITEMS at or under the catalog size.")
        return 1
    als = load_arrays(artifact.path / COMPONENTS / "als" / "state.npz")
    factors, solved = als["item_factors"], np.flatnonzero(als["solved"])
    rng = np.random.default_rng(args.seed)
    sampled = rng.choice(solved, size=min(args.users, len(solved)), replace=False)
    record = {"machine": machine_info(), "artifact": artifact.version,
              "index": index_figures(artifact.path, factors, als["user_factors"][sampled], artifact.manifest)}
    index = record["index"]
    print(f"{index['items']:,} items: recall@{TOP} {index[f'recall@{TOP}']}, query p50 {index['query']['p50_ms']} / "
          f"p99 {index['query']['p99_ms']} ms; built in {index['build_seconds']} s; {index['index_files_mib']} MiB "
          f"on disk, {index['factor_index_rss_mib']} MiB of RSS (factor index)")
    if args.compare:
        record["libraries"] = compare_libraries(factors, als["user_factors"][sampled], min(args.compare, len(factors)))
    if not args.no_serve:
        user_ids = load_arrays(artifact.path / "state.npz", only={"user_ids"})["user_ids"]
        users = [user_ids[i] for i in rng.permutation(sampled)]
        try:
            urls = {"ann": args.url, **({"exact": args.exact_url} if args.exact_url else {})}
            record["recommendations"] = served = serve_figures(urls, users, args.duration)
        except BenchError as error:
            return report_error(error)
        rows = [[f"{name} ({side})", served[name][side]["n"], served[name][side]["p50_ms"],
                 served[name][side]["p99_ms"], served[name][side]["max_ms"]]
                for name in urls for side in ("client", "server")]
        if args.exact_url:
            ratio = {f: round(served["exact"]["client"][f] / served["ann"]["client"][f], 2) for f in ("p50_ms", "p99_ms")}
            served["exact_over_ann"] = ratio
            rows.append(["exact / ann (client)", "", ratio["p50_ms"], ratio["p99_ms"], ""])
        print(format_table(["GET /recommendations, uncached", "n", "p50 ms", "p99 ms", "max ms"], rows))
        if "top10_overlap" in served:
            print(f"top-10 overlap, retrieved against exact: {served['top10_overlap']}")
    write_results(args.out, record)
    print(json.dumps({"written": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
