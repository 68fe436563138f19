"""``sage sweep CONFIG``: parameter grid x instruments x walk-forward folds, in parallel (docs/sweeps.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(groups, argv: list[str]) -> None:
    from sage.data.sample import DEFAULT_CATALOG

    parser = groups.root.add_parser(
        "sweep",
        help="run a parameter sweep with walk-forward folds (process pool or Ray)",
        description="Runs every (instrument, fold, train/test window, grid point) backtest of a sweep file "
        "and writes one results table (parquet, CSV, markdown), metric plots and a walk-forward summary "
        "(parameters chosen on each fold's train window, reported on its test window). A failing task is "
        "a row with its error, not a failed sweep. See docs/sweeps.md.",
    )
    parser.add_argument("config", type=Path, help="sweep YAML (see configs/sweeps/)")
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG,
                        help=f"ParquetDataCatalog directory (default: {DEFAULT_CATALOG})")
    parser.add_argument("--engine", choices=["pool", "ray", "serial"], default="pool",
                        help="pool: local processes (default); ray: a local Ray instance or --ray-address; "
                        "serial: this process")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers (default: number of cores)")
    parser.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (engine ray)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: runs/sweeps/<config name>)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from sage.sweep.report import markdown_table
    from sage.sweep.run import run_sweep

    console = Console(soft_wrap=True)
    if args.ray_address and args.engine != "ray":
        args.engine = "ray"
    out = args.out or Path("runs") / "sweeps" / args.config.stem
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:  # fmt: skip
        bar = progress.add_task(f"sweep {args.config.name} ({args.engine})", total=None)
        result = run_sweep(
            args.config, args.catalog, out=out, engine=args.engine, workers=args.workers,
            ray_address=args.ray_address, plots=not args.no_plots,
            on_done=lambda done, total: progress.update(bar, completed=done, total=total),
        )  # fmt: skip
    failed = int(result.table.error.notna().sum())
    console.print(
        f"{len(result.table)} backtests in {result.wall_seconds:.1f} s ({args.engine}); {failed} failed; "
        f"results in {out}"
    )
    columns = [c for c in ["instrument", "fold", *result.params, "train_" + _metric(result), "test_" +
               _metric(result), "test_pnl", "test_error"] if c in result.selection.columns]  # fmt: skip
    console.print(markdown_table(result.selection[columns]), markup=False, highlight=False)
    return 0


def _metric(result) -> str:
    return next((c.removeprefix("train_") for c in result.selection.columns if c.startswith("train_")
                 and c != "train_window"), "sharpe")  # fmt: skip
