"""Turn the bar containers callers have into the six flat arrays the kernels read.

Every kernel works on ``ts`` (int64 ns since the epoch, UTC) and float64
``open, high, low, close, volume``. Callers hold bars as a pandas DataFrame, a
list of Nautilus ``Bar`` objects, or (streaming) one ``Bar`` / one mapping at a
time; this module is the single place that converts and validates them, so the
batch and the streaming path cannot disagree about what a bar *is*.

It also owns :func:`is_valid_bar`, the one definition of a usable bar that all
kernel families share (see ``docs/features.md``: a bad bar yields an all-NaN
output row and leaves every kernel's state untouched).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from nautilus_trader.model.data import Bar
from numba import njit

OHLCV_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
"""Columns a bars DataFrame must have (extra columns are ignored)."""

_UTC_NAMES = frozenset(
    {
        "UTC",
        "utc",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Zulu",
        "Etc/Zulu",
        "UTC+00:00",
        "tzutc()",
    }
)
"""``str(tz)`` of the tz objects (datetime/pytz/zoneinfo/dateutil) that mean UTC."""


PRICE_RESOLUTION: float = 1e-12
"""Relative size below which a price difference (a bar range, a window's std) is rounding noise.

Prices reach the kernels after float arithmetic (tick rounding, unit conversion), so two "equal"
prices may differ in the last bit. Dividing by such a 1e-16-relative range or std would turn noise
into a full-scale ratio or z-score, and one that flips under rescaling. Real price steps are far
larger (a tick is >= ~1e-8 of the price), so anything below ``PRICE_RESOLUTION * price`` is treated
as exactly flat.
"""


@njit(cache=True)
def is_valid_bar(o: float, h: float, l: float, c: float, v: float) -> bool:
    """True if the bar can be fed to the kernels.

    Why these rules: log returns need strictly positive prices; ``inf``/``NaN``
    would poison running state forever; ``high < max(open, close)`` or
    ``low > min(open, close)`` means the bar is internally inconsistent, and the
    wick/body ratios would leave their documented ranges. Written with
    ``not (x > 0)``-style tests so that NaN fails every comparison.
    """
    if not (o > 0.0 and h > 0.0 and l > 0.0 and c > 0.0):
        return False
    if not (o < np.inf and h < np.inf and l < np.inf and c < np.inf):
        return False
    if not (v >= 0.0 and v < np.inf):
        return False
    return h >= o and h >= c and l <= o and l <= c


def _validate_frame(df: pd.DataFrame) -> None:
    missing = [name for name in OHLCV_COLUMNS if name not in df.columns]
    if missing:
        raise ValueError(f"bars DataFrame is missing column(s) {missing}; expected {list(OHLCV_COLUMNS)}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise ValueError(  # noqa: TRY004 - a malformed frame is a bad value; the API promises ValueError
            f"bars DataFrame must have a UTC DatetimeIndex, got {type(df.index).__name__}"
        )
    tz = df.index.tz
    if tz is None:
        raise ValueError("bars DataFrame index is timezone-naive; localise it to UTC first")
    if str(tz) not in _UTC_NAMES:
        raise ValueError(f"bars DataFrame index must be in UTC, got tz={tz}; use .tz_convert('UTC')")
    if not df.index.is_monotonic_increasing or not df.index.is_unique:
        raise ValueError(
            "bars DataFrame index must be strictly increasing (features are causal in index order); "
            "sort it and drop duplicate timestamps"
        )
    for name in OHLCV_COLUMNS:
        if not pd.api.types.is_numeric_dtype(df[name].dtype) or pd.api.types.is_bool_dtype(df[name].dtype):
            raise ValueError(f"bars DataFrame column {name!r} must be numeric, got {df[name].dtype}")


def frame_to_arrays(df: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """Validate a bars DataFrame and return contiguous ``(ts, o, h, l, c, v)``.

    Raises ``ValueError`` naming the problem (missing column, non-datetime or
    non-UTC index, unsorted/duplicate index, non-numeric column).
    """
    _validate_frame(df)
    ts = np.ascontiguousarray(df.index.as_unit("ns").asi8, dtype=np.int64)
    cols = tuple(np.ascontiguousarray(df[name].to_numpy(dtype=np.float64)) for name in OHLCV_COLUMNS)
    return (ts, *cols)


def bar_list_to_arrays(bars: Sequence[Bar]) -> tuple[np.ndarray, ...]:
    """Convert a sequence of Nautilus ``Bar`` objects to ``(ts, o, h, l, c, v)``.

    ``ts`` is ``bar.ts_event`` (the bar's close time in Nautilus convention).
    """
    n = len(bars)
    ts = np.empty(n, dtype=np.int64)
    out = np.empty((5, n), dtype=np.float64)
    for i, bar in enumerate(bars):
        if not isinstance(bar, Bar):
            raise TypeError(f"bars[{i}] is {type(bar).__name__}, expected nautilus Bar")
        ts[i] = bar.ts_event
        out[0, i] = bar.open.as_double()
        out[1, i] = bar.high.as_double()
        out[2, i] = bar.low.as_double()
        out[3, i] = bar.close.as_double()
        out[4, i] = bar.volume.as_double()
    return (ts, out[0].copy(), out[1].copy(), out[2].copy(), out[3].copy(), out[4].copy())


def to_arrays(bars: pd.DataFrame | Sequence[Bar]) -> tuple[np.ndarray, ...]:
    """Dispatch on the container type; see :func:`frame_to_arrays` / :func:`bar_list_to_arrays`."""
    if isinstance(bars, pd.DataFrame):
        return frame_to_arrays(bars)
    if isinstance(bars, (list, tuple)):
        return bar_list_to_arrays(bars)
    raise TypeError(
        f"bars must be a pandas DataFrame or a list of nautilus Bar objects, got {type(bars).__name__}"
    )


def timestamp_ns(value: Any) -> int:
    """Nanoseconds since the epoch (UTC) for an int, numpy int, pandas/py datetime or datetime64."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, _dt.datetime) and value.tzinfo is None:
        raise ValueError("timestamp is timezone-naive; pass a UTC datetime or int nanoseconds")
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot interpret {value!r} as a timestamp") from exc
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


def bar_values(bar: Bar | Mapping[str, Any]) -> tuple[int, float, float, float, float, float]:
    """One bar as ``(ts, o, h, l, c, v)`` for the streaming path.

    Accepts a Nautilus ``Bar`` or a mapping with keys ``ts, open, high, low,
    close, volume`` (``ts``: int ns, or anything :func:`timestamp_ns` accepts).
    Kept branch-light because it sits on the per-bar hot path.
    """
    if type(bar) is Bar:
        return (
            bar.ts_event,
            bar.open.as_double(),
            bar.high.as_double(),
            bar.low.as_double(),
            bar.close.as_double(),
            bar.volume.as_double(),
        )
    if isinstance(bar, Mapping):
        try:
            ts = bar["ts"]
            values = (
                float(bar["open"]),
                float(bar["high"]),
                float(bar["low"]),
                float(bar["close"]),
                float(bar["volume"]),
            )
        except KeyError as exc:
            raise ValueError(
                f"bar mapping is missing key {exc.args[0]!r}; expected ts, open, high, low, close, volume"
            ) from None
        if type(ts) is not int:
            ts = timestamp_ns(ts)
        return (ts, *values)
    if isinstance(bar, Bar):  # subclass: slower path, same fields
        return (
            bar.ts_event,
            bar.open.as_double(),
            bar.high.as_double(),
            bar.low.as_double(),
            bar.close.as_double(),
            bar.volume.as_double(),
        )
    raise TypeError(f"bar must be a nautilus Bar or a mapping, got {type(bar).__name__}")
