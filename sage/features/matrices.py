"""Matrix assemblers: the tactical (60 x 7) and strategic (48 x 13) model inputs.

A matrix is the last ``window`` *normalised rows*, oldest first. A row is a
causal function of the bar's full feature row (``pipeline.full_step``), the bar
itself and, for the strategic row, a small trailing state (z-score and VWAP
rings). Every column is bounded -- tanh, a ratio mapped to [-1, 1], or a
clipped trailing z-score -- so models see comparable scales across instruments
and time without any statistics fitted on future data. Exact definitions and
warm-up lengths: ``docs/features.md``.

Why rows and windows are separate: storing ``(n, 60, 7)`` for a million bars is
3.4 GB of copies of the same numbers. Batch code computes ``(n, k)`` rows once
and :func:`windows` views them as ``(n - L + 1, L, k)`` without copying.
:class:`MatrixStream` keeps a ring of the last ``L`` rows and returns the
window after each bar; it runs the feature pipeline, the row kernel and the
ring update in one numba call, and its window at bar ``t`` equals
``window_at(rows, t, L)`` bitwise.

Rows are all-NaN while any input is warming up and for a bad bar (which the
ring still records, so stream and batch windows stay aligned).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar
from numba import njit

from sage.features import bars as _bars
from sage.features import basic, fvg, mmd, pipeline, relative
from sage.features._numba_cache import guard_numba_cache
from sage.features.bars import bar_values, to_arrays
from sage.features.basic import ring_dev_std
from sage.features.pipeline import build_plan, full_step
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema

TACTICAL_COLUMNS: tuple[str, ...] = (
    "t_fvg_bull",
    "t_fvg_bear",
    "t_fvg_level",
    "t_fvg_age_decay",
    "t_fvg_mitigation",
    "t_mom5",
    "t_vol_ratio",
)
"""Tactical row: FVG state, 5-bar momentum, volume ratio (the issue's 7 columns)."""

STRATEGIC_COLUMNS: tuple[str, ...] = (
    "s_macd_atr",
    "s_trend_t20",
    "s_autocorr",
    "s_rsi",
    "s_bb_pos",
    "s_vol_regime",
    "s_range_expansion",
    "s_mmd_short",
    "s_mmd_long",
    "s_vol_ratio",
    "s_vwap_dev",
    "s_tod_sin",
    "s_tod_cos",
)
"""Strategic row: trend (3), momentum (2), volatility (2), MMD (2), volume profile (2), time of day (2)."""

KIND_TACTICAL = 0
KIND_STRATEGIC = 1
_DAY_NS = 86_400_000_000_000
_VOL_FLOOR = 1e-12  # per-bar vol below this is treated as this before taking logs (flat market)

# Matrix parameter vector layout (floats; indices into the full feature row are stored as floats too).
(
    M_KIND,
    M_WINDOW,
    M_SCALE_A,  # tactical: count_scale   | strategic: trend_scale
    M_SCALE_B,  # tactical: level_scale   | strategic: z_clip
    M_SCALE_C,  # tactical: age_tau       | strategic: vwap_scale
    M_SCALE_D,  # tactical: mom_scale     | strategic: mmd_scale
    M_MOM_N,  # tactical: mom_fast bars  | strategic: mom_slow bars
    M_ZWIN,  # strategic: vol_z_window
    M_VWIN,  # strategic: vwap_window
    M_I_ATR,
    M_I_EWMA_VOL,
    M_I_VOL_RATIO,
    M_I_MOM,  # mom_fast (tactical) / mom_slow (strategic)
    M_I_BULL,
    M_I_BEAR,
    M_I_LEVEL,
    M_I_AGE,
    M_I_MIT,
    M_I_MACD,
    M_I_AUTOCORR,
    M_I_RSI,
    M_I_PCTB,
    M_I_TR,
    M_I_MMD_SHORT,
    M_I_MMD_LONG,
) = range(25)
_M_SIZE = 25

# Strategic state: [valid bars, log-vol values pushed], then rings: log vol (ZWIN), volume (VWIN), price*volume (VWIN).
MS_N, MS_NZ = range(2)
_MS_FIXED = 2


def _matrix_params(kind: int, schema: FeatureSchema) -> tuple[np.ndarray, np.ndarray]:
    """(parameter vector, fresh state) of one matrix kind for ``schema``."""
    names = schema.all_names()
    idx = names.index
    mmd_cols = schema.family_columns("mmd")
    p = np.full(_M_SIZE, np.nan, dtype=np.float64)
    p[M_KIND] = kind
    p[M_I_ATR] = idx("atr")
    p[M_I_EWMA_VOL] = idx("ewma_vol")
    p[M_I_VOL_RATIO] = idx("vol_ratio")
    p[M_I_BULL] = idx("fvg_bullish_active")
    p[M_I_BEAR] = idx("fvg_bearish_active")
    p[M_I_LEVEL] = idx("fvg_nearest_level")
    p[M_I_AGE] = idx("fvg_age")
    p[M_I_MIT] = idx("fvg_mitigation_signal")
    p[M_I_MACD] = idx("macd")
    p[M_I_AUTOCORR] = idx("ret_autocorr")
    p[M_I_RSI] = idx("rsi")
    p[M_I_PCTB] = idx("bb_pctb")
    p[M_I_TR] = idx("tr")
    p[M_I_MMD_SHORT] = idx(mmd_cols[0])
    p[M_I_MMD_LONG] = idx(mmd_cols[-1])
    if kind == KIND_TACTICAL:
        tp = schema.tactical
        p[M_WINDOW] = tp.window
        p[M_SCALE_A], p[M_SCALE_B], p[M_SCALE_C], p[M_SCALE_D] = (
            tp.count_scale,
            tp.level_scale,
            tp.age_tau,
            tp.mom_scale,
        )
        p[M_MOM_N] = schema.basic.mom_fast
        p[M_I_MOM] = idx("mom_fast")
        p[M_ZWIN] = 0
        p[M_VWIN] = 0
        state = np.zeros(_MS_FIXED, dtype=np.float64)
    else:
        sp = schema.strategic
        p[M_WINDOW] = sp.window
        p[M_SCALE_A], p[M_SCALE_B], p[M_SCALE_C], p[M_SCALE_D] = (
            sp.trend_scale,
            sp.z_clip,
            sp.vwap_scale,
            sp.mmd_scale,
        )
        p[M_MOM_N] = schema.basic.mom_slow
        p[M_I_MOM] = idx("mom_slow")
        p[M_ZWIN] = sp.vol_z_window
        p[M_VWIN] = sp.vwap_window
        state = np.zeros(_MS_FIXED + sp.vol_z_window + 2 * sp.vwap_window, dtype=np.float64)
    return p, state


@njit(cache=True)
def _ratio_tanh(num: float, den: float, scale: float) -> float:
    """tanh(num / den / scale) with a zero denominator saturating to sign(num) (0 if num == 0)."""
    if den > 0.0:
        return math.tanh(num / den / scale)
    if num > 0.0:
        return 1.0
    if num < 0.0:
        return -1.0
    return 0.0


@njit(cache=True)
def _unit_ratio(a: float, b: float) -> float:
    """(a - b) / (a + b) for a, b >= 0: 0 when equal, -1 when a == 0, -> 1 as a >> b; 0 if both are 0."""
    s = a + b
    if s > 0.0:
        return (a - b) / s
    return 0.0


@njit(cache=True)
def tactical_row(mp: np.ndarray, row: np.ndarray, c: float, out: np.ndarray) -> None:
    """Normalised tactical row from the full feature row (stateless)."""
    bull = row[int(mp[M_I_BULL])]
    bear = row[int(mp[M_I_BEAR])]
    level = row[int(mp[M_I_LEVEL])]
    age = row[int(mp[M_I_AGE])]
    mit = row[int(mp[M_I_MIT])]
    mom = row[int(mp[M_I_MOM])]
    vr = row[int(mp[M_I_VOL_RATIO])]
    vol = row[int(mp[M_I_EWMA_VOL])]
    atr = row[int(mp[M_I_ATR])]
    total = bull + bear + level + age + mit + mom + vr + vol + atr
    if math.isnan(total):  # some input still warming up (NaN propagates through the sum)
        out[:] = np.nan
        return
    active = bull + bear > 0.0
    out[0] = math.tanh(bull / mp[M_SCALE_A])
    out[1] = math.tanh(bear / mp[M_SCALE_A])
    # nearest_level is (level - c) / c and atr / c is the relative ATR: their ratio is the distance in ATRs.
    out[2] = _ratio_tanh(level, atr / c, mp[M_SCALE_B]) if active else 0.0
    out[3] = math.exp(-age / mp[M_SCALE_C]) if active else 0.0
    out[4] = mit
    out[5] = _ratio_tanh(mom, vol * math.sqrt(mp[M_MOM_N]), mp[M_SCALE_D])
    out[6] = _unit_ratio(vr, 1.0)


@njit(cache=True)
def strategic_step(
    state: np.ndarray,
    mp: np.ndarray,
    row: np.ndarray,
    ts: int,
    h: float,
    l: float,
    c: float,
    v: float,
    out: np.ndarray,
) -> None:
    """Advance the strategic row state with one *valid* bar and write its normalised row."""
    zwin = int(mp[M_ZWIN])
    vwin = int(mp[M_VWIN])
    n = int(state[MS_N])
    nz = int(state[MS_NZ])
    zring = state[_MS_FIXED : _MS_FIXED + zwin]
    vring = state[_MS_FIXED + zwin : _MS_FIXED + zwin + vwin]
    pvring = state[_MS_FIXED + zwin + vwin : _MS_FIXED + zwin + 2 * vwin]

    atr = row[int(mp[M_I_ATR])]
    vol = row[int(mp[M_I_EWMA_VOL])]
    trend_scale = mp[M_SCALE_A]

    # Volatility regime: trailing z-score of log EWMA vol (pushed only once EWMA vol exists).
    vol_regime = np.nan
    if not math.isnan(vol):
        lv = math.log(max(vol, _VOL_FLOOR))
        zring[nz % zwin] = lv
        nz += 1
        if nz >= zwin:
            dev, sd = ring_dev_std(zring, nz, zwin, lv)
            z = -dev / sd if sd > 0.0 else 0.0
            zc = mp[M_SCALE_B]
            vol_regime = min(zc, max(-zc, z)) / zc

    # Volume profile: close relative to the rolling VWAP of the typical price, in ATRs.
    vring[n % vwin] = v
    pvring[n % vwin] = v * (h + l + c) / 3.0
    n += 1
    vwap_dev = np.nan
    if n >= vwin and not math.isnan(atr):
        sv = 0.0
        spv = 0.0
        for j in range(vwin):
            sv += vring[j]
            spv += pvring[j]
        vwap_dev = _ratio_tanh(c - spv / sv, atr, mp[M_SCALE_C]) if sv > 0.0 else 0.0
    state[MS_N] = n
    state[MS_NZ] = nz

    macd = row[int(mp[M_I_MACD])]
    mom = row[int(mp[M_I_MOM])]
    tr = row[int(mp[M_I_TR])]
    out[0] = _ratio_tanh(macd, atr, trend_scale)
    out[1] = _ratio_tanh(mom, vol * math.sqrt(mp[M_MOM_N]), trend_scale)
    out[2] = row[int(mp[M_I_AUTOCORR])]
    out[3] = (row[int(mp[M_I_RSI])] - 50.0) / 50.0
    out[4] = math.tanh(2.0 * row[int(mp[M_I_PCTB])] - 1.0)
    out[5] = vol_regime
    out[6] = _unit_ratio(tr, atr)
    out[7] = math.tanh(math.sqrt(row[int(mp[M_I_MMD_SHORT])]) / mp[M_SCALE_D])
    out[8] = math.tanh(math.sqrt(row[int(mp[M_I_MMD_LONG])]) / mp[M_SCALE_D])
    out[9] = _unit_ratio(row[int(mp[M_I_VOL_RATIO])], 1.0)
    out[10] = vwap_dev
    angle = 2.0 * math.pi * ((ts % _DAY_NS) / _DAY_NS)
    out[11] = math.sin(angle)
    out[12] = math.cos(angle)
    # NaN inputs (warm-up) propagate through every formula above except where a guard maps them to a
    # number, so decide on the raw inputs: the row exists only when all of them exist.
    raw = macd + atr + vol + mom + tr + row[int(mp[M_I_AUTOCORR])] + row[int(mp[M_I_RSI])]
    raw += row[int(mp[M_I_PCTB])] + row[int(mp[M_I_MMD_SHORT])] + row[int(mp[M_I_MMD_LONG])]
    raw += row[int(mp[M_I_VOL_RATIO])] + vol_regime + vwap_dev
    if math.isnan(raw):
        out[:] = np.nan


@njit(cache=True)
def _row_step(state, params, lay, mstate, mp, ts, o, h, l, c, v, row, out):
    """Full feature row, then the matrix row for one bar (all-NaN on a bad bar, state untouched)."""
    if not full_step(state, params, lay, ts, o, h, l, c, v, row):
        out[:] = np.nan
        return
    if int(mp[M_KIND]) == KIND_TACTICAL:
        tactical_row(mp, row, c, out)
    else:
        strategic_step(mstate, mp, row, ts, h, l, c, v, out)


@njit(cache=True)
def _rows_batch(state, params, lay, mstate, mp, k, ts, o, h, l, c, v):
    n = ts.shape[0]
    row = np.empty(lay[pipeline.L_C + pipeline.N_FAMILIES], dtype=np.float64)
    out = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        _row_step(state, params, lay, mstate, mp, ts[i], o[i], h[i], l[i], c[i], v[i], row, out[i])
    return out


@njit(cache=True)
def _stream_update(state, params, lay, mstate, mp, ring, pushed, ts, o, h, l, c, v, row):
    """One bar: row into ring slot ``pushed % L``; return the chronological (L, k) window (NaN-padded)."""
    cap = ring.shape[0]
    _row_step(state, params, lay, mstate, mp, ts, o, h, l, c, v, row, ring[pushed % cap])
    total = pushed + 1
    out = np.empty_like(ring)
    for r in range(cap):
        src = total - cap + r
        if src < 0:
            out[r, :] = np.nan
        else:
            out[r, :] = ring[src % cap]
    return out


Kind = Literal["tactical", "strategic"]


def _kind_code(kind: str) -> int:
    if kind == "tactical":
        return KIND_TACTICAL
    if kind == "strategic":
        return KIND_STRATEGIC
    raise ValueError(f"matrix kind must be 'tactical' or 'strategic', got {kind!r}")


def matrix_columns(kind: Kind) -> tuple[str, ...]:
    """Column names of one matrix kind."""
    return TACTICAL_COLUMNS if _kind_code(kind) == KIND_TACTICAL else STRATEGIC_COLUMNS


def _schema(schema: FeatureSchema | None) -> FeatureSchema:
    return DEFAULT_SCHEMA if schema is None else schema


_TACTICAL_INPUTS = (
    "fvg_bullish_active",
    "fvg_bearish_active",
    "fvg_nearest_level",
    "fvg_age",
    "fvg_mitigation_signal",
    "mom_fast",
    "vol_ratio",
    "ewma_vol",
    "atr",
)
_STRATEGIC_INPUTS = (
    "macd",
    "atr",
    "ewma_vol",
    "mom_slow",
    "tr",
    "ret_autocorr",
    "rsi",
    "bb_pctb",
    "vol_ratio",
)


def matrix_warmup(kind: Kind, schema: FeatureSchema | None = None) -> int:
    """Leading valid bars whose rows are NaN: the slowest input, plus (strategic) the z-score and VWAP rings.

    A full matrix without NaN first exists ``window - 1`` bars later.
    """
    schema = _schema(schema)
    warm = pipeline.warmup_bars(msgspec.structs.replace(schema, columns=None))
    if _kind_code(kind) == KIND_TACTICAL:
        return max(warm[name] for name in _TACTICAL_INPUTS)
    mmd_cols = schema.family_columns("mmd")
    inputs = (*_STRATEGIC_INPUTS, mmd_cols[0], mmd_cols[-1])
    vol_regime = warm["ewma_vol"] + schema.strategic.vol_z_window - 1
    vwap = max(schema.strategic.vwap_window - 1, warm["atr"])
    return max(max(warm[name] for name in inputs), vol_regime, vwap)


def matrix_rows(
    bars: pd.DataFrame | Sequence[Bar], kind: Kind, schema: FeatureSchema | None = None
) -> pd.DataFrame:
    """Normalised per-bar rows ``(n, k)`` of one matrix kind, indexed like the input."""
    schema = _schema(schema)
    code = _kind_code(kind)
    ts, o, h, l, c, v = to_arrays(bars)
    plan = build_plan(schema, all_families=True)
    mp, mstate = _matrix_params(code, schema)
    cols = matrix_columns(kind)
    values = _rows_batch(plan.state0.copy(), plan.params, plan.lay, mstate, mp, len(cols), ts, o, h, l, c, v)
    return pd.DataFrame(values, index=pipeline.bars_index(bars, ts), columns=list(cols), copy=False)


def tactical_rows(bars: pd.DataFrame | Sequence[Bar], schema: FeatureSchema | None = None) -> pd.DataFrame:
    """Per-bar tactical rows ``(n, 7)``; windows of ``schema.tactical.window`` rows form the matrix."""
    return matrix_rows(bars, "tactical", schema)


def strategic_rows(bars: pd.DataFrame | Sequence[Bar], schema: FeatureSchema | None = None) -> pd.DataFrame:
    """Per-bar strategic rows ``(n, 13)``; windows of ``schema.strategic.window`` rows form the matrix."""
    return matrix_rows(bars, "strategic", schema)


def windows(rows: np.ndarray | pd.DataFrame, length: int) -> np.ndarray:
    """Read-only view ``(n - length + 1, length, k)``: entry ``i`` is rows ``i .. i + length - 1``.

    No copy (a sliding-window view), so it is safe for millions of bars; copy
    only the batches you feed to a model.
    """
    arr = rows.to_numpy() if isinstance(rows, pd.DataFrame) else np.asarray(rows)
    if arr.ndim != 2:
        raise ValueError(f"rows must be 2-D (n, k), got shape {arr.shape}")
    if not 1 <= length <= arr.shape[0]:
        raise ValueError(f"length must be in [1, {arr.shape[0]}], got {length}")
    view = np.lib.stride_tricks.sliding_window_view(arr, length, axis=0)  # (n - L + 1, k, L)
    return view.transpose(0, 2, 1)


def window_at(rows: np.ndarray | pd.DataFrame, t: int, length: int) -> np.ndarray:
    """The ``(length, k)`` matrix ending at row ``t`` (NaN rows before the start), as ``MatrixStream`` returns it."""
    arr = rows.to_numpy() if isinstance(rows, pd.DataFrame) else np.asarray(rows)
    out = np.full((length, arr.shape[1]), np.nan, dtype=np.float64)
    lo = max(0, t - length + 1)
    out[length - (t + 1 - lo) :] = arr[lo : t + 1]
    return out


class MatrixStream:
    """Live matrix: ``update(bar)`` returns the ``(window, k)`` matrix ending at that bar.

    One numba call per bar (features, row, ring). Rows before the first bar are
    NaN, as are warm-up rows and bad-bar rows; check ``np.isnan(m).any()`` (or
    :attr:`ready`) before feeding a model.
    """

    def __init__(self, kind: Kind, schema: FeatureSchema | None = None) -> None:
        self.kind: Kind = kind
        self.schema: FeatureSchema = _schema(schema)
        code = _kind_code(kind)
        self._plan = build_plan(self.schema, all_families=True)
        self._mp, self._mstate0 = _matrix_params(code, self.schema)
        self.columns: tuple[str, ...] = matrix_columns(kind)
        self.window: int = int(self._mp[M_WINDOW])
        self._row = np.empty(len(self._plan.full_names), dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        """Forget everything (fresh warm-up, empty window)."""
        self._state = self._plan.state0.copy()
        self._mstate = self._mstate0.copy()
        self._ring = np.full((self.window, len(self.columns)), np.nan, dtype=np.float64)
        self._pushed = 0
        self._last: np.ndarray | None = None

    @property
    def ready(self) -> bool:
        """True once the latest window is complete and contains no NaN."""
        return self._last is not None and not bool(np.isnan(self._last).any())

    def update(self, bar: Bar | Mapping[str, Any]) -> np.ndarray:
        """Consume one bar (Nautilus ``Bar`` or mapping); return the ``(window, k)`` matrix ending at it."""
        ts, o, h, l, c, v = bar_values(bar)
        plan = self._plan
        out = _stream_update(
            self._state,
            plan.params,
            plan.lay,
            self._mstate,
            self._mp,
            self._ring,
            self._pushed,
            ts,
            o,
            h,
            l,
            c,
            v,
            self._row,
        )
        self._pushed += 1
        self._last = out
        return out


guard_numba_cache(globals(), [_bars, basic, relative, fvg, mmd, pipeline])
