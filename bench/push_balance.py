"""The push's taste share, measured on the next-event protocol (models/next_event.py).

For each share in --shares, `next_event_scores` fits the engine on everything before the time cut-off
with `RealtimeRecommender.taste_share` set to it, replays the later events through the live path, and
scores each row's list before every new-to-the-user event. The bench prints HR@10, NDCG@10 and MRR@10
of the push per share, with the frozen hybrid (the same every time) for reference, and writes them
as JSON. The share that wins is what recommenders/realtime.py's TASTE_SHARE should say.

    python bench/push_balance.py --dataset ml-100k --data-dir ../shared/data/ml-100k [--shares 0.4,0.6,0.8]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import bench_parser, format_table, write_results  # noqa: E402
from models.next_event import next_event_scores  # noqa: E402
from preprocess.loaders import load_dataset  # noqa: E402
from recommenders.engine import Engine  # noqa: E402

METRICS = ("hit_rate@10", "ndcg@10", "mrr@10")


def with_share(share: float):
    """An engine factory for the protocol: Engine.build, then the push's taste share set to `share`."""
    def build(items, user_ids, columns) -> Engine:
        engine = Engine.build(items, user_ids, columns)
        engine.realtime.taste_share = share
        return engine
    return build


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0], "push_balance", url=False)
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-1m or online-retail")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--shares", default="0.4,0.5,0.6,0.7,0.8", help="taste shares to try, comma-separated")
    parser.add_argument("--max-users", type=int, default=1000, help="users whose events are scored")
    args = parser.parse_args()
    shares = [float(share) for share in args.shares.split(",")]
    if any(not 0.0 <= share <= 1.0 for share in shares):
        parser.error("every share must be between 0 and 1")
    dataset = load_dataset(args.dataset, args.data_dir, progress=False)
    runs = {share: next_event_scores(dataset, with_share(share), max_users=args.max_users, progress=False)
            for share in shares}
    frozen = runs[shares[0]]["results"]["hybrid_frozen"]
    rows = [[f"push, taste share {share:g}", *(f'{run["results"]["realtime_push"][m]:.4f}' for m in METRICS)]
            for share, run in runs.items()]
    print(f"{args.dataset}: next-event protocol, {runs[shares[0]]['protocol']['events_scored']} scored events")
    print(format_table(["row", *METRICS], [*rows, ["hybrid frozen (reference)", *(f"{frozen[m]:.4f}" for m in METRICS)]]))
    best = max(shares, key=lambda share: runs[share]["results"]["realtime_push"]["hit_rate@10"])
    print(f"best taste share by HR@10: {best:g}")
    write_results(args.out, {"dataset": args.dataset, "best": best,
                             "runs": {str(share): run for share, run in runs.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
