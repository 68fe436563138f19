"""Conformal calibration of forecast intervals: split conformal and adaptive conformal inference (ACI).

Why conformal: the quantile forecaster's (q_0.1, q_0.9) band is only *nominally* an 80 % interval; a
network trained on one period is routinely over- or under-confident on the next. Conformal calibration
turns any base band into one with a coverage guarantee, without touching the model:

* :class:`SplitConformal` -- widen/shrink the band by the ``(1 - alpha)`` finite-sample quantile of
  conformity scores on a held-out calibration set (Romano et al. 2019, "CQR"). Guaranteed marginal
  coverage if calibration and test data are exchangeable -- which markets are not.
* :class:`AdaptiveConformal` -- online: the quantile level is steered by the realised misses,
  ``alpha_{t+1} = alpha_t + gamma * (alpha - err_t)`` (Gibbs & Candes 2021), over a rolling memory of
  recent scores. The long-run miss rate converges to ``alpha`` whatever the drift, because every miss
  makes the next intervals wider and every hit makes them narrower.

Both calibrators are forecaster-agnostic: they see only the band ``(lo, hi)`` and, later, the realised
value ``y``. The 90 % interval is therefore built from the same (q_0.1, q_0.9) band as the 80 % one --
the forecaster has no 0.05/0.95 quantiles -- and the score quantile does the widening.

Conformity scores (``score=``):

* ``"additive"`` (CQR): ``s = max(lo - y, y - hi)``; interval ``[lo - q, hi + q]``.
* ``"scaled"``: ``s = max(lo - y, y - hi) / (hi - lo)``; interval ``[lo - q w, hi + q w]`` with
  ``w = hi - lo``. The correction then scales with the band, so a band that already tracks volatility
  keeps doing so after calibration (an additive ``q`` learnt in a quiet period is far too small in a
  volatile one, and vice versa). This is the default; both are valid conformal scores.

A negative ``q`` shrinks the band; a band shrunk past its midpoint collapses to the midpoint (``lo == hi``)
rather than crossing. An infinite ``q`` (too few scores for the requested level, or ``alpha_t <= 0`` in
ACI) gives ``(-inf, inf)``: the honest answer "no finite interval has the required coverage yet"; callers
publishing a width map it to NaN plus the ``UNCALIBRATED`` health flag.

No look-ahead: the outcome of a forecast made at bar ``t`` for horizon ``h`` is known only at ``t + h``.
:class:`AdaptiveConformal` keeps the not yet resolved predictions in a FIFO queue; :meth:`AdaptiveConformal.run`
replays a series with exactly the streaming call order (resolve ``t - h``, then predict ``t``), so batch and
streaming results are identical (tested).
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "AdaptiveConformal",
    "ConformalRun",
    "ScoreKind",
    "SortedWindow",
    "SplitConformal",
    "apply_correction",
    "conformal_quantile",
    "conformity_scores",
]

ScoreKind = Literal["additive", "scaled"]
_SCORES: tuple[str, ...] = ("additive", "scaled")


# -- primitives -----------------------------------------------------------------------------------------


class SortedWindow:
    """The last ``maxlen`` values (all values if ``maxlen`` is None), kept sorted.

    Why: both the ACI score memory and the rule detectors' trailing median need an order statistic of a
    rolling window every bar. A sorted list with bisect insert/delete makes the statistic O(1) to read and
    the update a short ``memmove``, instead of re-sorting or partitioning the whole window each bar.
    NaN must not be pushed (it has no place in an order); callers filter it.
    """

    __slots__ = ("_fifo", "_sorted", "maxlen")

    def __init__(self, maxlen: int | None = None) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be >= 1 or None, got {maxlen}")
        self.maxlen = maxlen
        self._fifo: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._fifo)

    def push(self, x: float) -> None:
        """Add ``x``; drop the oldest value if the window is full."""
        x = float(x)
        if math.isnan(x):
            raise ValueError("SortedWindow cannot hold NaN")
        if self.maxlen is not None and len(self._fifo) == self.maxlen:
            old = self._fifo.popleft()
            del self._sorted[bisect_left(self._sorted, old)]
        self._fifo.append(x)
        insort(self._sorted, x)

    def extend(self, values: Iterable[float]) -> None:
        for x in values:
            self.push(x)

    def clear(self) -> None:
        self._fifo.clear()
        self._sorted.clear()

    def kth(self, k: int) -> float:
        """The ``k``-th smallest value, 1-based."""
        return self._sorted[k - 1]

    def median(self) -> float:
        """Median of the window (mean of the two middle values for an even count); NaN when empty."""
        n = len(self._sorted)
        if n == 0:
            return math.nan
        m = n // 2
        if n % 2:
            return self._sorted[m]
        return 0.5 * (self._sorted[m - 1] + self._sorted[m])

    def values(self) -> np.ndarray:
        """The window in arrival order (oldest first), as a new array."""
        return np.fromiter(self._fifo, dtype=np.float64, count=len(self._fifo))

    def sorted_values(self) -> np.ndarray:
        return np.asarray(self._sorted, dtype=np.float64)


def _conformal_rank(n: int, alpha: float) -> int:
    """1-based rank ``ceil((n + 1)(1 - alpha))`` of the finite-sample conformal quantile.

    A 1e-9 guard keeps float noise from bumping the rank (``100 * 0.9`` is ``90.00000000000001``).
    """
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-9)


def conformal_quantile(sorted_scores: np.ndarray | SortedWindow, alpha: float) -> float:
    """Finite-sample conformal quantile of ascending ``sorted_scores`` at miscoverage ``alpha``.

    The ``ceil((n + 1)(1 - alpha))``-th smallest score: with exchangeable data the next score is below it
    with probability >= 1 - alpha. Returns ``+inf`` when that rank exceeds ``n`` (too few scores, or
    ``alpha <= 0``) and ``-inf`` when it is below 1 (``alpha >= 1``: the empty interval).
    """
    n = len(sorted_scores)
    k = _conformal_rank(n, alpha)
    if k > n:
        return math.inf
    if k < 1:
        return -math.inf
    if isinstance(sorted_scores, SortedWindow):
        return sorted_scores.kth(k)
    return float(sorted_scores[k - 1])


def _check_score(score: str) -> None:
    if score not in _SCORES:
        raise ValueError(f"score must be one of {_SCORES}, got {score!r}")


def conformity_scores(
    y: np.ndarray, lo: np.ndarray, hi: np.ndarray, score: ScoreKind = "scaled"
) -> np.ndarray:
    """Conformity score of each realised ``y`` against its band ``[lo, hi]`` (NaN where undefined).

    Positive = outside the band by that much (additive) or by that many band widths (scaled); negative =
    inside. Undefined: any non-finite input, ``lo > hi``, or a zero width with ``score="scaled"``.
    """
    _check_score(score)
    y = np.asarray(y, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.maximum(lo - y, y - hi)
        width = hi - lo
        bad = ~(np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)) | (width < 0)
        if score == "scaled":
            bad |= ~(width > 0)
            s = s / np.where(width > 0, width, 1.0)
    return np.where(bad, np.nan, s)


def apply_correction(
    lo: np.ndarray | float, hi: np.ndarray | float, q: float, score: ScoreKind = "scaled"
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated interval from the band ``[lo, hi]`` and score quantile ``q`` (arrays, broadcast).

    ``q = +inf`` gives ``(-inf, inf)``; a shrink past the midpoint (including ``q = -inf``) collapses the
    interval to the midpoint. Non-finite bands give NaN.
    """
    _check_score(score)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    valid = np.isfinite(lo) & np.isfinite(hi) & (hi >= lo)
    if score == "scaled":
        valid &= hi > lo
    mid = 0.5 * (lo + hi)
    if math.isinf(q) and q > 0:
        new_lo = np.full(np.broadcast(lo, hi).shape, -math.inf)
        new_hi = -new_lo
    elif math.isinf(q):
        new_lo = mid
        new_hi = mid.copy()
    else:
        pad = q * (hi - lo) if score == "scaled" else np.full_like(mid, q)
        with np.errstate(invalid="ignore"):
            new_lo = lo - pad
            new_hi = hi + pad
            crossed = new_lo > new_hi
        new_lo = np.where(crossed, mid, new_lo)
        new_hi = np.where(crossed, mid, new_hi)
    return np.where(valid, new_lo, np.nan), np.where(valid, new_hi, np.nan)


def _score_scalar(y: float, lo: float, hi: float, score: str) -> float:
    """Scalar twin of :func:`conformity_scores` (the per-bar path; same rules, no numpy overhead)."""
    if not (math.isfinite(y) and math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        return math.nan
    s = max(lo - y, y - hi)
    if score == "scaled":
        width = hi - lo
        return s / width if width > 0 else math.nan
    return s


def _correct_scalar(lo: float, hi: float, q: float, score: str) -> tuple[float, float]:
    """Scalar twin of :func:`apply_correction`."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo or (score == "scaled" and not hi > lo):
        return math.nan, math.nan
    if q == math.inf:
        return -math.inf, math.inf
    mid = 0.5 * (lo + hi)
    if q == -math.inf:
        return mid, mid
    pad = q * (hi - lo) if score == "scaled" else q
    new_lo = lo - pad
    new_hi = hi + pad
    if new_lo > new_hi:
        return mid, mid
    return new_lo, new_hi


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return alpha


# -- split conformal --------------------------------------------------------------------------------------


class SplitConformal:
    """Split-conformal calibration of a band, fitted once on a held-out calibration set.

    Parameters
    ----------
    alpha:
        Target miscoverage (0.2 for an 80 % interval, 0.1 for 90 %).
    score:
        ``"scaled"`` (default) or ``"additive"``; see the module docstring.

    Attributes (after :meth:`fit`): ``q_`` the score quantile, ``n_`` the number of finite scores used.
    """

    def __init__(self, alpha: float = 0.1, score: ScoreKind = "scaled") -> None:
        self.alpha = _check_alpha(alpha)
        _check_score(score)
        self.score = score
        self.q_: float = math.nan
        self.n_: int = 0

    def fit(self, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> SplitConformal:
        """Learn ``q_`` from realised values and their bands; rows with undefined scores are ignored."""
        s = conformity_scores(y, lo, hi, self.score)
        s = np.sort(s[np.isfinite(s)])
        self.n_ = int(s.size)
        self.q_ = conformal_quantile(s, self.alpha)
        return self

    @property
    def fitted(self) -> bool:
        return not math.isnan(self.q_)

    def interval(self, lo: np.ndarray | float, hi: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated ``(lo, hi)`` for new bands (arrays or scalars)."""
        if not self.fitted:
            raise RuntimeError("SplitConformal.interval() called before fit()")
        return apply_correction(lo, hi, self.q_, self.score)


# -- adaptive conformal inference --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConformalRun:
    """Result of :meth:`AdaptiveConformal.run` over a series of ``n`` forecasts.

    ``covered[t]`` is 1.0/0.0 once forecast ``t`` was resolved with a finite outcome and a valid interval,
    NaN otherwise (the last ``horizon`` forecasts are never resolved inside the series). ``alpha[t]`` is the
    level used for forecast ``t``.
    """

    lo: np.ndarray
    hi: np.ndarray
    covered: np.ndarray
    alpha: np.ndarray

    @property
    def coverage(self) -> float:
        """Fraction of resolved forecasts whose interval contained the outcome (NaN if none)."""
        c = self.covered[np.isfinite(self.covered)]
        return float(c.mean()) if c.size else math.nan


class AdaptiveConformal:
    """Online adaptive conformal inference with delayed outcomes.

    Each bar: :meth:`interval` calibrates the current band with level ``alpha_t`` over the score memory and
    queues the prediction; :meth:`update` resolves the *oldest* queued prediction with its realised value,
    records hit/miss, appends its score to the memory and steps ``alpha_t``. With horizon ``h`` the
    caller resolves the forecast made at ``t - h`` at bar ``t`` before predicting for ``t``
    (:meth:`run` does exactly that).

    Parameters
    ----------
    alpha:
        Target miscoverage.
    gamma:
        ACI step size (default 0.01). Larger adapts faster to drift and pins the realised miss rate closer
        to ``alpha`` over short horizons (the gap is exactly ``(alpha_1 - alpha_{T+1}) / (gamma T)``), at the
        price of noisier interval widths. Gibbs & Candes use 0.005 on long daily series; 0.01 was chosen so
        that a few hundred held-out bars already land within ~2 points of nominal (docs/regime_reliability.md).
    window:
        Score memory (most recent resolved scores, default 500); None keeps all. A finite memory lets the
        score distribution itself follow the market; ACI corrects what is left.
    score:
        ``"scaled"`` (default) or ``"additive"``.
    horizon:
        Forecast horizon in bars (default 1), used by :meth:`run` to delay outcomes.

    State: ``alpha_t`` (level for the next interval; unclipped, may leave [0, 1]), ``n_resolved``,
    ``n_covered``, ``pending`` (queued predictions).
    """

    def __init__(
        self,
        alpha: float = 0.1,
        gamma: float = 0.01,
        window: int | None = 500,
        score: ScoreKind = "scaled",
        horizon: int = 1,
    ) -> None:
        self.alpha = _check_alpha(alpha)
        if not gamma > 0.0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        _check_score(score)
        self.gamma = float(gamma)
        self.window = window
        self.score = score
        self.horizon = int(horizon)
        self._scores = SortedWindow(window)
        # Queued predictions: (band lo, band hi, calibrated lo, calibrated hi, empty interval?).
        self._queue: deque[tuple[float, float, float, float, bool]] = deque()
        self.reset()

    def reset(self) -> AdaptiveConformal:
        """Forget scores, queue and coverage; ``alpha_t`` back to ``alpha``."""
        self._scores.clear()
        self._queue.clear()
        self.alpha_t = self.alpha
        self.n_resolved = 0
        self.n_covered = 0
        return self

    def fit(self, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> AdaptiveConformal:
        """Reset, then seed the score memory with a calibration set (its last ``window`` finite scores).

        Warm-starting from the same calibration data as :class:`SplitConformal` makes the first online
        intervals as good as split conformal's instead of infinite until the memory fills.
        """
        self.reset()
        s = conformity_scores(y, lo, hi, self.score)
        self._scores.extend(s[np.isfinite(s)])
        return self

    @property
    def pending(self) -> int:
        """Predictions made but not yet resolved by :meth:`update`."""
        return len(self._queue)

    @property
    def n_scores(self) -> int:
        return len(self._scores)

    @property
    def coverage(self) -> float:
        """Realised coverage over all resolved predictions (NaN before the first)."""
        return self.n_covered / self.n_resolved if self.n_resolved else math.nan

    @property
    def q_t(self) -> float:
        """Score quantile the next :meth:`interval` would use."""
        return conformal_quantile(self._scores, self.alpha_t)

    def interval(self, lo: float, hi: float) -> tuple[float, float]:
        """Calibrated interval for the current band; queues the prediction for a later :meth:`update`.

        A non-finite or inverted band gives ``(nan, nan)`` and a queue entry that :meth:`update` will skip,
        so the FIFO stays aligned with the caller's bars.
        """
        lo = float(lo)
        hi = float(hi)
        q = self.q_t
        c_lo, c_hi = _correct_scalar(lo, hi, q, self.score)
        empty = math.isinf(q) and q < 0
        self._queue.append((lo, hi, c_lo, c_hi, empty))
        return c_lo, c_hi

    def update(self, y: float) -> float:
        """Resolve the oldest queued prediction with its realised value ``y``.

        Returns 1.0 if covered, 0.0 if missed, NaN if the prediction or ``y`` was invalid (then neither the
        memory nor ``alpha_t`` changes: a missing outcome is not evidence either way).
        """
        if not self._queue:
            raise RuntimeError("AdaptiveConformal.update() with no pending prediction")
        lo, hi, c_lo, c_hi, empty = self._queue.popleft()
        y = float(y)
        s = _score_scalar(y, lo, hi, self.score)
        if math.isnan(s) or math.isnan(c_lo):
            return math.nan
        covered = (not empty) and c_lo <= y <= c_hi
        err = 0.0 if covered else 1.0
        self.alpha_t += self.gamma * (self.alpha - err)
        self._scores.push(s)
        self.n_resolved += 1
        self.n_covered += int(covered)
        return 1.0 - err

    def run(self, y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> ConformalRun:
        """Replay a series in streaming order from the current state (which must have no pending predictions).

        ``y[t]`` is the outcome of the forecast made at ``t`` (e.g. ``log(c[t+h] / c[t])``), usable only from
        ``t + horizon`` on. At each ``t``: resolve forecast ``t - horizon``, then predict ``t``. Identical
        to calling :meth:`update`/:meth:`interval` by hand in that order; the last ``horizon`` forecasts stay
        pending.
        """
        if self._queue:
            raise RuntimeError(f"run() needs no pending predictions, {self.pending} are queued")
        y = np.asarray(y, dtype=np.float64)
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        n = len(y)
        if not (len(lo) == len(hi) == n):
            raise ValueError(f"y, lo, hi must have equal lengths, got {len(y)}, {len(lo)}, {len(hi)}")
        h = self.horizon
        out_lo = np.empty(n)
        out_hi = np.empty(n)
        covered = np.full(n, np.nan)
        alphas = np.empty(n)
        for t in range(n):
            if t >= h:
                covered[t - h] = self.update(y[t - h])
            alphas[t] = self.alpha_t
            out_lo[t], out_hi[t] = self.interval(lo[t], hi[t])
        return ConformalRun(lo=out_lo, hi=out_hi, covered=covered, alpha=alphas)
