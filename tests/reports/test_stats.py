"""sage's performance statistics on equity curves whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sage.reports.stats import EquityCurve, equity_curves, performance_stats


def _curve(values: list[float], freq: str = "1D") -> EquityCurve:
    eq = pd.Series(values, index=pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC"))
    return EquityCurve("USD", "mark_to_market", eq, eq / eq.cummax() - 1.0)


def _fills(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """(time, side, qty, price, commission) rows of a one-instrument fills report."""
    return pd.DataFrame(
        {
            "ts_event": pd.to_datetime([r[0] for r in rows], utc=True),
            "instrument_id": "X.SIM",
            "currency": "USD",
            "order_side": [r[1] for r in rows],
            "last_qty": [str(r[2]) for r in rows],
            "last_px": [str(r[3]) for r in rows],
            "commission": [f"{r[4]:.2f} USD" for r in rows],
        }
    )


def test_drawdown_sharpe_sortino_by_hand() -> None:
    values = [100.0, 110.0, 99.0, 121.0, 108.9]
    stats = performance_stats(_curve(values), _fills([]), {})
    returns = np.array([0.1, -0.1, 121 / 99 - 1, -0.1])  # the first day is the start itself
    assert stats.n_returns == 4
    assert stats.sharpe == pytest.approx(returns.mean() / returns.std(ddof=1) * math.sqrt(252))
    downside = np.sqrt(np.mean(np.minimum(returns, 0) ** 2))
    assert stats.sortino == pytest.approx(returns.mean() / downside * math.sqrt(252))
    assert stats.max_drawdown == pytest.approx(0.1)  # 110 -> 99 and 121 -> 108.9 are both -10 %
    assert stats.max_drawdown_ccy == pytest.approx(12.1)
    assert stats.total_return == pytest.approx(0.089)


def test_too_few_returns_give_none_not_a_number() -> None:
    stats = performance_stats(_curve([100.0, 100.5, 101.0], freq="1h"), _fills([]), {})
    assert stats.n_returns == 1 and stats.sharpe is None and stats.sortino is None
    assert stats.turnover_annual is None  # shorter than a day


def test_mark_to_market_and_turnover_of_a_round_trip() -> None:
    """Buy 2 at 10, mark at 12 and 9, sell 2 at 11: PnL follows the closes while open, then stays at +2*1*m."""
    bars = pd.DataFrame(
        {"close": [10.0, 12.0, 9.0, 11.0, 11.5]},
        index=pd.date_range("2024-01-01", periods=5, freq="1D", tz="UTC"),
    )
    fills = _fills([("2024-01-01", "BUY", 2, 10.0, 1.0), ("2024-01-04", "SELL", 2, 11.0, 1.0)])
    account = {
        "SIM": pd.DataFrame(
            {"total": ["1000.00"], "currency": ["USD"]}, index=pd.DatetimeIndex(["2023-12-31"], tz="UTC")
        )
    }
    curve = equity_curves(fills, account, {"X.SIM": bars}, {"X.SIM": 5.0})["USD"]
    expected = 1000 + np.array([-1.0, 2 * 2 * 5 - 1, -1 * 2 * 5 - 1, 2 * 5 - 2, 2 * 5 - 2])
    np.testing.assert_allclose(curve.equity.to_numpy(), expected)
    stats = performance_stats(curve, fills, {"X.SIM": 5.0})
    assert stats.traded_notional == pytest.approx(2 * 10 * 5 + 2 * 11 * 5)
    assert stats.turnover == pytest.approx(stats.traded_notional / expected.mean())
    assert stats.max_drawdown == pytest.approx(30 / 1019)  # 1019 -> 989


def test_without_bars_equity_is_the_account_balance() -> None:
    fills = _fills([("2024-01-02", "BUY", 1, 10.0, 0.0)])
    account = {
        "SIM": pd.DataFrame(
            {"total": ["1000.00", "990.00"], "currency": ["USD", "USD"]},
            index=pd.DatetimeIndex(["2024-01-01", "2024-01-03"], tz="UTC"),
        )
    }
    curve = equity_curves(fills, account, {}, {"X.SIM": 1.0})["USD"]
    assert curve.source == "account_balance"
    assert curve.equity.tolist() == [1000.0, 990.0]
