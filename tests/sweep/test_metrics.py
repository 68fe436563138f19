"""Sweep metrics: a hand-checked example, edge cases, and agreement with the Nautilus account."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest

from sage.sweep.metrics import (
    equity_curve,
    max_drawdown,
    normalise_fills,
    periods_per_year,
    round_trips,
    sharpe,
    sortino,
    summarize,
)

BASE = Path(__file__).resolve().parents[2] / "configs" / "sweeps" / "ema_cross_base.yaml"


def _fills(rows: list[tuple[int, float, float, float]], instrument: str = "X.V") -> pd.DataFrame:
    ts, qty, px, fee = zip(*rows, strict=True)
    return pd.DataFrame({"ts": np.array(ts, dtype="int64"), "instrument_id": instrument, "qty": qty,
                         "price": px, "commission": fee, "currency": "USD"})  # fmt: skip


# buy 1 @100, flip with sell 2 @110, cover with buy 1 @105; multiplier 2, fees 1 per contract
FLIP = _fills([(1, 1.0, 100.0, 1.0), (2, -2.0, 110.0, 2.0), (4, 1.0, 105.0, 1.0)])
CLOSES = {"X.V": pd.Series([100.0, 110.0, 108.0, 105.0], index=pd.Index([1, 2, 3, 4], dtype="int64"))}


def test_round_trips_split_a_flip_and_its_fee() -> None:
    # long: 1 * (110 - 100) * 2 - open fee 1 - half the flip fee 1 = 18
    # short: -other half 1 + 1 * (110 - 105) * 2 - cover fee 1 = 8
    np.testing.assert_allclose(round_trips(FLIP, multiplier=2.0), [18.0, 8.0])
    assert round_trips(FLIP.iloc[:1], 2.0).size == 0  # an open position is not a trade yet
    scale_in = _fills([(1, 1.0, 10.0, 0.0), (2, 1.0, 12.0, 0.0), (3, -2.0, 12.0, 0.0)])
    np.testing.assert_allclose(round_trips(scale_in), [2.0])  # average entry 11


def test_equity_is_marked_to_market_on_every_bar() -> None:
    curve = equity_curve(FLIP, CLOSES, {"X.V": 2.0}, capital=1000.0)
    np.testing.assert_allclose(curve.to_numpy(), [999.0, 1017.0, 1021.0, 1026.0])
    assert list(curve.index) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="no bars to mark"):
        equity_curve(FLIP, {}, {}, 1000.0)


def test_summary_of_the_example() -> None:
    s = summarize(FLIP, CLOSES, {"X.V": 2.0}, capital=1000.0)
    assert s["pnl"] == pytest.approx(26.0) and s["return"] == pytest.approx(0.026)
    assert s["trades"] == 2 and s["fills"] == 3 and s["win_rate"] == 1.0
    assert s["turnover"] == pytest.approx((100 + 220 + 105) * 2 / 1000)
    assert s["max_drawdown"] == 0.0  # equity only rises after the first bar
    flat = summarize(normalise_fills(None), CLOSES, {}, capital=1000.0)
    assert flat["pnl"] == 0.0 and math.isnan(flat["sharpe"]) and math.isnan(flat["win_rate"])


def test_ratio_edge_cases() -> None:
    assert math.isnan(sharpe(np.zeros(10), 252)) and math.isnan(sharpe(np.ones(1), 252))
    r = np.array([0.01, -0.02, 0.03, 0.0])
    assert sharpe(r, 4) == pytest.approx(r.mean() / r.std(ddof=1) * 2)
    assert sortino(r, 4) == pytest.approx(r.mean() / math.sqrt(0.02**2 / 4) * 2)
    assert math.isnan(sortino(np.array([0.01, 0.02]), 252))  # no downside
    assert max_drawdown(np.array([100.0, 120.0, 90.0, 130.0, 117.0])) == pytest.approx(0.25)
    assert periods_per_year(np.array([0, 60, 120, 240]) * 10**9) == pytest.approx(365.25 * 1440)


def test_pnl_matches_the_nautilus_account(sample_catalog: Path) -> None:
    """On a real backtest, mark-to-market PnL = the account's balance change (realised, net of fees)
    + the open position marked at the last close, with Nautilus's own average entry price."""
    from sage.nodes.backtest import load_backtest_config, run_backtest
    from sage.sweep.spec import SweepTask, to_nanos
    from sage.sweep.task import _closes

    start, end = to_nanos("2013-09-02T13:00"), to_nanos("2013-09-02T20:00")
    config = msgspec.structs.replace(load_backtest_config(BASE, catalog=sample_catalog), start=start, end=end)
    outcome = run_backtest(config)
    fills = normalise_fills(outcome.fills)
    assert len(fills) > 10
    task = SweepTask(0, "ES", 0, "test", 0, (), start, end,
                     {"data": [{"bar_types": ["ESU3.XCME-1-MINUTE-LAST-EXTERNAL"]}]}, str(sample_catalog))  # fmt: skip
    closes = {"ESU3.XCME": _closes(task, "ESU3.XCME")}
    assert closes["ESU3.XCME"].index.min() >= start and closes["ESU3.XCME"].index.max() <= end
    s = summarize(fills, closes, {"ESU3.XCME": 50.0}, capital=1_000_000.0)
    balance = outcome.account["XCME"]["total"].astype(float)
    position = outcome.positions[~outcome.positions.is_snapshot.astype(bool)].iloc[-1]
    signed = float(fills.qty.sum())
    assert abs(signed) == float(position.quantity)
    unrealised = signed * (closes["ESU3.XCME"].iloc[-1] - float(position.avg_px_open)) * 50.0
    assert s["pnl"] == pytest.approx(balance.iloc[-1] - balance.iloc[0] + unrealised, abs=1e-6)
