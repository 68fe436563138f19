"""Health of the regime detector: per-bar latency, input validity, feature drift and prediction drift.

Why a separate module: the fallback chain (:mod:`sage.regime.fallback`) needs *reasons* to leave a level
("the input bar is bad", "the model's inputs no longer look like its training data", "inference is too
slow"), and the published ``RegimeData`` needs the same facts as numbers (``latency_us``, ``drift``) and a
bitmask (``health_flags``). Every monitor here is a small stateful object with an ``update``-style method
called once per bar and a ``flags`` property in the :class:`HealthFlag` bits, which are *identical* to
``sage.data.types.RegimeHealth`` (tested) but defined here so this module needs neither Nautilus nor torch.

* :class:`LatencyMonitor` -- ring buffer of per-bar latencies, p50/p99, breaches of a budget.
* :class:`InputValidator` -- bar sanity (non-finite / non-positive prices, negative volume, inconsistent
  OHLC) and time-stamp sanity (duplicate, out of order, gap longer than ``max_gap_bars`` intervals) as
  :class:`InputIssue` reason codes.
* :class:`DriftMonitor` -- per-feature drift of a rolling window against a training reference, by PSI or
  KS over fixed reference-quantile bins, aggregated into one ``drift`` score with warn/alarm thresholds.
* :class:`PredictionDriftMonitor` -- PSI of the rolling predicted-label distribution against a reference.
* :class:`HealthMonitor` -- the four together, producing the published ``health_flags``/``drift``/
  ``latency_us`` and logging flag changes on logger ``"sage.regime.health"``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import IntFlag
from typing import Any, Literal

import msgspec
import numpy as np
from numba import njit

__all__ = [
    "BAD_BAR",
    "DriftConfig",
    "DriftMonitor",
    "HealthFlag",
    "HealthMonitor",
    "InputIssue",
    "InputValidator",
    "LatencyMonitor",
    "PredictionDriftMonitor",
    "input_health_flags",
    "psi",
]

logger = logging.getLogger("sage.regime.health")


class HealthFlag(IntFlag):
    """Bits of the published ``health_flags``; same names and values as ``sage.data.types.RegimeHealth``."""

    OK = 0
    STALE_INPUT = 1
    MISSING_FEATURES = 2
    DRIFT_WARNING = 4
    DRIFT_ALARM = 8
    LATENCY_BUDGET_EXCEEDED = 16
    UNCALIBRATED = 32
    FALLBACK_ACTIVE = 64


class InputIssue(IntFlag):
    """Why an input bar is not usable as is (bitmask; 0 = fine)."""

    OK = 0
    NON_FINITE = 1  # a price or the volume is NaN/inf
    NON_POSITIVE_PRICE = 2  # a price <= 0
    NEGATIVE_VOLUME = 4
    INCONSISTENT_OHLC = 8  # low > min(open, close) or high < max(open, close)
    GAP = 16  # more than max_gap_bars bar intervals since the previous bar
    DUPLICATE_TS = 32  # same time stamp as the previous bar
    UNSORTED_TS = 64  # earlier than the previous bar


#: Issues that make the bar itself unusable (the feature pipeline emits an all-NaN row for it).
BAD_BAR = (
    InputIssue.NON_FINITE
    | InputIssue.NON_POSITIVE_PRICE
    | InputIssue.NEGATIVE_VOLUME
    | InputIssue.INCONSISTENT_OHLC
)


def input_health_flags(issues: int) -> HealthFlag:
    """Map input issues to published health bits.

    A bad bar yields a NaN feature row, hence ``MISSING_FEATURES``; a gap, duplicate or out-of-order time
    stamp means the newest usable row is not the bar it should be, hence ``STALE_INPUT``.
    """
    flags = HealthFlag.OK
    if issues & BAD_BAR:
        flags |= HealthFlag.MISSING_FEATURES
    if issues & (InputIssue.GAP | InputIssue.DUPLICATE_TS | InputIssue.UNSORTED_TS):
        flags |= HealthFlag.STALE_INPUT
    return flags


# -- latency ------------------------------------------------------------------------------------------------


class LatencyMonitor:
    """Per-bar latency in microseconds against a budget: ring buffer, p50/p99 and breach counts.

    Parameters
    ----------
    budget_us:
        Per-bar budget (default 1000 us). A latency strictly above it is a breach.
    window:
        Number of recent latencies kept for the percentiles (default 1024).
    clock:
        Nanosecond clock used by :meth:`measure` (default ``time.perf_counter_ns``); injectable so tests
        are deterministic.
    """

    def __init__(
        self, budget_us: float = 1000.0, window: int = 1024, clock: Callable[[], int] = time.perf_counter_ns
    ) -> None:
        if not budget_us > 0:
            raise ValueError(f"budget_us must be > 0, got {budget_us}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.budget_us = float(budget_us)
        self.window = int(window)
        self.clock = clock
        self._buf = np.zeros(self.window)
        self.count = 0  # latencies recorded in total
        self.breaches = 0  # breaches in total
        self.last_us = math.nan
        self.last_breached = False

    def record(self, latency_us: float) -> bool:
        """Record one latency; returns True if it breached the budget. NaN is ignored (not measured)."""
        latency_us = float(latency_us)
        if math.isnan(latency_us):
            return False
        self._buf[self.count % self.window] = latency_us
        self.count += 1
        self.last_us = latency_us
        self.last_breached = latency_us > self.budget_us
        self.breaches += int(self.last_breached)
        return self.last_breached

    @contextmanager
    def measure(self) -> Iterator[None]:
        """``with monitor.measure(): work()`` records the elapsed time of the block (even if it raises)."""
        t0 = self.clock()
        try:
            yield
        finally:
            self.record((self.clock() - t0) / 1000.0)

    def _recent(self) -> np.ndarray:
        return self._buf[: min(self.count, self.window)]

    def percentile(self, q: float) -> float:
        """``q``-th percentile (0..100) of the recent latencies; NaN before the first record."""
        recent = self._recent()
        return float(np.percentile(recent, q)) if recent.size else math.nan

    @property
    def p50(self) -> float:
        return self.percentile(50.0)

    @property
    def p99(self) -> float:
        return self.percentile(99.0)

    @property
    def recent_breach_rate(self) -> float:
        """Fraction of the recent window above budget (NaN before the first record)."""
        recent = self._recent()
        return float(np.mean(recent > self.budget_us)) if recent.size else math.nan

    @property
    def flags(self) -> HealthFlag:
        """``LATENCY_BUDGET_EXCEEDED`` if the last recorded latency breached the budget."""
        return HealthFlag.LATENCY_BUDGET_EXCEEDED if self.last_breached else HealthFlag.OK


# -- input validation --------------------------------------------------------------------------------------


class InputValidator:
    """Sanity of each incoming bar and of the time-stamp sequence, as :class:`InputIssue` codes.

    The bar rules are those of ``sage.features.bars.is_valid_bar`` (finite, positive prices, volume >= 0,
    ``low <= min(open, close) <= max(open, close) <= high``), so a bar flagged here is exactly a bar the
    feature pipeline turns into a NaN row.

    Parameters
    ----------
    bar_interval_ns:
        Expected spacing of bars; None disables gap detection.
    max_gap_bars:
        A spacing above ``max_gap_bars * bar_interval_ns`` is a ``GAP`` (default 3.0). Calendar gaps
        (weekends for daily and hourly bars, session breaks for intraday futures) are real gaps too; pick
        this per market, e.g. 4.5 for daily bars so an ordinary weekend (3 days) is not flagged.

    State: ``last_ts`` (newest accepted time stamp). Duplicate and out-of-order bars do not advance it.
    """

    def __init__(self, bar_interval_ns: int | None = None, max_gap_bars: float = 3.0) -> None:
        if bar_interval_ns is not None and bar_interval_ns <= 0:
            raise ValueError(f"bar_interval_ns must be > 0 or None, got {bar_interval_ns}")
        if not max_gap_bars > 0:
            raise ValueError(f"max_gap_bars must be > 0, got {max_gap_bars}")
        self.bar_interval_ns = bar_interval_ns
        self.max_gap_bars = float(max_gap_bars)
        self.last_ts: int | None = None
        self.last_issues = InputIssue.OK

    def reset(self) -> None:
        self.last_ts = None
        self.last_issues = InputIssue.OK

    def check(self, ts: int, open: float, high: float, low: float, close: float, volume: float) -> InputIssue:
        """Issues of one bar (``ts`` in int nanoseconds); updates ``last_ts`` for in-order bars."""
        issues = InputIssue.OK
        o, h, lo, c, v = float(open), float(high), float(low), float(close), float(volume)
        if not all(math.isfinite(x) for x in (o, h, lo, c, v)):
            issues |= InputIssue.NON_FINITE
        else:
            if min(o, h, lo, c) <= 0.0:
                issues |= InputIssue.NON_POSITIVE_PRICE
            if v < 0.0:
                issues |= InputIssue.NEGATIVE_VOLUME
            if lo > min(o, c) or max(o, c) > h:
                issues |= InputIssue.INCONSISTENT_OHLC
        ts = int(ts)
        if self.last_ts is not None:
            if ts == self.last_ts:
                issues |= InputIssue.DUPLICATE_TS
            elif ts < self.last_ts:
                issues |= InputIssue.UNSORTED_TS
            elif (
                self.bar_interval_ns is not None
                and ts - self.last_ts > self.max_gap_bars * self.bar_interval_ns
            ):
                issues |= InputIssue.GAP
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts
        self.last_issues = issues
        return issues

    def check_frame(self, bars: Any) -> np.ndarray:
        """Issues of every row of a bar DataFrame (UTC DatetimeIndex; open/high/low/close/volume), in order.

        Exactly the streaming :meth:`check` applied row by row (continuing from the current state).
        """
        ts = np.asarray(bars.index.asi8, dtype=np.int64)
        cols = [np.asarray(bars[c], dtype=np.float64) for c in ("open", "high", "low", "close", "volume")]
        out = np.empty(len(ts), dtype=np.int64)
        for i in range(len(ts)):
            out[i] = int(self.check(int(ts[i]), *(col[i] for col in cols)))
        return out

    @property
    def flags(self) -> HealthFlag:
        return input_health_flags(self.last_issues)


# -- drift ------------------------------------------------------------------------------------------------------


def psi(p: np.ndarray, q: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Population stability index ``sum((p - q) ln(p / q))`` over the last axis.

    ``p``, ``q`` are bin proportions; both are floored at ``eps`` first (an empty bin would make PSI
    infinite). Rule of thumb (credit-scoring origin): < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted.
    """
    p = np.maximum(np.asarray(p, dtype=np.float64), eps)
    q = np.maximum(np.asarray(q, dtype=np.float64), eps)
    return np.sum((p - q) * np.log(p / q), axis=-1)


_DEFAULT_BINS = {"psi": 10, "ks": 50}
_DEFAULT_THRESHOLDS = {"psi": (0.25, 0.5), "ks": (0.2, 0.3)}


class DriftConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of :class:`DriftMonitor`; every field has a documented default."""

    method: Literal["psi", "ks"] = "psi"
    """Per-feature statistic: PSI over ``n_bins`` reference-quantile bins, or the KS distance between the
    window's and the reference's distribution functions evaluated at the bin edges (a lower bound on the
    exact two-sample KS statistic, within one bin's reference mass of it)."""

    n_bins: int | None = None
    """Bins per feature from the reference quantiles (default: 10 for PSI, 50 for KS). Tied quantiles
    (discrete features) merge bins, so a feature may use fewer."""

    window: int = 500
    """Rolling window of recent rows compared with the reference (default 500)."""

    min_samples: int = 100
    """A feature is scored once its window holds this many finite values (default 100); before that its
    score is NaN, and the aggregate is NaN while no feature is scored."""

    aggregate: Literal["mean", "median", "max"] = "median"
    """How per-feature scores become the one published ``drift`` number (default ``"median"``). Why not the
    max: with dozens of autocorrelated features, some feature is always far from its long-run distribution
    over a 500-bar window (volatility clusters), so the max alarms constantly on stationary data; the
    median moves only when the bulk of the inputs shift, which is what makes a model unreliable. The
    per-feature scores stay available in ``scores`` for diagnostics."""

    warn: float | None = None
    """Warning threshold on the aggregate (default 0.25 for PSI, 0.2 for KS)."""

    alarm: float | None = None
    """Alarm threshold on the aggregate (default 0.5 for PSI, 0.3 for KS). The alarm is what the fallback
    chain treats as a failed health check."""

    eps: float = 1e-4
    """Floor on bin proportions in PSI (default 1e-4)."""

    def __post_init__(self) -> None:
        if self.method not in _DEFAULT_BINS:
            raise ValueError(f"method must be 'psi' or 'ks', got {self.method!r}")
        if self.aggregate not in ("mean", "median", "max"):
            raise ValueError(f"aggregate must be 'mean', 'median' or 'max', got {self.aggregate!r}")
        if self.n_bins is not None and self.n_bins < 2:
            raise ValueError(f"n_bins must be >= 2, got {self.n_bins}")
        if self.window < 1 or not 1 <= self.min_samples <= self.window:
            raise ValueError("need window >= 1 and 1 <= min_samples <= window")
        if not self.eps > 0:
            raise ValueError("eps must be > 0")
        if self.warn_threshold > self.alarm_threshold:
            raise ValueError("warn threshold must be <= alarm threshold")

    @property
    def bins(self) -> int:
        return self.n_bins if self.n_bins is not None else _DEFAULT_BINS[self.method]

    @property
    def warn_threshold(self) -> float:
        return self.warn if self.warn is not None else _DEFAULT_THRESHOLDS[self.method][0]

    @property
    def alarm_threshold(self) -> float:
        return self.alarm if self.alarm is not None else _DEFAULT_THRESHOLDS[self.method][1]


_METHOD_CODES = {"psi": 0, "ks": 1}
_AGG_CODES = {"mean": 0, "median": 1, "max": 2}


@njit(cache=True)
def _drift_step(
    row: np.ndarray,
    edge_block: np.ndarray,
    scorable: np.ndarray,
    ring: np.ndarray,
    pos: int,
    counts: np.ndarray,
    n: np.ndarray,
    ref_p: np.ndarray,
    ref_cdf: np.ndarray,
    log_ref: np.ndarray,
    log_table: np.ndarray,
    work: np.ndarray,
    method: int,
    aggregate: int,
    eps: float,
    min_samples: int,
    scores: np.ndarray,
) -> float:
    """One :meth:`DriftMonitor.update`: bin the row, slide the window counts, rescore; returns the aggregate.

    Why numba: the same arithmetic in numpy costs ~100 us per bar in call overhead for 20-40 features;
    compiled, it is a few microseconds, cheap enough to run on every bar of every instrument.

    PSI terms are ``(p - q) (ln p - ln q)`` with ``ln q`` precomputed (``log_ref``) and ``ln p`` read
    from ``log_table`` (``ln max(c / n, eps)`` for every count ``c``, built for one window size
    ``n = log_table[-1]`` and rebuilt when a feature's ``n`` differs): per bar that is a few table reads
    per bin instead of a logarithm. ``work`` (k) is scratch for the aggregate.
    """
    k, B = counts.shape
    for j in range(k):
        old = ring[pos, j]
        if old >= 0:
            counts[j, old] -= 1
            n[j] -= 1
        x = row[j]
        b = -1
        if scorable[j] and np.isfinite(x):
            b = 0
            for e in range(edge_block.shape[1]):
                if edge_block[j, e] <= x:
                    b += 1
                else:
                    break
            counts[j, b] += 1
            n[j] += 1
        ring[pos, j] = b
    n_ok = 0
    size = log_table.shape[0] - 1
    for j in range(k):
        if n[j] < min_samples:
            scores[j] = np.nan
            continue
        inv = 1.0 / n[j]
        acc = 0.0
        cum = 0.0
        if method == 0 and log_table[size] != n[j]:
            for c in range(size):
                log_table[c] = np.log(max(c * inv, eps)) if c <= n[j] else np.nan
            log_table[size] = n[j]
        for b in range(B):
            p = counts[j, b] * inv
            if method == 0:
                pp = max(p, eps)
                qq = max(ref_p[j, b], eps)
                acc += (pp - qq) * (log_table[counts[j, b]] - log_ref[j, b])
            else:
                cum += p
                acc = max(acc, abs(cum - ref_cdf[j, b]))
        scores[j] = acc
        work[n_ok] = acc
        n_ok += 1
    if n_ok == 0:
        return np.nan
    if aggregate == 0:
        total = 0.0
        for i in range(n_ok):
            total += work[i]
        return total / n_ok
    if aggregate == 2:
        top = work[0]
        for i in range(1, n_ok):
            top = max(top, work[i])
        return top
    for i in range(1, n_ok):  # insertion sort of <= k scores, then the median
        x = work[i]
        t = i - 1
        while t >= 0 and work[t] > x:
            work[t + 1] = work[t]
            t -= 1
        work[t + 1] = x
    m = n_ok // 2
    if n_ok % 2:
        return work[m]
    return 0.5 * (work[m - 1] + work[m])


class DriftMonitor:
    """Feature drift of a rolling window against a training reference.

    :meth:`fit` fixes, per feature, bin edges at the reference quantiles and the reference's bin
    proportions. :meth:`update` adds one feature row to the rolling window (incremental bin counts: O(k·B)
    per row, no re-sorting) and rescores. Non-finite values are skipped per feature (warm-up NaNs do not
    count as drift); a feature with fewer than ``min_samples`` finite window values scores NaN.

    Attributes after :meth:`update`: ``scores`` (per feature), ``score`` (aggregate, the published
    ``drift``), ``flags`` (``DRIFT_WARNING`` at >= warn, ``DRIFT_WARNING | DRIFT_ALARM`` at >= alarm).
    """

    def __init__(self, config: DriftConfig | None = None, columns: Sequence[str] | None = None) -> None:
        self.config = config if config is not None else DriftConfig()
        self.columns = tuple(columns) if columns is not None else None
        self._fitted = False

    def fit(self, X_ref: Any) -> DriftMonitor:
        """Learn bins and reference proportions from training rows ``X_ref`` (n x k array or DataFrame).

        A DataFrame sets ``columns`` (and must then contain any columns given to the constructor, which
        select and order the monitored features). Features with no finite reference value are never scored.
        """
        X = self._as_matrix(X_ref, fitting=True)
        cfg = self.config
        k = X.shape[1]
        B = cfg.bins
        probs = np.linspace(0.0, 1.0, B + 1)[1:-1]
        self._edges: list[np.ndarray] = []
        self._ref_p = np.zeros((k, B))
        self._scorable = np.zeros(k, dtype=bool)
        for j in range(k):
            col = X[:, j]
            col = col[np.isfinite(col)]
            if col.size == 0:
                self._edges.append(np.empty(0))
                continue
            self._scorable[j] = True
            edges = np.unique(np.quantile(col, probs))
            self._edges.append(edges)
            idx = np.searchsorted(edges, col, side="right")
            self._ref_p[j] = np.bincount(idx, minlength=B)[:B] / col.size
        self._k = k
        return self._finish_fit()

    @classmethod
    def from_quantiles(
        cls,
        quantiles: np.ndarray,
        below: np.ndarray,
        config: DriftConfig | None = None,
        columns: Sequence[str] | None = None,
    ) -> DriftMonitor:
        """A monitor whose reference is a stored distribution summary instead of raw rows.

        ``quantiles (k, G + 1)``: each feature's quantiles at levels ``0, 1/G, ..., 1`` (the training
        distribution, e.g. ``sage.models.bundle.InputReference``); ``below (k, G + 1)``: the reference
        share strictly below each of those values (exact even where values tie, e.g. at a clip). Bin
        edges are the quantiles at the grid levels nearest ``b / n_bins`` and each bin's reference share
        comes from ``below`` -- what :meth:`fit` on the raw rows gives when ``n_bins`` divides ``G``, up
        to the rounding of the quantile levels. A feature whose row is all NaN is never scored.
        """
        q = np.asarray(quantiles, dtype=np.float64)
        lt = np.asarray(below, dtype=np.float64)
        if q.ndim != 2 or q.shape != lt.shape or q.shape[1] < 3:
            raise ValueError(f"quantiles and below must be equal (k, G + 1) arrays, got {q.shape}, {lt.shape}")
        monitor = cls(config, columns)
        if monitor.columns is not None and len(monitor.columns) != q.shape[0]:
            raise ValueError(f"expected {len(monitor.columns)} features, got {q.shape[0]}")
        grid = q.shape[1] - 1
        B = monitor.config.bins
        picks = np.unique(np.rint(np.arange(1, B) * grid / B).astype(np.int64))
        k = q.shape[0]
        monitor._edges = []
        monitor._ref_p = np.zeros((k, B))
        monitor._scorable = np.zeros(k, dtype=bool)
        for j in range(k):
            if not np.isfinite(q[j]).all() or not np.isfinite(lt[j]).all():
                monitor._edges.append(np.empty(0))
                continue
            monitor._scorable[j] = True
            edges, first = np.unique(q[j, picks], return_index=True)
            cuts = np.concatenate([[0.0], lt[j, picks[first]], [1.0]])
            monitor._edges.append(edges)
            monitor._ref_p[j, : edges.size + 1] = np.clip(np.diff(cuts), 0.0, 1.0)
        monitor._k = k
        return monitor._finish_fit()

    def _finish_fit(self) -> DriftMonitor:
        B = self.config.bins
        k = self._k
        self._ref_cdf = np.cumsum(self._ref_p, axis=1)
        self._log_ref = np.log(np.maximum(self._ref_p, self.config.eps))
        # Edges padded with +inf to a (k, B - 1) block: a finite x falls in bin ``#(edges <= x)``
        # (= ``searchsorted(edges, x, side="right")``, as for the reference proportions above).
        self._edge_block = np.full((k, B - 1), np.inf)
        for j, e in enumerate(self._edges):
            self._edge_block[j, : e.size] = e
        self._fitted = True
        self.reset()
        return self

    def reset(self) -> None:
        """Empty the rolling window (keeps the fitted reference)."""
        self._check_fitted()
        W = self.config.window
        self._ring = np.full((W, self._k), -1, dtype=np.int64)
        self._counts = np.zeros((self._k, self.config.bins), dtype=np.int64)
        self._n = np.zeros(self._k, dtype=np.int64)
        # ln max(c / n, eps) for c = 0..window, for the n in the last slot (-1: not built yet)
        self._log_table = np.full(W + 2, np.nan)
        self._log_table[-1] = -1.0
        self._work = np.zeros(self._k)
        self._pos = 0
        self.rows_seen = 0
        self.scores = np.full(self._k, np.nan)
        self.score = math.nan

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("DriftMonitor used before fit()")

    def _as_matrix(self, X: Any, fitting: bool = False) -> np.ndarray:
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):
            if fitting and self.columns is None:
                self.columns = tuple(str(c) for c in X.columns)
            if self.columns is not None:
                missing = [c for c in self.columns if c not in X.columns]
                if missing:
                    raise ValueError(f"DriftMonitor: missing columns {missing}")
                X = X[list(self.columns)]
            return np.asarray(X.to_numpy(), dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"expected a 2-D array of rows, got shape {X.shape}")
        if fitting and self.columns is not None and X.shape[1] != len(self.columns):
            raise ValueError(f"expected {len(self.columns)} columns, got {X.shape[1]}")
        return X

    def update(self, row: Any) -> float:
        """Add one feature row (1-D, in ``columns`` order, or a mapping by name); returns the aggregate."""
        self._check_fitted()
        if isinstance(row, Mapping):
            if self.columns is None:
                raise ValueError("a mapping row needs named columns (fit on a DataFrame or pass columns=)")
            row = np.array([row.get(c, np.nan) for c in self.columns], dtype=np.float64)
        row = np.ascontiguousarray(row, dtype=np.float64)
        if row.shape != (self._k,):
            raise ValueError(f"expected a row of {self._k} features, got shape {row.shape}")
        self.score = float(
            _drift_step(
                row,
                self._edge_block,
                self._scorable,
                self._ring,
                self._pos,
                self._counts,
                self._n,
                self._ref_p,
                self._ref_cdf,
                self._log_ref,
                self._log_table,
                self._work,
                _METHOD_CODES[self.config.method],
                _AGG_CODES[self.config.aggregate],
                float(self.config.eps),
                int(self.config.min_samples),
                self.scores,
            )
        )
        self._pos = (self._pos + 1) % self.config.window
        self.rows_seen += 1
        return self.score

    def run(self, X: Any) -> np.ndarray:
        """Aggregate score after each row of ``X`` (streaming :meth:`update` row by row)."""
        M = self._as_matrix(X)
        return np.array([self.update(M[i]) for i in range(M.shape[0])])

    @property
    def flags(self) -> HealthFlag:
        return _drift_flags(self.score, self.config.warn_threshold, self.config.alarm_threshold)

    @property
    def alarm(self) -> bool:
        return bool(self.flags & HealthFlag.DRIFT_ALARM)

    def top_features(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` most drifted features as (name or index, score), for logs."""
        names = self.columns if self.columns is not None else tuple(str(j) for j in range(self._k))
        order = [
            j for j in np.argsort(-np.nan_to_num(self.scores, nan=-np.inf)) if np.isfinite(self.scores[j])
        ]
        return [(names[j], float(self.scores[j])) for j in order[:n]]


def _drift_flags(score: float, warn: float, alarm: float) -> HealthFlag:
    if not score >= warn:  # NaN: not computed, no flag
        return HealthFlag.OK
    if score >= alarm:
        return HealthFlag.DRIFT_WARNING | HealthFlag.DRIFT_ALARM
    return HealthFlag.DRIFT_WARNING


class PredictionDriftMonitor:
    """PSI of the rolling predicted-label distribution against a reference label distribution.

    Why labels and not raw probabilities: the label frequencies are what downstream agents act on, and a
    detector that suddenly calls everything VOLATILE (or never does) has drifted whatever its inputs
    look like. The reference is typically the model's predictions on its validation period.

    Parameters: ``n_classes`` (4), ``window`` (500), ``min_samples`` (100), ``warn`` (0.1), ``alarm``
    (0.25), ``eps`` (1e-3; with 4 classes an unseen class costs ~``q ln(q / eps)``, not infinity).
    """

    def __init__(
        self,
        n_classes: int = 4,
        window: int = 500,
        min_samples: int = 100,
        warn: float = 0.1,
        alarm: float = 0.25,
        eps: float = 1e-3,
    ) -> None:
        if n_classes < 2 or window < 1 or not 1 <= min_samples <= window or warn > alarm:
            raise ValueError("need n_classes >= 2, window >= 1, 1 <= min_samples <= window, warn <= alarm")
        self.n_classes = n_classes
        self.window = window
        self.min_samples = min_samples
        self.warn = warn
        self.alarm_threshold = alarm
        self.eps = eps
        self.ref_p: np.ndarray | None = None
        self.reset()

    def fit(self, reference: Any) -> PredictionDriftMonitor:
        """Reference from labels (1-D ints) or probabilities (n x n_classes; labels = argmax)."""
        labels = self._labels(np.asarray(reference, dtype=np.float64))
        labels = labels[labels >= 0]
        if labels.size == 0:
            raise ValueError("PredictionDriftMonitor.fit: no valid reference predictions")
        self.ref_p = np.bincount(labels, minlength=self.n_classes)[: self.n_classes] / labels.size
        self.reset()
        return self

    def reset(self) -> None:
        self._ring = np.full(self.window, -1, dtype=np.int64)
        self._counts = np.zeros(self.n_classes, dtype=np.int64)
        self._pos = 0
        self.score = math.nan

    def _labels(self, a: np.ndarray) -> np.ndarray:
        if a.ndim == 2:
            if a.shape[1] != self.n_classes:
                raise ValueError(f"expected {self.n_classes} probability columns, got {a.shape[1]}")
            ok = np.isfinite(a).all(axis=1)
            out = np.full(a.shape[0], -1, dtype=np.int64)
            out[ok] = np.argmax(a[ok], axis=1)
            return out
        ok = np.isfinite(a) & (a >= 0) & (a < self.n_classes) & (a == np.floor(a))
        return np.where(ok, np.nan_to_num(a), -1).astype(np.int64)

    def update(self, prediction: Any) -> float:
        """Add one prediction (a label or a probability vector); invalid ones occupy a slot but not a class."""
        if self.ref_p is None:
            raise RuntimeError("PredictionDriftMonitor used before fit()")
        a = np.asarray(prediction, dtype=np.float64)
        label = int(self._labels(a.reshape(1, -1) if a.ndim == 1 else a.reshape(1))[0])
        old = self._ring[self._pos]
        if old >= 0:
            self._counts[old] -= 1
        if label >= 0:
            self._counts[label] += 1
        self._ring[self._pos] = label
        self._pos = (self._pos + 1) % self.window
        n = int(self._counts.sum())
        self.score = float(psi(self._counts / n, self.ref_p, self.eps)) if n >= self.min_samples else math.nan
        return self.score

    @property
    def flags(self) -> HealthFlag:
        return _drift_flags(self.score, self.warn, self.alarm_threshold)


# -- everything together --------------------------------------------------------------------------------


class HealthMonitor:
    """The per-bar health state the detector publishes: ``latency_us``, ``drift`` and ``health_flags``.

    Call order per bar: :meth:`on_bar` (raw bar, before features), :meth:`on_features` (the feature row),
    :meth:`on_prediction` (the published probabilities), :meth:`on_latency` (the bar's total latency).
    Any monitor may be None (not configured). ``flags`` ORs the components' bits; each change of
    ``flags`` is logged on ``"sage.regime.health"`` (warning when bits are added, info when cleared),
    so a persistent condition is logged once, not every bar.
    """

    def __init__(
        self,
        latency: LatencyMonitor | None = None,
        validator: InputValidator | None = None,
        drift: DriftMonitor | None = None,
        prediction_drift: PredictionDriftMonitor | None = None,
    ) -> None:
        self.latency = latency
        self.validator = validator
        self.drift = drift
        self.prediction_drift = prediction_drift
        self.missing_features = False
        self._logged_flags = HealthFlag.OK

    def on_bar(
        self, ts: int, open: float, high: float, low: float, close: float, volume: float
    ) -> InputIssue:
        if self.validator is None:
            return InputIssue.OK
        return self.validator.check(ts, open, high, low, close, volume)

    def on_features(self, row: Any) -> float:
        """Record whether the row has NaNs and feed the drift monitor; returns the drift score."""
        values = list(row.values()) if isinstance(row, Mapping) else row
        self.missing_features = not bool(np.isfinite(np.asarray(values, dtype=np.float64)).all())
        if self.drift is None:
            return math.nan
        return self.drift.update(row)

    def on_prediction(self, probabilities: Any) -> float:
        if self.prediction_drift is None:
            return math.nan
        return self.prediction_drift.update(probabilities)

    def on_latency(self, latency_us: float) -> bool:
        return False if self.latency is None else self.latency.record(latency_us)

    @property
    def drift_score(self) -> float:
        """The published ``drift``: the feature-drift aggregate (NaN when not computed)."""
        return self.drift.score if self.drift is not None else math.nan

    @property
    def drift_alarm(self) -> bool:
        """True when feature *or* prediction drift is at alarm level (the chain's health-check input)."""
        return bool(self.flags & HealthFlag.DRIFT_ALARM)

    @property
    def flags(self) -> HealthFlag:
        f = HealthFlag.OK
        if self.missing_features:
            f |= HealthFlag.MISSING_FEATURES
        for m in (self.latency, self.validator, self.drift, self.prediction_drift):
            if m is not None:
                f |= m.flags
        return f

    def log_changes(self) -> HealthFlag:
        """Log a change of ``flags`` since the last call; returns the current flags."""
        f = self.flags
        if f != self._logged_flags:
            added = f & ~self._logged_flags
            cleared = self._logged_flags & ~f
            if added:
                logger.warning("health flags raised: %s (now %s) %s", added, f, self.snapshot())
            if cleared:
                logger.info("health flags cleared: %s (now %s)", cleared, f)
            self._logged_flags = f
        return f

    def snapshot(self) -> dict[str, Any]:
        """Plain-dict summary for logs and reports."""
        out: dict[str, Any] = {"flags": int(self.flags)}
        if self.latency is not None:
            out.update(
                latency_p50_us=self.latency.p50,
                latency_p99_us=self.latency.p99,
                latency_breaches=self.latency.breaches,
                latency_budget_us=self.latency.budget_us,
            )
        if self.validator is not None:
            out["input_issues"] = int(self.validator.last_issues)
        if self.drift is not None:
            out["drift"] = self.drift.score
            out["drift_top"] = self.drift.top_features(3)
        if self.prediction_drift is not None:
            out["prediction_drift"] = self.prediction_drift.score
        return out
