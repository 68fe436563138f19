"""Intraday volume profile: the fraction of a day's volume traded in each time-of-day bucket.

Why a profile at all: VWAP execution tries to trade in proportion to the market, and the market's
volume is strongly seasonal within the day (open and close spikes, lunch lull, overnight trickle). The
profile is estimated once from history - a catalog's bars, or any volume time series - and then only
queried: :meth:`VolumeProfile.fraction_between` integrates it over an arbitrary ``[t0, t1)``, which is
what the VWAP schedule needs to turn "the next minute" into "this much of the parent".

Conventions (they matter, a wrong one shifts the whole schedule):

* Buckets are **wall-clock time of day in** ``tz``. ``"UTC"`` is the default; use the exchange time
  zone (``"America/Chicago"`` for CME, ``"America/New_York"`` for US equities) when sessions are defined
  in local time, so the profile follows daylight-saving shifts of the session.
* Bars are stamped at their **close** in Nautilus; :meth:`from_bars`/:meth:`from_catalog` therefore put a
  bar's volume in the bucket containing ``ts_event - 1 ns`` (a bar closing at 14:00 belongs to the bucket
  ending at 14:00). :meth:`from_frame` takes ``label="start"`` (index = interval start, the default for
  generic series) or ``label="end"``.
* Fractions are pooled over all days (total volume per bucket / total volume), so a partial day in the
  history (a holiday session, the first evening of a file) only weighs as much volume as it has.
  ``mean_daily_volume`` is total volume / number of distinct local calendar days seen; the VWAP
  algorithm uses it only as a fallback volume estimate when it has observed no market volume at all.
* Within a bucket, volume is assumed to arrive uniformly in time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar, BarType

_MINUTES_PER_DAY = 1440
_NS_PER_MINUTE = 60_000_000_000


@dataclass(frozen=True)
class VolumeProfile:
    """Fraction of daily volume per intraday bucket (``fractions`` sum to 1)."""

    fractions: tuple[float, ...]
    bucket_minutes: int = 30
    tz: str = "UTC"
    mean_daily_volume: float = math.nan
    n_days: int = 0

    def __post_init__(self) -> None:
        if self.bucket_minutes <= 0 or _MINUTES_PER_DAY % self.bucket_minutes:
            raise ValueError(f"bucket_minutes must be a positive divisor of 1440, got {self.bucket_minutes}")
        expected = _MINUTES_PER_DAY // self.bucket_minutes
        if len(self.fractions) != expected:
            raise ValueError(
                f"{len(self.fractions)} fractions for {expected} buckets of {self.bucket_minutes} min"
            )
        values = np.asarray(self.fractions, dtype=float)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("fractions must be finite and non-negative")
        if not math.isclose(float(values.sum()), 1.0, rel_tol=1e-9, abs_tol=1e-9):
            raise ValueError(f"fractions must sum to 1, got {values.sum()}")
        pd.Timestamp(0, tz=self.tz)  # raises on an unknown time zone

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def flat(cls, bucket_minutes: int = 30, tz: str = "UTC") -> VolumeProfile:
        """Uniform profile (VWAP on it is TWAP); useful as an explicit fallback."""
        n = _MINUTES_PER_DAY // bucket_minutes
        return cls(fractions=tuple([1.0 / n] * n), bucket_minutes=bucket_minutes, tz=tz)

    @classmethod
    def from_frame(
        cls,
        data: pd.DataFrame | pd.Series,
        bucket_minutes: int = 30,
        tz: str = "UTC",
        label: Literal["start", "end"] = "start",
    ) -> VolumeProfile:
        """Estimate from a volume series indexed by timestamps (naive timestamps are taken as UTC).

        ``data`` is a Series of volumes or a DataFrame with a ``volume`` column. ``label`` says whether
        each timestamp is the start or the end of the interval its volume was traded in.
        """
        series = data["volume"] if isinstance(data, pd.DataFrame) else data
        index = pd.DatetimeIndex(series.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        values = np.asarray(series, dtype=float)
        if len(values) == 0:
            raise ValueError("cannot estimate a volume profile from an empty series")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("volumes must be finite and non-negative")
        if label == "end":
            index = index - pd.Timedelta(1, "ns")
        elif label != "start":
            raise ValueError(f"label must be 'start' or 'end', got {label!r}")
        local = index.tz_convert(tz)
        minute_of_day = np.asarray(local.hour * 60 + local.minute)
        n_buckets = _MINUTES_PER_DAY // bucket_minutes
        per_bucket = np.bincount(minute_of_day // bucket_minutes, weights=values, minlength=n_buckets)
        total = float(per_bucket.sum())
        if total <= 0:
            raise ValueError("total volume is zero; no profile can be estimated")
        n_days = int(pd.Index(local.date).nunique())
        fractions = per_bucket / total
        fractions = fractions / fractions.sum()
        return cls(
            fractions=tuple(float(x) for x in fractions),
            bucket_minutes=bucket_minutes,
            tz=tz,
            mean_daily_volume=total / n_days,
            n_days=n_days,
        )

    @classmethod
    def from_bars(cls, bars: Iterable[Bar], bucket_minutes: int = 30, tz: str = "UTC") -> VolumeProfile:
        """Estimate from Nautilus bars (stamped at their close)."""
        bars = list(bars)
        frame = pd.Series(
            [b.volume.as_double() for b in bars],
            index=pd.to_datetime([b.ts_event for b in bars], utc=True),
        )
        return cls.from_frame(frame, bucket_minutes=bucket_minutes, tz=tz, label="end")

    @classmethod
    def from_catalog(
        cls,
        catalog_path: str | Path,
        bar_type: str | BarType,
        bucket_minutes: int = 30,
        tz: str = "UTC",
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
    ) -> VolumeProfile:
        """Estimate from the bars of ``bar_type`` in a ``ParquetDataCatalog`` (optionally a date range).

        Use history *before* the period you backtest the VWAP on, or the profile knows the future.
        """
        from nautilus_trader.persistence.catalog import ParquetDataCatalog

        catalog = ParquetDataCatalog(str(catalog_path))
        bars = catalog.bars(bar_types=[str(bar_type)], start=start, end=end)
        if not bars:
            raise ValueError(f"no {bar_type} bars in {catalog_path} for start={start} end={end}")
        return cls.from_bars(bars, bucket_minutes=bucket_minutes, tz=tz)

    # -- queries ----------------------------------------------------------------------------------

    @cached_property
    def _per_minute(self) -> np.ndarray:
        """Fraction of daily volume per minute of the (local) day."""
        per_bucket = np.asarray(self.fractions) / self.bucket_minutes
        return np.repeat(per_bucket, self.bucket_minutes)

    def fraction_between(self, start_ns: int, end_ns: int) -> float:
        """Expected fraction of one day's volume traded in ``[start_ns, end_ns)`` (can exceed 1 over days)."""
        if end_ns <= start_ns:
            return 0.0
        first = start_ns // _NS_PER_MINUTE
        last = -(-end_ns // _NS_PER_MINUTE)  # ceil
        minute_starts = np.arange(first, last, dtype=np.int64) * _NS_PER_MINUTE
        local = pd.DatetimeIndex(minute_starts, tz="UTC").tz_convert(self.tz)
        weights = self._per_minute[np.asarray(local.hour * 60 + local.minute)]
        lo = np.maximum(minute_starts, start_ns)
        hi = np.minimum(minute_starts + _NS_PER_MINUTE, end_ns)
        overlap = (hi - lo) / _NS_PER_MINUTE
        return float(np.sum(weights * overlap))

    def expected_volume(self, start_ns: int, end_ns: int) -> float:
        """``mean_daily_volume * fraction_between`` (NaN when the profile carries no volume level)."""
        return self.mean_daily_volume * self.fraction_between(start_ns, end_ns)

    def to_frame(self) -> pd.DataFrame:
        """One row per bucket: local start time (``HH:MM``) and fraction."""
        starts = [f"{m // 60:02d}:{m % 60:02d}" for m in range(0, _MINUTES_PER_DAY, self.bucket_minutes)]
        return pd.DataFrame({"bucket_start": starts, "fraction": self.fractions})
