"""``sage evaluate strategy``: windows, scoring and real BacktestNode runs on a slice of the sample data."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import torch

from sage.cli import main
from sage.training import metrics as M
from sage.training.evaluate_strategy import (
    DATASETS,
    STRATEGIES,
    RunSeries,
    StrategyEvaluationConfig,
    StrategyEvaluationError,
    run_strategy_evaluation,
    score_window,
    sizing,
    summarize,
    window_bounds,
)
from sage.training.regime import load_catalog_bars

torch.set_num_threads(1)

# GOOG daily: the cheapest real dataset (daily decisions, no strategic agents). 100 warm-up + 300 scored bars.
_SMALL = {"datasets": ("goog",), "folds": 2, "max_bars": 400, "warmup_bars": 100}


def test_windows_partition_the_span_after_warmup():
    windows = window_bounds(1000, 100, 3)
    assert windows[0][0] == 100 and windows[-1][1] == 1000
    assert all(a < b for a, b in windows)
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))
    with pytest.raises(StrategyEvaluationError, match="too few"):
        window_bounds(110, 100, 6)
    with pytest.raises(StrategyEvaluationError, match="folds"):
        window_bounds(1000, 100, 0)


def test_sizing_is_one_times_equity_and_a_fifth_per_unit_on_the_lot():
    base, unit = sizing(1650.0, 50.0, 1.0, 1_000_000.0)  # ES: 82,500 USD per contract
    assert (base, unit) == (Decimal(12), Decimal(2))
    base, unit = sizing(1455.23, 1.0, 0.1, 1_000_000.0)  # SPX CFD, 0.1 lots
    assert base == Decimal("687.1") and unit == Decimal("137.4")
    assert float(base) * 1455.23 <= 1_000_000.0


def _series(equity: np.ndarray, position: np.ndarray | None = None) -> RunSeries:
    n = equity.size
    ts = np.arange(n, dtype=np.int64) * 86_400 * 10**9 + 10**18
    fills = pd.DataFrame(
        {
            "ts": pd.Series(dtype=np.int64),
            "signed_qty": pd.Series(dtype=float),
            "price": pd.Series(dtype=float),
        }
    )
    pos = np.zeros(n) if position is None else position
    return RunSeries(ts, equity, pos, np.full(n, 100.0), fills, 1.0)


def test_scoring_matches_the_shared_metrics_and_windows_pool_exactly():
    rng = np.random.default_rng(0)
    close = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, 301))
    equity = 1e6 * close / close[0]  # fully invested, no costs
    series = _series(equity)
    windows = window_bounds(301, 1, 3)
    parts = [score_window(series, a, b, 252.0) for a, b in windows]
    pooled = summarize(parts, 252.0)
    reference = M.performance(np.ones(300), M.forward_returns(close), 0.0, 252.0)
    assert pooled["sharpe"] == pytest.approx(reference.sharpe, rel=1e-12)
    assert pooled["total_return"] == pytest.approx(reference.total_return, rel=1e-12)
    assert pooled["max_drawdown"] == pytest.approx(reference.max_drawdown, rel=1e-12)
    compounded = np.prod([1.0 + summarize([p], 252.0)["total_return"] for p in parts]) - 1.0
    assert pooled["total_return"] == pytest.approx(compounded, rel=1e-12)
    assert pooled["bars"] == 300


@pytest.fixture(scope="module")
def small_report(sample_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("strategy-eval")
    config = StrategyEvaluationConfig(catalog=str(sample_catalog), **_SMALL)
    return run_strategy_evaluation(config, out_dir=out), out


def test_real_runs_write_tables_and_buy_and_hold_earns_the_price_change(small_report, sample_catalog):
    report, out = small_report
    assert (out / "strategy_evaluation.md").is_file()
    payload = json.loads((out / "strategy_evaluation.json").read_text())
    (result,) = payload["results"]
    assert result["dataset"] == "GOOG daily" and len(result["windows"]) == 2
    assert set(result["strategies"]) == set(STRATEGIES)
    for name in STRATEGIES:
        assert len(result["strategies"][name]["windows"]) == 2
        assert "| GOOG daily (300 bars) |" in report.markdown

    # Buy-and-hold bought base_quantity during the warm-up: its scored equity change is exactly that
    # quantity times the price change over the scored bars (mark-to-market scoring, nothing invented).
    bars = load_catalog_bars(sample_catalog, DATASETS["goog"].bar_type).iloc[:400]
    qty = float(result["sizing"][0]["base_quantity"])
    bh = result["strategies"]["buy_and_hold"]["pooled"]
    assert len(report.equity.query("strategy == 'buy_and_hold'")) == 300  # one equity point per scored bar
    close = bars["close"].to_numpy()
    # Bought on bar 0, filled at bar 1's close (1 ms latency); equity before the first window:
    equity_99 = 1_000_000.0 + qty * (close[99] - close[1])
    expected = qty * (close[-1] - close[99]) / equity_99
    # rel slack: the entry's fee (5 bp) and at most one tick of slippage shift equity_99 by < 0.1 %
    assert bh["total_return"] == pytest.approx(expected, rel=1e-3)
    assert bh["trades"] == 0 and bh["exposure"] > 0.9

    sage = result["strategies"]["sage"]["pooled"]
    assert sage["decisions"] == 300  # one decision per daily bar in the windows
    assert sage["strategic_decisions"] == 0  # GOOG runs the tactical agents only
    assert math.isfinite(sage["sharpe"]) and sage["max_drawdown"] >= 0.0
    ema = result["strategies"]["ema_cross_10_30"]["pooled"]
    assert ema["trades"] > 0 and ema["exposure"] < 1.5  # PatientEMACross does not stack positions


def test_evaluation_is_deterministic(small_report, sample_catalog):
    report, _ = small_report
    again = run_strategy_evaluation(StrategyEvaluationConfig(catalog=str(sample_catalog), **_SMALL))
    assert again.markdown == report.markdown
    for a, b in zip(report.results, again.results):
        assert a["strategies"] == b["strategies"]


def test_independent_mode_runs_one_engine_per_window(sample_catalog):
    config = StrategyEvaluationConfig(catalog=str(sample_catalog), mode="independent", **_SMALL)
    report = run_strategy_evaluation(config)
    (result,) = report.results
    assert len(result["sizing"]) == 2  # sized at each window's own first bar
    assert sum(w["bars"] for w in result["strategies"]["sage"]["windows"]) == 300


def test_cli_and_user_errors(sample_catalog, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "strategy", "--help"])
    assert exc.value.code == 0
    assert "--folds" in capsys.readouterr().out
    code = main(
        [
            "evaluate",
            "strategy",
            "--catalog",
            str(sample_catalog),
            "--datasets",
            "nope",
            "--out",
            str(tmp_path),
        ]
    )
    assert code != 0
    assert "unknown dataset" in capsys.readouterr().out
    code = main(["evaluate", "strategy", "--catalog", str(tmp_path / "missing"), "--out", str(tmp_path)])
    assert code != 0
    assert "not found" in capsys.readouterr().out
