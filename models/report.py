"""The evaluation's outputs: the console table, report.md with a bar chart, and the JSON document."""
from __future__ import annotations

import json
import math
from pathlib import Path

RANKING_METRICS = ("precision@10", "recall@10", "ndcg@10", "map@10", "hit_rate@10")
COLUMNS = (*RANKING_METRICS, "coverage", "rmse", "mae", "fit_seconds")
CHART_NAME = "metrics.png"
FOLD_IN_TOLERANCE = 0.02  # fold-in must keep 98% of a full retrain's NDCG@10 (issue 11)


def _cell(value: float | None, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if column in ("fit_seconds", "ms_per_list") else f"{value:.4f}"


def _rows(evaluation: dict) -> tuple[list[str], list[list[str]]]:
    """Header and one row of strings per model, ours first then the references, in run order."""
    header = ["model", "kind", *COLUMNS]
    rows = [[name, result["kind"], *(_cell(result[column], column) for column in COLUMNS)]
            for name, result in evaluation["results"].items()]
    return header, rows


def _fold_in_lines(evaluation: dict) -> list[str]:
    fold_in = evaluation["fold_in"]
    lines = [f"Fold-in: fitted on {fold_in['events_fitted']:,} events, {fold_in['events_folded_in']:,} fed through "
             f"Engine.observe in {fold_in['observe_seconds']:.1f} s (no retrain)"]
    for name, figures in fold_in["models"].items():
        full, folded, change = figures["full_retrain_ndcg@10"], figures["fold_in_ndcg@10"], figures["relative_change"]
        kept = "within" if change is not None and change >= -FOLD_IN_TOLERANCE else "OUTSIDE"
        verdict = "n/a" if change is None else f"{change:+.1%} ({kept} {FOLD_IN_TOLERANCE:.0%} of a retrain)"
        lines.append(f"  {name}: NDCG@10 full retrain {full:.4f}, fold-in {folded:.4f}: {verdict}")
    return lines


def format_table(evaluation: dict) -> str:
    """The console table: aligned columns, then the fold-in figures."""
    header, rows = _rows(evaluation)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    aligned = [[cell.ljust(width) if i < 2 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths))]
               for row in [header, *rows]]  # names left, numbers right
    lines = ["  ".join(row) for row in aligned]
    protocol = evaluation["protocol"]
    title = f"{evaluation['dataset']}: {protocol['ranked_users']:,} users ranked, {protocol['items']:,} items, k=10"
    return "\n".join([title, *lines, "", *_fold_in_lines(evaluation)])


def markdown_table(evaluation: dict) -> str:
    header, rows = _rows(evaluation)
    return "\n".join("| " + " | ".join(row) + " |" for row in [header, ["---"] * 2 + ["---:"] * len(COLUMNS), *rows])


def _setting(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def tuned_markdown(evaluation: dict) -> str:
    """The tuned references: the configuration each chose on the validation split, what it scored there
    and on the test split, and what the search cost."""
    header = ["model", "chosen", "validation NDCG@10", "test NDCG@10", "trials", "validation users", "tuning s"]
    rows = [[name, ", ".join(f"{key}={_setting(value)}" for key, value in tuning["chosen"].items()),
             f"{tuning['validation_ndcg@10']:.4f}", _cell(evaluation["results"][name]["ndcg@10"], "ndcg@10"),
             str(len(tuning["trials"])), f"{tuning['validation_users']:,}", f"{tuning['tuning_seconds']:.1f}"]
            for name, tuning in evaluation["tuned"].items()]
    return "\n".join("| " + " | ".join(row) + " |" for row in [header, ["---"] * 2 + ["---:"] * 5, *rows])


def bar_chart(evaluation: dict, path: Path) -> None:
    """Grouped bars: one group per model, one bar per ranking metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(evaluation["results"])
    values = np.array([[evaluation["results"][name][metric] for metric in RANKING_METRICS] for name in names], dtype=float)
    width = 0.8 / len(RANKING_METRICS)
    figure, axes = plt.subplots(figsize=(max(8.0, 0.9 * len(names) + 2), 4.8))
    for j, metric in enumerate(RANKING_METRICS):
        axes.bar(np.arange(len(names)) + (j - (len(RANKING_METRICS) - 1) / 2) * width, np.nan_to_num(values[:, j]),
                 width, label=metric)
    axes.set_xticks(np.arange(len(names)), [f"{name}\n({evaluation['results'][name]['kind']})" for name in names],
                    rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("score")
    axes.set_title(f"{evaluation['dataset']}: ranking metrics at 10 (test split, seed {evaluation['protocol']['seed']})")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


TARGET_RATIO = 1.05  # issue 11: the best served configuration of ours against the best tuned reference


def against_tuned(evaluation: dict) -> dict | None:
    """Our best row and the best tuned reference by NDCG@10, and their ratio (None without a tuned row)."""
    results = evaluation["results"]
    tuned = [name for name in evaluation.get("tuned", {}) if name in results]
    ours = [name for name, result in results.items() if result["kind"] == "ours"]
    if not tuned or not ours:
        return None
    best_ours = max(ours, key=lambda name: results[name]["ndcg@10"])
    best_tuned = max(tuned, key=lambda name: results[name]["ndcg@10"])
    ratio = results[best_ours]["ndcg@10"] / results[best_tuned]["ndcg@10"]
    return {"ours": best_ours, "ours_ndcg@10": results[best_ours]["ndcg@10"], "tuned": best_tuned,
            "tuned_ndcg@10": results[best_tuned]["ndcg@10"], "ratio": ratio, "target": TARGET_RATIO,
            "met": ratio >= TARGET_RATIO}


def comparison_chart(evaluations: list[dict], path: Path) -> None:
    """NDCG@10 per data set: our best served row, each tuned reference, and the 1.05x-the-best-tuned bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axes = plt.subplots(1, len(evaluations), figsize=(4.2 * len(evaluations), 4.4), squeeze=False)
    for axis, evaluation in zip(axes[0], evaluations):
        summary = against_tuned(evaluation)
        names = [summary["ours"], *evaluation["tuned"]]
        values = [evaluation["results"][name]["ndcg@10"] for name in names]
        colours = ["tab:green"] + ["tab:grey"] * (len(names) - 1)
        axis.bar(np.arange(len(names)), values, color=colours)
        axis.axhline(summary["tuned_ndcg@10"] * TARGET_RATIO, color="tab:red", linestyle="--", linewidth=1,
                     label=f"{TARGET_RATIO:g} x best tuned ({summary['tuned']})")
        axis.set_xticks(np.arange(len(names)), names, rotation=40, ha="right", fontsize=8)
        axis.set_title(f"{evaluation['dataset']}: ours {summary['ratio']:.3f} x best tuned", fontsize=9)
        axis.set_ylim(0, max(values + [summary["tuned_ndcg@10"] * TARGET_RATIO]) * 1.15)
        axis.legend(fontsize=7, loc="upper right")
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("NDCG@10 (holdout, seed 42)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(evaluation: dict, out_dir: Path) -> Path:
    """report.md (protocol, table, chart, fold-in, model settings, notes) and the chart next to it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bar_chart(evaluation, out_dir / CHART_NAME)
    protocol = evaluation["protocol"]
    text = [
        f"# Offline evaluation: {evaluation['dataset']}",
        "",
        "## Protocol",
        "",
        f"- Split: {protocol['split']}, seed {protocol['seed']}: {protocol['train_pairs']:,} training and "
        f"{protocol['test_pairs']:,} test pairs ({protocol['users']:,} users, {protocol['items']:,} items, "
        f"{protocol['events']:,} events).",
        f"- Positives: {protocol['positives']}. Ranking: {protocol['candidates']}; top {protocol['k']} per user, "
        f"for the {protocol['ranked_users']:,} users with a test positive ({protocol['test_positives']:,} positives).",
        "- precision@10 = hits / 10; recall@10 = hits / |positives|; NDCG@10 with binary gains and the ideal "
        "DCG over min(10, |positives|); MAP@10 = average precision divided by min(10, |positives|); hit rate = "
        "share of users with at least one hit; coverage = distinct recommended items / catalog size.",
        f"- RMSE and MAE on the {protocol['rating_test_pairs']:,} rated test pairs, for models that predict ratings.",
        "- Our recommenders learn from the training events through the engine's InteractionData; the references "
        "from the binary matrix of training positives (SVD from the explicit ratings).",
        f"- Fold-in: {protocol['fold_in']}.",
        "",
        "## Results",
        "",
        markdown_table(evaluation),
        "",
        f"![ranking metrics]({CHART_NAME})",
        "",
        "## Fold-in",
        "",
        *(f"- {line.strip()}" for line in _fold_in_lines(evaluation)),
        "",
        "## Model settings",
        "",
        *(f"- {name}: {setting}" for name, setting in evaluation["settings"].items()),
    ]
    if evaluation.get("tuned"):
        text += ["", "## Tuned references", "",
                 "Each chose its hyperparameters by NDCG@10 on a validation split cut from the training pairs "
                 "(20% of each user's, another seed), trying the same number of configurations, then refitted on "
                 "all of train.", "", tuned_markdown(evaluation)]
    summary = against_tuned(evaluation)
    if summary is not None:
        text += ["", f"Best of ours: {summary['ours']} at NDCG@10 {summary['ours_ndcg@10']:.4f}, "
                     f"{summary['ratio']:.3f}x the best tuned reference ({summary['tuned']}, "
                     f"{summary['tuned_ndcg@10']:.4f}); the bar is {TARGET_RATIO:g}x."]
    if evaluation["notes"]:
        text += ["", "## Notes", "", *(f"- {note}" for note in evaluation["notes"])]
    text += ["", f"Run time: {evaluation['runtime_seconds']:.0f} s.", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(text), encoding="utf-8")
    return path


NEXT_EVENT_COLUMNS = ("hit_rate@10", "ndcg@10", "mrr@10", "next_hit_rate@10", "known_users_hit_rate@10",
                      "new_users_hit_rate@10", "ms_per_list")


def next_event_markdown(evaluation: dict) -> str:
    """The next-event protocol's table (models/next_event.py) with the figures it is over."""
    protocol = evaluation["protocol"]
    header = ["row", *NEXT_EVENT_COLUMNS]
    rows = [[name, *(_cell(result[column], column) for column in NEXT_EVENT_COLUMNS)]
            for name, result in evaluation["results"].items()]
    table = "\n".join("| " + " | ".join(row) + " |" for row in [header, ["---"] + ["---:"] * len(NEXT_EVENT_COLUMNS),
                                                               *rows])
    return "\n".join([
        f"# Next-event protocol: {evaluation['dataset']}",
        "",
        f"Cut-off at the {protocol['cutoff_quantile']:.0%} quantile of event times ({protocol['cutoff_utc']} UTC): "
        f"{protocol['events_fitted']:,} events fitted, {protocol['events_replayed']:,} replayed through "
        f"Engine.observe; {protocol['events_scored']:,} events scored for {protocol['users_scored']:,} users "
        f"({protocol['scored_events_of_users_known_at_cutoff']:,} of them of users known at the cut-off), "
        f"the first {protocol['events_per_user']} new-to-the-user events of each, seed {protocol['seed']}. "
        f"Targets: the event's item and the user's next {protocol['horizon'] - 1} items still new to them; "
        f"next_hit_rate counts the event's own item only. Session: {protocol['session']}. "
        f"Run time {evaluation['runtime_seconds']:.0f} s.",
        "",
        table,
    ])


def write_json(evaluation: dict, path: Path) -> None:
    """The evaluation as JSON: dataset, protocol, results {name: kind, metrics, rmse, mae (null unless the model
    predicts ratings), fit_seconds}, plus fold_in, settings, tuned {name: chosen, validation_ndcg@10,
    validation_users, tuning_seconds, trials}, notes; NaN (no defined value) becomes null."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_null_nan(evaluation), indent=2) + "\n", encoding="utf-8")


def _null_nan(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _null_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_null_nan(item) for item in value]
    return value


def main(argv: list[str] | None = None) -> int:
    """`python -m models.report CHART.png A.json B.json ...`: the chart of several `evaluate --json` runs
    against their best tuned references (docs/evaluation.png)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("chart", type=Path, help="the PNG to write")
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files of `evaluate --tune --json`")
    args = parser.parse_args(argv)
    evaluations = [json.loads(path.read_text()) for path in args.runs]
    missing = [path.name for path, evaluation in zip(args.runs, evaluations) if against_tuned(evaluation) is None]
    if missing:
        parser.error(f"no tuned reference or none of ours in {', '.join(missing)}")
    comparison_chart(evaluations, args.chart)
    for evaluation in evaluations:
        summary = against_tuned(evaluation)
        print(f"{evaluation['dataset']}: {summary['ours']} {summary['ours_ndcg@10']:.4f} / {summary['tuned']} "
              f"{summary['tuned_ndcg@10']:.4f} = {summary['ratio']:.3f} (bar {TARGET_RATIO:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
