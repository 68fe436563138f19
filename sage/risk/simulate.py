"""Candidate trades and their bracket outcomes: the data M-RMS learns from and is evaluated on.

Why rule signals: M-RMS sizes and brackets trades *someone else* proposes. The learned MARL agents may
not exist when M-RMS is trained, so candidate trades come from five transparent rule proxies, one per
agent slot of the contract (``AGENT_NAMES`` order), computed causally from ``sage.features`` columns of
5-minute bars:

==================  ===========================================================================================
fvg                 ``bal = fvg_bullish_active - fvg_bearish_active``; direction ``clip(bal, -2, 2)``, strength ``tanh(bal / 2)``
momentum            ``t5 = mom_fast / (ewma_vol sqrt 5)``; direction ``clip(round(t5), -2, 2)``, strength ``tanh(t5 / 2)``
entry               RSI: > 70 -> +2, > 58 -> +1, < 42 -> -1, < 30 -> -2; strength ``(rsi - 50) / 50``
trend               ``t20 = mom_slow / (ewma_vol sqrt 20)``; direction ``clip(round(t20 / 1.5), -2, 2)``, strength ``tanh(t20 / 1.5)``
mean_reversion      %b: > 1 -> -2, > 0.85 -> -1, < 0.15 -> +1, < 0 -> +2; strength ``-(2 %b - 1)`` clipped
==================  ===========================================================================================

``combined_signal`` = mean strength (weights 1, 1, 1, 1.5, 0.5: trend counts most, mean reversion least),
``combined_uncertainty`` = std of the five strengths (clipped to [0, 1]). A bar is a **candidate** when
``|combined_signal| >= threshold`` and at least ``min_gap`` bars passed since the previous candidate;
side = sign of the combined signal. The regime inputs come from the multi-indicator rule detector
(``sage.regime.rules.RuleDetector``, fallback level 3), so no learned model is needed either.

Outcome of a bracket (the label; uses bars *after* the decision, never as an input): the trade is
decided at bar ``i``'s close and filled at bar ``i+1``'s open plus ``slippage_ticks``; stop and target are
placed at fixed distances from the fill. Bars ``i+1 .. i+horizon`` are scanned: a bar reaching the stop
exits at the stop (or at its open if it opened beyond it), else a bar reaching the target exits at the
target (or its better open); a bar touching both counts as a stop (conservative); without either, the
trade exits at bar ``i+horizon``'s close. Stops pay ``slippage_ticks`` again; every fill pays
``commission`` per sizing unit.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import msgspec
import numpy as np
import pandas as pd
from numba import njit

from sage.risk.context import RAW_DIM

AGENT_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.5, 0.5])


class SimulationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How candidates are picked and how their brackets play out."""

    bar_minutes: int = 5
    """Bars are 1-minute bars aggregated to this many minutes (default 5, the tactical timeframe)."""
    threshold: float = 0.3
    """``|combined_signal|`` needed for a candidate (default 0.3)."""
    min_gap: int = 6
    """Bars between candidates (default 6 = 30 minutes)."""
    horizon: int = 48
    """Bars a trade may live before it is closed at market (default 48 = 4 hours)."""
    slippage_ticks: float = 1.0
    """Ticks lost on every market fill: entry and stop exits (default 1)."""
    commission: float = 2.5
    """Account currency per sizing unit per fill (default 2.5, an ES-like retail rate per contract)."""

    def __post_init__(self) -> None:
        if self.bar_minutes < 1 or self.min_gap < 1 or self.horizon < 1:
            raise ValueError("bar_minutes, min_gap and horizon must be >= 1")


class Candidates(NamedTuple):
    """Candidate trades of one bar series (arrays aligned on candidates)."""

    index: np.ndarray  # bar index of the decision (int64)
    side: np.ndarray  # +1 / -1
    raw_trade: np.ndarray  # (n, 33) raw trade values in RAW_TRADE order (entry/atr/tick/pv/csize included)


def resample(bars: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Causal aggregation of close-stamped 1-minute bars to ``minutes`` bars, stamped at their close.

    A bar stamped ``t`` covers ``(t - minutes, t]``; intervals without any 1-minute bar are dropped.
    """
    if minutes == 1:
        return bars[["open", "high", "low", "close", "volume"]].copy()
    rule = f"{minutes}min"
    agg = bars[["open", "high", "low", "close", "volume"]].resample(rule, label="right", closed="right").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    return agg.dropna()


def rule_agents(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(directions (n, 5) int, strengths (n, 5)) of the five rule proxies (NaN rows -> 0 / NaN)."""
    f = features
    vol = f["ewma_vol"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        t5 = f["mom_fast"].to_numpy() / (vol * math.sqrt(5.0))
        t20 = f["mom_slow"].to_numpy() / (vol * math.sqrt(20.0))
    bal = f["fvg_bullish_active"].to_numpy() - f["fvg_bearish_active"].to_numpy()
    rsi = f["rsi"].to_numpy()
    pctb = f["bb_pctb"].to_numpy()
    n = len(f)
    d = np.zeros((n, 5))
    s = np.full((n, 5), np.nan)
    d[:, 0] = np.clip(bal, -2, 2)
    s[:, 0] = np.tanh(bal / 2.0)
    d[:, 1] = np.clip(np.round(t5), -2, 2)
    s[:, 1] = np.tanh(t5 / 2.0)
    d[:, 2] = np.select([rsi > 70, rsi > 58, rsi < 30, rsi < 42], [2, 1, -2, -1], 0)
    s[:, 2] = (rsi - 50.0) / 50.0
    d[:, 3] = np.clip(np.round(t20 / 1.5), -2, 2)
    s[:, 3] = np.tanh(t20 / 1.5)
    d[:, 4] = np.select([pctb > 1.0, pctb > 0.85, pctb < 0.0, pctb < 0.15], [-2, -1, 2, 1], 0)
    s[:, 4] = np.clip(-(2.0 * pctb - 1.0), -1.0, 1.0)
    d = np.where(np.isfinite(d), d, 0.0).astype(np.int64)
    return d, s


def find_candidates(
    bars: pd.DataFrame,
    features: pd.DataFrame,
    regime_probs: np.ndarray,
    *,
    tick_size: float,
    point_value: float,
    contract_size: float = 1.0,
    config: SimulationConfig | None = None,
    rng: np.random.Generator | None = None,
) -> Candidates:
    """Candidates of one series with their raw trade values (see the module docstring).

    ``rng`` draws the regime fallback level (uniform 1..5) of each candidate for training data (the model
    must not learn anything from it); without it the level is 3 (the rule detector's level).
    """
    c = config or SimulationConfig()
    dirs, strengths = rule_agents(features)
    combined = (strengths * AGENT_WEIGHTS).sum(axis=1) / AGENT_WEIGHTS.sum()
    uncertainty = np.clip(np.std(strengths, axis=1), 0.0, 1.0)
    f = features
    cols = ["atr", "ewma_vol", "fvg_bullish_active", "fvg_bearish_active", "fvg_nearest_level",
            "fvg_mitigation_signal", "rsi", "bb_pctb", "mom_fast", "vol_ratio"]  # fmt: skip
    ok = np.isfinite(f[cols].to_numpy()).all(axis=1) & np.isfinite(strengths).all(axis=1)
    ok &= np.isfinite(regime_probs).all(axis=1) & (f["atr"].to_numpy() > 0)
    ok &= np.isfinite(combined) & (np.abs(combined) >= c.threshold)
    idx: list[int] = []
    last = -(10**9)
    n = len(bars)
    for i in np.flatnonzero(ok):
        if i - last >= c.min_gap and i + 1 < n:
            idx.append(int(i))
            last = i
    index = np.asarray(idx, dtype=np.int64)
    m = index.size
    side = np.sign(combined[index]).astype(np.int64)
    raw = np.zeros((m, 33))
    close = bars["close"].to_numpy()
    vol = f["ewma_vol"].to_numpy()
    raw[:, 0] = side
    raw[:, 1] = close[index]
    raw[:, 2] = f["atr"].to_numpy()[index]
    raw[:, 3] = tick_size
    raw[:, 4] = point_value
    raw[:, 5] = contract_size
    raw[:, 6:11] = dirs[index]
    raw[:, 11:16] = strengths[index]
    raw[:, 16] = combined[index]
    raw[:, 17] = uncertainty[index]
    raw[:, 18:22] = regime_probs[index]
    raw[:, 22] = rng.integers(1, 6, size=m) if rng is not None else 3
    raw[:, 23] = 1.0 - regime_probs[index].max(axis=1)
    raw[:, 24] = vol[index]
    raw[:, 25] = f["fvg_bullish_active"].to_numpy()[index]
    raw[:, 26] = f["fvg_bearish_active"].to_numpy()[index]
    raw[:, 27] = f["fvg_nearest_level"].to_numpy()[index]
    raw[:, 28] = f["fvg_mitigation_signal"].to_numpy()[index]
    raw[:, 29] = f["rsi"].to_numpy()[index]
    raw[:, 30] = f["bb_pctb"].to_numpy()[index]
    with np.errstate(invalid="ignore", divide="ignore"):
        t5 = f["mom_fast"].to_numpy()[index] / (vol[index] * math.sqrt(5.0))
    raw[:, 31] = np.where(np.isfinite(t5), t5, 0.0)
    raw[:, 32] = f["vol_ratio"].to_numpy()[index]
    return Candidates(index, side, raw)


@njit(cache=True)
def run_bracket(open_, high, low, close, i, side, stop_dist, target_dist, horizon, slip):  # pragma: no cover
    """Play one bracket decided at bar ``i``: returns (entry fill, exit price, exit bar, kind).

    kind: -1 stop, +1 target, 0 time exit. ``slip`` is the slippage in price units on market fills.
    Distances are from the entry fill; the stop exit pays ``slip`` again.
    """
    n = close.shape[0]
    entry = open_[i + 1] + side * slip
    stop = entry - side * stop_dist
    target = entry + side * target_dist
    last = min(n - 1, i + horizon)
    for j in range(i + 1, last + 1):
        if side > 0:
            if low[j] <= stop:
                px = min(open_[j], stop) if j > i + 1 else stop
                return entry, px - slip, j, -1
            if high[j] >= target:
                px = max(open_[j], target) if j > i + 1 else target
                return entry, px, j, 1
        else:
            if high[j] >= stop:
                px = max(open_[j], stop) if j > i + 1 else stop
                return entry, px + slip, j, -1
            if low[j] <= target:
                px = min(open_[j], target) if j > i + 1 else target
                return entry, px, j, 1
    return entry, close[last], last, 0


@njit(cache=True)
def _grid(open_, high, low, close, index, side, atr, stop_grid, rr_grid, horizon, slip, out):  # pragma: no cover
    for k in range(index.shape[0]):
        for a in range(stop_grid.shape[0]):
            dist = stop_grid[a] * atr[k]
            for b in range(rr_grid.shape[0]):
                entry, px, _j, _kind = run_bracket(
                    open_, high, low, close, index[k], side[k], dist, rr_grid[b] * dist, horizon, slip
                )
                out[k, a, b] = side[k] * (px - entry) / dist


def grid_outcomes(
    bars: pd.DataFrame,
    candidates: Candidates,
    stop_grid: tuple[float, ...],
    rr_grid: tuple[float, ...],
    *,
    tick_size: float,
    config: SimulationConfig | None = None,
) -> np.ndarray:
    """(n, len(stop_grid), len(rr_grid)) outcomes in R multiples (PnL per unit / stop distance), slippage
    included, commission not (it is per contract, added by the caller in money)."""
    c = config or SimulationConfig()
    o, h, lo, cl = (np.ascontiguousarray(bars[k].to_numpy(np.float64)) for k in ("open", "high", "low", "close"))
    out = np.empty((candidates.index.size, len(stop_grid), len(rr_grid)))
    _grid(o, h, lo, cl, candidates.index, candidates.side, candidates.raw_trade[:, 2],
          np.asarray(stop_grid, np.float64), np.asarray(rr_grid, np.float64), c.horizon,
          c.slippage_ticks * tick_size, out)  # fmt: skip
    return out


def account_raw(n: int, unit_risk: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, 10) random account states for training (RAW_ACCOUNT order).

    Equity is drawn so that one unit at one ATR risks ``10**U(-3.5, -1.5)`` of it (0.03 % .. 3 %), which
    is what sizing must respond to. The other account values are drawn over plausible ranges; they do not
    change a trade's outcome, so the model learns to ignore them (drawdown and loss limits belong to
    ``PortfolioRisk`` and the kill switch, not to the sizer).
    """
    frac = 10.0 ** rng.uniform(-3.5, -1.5, size=n)
    equity = unit_risk / frac
    acct = np.empty((n, 10))
    acct[:, 0] = equity
    acct[:, 1] = equity * rng.uniform(0.0, 0.02, size=n)
    acct[:, 2] = rng.uniform(0.0, 0.1, size=n)
    acct[:, 3] = equity * rng.normal(0.0, 0.01, size=n)
    acct[:, 4] = rng.uniform(0.3, 0.7, size=n)
    acct[:, 5] = rng.poisson(1.0, size=n)
    acct[:, 6] = rng.integers(0, 4, size=n)
    acct[:, 7] = equity * rng.uniform(0.0, 2.0, size=n)
    acct[:, 8] = 0.0
    acct[:, 9] = rng.integers(1, 500, size=n)
    return acct


def regime_probabilities(features: pd.DataFrame) -> np.ndarray:
    """Causal rule-detector regime probabilities (n, 4) for a feature table (fallback level 3)."""
    from sage.regime.rules import RuleDetector

    return RuleDetector(list(features.columns)).run(features.to_numpy())


assert RAW_DIM == 43
