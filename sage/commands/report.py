"""``sage report RUN`` (rebuild the tearsheet of a saved run) and ``sage explain RUN --at TIME``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sage.commands import CommandGroups


def register(groups: CommandGroups, argv: list[str]) -> None:
    report = groups.root.add_parser(
        "report",
        help="rebuild the tearsheet (plots + statistics, one HTML page) of a saved run",
        description="Reads a run directory written by `sage backtest CONFIG --out RUN` and writes "
        "RUN/report/index.html plus one PNG per plot. See docs/reports.md.",
    )
    report.add_argument("run", type=Path, help="run directory")
    report.add_argument("--out", type=Path, default=None, help="write the report here (default: RUN/report)")
    report.set_defaults(func=_cmd_report)

    explain = groups.root.add_parser(
        "explain",
        help="show the decision(s) in force at a time of a saved run, with every input that led to them",
        description="Prints the last DecisionRecord(s) at or before --at: action, regime and fallback level, "
        "each agent's signal and weight, the combined signal, the risk proposal, the execution algorithm, "
        "feature attributions and the explanation sentence.",
    )
    explain.add_argument("run", type=Path, help="run directory")
    explain.add_argument(
        "--at", required=True, help="time: ISO 8601 (UTC if no offset) or integer nanoseconds"
    )
    explain.add_argument(
        "--instrument", default=None, help="instrument id (default: every instrument of the run)"
    )
    explain.add_argument(
        "--n", type=int, default=1, help="how many decisions up to --at, per instrument (default 1)"
    )
    explain.set_defaults(func=_cmd_explain)


def _cmd_report(args: argparse.Namespace) -> int:
    from rich.table import Table

    from sage.cli import console
    from sage.reports.run_dir import load_run
    from sage.reports.tearsheet import build_tearsheet

    run = load_run(args.run)
    with console.status(f"building the tearsheet of {args.run} ..."):
        result = build_tearsheet(run, args.out)
    table = Table(title=f"run {run.meta.get('run_id')}")
    table.add_column("statistic")
    for ccy in run.stats.get("sage", {}):
        table.add_column(ccy, justify="right")
    sage_stats = run.stats.get("sage", {})
    for key in ("total_return", "sharpe", "sortino", "max_drawdown", "turnover", "n_returns"):
        values = [sage_stats[c].get(key) for c in sage_stats]
        table.add_row(
            key, *("-" if v is None else f"{v:,.4f}" if isinstance(v, float) else str(v) for v in values)
        )
    console.print(table)
    console.print(f"report: {result.html_path} ({len(result.images)} plots)", markup=False, highlight=False)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from sage.cli import console
    from sage.reports.explain import decisions_at, print_decision
    from sage.reports.run_dir import load_run

    run = load_run(args.run)
    for record in decisions_at(run, args.at, instrument=args.instrument, n=args.n):
        print_decision(record, console, run)
    return 0
