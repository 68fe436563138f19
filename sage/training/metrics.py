"""Performance of a position series, net of costs, and the causal baselines every evaluation compares to.

One definition shared by agent evaluation, risk evaluation and sweeps, so "Sharpe 1.2" means the same
thing everywhere. Alignment convention (no look-ahead): ``positions[t]`` is decided with information
up to bar ``t`` and held over ``returns[t]``, the simple return from close ``t`` to close ``t + 1``
(:func:`forward_returns`). Trading from ``positions[t-1]`` to ``positions[t]`` (``positions[-1] = 0``:
the book starts flat) costs ``|change| * cost_bps / 1e4`` of equity, paid in period ``t``:

    net[t] = positions[t] * returns[t] - |positions[t] - positions[t-1]| * cost_bps / 1e4

Equity compounds: ``equity[t] = prod(1 + net[:t+1])`` from 1.0. Positions are fractions of equity
(1.0 = fully long). The baselines (``*_positions``) are causal: entry ``t`` uses closes ``<= t`` only.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np


class MetricsError(ValueError):
    """Inputs to a metric are malformed (shape mismatch, NaN, bad parameter)."""


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    """Summary of one net-of-cost return series (see the module docstring for conventions)."""

    sharpe: float
    """Annualised Sharpe ratio: mean / std (ddof=1) of net period returns x sqrt(periods_per_year);
    0.0 when the std is 0 or there are fewer than 2 periods (no risk-free rate)."""
    total_return: float
    """Compounded net return over the whole series: ``prod(1 + net) - 1``."""
    max_drawdown: float
    """Largest peak-to-trough fall of compounded equity (starting at 1.0), as a fraction of the peak, >= 0."""
    turnover: float
    """Sum of ``|position change|`` including the first entry from flat (1.0 = one full-size trade)."""
    n_trades: int
    """Number of periods in which the position changed."""
    n_periods: int
    """Length of the series."""
    total_cost: float
    """Sum of the cost deducted per period (fraction of equity, not compounded)."""
    exposure: float
    """Mean absolute position."""
    hit_rate: float
    """Share of periods with a non-zero position whose gross return ``positions * returns`` was > 0
    (0.0 if never in the market)."""


def _as_1d(name: str, values: np.ndarray | list[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise MetricsError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MetricsError(
            f"{name} contains NaN or inf (first at index {int(np.flatnonzero(~np.isfinite(arr))[0])})"
        )
    return arr


def forward_returns(close: np.ndarray | list[float]) -> np.ndarray:
    """Simple returns from close ``t`` to close ``t + 1`` (length ``len(close) - 1``)."""
    c = _as_1d("close", close)
    if (c <= 0).any():
        raise MetricsError("close must be positive")
    return c[1:] / c[:-1] - 1.0


def net_returns(positions: np.ndarray, returns: np.ndarray, cost_bps: float) -> np.ndarray:
    """Per-period net returns ``positions * returns - |change| * cost_bps / 1e4`` (starting flat)."""
    pos = _as_1d("positions", positions)
    ret = _as_1d("returns", returns)
    if pos.shape != ret.shape:
        raise MetricsError(f"positions and returns must have equal length, got {pos.size} and {ret.size}")
    if not cost_bps >= 0.0:
        raise MetricsError(f"cost_bps must be >= 0, got {cost_bps}")
    change = np.abs(np.diff(pos, prepend=0.0))
    return pos * ret - change * (cost_bps * 1e-4)


def max_drawdown(net: np.ndarray) -> float:
    """Largest fractional fall of compounded equity ``prod(1 + net)`` from its running peak (start 1.0)."""
    equity = np.cumprod(1.0 + np.asarray(net, dtype=np.float64))
    peak = np.maximum.accumulate(np.concatenate([[1.0], equity]))[1:]
    if equity.size == 0:
        return 0.0
    return float(np.max((peak - equity) / peak, initial=0.0))


def performance(
    positions: np.ndarray | list[float],
    returns: np.ndarray | list[float],
    cost_bps: float = 0.0,
    periods_per_year: float = 252.0,
) -> Metrics:
    """Metrics of holding ``positions[t]`` over ``returns[t]`` with ``cost_bps`` per unit traded.

    ``periods_per_year`` annualises the Sharpe ratio (5-minute bars traded 24h: 252 * 288 = 72,576).
    """
    if not periods_per_year > 0.0:
        raise MetricsError(f"periods_per_year must be > 0, got {periods_per_year}")
    pos = _as_1d("positions", positions)
    net = net_returns(pos, returns, cost_bps)
    ret = np.asarray(returns, dtype=np.float64)
    change = np.abs(np.diff(pos, prepend=0.0))
    n = int(net.size)
    sharpe = 0.0
    if n >= 2:
        sd = float(np.std(net, ddof=1))
        if sd > 0.0:
            sharpe = float(np.mean(net) / sd * math.sqrt(periods_per_year))
    in_market = pos != 0.0
    hits = int(((pos * ret) > 0.0)[in_market].sum())
    return Metrics(
        sharpe=sharpe,
        total_return=float(np.prod(1.0 + net) - 1.0) if n else 0.0,
        max_drawdown=max_drawdown(net),
        turnover=float(change.sum()),
        n_trades=int((change > 0.0).sum()),
        n_periods=n,
        total_cost=float((change * cost_bps * 1e-4).sum()),
        exposure=float(np.abs(pos).mean()) if n else 0.0,
        hit_rate=hits / int(in_market.sum()) if in_market.any() else 0.0,
    )


def evaluate_positions(
    positions: np.ndarray | list[float],
    close: np.ndarray | list[float],
    cost_bps: float = 0.0,
    periods_per_year: float = 252.0,
) -> Metrics:
    """:func:`performance` of positions decided at each close (``len(positions) == len(close)``).

    The last position has no next close to earn on and is dropped.
    """
    pos = _as_1d("positions", positions)
    c = _as_1d("close", close)
    if pos.shape != c.shape:
        raise MetricsError(f"positions and close must have equal length, got {pos.size} and {c.size}")
    return performance(pos[:-1], forward_returns(c), cost_bps, periods_per_year)


# -- causal baselines ----------------------------------------------------------------------------------


def buy_and_hold_positions(n: int) -> np.ndarray:
    """Fully long from the first bar: ``ones(n)``."""
    return np.ones(int(n), dtype=np.float64)


def flat_positions(n: int) -> np.ndarray:
    """Never in the market: ``zeros(n)`` (the zero line every strategy must beat after costs)."""
    return np.zeros(int(n), dtype=np.float64)


def random_positions(
    n: int, seed: int = 0, hold: int = 1, levels: tuple[float, ...] = (-1.0, 0.0, 1.0)
) -> np.ndarray:
    """Seeded random positions from ``levels``, each held ``hold`` bars (a luck baseline; no data used)."""
    if hold < 1:
        raise MetricsError(f"hold must be >= 1, got {hold}")
    rng = np.random.Generator(np.random.PCG64(seed))
    draws = rng.choice(np.asarray(levels, dtype=np.float64), size=-(-int(n) // hold))
    return np.repeat(draws, hold)[: int(n)]


def ema(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with ``alpha = 2 / (span + 1)``, seeded with the first value (causal)."""
    x = _as_1d("values", values)
    if span < 1:
        raise MetricsError(f"span must be >= 1, got {span}")
    alpha = 2.0 / (span + 1.0)
    out = np.empty_like(x)
    acc = x[0] if x.size else 0.0
    for i in range(x.size):  # sequential recursion; baselines run once per evaluation
        acc = acc + alpha * (x[i] - acc)
        out[i] = acc
    return out


def ema_cross_positions(
    close: np.ndarray | list[float], fast: int = 10, slow: int = 30, long_only: bool = False
) -> np.ndarray:
    """+1 when EMA(fast) > EMA(slow), -1 (0 if ``long_only``) when below, 0 while warming up.

    Position ``t`` uses closes ``<= t``; the first ``slow - 1`` bars (EMA(slow) not yet meaningful) are flat.
    """
    if not 1 <= fast < slow:
        raise MetricsError(f"need 1 <= fast < slow, got fast={fast}, slow={slow}")
    c = _as_1d("close", close)
    diff = ema(c, fast) - ema(c, slow)
    pos = np.where(diff > 0.0, 1.0, np.where(diff < 0.0, 0.0 if long_only else -1.0, 0.0))
    pos[: slow - 1] = 0.0
    return pos
