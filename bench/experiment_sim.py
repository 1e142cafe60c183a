"""Simulated shoppers against live experiments: does an A/B test name the right winner, and does
Thompson sampling find the best variant?

ML-1M (the evaluation's protocol: a per-user random 80/20 split of the distinct (user, item) pairs)
is cut in two. The training part goes into a fresh SQLite store, and a `python main.py serve` started
by the bench trains on it. The held-out positives are each user's true taste: a simulated user who is
shown a list clicks (a `view` with the list's `recommendation_id`) on the first item of it that is
one of their held-out positives, and on nothing otherwise.

1. **A/B**, `allocation: fixed`, `popular` (control) against `hybrid`, half each. Every test user asks
   once, `GET /recommendations/<user>?count=10`. The server's result (`GET /experiments/<id>`) must
   count what the bench counted, name hybrid the winner at p < 0.05, and each variant's CTR must agree
   with the offline hit rate @10 of its recommender over the same users (an engine fitted in this
   process on the same training data, before any click): the offline figure inside the CTR's 95%
   interval.
2. **Thompson**, `allocation: thompson` over `popular`, `content_based` and `hybrid` on clicks. Users
   drawn at random ask for lists until --impressions (20,000). The best variant (by offline hit rate)
   must get at least 80% of a 1,000-impression window's traffic before the end. The share of each
   variant per window is printed and drawn (results/experiment_sim.png).

    python bench/experiment_sim.py [--data ../shared/data/ml-1m] [--impressions 20000] [--users N]
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from _common import BenchError, KeepAliveClient, bench_parser, format_table, report_error, verdict, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from main import ServerProcess  # noqa: E402
from models.evaluate import index_dataset  # noqa: E402
from models.split import SEED, TEST_FRACTION, Pairs, pair_keys  # noqa: E402
from preprocess.loaders import load_dataset  # noqa: E402
from recommenders.engine import Engine  # noqa: E402
from storage.store import Store  # noqa: E402

K = 10
AB_VARIANTS = ("popular", "hybrid")  # control first
BANDIT_VARIANTS = ("popular", "content_based", "hybrid")
WINDOW = 1_000  # impressions per point of the traffic-share curve
BEST_SHARE_TARGET, SIGNIFICANCE = 0.8, 0.05
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"


@dataclass
class Simulation:
    """The training split (in a store) and each test user's held-out positives, by id."""

    store_url: str
    taste: dict[str, set[str]]  # user id -> held-out positive item ids
    engine: Engine  # fitted on the training split in this process: the offline reference

    def offline_hit(self, user_id: str, case: str) -> bool:
        """Whether the recommender's top K for this user holds one of their held-out positives."""
        shown = self.engine.recommend(user_id, K, case=case)
        return any(rec.item in self.taste[user_id] for rec in shown)


def prepare(data_dir: Path, workdir: Path, max_users: int | None) -> Simulation:
    """Split ML-1M, write the training part into a new SQLite store, fit the offline reference."""
    dataset = load_dataset("ml-1m", data_dir, progress=True)
    index = index_dataset(dataset.items, dataset.interactions)
    train, test = Pairs.from_events(index.events, index.n_users, index.n_items).holdout(TEST_FRACTION, SEED)
    in_train = np.isin(pair_keys(index.events, index.n_items), pair_keys(train.frame, index.n_items))
    train_events = dataset.interactions[in_train]

    held = test.frame[test.frame["positive"]]
    users = index.user_ids[held["user"].to_numpy()]
    items = np.asarray([item.item_id for item in index.items])[held["item"].to_numpy()]
    taste: dict[str, set[str]] = {}
    for user_id, item_id in zip(users.tolist(), items.tolist()):
        taste.setdefault(user_id, set()).add(item_id)
    if max_users is not None and max_users < len(taste):
        kept = random.Random(SEED).sample(sorted(taste), max_users)
        taste = {user_id: taste[user_id] for user_id in kept}

    store_url = f"sqlite:///{workdir / 'store.db'}"
    store = Store(store_url)
    try:
        store.upsert_items(dataset.items)
        store.add_users(dataset.interactions["user_id"].unique().tolist())
        records = list(replace(dataset, interactions=train_events).records())
        store.append_interactions(records)
        store.record_checkpoint(store.last_seq(), 0.0)  # the server fits these in one go at start
        engine = Engine.build(dataset.items, store.all_user_ids(), records)
    finally:
        store.close()
    return Simulation(store_url, taste, engine)


def serve(sim: Simulation, workdir: Path, port: int) -> ServerProcess:
    env = {**os.environ, "DATABASE_URL": sim.store_url, "MODEL_DIR": str(workdir / "models"),
           "LOAD_DEMO_DATA": "false", "RETRAIN_INTERVAL_SECONDS": "0", "OPENBLAS_NUM_THREADS": "1",
           "RATE_LIMIT": "", "BANDIT_REFRESH_SECONDS": "1"}
    env.pop("REDIS_URL", None)
    env.pop("API_KEY", None)
    log = open(workdir / "server.log", "w")
    return ServerProcess(port, env=env, stdout=log, stderr=subprocess.STDOUT, startup_timeout=300).start()


def create_experiment(client: KeepAliveClient, name: str, allocation: str, cases: tuple[str, ...]) -> str:
    share = round(1 / len(cases), 6)
    variants = [{"name": case, "share": share, "case": case} for case in cases]
    variants[-1]["share"] = round(1 - share * (len(cases) - 1), 6)
    created, _ = client.expect(201, "POST", "/experiments",
                               {"name": name, "allocation": allocation, "reward": "click", "variants": variants})
    return created["experiment_id"]


def show_and_click(client: KeepAliveClient, sim: Simulation, user_id: str, clicked: set[tuple[str, str]]) -> tuple[str, bool]:
    """One impression: the user's list, and a click on its first held-out positive; (variant, clicked)."""
    answer, _ = client.expect(200, "GET", f"/recommendations/{user_id}?count={K}")
    hit = next((rec["item"] for rec in answer["recommendations"]
                if rec["item"] in sim.taste[user_id] and (user_id, rec["item"]) not in clicked), None)
    if hit is not None:
        clicked.add((user_id, hit))
        client.expect(201, "POST", "/interactions", {"user_id": user_id, "item_id": hit, "event_type": "view",
                                                     "recommendation_id": answer["recommendation_id"]})
    return answer["variant"], hit is not None


def run_ab(client: KeepAliveClient, sim: Simulation) -> dict[str, Any]:
    """Every test user once; the server's figures against the bench's counts and the offline hit rates."""
    experiment = create_experiment(client, "sim-popular-vs-hybrid", "fixed", AB_VARIANTS)
    counted = {case: {"impressions": 0, "clicks": 0, "offline_hits": 0} for case in AB_VARIANTS}
    clicked: set[tuple[str, str]] = set()
    for user_id in sim.taste:
        offline = {case: sim.offline_hit(user_id, case) for case in AB_VARIANTS}  # before this user's click
        variant, hit = show_and_click(client, sim, user_id, clicked)
        counted[variant]["impressions"] += 1
        counted[variant]["clicks"] += hit
        counted[variant]["offline_hits"] += offline[variant]
    result, _ = client.expect(200, "GET", f"/experiments/{experiment}")
    client.expect(200, "POST", f"/experiments/{experiment}/stop")
    served = {variant["name"]: variant for variant in result["variants"]}
    rows, checks = [], []
    for case in AB_VARIANTS:
        mine, theirs = counted[case], served[case]
        offline_rate = mine["offline_hits"] / max(mine["impressions"], 1)
        low, high = theirs["ctr_ci"]
        checks += [theirs["impressions"] == mine["impressions"], theirs["clicks"] == mine["clicks"],
                   low <= offline_rate <= high]
        rows.append({"variant": case, "impressions": theirs["impressions"], "clicks": theirs["clicks"],
                     "ctr": theirs["ctr"], "ctr_ci": theirs["ctr_ci"], "offline_hit_rate": round(offline_rate, 4),
                     "bench_impressions": mine["impressions"], "bench_clicks": mine["clicks"],
                     "lift": theirs.get("lift"), "p_value": theirs.get("p_value")})
    winner = max(AB_VARIANTS, key=lambda case: served[case]["ctr"])
    significant = served["hybrid"]["p_value"] is not None and served["hybrid"]["p_value"] < SIGNIFICANCE
    return {"experiment_id": experiment, "variants": rows, "winner": winner, "significant": significant,
            "pass": all(checks) and winner == "hybrid" and significant}


def run_thompson(client: KeepAliveClient, sim: Simulation, impressions: int, seed: int) -> dict[str, Any]:
    """Random users until `impressions`; the traffic share of each variant per WINDOW impressions."""
    best = max(BANDIT_VARIANTS, key=lambda case: np.mean([sim.offline_hit(u, case) for u in list(sim.taste)[:500]]))
    experiment = create_experiment(client, "sim-thompson", "thompson", BANDIT_VARIANTS)
    rng = random.Random(seed)
    users = sorted(sim.taste)
    clicked: set[tuple[str, str]] = set()
    served: list[str] = []
    started = time.perf_counter()
    for n in range(impressions):
        variant, _ = show_and_click(client, sim, rng.choice(users), clicked)
        served.append(variant)
        if (n + 1) % 2_000 == 0:
            print(f"  {n + 1:,} impressions, {time.perf_counter() - started:.0f} s", flush=True)
    client.expect(200, "POST", f"/experiments/{experiment}/stop")
    windows = [served[start:start + WINDOW] for start in range(0, len(served), WINDOW)]
    curve = [{"impressions": (n + 1) * WINDOW, **{case: round(window.count(case) / len(window), 3)
                                                  for case in BANDIT_VARIANTS}} for n, window in enumerate(windows)]
    reached = next((point["impressions"] for point in curve if point[best] >= BEST_SHARE_TARGET), None)
    return {"experiment_id": experiment, "best": best, "curve": curve, "best_share_reached_at": reached,
            "pass": reached is not None and reached <= impressions}


def draw(curve: list[dict[str, Any]], best: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    x = [point["impressions"] for point in curve]
    for case in BANDIT_VARIANTS:
        axes.plot(x, [point[case] for point in curve], label=case + (" (best offline)" if case == best else ""))
    axes.axhline(BEST_SHARE_TARGET, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("impressions")
    axes.set_ylabel(f"share of the last {WINDOW:,} impressions")
    axes.set_title("Thompson sampling over three recommenders, ML-1M simulated clicks")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0], "experiment_sim", url=False)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the ml-1m folder")
    parser.add_argument("--impressions", type=int, default=20_000, help="the Thompson run's length")
    parser.add_argument("--users", type=int, help="at most this many test users (default: all)")
    parser.add_argument("--port", type=int, default=5097)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_experiment_sim_") as tmp:
            workdir = Path(tmp)
            sim = prepare(args.data, workdir, args.users)
            server = serve(sim, workdir, args.port)
            try:
                client = KeepAliveClient(server.url)
                ab = run_ab(client, sim)
                bandit = run_thompson(client, sim, args.impressions, args.seed)
            finally:
                server.stop()
    except BenchError as error:
        return report_error(error, None)
    print(f"\nA/B on {sum(row['impressions'] for row in ab['variants']):,} users, one list each:")
    print(format_table(["variant", "impressions", "clicks", "CTR", "95% CI", "offline HR@10", "lift", "p"],
                       [[row["variant"], row["impressions"], row["clicks"], f"{row['ctr']:.4f}",
                         f"{row['ctr_ci'][0]:.4f}-{row['ctr_ci'][1]:.4f}", f"{row['offline_hit_rate']:.4f}",
                         "-" if row["lift"] is None else f"{row['lift']:+.1%}",
                         "-" if row["p_value"] is None else f"{row['p_value']:.2g}"] for row in ab["variants"]]))
    print(f"winner {ab['winner']}, significant at {SIGNIFICANCE}: {ab['significant']}  {verdict(ab['pass'])}")
    print(f"\nThompson over {', '.join(BANDIT_VARIANTS)} (best offline: {bandit['best']}), share per {WINDOW:,}:")
    print(format_table(["impressions", *BANDIT_VARIANTS],
                       [[point["impressions"], *(point[case] for case in BANDIT_VARIANTS)] for point in bandit["curve"]]))
    print(f"best variant at >= {BEST_SHARE_TARGET:.0%} of traffic from {bandit['best_share_reached_at']} impressions  "
          f"{verdict(bandit['pass'])}")
    chart = args.out.with_suffix(".png")
    chart.parent.mkdir(parents=True, exist_ok=True)
    draw(bandit["curve"], bandit["best"], chart)
    print(f"wrote {chart}")
    write_results(args.out, {"ab": ab, "thompson": bandit})
    return 0 if ab["pass"] and bandit["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
