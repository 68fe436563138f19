"""Market data prepared once for the MARL environment: 5- and 30-minute bars, matrix rows, alignment.

Why a separate, precomputed object: the environment steps millions of times; everything that does
not depend on the agents' actions (bars, ATR, the per-bar matrix rows, the 5m -> 30m alignment and
which bars have a complete observation) is computed once here, by the same feature library the live
strategy uses (:func:`sage.features.tactical_rows` / :func:`~sage.features.strategic_rows`), so the
kernel only gathers and does arithmetic.

Timestamp convention (Nautilus): a bar is stamped at its **close**. Aggregation of 1-minute bars is
causal by construction: the 5-minute bar stamped ``T`` holds exactly the 1-minute bars with close in
``(T - 5min, T]`` (open = first open, high = max, low = min, close = last close, volume = sum); a
bucket without 1-minute bars produces no bar (no invented prices); a trailing bucket whose close lies
after the last 1-minute bar is dropped, since it is not complete. 30-minute bars are built the same
way, and a 5-minute bar at ``T`` sees the last 30-minute bar with close ``<= T``
(:func:`sage.agents.observation.align_strategic`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from sage.agents.observation import STRATEGIC_SHAPE, TACTICAL_SHAPE, align_strategic
from sage.features import compute, matrix_warmup, strategic_rows, tactical_rows
from sage.features.bars import frame_to_arrays
from sage.features.schema import DEFAULT_SCHEMA, FeatureSchema

_MINUTE_NS = 60_000_000_000
TACTICAL_MINUTES = 5
STRATEGIC_MINUTES = 30


class EnvDataError(ValueError):
    """The bars cannot feed the environment (bad input, or too short for a complete observation)."""


def aggregate_bars(bars: pd.DataFrame, minutes: int) -> pd.DataFrame:
    """Aggregate close-stamped bars to ``minutes``-minute bars stamped at their close (causal).

    Bucket of a bar closing at ``ts``: ``ceil(ts / minutes) * minutes`` (epoch-aligned), i.e. the bar
    stamped ``T`` holds the input bars with close in ``(T - minutes, T]``. Empty buckets are skipped;
    the last bucket is dropped when the input ends before its close (it is still forming).
    Returns float64 ``open, high, low, close, volume`` with a UTC DatetimeIndex named ``ts_event``.
    """
    if minutes <= 0:
        raise EnvDataError(f"minutes must be positive, got {minutes}")
    ts, o, h, lo, c, v = frame_to_arrays(bars)
    if ts.size == 0:
        raise EnvDataError("no bars to aggregate")
    width = minutes * _MINUTE_NS
    bucket = -((-ts) // width) * width  # ceil to the bucket close
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], ts.size]
    out_ts = bucket[starts]
    frame = pd.DataFrame(
        {
            "open": o[starts],
            "high": np.maximum.reduceat(h, starts),
            "low": np.minimum.reduceat(lo, starts),
            "close": c[ends - 1],
            "volume": np.add.reduceat(v, starts),
        },
        index=pd.DatetimeIndex(out_ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC"),
    )
    if ts[-1] < out_ts[-1]:
        frame = frame.iloc[:-1]
    return frame


def _check_bars(bars: pd.DataFrame) -> None:
    """Fail closed on input that would silently corrupt aggregation (features would NaN it instead)."""
    if not isinstance(bars, pd.DataFrame):
        raise EnvDataError(f"bars_1m must be a pandas DataFrame, got {type(bars).__name__}")
    try:
        ts, o, h, lo, c, v = frame_to_arrays(bars)
    except ValueError as exc:
        raise EnvDataError(str(exc)) from None
    if ts.size == 0:
        raise EnvDataError("bars_1m is empty")
    if np.any(ts % _MINUTE_NS != 0):
        first = int(np.flatnonzero(ts % _MINUTE_NS != 0)[0])
        raise EnvDataError(
            f"bars_1m must be 1-minute bars stamped at whole-minute closes; bar {first} "
            f"({bars.index[first]}) is not on the minute grid"
        )
    prices = np.stack([o, h, lo, c])
    bad = ~(np.isfinite(prices).all(axis=0) & (prices > 0).all(axis=0) & np.isfinite(v) & (v >= 0))
    bad |= (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise EnvDataError(
            f"bars_1m has {int(bad.sum())} invalid bar(s) (non-positive/non-finite price, negative volume "
            f"or high/low inconsistent with open/close); first at {bars.index[first]}"
        )


class EnvData:
    """Everything the environment reads, as contiguous arrays (index ``t`` = a 5-minute bar).

    Attributes: ``ts`` (int64 close ns), ``open``/``close``/``atr`` (float64, price units; ATR is the
    feature library's Wilder ATR on 5-minute bars), ``tactical_rows`` (float32 ``(T, 7)``),
    ``strategic_ts`` (int64 ``(S,)``), ``strategic_rows`` (float32 ``(S, 13)``), ``strategic_index``
    (int64 ``(T,)``, -1 before the first 30-minute close), ``valid`` (bool ``(T,)``: the tactical
    window ending at ``t``, the strategic window ending at ``strategic_index[t]`` and the ATR are all
    complete and finite), ``regime`` (int8 ``(T,)`` true regime of the last 1-minute bar, synthetic
    data only, else None). The window ending at ``t`` is ``tactical_rows[t - 59 : t + 1]``.
    """

    def __init__(
        self,
        *,
        ts: np.ndarray,
        open_: np.ndarray,
        close: np.ndarray,
        atr: np.ndarray,
        tactical_rows: np.ndarray,
        strategic_ts: np.ndarray,
        strategic_rows: np.ndarray,
        regime: np.ndarray | None = None,
        source: str = "",
    ) -> None:
        self.ts = np.ascontiguousarray(ts, dtype=np.int64)
        self.open = np.ascontiguousarray(open_, dtype=np.float64)
        self.close = np.ascontiguousarray(close, dtype=np.float64)
        self.atr = np.ascontiguousarray(atr, dtype=np.float64)
        self.tactical_rows = np.ascontiguousarray(tactical_rows, dtype=np.float32)
        self.strategic_ts = np.ascontiguousarray(strategic_ts, dtype=np.int64)
        self.strategic_rows = np.ascontiguousarray(strategic_rows, dtype=np.float32)
        self.regime = None if regime is None else np.ascontiguousarray(regime, dtype=np.int8)
        self.source = source
        n = self.ts.shape[0]
        for name in ("open", "close", "atr"):
            if getattr(self, name).shape != (n,):
                raise EnvDataError(f"{name} must have shape ({n},)")
        if self.tactical_rows.shape != (n, TACTICAL_SHAPE[1]):
            raise EnvDataError(f"tactical_rows must have shape ({n}, {TACTICAL_SHAPE[1]})")
        s = self.strategic_ts.shape[0]
        if self.strategic_rows.shape != (s, STRATEGIC_SHAPE[1]):
            raise EnvDataError(f"strategic_rows must have shape ({s}, {STRATEGIC_SHAPE[1]})")
        self.strategic_index = align_strategic(self.ts, self.strategic_ts)
        self.valid = self._valid_mask()
        if not self.valid.any():
            raise EnvDataError(
                f"no 5-minute bar has a complete observation ({n} 5-minute bars, {s} 30-minute bars). "
                f"An observation needs {TACTICAL_SHAPE[0]} warm tactical rows (>= "
                f"{matrix_warmup('tactical') + TACTICAL_SHAPE[0]} 5-minute bars) and {STRATEGIC_SHAPE[0]} "
                f"warm strategic rows (>= {matrix_warmup('strategic') + STRATEGIC_SHAPE[0]} 30-minute bars, "
                f"about {(matrix_warmup('strategic') + STRATEGIC_SHAPE[0]) * 30 // 1440 + 1} days of "
                "24h 1-minute data); use a longer history"
            )

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_bars(cls, bars_1m: pd.DataFrame, schema: FeatureSchema | None = None) -> EnvData:
        """Build from 1-minute OHLCV bars (UTC DatetimeIndex of bar closes; a ``regime`` column is kept).

        Aggregates to 5- and 30-minute bars (:func:`aggregate_bars`), computes tactical rows and ATR on
        the 5-minute bars and strategic rows on the 30-minute bars with ``schema`` (default
        ``DEFAULT_SCHEMA``), and aligns them causally. Raises :class:`EnvDataError` on bad input.
        """
        schema = DEFAULT_SCHEMA if schema is None else schema
        if schema.tactical.window != TACTICAL_SHAPE[0] or schema.strategic.window != STRATEGIC_SHAPE[0]:
            raise EnvDataError(
                f"schema windows ({schema.tactical.window}, {schema.strategic.window}) differ from the agents' "
                f"observation shapes ({TACTICAL_SHAPE[0]}, {STRATEGIC_SHAPE[0]})"
            )
        _check_bars(bars_1m)
        bars5 = aggregate_bars(bars_1m, TACTICAL_MINUTES)
        bars30 = aggregate_bars(bars_1m, STRATEGIC_MINUTES)
        if len(bars5) == 0 or len(bars30) == 0:
            raise EnvDataError("bars_1m is too short to form a complete 5- and 30-minute bar")
        tac = tactical_rows(bars5, schema).to_numpy()
        strat = strategic_rows(bars30, schema).to_numpy()
        # Only the ATR column: the basic family alone runs (same parameters as the matrices use).
        atr = compute(bars5, msgspec.structs.replace(schema, columns=("atr",)))["atr"].to_numpy()
        regime = None
        if "regime" in bars_1m.columns:
            # The 5-minute bar's regime is that of its last 1-minute bar (a label for evaluation only).
            ts1 = bars_1m.index.as_unit("ns").asi8
            last = np.searchsorted(ts1, bars5.index.as_unit("ns").asi8, side="right") - 1
            regime = bars_1m["regime"].to_numpy()[last]
        return cls(
            ts=bars5.index.as_unit("ns").asi8,
            open_=bars5["open"].to_numpy(),
            close=bars5["close"].to_numpy(),
            atr=atr,
            tactical_rows=tac,
            strategic_ts=bars30.index.as_unit("ns").asi8,
            strategic_rows=strat,
            regime=regime,
            source="bars",
        )

    @classmethod
    def from_catalog(
        cls, catalog: str | os.PathLike[str], bar_type: str, schema: FeatureSchema | None = None
    ) -> EnvData:
        """Build from the 1-minute bars of ``bar_type`` in a ``ParquetDataCatalog`` at ``catalog``.

        A synthetic catalog's regime truth (``sage catalog synthetic``) is attached as ``regime``.
        """
        from nautilus_trader.persistence.catalog import ParquetDataCatalog

        from sage.features.bars import bar_list_to_arrays

        path = Path(catalog)
        if not path.exists():
            raise EnvDataError(f"catalog {path} does not exist")
        bar_list = ParquetDataCatalog(str(path)).bars(bar_types=[str(bar_type)])
        if not bar_list:
            raise EnvDataError(f"catalog {path} has no bars of type {bar_type}")
        ts, o, h, lo, c, v = bar_list_to_arrays(bar_list)
        index = pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC")
        bars = pd.DataFrame({"open": o, "high": h, "low": lo, "close": c, "volume": v}, index=index)
        from sage.data.synthetic import truth_path

        if truth_path(path, bar_type).exists():  # a synthetic catalog: keep its regime labels
            from sage.data.synthetic import read_truth

            truth = read_truth(path, bar_type).reindex(index)
            if truth.notna().all():
                bars["regime"] = truth.to_numpy()
        data = cls.from_bars(bars, schema)
        data.source = f"catalog:{path.name}:{bar_type}"
        return data

    @classmethod
    def from_synthetic(cls, config: Any = None, schema: FeatureSchema | None = None) -> EnvData:
        """Build from the seeded synthetic market (``SyntheticMarketConfig``; default 60,000 1-minute bars)."""
        from sage.data.synthetic import SyntheticMarketConfig, generate_bars

        if config is None:
            config = SyntheticMarketConfig(n_bars=60_000)
        if int(config.bar_interval_ns) != _MINUTE_NS:
            raise EnvDataError(
                f"synthetic market must use 1-minute bars, got bar_interval_ns={config.bar_interval_ns}"
            )
        data = cls.from_bars(generate_bars(config), schema)
        data.source = f"synthetic:seed={config.seed}:n={config.n_bars}"
        return data

    # -- views ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def tactical_window(self, t: int) -> np.ndarray:
        """The (60, 7) tactical matrix observed at 5-minute bar ``t`` (a view; valid only if ``valid[t]``)."""
        lo = t - TACTICAL_SHAPE[0] + 1
        if lo < 0:
            raise IndexError(f"bar {t} has fewer than {TACTICAL_SHAPE[0]} tactical rows before it")
        return self.tactical_rows[lo : t + 1]

    def strategic_window(self, t: int) -> np.ndarray:
        """The (48, 13) strategic matrix observed at 5-minute bar ``t`` (ends at ``strategic_index[t]``)."""
        s = int(self.strategic_index[t])
        lo = s - STRATEGIC_SHAPE[0] + 1
        if lo < 0:
            raise IndexError(f"bar {t} has fewer than {STRATEGIC_SHAPE[0]} closed 30-minute rows before it")
        return self.strategic_rows[lo : s + 1]

    def episode_starts(self, episode_len: int) -> np.ndarray:
        """Bars ``s`` where an episode of ``episode_len`` steps fits: ``valid[s .. s + episode_len]`` all True."""
        if episode_len < 1:
            raise EnvDataError(f"episode_len must be >= 1, got {episode_len}")
        n = len(self)
        # run[t] = number of consecutive valid bars starting at t = (next invalid bar at or after t) - t.
        invalid = np.r_[np.flatnonzero(~self.valid), n]
        run = invalid[np.searchsorted(invalid, np.arange(n))] - np.arange(n)
        starts = np.flatnonzero(run >= episode_len + 1).astype(np.int64)
        if starts.size == 0:
            raise EnvDataError(
                f"no stretch of {episode_len + 1} consecutive 5-minute bars with complete observations "
                f"(longest: {int(run.max(initial=0))}); shorten episode_len or use more data"
            )
        return starts

    def _valid_mask(self) -> np.ndarray:
        n = len(self)
        lt, ls = TACTICAL_SHAPE[0], STRATEGIC_SHAPE[0]
        tac_ok = np.isfinite(self.tactical_rows).all(axis=1)
        strat_ok = np.isfinite(self.strategic_rows).all(axis=1)
        # Window completeness by prefix sums of bad rows.
        tac_bad = np.r_[0, np.cumsum(~tac_ok)]
        strat_bad = np.r_[0, np.cumsum(~strat_ok)]
        t = np.arange(n)
        tac_win = (t >= lt - 1) & (tac_bad[t + 1] - tac_bad[np.maximum(t + 1 - lt, 0)] == 0)
        s = self.strategic_index
        s_ok = s >= ls - 1
        s_clip = np.where(s_ok, s, ls - 1)
        strat_win = s_ok & (strat_bad[s_clip + 1] - strat_bad[s_clip + 1 - ls] == 0)
        atr_ok = np.isfinite(self.atr) & (self.atr > 0) & np.isfinite(self.close) & (self.close > 0)
        return tac_win & strat_win & atr_ok

    def describe(self) -> str:
        """One line: source, bar counts, valid share."""
        return (
            f"EnvData({self.source or 'arrays'}: {len(self)} 5m bars, {self.strategic_ts.shape[0]} 30m bars, "
            f"{int(self.valid.sum())} with a complete observation)"
        )

    def __repr__(self) -> str:
        return self.describe()
