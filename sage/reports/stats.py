"""Performance statistics of a run: mark-to-market equity, Sharpe, Sortino, max drawdown, turnover.

Why sage computes its own next to Nautilus's: Nautilus's returns statistics are built from *realized*
position returns per day, and its account report only moves when PnL is realized, so an open losing
position is invisible to its drawdown. Here the equity is marked to market on every bar the run traded:

    pnl_i(t) = cash_i(t) + position_i(t) * close_i(t) * multiplier_i
    cash_i(t) = - sum over fills f of instrument i with ts_f <= t of (signed_qty_f * price_f * multiplier_i
                + commission_f)

which is exact given the fills and the bar closes (a fill at t counts from t on; positions are marked at
the last close at or before t, never a later one). With the run flat at the end, the final equity equals
Nautilus's final account balance (a test checks that on the demo run). Equity is kept per settlement
currency (no FX conversion is invented); instruments without bars or without a known multiplier fall back
to the venue account balances of that currency, and the result says which source it used.

Returns for Sharpe/Sortino are *daily*: the last equity of each UTC day on which the run had bars (days
without any observation are skipped, not counted as zero-return days), annualised with 252 periods.
Turnover is traded notional (|qty| * price * multiplier, summed over fills) over mean equity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
import numpy as np
import pandas as pd

__all__ = [
    "EquityCurve",
    "PerformanceStats",
    "equity_curves",
    "fills_numeric",
    "performance_stats",
    "run_performance",
]

#: Trading days per year used to annualise daily Sharpe/Sortino (Nautilus uses the same).
PERIODS_PER_YEAR: int = 252
_NS_PER_YEAR = 365.25 * 86_400 * 1e9


class PerformanceStats(msgspec.Struct, frozen=True, kw_only=True):
    """sage's statistics for one settlement currency (``None`` where undefined, e.g. too few returns)."""

    currency: str
    """Settlement currency of the equity these numbers describe."""
    equity_source: str
    """``"mark_to_market"`` (fills + bar closes) or ``"account_balance"`` (realized only, the fallback)."""
    start_equity: float
    """Equity before the first fill (sum of the starting balances of the venues in this currency)."""
    end_equity: float
    """Equity at the last observation."""
    total_return: float
    """end_equity / start_equity - 1."""
    n_returns: int
    """Daily returns the ratios are computed from; read Sharpe/Sortino with this in mind."""
    sharpe: float | None
    """mean / std (ddof 1) of daily returns * sqrt(252); None with fewer than 2 returns or zero std."""
    sortino: float | None
    """mean / downside deviation (target 0) * sqrt(252); None without a negative return."""
    max_drawdown: float
    """Largest peak-to-trough fall of equity as a fraction of the peak (0.05 = 5 %), bar resolution."""
    max_drawdown_ccy: float
    """The same fall in currency units."""
    max_drawdown_duration_days: float
    """Longest time spent below a previous peak, in days."""
    traded_notional: float
    """Sum over fills of |qty| * price * multiplier."""
    turnover: float
    """traded_notional / mean equity over the run."""
    turnover_annual: float | None
    """turnover per year of run span; None for a run shorter than a day."""


@dataclass(frozen=True)
class EquityCurve:
    """Equity of one settlement currency over time (UTC index) and its drawdown (<= 0, a fraction)."""

    currency: str
    source: str
    equity: pd.Series
    drawdown: pd.Series


def fills_numeric(fills: pd.DataFrame) -> pd.DataFrame:
    """A Nautilus fills report as numbers: ``ts`` (int ns), ``instrument_id``, ``currency``,
    ``signed_qty`` (+buy/-sell), ``price``, ``commission`` (its leading number), sorted by time."""
    if fills is None or len(fills) == 0:
        return pd.DataFrame(
            {
                "ts": pd.Series(dtype=np.int64),
                "instrument_id": pd.Series(dtype=str),
                "currency": pd.Series(dtype=str),
                "signed_qty": pd.Series(dtype=float),
                "price": pd.Series(dtype=float),
                "commission": pd.Series(dtype=float),
            }
        )
    df = fills.reset_index(drop=True)
    side = np.where(df["order_side"].astype(str).str.upper() == "BUY", 1.0, -1.0)
    commission = (
        df["commission"].astype(str).str.split(" ").str[0].astype(float).to_numpy()
        if "commission" in df.columns
        else np.zeros(len(df))
    )
    out = pd.DataFrame(
        {
            "ts": pd.to_datetime(df["ts_event"], utc=True).astype("int64").to_numpy(),
            "instrument_id": df["instrument_id"].astype(str).to_numpy(),
            "currency": df["currency"].astype(str).to_numpy(),
            "signed_qty": side * df["last_qty"].astype(float).to_numpy(),
            "price": df["last_px"].astype(float).to_numpy(),
            "commission": commission,
        }
    )
    return out.sort_values("ts", kind="stable").reset_index(drop=True)


def _account_balances(account: Mapping[str, pd.DataFrame]) -> dict[str, tuple[float, pd.Series]]:
    """Per currency: (sum of starting balances, summed account ``total`` forward-filled over venues)."""
    per_ccy: dict[str, list[pd.Series]] = {}
    for report in account.values():
        if report is None or len(report) == 0:
            continue
        for ccy, rows in report.groupby(report["currency"].astype(str), sort=False):
            s = pd.Series(rows["total"].astype(float).to_numpy(), index=pd.to_datetime(rows.index, utc=True))
            per_ccy.setdefault(str(ccy), []).append(s.groupby(level=0).last())
    out: dict[str, tuple[float, pd.Series]] = {}
    for ccy, series in per_ccy.items():
        start = float(sum(s.iloc[0] for s in series))
        total = pd.concat(series, axis=1).sort_index().ffill()
        total = total.fillna(pd.Series({i: series[i].iloc[0] for i in range(len(series))}))
        out[ccy] = (start, total.sum(axis=1))
    return out


def _instrument_pnl(
    fills: pd.DataFrame, bar_ts: np.ndarray, close: np.ndarray, multiplier: float
) -> pd.Series:
    """Mark-to-market PnL of one instrument on the union of its bar and fill times (module docstring)."""
    grid = np.union1d(bar_ts, fills["ts"].to_numpy(dtype=np.int64))
    k = np.searchsorted(fills["ts"].to_numpy(dtype=np.int64), grid, side="right")  # fills with ts <= t
    qty = fills["signed_qty"].to_numpy(dtype=float)
    cash_flow = -(qty * fills["price"].to_numpy(dtype=float) * multiplier) - fills["commission"].to_numpy(
        dtype=float
    )
    position = np.concatenate(([0.0], np.cumsum(qty)))[k]
    cash = np.concatenate(([0.0], np.cumsum(cash_flow)))[k]
    j = np.searchsorted(bar_ts, grid, side="right") - 1
    mark = np.where(j >= 0, close[np.clip(j, 0, None)], np.nan)
    # Before the first bar there is no close: mark a fill at its own price (position * 0 otherwise).
    first_px = fills["price"].to_numpy(dtype=float)[np.clip(k - 1, 0, None)] if len(fills) else mark
    mark = np.where(np.isnan(mark), first_px, mark)
    pnl = cash + np.where(position != 0.0, position * mark * multiplier, 0.0)
    index = pd.DatetimeIndex(grid.view("datetime64[ns]")).tz_localize("UTC")
    return pd.Series(pnl, index=index)


def equity_curves(
    fills: pd.DataFrame,
    account: Mapping[str, pd.DataFrame],
    bars_by_instrument: Mapping[str, pd.DataFrame],
    multipliers: Mapping[str, float],
    start_ns: int | None = None,
) -> dict[str, EquityCurve]:
    """Equity per settlement currency: marked to market when every traded instrument of that currency has
    bars and a multiplier, else the summed venue account balances. ``start_ns`` places the starting
    equity (default: the first observation)."""
    balances = _account_balances(account)
    fn = fills_numeric(fills)
    currencies = sorted(set(balances) | set(fn["currency"]))
    curves: dict[str, EquityCurve] = {}
    for ccy in currencies:
        ccy_fills = fn[fn["currency"] == ccy]
        start_equity, balance = balances.get(ccy, (0.0, pd.Series(dtype=float)))
        instruments = sorted(set(ccy_fills["instrument_id"]))
        can_mark = bool(instruments) and all(
            i in bars_by_instrument and len(bars_by_instrument[i]) and i in multipliers for i in instruments
        )
        if can_mark:
            parts = []
            for inst in instruments:
                bars = bars_by_instrument[inst]
                ts = pd.DatetimeIndex(bars.index).tz_convert("UTC").as_unit("ns").asi8
                parts.append(
                    _instrument_pnl(
                        ccy_fills[ccy_fills["instrument_id"] == inst],
                        ts,
                        bars["close"].to_numpy(dtype=float),
                        float(multipliers[inst]),
                    )
                )
            pnl = pd.concat(parts, axis=1).sort_index().ffill().fillna(0.0).sum(axis=1)
            equity, source = start_equity + pnl, "mark_to_market"
        elif len(balance):
            equity, source = balance, "account_balance"
        else:
            continue
        equity = equity.groupby(level=0).last()
        if start_ns is not None:
            start = pd.Timestamp(int(start_ns), tz="UTC")
            if start < equity.index[0]:
                equity = pd.concat([pd.Series([start_equity], index=[start]), equity])
        equity.name = f"equity_{ccy}"
        peak = equity.cummax()
        drawdown = (equity / peak - 1.0).where(peak > 0, 0.0)
        curves[ccy] = EquityCurve(ccy, source, equity, drawdown)
    return curves


def _none_if_bad(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def performance_stats(
    curve: EquityCurve,
    fills: pd.DataFrame,
    multipliers: Mapping[str, float],
    periods_per_year: int = PERIODS_PER_YEAR,
) -> PerformanceStats:
    """Sharpe, Sortino, drawdown and turnover of one equity curve (``fills``: a Nautilus fills report)."""
    eq = curve.equity
    start_equity, end_equity = float(eq.iloc[0]), float(eq.iloc[-1])
    daily = eq.resample("1D").last().dropna()
    # The first day's return is measured from the starting equity when that day saw anything after the
    # start; a first day holding only the start point would add a spurious zero return.
    first_day_points = int((eq.index.floor("1D") == eq.index[0].floor("1D")).sum())
    head = [start_equity] if first_day_points > 1 else []
    levels = np.concatenate((head, daily.to_numpy(dtype=float)))
    returns = levels[1:] / levels[:-1] - 1.0 if len(daily) else np.empty(0)
    n = len(returns)
    scale = math.sqrt(periods_per_year)
    std = float(np.std(returns, ddof=1)) if n >= 2 else float("nan")
    sharpe = float(np.mean(returns)) / std * scale if n >= 2 and std > 0 else float("nan")
    downside = np.minimum(returns, 0.0)
    dd_dev = float(np.sqrt(np.mean(downside**2))) if n else float("nan")
    sortino = float(np.mean(returns)) / dd_dev * scale if n >= 2 and dd_dev > 0 else float("nan")

    peak = eq.cummax()
    dd_ccy = float((peak - eq).max())
    underwater = (eq < peak).to_numpy()
    longest, run_start = 0.0, None
    ts = eq.index.asi8
    for i, below in enumerate(underwater):
        if below and run_start is None:
            run_start = ts[i - 1] if i else ts[i]
        if run_start is not None and (not below or i == len(underwater) - 1):
            longest = max(longest, (ts[i] - run_start) / 86_400e9)
            run_start = None

    fn = fills_numeric(fills)
    fn = fn[fn["currency"] == curve.currency]
    mult = fn["instrument_id"].map(lambda i: float(multipliers.get(i, 1.0))).to_numpy(dtype=float)
    notional = float(np.sum(np.abs(fn["signed_qty"].to_numpy()) * fn["price"].to_numpy() * mult))
    mean_equity = float(eq.mean())
    turnover = notional / mean_equity if mean_equity > 0 else float("nan")
    span_years = (eq.index[-1].value - eq.index[0].value) / _NS_PER_YEAR
    turnover_annual = turnover / span_years if span_years * 365.25 >= 1.0 else float("nan")
    return PerformanceStats(
        currency=curve.currency,
        equity_source=curve.source,
        start_equity=start_equity,
        end_equity=end_equity,
        total_return=end_equity / start_equity - 1.0 if start_equity else float("nan"),
        n_returns=n,
        sharpe=_none_if_bad(sharpe),
        sortino=_none_if_bad(sortino),
        max_drawdown=float(-curve.drawdown.min()) if len(curve.drawdown) else 0.0,
        max_drawdown_ccy=dd_ccy,
        max_drawdown_duration_days=float(longest),
        traded_notional=notional,
        turnover=turnover,
        turnover_annual=_none_if_bad(turnover_annual),
    )


def run_performance(
    fills: pd.DataFrame,
    account: Mapping[str, pd.DataFrame],
    bars_by_instrument: Mapping[str, pd.DataFrame],
    multipliers: Mapping[str, float],
    start_ns: int | None = None,
) -> tuple[dict[str, EquityCurve], dict[str, PerformanceStats]]:
    """Equity curves and statistics for every settlement currency of a run."""
    curves = equity_curves(fills, account, bars_by_instrument, multipliers, start_ns)
    return curves, {ccy: performance_stats(c, fills, multipliers) for ccy, c in curves.items()}
