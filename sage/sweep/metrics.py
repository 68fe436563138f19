"""Performance metrics of one backtest, from its fills and the bars it traded on (pure pandas/numpy).

Why not Nautilus's ``stats_pnls`` / ``stats_returns``: in this version they are built from *closed
positions* and *daily* returns. A NETTING strategy that flips long/short without going flat (the
bundled EMACross) reports a total PnL of 0.0, and a sweep window shorter than a few days has no daily
Sharpe at all. A sweep compares short windows, so it needs a mark-to-market equity curve:

    equity(t) = capital + cash(t) + sum_i position_i(t) * close_i(t) * multiplier_i

where ``cash`` accumulates ``-signed_qty * price * multiplier - commission`` of every fill with
``ts_event <= t`` and ``close_i(t)`` is the last close of instrument i at or before t. It is evaluated
on every bar (and fill) time stamp of the window. From it:

* ``pnl``: final equity - capital (commissions and the open position's mark included);
* ``return``: pnl / capital (capital = starting balance of the traded venues);
* ``sharpe`` / ``sortino``: mean per-step return over its std (downside deviation for Sortino),
  annualised by ``sqrt(steps per year)`` with steps per year = 365.25 days / median bar spacing
  (calendar time: a constant factor per bar type, so rankings within a sweep do not depend on it);
* ``max_drawdown``: largest peak-to-trough fall of equity as a fraction of the peak (>= 0);
* ``turnover``: traded notional / capital;
* ``trades`` / ``win_rate``: closed round trips (flat -> position -> flat or flip) and the share
  with positive PnL net of their commissions; ``fills``: number of fills.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

YEAR_NS = 365.25 * 86_400 * 1e9
METRIC_COLUMNS: tuple[str, ...] = (
    "pnl", "return", "sharpe", "sortino", "max_drawdown", "turnover", "trades", "fills", "win_rate",
)  # fmt: skip


def _money(value: object) -> float:
    """``"2.50 USD"`` -> 2.5; plain numbers pass through."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    return float(text.split()[0]) if text else 0.0


def normalise_fills(fills_report: pd.DataFrame) -> pd.DataFrame:
    """Nautilus's fills report -> ``ts`` (ns), ``instrument_id``, ``qty`` (signed), ``price``,
    ``commission``, ``currency``; sorted by time (stable, so same-time fills keep their order)."""
    if fills_report is None or len(fills_report) == 0:
        return pd.DataFrame({"ts": pd.Series(dtype="int64"), "instrument_id": pd.Series(dtype=str),
                             "qty": pd.Series(dtype=float), "price": pd.Series(dtype=float),
                             "commission": pd.Series(dtype=float), "currency": pd.Series(dtype=str)})  # fmt: skip
    side = np.where(fills_report["order_side"].astype(str).str.upper() == "SELL", -1.0, 1.0)
    out = pd.DataFrame(
        {
            "ts": pd.to_datetime(fills_report["ts_event"], utc=True).astype("int64").to_numpy(),
            "instrument_id": fills_report["instrument_id"].astype(str).to_numpy(),
            "qty": side * fills_report["last_qty"].astype(float).to_numpy(),
            "price": fills_report["last_px"].astype(float).to_numpy(),
            "commission": [_money(c) for c in fills_report["commission"]],
            "currency": fills_report["currency"].astype(str).to_numpy(),
        }
    )
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def equity_curve(
    fills: pd.DataFrame,
    closes: Mapping[str, pd.Series],
    multipliers: Mapping[str, float],
    capital: float,
) -> pd.Series:
    """Mark-to-market equity on the union of bar and fill times (see the module docstring).

    ``fills``: as :func:`normalise_fills`; ``closes``: instrument id -> close prices indexed by
    ``ts_event`` (ns, sorted); ``multipliers``: instrument id -> contract multiplier.
    """
    missing = sorted(set(fills["instrument_id"]) - set(closes))
    if missing:
        raise ValueError(f"no bars to mark {missing} to market; add their bar type to the config's data")
    grid = np.unique(np.concatenate([*(s.index.to_numpy(dtype="int64") for s in closes.values()),
                                     fills["ts"].to_numpy(dtype="int64")]))  # fmt: skip
    equity = np.full(grid.shape, float(capital))
    for instrument, close in closes.items():
        own = fills[fills["instrument_id"] == instrument]
        mult = float(multipliers.get(instrument, 1.0))
        at = np.searchsorted(own["ts"].to_numpy(), grid, side="right")  # fills with ts <= t
        pos = np.concatenate([[0.0], np.cumsum(own["qty"].to_numpy())])[at]
        flows = -own["qty"].to_numpy() * own["price"].to_numpy() * mult - own["commission"].to_numpy()
        cash = np.concatenate([[0.0], np.cumsum(flows)])[at]
        idx = np.searchsorted(close.index.to_numpy(dtype="int64"), grid, side="right") - 1
        px = np.where(idx >= 0, close.to_numpy(dtype=float)[np.maximum(idx, 0)], np.nan)
        # Before the first close the position is necessarily 0 (fills happen at bar prices).
        equity += cash + np.where(pos != 0.0, pos * np.nan_to_num(px) * mult, 0.0)
    return pd.Series(equity, index=grid, name="equity")


def round_trips(fills: pd.DataFrame, multiplier: float = 1.0) -> np.ndarray:
    """Net PnL of each closed round trip of one instrument (commissions included, pro rata on flips).

    A round trip opens when the position leaves 0 and closes when it returns to 0 or changes sign;
    a flip closes one round trip and opens the next at the same fill.
    """
    pnls: list[float] = []
    pos = avg = trip = 0.0
    for qty, price, fee in fills[["qty", "price", "commission"]].itertuples(index=False):
        if qty == 0.0:
            continue
        if pos == 0.0:
            pos, avg, trip = qty, price, -fee
        elif math.copysign(1.0, qty) == math.copysign(1.0, pos):
            avg = (avg * abs(pos) + price * abs(qty)) / (abs(pos) + abs(qty))
            pos += qty
            trip -= fee
        else:
            closing = min(abs(qty), abs(pos))
            share = closing / abs(qty)
            trip += closing * (price - avg) * math.copysign(1.0, pos) * multiplier - fee * share
            new = pos + qty
            if abs(new) < 1e-12 or math.copysign(1.0, new) != math.copysign(1.0, pos):
                pnls.append(trip)
                if abs(new) < 1e-12:
                    pos = avg = trip = 0.0
                else:
                    pos, avg, trip = new, price, -fee * (1.0 - share)
            else:
                pos = new
    return np.asarray(pnls, dtype=float)


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualised mean / std of per-step returns (NaN when flat or fewer than 2 steps)."""
    returns = np.asarray(returns, dtype=float)
    if returns.size < 2:
        return math.nan
    std = returns.std(ddof=1)
    return float(returns.mean() / std * math.sqrt(periods_per_year)) if std > 0 else math.nan


def sortino(returns: np.ndarray, periods_per_year: float) -> float:
    """Annualised mean / downside deviation (root mean square of negative returns; NaN if none)."""
    returns = np.asarray(returns, dtype=float)
    if returns.size < 2:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(returns, 0.0) ** 2)))
    return float(returns.mean() / downside * math.sqrt(periods_per_year)) if downside > 0 else math.nan


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0 for a curve that never falls)."""
    equity = np.asarray(equity, dtype=float)
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(np.max((peak - equity) / peak))


def periods_per_year(timestamps: np.ndarray) -> float:
    """365.25 days / median spacing of ``timestamps`` (ns); NaN with fewer than 2 distinct stamps."""
    steps = np.diff(np.unique(np.asarray(timestamps, dtype="int64")))
    return YEAR_NS / float(np.median(steps)) if steps.size else math.nan


def summarize(
    fills: pd.DataFrame,
    closes: Mapping[str, pd.Series],
    multipliers: Mapping[str, float],
    capital: float,
) -> dict[str, float]:
    """Every metric of :data:`METRIC_COLUMNS` for one backtest (see the module docstring)."""
    if capital <= 0:
        raise ValueError(f"capital must be positive, got {capital}")
    curve = equity_curve(fills, closes, multipliers, capital)
    values = curve.to_numpy()
    returns = np.diff(values) / values[:-1] if values.size > 1 else np.empty(0)
    bar_times = np.concatenate([s.index.to_numpy(dtype="int64") for s in closes.values()]) if closes else np.empty(0)
    ppy = periods_per_year(bar_times)
    trips = np.concatenate(
        [round_trips(fills[fills["instrument_id"] == i], float(multipliers.get(i, 1.0)))
         for i in sorted(set(fills["instrument_id"]))] or [np.empty(0)]
    )  # fmt: skip
    notional = float(np.sum(np.abs(fills["qty"] * fills["price"] * fills["instrument_id"].map(
        lambda i: float(multipliers.get(i, 1.0)))))) if len(fills) else 0.0  # fmt: skip
    pnl = float(values[-1] - capital) if values.size else 0.0
    return {
        "pnl": pnl,
        "return": pnl / capital,
        "sharpe": sharpe(returns, ppy),
        "sortino": sortino(returns, ppy),
        "max_drawdown": max_drawdown(values),
        "turnover": notional / capital,
        "trades": int(trips.size),
        "fills": len(fills),
        "win_rate": float(np.mean(trips > 0)) if trips.size else math.nan,
    }
