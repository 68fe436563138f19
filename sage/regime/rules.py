"""Rule-based regime detectors: the fallback chain's levels 3 (multi-indicator) and 4 (volatility only).

Why rules at all: when the learned models are unavailable, slow, or fed inputs unlike their training data,
the detector must still publish a sensible regime. A handful of textbook indicators with transparent
thresholds has no training distribution to drift away from and no checkpoint to lose.

Both detectors read rows of the ``sage.features`` feature table by column name (the caller passes the
row layout, e.g. ``FeatureSchema().names``; this module does not import ``sage.features`` so that it stays
free of Nautilus). Both are causal and stateful: they keep a trailing window of volatility (for its
median) and an exponentially weighted mean of log returns (a slow drift estimate), updated one row at a
time; :meth:`~VolatilityDetector.run` on a block of rows is exactly the streaming loop.

Probability model (shared): two nearly independent evidence axes.

* **Volatility**: ``ratio = vol / trailing median(vol)``; ``P(VOLATILE) = sigmoid(vol_slope *
  ln(ratio / volatile_ratio))`` -- one half at ``volatile_ratio`` times the usual volatility. Relative to
  the instrument's own recent history, so the same thresholds serve ES minutes and SPX days.
* **Direction** (the remaining mass ``1 - P(VOLATILE)``): a trend score ``T`` in units of "sigmas of
  evidence"; BULL, BEAR and SIDEWAYS get weights ``exp(k (T - c))``, ``exp(k (-T - c))`` and 1, i.e. a
  trend regime overtakes SIDEWAYS once ``|T|`` exceeds ``c`` (``trend_threshold``).

Level 4 (:class:`VolatilityDetector`) uses only ``ewma_vol`` and ``log_ret``: ``T`` is the t-statistic of
the EW mean return (the "simple drift sign"). With ``use_drift=False``, or while ``log_ret`` has no valid
value yet, it only separates VOLATILE from SIDEWAYS (BULL/BEAR get probability 0). Level 3
(:class:`RuleDetector`) adds four trend reads to ``T``: 20-bar momentum in sigmas (``mom_slow``), MACD in
ATRs, RSI and Bollinger %b.

Can't decide: a row with a NaN/inf in a column the detector needs, or a detector still warming up
(fewer than ``vol_min_periods`` volatility values), yields all-NaN probabilities and label -1 -- never an
exception -- so the fallback chain moves down a level. A NaN row also leaves the state untouched (like the
feature pipeline's treatment of bad bars).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np

from sage.regime.kernel import (
    RC_IS_RULE,
    RC_LAM,
    RC_MIN_PERIODS,
    RC_RATIO,
    RC_SIZE,
    RC_SLOPE,
    RC_THRESHOLD,
    RC_TREND_SLOPE,
    RC_USE_DRIFT,
    RC_W,
    RS_RATIO,
    RS_SIZE,
    RS_TREND,
    rules_update,
)  # fmt: skip

__all__ = [
    "UNDECIDED",
    "RuleConfig",
    "RuleDetector",
    "VolatilityConfig",
    "VolatilityDetector",
    "labels_from_probabilities",
    "rules_config",
]

#: Label reported when a detector cannot decide.
UNDECIDED: int = -1

_BULL, _BEAR, _SIDEWAYS, _VOLATILE = 0, 1, 2, 3


class VolatilityConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of the level-4 :class:`VolatilityDetector` (and the shared part of level 3)."""

    vol_column: str = "ewma_vol"
    """Per-bar volatility column (default ``ewma_vol``, RiskMetrics lambda 0.94)."""

    return_column: str = "log_ret"
    """Per-bar log-return column for the drift estimate (default ``log_ret``)."""

    vol_window: int = 1000
    """Trailing window, in valid rows, of the volatility median (default 1000). Long, so that a volatile
    spell of a few hundred bars is still measured against calmer times."""

    vol_min_periods: int = 100
    """Volatility values needed before any decision (default 100)."""

    volatile_ratio: float = 1.8
    """``vol / median`` at which VOLATILE gets probability 1/2 (default 1.8)."""

    vol_slope: float = 6.0
    """Steepness of ``P(VOLATILE)`` in ``ln(ratio)`` (default 6: the probability goes 0.12 -> 0.88 as the
    ratio moves from 1.25x to 2.6x)."""

    use_drift: bool = True
    """Whether BULL/BEAR are reported from the sign of the EW mean return (default True)."""

    trend_halflife: float = 120.0
    """Half-life in bars of the EW mean of log returns (default 120). Long: a per-bar drift is small next to
    per-bar noise (3e-5 vs 4e-4 in the synthetic BULL regime) and needs ~100 bars to show."""

    trend_threshold: float = 0.75
    """``|T|`` at which a trend regime is as likely as SIDEWAYS (default 0.75)."""

    trend_slope: float = 2.0
    """Steepness ``k`` of the direction weights in ``T`` (default 2.0)."""

    def __post_init__(self) -> None:
        if self.vol_window < 1 or not 1 <= self.vol_min_periods <= self.vol_window:
            raise ValueError("need vol_window >= 1 and 1 <= vol_min_periods <= vol_window")
        for name in ("volatile_ratio", "vol_slope", "trend_halflife", "trend_slope"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.trend_threshold >= 0:
            raise ValueError(f"trend_threshold must be >= 0, got {self.trend_threshold}")


class RuleConfig(VolatilityConfig, frozen=True, kw_only=True):
    """Parameters of the level-3 :class:`RuleDetector`: the volatility part plus the trend reads.

    ``T`` combines five trend reads, each scaled so that ~1 is "clear evidence" and clipped to +-10:
    EW-mean t-statistic; ``mom_slow / (ewma_vol sqrt(20))``; ``macd / atr``; ``(rsi - 50) / 10``;
    ``2 (bb_pctb - 0.5)`` (+-1 at the bands), as a weighted Stouffer sum ``sum(w_i x_i) / sqrt(sum(w_i^2))``
    (keeps ``T`` on the scale of a single z-score). The default weights favour the slow drift read: on the
    synthetic market (per-bar drift ~1/13 of per-bar noise) the 20-bar reads mostly add noise, and larger
    weights lowered balanced accuracy (tuned on seed 7, reported on seed 42 in
    ``docs/regime_reliability.md``). Real markets may reward more weight on them; they are parameters.
    """

    w_drift: float = 1.0
    """Weight of the EW-mean t-statistic (default 1.0)."""
    w_momentum: float = 0.15
    """Weight of the 20-bar momentum in sigmas, column ``mom_slow`` (default 0.15)."""
    w_macd: float = 0.15
    """Weight of MACD in ATRs, columns ``macd``, ``atr`` (default 0.15)."""
    w_rsi: float = 0.05
    """Weight of RSI, column ``rsi`` (default 0.05)."""
    w_bollinger: float = 0.05
    """Weight of Bollinger %b, column ``bb_pctb`` (default 0.05)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        weights = (self.w_drift, self.w_momentum, self.w_macd, self.w_rsi, self.w_bollinger)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("trend weights must be >= 0 with a positive sum")


def labels_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Argmax label per row; :data:`UNDECIDED` (-1) for rows with any NaN."""
    probs = np.asarray(probs, dtype=np.float64)
    ok = np.isfinite(probs).all(axis=-1)
    out = np.full(probs.shape[:-1], UNDECIDED, dtype=np.int64)
    out[ok] = np.argmax(probs[ok], axis=-1)
    return out


class VolatilityDetector:
    """Level 4: VOLATILE vs SIDEWAYS from the volatility ratio, BULL/BEAR from the EW drift sign.

    Parameters
    ----------
    columns:
        Names of the row layout (e.g. ``FeatureSchema().names``); rows passed as arrays are read by these
        names. Must contain the configured volatility and return columns.
    config:
        :class:`VolatilityConfig` (defaults documented there).

    State: the trailing volatility window, the EW sums of returns, ``rows_seen``; ``last_ratio`` and
    ``last_trend`` (the evidence behind the last output, for logs). The arithmetic is the compiled
    :func:`sage.regime.kernel.rules_update`, the very function the detector's per-bar kernel runs, so a
    detector used on its own and the one inside ``RegimeDetector`` agree exactly.
    """

    config: VolatilityConfig

    def __init__(self, columns: Sequence[str], config: VolatilityConfig | None = None) -> None:
        self.config = config if config is not None else self._default_config()
        self.columns = tuple(columns)
        self._index = {name: i for i, name in enumerate(self.columns)}
        missing = [c for c in self._required() if c not in self._index]
        if missing:
            raise ValueError(f"{type(self).__name__}: columns lack {missing}")
        self._idx = np.array([self._index[c] for c in self._required()], dtype=np.int64)
        self._cfg = rules_config(self.config, rule=len(self._required()) == 7)
        self._fifo = np.zeros(self.config.vol_window)
        self._sorted = np.zeros(self.config.vol_window)
        self._meta = np.zeros(2, dtype=np.int64)  # head, count of the volatility window
        self._state = np.zeros(RS_SIZE)
        self._out = np.empty(4)
        self.reset()

    @staticmethod
    def _default_config() -> VolatilityConfig:
        return VolatilityConfig()

    def _required(self) -> tuple[str, ...]:
        return (self.config.vol_column, self.config.return_column)

    def reset(self) -> VolatilityDetector:
        """Forget all state (a fresh detector)."""
        self._meta[:] = 0
        self._state[:] = 0.0
        self._state[RS_RATIO] = self._state[RS_TREND] = math.nan
        self.rows_seen = 0
        return self

    @property
    def last_ratio(self) -> float:
        """``vol / median`` behind the last output (NaN when undecided)."""
        return float(self._state[RS_RATIO])

    @property
    def last_trend(self) -> float:
        """Trend score ``T`` behind the last output (NaN when undecided or without a trend read)."""
        return float(self._state[RS_TREND])

    def _read(self, row: Any) -> np.ndarray:
        if isinstance(row, Mapping):
            return np.array([float(row.get(c, math.nan)) for c in self._required()])
        arr = np.asarray(row, dtype=np.float64)
        if arr.shape != (len(self.columns),):
            raise ValueError(f"expected a row of {len(self.columns)} values, got shape {arr.shape}")
        return arr[self._idx]

    def update(self, row: Any) -> np.ndarray:
        """Consume one feature row (array in ``columns`` order, or a mapping by name); return the
        probabilities (BULL, BEAR, SIDEWAYS, VOLATILE), all NaN when the detector cannot decide."""
        vals = np.ascontiguousarray(self._read(row), dtype=np.float64)
        self.rows_seen += 1
        rules_update(self._cfg, self._state, self._fifo, self._sorted, self._meta, 0, vals, self._out)
        return self._out.copy()

    def run(self, X: Any) -> np.ndarray:
        """Probabilities for each row of ``X`` (n x len(columns) array, or a DataFrame with those
        columns), continuing from the current state: exactly :meth:`update` row by row."""
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):
            X = X[list(self.columns)].to_numpy(dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        out = np.empty((X.shape[0], 4))
        for i in range(X.shape[0]):
            out[i] = self.update(X[i])
        return out

    def fit(self, X: Any) -> VolatilityDetector:
        """Reset, then warm the state up on history ``X`` (e.g. the bars before going live)."""
        self.reset()
        self.run(X)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Labels for each row of ``X`` (:data:`UNDECIDED` where it cannot decide), continuing the state."""
        return labels_from_probabilities(self.run(X))


class RuleDetector(VolatilityDetector):
    """Level 3: volatility ratio plus five trend reads (EW drift, momentum, MACD, RSI, Bollinger).

    Same interface and probability model as :class:`VolatilityDetector`; ``T`` is the weighted mean of
    the reads documented on :class:`RuleConfig`. Needs columns ``ewma_vol, log_ret, mom_slow, macd, atr,
    rsi, bb_pctb`` (names configurable for the first two).
    """

    config: RuleConfig

    def __init__(self, columns: Sequence[str], config: RuleConfig | None = None) -> None:
        super().__init__(columns, config if config is not None else RuleConfig())

    @staticmethod
    def _default_config() -> VolatilityConfig:
        return RuleConfig()

    def _required(self) -> tuple[str, ...]:
        return (
            self.config.vol_column,
            self.config.return_column,
            "mom_slow",
            "macd",
            "atr",
            "rsi",
            "bb_pctb",
        )


def rules_config(config: VolatilityConfig, *, rule: bool) -> np.ndarray:
    """The config vector :func:`sage.regime.kernel.rules_update` reads (``RC_*`` layout); ``rule`` selects
    level 3 (five trend reads, ``config`` must be a :class:`RuleConfig`) or level 4 (drift read only)."""
    cfg = np.zeros(RC_SIZE)
    cfg[RC_MIN_PERIODS] = config.vol_min_periods
    cfg[RC_RATIO] = config.volatile_ratio
    cfg[RC_SLOPE] = config.vol_slope
    cfg[RC_USE_DRIFT] = 1.0 if config.use_drift else 0.0
    cfg[RC_LAM] = 0.5 ** (1.0 / config.trend_halflife)
    cfg[RC_THRESHOLD] = config.trend_threshold
    cfg[RC_TREND_SLOPE] = config.trend_slope
    if rule:
        assert isinstance(config, RuleConfig)
        cfg[RC_W : RC_W + 5] = (config.w_drift, config.w_momentum, config.w_macd, config.w_rsi, config.w_bollinger)
        cfg[RC_IS_RULE] = 1.0
    return cfg
