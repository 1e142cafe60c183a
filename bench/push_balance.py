"""The push's taste share, measured: HR@10 of the real-time push against each user's next event.

A stand-in for `evaluate --protocol next-event` until that lands (issue 11): fit on everything before
the time cut-off, then replay the later events in time order. Before each event of a user with an
earlier one, the push given that earlier item is scored against this event's item; then the event is
observed (real-time learning on). Every share in --shares ranks the same state, so the rows compare.

    python bench/push_balance.py --data ../shared/data/ml-100k --users 300
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocess.loaders import load_dataset  # noqa: E402
from recommenders.engine import Engine  # noqa: E402

K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="an ml-100k folder")
    parser.add_argument("--format", default="ml-100k")
    parser.add_argument("--cut", type=float, default=0.9, help="share of the events, by time, fitted on")
    parser.add_argument("--users", type=int, default=300, help="replay this many random test users (seed 0)")
    parser.add_argument("--shares", default="0,0.2,0.35,0.5,0.65,0.8,1")
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]

    dataset = load_dataset(args.format, args.data)
    records = list(dataset.records())
    cut = int(len(records) * args.cut)
    engine = Engine.build(dataset.items, sorted({r.user_id for r in records}), records[:cut])
    test = records[cut:]
    users = sorted({r.user_id for r in test})
    chosen = set(np.random.default_rng(0).choice(users, size=min(args.users, len(users)), replace=False).tolist())
    previous = {u: engine.data.recent.of(engine.data.users.get(u)).items for u in chosen}
    previous = {u: int(items[-1]) for u, items in previous.items() if len(items)}
    hits, scored, started = np.zeros(len(shares)), 0, time.perf_counter()
    for record in test:
        if record.user_id in chosen and record.user_id in previous:
            user, target = engine.data.users.get(record.user_id), engine.data.items.get(record.item_id)
            for column, share in enumerate(shares):
                engine.realtime.taste_share = share
                items, _, _ = engine.realtime.recommend(engine.data, user, K, previous[record.user_id],
                                                        record.event_type)
                hits[column] += target in items
            scored += 1
        engine.observe(record)
        if record.user_id in chosen:
            previous[record.user_id] = engine.data.items.get(record.item_id)
    print(f"{args.format}: {scored:,} next events of {len(chosen)} users, {time.perf_counter() - started:.0f} s")
    print("taste share  HR@10")
    for share, hit in zip(shares, hits):
        print(f"{share:>11.2f}  {hit / max(scored, 1):.4f}")


if __name__ == "__main__":
    main()
