"""Relative (scale-invariant) bar features: 11 columns that do not change when all prices are rescaled.

Why: models trained on one instrument or price era should not see the price
level. Every column here is a log ratio, a ratio of price differences, or a
z-score, so multiplying o/h/l/c by any positive constant leaves it unchanged
(bitwise for powers of two, to rounding otherwise; see ``docs/features.md``).
Volume is not used.

Columns:

* ``rel_open|high|low|close`` = log(x_t / c_{t-1}), previous *valid* close; NaN on the first bar.
* ``body_ratio`` = (c - o) / (h - l), signed in [-1, 1];
  ``upper_wick_ratio`` = (h - max(o, c)) / (h - l) and
  ``lower_wick_ratio`` = (min(o, c) - l) / (h - l), both in [0, 1];
  on a flat bar (``h - l <= PRICE_RESOLUTION * h``, i.e. h == l up to rounding) all three are 0.
* ``z_open|high|low|close`` = (x_t - mean) / std over the last ``z_window``
  values of that series (population std, current bar included); 0 if the window
  is flat (std <= ``PRICE_RESOLUTION`` x the value); NaN for the first ``z_window - 1`` bars.

Follows the kernel-family convention of ``sage.features`` (same ``step`` in
batch and streaming, bitwise agreement by construction).
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numba import njit

from sage.features import bars as _bars
from sage.features._numba_cache import guard_numba_cache
from sage.features.bars import PRICE_RESOLUTION, is_valid_bar

COLUMNS: tuple[str, ...] = (
    "rel_open",
    "rel_high",
    "rel_low",
    "rel_close",
    "body_ratio",
    "upper_wick_ratio",
    "lower_wick_ratio",
    "z_open",
    "z_high",
    "z_low",
    "z_close",
)
"""Output columns, in order."""


class RelativeParams(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of the relative features."""

    z_window: int = 20
    """Trailing window (bars, current included) of the O/H/L/C z-scores; 20 as in the issue."""

    def __post_init__(self) -> None:
        if not isinstance(self.z_window, int) or self.z_window < 2:
            raise ValueError(f"RelativeParams.z_window must be an int >= 2, got {self.z_window!r}")

    def as_array(self) -> np.ndarray:
        """``[z_window, state_size]``."""
        return np.array([self.z_window, _S_FIXED + 4 * self.z_window], dtype=np.float64)


P_Z, P_SIZE = range(2)
# State: [valid bars seen, previous valid close], then a ring of z_window interleaved (o, h, l, c) rows.
S_N, S_PREV_CLOSE = range(2)
_S_FIXED = 2


def columns(params: RelativeParams | None = None) -> tuple[str, ...]:
    """Output column names (independent of the parameters)."""
    return COLUMNS


def warmup(params: RelativeParams) -> tuple[int, ...]:
    """Leading valid bars with NaN output, per column: 1 for log returns, 0 for ratios, z_window - 1 for z-scores."""
    w = params.z_window - 1
    return (1, 1, 1, 1, 0, 0, 0, w, w, w, w)


def init_state(params: RelativeParams) -> np.ndarray:
    """Fresh zeroed state (layout: ``S_*`` slots, then ``z_window`` interleaved o/h/l/c rows)."""
    return np.zeros(int(params.as_array()[P_SIZE]), dtype=np.float64)


@njit(cache=True)
def _zscores(ring: np.ndarray, w: int, x: np.ndarray, out: np.ndarray) -> None:
    """Z-scores of the newest values ``x[k]`` against the full ring, 4 series at once.

    ``ring`` is ``w`` interleaved rows ``(o, h, l, c)``. Values are shifted by
    the newest value (exact 0 on a flat window, no cancellation of two large
    prices) and reduced in two passes. The four series share one loop: their
    sums are independent dependency chains, which is ~4x faster than four
    separate loops (strict FP order forbids vectorising a single sum).
    """
    s0 = s1 = s2 = s3 = 0.0
    for j in range(w):
        b = 4 * j
        s0 += ring[b] - x[0]
        s1 += ring[b + 1] - x[1]
        s2 += ring[b + 2] - x[2]
        s3 += ring[b + 3] - x[3]
    m0, m1, m2, m3 = s0 / w, s1 / w, s2 / w, s3 / w
    q0 = q1 = q2 = q3 = 0.0
    for j in range(w):
        b = 4 * j
        d0 = ring[b] - x[0] - m0
        d1 = ring[b + 1] - x[1] - m1
        d2 = ring[b + 2] - x[2] - m2
        d3 = ring[b + 3] - x[3] - m3
        q0 += d0 * d0
        q1 += d1 * d1
        q2 += d2 * d2
        q3 += d3 * d3
    sd0, sd1, sd2, sd3 = math.sqrt(q0 / w), math.sqrt(q1 / w), math.sqrt(q2 / w), math.sqrt(q3 / w)
    # x - mean == -(mean - x): the shifted mean is the deviation of the newest value.
    # A std within rounding noise of the price is a flat window: z = 0.
    out[0] = -m0 / sd0 if sd0 > PRICE_RESOLUTION * x[0] else 0.0
    out[1] = -m1 / sd1 if sd1 > PRICE_RESOLUTION * x[1] else 0.0
    out[2] = -m2 / sd2 if sd2 > PRICE_RESOLUTION * x[2] else 0.0
    out[3] = -m3 / sd3 if sd3 > PRICE_RESOLUTION * x[3] else 0.0


@njit(cache=True)
def step(
    state: np.ndarray,
    p: np.ndarray,
    ts: int,
    o: float,
    h: float,
    l: float,
    c: float,
    v: float,
    out: np.ndarray,
) -> None:
    """Consume one bar; write the 11 ``COLUMNS`` into ``out`` (NaN while warming up or on a bad bar)."""
    if not is_valid_bar(o, h, l, c, v):
        out[:] = np.nan
        return
    n = int(state[S_N])
    w = int(p[P_Z])
    if n > 0:
        pc = state[S_PREV_CLOSE]
        out[0] = math.log(o / pc)
        out[1] = math.log(h / pc)
        out[2] = math.log(l / pc)
        out[3] = math.log(c / pc)
    else:
        out[0] = np.nan
        out[1] = np.nan
        out[2] = np.nan
        out[3] = np.nan
    rng = h - l
    if rng > PRICE_RESOLUTION * h:  # else a flat bar (range within rounding noise)
        out[4] = (c - o) / rng
        out[5] = (h - max(o, c)) / rng
        out[6] = (min(o, c) - l) / rng
    else:
        out[4] = 0.0
        out[5] = 0.0
        out[6] = 0.0
    ring = state[_S_FIXED : _S_FIXED + 4 * w]
    b = 4 * (n % w)
    ring[b] = o
    ring[b + 1] = h
    ring[b + 2] = l
    ring[b + 3] = c
    if n + 1 >= w:
        _zscores(ring, w, ring[b : b + 4], out[7:11])
    else:
        out[7] = np.nan
        out[8] = np.nan
        out[9] = np.nan
        out[10] = np.nan
    state[S_N] = n + 1
    state[S_PREV_CLOSE] = c


@njit(cache=True)
def _batch(state, p, ts, o, h, l, c, v, k):
    n = ts.shape[0]
    out = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        step(state, p, ts[i], o[i], h[i], l[i], c[i], v[i], out[i])
    return out


def batch(
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    params: RelativeParams | None = None,
) -> np.ndarray:
    """All bars at once: ``(n, 11)``, identical to calling ``step`` bar by bar."""
    params = params or RelativeParams()
    return _batch(init_state(params), params.as_array(), ts, o, h, l, c, v, len(COLUMNS))


guard_numba_cache(globals(), [_bars])
