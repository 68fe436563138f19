"""``run_sweep``: expand a sweep file into tasks, run them on an engine, write the table and report."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sage.sweep.engine import EngineName, TaskError, run_tasks
from sage.sweep.metrics import METRIC_COLUMNS
from sage.sweep.report import (
    markdown_table,
    ordered_columns,
    plot_metric,
    summary_markdown,
    walk_forward_selection,
)
from sage.sweep.spec import SweepTask, expand_tasks, load_sweep_spec, param_labels, value_label
from sage.sweep.task import run_sweep_task


@dataclass
class SweepResult:
    """The collected table (one row per task, in task order) and where everything was written."""

    table: pd.DataFrame
    selection: pd.DataFrame
    params: list[str]  #: parameter column names in the table
    out: Path | None
    wall_seconds: float
    files: list[Path] = field(default_factory=list)


def results_table(tasks: list[SweepTask], results: list[Any]) -> tuple[pd.DataFrame, list[str]]:
    """Rows from tasks and their results (metrics dict or :class:`TaskError`), sorted deterministically
    by instrument order, fold, split (train first), grid point -- i.e. by task index."""
    keys = [k for k, _ in tasks[0].params] if tasks else []
    labels = param_labels(keys)
    rows = []
    for task, result in zip(tasks, results, strict=True):
        row: dict[str, Any] = {
            "task": task.index, "instrument": task.instrument, "fold": task.fold, "split": task.split,
            "start": _iso(task.start), "end": _iso(task.end), "point": task.point,
        }  # fmt: skip
        row.update({labels[k]: value_label(v) for k, v in task.params})
        if isinstance(result, TaskError):
            row.update(dict.fromkeys(METRIC_COLUMNS, float("nan")))
            row["error"] = str(result)
        else:
            row.update({m: result[m] for m in METRIC_COLUMNS})
            row["error"] = None
        rows.append(row)
    params = list(labels.values())
    table = pd.DataFrame(rows, columns=ordered_columns(params)).sort_values("task", kind="stable")
    for col in params:  # parquet needs one type per column: a bad value of another type -> all text
        kinds = {type(v) for v in table[col] if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            table[col] = table[col].map(lambda v: None if v is None else str(v))
    for col in ("trades", "fills"):
        table[col] = table[col].astype("Int64")
    table["error"] = table["error"].astype(object)
    return table.reset_index(drop=True), params


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, tz="UTC").isoformat().replace("+00:00", "Z")


def run_sweep(
    sweep_path: Path | str,
    catalog: Path | str,
    *,
    out: Path | str | None = None,
    engine: EngineName = "pool",
    workers: int | None = None,
    ray_address: str | None = None,
    on_done: Callable[[int, int], None] | None = None,
    plots: bool = True,
) -> SweepResult:
    """Run every task of the sweep file and collect (and, with ``out``, write) the results.

    A task that fails (bad parameter, strategy exception, worker crash) becomes a row with its
    ``error`` and NaN metrics; the sweep itself only fails for a bad sweep file or engine.
    """
    sweep_path = Path(sweep_path)
    spec, base = load_sweep_spec(sweep_path)
    catalog = Path(catalog)
    if not catalog.exists():
        raise FileNotFoundError(f"catalog {catalog} does not exist (build it with `sage catalog build`)")
    tasks = expand_tasks(spec, base, catalog)
    started = time.perf_counter()
    results = run_tasks(run_sweep_task, tasks, engine=engine, workers=workers, ray_address=ray_address,
                        on_error="capture", on_done=on_done)  # fmt: skip
    wall = time.perf_counter() - started
    table, params = results_table(tasks, results)
    selection = walk_forward_selection(table, params, spec.metric)
    result = SweepResult(table=table, selection=selection, params=params, out=None, wall_seconds=wall)
    if out is not None:
        result.out = Path(out)
        result.files = write_outputs(result, tasks, spec.metric, sweep_path.stem, engine, plots)
    return result


def write_outputs(
    result: SweepResult, tasks: list[SweepTask], metric: str, title: str, engine: str, plots: bool
) -> list[Path]:
    """results.{parquet,csv,md}, selection.csv, one PNG per instrument, summary.md, and every task's
    exact backtest config under ``tasks/`` (re-run one with ``sage backtest tasks/0007.yaml``)."""
    out = result.out
    assert out is not None
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.parquet", out / "results.csv", out / "results.md", out / "selection.csv"]
    result.table.to_parquet(files[0], index=False)
    result.table.to_csv(files[1], index=False)
    files[2].write_text(markdown_table(result.table))
    result.selection.to_csv(files[3], index=False)
    task_dir = out / "tasks"
    task_dir.mkdir(exist_ok=True)
    for task in tasks:
        config = copy.deepcopy(task.config)
        for entry in config.get("data") or []:
            entry["catalog_path"] = task.catalog
        (task_dir / f"{task.index:04d}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    pngs: list[Path] = []
    if plots and result.table[metric].notna().any():
        for instrument in result.table.instrument.unique():
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(instrument))
            pngs.append(plot_metric(result.table, result.params, metric, out / f"{metric}_{safe}.png", instrument))
    summary = out / "summary.md"
    text = summary_markdown(
        result.table, result.selection, result.params, metric, title, pngs, result.wall_seconds, engine
    )
    summary.write_text(text)
    return [*files, *pngs, summary]
