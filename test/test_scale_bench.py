"""bench/scale.py generate: a store `python main.py train` fits, with the structure the bench promises
(power-law popularity, users leaning to categories, a shop's mix of event types)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage import Store

ROOT = Path(__file__).resolve().parent.parent
ITEMS, USERS, EVENTS = 5_000, 1_000, 8_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The generator's store and its JSON summary line, made once for the module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'store.db'}"
    output = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "generate", "--items", str(ITEMS),
                             "--users", str(USERS), "--events", str(EVENTS), "--seed", "3", "--database-url", url],
                            check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return url, json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def frame(generated):
    """The stored events with each item's category, as the trainer reads them."""
    store = Store(generated[0])
    try:
        events = store.interaction_frame()
        category = {item.item_id: item.category for item in store.all_items()}
    finally:
        store.close()
    return events.assign(category=events["item_id"].map(category))


def test_the_store_holds_every_row_and_the_log_is_consecutive(generated, frame):
    _, summary = generated
    assert summary["store"] == {"items": ITEMS, "users": USERS, "interactions": EVENTS}
    assert frame["seq"].diff().dropna().eq(1).all()
    assert frame["timestamp"].is_monotonic_increasing


def test_popularity_follows_a_power_law(frame):
    counts = np.sort(frame["item_id"].value_counts().to_numpy())[::-1]
    top_share = counts[: ITEMS // 100].sum() / EVENTS
    assert top_share > 0.08, f"the top 1% of items hold {top_share:.1%} of events; uniform would be 1%"


def test_users_lean_to_a_few_categories(frame):
    """Each active user's three most frequent categories hold far more of their events than the same
    events would with categories shuffled between them (same users, same category sizes)."""
    rng = np.random.default_rng(0)
    active = frame[frame.groupby("user_id")["user_id"].transform("size") >= 10]
    shuffled = active.assign(category=rng.permutation(active["category"].to_numpy()))

    def top3_share(events) -> float:
        per_user = events.groupby(["user_id", "category"]).size().sort_values(ascending=False)
        return float((per_user.groupby(level=0).head(3).groupby(level=0).sum()
                      / per_user.groupby(level=0).sum()).mean())

    assert active["user_id"].nunique() >= 50
    assert top3_share(active) > top3_share(shuffled) + 0.2


def test_event_types_come_in_a_shops_proportions(frame):
    share = frame["event_type"].value_counts(normalize=True)
    assert share["view"] > 0.6 and share["purchase"] < share["add_to_cart"] < share["rating"] < share["view"]
    ratings = frame.loc[frame["event_type"] == "rating", "rating"]
    assert ratings.between(1, 5).all() and frame.loc[frame["event_type"] != "rating", "rating"].isna().all()


def test_the_local_trainer_fits_it(generated, tmp_path):
    env = {**os.environ, "DATABASE_URL": generated[0], "MODEL_DIR": str(tmp_path / "models")}
    output = subprocess.run([sys.executable, str(ROOT / "main.py"), "train"], env=env, check=True,
                            capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL).stdout
    trained = json.loads(output.strip().splitlines()[-1])
    assert trained["interactions"] == EVENTS and trained["items"] == ITEMS
    assert Path(trained["artifact"]).is_dir()
