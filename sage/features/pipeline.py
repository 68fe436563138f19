"""The public feature pipeline: ``compute`` (batch) and ``FeatureStream`` (one bar at a time).

Why one combined kernel: :func:`full_step` calls every family's ``step`` in a
fixed order on slices of one state vector, one parameter vector and one output
row. The batch loop and the streaming update both call exactly this function,
so they agree bitwise, and a streaming update is a single Python -> numba call
(the per-call dispatch cost, not arithmetic, dominates live latency).

Layout: the per-family parameter vectors, initial states and output columns are
concatenated in ``schema.FAMILIES`` order; their boundaries live in the int64
``lay`` vector (see ``L_*``). A schema that selects a subset of columns only
runs the families it needs; the selected columns are gathered by index.

Bad bars (:func:`sage.features.bars.is_valid_bar` is False) give an all-NaN
row and leave every family's state untouched, uniformly across families.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar
from numba import njit

from sage.features import bars as _bars
from sage.features import basic, fvg, mmd, relative
from sage.features._numba_cache import guard_numba_cache
from sage.features.bars import bar_values, is_valid_bar, to_arrays
from sage.features.schema import DEFAULT_SCHEMA, FAMILIES, FeatureSchema

N_FAMILIES = len(FAMILIES)
# ``lay`` layout: parameter offsets, state offsets, column offsets (N_FAMILIES + 1 each), enabled flags.
L_P = 0
L_S = N_FAMILIES + 1
L_C = 2 * (N_FAMILIES + 1)
L_EN = 3 * (N_FAMILIES + 1)
L_SIZE = L_EN + N_FAMILIES


class Plan(NamedTuple):
    """Everything the combined kernel needs for one schema (built once, cached)."""

    schema: FeatureSchema
    params: np.ndarray
    """Concatenated family parameter vectors (float64)."""
    state0: np.ndarray
    """Concatenated fresh family states; copy before use."""
    lay: np.ndarray
    """int64 offsets/flags, see ``L_*``."""
    sel: np.ndarray
    """int64 indices of the schema's columns within the full row."""
    full_names: tuple[str, ...]
    """Names of the full row (all families, canonical order)."""


@functools.lru_cache(maxsize=32)
def build_plan(schema: FeatureSchema, all_families: bool = False) -> Plan:
    """Concatenate the families' params/states and resolve the schema's column indices.

    ``all_families`` forces every family on (the matrix assemblers read columns
    the schema may not select).
    """
    full_names = schema.all_names()
    names = schema.names
    sel = np.array([full_names.index(n) for n in names], dtype=np.int64)
    lay = np.zeros(L_SIZE, dtype=np.int64)
    params, states = [], []
    p_off = s_off = c_off = 0
    for f, (family, module, _) in enumerate(FAMILIES):
        fam_params = schema.family_params(family)
        p = np.asarray(fam_params.as_array(), dtype=np.float64)
        s = np.asarray(module.init_state(fam_params), dtype=np.float64)
        cols = schema.family_columns(family)
        lay[L_P + f], lay[L_S + f], lay[L_C + f] = p_off, s_off, c_off
        p_off, s_off, c_off = p_off + p.size, s_off + s.size, c_off + len(cols)
        lay[L_EN + f] = int(all_families or any(n in names for n in cols))
        params.append(p)
        states.append(s)
    lay[L_P + N_FAMILIES], lay[L_S + N_FAMILIES], lay[L_C + N_FAMILIES] = p_off, s_off, c_off
    # Left writable on purpose: a read-only array is a different numba type, and every family kernel
    # would be compiled a second time for it. Plans are internal; nothing writes to them.
    return Plan(schema, np.concatenate(params), np.concatenate(states), lay, sel, full_names)


# IR-inlined: called with constant slot indices, which numba would otherwise compile once per literal.
@njit(cache=True, inline="always")
def _family(state, params, lay, f):
    """(state, params) slices of family ``f``."""
    return (
        state[lay[L_S + f] : lay[L_S + f + 1]],
        params[lay[L_P + f] : lay[L_P + f + 1]],
    )


@njit(cache=True)
def full_step(state, params, lay, ts, o, h, l, c, v, row) -> bool:
    """Run every enabled family on one bar, writing the full row; False (row all NaN) on a bad bar."""
    if not is_valid_bar(o, h, l, c, v):
        row[:] = np.nan
        return False
    # Families in schema.FAMILIES order (kept in sync by test_pipeline).
    if lay[L_EN + 0]:
        s, p = _family(state, params, lay, 0)
        basic.step(s, p, ts, o, h, l, c, v, row[lay[L_C + 0] : lay[L_C + 1]])
    else:
        row[lay[L_C + 0] : lay[L_C + 1]] = np.nan
    if lay[L_EN + 1]:
        s, p = _family(state, params, lay, 1)
        relative.step(s, p, ts, o, h, l, c, v, row[lay[L_C + 1] : lay[L_C + 2]])
    else:
        row[lay[L_C + 1] : lay[L_C + 2]] = np.nan
    if lay[L_EN + 2]:
        s, p = _family(state, params, lay, 2)
        fvg.step(s, p, ts, o, h, l, c, v, row[lay[L_C + 2] : lay[L_C + 3]])
    else:
        row[lay[L_C + 2] : lay[L_C + 3]] = np.nan
    if lay[L_EN + 3]:
        s, p = _family(state, params, lay, 3)
        mmd.step(s, p, ts, o, h, l, c, v, row[lay[L_C + 3] : lay[L_C + 4]])
    else:
        row[lay[L_C + 3] : lay[L_C + 4]] = np.nan
    # Library-wide guarantee: outputs are finite or NaN. Only absurd inputs (prices spanning hundreds
    # of orders of magnitude) could overflow a ratio; report those as NaN rather than inf.
    for j in range(row.shape[0]):
        if abs(row[j]) == np.inf:
            row[j] = np.nan
    return True


@njit(cache=True)
def _run_batch(state, params, lay, sel, ts, o, h, l, c, v):
    n = ts.shape[0]
    k = sel.shape[0]
    row = np.empty(lay[L_C + N_FAMILIES], dtype=np.float64)
    out = np.empty((n, k), dtype=np.float64)
    for i in range(n):
        full_step(state, params, lay, ts[i], o[i], h[i], l[i], c[i], v[i], row)
        for j in range(k):
            out[i, j] = row[sel[j]]
    return out


@njit(cache=True)
def _stream_update(state, params, lay, sel, row, ts, o, h, l, c, v):
    full_step(state, params, lay, ts, o, h, l, c, v, row)
    k = sel.shape[0]
    out = np.empty(k, dtype=np.float64)
    for j in range(k):
        out[j] = row[sel[j]]
    return out


def warmup_bars(schema: FeatureSchema | None = None) -> dict[str, int]:
    """Per output column, how many leading valid bars are NaN (warm-up); NaN-free afterwards on valid bars."""
    schema = _resolve(schema)
    lengths: dict[str, int] = {}
    for family, module, _ in FAMILIES:
        params = schema.family_params(family)
        cols = schema.family_columns(family)
        if hasattr(module, "warmup"):
            per_col = tuple(module.warmup(params))
        else:  # FVG and MMD warm all their columns up together
            per_col = (int(module.warmup_bars(params)),) * len(cols)
        lengths.update(zip(cols, per_col, strict=True))
    return {name: lengths[name] for name in schema.names}


def _resolve(schema: FeatureSchema | None) -> FeatureSchema:
    if schema is None:
        return DEFAULT_SCHEMA
    if not isinstance(schema, FeatureSchema):
        raise TypeError(f"schema must be a FeatureSchema or None, got {type(schema).__name__}")
    return schema


def run_arrays(
    ts: np.ndarray,
    o: np.ndarray,
    h: np.ndarray,
    l: np.ndarray,
    c: np.ndarray,
    v: np.ndarray,
    schema: FeatureSchema | None = None,
) -> np.ndarray:
    """Batch features from raw arrays, ``(n, len(schema.names))`` float64."""
    plan = build_plan(_resolve(schema))
    ts = np.ascontiguousarray(ts, dtype=np.int64)
    arrays = [np.ascontiguousarray(x, dtype=np.float64) for x in (o, h, l, c, v)]
    if any(a.shape != ts.shape for a in arrays) or ts.ndim != 1:
        raise ValueError("ts, o, h, l, c, v must be 1-D and of equal length")
    return _run_batch(plan.state0.copy(), plan.params, plan.lay, plan.sel, ts, *arrays)


def bars_index(bars: pd.DataFrame | Sequence[Bar], ts: np.ndarray) -> pd.Index:
    """The index of the output frame: the input's own index, or ``ts_event`` as a UTC DatetimeIndex."""
    if isinstance(bars, pd.DataFrame):
        return bars.index
    return pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC")


def compute(bars: pd.DataFrame | Sequence[Bar], schema: FeatureSchema | None = None) -> pd.DataFrame:
    """Features of every bar, indexed like the input, columns ``schema.names`` (default: full schema).

    ``bars``: a DataFrame with ``open, high, low, close, volume`` and a UTC
    DatetimeIndex (strictly increasing), or a list of Nautilus ``Bar``s (indexed
    by ``ts_event``). Row ``t`` depends only on bars ``<= t``; warm-up rows are
    NaN; see ``docs/features.md`` for each column.
    """
    schema = _resolve(schema)
    ts, o, h, l, c, v = to_arrays(bars)
    values = run_arrays(ts, o, h, l, c, v, schema)
    return pd.DataFrame(values, index=bars_index(bars, ts), columns=list(schema.names), copy=False)


class FeatureStream:
    """Streaming features: ``update(bar)`` returns that bar's row, bitwise equal to ``compute``'s row.

    Holds preallocated state; each update is one numba call. Not thread-safe
    (one stream per instrument / actor).
    """

    def __init__(self, schema: FeatureSchema | None = None) -> None:
        self.schema: FeatureSchema = _resolve(schema)
        self._plan = build_plan(self.schema)
        self._row = np.empty(len(self._plan.full_names), dtype=np.float64)
        self._state = self._plan.state0.copy()

    @property
    def names(self) -> tuple[str, ...]:
        """Column names of the returned rows, in order."""
        return self.schema.names

    def reset(self) -> None:
        """Forget all bars seen (fresh warm-up)."""
        self._state[:] = self._plan.state0

    def update(self, bar: Bar | Mapping[str, Any]) -> np.ndarray:
        """Consume one bar (Nautilus ``Bar`` or mapping with ts/open/high/low/close/volume); return its row."""
        ts, o, h, l, c, v = bar_values(bar)
        plan = self._plan
        return _stream_update(self._state, plan.params, plan.lay, plan.sel, self._row, ts, o, h, l, c, v)

    def update_values(self, ts: int, o: float, h: float, l: float, c: float, v: float) -> np.ndarray:
        """Like :meth:`update` for callers that already hold plain numbers (``ts`` in int ns)."""
        plan = self._plan
        return _stream_update(
            self._state,
            plan.params,
            plan.lay,
            plan.sel,
            self._row,
            int(ts),
            float(o),
            float(h),
            float(l),
            float(c),
            float(v),
        )


guard_numba_cache(globals(), [_bars, basic, relative, fvg, mmd])
