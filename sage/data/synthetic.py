"""Seeded regime-switching synthetic market: OHLCV bars and trade ticks with the true regime of every bar.

Why a synthetic market: regime models and MARL agents need data whose regime is *known* (to score label
accuracy against truth) and whose trends are strong and persistent enough to be learnable; benchmarks
need millions of well-formed 1-minute bars on demand. Real data gives neither truth nor arbitrary length.

Model (see ``docs/synthetic.md`` for the full description and the default numbers):

* The regime follows a discrete-time Markov chain over :class:`~sage.data.regimes.Regime`, one step per
  bar. Its transition matrix is derived from each regime's expected duration (diagonal ``1 - 1/D``,
  the leaving probability split evenly over the other three regimes) or given explicitly.
* The log price moves by ``drift - mean_reversion * (x - anchor) - level_pull * (x - x0)
  + volatility * N(0, 1)`` per bar, where ``anchor`` is the log price at which the current regime run
  began (only matters when ``mean_reversion > 0``, i.e. SIDEWAYS by default) and ``level_pull`` is a
  weak regime-independent pull to the initial price (``level_half_life``) that keeps million-bar
  markets in a sensible price range.
* High/low are the extremes of a Brownian bridge between the bar's open and close with the regime's
  volatility (each sampled exactly from its marginal distribution).
* Volume is lognormal around the regime's mean volume.
* The market is continuous (24/7, no sessions): each bar opens at the previous bar's close, so there
  are no gaps. Prices are rounded to the tick grid (never below one tick).

Everything is vectorised; the two inherently sequential recursions (the Markov chain with its anchored
mean reversion, and the per-bar trade layout) are numba kernels fed with random numbers drawn up front by
numpy, so the output depends only on ``numpy.random.Generator(PCG64(seed))`` and is bitwise reproducible.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType, TradeTick
from nautilus_trader.model.enums import AssetClass
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import FuturesContract, Instrument
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.persistence.funcs import urisafe_identifier

from sage.data.regimes import N_REGIMES, REGIME_NAMES, Regime

#: Smallest bar volume the generator emits. Why 4: every bar must be replayable as at least four trades
#: of positive integer size (open, high, low, close), see :func:`generate_trades`.
MIN_BAR_VOLUME: int = 4

#: Directory (inside a catalog) holding the regime truth files written next to the bars.
TRUTH_DIR: str = "sage_truth"

#: Parquet schema-metadata keys of a truth file.
TRUTH_CONFIG_KEY: bytes = b"sage.synthetic.config"
TRUTH_BAR_TYPE_KEY: bytes = b"sage.synthetic.bar_type"
TRUTH_REGIMES_KEY: bytes = b"sage.synthetic.regime_names"

#: Nautilus ``AggressorSide`` codes used in the trades frame (kept as plain ints so the generator does
#: not need Nautilus enums at runtime).
BUYER: int = 1
SELLER: int = 2

#: Objects per ``catalog.write_data`` call; bounds peak memory (a Nautilus object is ~100-200 bytes) and
#: gives one parquet file per chunk.
WRITE_CHUNK: int = 250_000

#: Rows of uniforms drawn per ``Generator.random`` call; bounds the transient memory of the draws
#: (the stream is the same as one big draw, so this does not affect the output).
_DRAW_ROWS: int = 1_000_000

_NS_PER_UNIT: tuple[tuple[int, str], ...] = (
    (86_400_000_000_000, "DAY"),
    (3_600_000_000_000, "HOUR"),
    (60_000_000_000, "MINUTE"),
    (1_000_000_000, "SECOND"),
    (1_000_000, "MILLISECOND"),
)

# Expiry for the synthetic future: far enough that no backtest on generated data hits it (Nautilus
# closes positions at an instrument's expiration).
_FAR_EXPIRY_NS: int = pd.Timestamp("2100-01-01", tz="UTC").value


# -- Configuration ---------------------------------------------------------------------------------------


class RegimeParams(msgspec.Struct, frozen=True, kw_only=True):
    """Per-bar dynamics of one regime. Units are per bar, so they scale with the bar interval.

    The defaults are neutral placeholders for a quiet, directionless regime; the four regimes of
    :class:`SyntheticMarketConfig` each override them with documented values.
    """

    drift: float = 0.0
    """Mean log return per bar (default 0.0). E.g. 3e-5 per 1-minute bar is +1.45 % over a 480-bar run."""

    volatility: float = 3e-4
    """Standard deviation of the per-bar log-return shock (default 3e-4, i.e. 1.2 points at 4000)."""

    volume_mean: float = 1000.0
    """Expected bar volume in contracts (default 1000); bar volume is lognormal around it."""

    mean_duration: float = 500.0
    """Expected run length in bars (default 500); sets the persistence ``P[i, i] = 1 - 1/mean_duration``
    when the transition matrix is derived. Must be >= 1."""

    mean_reversion: float = 0.0
    """Fraction of the log distance to the run's anchor price removed per bar (default 0.0 = pure
    random walk with drift). 0.02 gives a half-life of ~35 bars. Must be in [0, 1)."""

    def __post_init__(self) -> None:
        for name in ("drift", "volatility", "volume_mean", "mean_duration", "mean_reversion"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"RegimeParams.{name} must be finite, got {getattr(self, name)!r}")
        if self.volatility <= 0.0:
            raise ValueError(f"RegimeParams.volatility must be > 0, got {self.volatility}")
        if self.volume_mean < 1.0:
            raise ValueError(f"RegimeParams.volume_mean must be >= 1 contract, got {self.volume_mean}")
        if self.mean_duration < 1.0:
            raise ValueError(
                f"RegimeParams.mean_duration must be >= 1 bar (a regime lasts at least one bar), "
                f"got {self.mean_duration}"
            )
        if not 0.0 <= self.mean_reversion < 1.0:
            raise ValueError(f"RegimeParams.mean_reversion must be in [0, 1), got {self.mean_reversion}")


#: Default BULL: steady up-trend, calm. Trend/noise over a mean run: 480*3e-5 = 1.44 % vs 4e-4*sqrt(480)
#: = 0.88 %, so runs are visibly trending (signal-to-noise ~1.6).
DEFAULT_BULL = RegimeParams(drift=3e-5, volatility=4e-4, volume_mean=1000.0, mean_duration=480.0)
#: Default BEAR: faster, more volatile down-trend (markets fall faster than they rise). 360*4e-5 = 1.44 %
#: per mean run, exactly offsetting BULL, so the long-run price has no net drift.
DEFAULT_BEAR = RegimeParams(drift=-4e-5, volatility=6e-4, volume_mean=1300.0, mean_duration=360.0)
#: Default SIDEWAYS: quiet range, pulled back to where the range started (half-life ~35 bars).
DEFAULT_SIDEWAYS = RegimeParams(
    drift=0.0, volatility=3e-4, volume_mean=700.0, mean_duration=600.0, mean_reversion=0.02
)
#: Default VOLATILE: no direction, 3-4x the usual volatility, heavy volume, short-lived.
DEFAULT_VOLATILE = RegimeParams(drift=0.0, volatility=1.2e-3, volume_mean=2500.0, mean_duration=120.0)


def _parse_start_ns(start: int | str) -> int:
    """UTC nanoseconds of ``start``; naive ISO strings are taken as UTC."""
    if isinstance(start, bool):
        raise TypeError(f"start must be UTC nanoseconds or an ISO-8601 string, got {start!r}")
    if isinstance(start, int):
        if start < 0:
            raise ValueError(f"start must be >= 0 ns since the UNIX epoch, got {start}")
        return start
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"start {start!r} is not an ISO-8601 timestamp: {exc}") from exc
    if ts is pd.NaT:
        raise ValueError(f"start {start!r} is not an ISO-8601 timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts.value < 0:
        raise ValueError(f"start {start!r} is before the UNIX epoch")
    return int(ts.value)


def _tick_decimals(tick: float) -> int:
    """Decimal places of ``tick`` as written (0.25 -> 2), i.e. the Nautilus price precision it needs."""
    exponent = Decimal(repr(float(tick))).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def validate_transition_matrix(matrix: Any) -> np.ndarray:
    """Return ``matrix`` as a float64 (4, 4) array, or raise ``ValueError`` saying what is wrong.

    Why strict: a row that sums to 0.98 would silently make the chain stick in the last regime of that
    row (the sampler walks the cumulative row), and a negative entry is meaningless.
    """
    try:
        p = np.asarray(matrix, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"transition matrix must be a 4x4 array of numbers: {exc}") from exc
    if p.shape != (N_REGIMES, N_REGIMES):
        raise ValueError(
            f"transition matrix must be {N_REGIMES}x{N_REGIMES} (rows/cols {', '.join(REGIME_NAMES)}), "
            f"got shape {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError("transition matrix has non-finite entries")
    if np.any(p < 0.0):
        i, j = np.argwhere(p < 0.0)[0]
        raise ValueError(
            f"transition matrix entries must be >= 0, got P[{REGIME_NAMES[i]}->{REGIME_NAMES[j]}] = {p[i, j]}"
        )
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-9)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"transition matrix row {REGIME_NAMES[i]} sums to {sums[i]!r}, not 1")
    return p


class SyntheticMarketConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that determines a synthetic market; equal configs give bitwise-identical output.

    Frozen and JSON-serialisable so it can be stored next to the data it produced (the truth parquet
    carries it in its schema metadata) and used as a cache key.
    """

    seed: int = 42
    """Seed for ``numpy.random.Generator(PCG64(seed))`` (default 42). Ticks use an independent stream
    derived from the same seed, so adding ticks never changes the bars."""

    n_bars: int = 100_000
    """Number of bars (default 100,000 = ~69 days of 1-minute bars)."""

    start: int | str = "2024-01-01T00:00:00Z"
    """Open time of the first bar, UTC nanoseconds or ISO-8601 (naive = UTC); default 2024-01-01."""

    bar_interval_ns: int = 60_000_000_000
    """Bar length in nanoseconds (default 60e9 = 1 minute). Must be a whole number of milliseconds."""

    initial_price: float = 4000.0
    """Open of the first bar (default 4000.0, an equity-index-future-like level)."""

    price_tick: float = 0.25
    """Price grid (default 0.25); every price is a multiple of it, and its decimals (2) are the
    Nautilus price precision."""

    bull: RegimeParams = DEFAULT_BULL
    """BULL dynamics (default drift +3e-5, vol 4e-4, volume 1000, duration 480 bars)."""

    bear: RegimeParams = DEFAULT_BEAR
    """BEAR dynamics (default drift -4e-5, vol 6e-4, volume 1300, duration 360 bars)."""

    sideways: RegimeParams = DEFAULT_SIDEWAYS
    """SIDEWAYS dynamics (default drift 0, vol 3e-4, volume 700, duration 600, mean reversion 0.02)."""

    volatile: RegimeParams = DEFAULT_VOLATILE
    """VOLATILE dynamics (default drift 0, vol 1.2e-3, volume 2500, duration 120 bars)."""

    transition_matrix: tuple[tuple[float, ...], ...] | None = None
    """Explicit 4x4 regime transition matrix, rows/cols in ``Regime`` order (default None = derive it
    from the regimes' ``mean_duration``; when given, ``mean_duration`` is ignored)."""

    initial_regime: int | None = None
    """Regime of the first bar (default None = drawn from the chain's stationary distribution, so
    statistics carry no start-up bias)."""

    level_half_life: float | None = 100_000.0
    """Half-life in bars of a weak pull of the log price back to ``log(initial_price)`` (default 100,000
    bars, ~69 days of minutes; None = pure random walk). Why: without it a million-bar market wanders by
    factors of e^+-2 (4000 -> 400, where a 0.25 tick is coarser than a bar's move). The pull adds
    ``-ln2/half_life * (x - log(initial_price))`` to every bar's drift: ~7e-6 per unit of log deviation,
    ~2e-6 at the typical deviation of ~0.27, against regime drifts of 3e-5 to 4e-5."""

    volume_dispersion: float = 0.5
    """Sigma of the lognormal bar-volume noise (default 0.5, i.e. ~50 % bar-to-bar volume variation)."""

    trades_per_bar: int = 8
    """Trade ticks per bar for :func:`generate_trades` (default 8; fewer when the bar volume is smaller,
    since every trade has size >= 1). Must be >= 4 (open, high, low, close)."""

    instrument_id: str = "SYN.SIM"
    """Instrument id of the synthetic contract (default ``SYN.SIM``)."""

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if self.n_bars < 1:
            raise ValueError(f"n_bars must be >= 1, got {self.n_bars}")
        _parse_start_ns(self.start)
        if self.bar_interval_ns <= 0 or self.bar_interval_ns % 1_000_000:
            raise ValueError(
                f"bar_interval_ns must be a positive whole number of milliseconds, got {self.bar_interval_ns}"
            )
        if not (np.isfinite(self.price_tick) and self.price_tick > 0.0):
            raise ValueError(f"price_tick must be > 0, got {self.price_tick}")
        if _tick_decimals(self.price_tick) > 9:
            raise ValueError(f"price_tick {self.price_tick!r} has more than 9 decimals (Nautilus maximum)")
        if not (np.isfinite(self.initial_price) and self.initial_price >= self.price_tick):
            raise ValueError(
                f"initial_price must be >= price_tick ({self.price_tick}), got {self.initial_price}"
            )
        if self.transition_matrix is not None:
            validate_transition_matrix(self.transition_matrix)
        if self.initial_regime is not None and self.initial_regime not in range(N_REGIMES):
            raise ValueError(
                f"initial_regime must be one of 0..{N_REGIMES - 1} or None, got {self.initial_regime}"
            )
        if self.level_half_life is not None and not (
            np.isfinite(self.level_half_life) and self.level_half_life >= 1.0
        ):
            # Shorter half-lives make the pull overshoot (and, with strong mean reversion, explode).
            raise ValueError(f"level_half_life must be >= 1 bar or None, got {self.level_half_life}")
        if not (np.isfinite(self.volume_dispersion) and self.volume_dispersion >= 0.0):
            raise ValueError(f"volume_dispersion must be >= 0, got {self.volume_dispersion}")
        if self.trades_per_bar < 4:
            raise ValueError(
                f"trades_per_bar must be >= 4 (open, high, low, close), got {self.trades_per_bar}"
            )
        try:
            InstrumentId.from_str(self.instrument_id)
        except Exception as exc:  # Nautilus raises ValueError with a terse message
            raise ValueError(f"instrument_id {self.instrument_id!r} is not SYMBOL.VENUE: {exc}") from exc

    # -- Derived quantities ------------------------------------------------------------------------------

    @property
    def regimes(self) -> tuple[RegimeParams, RegimeParams, RegimeParams, RegimeParams]:
        """Regime parameters in ``Regime`` order (index = regime code)."""
        return (self.bull, self.bear, self.sideways, self.volatile)

    @property
    def start_ns(self) -> int:
        """Open time of the first bar in UTC nanoseconds."""
        return _parse_start_ns(self.start)

    @property
    def end_ns(self) -> int:
        """Close time (``ts_event``) of the last bar in UTC nanoseconds."""
        return self.start_ns + self.n_bars * self.bar_interval_ns

    @property
    def price_precision(self) -> int:
        """Decimals of ``price_tick``: the Nautilus price precision of every generated price."""
        return _tick_decimals(self.price_tick)

    def transitions(self) -> np.ndarray:
        """The (4, 4) regime transition matrix actually used (explicit, or derived from durations)."""
        if self.transition_matrix is not None:
            return validate_transition_matrix(self.transition_matrix)
        p = np.empty((N_REGIMES, N_REGIMES), dtype=np.float64)
        for i, params in enumerate(self.regimes):
            stay = 1.0 - 1.0 / params.mean_duration
            p[i, :] = (1.0 - stay) / (N_REGIMES - 1)
            p[i, i] = stay
        return p

    def to_json(self) -> str:
        """Canonical JSON of this config (what the truth file stores)."""
        return msgspec.json.encode(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> SyntheticMarketConfig:
        """Inverse of :meth:`to_json` (validates on the way in)."""
        return msgspec.json.decode(text, type=cls)


def stationary_distribution(matrix: Any) -> np.ndarray:
    """Long-run share of bars in each regime, ``pi`` with ``pi P = pi`` and ``sum(pi) = 1``.

    For the derived matrix (even off-diagonal split) this is proportional to the mean durations.
    Solved as a least-squares system so reducible chains still return *a* stationary distribution.
    """
    p = validate_transition_matrix(matrix)
    a = np.vstack([p.T - np.eye(N_REGIMES), np.ones((1, N_REGIMES))])
    b = np.zeros(N_REGIMES + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def expected_mean_durations(matrix: Any) -> np.ndarray:
    """Expected run length per regime, ``1 / (1 - P[i, i])`` bars (inf for an absorbing regime)."""
    p = validate_transition_matrix(matrix)
    leave = 1.0 - np.diag(p)
    with np.errstate(divide="ignore"):
        return np.where(leave > 0.0, 1.0 / np.where(leave > 0.0, leave, 1.0), np.inf)


# -- Kernels ----------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _simulate_path(
    cum_p: np.ndarray,
    s0: int,
    u: np.ndarray,
    eps: np.ndarray,
    drift: np.ndarray,
    vol: np.ndarray,
    reversion: np.ndarray,
    x0: float,
    level_pull: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Regime chain and log close path; sequential because of the chain and the anchored reversion."""
    n = u.shape[0]
    states = np.empty(n, dtype=np.int8)
    x = np.empty(n, dtype=np.float64)
    s = s0
    prev = x0
    anchor = x0
    for t in range(n):
        if t > 0:
            ut = u[t]
            nxt = 0
            while nxt < cum_p.shape[1] - 1 and ut >= cum_p[s, nxt]:
                nxt += 1
            if nxt != s:
                anchor = prev
            s = nxt
        prev = prev + drift[s] - reversion[s] * (prev - anchor) - level_pull * (prev - x0) + vol[s] * eps[t]
        states[t] = s
        x[t] = prev
    return states, x


@numba.njit(cache=True)
def _layout_trades(
    opens: np.ndarray,
    highs: np.ndarray,
    lows: np.ndarray,
    closes: np.ndarray,
    volumes: np.ndarray,
    counts: np.ndarray,
    bar_open_ns: np.ndarray,
    interval_ns: int,
    u: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bar trade times, (unrounded) prices and integer sizes; see :func:`generate_trades`.

    ``u`` holds one row of uniforms per bar: 3 for the extremes' slots and order, then ``K`` each for
    the trade times, the size weights and the price jitter (``K`` = the row's trades-per-bar cap);
    a bar with ``k < K`` trades uses the first ``k`` of each group.
    """
    n = counts.shape[0]
    cap = (u.shape[1] - 3) // 3
    total = 0
    for b in range(n):
        total += counts[b]
    ts = np.empty(total, dtype=np.int64)
    px = np.empty(total, dtype=np.float64)
    size = np.empty(total, dtype=np.float64)
    pos = np.empty(4, dtype=np.int64)
    anchor_px = np.empty(4, dtype=np.float64)
    offs = np.empty(cap, dtype=np.int64)
    s0 = 0
    for b in range(n):
        k = counts[b]
        for j in range(k):
            offs[j] = 1 + np.int64(u[b, 3 + j] * (interval_ns - 1))
        sorted_off = np.sort(offs[:k])
        for j in range(k):
            ts[s0 + j] = bar_open_ns[b] + sorted_off[j]

        o = opens[b]
        h = highs[b]
        lo = lows[b]
        c = closes[b]
        span = h - lo
        # Two distinct interior slots for the extremes.
        i1 = 1 + int(u[b, 0] * (k - 2))
        i2 = 1 + int(u[b, 1] * (k - 3))
        if i2 >= i1:
            i2 += 1
        p_low_first = 0.5 if span <= 0.0 else 0.5 + 0.5 * (c - o) / span
        low_first = u[b, 2] < p_low_first
        e_first = lo if low_first else h
        e_second = h if low_first else lo
        pos[0] = 0
        pos[1] = min(i1, i2)
        pos[2] = max(i1, i2)
        pos[3] = k - 1
        anchor_px[0] = o
        anchor_px[1] = e_first
        anchor_px[2] = e_second
        anchor_px[3] = c
        seg = 0
        for j in range(k):
            while seg < 2 and j >= pos[seg + 1]:
                seg += 1
            if j == 0:
                p = o
            elif j == k - 1:
                p = c
            elif j == pos[1]:
                p = e_first
            elif j == pos[2]:
                p = e_second
            else:
                frac = (j - pos[seg]) / (pos[seg + 1] - pos[seg])
                jitter = 0.1 * span * (2.0 * u[b, 3 + 2 * cap + j] - 1.0)
                p = anchor_px[seg] + frac * (anchor_px[seg + 1] - anchor_px[seg]) + jitter
                p = min(max(p, lo), h)
            px[s0 + j] = p

        # Integer sizes >= 1 summing to the bar volume: cut the surplus at random cumulative shares
        # (exponential weights, i.e. a uniformly random split of the surplus).
        extra = volumes[b] - k
        wsum = 0.0
        for j in range(k):
            wsum += -np.log1p(-u[b, 3 + cap + j])
        acc = 0.0
        prev_cut = 0.0
        for j in range(k):
            acc += -np.log1p(-u[b, 3 + cap + j])
            cut = extra if j == k - 1 or wsum <= 0.0 else np.floor(extra * acc / wsum)
            size[s0 + j] = 1.0 + cut - prev_cut
            prev_cut = cut
        s0 += k
    return ts, px, size


@numba.njit(cache=True)
def _tick_rule(prices: np.ndarray, first_side: int) -> np.ndarray:
    """Aggressor by the tick rule: up-tick = buyer, down-tick = seller, zero-tick = previous side."""
    n = prices.shape[0]
    side = np.empty(n, dtype=np.uint8)
    last = first_side
    for i in range(n):
        if i > 0:
            if prices[i] > prices[i - 1]:
                last = 1
            elif prices[i] < prices[i - 1]:
                last = 2
        side[i] = last
    return side


# -- Generation -------------------------------------------------------------------------------------------


def _to_grid(values: np.ndarray, tick: float, decimals: int) -> np.ndarray:
    """Nearest multiple of ``tick``, written with ``decimals`` decimals (so 0.1-ticks are clean)."""
    return np.round(np.rint(values / tick) * tick, decimals)


def _close_index(config: SyntheticMarketConfig, n: int) -> pd.DatetimeIndex:
    ts = config.start_ns + config.bar_interval_ns * np.arange(1, n + 1, dtype=np.int64)
    return pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC")


def _standard_normals(u1: np.ndarray, u2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent N(0, 1) arrays from two uniform arrays (Box-Muller), so normals can come from
    the same per-bar row of uniforms as everything else (see :func:`generate_bars` on prefixes)."""
    radius = np.sqrt(-2.0 * np.log1p(-u1))
    angle = 2.0 * np.pi * u2
    return radius * np.cos(angle), radius * np.sin(angle)


def generate_bars(config: SyntheticMarketConfig) -> pd.DataFrame:
    """OHLCV bars with the true regime of each bar.

    Returns a frame indexed by the UTC bar *close* time (``ts_event``, Nautilus convention) with
    float64 ``open, high, low, close, volume`` (prices on the tick grid, volume whole contracts
    >= :data:`MIN_BAR_VOLUME`) and int8 ``regime`` (:class:`Regime` codes). ``open`` equals the
    previous ``close`` (continuous market, no gaps); the first open is ``initial_price`` on the grid.

    Random numbers are drawn as one row of uniforms per bar, so a config with more bars and otherwise
    the same fields *extends* the shorter market: its first ``n`` bars are bitwise identical.
    """
    n = config.n_bars
    params = config.regimes
    drift = np.array([r.drift for r in params])
    vol = np.array([r.volatility for r in params])
    reversion = np.array([r.mean_reversion for r in params])
    vol_mean = np.array([r.volume_mean for r in params])
    p = config.transitions()

    rng = np.random.Generator(np.random.PCG64(config.seed))
    # Draw layout is part of the reproducibility contract: one scalar, then per bar
    # (chain, high, low, normal-1, normal-2), in row blocks (same stream as a single draw).
    u0 = rng.random()
    u_chain = np.empty(n)
    u_high = np.empty(n)
    u_low = np.empty(n)
    eps = np.empty(n)
    z_volume = np.empty(n)
    for lo in range(0, n, _DRAW_ROWS):
        hi = min(lo + _DRAW_ROWS, n)
        block = rng.random((hi - lo, 5))
        u_chain[lo:hi] = block[:, 0]
        u_high[lo:hi] = block[:, 1]
        u_low[lo:hi] = block[:, 2]
        eps[lo:hi], z_volume[lo:hi] = _standard_normals(block[:, 3], block[:, 4])

    if config.initial_regime is None:
        s0 = int(np.searchsorted(np.cumsum(stationary_distribution(p)), u0, side="right"))
        s0 = min(s0, N_REGIMES - 1)
    else:
        s0 = int(config.initial_regime)

    cum_p = np.cumsum(p, axis=1)
    for i in range(N_REGIMES):
        # Float cumsum may end at 0.9999999; close every row at exactly 1 from its last possible state.
        last = int(np.flatnonzero(p[i] > 0.0)[-1])
        cum_p[i, last:] = 1.0

    x0 = float(np.log(config.initial_price))
    level_pull = 0.0 if config.level_half_life is None else float(np.log(2.0) / config.level_half_life)
    states, x = _simulate_path(cum_p, s0, u_chain, eps, drift, vol, reversion, x0, level_pull)

    tick = float(config.price_tick)
    dec = config.price_precision
    close = np.maximum(_to_grid(np.exp(x), tick, dec), tick)
    open_ = np.empty(n)
    open_[0] = max(_to_grid(np.array([config.initial_price]), tick, dec)[0], tick)
    open_[1:] = close[:-1]

    # Brownian-bridge extremes in log space: P(max > m) = exp(-2 (m - a)(m - b) / s^2) for m >= max(a, b),
    # inverted exactly (log1p(-u) = log(1 - u) stays finite for u in [0, 1)).
    a = np.empty(n)
    a[0] = x0
    a[1:] = x[:-1]
    d2 = (x - a) ** 2
    s2 = vol[states] ** 2
    hi_log = 0.5 * (a + x + np.sqrt(d2 - 2.0 * s2 * np.log1p(-u_high)))
    lo_log = 0.5 * (a + x - np.sqrt(d2 - 2.0 * s2 * np.log1p(-u_low)))
    oc_max = np.maximum(open_, close)
    oc_min = np.minimum(open_, close)
    high = np.maximum(_to_grid(np.exp(hi_log), tick, dec), oc_max)
    low = np.maximum(np.minimum(_to_grid(np.exp(lo_log), tick, dec), oc_min), tick)

    disp = float(config.volume_dispersion)
    volume = np.rint(vol_mean[states] * np.exp(disp * z_volume - 0.5 * disp * disp))
    volume = np.maximum(volume, float(MIN_BAR_VOLUME))

    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume, "regime": states},
        index=_close_index(config, n),
    )


def generate_trades(config: SyntheticMarketConfig, bars: pd.DataFrame | None = None) -> pd.DataFrame:
    """Trade ticks that replay each bar exactly.

    Per bar: ``min(config.trades_per_bar, volume)`` trades at sorted random nanosecond times strictly
    inside ``(close_time - interval, close_time)``; the first trade is at the open, the last at the
    close, two interior trades touch the high and the low (the low first with probability
    ``0.5 + 0.5 (close - open) / (high - low)``, as an up bar more likely dipped early), the rest lie on
    the straight path between those points plus uniform jitter of up to 0.1 x the bar range, clipped to
    [low, high] and rounded to the tick. Sizes are integers >= 1 summing to the bar volume. The aggressor
    side follows the tick rule (up-tick buyer, down-tick seller, zero-tick repeats the last side).
    ``bars`` defaults to ``generate_bars(config)``; pass it to avoid regenerating.

    Uses its own random stream (``SeedSequence(seed, spawn_key=(1,))``) with one row of uniforms per
    bar, so ticks never change the bars and a longer market's ticks extend a shorter one's.

    Returns a frame indexed by UTC ``ts_event`` with float64 ``price``, float64 ``size`` (whole
    contracts), uint8 ``aggressor_side`` (Nautilus ``AggressorSide``: 1 buyer, 2 seller) and int8
    ``regime`` of the enclosing bar.
    """
    if bars is None:
        bars = generate_bars(config)
    if bars.empty:
        raise ValueError("bars is empty")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise TypeError("bars must be indexed by bar close time (a DatetimeIndex), as generate_bars returns")
    volume = bars["volume"].to_numpy(dtype=np.float64)
    if np.any(volume < MIN_BAR_VOLUME) or np.any(volume != np.rint(volume)):
        raise ValueError(f"bar volumes must be whole numbers >= {MIN_BAR_VOLUME} to be split into trades")
    n = len(bars)
    cap = int(config.trades_per_bar)
    counts = np.minimum(volume, cap).astype(np.int64)
    bar_open_ns = bars.index.as_unit("ns").asi8 - config.bar_interval_ns
    cols = [bars[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")]

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(config.seed, spawn_key=(1,))))
    # Draw layout is part of the reproducibility contract: one scalar, then one row per bar of
    # 3 + 3 * trades_per_bar uniforms, drawn in row blocks to bound memory.
    first_side = BUYER if rng.random() < 0.5 else SELLER
    rows = max(1, _DRAW_ROWS // (3 + 3 * cap))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for lo in range(0, n, rows):
        hi = min(lo + rows, n)
        block = rng.random((hi - lo, 3 + 3 * cap))
        parts.append(
            _layout_trades(
                cols[0][lo:hi],
                cols[1][lo:hi],
                cols[2][lo:hi],
                cols[3][lo:hi],
                volume[lo:hi],
                counts[lo:hi],
                bar_open_ns[lo:hi],
                config.bar_interval_ns,
                block,
            )
        )
    ts = np.concatenate([part[0] for part in parts])
    px = _to_grid(
        np.concatenate([part[1] for part in parts]), float(config.price_tick), config.price_precision
    )
    size = np.concatenate([part[2] for part in parts])
    side = _tick_rule(px, first_side)
    regime = np.repeat(bars["regime"].to_numpy(dtype=np.int8), counts)
    index = pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC")
    return pd.DataFrame({"price": px, "size": size, "aggressor_side": side, "regime": regime}, index=index)


# -- Statistics -------------------------------------------------------------------------------------------


def bar_log_returns(bars: pd.DataFrame) -> np.ndarray:
    """Log return of each bar, ``log(close / open)``; equals close-to-close since open = previous close."""
    return np.log(bars["close"].to_numpy(dtype=np.float64) / bars["open"].to_numpy(dtype=np.float64))


def regime_statistics(
    regimes: np.ndarray, bar_returns: np.ndarray, volumes: np.ndarray | None = None
) -> dict[str, Any]:
    """Empirical regime statistics of a labelled series, to compare with the configured parameters.

    ``bar_returns[t]`` is the return *of* bar ``t`` (generated under ``regimes[t]``); NaNs are ignored.
    Per-regime arrays are indexed by :class:`Regime` code. Run lengths exclude the first and last run,
    which the series cuts off (their true lengths are unknown and biased short).

    Keys: ``n_bars`` (int), ``bars_per_regime``, ``frequency``, ``transition_counts`` (4x4),
    ``transition_matrix`` (4x4 row-normalised; NaN rows for regimes never left from), ``n_runs``,
    ``mean_duration``, ``return_mean``, ``return_std`` (ddof=1), and ``volume_mean`` if ``volumes``
    is given. Regimes without data get NaN.
    """
    r = np.asarray(regimes).astype(np.int64)
    ret = np.asarray(bar_returns, dtype=np.float64)
    if r.ndim != 1 or ret.shape != r.shape:
        raise ValueError(
            f"regimes and bar_returns must be 1-D of equal length, got {r.shape} and {ret.shape}"
        )
    if r.size and (r.min() < 0 or r.max() >= N_REGIMES):
        raise ValueError(f"regime codes must be in 0..{N_REGIMES - 1}")
    k = N_REGIMES
    bars_per = np.bincount(r, minlength=k)
    counts = (
        np.bincount(r[:-1] * k + r[1:], minlength=k * k).reshape(k, k) if r.size > 1 else np.zeros((k, k))
    )
    row = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        trans = np.where(row > 0, counts / np.where(row > 0, row, 1), np.nan)

    change = np.flatnonzero(r[1:] != r[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [r.size]]))
    inner = slice(1, -1)
    run_regime = r[starts][inner]
    run_len = lengths[inner]
    n_runs = np.bincount(run_regime, minlength=k)
    len_sum = np.bincount(run_regime, weights=run_len, minlength=k)

    ok = ~np.isnan(ret)
    n_ok = np.bincount(r[ok], minlength=k).astype(np.float64)
    s1 = np.bincount(r[ok], weights=ret[ok], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n_ok
        dev2 = np.bincount(r[ok], weights=(ret[ok] - mean[r[ok]]) ** 2, minlength=k)
        std = np.sqrt(dev2 / (n_ok - 1.0))
        std = np.where(n_ok > 1, std, np.nan)
        out: dict[str, Any] = {
            "n_bars": int(r.size),
            "bars_per_regime": bars_per,
            "frequency": bars_per / max(r.size, 1),
            "transition_counts": counts.astype(np.int64),
            "transition_matrix": trans,
            "n_runs": n_runs,
            "mean_duration": np.where(n_runs > 0, len_sum / np.maximum(n_runs, 1), np.nan),
            "return_mean": mean,
            "return_std": std,
        }
        if volumes is not None:
            vol = np.asarray(volumes, dtype=np.float64)
            if vol.shape != r.shape:
                raise ValueError(f"volumes must have the shape of regimes, got {vol.shape} vs {r.shape}")
            out["volume_mean"] = np.bincount(r, weights=vol, minlength=k) / np.where(
                bars_per > 0, bars_per, np.nan
            )
    return out


# -- Nautilus catalog ------------------------------------------------------------------------------------


def synthetic_instrument(
    config: SyntheticMarketConfig,
    *,
    multiplier: int = 1,
    margin_init: Decimal = Decimal("0.05"),
    margin_maint: Decimal = Decimal("0.04"),
    maker_fee: Decimal = Decimal(0),
    taker_fee: Decimal = Decimal(0),
) -> FuturesContract:
    """The synthetic contract as a Nautilus ``FuturesContract`` matching the generated prices.

    Price precision and increment come from ``config.price_tick`` (0.25 -> precision 2), whole-contract
    sizes. ``multiplier`` defaults to 1 so PnL is in price points per contract (ES-like would be 50).
    Margins (5 % initial, 4 % maintenance) are ES-like; fees default to zero so cost models stay the
    caller's explicit choice. Activation is the data start; expiry is 2100-01-01 (or one day after the
    data if later) so no backtest hits it.
    """
    iid = InstrumentId.from_str(config.instrument_id)
    tick = format(Decimal(repr(float(config.price_tick))).normalize(), "f")
    return FuturesContract(
        instrument_id=iid,
        raw_symbol=iid.symbol,
        asset_class=AssetClass.INDEX,
        currency=USD,
        price_precision=config.price_precision,
        price_increment=Price.from_str(tick),
        multiplier=Quantity.from_int(multiplier),
        lot_size=Quantity.from_int(1),
        underlying=iid.symbol.value,
        activation_ns=config.start_ns,
        expiration_ns=max(_FAR_EXPIRY_NS, config.end_ns + 86_400_000_000_000),
        ts_event=config.start_ns,
        ts_init=config.start_ns,
        margin_init=margin_init,
        margin_maint=margin_maint,
        maker_fee=maker_fee,
        taker_fee=taker_fee,
    )


def synthetic_bar_type(
    config: SyntheticMarketConfig, instrument_id: InstrumentId | str | None = None
) -> BarType:
    """``<instrument>-<step>-<UNIT>-LAST-EXTERNAL`` for the config's interval, e.g.
    ``SYN.SIM-1-MINUTE-LAST-EXTERNAL``; the largest unit that divides the interval is used."""
    iid = str(instrument_id) if instrument_id is not None else config.instrument_id
    for unit_ns, unit in _NS_PER_UNIT:
        if config.bar_interval_ns % unit_ns == 0:
            return BarType.from_str(f"{iid}-{config.bar_interval_ns // unit_ns}-{unit}-LAST-EXTERNAL")
    raise ValueError(f"bar_interval_ns {config.bar_interval_ns} is not a whole number of milliseconds")


def nautilus_bars(frame: pd.DataFrame, bar_type: BarType, price_precision: int, size_precision: int) -> list[Bar]:
    """Nautilus ``Bar`` objects from a :func:`generate_bars` frame (``ts_event == ts_init`` = bar close)."""
    ts = frame.index.asi8.astype(np.uint64)
    return Bar.from_raw_arrays_to_list(
        bar_type,
        price_precision,
        size_precision,
        *(frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume")),
        ts,
        ts,
    )


def synthetic_market_bars(config: SyntheticMarketConfig) -> tuple[Instrument, BarType, list[Bar]]:
    """(instrument, bar type, Nautilus bars) of the synthetic market, exactly as
    :func:`write_synthetic_catalog` stores them: what an in-memory ``BacktestEngine`` run needs."""
    instrument = synthetic_instrument(config)
    bar_type = synthetic_bar_type(config, instrument.id)
    bars = nautilus_bars(generate_bars(config), bar_type, instrument.price_precision, instrument.size_precision)
    return instrument, bar_type, bars


def truth_path(catalog_path: str | os.PathLike[str], bar_type: BarType | str) -> Path:
    """Where the regime truth for ``bar_type`` lives: ``<catalog>/sage_truth/<bar_type>.parquet``."""
    return Path(catalog_path) / TRUTH_DIR / f"{urisafe_identifier(str(bar_type))}.parquet"


def _write_truth(
    path: Path, ts_event: np.ndarray, regime: np.ndarray, config: SyntheticMarketConfig, bar_type: str
) -> None:
    """Write the truth parquet atomically (temp file in the same directory, then ``os.replace``), so a
    reader never sees a half-written file and an interrupted write leaves the old one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"ts_event": pa.array(ts_event, pa.int64()), "regime": pa.array(regime, pa.int8())})
    table = table.replace_schema_metadata(
        {
            TRUTH_CONFIG_KEY: config.to_json().encode(),
            TRUTH_BAR_TYPE_KEY: bar_type.encode(),
            TRUTH_REGIMES_KEY: json.dumps(list(REGIME_NAMES)).encode(),
        }
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_truth(catalog_path: str | os.PathLike[str], bar_type: BarType | str) -> pd.Series:
    """True regime per bar: int8 :class:`Regime` codes indexed by UTC bar close time (``ts_event``)."""
    path = truth_path(catalog_path, bar_type)
    if not path.exists():
        raise FileNotFoundError(f"no regime truth for {bar_type} in {catalog_path} (expected {path})")
    table = pq.read_table(path)
    ts = table.column("ts_event").to_numpy().astype(np.int64)
    index = pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC")
    return pd.Series(table.column("regime").to_numpy().astype(np.int8), index=index, name="regime")


def read_truth_config(catalog_path: str | os.PathLike[str], bar_type: BarType | str) -> SyntheticMarketConfig:
    """The config that generated the bars of ``bar_type`` (from the truth file's metadata)."""
    path = truth_path(catalog_path, bar_type)
    if not path.exists():
        raise FileNotFoundError(f"no regime truth for {bar_type} in {catalog_path} (expected {path})")
    meta = pq.read_schema(path).metadata or {}
    if TRUTH_CONFIG_KEY not in meta:
        raise ValueError(f"{path} has no {TRUTH_CONFIG_KEY.decode()} metadata")
    return SyntheticMarketConfig.from_json(meta[TRUTH_CONFIG_KEY])


def write_synthetic_catalog(
    catalog_path: str | os.PathLike[str],
    config: SyntheticMarketConfig,
    instrument: Instrument | None = None,
    with_ticks: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Generate the market of ``config`` and write it to a Nautilus ``ParquetDataCatalog``.

    Writes the instrument (default :func:`synthetic_instrument`), the bars as Nautilus ``Bar`` for
    :func:`synthetic_bar_type`, optionally the trade ticks, and the regime truth to
    :func:`truth_path`. Data are written in chunks of :data:`WRITE_CHUNK` objects (one parquet file each)
    to bound memory. Existing bars/ticks of this instrument raise ``FileExistsError`` unless
    ``overwrite`` (then they are deleted first), because mixing two generations would corrupt both the
    data and the truth alignment; ``overwrite`` also replaces the stored instrument definition.

    Returns a summary: ``catalog_path, instrument_id, bar_type, n_bars, n_trades, regime_frequencies``
    (name -> share of bars), ``truth_path``, ``start``/``end`` (ISO) and ``seconds`` (wall time).
    """
    t0 = time.perf_counter()
    instrument = instrument if instrument is not None else synthetic_instrument(config)
    tick = float(config.price_tick)
    inc = float(instrument.price_increment)
    if not np.isclose(inc, tick, rtol=0.0, atol=1e-12) or instrument.price_precision < config.price_precision:
        raise ValueError(
            f"instrument {instrument.id} has price increment {instrument.price_increment} "
            f"(precision {instrument.price_precision}) but the config's price_tick is {tick}"
        )
    bar_type = synthetic_bar_type(config, instrument.id)
    catalog = ParquetDataCatalog(str(catalog_path))
    identifiers = ((Bar, str(bar_type)), (TradeTick, str(instrument.id)))
    existing = [(cls, ident) for cls, ident in identifiers if catalog.get_intervals(cls, ident)]
    if existing and not overwrite:
        found = ", ".join(f"{cls.__name__} {ident}" for cls, ident in existing)
        raise FileExistsError(f"catalog {catalog_path} already holds {found}; pass overwrite=True to replace")
    if overwrite:
        # Also drop older definitions of the instrument (e.g. another start date), so the catalog
        # holds exactly one definition matching the data.
        existing.append((type(instrument), str(instrument.id)))
    tpath = truth_path(catalog_path, bar_type)
    if overwrite and tpath.exists():
        # Drop the old truth first: an interrupted rewrite then leaves bars without truth, never bars
        # next to the truth of a different generation.
        tpath.unlink()
    for cls, ident in existing:
        if catalog.get_intervals(cls, ident):
            catalog.delete_data_range(cls, ident)

    bars = generate_bars(config)
    catalog.write_data([instrument])
    for lo in range(0, len(bars), WRITE_CHUNK):
        chunk = nautilus_bars(
            bars.iloc[lo : lo + WRITE_CHUNK], bar_type, instrument.price_precision, instrument.size_precision
        )
        catalog.write_data(chunk)
        del chunk

    n_trades = 0
    if with_ticks:
        trades = generate_trades(config, bars)
        n_trades = len(trades)
        t_ns = trades.index.asi8.astype(np.uint64)
        prices = trades["price"].to_numpy()
        sizes = trades["size"].to_numpy()
        sides = trades["aggressor_side"].to_numpy(dtype=np.uint8)
        for lo in range(0, n_trades, WRITE_CHUNK):
            hi = min(lo + WRITE_CHUNK, n_trades)
            chunk_t = TradeTick.from_raw_arrays_to_list(
                instrument.id,
                instrument.price_precision,
                instrument.size_precision,
                prices[lo:hi],
                sizes[lo:hi],
                sides[lo:hi],
                [str(i) for i in range(lo, hi)],
                t_ns[lo:hi],
                t_ns[lo:hi],
            )
            catalog.write_data(chunk_t)
            del chunk_t

    _write_truth(tpath, bars.index.asi8, bars["regime"].to_numpy(), config, str(bar_type))
    freq = np.bincount(bars["regime"].to_numpy(), minlength=N_REGIMES) / len(bars)
    return {
        "catalog_path": str(catalog_path),
        "instrument_id": str(instrument.id),
        "bar_type": str(bar_type),
        "n_bars": len(bars),
        "n_trades": n_trades,
        "regime_frequencies": {Regime(i).name: float(f) for i, f in enumerate(freq)},
        "truth_path": str(tpath),
        "start": pd.Timestamp(config.start_ns, tz="UTC").isoformat(),
        "end": pd.Timestamp(config.end_ns, tz="UTC").isoformat(),
        "seconds": time.perf_counter() - t0,
    }
