"""The ``sage`` command line.

Every sub-command that touches a catalog takes ``--catalog PATH`` (default: the bundled sample catalog,
``catalogs/sample``). Errors a user can fix (bad config key, malformed file, missing catalog) are
printed as one clear message with exit code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sage.data.sample import DEFAULT_CATALOG

console = Console(soft_wrap=True)  # long paths and report lines stay copy-pastable


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


# -- catalog ---------------------------------------------------------------------------------------


def _cmd_catalog_build(args: argparse.Namespace) -> int:
    from sage.data.sample import build_sample_catalog

    with console.status("building the sample catalog from catalogs/raw ..."):
        result = build_sample_catalog(args.catalog, force=args.force)
    console.print(result.summary())
    return 0


def _cmd_catalog_info(args: argparse.Namespace) -> int:
    from sage.data.catalog_info import describe_catalog

    table = Table(title=f"catalog {args.catalog}")
    for col in ("data type", "identifier", "rows", "first", "last"):
        table.add_column(col)
    for row in describe_catalog(args.catalog):
        table.add_row(row.data_type, row.identifier, f"{row.rows:,d}", row.first, row.last)
    console.print(table)
    return 0


def _cmd_catalog_clean(args: argparse.Namespace) -> int:
    from sage.data.catalog_clean import clean_catalog

    if not Path(args.catalog).is_dir():
        raise UserError(f"catalog {args.catalog} does not exist")
    report = clean_catalog(Path(args.catalog), dry_run=args.dry_run, min_age_s=args.min_age_mins * 60.0)
    console.print(str(report), markup=False, highlight=False)
    return 1 if report.errors else 0


def _cmd_catalog_synthetic(args: argparse.Namespace) -> int:
    from sage.data.synthetic import SyntheticMarketConfig, write_synthetic_catalog

    config = SyntheticMarketConfig(seed=args.seed, n_bars=args.bars)
    started = time.perf_counter()
    with console.status(f"generating {args.bars:,d} synthetic bars (seed {args.seed}) ..."):
        summary = write_synthetic_catalog(args.catalog, config, with_ticks=args.ticks, overwrite=args.overwrite)
    console.print(f"synthetic market written to {args.catalog} in {time.perf_counter() - started:.1f} s")
    for key, value in summary.items():
        console.print(f"  {key}: {value}")
    return 0


def _cmd_catalog_ingest(args: argparse.Namespace) -> int:
    from sage.data.ingest import IngestConfig, ingest_file

    if (args.bar_spec is None) == (not args.trades):
        raise UserError("give exactly one of --bar-spec SPEC (OHLCV bars) or --trades (trade ticks)")
    config = IngestConfig(
        instrument_id=args.instrument,
        trades=args.trades,
        bar_spec=args.bar_spec,
        kind=args.kind,
        price_precision=args.price_precision,
        size_precision=args.size_precision,
        tick_size=args.tick_size,
        multiplier=args.multiplier,
        currency=args.currency,
        tz=args.tz,
        timestamp_is=args.timestamp_is,
        drop_bad_rows=args.drop_bad_rows,
    )
    with console.status(f"validating {args.file} ..."):
        report = ingest_file(args.file, args.catalog, config, dry_run=args.dry_run)
    console.print(str(report), markup=False, highlight=False)
    return 0


# -- backtests -------------------------------------------------------------------------------------


def _print_outcome(outcome) -> None:
    result = outcome.result
    console.print(
        f"run {result.run_id}: {result.iterations:,d} iterations, {result.total_orders:,d} orders, "
        f"{result.total_positions:,d} positions, {result.elapsed_time:.2f} s"
    )
    for currency, stats in result.stats_pnls.items():
        table = Table(title=f"PnL statistics ({currency})")
        table.add_column("statistic")
        table.add_column("value", justify="right")
        for name, value in stats.items():
            table.add_row(name, f"{value:,.4f}" if isinstance(value, float) else str(value))
        console.print(table)
    table = Table(title="Returns statistics")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name, value in result.stats_returns.items():
        table.add_row(name, f"{value:,.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    if "RegimeData" in outcome.published:  # only the summary's columns: a long run has a record per bar
        wanted = ["instrument_id", "label", "fallback_level", "uncertainty"]
        columns = getattr(outcome.published, "columns", None)
        regimes = columns("RegimeData", wanted) if columns else outcome.published["RegimeData"][wanted]
        if len(regimes):
            _print_regimes(regimes)
    decisions = outcome.published.get("DecisionRecord")
    if decisions is not None and len(decisions):
        _print_decisions(decisions)
    for venue, report in outcome.account.items():
        if len(report):
            last = report.iloc[-1]
            console.print(f"{venue} final balance: {last['total']} {last['currency']}")


def _print_decisions(decisions) -> None:
    counts = decisions["action"].value_counts()
    console.print(
        f"SAGE decisions: {len(decisions):,d} ("
        + ", ".join(f"{action} {counts.get(action, 0):,d}" for action in ("BUY", "SELL", "CLOSE", "HOLD", "NO_TRADE"))
        + ")"
    )
    acted = decisions[decisions["action"].isin(["BUY", "SELL", "CLOSE"])]
    for row in acted.head(3).itertuples():
        console.print(f"  {row.explanation}", markup=False, highlight=False)
    if len(acted) > 3:
        console.print(f"  ... {len(acted) - 3} more: `sage explain RUN --at TIME` shows any decision in full")


def _print_regimes(regimes) -> None:
    from sage.data.regimes import Regime

    table = Table(title=f"Regimes published by RegimeActor ({len(regimes):,d} records)")
    for col in ("instrument", "regime", "share", "fallback level 1 (model + calibrated)", "mean uncertainty (L1)"):
        table.add_column(col, justify="right")
    for (instrument, label), group in regimes.groupby(["instrument_id", "label"]):
        level1 = group[group.fallback_level == 1]
        table.add_row(
            str(instrument), Regime(int(label)).name, f"{len(group) / len(regimes):.1%}",
            f"{len(level1) / len(group):.1%}",
            f"{level1.uncertainty.mean():.5f}" if len(level1) else "-",
        )  # fmt: skip
    console.print(table)
    levels = regimes.fallback_level.value_counts().sort_index()
    console.print("fallback levels: " + ", ".join(f"L{k}: {v:,d}" for k, v in levels.items()))


def _run_config(
    config_path: Path,
    catalog: Path,
    *,
    instrument: str | None = None,
    bar_type: str | None = None,
    out: Path | None = None,
    overwrite: bool = False,
) -> int:
    from sage.nodes.backtest import load_backtest_config, run_backtest

    if not catalog.exists():
        raise UserError(f"catalog {catalog} does not exist (build it with `sage catalog build`)")
    if out is not None and out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} exists and is not empty (pass --overwrite to replace it)")
    config = load_backtest_config(config_path, catalog=catalog, instrument=instrument, bar_type=bar_type)
    with console.status(f"running {config_path.name} on {catalog} ..."):
        outcome = run_backtest(config)
    _print_outcome(outcome)
    if out is not None:
        from sage.reports.run_dir import save_run

        with console.status(f"writing the run and its report to {out} ..."):
            run_path = save_run(outcome, out, config_path=config_path, catalog=catalog, run_config=config,
                                overwrite=overwrite)
        console.print(f"run saved to {run_path}; tearsheet: {run_path / 'report' / 'index.html'}")
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    return _run_config(
        Path(args.config),
        Path(args.catalog),
        instrument=args.instrument,
        bar_type=args.bar_type,
        out=args.out,
        overwrite=args.overwrite,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from sage.data.sample import build_sample_catalog

    catalog = Path(args.catalog)
    if catalog.resolve() == DEFAULT_CATALOG.resolve():
        console.print(build_sample_catalog(catalog).summary())
    config = Path(__file__).resolve().parents[1] / "configs" / "sage_backtest.yaml"
    # The demo owns its output directory: each run replaces the previous one.
    return _run_config(config, catalog, out=Path(args.out), overwrite=True)


def _cmd_live(args: argparse.Namespace) -> int:
    from sage.nodes.live import run_live

    speed: float | str | None = args.speed
    if speed is not None and speed != "max":
        try:
            speed = float(speed)
        except ValueError:
            raise UserError(f"--speed must be a number or 'max', got {args.speed!r}") from None
    # Runs in the main thread: Nautilus installs its SIGINT/SIGTERM handlers there to stop cleanly.
    outcome = run_live(
        args.config, args.catalog, speed=speed, max_bars=args.max_bars, persist=args.persist,
        timeout_secs=args.timeout,
    )
    console.print(outcome.summary(), markup=False, highlight=False)
    return 0


def _cmd_regime_precompute(args: argparse.Namespace) -> int:
    from sage.regime.precompute import precompute_regimes

    with console.status(f"precomputing regimes for {args.bar_type} with {args.model} ..."):
        result = precompute_regimes(args.catalog, args.bar_type, model=args.model, out_catalog=args.out_catalog)
    console.print(result.summary(), markup=False, highlight=False)
    return 0


def _cmd_train_regime(args: argparse.Namespace) -> int:
    from sage.training.regime import run_train_regime

    return run_train_regime(args, console)


# -- parser ----------------------------------------------------------------------------------------


def _add_catalog(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--catalog",
        type=Path,
        default=DEFAULT_CATALOG,
        help=f"ParquetDataCatalog directory (default: {DEFAULT_CATALOG})",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The full parser. ``argv`` lets heavy sub-commands (torch imports) register their options only
    when they are the command being run, so ``sage catalog info`` does not pay for importing torch."""
    parser = argparse.ArgumentParser(prog="sage", description="Regime-aware trading components for NautilusTrader")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show sage's component logs (fallback transitions, health flags)")
    sub = parser.add_subparsers(dest="command", required=True)

    catalog = sub.add_parser("catalog", help="build, inspect and extend Parquet data catalogs")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)

    build = catalog_sub.add_parser("build", help="build the sample catalog from catalogs/raw")
    _add_catalog(build)
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.set_defaults(func=_cmd_catalog_build)

    info = catalog_sub.add_parser("info", help="list what a catalog holds")
    _add_catalog(info)
    info.set_defaults(func=_cmd_catalog_info)

    clean = catalog_sub.add_parser(
        "clean",
        help="undo writes that were killed mid-commit and remove their staging leftovers",
        description="Recover unfinished commits (journals left by a killed writer: the files it had already "
        "renamed into place are removed, restoring the catalog) and delete hidden staging directories and "
        "temp files. Only items older than --min-age-mins are touched, so a running writer is never disturbed.",
    )
    _add_catalog(clean)
    clean.add_argument("--dry-run", action="store_true", help="list what would be removed, change nothing")
    clean.add_argument(
        "--min-age-mins", type=float, default=10.0, help="leave items younger than this alone (default 10)"
    )
    clean.set_defaults(func=_cmd_catalog_clean)

    synth = catalog_sub.add_parser("synthetic", help="write a synthetic regime-switching market")
    _add_catalog(synth)
    synth.add_argument("--bars", type=int, default=100_000, help="number of 1-minute bars (default 100000)")
    synth.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    synth.add_argument("--ticks", action="store_true", help="also write trade ticks")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing synthetic market there")
    synth.set_defaults(func=_cmd_catalog_synthetic)

    ingest = catalog_sub.add_parser(
        "ingest",
        help="validate and add a user's OHLCV bars or trade ticks (CSV, CSV.gz or parquet)",
        description="Validates the whole file first; a file with bad rows is refused with a report naming "
        "rows and reasons (or, with --drop-bad-rows, those rows are dropped and counted). A refused or "
        "failed ingest leaves the catalog exactly as it was. See docs/ingest.md.",
    )
    ingest.add_argument("file", type=Path, help="CSV, CSV.gz or parquet file")
    _add_catalog(ingest)
    ingest.add_argument("--instrument", required=True, help="instrument id, e.g. AAPL.XNAS or GBP/USD.SIM")
    ingest.add_argument("--bar-spec", help="bar specification, e.g. 1-MINUTE-LAST or 1-DAY-LAST (bars)")
    ingest.add_argument("--trades", action="store_true", help="the file holds trades (ts, price, size)")
    ingest.add_argument("--kind", choices=["equity", "future", "fx", "cfd"],
                        help="instrument kind when the catalog does not have it yet (default equity)")
    ingest.add_argument("--price-precision", type=int, help="price decimals (default 2 for a new instrument)")
    ingest.add_argument("--size-precision", type=int, help="size decimals (default 0 for a new instrument)")
    ingest.add_argument("--tick-size", help="price increment, e.g. 0.25 (default one unit of the last decimal)")
    ingest.add_argument("--multiplier", type=int, help="contract multiplier for futures (default 1)")
    ingest.add_argument("--currency", help="quote currency for a new instrument (default USD)")
    ingest.add_argument("--tz", default="UTC", help="time zone of naive timestamps (default UTC)")
    ingest.add_argument("--timestamp-is", choices=["open", "close"], default="open",
                        help="whether file timestamps mark the bar open (default) or close")
    ingest.add_argument("--drop-bad-rows", action="store_true", help="drop invalid rows instead of refusing")
    ingest.add_argument("--dry-run", action="store_true", help="validate and report without writing")
    ingest.set_defaults(func=_cmd_catalog_ingest)

    backtest = sub.add_parser("backtest", help="run a BacktestRunConfig YAML with a BacktestNode")
    backtest.add_argument("config", type=Path, help="YAML config (see configs/)")
    _add_catalog(backtest)
    backtest.add_argument("--instrument", default=None,
                          help="run on another instrument: NEW, or OLD=NEW when the config has several")
    backtest.add_argument("--bar-type", default=None,
                          help="run on other bars: NEW (e.g. AAPL.XNAS-1-MINUTE-LAST-EXTERNAL) or OLD=NEW")
    backtest.add_argument("--out", type=Path, default=None,
                          help="directory for the run's results (fills, positions, stats, decisions, report)")
    backtest.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    backtest.set_defaults(func=_cmd_backtest)

    live = sub.add_parser(
        "live",
        help="run a TradingNode YAML (offline paper trading on a catalog replay, or a real venue)",
        description="See docs/live.md. The catalog replay re-stamps bars to live time; credentials for real "
        "venues come only from environment variables referenced as ${NAME} in the YAML.",
    )
    live.add_argument("config", type=Path, help="YAML TradingNodeConfig (see configs/live_paper.yaml)")
    live.add_argument("--catalog", type=Path, default=None,
                      help=f"catalog to replay (default: the config's, else {DEFAULT_CATALOG})")
    live.add_argument("--speed", default=None, help="replay speed factor (60 = one minute per second) or 'max'")
    live.add_argument("--max-bars", type=int, default=None, help="stop after this many replayed bars")
    live.add_argument("--persist", type=Path, default=None, help="directory for streamed custom data (default ./runs)")
    live.add_argument("--timeout", type=float, default=None, help="stop the node after this many seconds")
    live.set_defaults(func=_cmd_live)

    regime = sub.add_parser("regime", help="regime detection: precompute RegimeData into a catalog")
    regime_sub = regime.add_subparsers(dest="regime_command", required=True)
    pre = regime_sub.add_parser(
        "precompute",
        help="run the regime detector in batch over catalog bars and write RegimeData",
        description="Same records as the RegimeActor publishes live (latency_us aside); a BacktestNode "
        "replays them with BacktestDataConfig(data_cls='sage.data.types:RegimeData', client_id=...) "
        "(configs/sage_replay.yaml) or, for long runs with bounded memory, with the RegimeReplayActor "
        "(configs/sage_replay_chunked.yaml, docs/regime_replay.md).",
    )
    _add_catalog(pre)
    pre.add_argument("--bar-type", required=True, help="bars in the catalog, e.g. ESU3.XCME-1-MINUTE-LAST-EXTERNAL")
    pre.add_argument("--model", default="default", help="model name, checkpoint directory or 'rules' (default: default)")
    pre.add_argument("--out-catalog", type=Path, default=None, help="write the records here (default: --catalog)")
    pre.set_defaults(func=_cmd_regime_precompute)

    train = sub.add_parser("train", help="train models (deterministic by seed)")
    train_sub = train.add_subparsers(dest="train_command", required=True)
    train_regime = train_sub.add_parser("regime", help="train the regime model bundle (RDE + classifier + forecaster)")
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["train", "regime"]:
        _add_train_regime_arguments(train_regime)
    train_regime.set_defaults(func=_cmd_train_regime)

    evaluate = sub.add_parser("evaluate", help="walk-forward out-of-sample evaluations")
    evaluate_sub = evaluate.add_subparsers(dest="evaluate_command", required=True)

    from sage.commands import CommandGroups, register_all

    register_all(CommandGroups(root=sub, train=train_sub, evaluate=evaluate_sub), args)

    demo = sub.add_parser(
        "demo",
        help="build the sample catalog if needed, run SAGE end to end (configs/sage_backtest.yaml), write its report",
    )
    _add_catalog(demo)
    demo.add_argument("--out", type=Path, default=Path("runs") / "demo",
                      help="run directory, replaced on every demo run (default runs/demo)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _add_train_regime_arguments(parser: argparse.ArgumentParser) -> None:
    from sage.training.regime import add_train_regime_arguments

    add_train_regime_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    # Fallback-chain transitions and health-flag changes are logged per event; during a batch run's
    # warm-up they are expected and would drown the summary. -v shows them.
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("sage").setLevel(logging.INFO if args.verbose else logging.ERROR)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except Exception as exc:
        # sage's own error classes (ConfigError, IngestError, CatalogWriteError, ...) and missing or
        # existing files carry a message meant for the user: print it, no traceback.
        if isinstance(exc, (UserError, FileNotFoundError, FileExistsError)) or type(exc).__module__.startswith("sage."):
            console.print("[red]error:[/red]", end=" ")
            console.print(str(exc), markup=False, highlight=False)  # messages contain [brackets]
            return 2
        raise

if __name__ == "__main__":
    sys.exit(main())
