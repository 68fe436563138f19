"""Sweep outputs: the results table, the walk-forward selection, plots and a markdown summary.

Walk-forward selection is the honest way to read a sweep: on each fold the parameters are chosen on
the *train* window only (best selection metric; ties go to the earlier grid point), and the number
reported is what those parameters did on the fold's *test* window, which the choice never saw. The
best test result in hindsight is listed beside it so the gap (the cost of choosing) is visible.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sage.sweep.metrics import METRIC_COLUMNS
from sage.sweep.spec import SELECTION_METRICS

_KEY_COLUMNS = ["task", "instrument", "fold", "split", "start", "end", "point"]


def walk_forward_selection(table: pd.DataFrame, params: list[str], metric: str) -> pd.DataFrame:
    """One row per (instrument, fold): the train-chosen grid point and its out-of-sample metrics."""
    higher = SELECTION_METRICS[metric]
    rows: list[dict[str, Any]] = []
    for (instrument, fold), group in table.groupby(["instrument", "fold"], sort=False):
        train = group[(group.split == "train") & group.error.isna() & group[metric].notna()]
        test = group[group.split == "test"].set_index("point")
        row: dict[str, Any] = {"instrument": instrument, "fold": int(fold)}
        row["train_window"] = _window(group[group.split == "train"])
        row["test_window"] = _window(group[group.split == "test"])
        if train.empty:
            row.update({"point": None, "note": f"no train run with a finite {metric}"})
            rows.append(row)
            continue
        ranked = train.assign(_key=train[metric] if higher else -train[metric])
        best = ranked.sort_values(["_key", "point"], ascending=[False, True], kind="stable").iloc[0]
        point = int(best.point)
        row["point"] = point
        row.update({p: best[p] for p in params})
        row[f"train_{metric}"] = float(best[metric])
        chosen = test.loc[point] if point in test.index else None
        for m in (metric, "pnl", "return", "sharpe", "max_drawdown", "trades"):
            row[f"test_{m}"] = float(chosen[m]) if chosen is not None and pd.notna(chosen[m]) else math.nan
        row["test_error"] = chosen["error"] if chosen is not None else "no test run"
        ok = test[test.error.isna() & test[metric].notna()]
        if not ok.empty:
            hindsight = ok.assign(_key=ok[metric] if higher else -ok[metric]).sort_values(
                ["_key"], ascending=False, kind="stable").iloc[0]  # fmt: skip
            row["hindsight_point"] = int(hindsight.name)
            row[f"hindsight_test_{metric}"] = float(hindsight[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def _window(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    return f"{rows.start.iloc[0]} .. {rows.end.iloc[0]}"


def markdown_table(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub-flavoured markdown table (no extra dependency); floats to ``digits`` significant digits."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float | np.floating):
            return f"{value:.{digits}g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def plot_metric(table: pd.DataFrame, params: list[str], metric: str, path: Path, instrument: str) -> Path:
    """``metric`` over the grid for each fold of ``instrument``: lines (0-1 parameters) or train/test
    heatmaps over the first two parameters (averaged over the others)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = table[table.instrument == instrument]
    folds = sorted(data.fold.unique())
    if len(params) >= 2:
        fig, axes = plt.subplots(len(folds), 2, figsize=(9, 3.2 * len(folds)), squeeze=False)
        for r, fold in enumerate(folds):
            for c, split in enumerate(("train", "test")):
                rows = data[(data.fold == fold) & (data.split == split)]
                grid = rows.pivot_table(index=params[0], columns=params[1], values=metric, aggfunc="mean",
                                        dropna=False, sort=False)  # fmt: skip
                ax = axes[r][c]
                im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis")
                ax.set_xticks(range(grid.shape[1]), [str(v) for v in grid.columns])
                ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index])
                ax.set_xlabel(params[1])
                ax.set_ylabel(params[0])
                ax.set_title(f"fold {fold} {split}: {metric}")
                fig.colorbar(im, ax=ax)
    else:
        fig, axes = plt.subplots(len(folds), 1, figsize=(7, 3 * len(folds)), squeeze=False)
        for r, fold in enumerate(folds):
            ax = axes[r][0]
            for split, style in (("train", "o-"), ("test", "s--")):
                rows = data[(data.fold == fold) & (data.split == split)].sort_values("point")
                labels = [str(v) for v in (rows[params[0]] if params else rows.point)]
                ax.plot(range(len(rows)), rows[metric].to_numpy(dtype=float), style, label=split)
                ax.set_xticks(range(len(rows)), labels)
            ax.set_xlabel(params[0] if params else "grid point")
            ax.set_ylabel(metric)
            ax.set_title(f"{instrument} fold {fold}")
            ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary_markdown(
    table: pd.DataFrame, selection: pd.DataFrame, params: list[str], metric: str, title: str,
    plots: list[Path], wall_seconds: float, engine: str,
) -> str:
    """The human summary: walk-forward picks with their out-of-sample results, totals, failures."""
    n_fail = int(table.error.notna().sum())
    lines = [
        f"# Sweep {title}",
        "",
        (
            f"{len(table)} backtests ({table.instrument.nunique()} instrument(s), {table.fold.nunique()} fold(s), "
            f"{table.point.nunique()} grid point(s), train + test) on engine `{engine}` in {wall_seconds:.1f} s; "
            f"{n_fail} failed."
        ),
        "",
        f"## Walk-forward selection (chosen on train by `{metric}`, reported on test)",
        "",
    ]
    cols = ["instrument", "fold", *params, f"train_{metric}", f"test_{metric}", "test_pnl", "test_return",
            "test_max_drawdown", "test_trades", "hindsight_point", f"hindsight_test_{metric}", "test_error",
            "train_window", "test_window"]  # fmt: skip
    lines.append(markdown_table(selection[[c for c in cols if c in selection.columns]]))
    if "test_pnl" in selection:
        lines += ["## Out-of-sample totals", ""]
        totals = selection.groupby("instrument", sort=False).agg(
            folds=("fold", "count"), test_pnl=("test_pnl", "sum"), mean_test_return=("test_return", "mean"))
        lines.append(markdown_table(totals.reset_index()))
    if n_fail:
        lines += ["## Failed tasks", ""]
        failed = table[table.error.notna()][["task", "instrument", "fold", "split", *params, "error"]]
        lines.append(markdown_table(failed))
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += ["Full table: `results.csv` / `results.parquet` / `results.md`.", ""]
    return "\n".join(lines)


def ordered_columns(params: list[str]) -> list[str]:
    """Column order of the results table."""
    return [*_KEY_COLUMNS, *params, *METRIC_COLUMNS, "error"]
