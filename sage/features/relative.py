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
  on a flat bar (h == l) all three are 0.
* ``z_open|high|low|close`` = (x_t - mean) / std over the last ``z_window``
  values of that series (population std, current bar included); 0 if the window
  is flat; NaN for the first ``z_window - 1`` bars.

Follows the kernel-family convention of ``sage.features`` (same ``step`` in
batch and streaming, bitwise agreement by construction).
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numba import njit

from sage.features.bars import is_valid_bar
from sage.features.basic import ring_dev_std

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
# State: [valid bars seen, previous valid close, then rings of o, h, l, c of length z_window each].
S_N, S_PREV_CLOSE = range(2)
_S_FIXED = 2


def columns(params: RelativeParams | None = None) -> tuple[str, ...]:
    """Output column names (independent of the parameters)."""
    return COLUMNS


def init_state(params: RelativeParams) -> np.ndarray:
    """Fresh zeroed state (layout: ``S_*`` slots, then four rings of ``z_window``)."""
    return np.zeros(int(params.as_array()[P_SIZE]), dtype=np.float64)


@njit(cache=True)
def _zscore(buf: np.ndarray, pushed: int, w: int, x: float) -> float:
    dev, sd = ring_dev_std(buf, pushed, w, x)
    if sd > 0.0:
        return -dev / sd
    return 0.0


@njit(cache=True)
def step(
    state: np.ndarray,
    p: np.ndarray,
    ts: int,
    o: float,
    h: float,
    l: float,  # noqa: E741
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
    if rng > 0.0:
        out[4] = (c - o) / rng
        out[5] = (h - max(o, c)) / rng
        out[6] = (min(o, c) - l) / rng
    else:
        out[4] = 0.0
        out[5] = 0.0
        out[6] = 0.0
    slot = n % w
    base = _S_FIXED
    state[base + slot] = o
    state[base + w + slot] = h
    state[base + 2 * w + slot] = l
    state[base + 3 * w + slot] = c
    if n + 1 >= w:
        out[7] = _zscore(state[base : base + w], n + 1, w, o)
        out[8] = _zscore(state[base + w : base + 2 * w], n + 1, w, h)
        out[9] = _zscore(state[base + 2 * w : base + 3 * w], n + 1, w, l)
        out[10] = _zscore(state[base + 3 * w : base + 4 * w], n + 1, w, c)
    else:
        out[7] = np.nan
        out[8] = np.nan
        out[9] = np.nan
        out[10] = np.nan
    state[S_N] = n + 1
    state[S_PREV_CLOSE] = c


@njit(cache=True)
def _batch(state, p, ts, o, h, l, c, v, k):  # noqa: E741
    n = ts.shape[0]
    out = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        step(state, p, ts[i], o[i], h[i], l[i], c[i], v[i], out[i])
    return out


def batch(
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,  # noqa: E741
    c: np.ndarray,
    v: np.ndarray,
    params: RelativeParams | None = None,
) -> np.ndarray:
    """All bars at once: ``(n, 11)``, identical to calling ``step`` bar by bar."""
    params = params or RelativeParams()
    return _batch(init_state(params), params.as_array(), ts, o, h, l, c, v, len(COLUMNS))
