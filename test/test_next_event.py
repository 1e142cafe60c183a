"""The next-event protocol (`evaluate --protocol next-event`, models/next_event.py) proves:
- on shoppers who always view item b right after item a, learning from the replayed events pays: the
  transition baseline and the hybrid with fold-in beat the same hybrid frozen at the cut-off;
- MRR@k, and the transition row's HR, NDCG and MRR through the whole replay, equal hand-computed values;
- the CLI flag runs end to end and writes the table and the JSON, and bad flags get a clear error.
Every data set here is made by the test, a few hundred events at most, so the file runs in seconds."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import main
from models.metrics import mean_reciprocal_rank
from models.next_event import ROWS, next_event_scores
from preprocess.loaders import load_dataset


def write_events(path: Path, rows: list[tuple[str, str, float]]) -> Path:
    """An events csv of (user, item, time) views."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(event_type="view")
    frame.to_csv(path, index=False)
    return path


def paired_shoppers(n_users: int = 60, n_pairs: int = 15, seed: int = 3) -> list[tuple[str, str, float]]:
    """Each shopper views three random pairs, always a{j} then b{j}, an hour apart; shoppers start at
    staggered times, so the last fifth of the time line cuts many of them mid-way."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        start = user * 3600.0
        for step, pair in enumerate(rng.choice(n_pairs, 3, replace=False)):
            rows += [(f"u{user}", f"a{pair}", start + (2 * step) * 3600.0),
                     (f"u{user}", f"b{pair}", start + (2 * step + 1) * 3600.0)]
    return rows


def test_learning_from_replayed_events_beats_the_frozen_hybrid_when_b_always_follows_a(tmp_path):
    dataset = load_dataset("csv", write_events(tmp_path / "events.csv", paired_shoppers()))
    results = next_event_scores(dataset, progress=False)["results"]
    frozen = results["hybrid_frozen"]["hit_rate@10"]
    assert results["transitions"]["hit_rate@10"] > frozen + 0.2
    assert results["hybrid_fold_in"]["hit_rate@10"] > frozen + 0.1
    for name in ROWS:
        assert 0.0 <= results[name]["mrr@10"] <= results[name]["hit_rate@10"] <= 1.0


def test_mean_reciprocal_rank_matches_hand_computed_values():
    recommended = np.array([[4, 1, 2], [0, 3, -1], [2, 1, 0], [1, 2, 3]])
    positives = sp.csr_matrix(([1.0] * 4, ([0, 0, 1, 2], [1, 2, 5, 0])), shape=(4, 6))
    # first hits: rank 2, none, rank 3; the last row has no positive and is skipped
    assert mean_reciprocal_rank(recommended, positives) == pytest.approx((1 / 2 + 0 + 1 / 3) / 3)


def test_the_transition_row_scores_a_replay_as_computed_by_hand(tmp_path):
    """Training: u1 a b c, u2 a b d, u4 b d (b is followed by d twice, by c once); u3 views e.
    Replayed (the last three times, past the 0.75 quantile): u3 views a, b, c. Before a, u3's last item e
    has no successor, so the list is by popularity: b (3 views), then a (2; ahead of d by index): a is
    second. Before b, b follows a twice: first. Before c, d leads c (2 against 1): c is second."""
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 4), ("u2", "b", 5), ("u2", "d", 6),
            ("u4", "b", 7), ("u4", "d", 8), ("u3", "e", 9), ("u3", "a", 20), ("u3", "b", 21), ("u3", "c", 22)]
    dataset = load_dataset("csv", write_events(tmp_path / "events.csv", rows))
    evaluation = next_event_scores(dataset, cutoff_quantile=0.75, horizon=1, progress=False)
    protocol, transitions = evaluation["protocol"], evaluation["results"]["transitions"]
    assert (protocol["events_fitted"], protocol["events_replayed"], protocol["events_scored"]) == (9, 3, 3)
    assert transitions["hit_rate@10"] == pytest.approx(1.0)
    assert transitions["mrr@10"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert transitions["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 + 1 / math.log2(3)) / 3)


def test_the_cli_flag_runs_end_to_end_and_writes_the_table_and_the_json(tmp_path, capsys):
    events = write_events(tmp_path / "events.csv", paired_shoppers(n_users=30))
    code = main.main(["evaluate", "--protocol", "next-event", "--dataset", "csv", "--data-dir", str(events),
                      "--out-dir", str(tmp_path / "report"), "--json", str(tmp_path / "out.json"), "--max-users", "5"])
    assert code == 0
    printed = capsys.readouterr().out
    document = json.loads((tmp_path / "out.json").read_text())
    assert set(document["results"]) == set(ROWS) and document["protocol"]["users_scored"] == 5
    assert all(name in printed for name in ROWS)
    assert "| realtime_push |" in (tmp_path / "report" / "next_event.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--tune"], "--tune and --models apply to the holdout protocol only"),
    (["--models", "ease"], "--tune and --models apply to the holdout protocol only"),
    (["--max-users", "0"], "must be at least 1"),
])
def test_bad_flags_get_a_clear_error(tmp_path, capsys, flags, message):
    events = write_events(tmp_path / "events.csv", paired_shoppers(n_users=10))
    code = main.main(["evaluate", "--protocol", "next-event", "--dataset", "csv", "--data-dir", str(events),
                      "--out-dir", str(tmp_path), *flags])
    assert code == 1 and message in capsys.readouterr().err


def test_an_unknown_protocol_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main.main(["evaluate", "--protocol", "next-click", "--dataset", "csv", "--data-dir", "x.csv"])
    assert exit_info.value.code == 2 and "invalid choice: 'next-click'" in capsys.readouterr().err
