"""``sage evaluate strategy``: walk-forward evaluation of the SageStrategy against buy-and-hold and EMACross
in real backtests on the sample datasets (see ``docs/evaluation.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _evaluate_strategy(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sage.training.evaluate_strategy import StrategyEvaluationConfig, run_strategy_evaluation

    console = Console(soft_wrap=True)
    config = StrategyEvaluationConfig(
        catalog=str(args.catalog) if args.catalog else None,
        datasets=tuple(d.strip() for d in args.datasets.split(",") if d.strip()),
        folds=args.folds,
        mode=args.mode,
        max_bars=args.max_bars,
        warmup_bars=args.warmup_bars,
        agents=args.agents,
        risk_model=args.risk_model,
    )
    report = run_strategy_evaluation(
        config, out_dir=args.out, log=lambda m: console.print(m, markup=False, highlight=False)
    )
    console.print(report.markdown, markup=False, highlight=False)
    console.print(
        f"written in {report.seconds:.0f} s: {args.out / 'strategy_evaluation.md'}, "
        f"{args.out / 'strategy_evaluation.json'}, {args.out / 'strategy_equity.parquet'}",
        markup=False,
        highlight=False,
    )
    return 0


def register(groups, argv: list[str]) -> None:
    ev = groups.evaluate.add_parser(
        "strategy",
        help="walk-forward backtests of the full SAGE strategy vs buy-and-hold and EMACross on the sample data",
        description="Runs the SageStrategy (RegimeActor live, exec algorithms, fees, seeded slippage, 1 ms "
        "latency) and two baselines in real BacktestNodes on ES 1-minute, EUR/USD hourly, SPX and GOOG daily "
        "bars, scores consecutive test windows and all windows pooled, and writes a markdown table and JSON. "
        "See docs/evaluation.md.",
    )
    ev.add_argument(
        "--catalog", type=Path, default=None, help="catalog with the sample bars (default catalogs/sample)"
    )
    ev.add_argument("--out", type=Path, default=Path("runs/strategy-evaluation"), help="output directory")
    ev.add_argument("--folds", type=int, default=4, help="consecutive test windows per dataset (default 4)")
    ev.add_argument(
        "--mode",
        choices=("continuous", "independent"),
        default="continuous",
        help="continuous: one walk through the data, windows scored separately (default); "
        "independent: a fresh engine per window after the warm-up",
    )
    ev.add_argument(
        "--datasets",
        default="es,eurusd,spx,goog",
        help="comma-separated: es, eurusd, spx, goog (default all)",
    )
    ev.add_argument("--max-bars", type=int, default=None, help="only the first N base bars of each dataset")
    ev.add_argument(
        "--warmup-bars",
        type=int,
        default=None,
        help="base bars before the first window (default per dataset)",
    )
    ev.add_argument(
        "--agents", default="default", help="agents checkpoint: name or directory (default: default)"
    )
    ev.add_argument("--risk-model", default="default", help="M-RMS checkpoint, or 'rules' (default: default)")
    ev.set_defaults(func=_evaluate_strategy)
