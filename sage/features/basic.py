"""Basic technical kernels: returns, TR/ATR, RSI, MACD, Bollinger, volatility, correlation, momentum, volume.

One kernel family following the ``sage.features`` convention (``BasicParams``,
``columns``, ``init_state``, ``step``, ``batch``). Batch and streaming run the
same ``step`` in the same order, so they agree bitwise by construction.

Design choices that matter for correctness (details per column in
``docs/features.md``):

* Rolling statistics are recomputed from the ring buffer on every bar instead of
  kept as running sums: a running sum over millions of bars drifts, and a flat
  window would then report a tiny non-zero std (and garbage %B). Window means
  and stds are computed on values shifted by the newest value, so an exactly
  flat window gives exactly zero dispersion.
* Recursive averages (EMA, Wilder, EWMA) are seeded with the simple mean of
  their first ``period`` inputs and emit NaN until then: warm-up is explicit.
  They update as ``m += a * (x - m)``, which keeps a constant input exactly
  constant.
* A bar failing :func:`sage.features.bars.is_valid_bar` gets an all-NaN row and
  leaves the state untouched, as if it never happened.
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
    "ret",
    "log_ret",
    "tr",
    "atr",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_mid",
    "bb_upper",
    "bb_lower",
    "bb_pctb",
    "rvol",
    "ewma_vol",
    "ret_autocorr",
    "mom_fast",
    "mom_slow",
    "vol_ratio",
)
"""Output columns, in order (fixed names: parameters live in the schema, not the names)."""

(
    C_RET,
    C_LOG_RET,
    C_TR,
    C_ATR,
    C_RSI,
    C_MACD,
    C_MACD_SIGNAL,
    C_MACD_HIST,
    C_BB_MID,
    C_BB_UPPER,
    C_BB_LOWER,
    C_BB_PCTB,
    C_RVOL,
    C_EWMA_VOL,
    C_RET_AUTOCORR,
    C_MOM_FAST,
    C_MOM_SLOW,
    C_VOL_RATIO,
) = range(len(COLUMNS))


class BasicParams(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of the basic kernels (all windows in bars)."""

    atr_period: int = 14
    """Wilder ATR period (Wilder's original 14)."""
    rsi_period: int = 14
    """Wilder RSI period (Wilder's original 14)."""
    macd_fast: int = 12
    """MACD fast EMA span (Appel's 12)."""
    macd_slow: int = 26
    """MACD slow EMA span (Appel's 26); must exceed ``macd_fast``."""
    macd_signal: int = 9
    """EMA span of the MACD signal line (Appel's 9)."""
    bb_period: int = 20
    """Bollinger window (Bollinger's 20)."""
    bb_k: float = 2.0
    """Bollinger band width in population standard deviations (Bollinger's 2)."""
    rv_window: int = 20
    """Realised-volatility window: RMS of the last ``rv_window`` log returns."""
    ewma_lambda: float = 0.94
    """RiskMetrics decay for EWMA volatility (0.94 is the daily RiskMetrics value)."""
    corr_lambda: float = 0.94
    """Decay for the EWMA correlation (``ret_autocorr`` and :func:`ewma_corr`)."""
    ewma_min_periods: int = 20
    """Observations that seed EWMA vol/correlation (simple mean) before any output; ~1/(1-0.94)."""
    mom_fast: int = 5
    """Bars for ``mom_fast`` = log(c_t / c_{t-n}); 5 feeds the tactical matrix."""
    mom_slow: int = 20
    """Bars for ``mom_slow`` = log(c_t / c_{t-n}); a slower trend read for the strategic matrix."""
    volume_window: int = 20
    """Window of the rolling mean volume in ``vol_ratio`` (includes the current bar)."""

    def __post_init__(self) -> None:
        for name in (
            "atr_period",
            "rsi_period",
            "macd_fast",
            "macd_slow",
            "macd_signal",
            "bb_period",
            "rv_window",
            "ewma_min_periods",
            "mom_fast",
            "mom_slow",
            "volume_window",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BasicParams.{name} must be an int >= 1, got {value!r}")
        if self.macd_fast >= self.macd_slow:
            raise ValueError("BasicParams.macd_fast must be < macd_slow")
        if not self.bb_k > 0.0:
            raise ValueError("BasicParams.bb_k must be > 0")
        for name in ("ewma_lambda", "corr_lambda"):
            lam = getattr(self, name)
            if not 0.0 < lam < 1.0:
                raise ValueError(f"BasicParams.{name} must be in (0, 1), got {lam!r}")

    def as_array(self) -> np.ndarray:
        """Parameters plus the derived state layout, as the float64 vector ``step`` reads (see P_*)."""
        close_cap = max(self.bb_period, self.mom_fast + 1, self.mom_slow + 1)
        off_close = _S_FIXED
        off_vol = off_close + close_cap
        off_ret = off_vol + self.volume_window
        size = off_ret + self.rv_window
        return np.array(
            [
                self.atr_period,
                self.rsi_period,
                self.macd_fast,
                self.macd_slow,
                self.macd_signal,
                self.bb_period,
                self.bb_k,
                self.rv_window,
                self.ewma_lambda,
                self.corr_lambda,
                self.ewma_min_periods,
                self.mom_fast,
                self.mom_slow,
                self.volume_window,
                close_cap,
                off_close,
                off_vol,
                off_ret,
                size,
            ],
            dtype=np.float64,
        )


# Parameter-vector layout (BasicParams.as_array).
(
    P_ATR,
    P_RSI,
    P_MACD_FAST,
    P_MACD_SLOW,
    P_MACD_SIGNAL,
    P_BB,
    P_BB_K,
    P_RV,
    P_EWMA_LAMBDA,
    P_CORR_LAMBDA,
    P_EWMA_MIN,
    P_MOM_FAST,
    P_MOM_SLOW,
    P_VOLW,
    P_CLOSE_CAP,
    P_OFF_CLOSE,
    P_OFF_VOL,
    P_OFF_RET,
    P_SIZE,
) = range(19)

# State layout: fixed slots, then three ring buffers (closes, volumes, log returns).
# A ring's write position is (number of values pushed) % capacity, so no extra slots.
(
    S_N,  # valid bars consumed so far
    S_PREV_CLOSE,  # close of the last valid bar
    S_PREV_RET,  # log return of the last valid bar
    S_ATR,  # Wilder ATR (running TR sum during warm-up)
    S_GAIN,  # Wilder average gain (running sum during warm-up)
    S_LOSS,  # Wilder average loss (running sum during warm-up)
    S_EMA_FAST,  # MACD fast EMA (running sum during warm-up)
    S_EMA_SLOW,  # MACD slow EMA (running sum during warm-up)
    S_SIGNAL,  # MACD signal EMA (running sum during warm-up)
    S_EWMA_VAR,  # EWMA variance of log returns (running sum during warm-up)
    S_COV,  # EWMA E[r_t r_{t-1}]
    S_VARX,  # EWMA E[r_t^2] over correlation pairs
    S_VARY,  # EWMA E[r_{t-1}^2] over correlation pairs
) = range(13)
_S_FIXED = 13


def columns(params: BasicParams | None = None) -> tuple[str, ...]:
    """Output column names (independent of the parameters)."""
    return COLUMNS


def warmup(params: BasicParams) -> tuple[int, ...]:
    """Leading valid bars with NaN output, per column (in ``COLUMNS`` order); NaN-free afterwards."""
    m = params.ewma_min_periods
    lengths = {
        "ret": 1,
        "log_ret": 1,
        "tr": 0,
        "atr": params.atr_period - 1,
        "rsi": params.rsi_period,
        "macd": params.macd_slow - 1,
        "macd_signal": params.macd_slow + params.macd_signal - 2,
        "macd_hist": params.macd_slow + params.macd_signal - 2,
        "bb_mid": params.bb_period - 1,
        "bb_upper": params.bb_period - 1,
        "bb_lower": params.bb_period - 1,
        "bb_pctb": params.bb_period - 1,
        "rvol": params.rv_window,
        "ewma_vol": m,
        "ret_autocorr": m + 1,
        "mom_fast": params.mom_fast,
        "mom_slow": params.mom_slow,
        "vol_ratio": params.volume_window - 1,
    }
    return tuple(lengths[name] for name in COLUMNS)


def init_state(params: BasicParams) -> np.ndarray:
    """Fresh zeroed state; layout in the ``S_*`` constants plus rings at ``P_OFF_*``."""
    return np.zeros(int(params.as_array()[P_SIZE]), dtype=np.float64)


# IR-inlined: called with constant slot indices, which numba would otherwise compile once per literal.
@njit(cache=True, inline="always")
def seeded_ema(state: np.ndarray, i: int, count: int, period: int, alpha: float, x: float) -> float:
    """Advance a recursive average held in ``state[i]`` with its ``count``-th input ``x``.

    Until ``period`` inputs arrived the slot holds their running sum and NaN is
    returned; at the ``period``-th input it becomes their mean (the seed); later
    ``m += alpha * (x - m)``. Why: seeding with a mean instead of the first value
    removes the start-up bias, and the update form keeps constants exact.
    """
    if count < period:
        state[i] += x
        return np.nan
    if count == period:
        state[i] = (state[i] + x) / period
        return state[i]
    state[i] += alpha * (x - state[i])
    return state[i]


@njit(cache=True)
def ring_dev_std(buf: np.ndarray, pushed: int, m: int, ref: float) -> tuple[float, float]:
    """``(mean - ref, population std)`` of the newest ``m`` values of ring ``buf``.

    ``pushed`` values have been written at ``k % len(buf)``. Values are shifted
    by ``ref`` (pass the newest value) before summing: a flat window yields an
    exact zero std, and ``x_t - mean`` is available as ``-(mean - ref)`` without
    cancelling two large prices. Two-pass: no sum-of-squares cancellation.
    """
    cap = buf.shape[0]
    start = (pushed - m) % cap
    # The window is buf[start:start+m] wrapped around the end: at most two contiguous runs
    # (plain loops without per-element modulo, which numba vectorises).
    end1 = min(start + m, cap)
    end2 = m - (end1 - start)
    s = 0.0
    for j in range(start, end1):
        s += buf[j] - ref
    for j in range(end2):
        s += buf[j] - ref
    mean_d = s / m
    q = 0.0
    for j in range(start, end1):
        d = buf[j] - ref - mean_d
        q += d * d
    for j in range(end2):
        d = buf[j] - ref - mean_d
        q += d * d
    return mean_d, math.sqrt(q / m)


# IR-inlined: called with constant slot indices, which numba would otherwise compile once per literal.
@njit(cache=True, inline="always")
def ewma_corr_update(
    state: np.ndarray, i: int, count: int, m: int, alpha: float, x: float, y: float
) -> float:
    """Advance a zero-mean EWMA correlation held in ``state[i:i+3]`` (cov, var_x, var_y).

    RiskMetrics convention (returns have ~zero mean at bar frequency, so no
    de-meaning). Seeded by the means of the first ``m`` pairs; NaN before. A
    zero variance (a flat series) gives 0, not NaN: no co-movement is
    measurable. Clipped to [-1, 1] against rounding.
    """
    cov = seeded_ema(state, i, count, m, alpha, x * y)
    vx = seeded_ema(state, i + 1, count, m, alpha, x * x)
    vy = seeded_ema(state, i + 2, count, m, alpha, y * y)
    if count < m:
        return np.nan
    if not (vx > 0.0 and vy > 0.0):
        return 0.0
    r = cov / (math.sqrt(vx) * math.sqrt(vy))
    return min(1.0, max(-1.0, r))


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
    """Consume one bar; write the ``COLUMNS`` row into ``out``; NaN where still warming up."""
    if not is_valid_bar(o, h, l, c, v):
        out[:] = np.nan
        return
    n = int(state[S_N])  # valid bars before this one
    pc = state[S_PREV_CLOSE]
    has_prev = n > 0
    close_cap = int(p[P_CLOSE_CAP])
    off_c = int(p[P_OFF_CLOSE])
    off_v = int(p[P_OFF_VOL])
    off_r = int(p[P_OFF_RET])
    volw = int(p[P_VOLW])
    rvw = int(p[P_RV])
    closes = state[off_c : off_c + close_cap]
    vols = state[off_v : off_v + volw]
    rets = state[off_r : off_r + rvw]

    # Returns and true range.
    r = np.nan
    if has_prev:
        out[C_RET] = c / pc - 1.0
        r = math.log(c / pc)
        out[C_LOG_RET] = r
    else:
        out[C_RET] = np.nan
        out[C_LOG_RET] = np.nan
    tr = h - l
    if has_prev:
        tr = max(tr, abs(h - pc), abs(l - pc))
    out[C_TR] = tr

    atr_n = int(p[P_ATR])
    out[C_ATR] = seeded_ema(state, S_ATR, n + 1, atr_n, 1.0 / atr_n, tr)

    # Wilder RSI over close-to-close changes (the n-th change arrives with bar n).
    rsi_n = int(p[P_RSI])
    out[C_RSI] = np.nan
    if has_prev:
        d = c - pc
        gain = seeded_ema(state, S_GAIN, n, rsi_n, 1.0 / rsi_n, max(d, 0.0))
        loss = seeded_ema(state, S_LOSS, n, rsi_n, 1.0 / rsi_n, max(-d, 0.0))
        if n >= rsi_n:
            if loss > 0.0:
                out[C_RSI] = 100.0 - 100.0 / (1.0 + gain / loss)
            elif gain > 0.0:
                out[C_RSI] = 100.0
            else:
                out[C_RSI] = 50.0

    # MACD: SMA-seeded EMAs; the signal line starts once MACD exists.
    fast_n = int(p[P_MACD_FAST])
    slow_n = int(p[P_MACD_SLOW])
    sig_n = int(p[P_MACD_SIGNAL])
    ema_f = seeded_ema(state, S_EMA_FAST, n + 1, fast_n, 2.0 / (fast_n + 1.0), c)
    ema_s = seeded_ema(state, S_EMA_SLOW, n + 1, slow_n, 2.0 / (slow_n + 1.0), c)
    out[C_MACD] = np.nan
    out[C_MACD_SIGNAL] = np.nan
    out[C_MACD_HIST] = np.nan
    if n + 1 >= slow_n:
        macd = ema_f - ema_s
        out[C_MACD] = macd
        sig = seeded_ema(state, S_SIGNAL, n + 2 - slow_n, sig_n, 2.0 / (sig_n + 1.0), macd)
        out[C_MACD_SIGNAL] = sig
        out[C_MACD_HIST] = macd - sig

    # Rings: push this bar's close and volume (and log return).
    closes[n % close_cap] = c
    vols[n % volw] = v
    if has_prev:
        rets[(n - 1) % rvw] = r

    # Bollinger bands, %B computed from shifted values (exact 0.5 on a flat window).
    bb_n = int(p[P_BB])
    bb_k = p[P_BB_K]
    if n + 1 >= bb_n:
        dev, sd = ring_dev_std(closes, n + 1, bb_n, c)
        mid = c + dev
        out[C_BB_MID] = mid
        out[C_BB_UPPER] = mid + bb_k * sd
        out[C_BB_LOWER] = mid - bb_k * sd
        if sd > PRICE_RESOLUTION * c:  # else flat up to rounding noise
            out[C_BB_PCTB] = (bb_k * sd - dev) / (2.0 * bb_k * sd)
        else:
            out[C_BB_PCTB] = 0.5
    else:
        out[C_BB_MID] = np.nan
        out[C_BB_UPPER] = np.nan
        out[C_BB_LOWER] = np.nan
        out[C_BB_PCTB] = np.nan

    # Realised volatility: RMS of the last rv_window log returns (zero-mean, per bar).
    out[C_RVOL] = np.nan
    if n >= rvw:
        q = 0.0
        for j in range(rvw):
            q += rets[j] * rets[j]
        out[C_RVOL] = math.sqrt(q / rvw)

    # EWMA volatility and EWMA correlation of r_t with r_{t-1}.
    m = int(p[P_EWMA_MIN])
    out[C_EWMA_VOL] = np.nan
    out[C_RET_AUTOCORR] = np.nan
    if has_prev:
        var = seeded_ema(state, S_EWMA_VAR, n, m, 1.0 - p[P_EWMA_LAMBDA], r * r)
        if n >= m:
            out[C_EWMA_VOL] = math.sqrt(var)
        if n >= 2:
            out[C_RET_AUTOCORR] = ewma_corr_update(
                state, S_COV, n - 1, m, 1.0 - p[P_CORR_LAMBDA], r, state[S_PREV_RET]
            )
        state[S_PREV_RET] = r

    # Momentum: log(c_t / c_{t-k}); the close of valid bar j sits at closes[j % cap].
    mf = int(p[P_MOM_FAST])
    ms = int(p[P_MOM_SLOW])
    out[C_MOM_FAST] = math.log(c / closes[(n - mf) % close_cap]) if n >= mf else np.nan
    out[C_MOM_SLOW] = math.log(c / closes[(n - ms) % close_cap]) if n >= ms else np.nan

    # Volume ratio: v / mean(last volume_window volumes incl. this one); 0 when that mean is 0.
    out[C_VOL_RATIO] = np.nan
    if n + 1 >= volw:
        s = 0.0
        for j in range(volw):
            s += vols[j]
        mean_v = s / volw
        out[C_VOL_RATIO] = v / mean_v if mean_v > 0.0 else 0.0

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
    params: BasicParams | None = None,
) -> np.ndarray:
    """All bars at once: ``(n, len(COLUMNS))``, identical to calling ``step`` bar by bar."""
    params = params or BasicParams()
    return _batch(init_state(params), params.as_array(), ts, o, h, l, c, v, len(COLUMNS))


@njit(cache=True)
def _ewma_corr(x, y, alpha, m):
    n = x.shape[0]
    out = np.empty(n, dtype=np.float64)
    state = np.zeros(3, dtype=np.float64)
    count = 0
    for i in range(n):
        if not (abs(x[i]) < np.inf and abs(y[i]) < np.inf):
            out[i] = np.nan
            continue
        count += 1
        out[i] = ewma_corr_update(state, 0, count, m, alpha, x[i], y[i])
    return out


def ewma_corr(x: np.ndarray, y: np.ndarray, lam: float = 0.94, min_periods: int = 20) -> np.ndarray:
    """EWMA correlation between two aligned series (e.g. two instruments' returns).

    Same semantics as ``ret_autocorr``: zero-mean RiskMetrics estimator with
    decay ``lam``, seeded by the means of the first ``min_periods`` finite
    pairs, NaN before that; a pair with a non-finite value outputs NaN and is
    skipped; a zero variance outputs 0.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D and equally long, got {x.shape} and {y.shape}")
    if not 0.0 < lam < 1.0:
        raise ValueError(f"lam must be in (0, 1), got {lam!r}")
    if min_periods < 1:
        raise ValueError(f"min_periods must be >= 1, got {min_periods!r}")
    return _ewma_corr(x, y, 1.0 - lam, int(min_periods))


guard_numba_cache(globals(), [_bars])
