"""Enhanced fair-value-gap (FVG) detector as a causal, streaming-exact feature kernel.

A *fair value gap* is a three-bar imbalance: the market moved so fast through the middle bar that
bar ``t`` and bar ``t-2`` do not overlap, leaving a price interval nobody traded both ways in.
Discretionary traders watch for price to come back and "mitigate" (fully cross) such gaps. This kernel
turns that idea into nine dense, scale-free numbers per bar that a model can consume.

Why a single ``step`` function over a flat float64 state: the same compiled code runs in the batch
path (an njit loop over history) and the live path (one call per bar), so the two agree bitwise by
construction and the batch path can never peek at the future. The pipeline in ``sage.features`` calls
:func:`step` directly from its own combined njit function, hence plain arrays and scalars only.

Definitions (bars are counted in *valid* bars, see "Invalid bars" below; ``t`` is the current bar)
------------------------------------------------------------------------------------------------------
Detection, evaluated at the close of bar ``t`` (never earlier, so no look-ahead):

* bullish gap: ``low[t] > high[t-2]``; the gap is ``[bottom, top] = [high[t-2], low[t]]``.
* bearish gap: ``high[t] < low[t-2]``; the gap is ``[bottom, top] = [high[t], low[t-2]]``.
* either side only counts when the middle bar's body ``|close[t-1] - open[t-1]|`` is strictly greater
  than ``body_mult`` x the mean body of the ``body_lookback`` bars before the middle bar
  (bars ``t-1-body_lookback .. t-2``). The strict inequality means a perfectly flat history (mean body
  0) still requires a non-zero middle body.

Life cycle of a gap formed at bar ``f`` (its *age* at bar ``t`` is ``t - f``):

* it is *active* from bar ``f`` while it is neither mitigated nor expired;
* it expires at age ``expiry_bars``: at bar ``f + expiry_bars`` it is dropped before being tested, so it
  can be mitigated at ages ``1 .. expiry_bars-1`` only;
* *touch*: the first bar after ``f`` that reaches the near edge (bullish: ``low <= top``; bearish:
  ``high >= bottom``);
* *mitigation*: a bar after ``f`` that reaches the far edge (bullish: ``low <= bottom``; bearish:
  ``high >= top``). A mitigated gap is removed at once.

Mitigation strength, computed once at the mitigating bar ``m`` (each term clipped to ``[0, 1]``)::

    strength = w_penetration * clip((bottom - low[m]) / size)            # bullish; bearish: (high[m] - top)
             + w_speed       * clip(1 - (m - touch) / mitigation_horizon)
             + w_volume      * clip(volume_ratio / volume_ratio_cap)
             + w_age         * clip(1 - (m - f) / expiry_bars)

``penetration`` is the *overshoot* beyond the far edge in units of gap size: mitigation already means
the gap was crossed completely, so the informative part is how far past it price travelled.
``bars_to_mitigation = m - touch`` counts from the first touch (0 when one bar enters and crosses),
which keeps it distinct from the age term (time from formation). ``volume_ratio = volume[m] / mean of
volume over the volume_window bars before m``; when that mean is 0 the ratio is taken as +inf if
``volume[m] > 0`` (term 1) and 0 otherwise. With the default weights (summing to 1) strength lies in
``[0, 1]``. If several gaps are mitigated on one bar, the largest strength is kept.

Output columns (``columns(params)``, in order)
----------------------------------------------
``bullish_active``, ``bearish_active``
    Number of active bullish / bearish gaps after processing the bar (float counts, ``0..expiry``).
``nearest_level``
    Among all edges (top and bottom) of all active gaps, the one closest to the close, reported as
    ``(level - close) / |close|`` (negative = below price). Ties go to the most recently formed gap.
    The gap owning that edge is the *reference gap* for the next four columns.
``age``
    Bars since the reference gap formed (0 on its formation bar).
``mitigation_signal``
    1.0 if any gap was mitigated within the last ``signal_window`` bars (bars ``t-signal_window+1 .. t``),
    else 0.0.
``gap_size``
    Reference gap height ``top - bottom`` in price units (always > 0).
``gap_size_pct``
    ``gap_size / |close|``.
``mitigation_strength``
    Strength of the most recent mitigation if ``mitigation_signal`` is 1, else 0.0.
``mitigation_depth``
    Fraction of the reference gap already filled by bars after its formation, in ``[0, 1)``
    (bullish: ``(top - lowest low since formation) / size``; bearish mirrored; 0 when untouched).

When no gap is active, ``nearest_level``, ``age``, ``gap_size``, ``gap_size_pct`` and
``mitigation_depth`` are 0.0 (dense for models); ``bullish_active + bearish_active == 0`` tells this
apart from a genuine zero. When ``close == 0`` the two relative columns are NaN.

Warm-up and invalid bars
------------------------
All nine outputs are NaN for the first ``warmup_bars(params) = max(body_lookback + 1, volume_window)``
valid bars; detection also starts only then, so every gap has a full body and volume history.
A bar with any non-finite ``o, h, l, c, v`` is *invalid*: its outputs are all NaN and the state is left
untouched (it does not advance the bar counter, so ages and windows skip it). Any output that would
be +-inf for finite but absurd inputs (overflowing differences) is reported as NaN instead.

State layout (``init_state``), float64, offsets in elements
-----------------------------------------------------------
``[0]`` valid-bar count ``n`` (index of the next valid bar); ``[1]`` number of active gaps;
``[2]`` bar index of the last mitigation (-1 when none); ``[3]`` its strength;
``[4:8]`` ``high[t-1], low[t-1], high[t-2], low[t-2]``;
``[8 : 8+B]`` ring of bodies, ``B = body_lookback + 1`` (slot ``i % B`` holds bar ``i``);
``[8+B : 8+B+V]`` ring of volumes, ``V = volume_window``;
then the gap table, ``2 * expiry_bars`` rows x 6 fields
(``direction (+1/-1), bottom, top, formation index, extreme since formation, touch index (-1)``).
Active gaps occupy the first ``n_active`` rows in formation order (stable compaction), which is why
the capacity ``2 * expiry_bars`` suffices: at most one new gap per side per bar, each living at most
``expiry_bars`` bars.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
from numba import njit

__all__ = [
    "N_COLUMNS",
    "FvgParams",
    "FvgStream",
    "batch",
    "columns",
    "init_state",
    "state_size",
    "step",
    "warmup_bars",
]

#: Output column names, in output order.
_COLUMNS: tuple[str, ...] = (
    "bullish_active",
    "bearish_active",
    "nearest_level",
    "age",
    "mitigation_signal",
    "gap_size",
    "gap_size_pct",
    "mitigation_strength",
    "mitigation_depth",
)
N_COLUMNS: int = len(_COLUMNS)

# Parameter vector indices (``FvgParams.as_array``).
_P_BODY_MULT = 0
_P_BODY_LOOKBACK = 1
_P_EXPIRY = 2
_P_SIGNAL_WINDOW = 3
_P_MIT_HORIZON = 4
_P_W_PEN = 5
_P_W_SPEED = 6
_P_W_VOL = 7
_P_W_AGE = 8
_P_VOL_WINDOW = 9
_P_VOL_CAP = 10
_N_PARAMS = 11

# State header indices.
_S_N = 0
_S_N_ACTIVE = 1
_S_LAST_MIT = 2
_S_LAST_STRENGTH = 3
_S_H1 = 4
_S_L1 = 5
_S_H2 = 6
_S_L2 = 7
_HEADER = 8

# Gap-table fields.
_G_DIR = 0
_G_BOTTOM = 1
_G_TOP = 2
_G_FORM = 3
_G_EXTREME = 4
_G_TOUCH = 5
_GAP_FIELDS = 6


class FvgParams(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the FVG detector; every number the kernel uses is a field here.

    Frozen so one instance can key caches and be shared between the batch and live paths without
    drifting apart.
    """

    body_mult: float = 1.5
    """Middle-bar body must exceed this multiple of the trailing mean body (default 1.5): the impulse
    filter that separates a real displacement from noise."""
    body_lookback: int = 10
    """Bars before the middle bar whose mean body is the impulse reference (default 10)."""
    expiry_bars: int = 50
    """A gap still unmitigated at this age (bars since formation) is dropped (default 50)."""
    signal_window: int = 5
    """``mitigation_signal`` stays 1 for this many bars, the mitigating bar included (default 5)."""
    mitigation_horizon: int = 20
    """Bars from first touch to full mitigation at which the speed term reaches 0 (default 20)."""
    w_penetration: float = 0.4
    """Strength weight of the overshoot beyond the far edge, in gap sizes clipped to 1 (default 0.4)."""
    w_speed: float = 0.3
    """Strength weight of ``1 - bars_to_mitigation / mitigation_horizon`` (default 0.3)."""
    w_volume: float = 0.2
    """Strength weight of ``min(volume_ratio / volume_ratio_cap, 1)`` (default 0.2)."""
    w_age: float = 0.1
    """Strength weight of ``1 - age_at_mitigation / expiry_bars`` (default 0.1)."""
    volume_window: int = 20
    """Bars before the mitigating bar whose mean volume normalises its volume (default 20)."""
    volume_ratio_cap: float = 2.0
    """Volume ratio at which the volume term saturates at 1 (default 2.0)."""

    def __post_init__(self) -> None:
        """Reject values that would make the state layout or the formulas meaningless."""
        for name in ("body_lookback", "expiry_bars", "signal_window", "mitigation_horizon", "volume_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"FvgParams.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"FvgParams.{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.body_mult) and self.body_mult >= 0.0):
            raise ValueError(f"FvgParams.body_mult must be finite and >= 0, got {self.body_mult}")
        if not (math.isfinite(self.volume_ratio_cap) and self.volume_ratio_cap > 0.0):
            raise ValueError(
                f"FvgParams.volume_ratio_cap must be finite and > 0, got {self.volume_ratio_cap}"
            )
        for name in ("w_penetration", "w_speed", "w_volume", "w_age"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"FvgParams.{name} must be finite")

    def as_array(self) -> np.ndarray:
        """Pack the fields into the float64 vector that :func:`step` reads (indices ``_P_*``)."""
        p = np.empty(_N_PARAMS, dtype=np.float64)
        p[_P_BODY_MULT] = self.body_mult
        p[_P_BODY_LOOKBACK] = self.body_lookback
        p[_P_EXPIRY] = self.expiry_bars
        p[_P_SIGNAL_WINDOW] = self.signal_window
        p[_P_MIT_HORIZON] = self.mitigation_horizon
        p[_P_W_PEN] = self.w_penetration
        p[_P_W_SPEED] = self.w_speed
        p[_P_W_VOL] = self.w_volume
        p[_P_W_AGE] = self.w_age
        p[_P_VOL_WINDOW] = self.volume_window
        p[_P_VOL_CAP] = self.volume_ratio_cap
        return p


def columns(params: FvgParams | None = None) -> tuple[str, ...]:
    """Output column names; fixed for this kernel, the argument keeps the convention uniform."""
    return _COLUMNS


def warmup_bars(params: FvgParams) -> int:
    """Number of leading valid bars whose outputs are NaN (body and volume histories filling)."""
    return max(params.body_lookback + 1, params.volume_window)


def state_size(params: FvgParams) -> int:
    """Length of the state vector for ``params`` (see the module docstring for the layout)."""
    return _HEADER + (params.body_lookback + 1) + params.volume_window + 2 * params.expiry_bars * _GAP_FIELDS


def init_state(params: FvgParams) -> np.ndarray:
    """Fresh state: nothing seen, no gaps, no mitigation yet."""
    state = np.zeros(state_size(params), dtype=np.float64)
    state[_S_LAST_MIT] = -1.0
    return state


@njit(cache=True)
def _clip01(x: float) -> float:
    """Clamp to [0, 1]; NaN maps to 0 so a degenerate term cannot poison the strength sum."""
    if x > 1.0:
        return 1.0
    if x >= 0.0:
        return x
    return 0.0


@njit(cache=True)
def _finite_or_nan(x: float) -> float:
    """Report overflowed values as NaN: outputs are finite or NaN, never inf."""
    if math.isinf(x):
        return math.nan
    return x


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
    """Consume one bar, update ``state`` in place and write the bar's nine outputs into ``out``.

    ``ts`` is unused (time is counted in bars) but kept so every kernel shares one signature.
    """
    k_out = 9
    if not (
        math.isfinite(o) and math.isfinite(h) and math.isfinite(l) and math.isfinite(c) and math.isfinite(v)
    ):
        for j in range(k_out):
            out[j] = math.nan
        return

    body_lookback = int(p[_P_BODY_LOOKBACK])
    expiry = int(p[_P_EXPIRY])
    vol_window = int(p[_P_VOL_WINDOW])
    n_body = body_lookback + 1
    body_off = _HEADER
    vol_off = body_off + n_body
    tab_off = vol_off + vol_window
    warm = max(body_lookback + 1, vol_window)

    t = int(state[_S_N])
    t_f = float(t)
    n_active = int(state[_S_N_ACTIVE])

    # 1) Age, touch and mitigate existing gaps with this bar (they all formed at an earlier bar).
    if n_active > 0:
        vol_term = -1.0  # computed on the first mitigation of this bar only (most bars have none)
        horizon = p[_P_MIT_HORIZON]
        any_mitigated = False
        best_strength = -math.inf
        keep = 0
        for i in range(n_active):
            r = tab_off + i * _GAP_FIELDS
            form = state[r + _G_FORM]
            age = t_f - form
            if age >= expiry:
                continue  # expired: dropped untested
            direction = state[r + _G_DIR]
            bottom = state[r + _G_BOTTOM]
            top = state[r + _G_TOP]
            size = top - bottom
            mitigated = False
            pen = 0.0
            if direction > 0.0:
                state[r + _G_EXTREME] = min(state[r + _G_EXTREME], l)
                if state[r + _G_TOUCH] < 0.0 and l <= top:
                    state[r + _G_TOUCH] = t_f
                if l <= bottom:
                    mitigated = True
                    pen = (bottom - l) / size
            else:
                state[r + _G_EXTREME] = max(state[r + _G_EXTREME], h)
                if state[r + _G_TOUCH] < 0.0 and h >= bottom:
                    state[r + _G_TOUCH] = t_f
                if h >= top:
                    mitigated = True
                    pen = (h - top) / size
            if mitigated:
                if vol_term < 0.0:
                    vsum = 0.0
                    for j in range(vol_window):
                        vsum += state[vol_off + j]
                    vmean = vsum / vol_window
                    if vmean > 0.0:
                        vol_term = _clip01((v / vmean) / p[_P_VOL_CAP])
                    elif v > 0.0:
                        vol_term = 1.0
                    else:
                        vol_term = 0.0
                to_mit = t_f - state[r + _G_TOUCH]
                strength = (
                    p[_P_W_PEN] * _clip01(pen)
                    + p[_P_W_SPEED] * _clip01(1.0 - to_mit / horizon)
                    + p[_P_W_VOL] * vol_term
                    + p[_P_W_AGE] * _clip01(1.0 - age / expiry)
                )
                if not any_mitigated or strength > best_strength:
                    best_strength = strength
                any_mitigated = True
                continue
            if keep != i:
                w = tab_off + keep * _GAP_FIELDS
                for f in range(_GAP_FIELDS):
                    state[w + f] = state[r + f]
            keep += 1
        n_active = keep
        if any_mitigated:
            state[_S_LAST_MIT] = t_f
            state[_S_LAST_STRENGTH] = best_strength

    # 2) Detect a gap closing at this bar (needs bars t-1, t-2 and the body history before t-1).
    if t >= warm:
        bsum = 0.0
        mid_slot = (t - 1) % n_body
        for j in range(n_body):
            if j != mid_slot:
                bsum += state[body_off + j]
        mid_body = state[body_off + mid_slot]
        if mid_body > p[_P_BODY_MULT] * (bsum / body_lookback):
            h2 = state[_S_H2]
            l2 = state[_S_L2]
            direction = 0.0
            bottom = 0.0
            top = 0.0
            # For consistent bars (low <= high) the two cases exclude each other; for inconsistent
            # input the bullish test wins, so a bar never opens more than one gap.
            if l > h2:
                direction = 1.0
                bottom = h2
                top = l
            elif h < l2:
                direction = -1.0
                bottom = h
                top = l2
            # The capacity check cannot fail (at most one gap per bar, each alive < expiry bars, table
            # holds 2 * expiry) but numba does not bounds-check, so keep the write provably in range.
            if direction != 0.0 and n_active < 2 * expiry:
                w = tab_off + n_active * _GAP_FIELDS
                state[w + _G_DIR] = direction
                state[w + _G_BOTTOM] = bottom
                state[w + _G_TOP] = top
                state[w + _G_FORM] = t_f
                # "Extreme since formation" starts at the near edge: nothing filled yet.
                state[w + _G_EXTREME] = top if direction > 0.0 else bottom
                state[w + _G_TOUCH] = -1.0
                n_active += 1

    # 3) Push this bar into the histories.
    state[body_off + t % n_body] = abs(c - o)
    state[vol_off + t % vol_window] = v
    state[_S_H2] = state[_S_H1]
    state[_S_L2] = state[_S_L1]
    state[_S_H1] = h
    state[_S_L1] = l
    state[_S_N] = t_f + 1.0
    state[_S_N_ACTIVE] = float(n_active)

    # 4) Outputs.
    if t < warm:
        for j in range(k_out):
            out[j] = math.nan
        return

    n_bull = 0
    n_bear = 0
    best = -1
    best_dist = math.inf
    best_level = 0.0
    for i in range(n_active):
        r = tab_off + i * _GAP_FIELDS
        if state[r + _G_DIR] > 0.0:
            n_bull += 1
        else:
            n_bear += 1
        # "<=" lets later (more recent) gaps win ties; rows are in formation order.
        d_bot = abs(state[r + _G_BOTTOM] - c)
        if d_bot <= best_dist:
            best_dist = d_bot
            best = i
            best_level = state[r + _G_BOTTOM]
        d_top = abs(state[r + _G_TOP] - c)
        if d_top <= best_dist:
            best_dist = d_top
            best = i
            best_level = state[r + _G_TOP]

    out[0] = float(n_bull)
    out[1] = float(n_bear)
    last_mit = state[_S_LAST_MIT]
    if last_mit >= 0.0 and t_f - last_mit < p[_P_SIGNAL_WINDOW]:
        out[4] = 1.0
        out[7] = state[_S_LAST_STRENGTH]
    else:
        out[4] = 0.0
        out[7] = 0.0
    if best < 0:
        out[2] = 0.0
        out[3] = 0.0
        out[5] = 0.0
        out[6] = 0.0
        out[8] = 0.0
        return
    r = tab_off + best * _GAP_FIELDS
    bottom = state[r + _G_BOTTOM]
    top = state[r + _G_TOP]
    size = top - bottom
    if state[r + _G_DIR] > 0.0:
        filled = (top - state[r + _G_EXTREME]) / size
    else:
        filled = (state[r + _G_EXTREME] - bottom) / size
    ac = abs(c)
    out[3] = t_f - state[r + _G_FORM]
    out[5] = _finite_or_nan(size)
    out[8] = _clip01(filled)
    if ac > 0.0:
        out[2] = _finite_or_nan((best_level - c) / ac)
        out[6] = _finite_or_nan(size / ac)
    else:
        out[2] = math.nan
        out[6] = math.nan


@njit(cache=True)
def _batch_loop(
    state: np.ndarray,
    p: np.ndarray,
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    out: np.ndarray,
) -> None:
    """Run :func:`step` over every row; the only batch code path, so batch == streaming."""
    for i in range(ts.shape[0]):
        step(state, p, ts[i], o[i], h[i], l[i], c[i], v[i], out[i])


def _as_f64(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float64)


def batch(
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    params: FvgParams | None = None,
) -> np.ndarray:
    """Features for a whole history, shape ``(n, 9)``, from a fresh state (row ``i`` sees rows ``<= i``)."""
    params = params if params is not None else FvgParams()
    ts_a = np.ascontiguousarray(ts, dtype=np.int64)
    n = ts_a.shape[0]
    arrays = [_as_f64(x) for x in (o, h, l, c, v)]
    for a in arrays:
        if a.shape != (n,):
            raise ValueError("ts, o, h, l, c, v must be 1-D and of equal length")
    out = np.empty((n, N_COLUMNS), dtype=np.float64)
    _batch_loop(init_state(params), params.as_array(), ts_a, *arrays, out)
    return out


class FvgStream:
    """Bar-by-bar wrapper around :func:`step` for live use and tests.

    Holds its own state, so two streams never interfere; ``update`` returns a fresh array the
    caller may keep.
    """

    def __init__(self, params: FvgParams | None = None) -> None:
        self.params = params if params is not None else FvgParams()
        self._p = self.params.as_array()
        self.state = init_state(self.params)

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the values returned by :meth:`update`."""
        return _COLUMNS

    def update(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:
        """Consume one closed bar and return its nine features."""
        out = np.empty(N_COLUMNS, dtype=np.float64)
        step(self.state, self._p, int(ts), float(o), float(h), float(l), float(c), float(v), out)
        return out
