"""Square-root market-impact model, causal market statistics, and a square-root-book venue fill model.

Why one module: the selector (:mod:`sage.execution.selector`) prices candidate execution schedules with
:class:`SquareRootImpact`, and the backtest venue needs a fill model that *produces* impact of the same
shape, otherwise realised transaction costs in a trade-tick replay are nearly zero whatever the
algorithm does (Nautilus' default L1 matching fills a market order at the last trade price, with only
the part beyond the last trade's size one tick worse). Keeping both next to the statistics they read
(average volume per minute and volatility per minute, estimated causally) keeps the units in one place.

The model (``docs/execution_costs.md`` has the derivation and the default numbers). For a parent order of
``Q`` contracts executed over a horizon of ``H`` minutes in a market trading ``V`` contracts per minute
with a per-minute log-return volatility ``sigma`` (in bps), the expected cost per unit, relative to the
arrival price, in bps is::

    participation  rho   = Q / (V * max(H, tau0))
    spread         S     = spread_fraction * half_spread_bps
    impact         I     = Y * sigma * rho ** exponent * impact_factor
    timing risk    R     = sigma * sqrt(H / 3)                 (std of the cost, not a mean)
    expected cost  C     = S + I
    score                = C + lambda(urgency) * R,   lambda(u) = risk_aversion * u / (1 - u)

``I`` is the Almgren et al. (2005) temporary impact written in per-minute units with the square-root
exponent (``Y * sigma_day * sqrt(Q / V_day)`` when the whole day is the horizon): trading a fixed quantity
faster raises the participation rate and with it the cost per unit. ``tau0`` (``min_horizon_min``) is the
shortest horizon the liquidity estimate is meaningful for; an order sent all at once ("Immediate") is
priced as if it took ``tau0`` to absorb, i.e. ``Y * sigma * sqrt(Q / V)`` with one minute's volume.
``R`` is the standard deviation of the cost of a linear schedule (the unexecuted remainder drifts like a
random walk; ``integral (1 - t/H)^2 dt = H / 3``); urgency converts that risk into bps of cost. Permanent
impact is left out on purpose: it is paid whatever the schedule, so it cannot change which schedule is
cheapest.

Everything here is pure and vectorised (array in, array out) except the two stateful adapters: the
streaming estimator :class:`TrailingMarketStats` (for use inside a strategy, bar by bar) and the Nautilus
fill model :class:`SquareRootBookFillModel`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.backtest.models import FillModel
from nautilus_trader.model.book import OrderBook
from nautilus_trader.model.data import Bar, BookOrder
from nautilus_trader.model.enums import BookType, LiquiditySide, OrderSide, OrderType, TimeInForce
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price

from sage.features.bars import to_arrays

__all__ = [
    "CALIBRATED_RESILIENCE_SECS",
    "DEFAULT_WINDOW_MINUTES",
    "NS_PER_MINUTE",
    "CostBreakdown",
    "ImpactParams",
    "MarketStats",
    "SquareRootBookFillModel",
    "SquareRootImpact",
    "TrailingMarketStats",
    "bars_from_trades",
    "market_stats_frame",
    "stats_at",
    "trailing_market_stats",
]

NS_PER_MINUTE: int = 60_000_000_000

#: Default trailing window for the volume and volatility estimates (minutes). Why one hour: long enough
#: to average out single-minute volume spikes (ES minute volume has a coefficient of variation above 2),
#: short enough to follow the intraday volume cycle (overnight ES trades ~40 contracts a minute, the cash
#: open thousands).
DEFAULT_WINDOW_MINUTES: float = 60.0

#: Resilience time constant of the venue fill model that makes a constant-rate schedule pay exactly the
#: modelled ``Y * sigma * sqrt(rho)``: ``sqrt(tau / 1 min) = 2/3`` (see :class:`SquareRootBookFillModel`).
CALIBRATED_RESILIENCE_SECS: float = 60.0 * 4.0 / 9.0


# -- Parameters -------------------------------------------------------------------------------------------


class ImpactParams(msgspec.Struct, frozen=True, kw_only=True):
    """Coefficients of the square-root cost model. All costs are in bps of the arrival price.

    Frozen and JSON-serialisable so a selection can be reproduced from the stored config.
    """

    Y: float = 1.0
    """Square-root-law coefficient (default 1.0). Empirical estimates are "of order one" across markets
    (Almgren et al. 2005 ~0.3-1 on US equities with a 3/5 exponent; Toth et al. 2011 ~0.5-1 on futures);
    1.0 is the conservative end. Scales all impact costs linearly."""

    exponent: float = 0.5
    """Power of the participation rate in the impact term (default 0.5, the square-root law). Almgren et
    al. (2005) fit 0.6; must be in (0, 1] (1 = linear impact)."""

    min_horizon_min: float = 1.0
    """Shortest horizon, in minutes, over which the volume estimate is taken to be available
    (default 1.0). An order sent all at once is priced as absorbing one minute of volume; schedules
    shorter than this are priced as if they took this long."""

    risk_aversion: float = 0.5
    """bps of cost charged per bps of timing-risk standard deviation at urgency 0.5 (default 0.5).

    Urgency ``u`` in [0, 1] maps to the risk weight ``lambda(u) = risk_aversion * u / (1 - u)``: 0 ignores
    risk (the longest, cheapest schedule wins), 0.5 gives ``risk_aversion``, and 1 means "must execute
    now" (infinite weight: only a riskless, immediate execution is acceptable). With the square-root
    terms the best horizon is ``H* = sqrt(3) * Y * sqrt(Q / V) / lambda(u)`` minutes, and a schedule beats
    sending everything at once only when ``Q / V > (16 / 3) * (lambda / Y)^2`` minutes of volume. Why
    0.5: slicing then starts at about 1.3 minutes of volume at urgency 0.5 (a desk's usual threshold is
    one to a few minutes of volume), and at 12 minutes at urgency 0.75."""

    def risk_weight(self, urgency: Any) -> np.ndarray:
        """``lambda(u) = risk_aversion * u / (1 - u)`` (inf at u = 1); raises for u outside [0, 1]."""
        u = np.asarray(urgency, dtype=np.float64)
        if np.any(~((u >= 0.0) & (u <= 1.0))):
            raise ValueError(f"urgency must be in [0, 1], got {urgency!r}")
        with np.errstate(divide="ignore"):
            return np.where(u >= 1.0, np.inf, self.risk_aversion * u / np.maximum(1.0 - u, 0.0))

    def __post_init__(self) -> None:
        for name in ("Y", "exponent", "min_horizon_min", "risk_aversion"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"ImpactParams.{name} must be a finite number, got {value!r}")
        if self.Y < 0.0:
            raise ValueError(f"ImpactParams.Y must be >= 0, got {self.Y}")
        if not 0.0 < self.exponent <= 1.0:
            raise ValueError(f"ImpactParams.exponent must be in (0, 1], got {self.exponent}")
        if self.min_horizon_min <= 0.0:
            raise ValueError(f"ImpactParams.min_horizon_min must be > 0, got {self.min_horizon_min}")
        if self.risk_aversion < 0.0:
            raise ValueError(f"ImpactParams.risk_aversion must be >= 0, got {self.risk_aversion}")


# -- Market statistics ------------------------------------------------------------------------------------


class MarketStats(msgspec.Struct, frozen=True, kw_only=True):
    """The market state the cost model needs, as of one instant (all trailing, never forward-looking)."""

    price: float
    """Last price (the close of the newest bar), used to express the tick in bps."""

    volume_per_min: float
    """Average traded volume per minute over the trailing window (contracts/min, > 0 to be usable)."""

    sigma_per_min: float
    """Volatility of the log price per sqrt(minute) over the trailing window (a fraction: 2e-4 = 2 bps)."""

    half_spread_bps: float = 0.0
    """Half the quoted spread in bps (default 0.0 = unknown/free). Trade data carry no quotes, so the
    estimators set it to half a tick when given ``tick_size`` (a one-tick spread, ES-like)."""

    ts_ns: int = 0
    """Close time of the newest bar that went into the estimate (UTC ns; default 0 = not recorded)."""

    def __post_init__(self) -> None:
        for name in ("price", "volume_per_min", "sigma_per_min", "half_spread_bps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"MarketStats.{name} must be finite and >= 0, got {value!r}")
        if self.price <= 0.0:
            raise ValueError(f"MarketStats.price must be > 0, got {self.price}")

    @property
    def sigma_bps(self) -> float:
        """Per-minute volatility in bps."""
        return self.sigma_per_min * 1e4

    @classmethod
    def from_bars(
        cls,
        bars: pd.DataFrame | Sequence[Bar],
        window_minutes: float = DEFAULT_WINDOW_MINUTES,
        tick_size: float | None = None,
        at: Any = None,
    ) -> MarketStats:
        """Trailing statistics as of the newest bar (or the newest bar closed at or before ``at``).

        ``bars`` is an OHLCV DataFrame with a UTC index of bar close times or a list of Nautilus bars.
        Only bars closed at or before ``at`` are used, so the result is what a strategy could have known.
        """
        frame = market_stats_frame(bars, window_minutes=window_minutes, tick_size=tick_size)
        return stats_at(frame, at)

    @classmethod
    def from_trades(
        cls,
        trades: pd.DataFrame,
        window_minutes: float = DEFAULT_WINDOW_MINUTES,
        tick_size: float | None = None,
        at: Any = None,
    ) -> MarketStats:
        """As :meth:`from_bars` after aggregating ``trades`` (``price``, ``size``) to 1-minute bars."""
        return cls.from_bars(bars_from_trades(trades), window_minutes, tick_size, at)


def bars_from_trades(trades: pd.DataFrame, minutes: int = 1) -> pd.DataFrame:
    """OHLCV bars over ``[t, t+minutes)`` stamped at the close, from a trades frame.

    ``trades`` has a UTC DatetimeIndex and columns ``price`` and ``size`` (or ``quantity``). Minutes
    without trades produce no bar, as in the sample catalog (no invented prices).
    """
    size_col = "size" if "size" in trades.columns else "quantity"
    if "price" not in trades.columns or size_col not in trades.columns:
        raise ValueError(
            f"trades need columns 'price' and 'size' (or 'quantity'), got {list(trades.columns)}"
        )
    rule = f"{int(minutes)}min"
    bars = trades["price"].resample(rule, label="right", closed="left").ohlc()
    bars["volume"] = trades[size_col].resample(rule, label="right", closed="left").sum()
    return bars.dropna(subset=["open"])


def trailing_market_stats(
    ts_ns: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    window_minutes: float = DEFAULT_WINDOW_MINUTES,
    bar_minutes: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Causal per-bar ``(volume_per_min, sigma_per_min)`` over the trailing ``window_minutes``.

    Bar ``i`` uses the bars whose close time lies in ``(ts[i] - window, ts[i]]``: nothing after it, so the
    value at a bar is what a strategy knows when that bar closes. Volume is divided by the *time* the
    window covers, not the number of bars, so minutes without trades (no bar) count as zero volume.
    Volatility is the realised variance per minute, ``sum(r^2) / covered minutes`` with ``r`` the log
    return from the previous bar's close, which handles gaps (a return over a 3-minute gap carries three
    minutes of variance). At the start of the data the divisor is the time elapsed so far (from the open
    of the first bar, ``bar_minutes`` before its close), so early estimates are unbiased, just noisier;
    the first bar has no return and gets NaN volatility.

    ``bar_minutes`` defaults to the smallest gap between consecutive bars.
    """
    ts = np.asarray(ts_ns, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    v = np.asarray(volume, dtype=np.float64)
    n = ts.shape[0]
    if c.shape != (n,) or v.shape != (n,):
        raise ValueError(
            f"ts, close and volume must be 1-D of equal length, got {ts.shape}, {c.shape}, {v.shape}"
        )
    if not (math.isfinite(window_minutes) and window_minutes > 0.0):
        raise ValueError(f"window_minutes must be > 0, got {window_minutes}")
    if n == 0:
        return np.empty(0), np.empty(0)
    if n > 1 and np.any(np.diff(ts) <= 0):
        raise ValueError("bar timestamps must be strictly increasing")
    if np.any(~(c > 0.0)) or np.any(~np.isfinite(c)):
        raise ValueError("close prices must be finite and > 0")
    if np.any(~(v >= 0.0)) or np.any(~np.isfinite(v)):
        raise ValueError("volumes must be finite and >= 0")
    bar_ns = _bar_ns(ts, bar_minutes)
    window_ns = round(window_minutes * NS_PER_MINUTE)

    r2 = np.zeros(n, dtype=np.float64)
    if n > 1:
        r2[1:] = np.log(c[1:] / c[:-1]) ** 2
    cs_v = np.concatenate(([0.0], np.cumsum(v)))
    cs_r = np.concatenate(([0.0], np.cumsum(r2)))
    lo = np.searchsorted(ts, ts - window_ns, side="right")
    idx = np.arange(n)
    vol_sum = cs_v[idx + 1] - cs_v[lo]
    r2_sum = cs_r[idx + 1] - cs_r[lo]

    elapsed = (ts - ts[0]).astype(np.float64)
    cover_v = np.minimum(float(window_ns), elapsed + bar_ns) / NS_PER_MINUTE
    cover_r = np.minimum(float(window_ns), elapsed) / NS_PER_MINUTE
    vol_per_min = vol_sum / cover_v
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(cover_r > 0.0, np.sqrt(np.maximum(r2_sum, 0.0) / cover_r), np.nan)
    return vol_per_min, sigma


def _bar_ns(ts: np.ndarray, bar_minutes: float | None) -> float:
    if bar_minutes is not None:
        if not (math.isfinite(bar_minutes) and bar_minutes > 0.0):
            raise ValueError(f"bar_minutes must be > 0, got {bar_minutes}")
        return float(bar_minutes) * NS_PER_MINUTE
    if ts.shape[0] < 2:
        return float(NS_PER_MINUTE)
    return float(np.min(np.diff(ts)))


def market_stats_frame(
    bars: pd.DataFrame | Sequence[Bar],
    window_minutes: float = DEFAULT_WINDOW_MINUTES,
    tick_size: float | None = None,
    bar_minutes: float | None = None,
) -> pd.DataFrame:
    """Per-bar trailing statistics as a frame indexed by bar close time (UTC).

    Columns ``price, volume_per_min, sigma_per_min, half_spread_bps`` (see :class:`MarketStats`); the
    half spread is ``0.5 * tick_size / price`` when ``tick_size`` is given, else 0. Rows are causal (see
    :func:`trailing_market_stats`); look one up with :func:`stats_at`.
    """
    ts, _o, _h, _l, close, volume = to_arrays(bars if isinstance(bars, pd.DataFrame) else list(bars))
    vpm, sigma = trailing_market_stats(ts, close, volume, window_minutes, bar_minutes)
    half = np.zeros_like(close) if tick_size is None else 0.5 * float(tick_size) / close * 1e4
    index = pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts").tz_localize("UTC")
    return pd.DataFrame(
        {"price": close, "volume_per_min": vpm, "sigma_per_min": sigma, "half_spread_bps": half}, index=index
    )


def stats_at(frame: pd.DataFrame, at: Any = None) -> MarketStats:
    """The row of a :func:`market_stats_frame` for the newest bar closed at or before ``at`` (default: last).

    Raises ``LookupError`` when no bar has closed yet or the volatility is still undefined (first bar).
    """
    if at is None:
        pos = len(frame) - 1
    else:
        t = pd.Timestamp(at)
        t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
        pos = int(frame.index.searchsorted(t, side="right")) - 1
    if pos < 0:
        raise LookupError(f"no bar closed at or before {at}")
    row = frame.iloc[pos]
    if not np.isfinite(row["sigma_per_min"]):
        raise LookupError(f"volatility undefined at {frame.index[pos]} (need at least two bars)")
    return MarketStats(
        price=float(row["price"]),
        volume_per_min=float(row["volume_per_min"]),
        sigma_per_min=float(row["sigma_per_min"]),
        half_spread_bps=float(row["half_spread_bps"]),
        ts_ns=int(frame.index[pos].value),
    )


class TrailingMarketStats:
    """Streaming twin of :func:`trailing_market_stats`, one bar at a time (for use inside a strategy).

    Keeps running sums and the bars inside the window in a deque, so an update is O(1) amortised. The
    arithmetic mirrors the batch function (same running-sum order), so both give the same numbers up to
    the last bit of the log. ``bar_minutes`` (default 1.0) must be given here, since a stream cannot infer
    it from gaps it has not seen yet; pass the same value to the batch function to compare the two.
    """

    def __init__(
        self,
        window_minutes: float = DEFAULT_WINDOW_MINUTES,
        bar_minutes: float = 1.0,
        tick_size: float | None = None,
    ) -> None:
        if not (math.isfinite(window_minutes) and window_minutes > 0.0):
            raise ValueError(f"window_minutes must be > 0, got {window_minutes}")
        if not (math.isfinite(bar_minutes) and bar_minutes > 0.0):
            raise ValueError(f"bar_minutes must be > 0, got {bar_minutes}")
        self._window_ns = round(window_minutes * NS_PER_MINUTE)
        self._bar_ns = float(bar_minutes) * NS_PER_MINUTE
        self._tick = tick_size
        self._first_ts: int | None = None
        self._last_ts: int | None = None
        self._last_close = math.nan
        self._cum_v = 0.0
        self._cum_r = 0.0
        self._window: deque[tuple[int, float, float]] = deque()  # (ts, cum_v before, cum_r before)
        self._state: tuple[float, float, float, float, int] | None = None  # (price, vpm, sigma, half, ts)
        self._current: MarketStats | None = None

    @property
    def current(self) -> MarketStats | None:
        """The stats as of the newest bar (None until a return has been seen).

        Built on first access after an update: a strategy updates on every bar but prices an order on
        few of them, and constructing the validated struct each bar was most of the update's cost.
        """
        if self._current is None and self._state is not None:
            price, vpm, sigma, half, ts = self._state
            self._current = MarketStats(
                price=price, volume_per_min=vpm, sigma_per_min=sigma, half_spread_bps=half, ts_ns=ts
            )
        return self._current

    def update(self, ts_ns: int, close: float, volume: float) -> MarketStats | None:
        """Add one closed bar; returns the stats as of it (None until a return has been seen)."""
        self.push(ts_ns, close, volume)
        return self.current

    def push(self, ts_ns: int, close: float, volume: float) -> None:
        """:meth:`update` without building the returned struct (read :attr:`current` when needed)."""
        if self._last_ts is not None and ts_ns <= self._last_ts:
            raise ValueError(f"bar timestamps must be strictly increasing: {ts_ns} after {self._last_ts}")
        if not (math.isfinite(close) and close > 0.0) or not (math.isfinite(volume) and volume >= 0.0):
            raise ValueError(f"invalid bar close={close} volume={volume}")
        r2 = 0.0 if self._first_ts is None else float(np.log(np.float64(close) / self._last_close)) ** 2
        if self._first_ts is None:
            self._first_ts = ts_ns
        self._window.append((ts_ns, self._cum_v, self._cum_r))
        self._cum_v += volume
        self._cum_r += r2
        cutoff = ts_ns - self._window_ns
        while self._window[0][0] <= cutoff:
            self._window.popleft()
        _, v0, r0 = self._window[0]
        elapsed = float(ts_ns - self._first_ts)
        cover_v = min(float(self._window_ns), elapsed + self._bar_ns) / NS_PER_MINUTE
        cover_r = min(float(self._window_ns), elapsed) / NS_PER_MINUTE
        self._last_ts = ts_ns
        self._last_close = close
        self._current = None
        if cover_r <= 0.0:
            self._state = None
            return
        half = 0.0 if self._tick is None else 0.5 * float(self._tick) / close * 1e4
        self._state = (
            float(close),
            (self._cum_v - v0) / cover_v,
            math.sqrt(max(self._cum_r - r0, 0.0) / cover_r),
            half,
            int(ts_ns),
        )

    def update_bar(self, bar: Bar) -> MarketStats | None:
        """:meth:`update` from a Nautilus ``Bar`` (``ts_event`` is its close time)."""
        return self.update(int(bar.ts_event), bar.close.as_double(), bar.volume.as_double())


# -- Cost model --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostBreakdown:
    """Expected cost terms in bps, as arrays broadcast from the inputs (0-d for scalar inputs)."""

    participation: np.ndarray
    spread_bps: np.ndarray
    impact_bps: np.ndarray
    risk_bps: np.ndarray
    cost_bps: np.ndarray
    score_bps: np.ndarray


class SquareRootImpact:
    """Expected execution cost of a schedule under the square-root law (see the module docstring).

    Stateless apart from its :class:`ImpactParams`; every method takes and returns numpy-broadcastable
    arrays so a whole grid of (size, horizon) candidates is priced in one call.
    """

    def __init__(self, params: ImpactParams | None = None) -> None:
        self.params = params if params is not None else ImpactParams()

    def participation(self, qty: Any, volume_per_min: Any, horizon_min: Any) -> np.ndarray:
        """``Q / (V * max(H, tau0))``: the share of market volume the schedule takes."""
        q = np.asarray(qty, dtype=np.float64)
        v = np.asarray(volume_per_min, dtype=np.float64)
        h = np.maximum(np.asarray(horizon_min, dtype=np.float64), self.params.min_horizon_min)
        if np.any(q < 0.0):
            raise ValueError("qty must be >= 0")
        if np.any(~(v > 0.0)):
            raise ValueError("volume_per_min must be > 0 (no liquidity estimate: no cost can be modelled)")
        return q / (v * h)

    def impact_bps(
        self, qty: Any, volume_per_min: Any, sigma_per_min: Any, horizon_min: Any, impact_factor: Any = 1.0
    ) -> np.ndarray:
        """Temporary impact per unit: ``Y * sigma_bps * rho ** exponent * impact_factor``."""
        rho = self.participation(qty, volume_per_min, horizon_min)
        sigma_bps = np.asarray(sigma_per_min, dtype=np.float64) * 1e4
        return (
            self.params.Y
            * sigma_bps
            * rho**self.params.exponent
            * np.asarray(impact_factor, dtype=np.float64)
        )

    @staticmethod
    def timing_risk_bps(sigma_per_min: Any, horizon_min: Any) -> np.ndarray:
        """Standard deviation of a linear schedule's cost from price drift: ``sigma_bps * sqrt(H / 3)``."""
        h = np.maximum(np.asarray(horizon_min, dtype=np.float64), 0.0)
        return np.asarray(sigma_per_min, dtype=np.float64) * 1e4 * np.sqrt(h / 3.0)

    def cost(
        self,
        qty: Any,
        volume_per_min: Any,
        sigma_per_min: Any,
        horizon_min: Any,
        half_spread_bps: Any = 0.0,
        spread_fraction: Any = 1.0,
        impact_factor: Any = 1.0,
        risk_factor: Any = 1.0,
        urgency: Any = 0.0,
    ) -> CostBreakdown:
        """All cost terms for a schedule.

        ``spread_fraction`` is the share of the half spread paid (1 = every unit crosses, negative =
        passive fills that earn it); ``impact_factor`` scales the impact for schedule shapes that are not
        constant-rate (uneven slices cost more per unit); ``risk_factor`` scales the risk for schedules
        that do not trade linearly; ``urgency`` in [0, 1] weights the risk into the score through
        :meth:`ImpactParams.risk_weight` (a riskless schedule carries no penalty even at urgency 1).
        """
        weight = self.params.risk_weight(urgency)
        rho = self.participation(qty, volume_per_min, horizon_min)
        spread = np.asarray(spread_fraction, dtype=np.float64) * np.asarray(half_spread_bps, dtype=np.float64)
        impact = self.impact_bps(qty, volume_per_min, sigma_per_min, horizon_min, impact_factor)
        risk = self.timing_risk_bps(sigma_per_min, horizon_min) * np.asarray(risk_factor, dtype=np.float64)
        cost = spread + impact
        with np.errstate(invalid="ignore"):
            score = cost + np.where(risk > 0.0, weight * risk, 0.0)
        rho, spread, impact, risk, cost, score = np.broadcast_arrays(rho, spread, impact, risk, cost, score)
        return CostBreakdown(rho, spread, impact, risk, cost, score)

    def expected_cost_bps(
        self,
        qty: Any,
        volume_per_min: Any,
        sigma_per_min: Any,
        horizon_min: Any,
        half_spread_bps: Any = 0.0,
    ) -> np.ndarray:
        """Spread plus impact for a constant-rate schedule that crosses the spread (the plain model)."""
        return self.cost(qty, volume_per_min, sigma_per_min, horizon_min, half_spread_bps).cost_bps


# -- Venue fill model --------------------------------------------------------------------------------------


class SquareRootBookFillModel(FillModel):
    """A Nautilus fill model whose synthetic book makes aggressive orders pay square-root impact and caps
    passive fills at a share of the traded volume.

    Why: replaying trades, Nautilus fills a market order of any size at (about) the last trade price and a
    resting limit order from the whole tape at its price, so slicing would look pointless and passive
    orders free. This model gives the simulated venue a depth profile derived from the same trailing
    statistics the selector uses, so realised costs respond to order size and pacing:

    * **Shape.** The marginal price of the ``j``-th contract bought is ``touch + a * sqrt(j)``, with
      ``a = 1.5 * Y * sigma * price / sqrt(V)``; an order of ``q`` contracts then pays on average
      ``(2/3) a sqrt(q) = Y * sigma * sqrt(q / V)`` (in price units), the square-root law with one
      minute's volume. The curve is cut into tick-sized levels (contract ``j`` goes to the level nearest
      its marginal price) and sizes are rounded to whole size increments.
    * **Memory.** Consumed depth is remembered per side and refills exponentially with time constant
      ``resilience_secs`` (transient impact, Obizhaeva-Wang style): the next order walks on from where the
      previous ones left the book. With the default ``4/9`` minute a constant-rate schedule at
      participation ``rho`` settles at ``Y * sigma * sqrt(rho)``, the selector's model.
    * **Spread.** Trade ticks replayed without aggressor side carry no quotes (Nautilus sets bid = ask =
      last trade), so the book starts ``half_spread_ticks`` beyond the touch on average: ``floor(h)``
      ticks plus one more with probability ``h - floor(h)`` (seeded), i.e. half a one-tick spread by
      default. With quotes, or trades tagged with an aggressor (the venue then keeps bid and ask apart),
      set it to 0: the touch already carries the spread.
    * **Marketable limit orders** (taker) walk the same book but only up to their limit price; an IOC/FOK
      remainder is canceled, a resting (GTC) remainder is filled at the limit price (optimistic; Nautilus'
      L1 matching would otherwise fill it one tick beyond the last fill, through the limit).
    * **Resting limit orders** (maker) at the touch fill at their price from a per-side budget that
      accrues at ``passive_participation * V`` per minute while an order rests (from its creation, or the
      last fill check of its side; at most ``passive_window_secs`` of accrual, expiring after that long
      without resting orders): a resting order gets that share of the volume, not the whole tape. When
      the tape trades strictly *through* the limit the order fills in full at its price - Nautilus' L1
      matching assumes so for any maker order traded through, whatever a fill model offers. The budget
      needs "now" for a resting order, so it needs the venue's ``clock`` (``engine.kernel.clock``);
      without it resting orders are left to Nautilus' matching (fills from the tape at their price).
    * **Causality.** ``sigma`` and ``V`` are read from ``stats`` (a :func:`market_stats_frame`) at the
      newest bar closed at or before now (the clock, else the order's last event); before the first usable row the model
      returns ``None`` and Nautilus' default matching applies. Stop and other order types are left to
      Nautilus too.
    """

    def __init__(
        self,
        stats: pd.DataFrame,
        impact_coefficient: float = 1.0,
        resilience_secs: float = CALIBRATED_RESILIENCE_SECS,
        half_spread_ticks: float = 0.5,
        passive_participation: float = 0.1,
        passive_window_secs: float = 60.0,
        seed: int = 0,
        max_levels: int = 10_000,
        clock: Any = None,
    ) -> None:
        super().__init__(prob_fill_on_limit=1.0, prob_fill_on_stop=1.0, prob_slippage=0.0, random_seed=seed)
        for col in ("volume_per_min", "sigma_per_min"):
            if col not in stats.columns:
                raise ValueError(f"stats frame lacks column {col!r} (build it with market_stats_frame)")
        if not (math.isfinite(impact_coefficient) and impact_coefficient >= 0.0):
            raise ValueError(f"impact_coefficient must be >= 0, got {impact_coefficient}")
        if not (math.isfinite(resilience_secs) and resilience_secs > 0.0):
            raise ValueError(f"resilience_secs must be > 0, got {resilience_secs}")
        if not (math.isfinite(half_spread_ticks) and half_spread_ticks >= 0.0):
            raise ValueError(f"half_spread_ticks must be >= 0, got {half_spread_ticks}")
        if not 0.0 < passive_participation <= 1.0:
            raise ValueError(f"passive_participation must be in (0, 1], got {passive_participation}")
        if not (math.isfinite(passive_window_secs) and passive_window_secs > 0.0):
            raise ValueError(f"passive_window_secs must be > 0, got {passive_window_secs}")
        self._ts = np.asarray(stats.index.asi8, dtype=np.int64)
        self._vpm = stats["volume_per_min"].to_numpy(dtype=np.float64)
        self._sigma = stats["sigma_per_min"].to_numpy(dtype=np.float64)
        self._y = float(impact_coefficient)
        self._tau_ns = float(resilience_secs) * 1e9
        self._half_spread_ticks = float(half_spread_ticks)
        self._passive_rate = float(passive_participation) / NS_PER_MINUTE  # share of V per ns
        self._passive_window_ns = float(passive_window_secs) * 1e9
        self._rng = np.random.default_rng(seed)
        self._max_levels = int(max_levels)
        self._clock = clock
        # Consumed depth per side: [asks eaten by buys, bids eaten by sells], and when last updated.
        self._consumed = [0.0, 0.0]
        self._consumed_ts = [0, 0]
        # Passive fill budget per side: [resting buys, resting sells], and when last accrued.
        self._budget = [0.0, 0.0]
        self._budget_ts: list[int | None] = [None, None]
        self.orders_simulated = 0

    def _now(self, order: Any) -> int:
        """Simulated time: the venue clock when given, else the order's last event (fine for orders that
        are matched on arrival, stale for resting ones - hence passive fills need the clock)."""
        return int(self._clock.timestamp_ns()) if self._clock is not None else int(order.ts_last)

    def _stats_row(self, ts_ns: int) -> tuple[float, float] | None:
        pos = int(np.searchsorted(self._ts, ts_ns, side="right")) - 1
        if pos < 0:
            return None
        v, s = self._vpm[pos], self._sigma[pos]
        if not (np.isfinite(v) and v > 0.0 and np.isfinite(s)):
            return None
        return float(v), float(s)

    def depth_scale(self, ts_ns: int, price: float) -> float | None:
        """``a`` (price per sqrt(contract)) at ``ts_ns``, or None when no usable statistics exist yet."""
        row = self._stats_row(ts_ns)
        if row is None:
            return None
        v, s = row
        return 1.5 * self._y * s * price / math.sqrt(v)

    def levels(
        self, consumed: float, qty: float, a: float, tick: float, size_step: float
    ) -> tuple[int, np.ndarray]:
        """``(first level, sizes)`` of the tick levels that fill the slice ``(consumed, consumed + qty]``.

        Contract ``j`` (counted from the untouched book) sits ``round(a * sqrt(j) / tick)`` ticks beyond
        the start, so level ``k`` ends at cumulative depth ``((k + 1/2) * tick / a)^2``. Sizes are rounded
        to ``size_step`` (a level may be empty) and always sum to ``qty``; after ``max_levels`` levels
        the last one absorbs the rest.
        """
        if a <= 0.0 or not math.isfinite(a):
            return 0, np.array([qty])
        unit = (tick / a) ** 2  # depth scale in contracts
        start_level = math.floor(math.sqrt(consumed / unit) + 0.5) if consumed > 0 else 0
        end_level = math.floor(math.sqrt((consumed + qty) / unit) + 0.5)
        end_level = min(end_level, start_level + self._max_levels - 1)
        ks = np.arange(start_level, end_level + 1, dtype=np.float64)
        bounds = ((ks + 0.5) ** 2) * unit  # cumulative depth at the end of each level
        bounds[-1] = consumed + qty  # the last level absorbs whatever is left (also beyond max_levels)
        cum = np.clip(bounds - consumed, 0.0, qty)
        cum = np.minimum(np.round(cum / size_step) * size_step, qty)
        cum[-1] = qty
        sizes = np.diff(np.concatenate(([0.0], cum)))
        return start_level, sizes

    def get_orderbook_for_fill_simulation(
        self,
        instrument: Instrument,
        order: Any,
        best_bid: Price,
        best_ask: Price,
    ) -> OrderBook | None:
        if order.order_type == OrderType.MARKET:
            return self.aggressive_book(instrument, order, best_bid, best_ask)
        if order.order_type == OrderType.LIMIT:
            if order.liquidity_side == LiquiditySide.MAKER:
                if self._clock is None:
                    return None  # no notion of "now" for a resting order: Nautilus' own matching
                return self.passive_book(instrument, order, best_bid, best_ask)
            return self.aggressive_book(instrument, order, best_bid, best_ask, limit=order.price.as_double())
        return None

    def aggressive_book(
        self, instrument: Instrument, order: Any, best_bid: Price, best_ask: Price, limit: float | None = None
    ) -> OrderBook | None:
        """The book a taker order of ``order.leaves_qty`` walks (levels beyond ``limit`` left out); records
        the depth it offers as consumed."""
        is_buy = order.side == OrderSide.BUY
        touch = (best_ask if is_buy else best_bid).as_double()
        now = self._now(order)
        a = self.depth_scale(now, touch)
        if a is None:
            return None
        side = 0 if is_buy else 1
        dt = max(now - self._consumed_ts[side], 0)
        consumed = self._consumed[side] * math.exp(-dt / self._tau_ns)
        qty = order.leaves_qty.as_double()
        tick = instrument.price_increment.as_double()
        start_level, sizes = self.levels(consumed, qty, a, tick, instrument.size_increment.as_double())
        h = self._half_spread_ticks
        cross = math.floor(h) + int(self._rng.random() < (h - math.floor(h)))

        book = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
        sign = 1.0 if is_buy else -1.0
        book_side = OrderSide.SELL if is_buy else OrderSide.BUY
        offered = 0.0
        for i, size in enumerate(sizes):
            px = touch + sign * (cross + start_level + i) * tick
            if px <= 0.0 or (limit is not None and sign * (px - limit) > 1e-9 * tick):
                break  # beyond the limit price (sizes only get further away)
            if size <= 0.0:
                continue
            book.add(BookOrder(book_side, instrument.make_price(px), instrument.make_qty(size), i + 1), 0, 0)
            offered += size
        rest = qty - offered
        if limit is not None and rest > 0.0 and order.time_in_force not in (TimeInForce.IOC, TimeInForce.FOK):
            # Nautilus' L1 matching would fill a resting remainder one tick *beyond* the last fill; offer
            # it at the limit instead (optimistic: as if it rested and filled there at once).
            px = instrument.make_price(limit)
            if sign * (px.as_double() - touch) >= 0.0:
                book.add(BookOrder(book_side, px, instrument.make_qty(rest), len(sizes) + 1), 0, 0)
        self._consumed[side] = consumed + offered
        self._consumed_ts[side] = now
        self.orders_simulated += 1
        return book

    def passive_book(
        self, instrument: Instrument, order: Any, best_bid: Price, best_ask: Price
    ) -> OrderBook | None:
        """The liquidity a resting limit order meets now: its budget share, or everything if traded through."""
        is_buy = order.side == OrderSide.BUY
        now = self._now(order)
        row = self._stats_row(now)
        if row is None:
            return None
        limit = order.price.as_double()
        touch = (best_ask if is_buy else best_bid).as_double()
        tick = instrument.price_increment.as_double()
        qty = order.leaves_qty.as_double()
        side = 0 if is_buy else 1
        traded_through = (touch < limit - 0.5 * tick) if is_buy else (touch > limit + 0.5 * tick)
        if traded_through:
            # Nautilus' L1 matching fills the whole remainder of a maker order the tape trades through
            # (whatever this book offers), so say so explicitly.
            book = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
            book_side = OrderSide.SELL if is_buy else OrderSide.BUY
            book.add(BookOrder(book_side, order.price, order.leaves_qty, 1), 0, 0)
            self.orders_simulated += 1
            return book
        # At the touch we share the level with the queue: volume accrues at passive_participation * V
        # only while an order rests (since the last look at this side or since this order was created,
        # whichever is later); budget left from an earlier, long-gone order expires.
        rate = self._passive_rate * row[0]  # contracts per ns
        last = self._budget_ts[side]
        since = int(order.ts_init) if last is None else max(last, int(order.ts_init))
        carried = self._budget[side] if last is not None and now - last <= self._passive_window_ns else 0.0
        budget = min(rate * self._passive_window_ns, carried + rate * max(now - since, 0))
        self._budget_ts[side] = now
        step = instrument.size_increment.as_double()
        fill = math.floor(min(budget, qty) / step + 1e-9) * step
        self._budget[side] = budget - fill
        book = OrderBook(instrument_id=instrument.id, book_type=BookType.L2_MBP)
        if fill > 0.0:
            book_side = OrderSide.SELL if is_buy else OrderSide.BUY
            book.add(BookOrder(book_side, order.price, instrument.make_qty(fill), 1), 0, 0)
        self.orders_simulated += 1
        return book
