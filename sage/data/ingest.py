"""Ingest a user's OHLCV bar file or trades file into a Nautilus ``ParquetDataCatalog``, safely.

Why a dedicated ingest instead of ``BarDataWrangler`` + ``write_data``: the wranglers silently drop NaN
rows, accept unsorted input, and the catalog write can fail halfway. A backtest on a catalog with a
silently repaired or half-written file gives numbers that look fine and are wrong. So this module

1. reads CSV (optionally gzip) or parquet and maps columns by name (case-insensitive, aliases below);
   structural problems (missing column, non-numeric price cells, unparseable timestamps) raise a
   ``ColumnError`` naming the column and sample rows — those are never "dropped", the file is wrong;
2. validates every row and collects *all* problems into a ``ValidationReport`` (1-based data rows:
   row 1 is the first row after the header, i.e. line 2 of a CSV);
3. refuses the whole file by default (``IngestError`` carrying the report), or with
   ``drop_bad_rows=True`` drops exactly the flagged rows and says how many and why;
4. rounds prices to the instrument's tick (counted and reported, never silent);
5. writes instrument + data through ``sage.data.catalog_io.atomic_catalog_write``: overlap with
   existing data is refused before anything is written and a failed write leaves the catalog unchanged.

Timestamps (see docs/ingest.md): Nautilus stamps bars at their *close* (``ts_event`` = close time).
Files usually stamp the bar *open*, so ``timestamp_is="open"`` (the default) adds one bar interval;
the default errs on the side that can never stamp a bar before its data existed (stamping a daily bar
at 00:00 of its own day would leak that day's close into the morning — lookahead).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from nautilus_trader.model.data import Bar, BarType, TradeTick
from nautilus_trader.model.enums import AggressorSide, BarAggregation
from nautilus_trader.model.instruments import Cfd, CurrencyPair, Equity, FuturesContract, Instrument
from nautilus_trader.model.objects import PRICE_MAX, QUANTITY_MAX, Price
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from sage.data.catalog_io import CatalogWriteError, CatalogWriteResult, commit_plan, plan_catalog_write
from sage.data.instruments import INSTRUMENT_KINDS, InstrumentKind, generic_instrument

TimestampIs = Literal["open", "close"]

# -- reason codes ----------------------------------------------------------------------------------

#: Every per-row reason code, in the order reports list them, with the sentence a report prints.
REASONS: dict[str, str] = {
    "timestamp_before_epoch": "timestamp is before 1970-01-01 UTC (Nautilus stores unsigned nanoseconds)",
    "unsorted_timestamp": "timestamp is earlier than an earlier accepted row's (file must be oldest-first)",
    "duplicate_timestamp": "timestamp equals an earlier accepted row's (one bar per timestamp)",
    "nan_price": "a price is NaN or empty",
    "inf_price": "a price is infinite",
    "non_positive_price": "a price is zero or negative",
    "price_out_of_range": f"a price exceeds Nautilus's maximum {PRICE_MAX:,.0f}",
    "price_below_tick": "a positive price rounds to 0 at the instrument's tick",
    "high_below_low": "high < low",
    "open_outside_range": "open is outside [low, high]",
    "close_outside_range": "close is outside [low, high]",
    "nan_volume": "volume is NaN or empty",
    "inf_volume": "volume is infinite",
    "negative_volume": "volume is negative",
    "volume_out_of_range": f"volume exceeds Nautilus's maximum {QUANTITY_MAX:,.0f}",
    "nan_size": "trade size is NaN or empty",
    "inf_size": "trade size is infinite",
    "non_positive_size": "trade size is zero or negative",
    "size_out_of_range": f"trade size exceeds Nautilus's maximum {QUANTITY_MAX:,.0f}",
    "size_below_precision": "a positive trade size rounds to 0 at the instrument's size precision",
}

BAR_REASONS: tuple[str, ...] = tuple(r for r in REASONS if "size" not in r)
TRADE_REASONS: tuple[str, ...] = tuple(
    r
    for r in REASONS
    if r not in {"duplicate_timestamp", "high_below_low", "open_outside_range", "close_outside_range"}
    and "volume" not in r
)

# -- column names ----------------------------------------------------------------------------------

#: Accepted header names (after lower-casing and turning spaces/hyphens into ``_``), in priority order.
TIMESTAMP_NAMES: tuple[str, ...] = ("timestamp", "datetime", "date_time", "ts_event", "ts", "time", "date")
BAR_COLUMNS: dict[str, tuple[str, ...]] = {
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "vol", "v"),
}
TRADE_COLUMNS: dict[str, tuple[str, ...]] = {
    "price": ("price", "last", "px", "trade_price"),
    "size": ("size", "quantity", "qty", "volume", "trade_size"),
    "side": ("side", "aggressor", "aggressor_side"),
    "buyer_maker": ("buyer_maker", "is_buyer_maker"),
    "trade_id": ("trade_id", "tradeid", "id"),
}
_OPTIONAL = {"volume", "side", "buyer_maker", "trade_id"}

#: Formats tried, in order, for text timestamps; the first that parses every row wins.
TEXT_TIMESTAMP_FORMATS: tuple[str, ...] = (
    "ISO8601",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S.%f",
    "%Y%m%d",
    "%Y%m%d %H:%M:%S",
    "%d.%m.%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S.%f",
)

_SIDE_TOKENS: dict[str, int] = {
    **dict.fromkeys(("buy", "b", "buyer", "1", "1.0"), int(AggressorSide.BUYER)),
    **dict.fromkeys(("sell", "s", "seller", "2", "2.0", "-1", "-1.0"), int(AggressorSide.SELLER)),
    **dict.fromkeys(
        ("", "none", "n", "no_aggressor", "unknown", "0", "0.0"), int(AggressorSide.NO_AGGRESSOR)
    ),
}

try:  # pandas 2 raises pytz's time-zone errors; none of them derive from ValueError
    from pytz.exceptions import Error as _PytzError

    _TZ_ERRORS: tuple[type[BaseException], ...] = (ValueError, LookupError, _PytzError)
except ImportError:  # pragma: no cover - pandas without pytz uses zoneinfo (KeyError) and ValueError
    _TZ_ERRORS = (ValueError, LookupError)

_KIND_OF_CLASS: dict[type, str] = {
    Equity: "equity",
    FuturesContract: "future",
    CurrencyPair: "fx",
    Cfd: "cfd",
}
_SAMPLE_ROWS = 5


# -- config ----------------------------------------------------------------------------------------


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What to ingest and how; one field per ``sage catalog ingest`` option.

    instrument_id: ``SYMBOL.VENUE`` (``BASE/QUOTE.VENUE`` for fx). Required.
    trades: False = OHLCV bars (needs ``bar_spec``); True = trade ticks (``bar_spec`` must be None).
    bar_spec: ``STEP-AGGREGATION-PRICE_TYPE`` such as ``1-MINUTE-LAST`` or ``1-DAY-LAST``; an
        aggregation source suffix (``-EXTERNAL``, the default, or ``-INTERNAL``) may be appended.
    kind, price_precision, size_precision, tick_size, multiplier, currency: the instrument spec. None
        means "use the catalog's existing instrument with this id", or, if there is none, the defaults
        equity / 2 / 0 / one unit of the last price digit / 1 / USD. A value given explicitly must match
        an existing catalog instrument (refused otherwise: data at two precisions under one id is wrong).
    tz: time zone of timestamps that carry no UTC offset (default ``UTC``); e.g. ``US/Central`` for the
        bundled ES ticks. Ignored for epoch numbers and offset-bearing text such as ``...Z``/``+02:00``.
    timestamp_is: what a bar file's timestamp marks, ``open`` (default) or ``close``. Nautilus stamps
        bars at their close, so ``open`` adds one bar interval (calendar days/weeks/months in ``tz`` for
        DAY/WEEK/MONTH/YEAR bars). Ignored for trades.
    drop_bad_rows: False (default) refuses a file with any bad row; True drops exactly the rows the
        validation report names and writes the rest.
    """

    instrument_id: str
    trades: bool = False
    bar_spec: str | None = None
    kind: InstrumentKind | None = None
    price_precision: int | None = None
    size_precision: int | None = None
    tick_size: str | None = None
    multiplier: int | None = None
    currency: str | None = None
    tz: str = "UTC"
    timestamp_is: TimestampIs = "open"
    drop_bad_rows: bool = False


# -- errors and reports ----------------------------------------------------------------------------


class IngestError(Exception):
    """The file was refused (or the write failed); nothing was written and the catalog is unchanged.

    ``str(err)`` is the full human-readable message (the CLI prints it); ``report`` is the
    ``ValidationReport`` when the refusal came from row validation, else None.
    """

    def __init__(self, message: str, report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


class ColumnError(IngestError):
    """A structural problem with a column (missing, non-numeric, unparseable timestamps, ambiguous)."""

    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column


def _fmt_ts(ns: int) -> str:
    return pd.Timestamp(int(ns), tz="UTC").isoformat().replace("+00:00", "Z")


def _num(x: float) -> str:
    return f"{float(x):.12g}"


def _fmt_rows(rows: np.ndarray, limit: int) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... ({len(rows) - limit:,} more)" if len(rows) > limit else "")


@dataclass(frozen=True)
class ValidationReport:
    """Per-row validation outcome. Row numbers are 1-based data rows (the header is not counted).

    ``issues`` maps a reason code (see ``REASONS``) to the sorted row numbers with that problem; a row
    can appear under several reasons. ``details`` gives, per reason, the first offending row's values.
    """

    n_rows: int
    issues: Mapping[str, np.ndarray]
    details: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    source: str = ""

    @property
    def ok(self) -> bool:
        """True when no row has any problem."""
        return not self.issues

    @property
    def bad_rows(self) -> np.ndarray:
        """Sorted unique row numbers flagged for any reason (what ``drop_bad_rows`` removes)."""
        if not self.issues:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(list(self.issues.values())))

    def count(self, reason: str) -> int:
        """Rows flagged with ``reason`` (0 if none)."""
        return len(self.issues.get(reason, ()))

    def summary(self, max_rows: int = 10) -> str:
        """Grouped by reason, each with its count, meaning, first ``max_rows`` rows and a first example."""
        where = f" in {self.source}" if self.source else ""
        if self.ok:
            return f"all {self.n_rows:,} rows valid{where}"
        lines = [
            (
                f"{len(self.bad_rows):,} of {self.n_rows:,} rows are bad{where} "
                "(rows are 1-based data rows; the header is not counted):"
            )
        ]
        for reason, rows in self.issues.items():
            plural = "s" if len(rows) != 1 else ""
            lines.append(
                f"  {reason} ({len(rows):,} row{plural}): {REASONS[reason]}: row{plural} {_fmt_rows(rows, max_rows)}"
            )
            if reason in self.details:
                lines.append(f"      first: {self.details[reason]}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass(frozen=True)
class IngestReport:
    """What an ingest did; ``str(report)`` is the text the CLI prints."""

    source: str
    catalog_path: str
    trades: bool
    identifier: str  # bar type for bars, instrument id for trades
    instrument: str  # "GOOG.XNAS (Equity, tick 0.01)"
    instrument_written: bool
    rows_read: int
    rows_written: int
    rows_dropped: int
    dropped_by_reason: Mapping[str, int]
    prices_rounded: int
    max_price_change: float
    sizes_rounded: int
    first_ts: int
    last_ts: int
    timestamp_note: str
    columns: Mapping[str, str]
    ignored_columns: tuple[str, ...]
    files: tuple[str, ...]
    dry_run: bool
    notes: tuple[str, ...]
    validation: ValidationReport = field(repr=False)

    def __str__(self) -> str:
        what = "trade ticks" if self.trades else "bars"
        verb = "would ingest (dry run, nothing written)" if self.dry_run else "ingested"
        lines = [f"{verb} {self.rows_written:,} {what} {self.identifier} from {self.source}"]
        lines.append(f"  catalog: {self.catalog_path}")
        lines.append(f"  time range (ts_event, UTC): {_fmt_ts(self.first_ts)} .. {_fmt_ts(self.last_ts)}")
        lines.append(f"  timestamps: {self.timestamp_note}")
        cols = ", ".join(f"{k}<-{v!r}" for k, v in self.columns.items())
        lines.append(
            f"  columns: {cols}"
            + (f"; ignored: {', '.join(self.ignored_columns)}" if self.ignored_columns else "")
        )
        lines.append(
            f"  rows: {self.rows_read:,} read, {self.rows_written:,} written, {self.rows_dropped:,} dropped"
            + (
                " (" + ", ".join(f"{r} {n:,}" for r, n in self.dropped_by_reason.items()) + ")"
                if self.dropped_by_reason
                else ""
            )
        )
        lines.append(
            f"  rounding: {self.prices_rounded:,} price values rounded to the tick"
            + (f" (max change {self.max_price_change:.10g})" if self.prices_rounded else "")
            + f", {self.sizes_rounded:,} {'sizes' if self.trades else 'volumes'} rounded to the size precision"
        )
        state = "written" if self.instrument_written else "already in catalog"
        if self.dry_run:
            state = "would be written" if self.instrument_written else "already in catalog"
        lines.append(f"  instrument: {self.instrument} ({state})")
        lines.extend(f"  file: {f}" for f in self.files)
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.rows_dropped:
            lines.append("  dropped rows:")
            lines.extend("  " + line for line in self.validation.summary(max_rows=10).splitlines()[1:])
        return "\n".join(lines)


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedFile:
    """A user file mapped to standard columns.

    ``frame`` has ``row`` (1-based data row), ``ts`` (int64 ns UTC *as stamped in the file*, before any
    open->close shift) and float64 ``open/high/low/close/volume`` (bars) or ``price/size`` plus uint8
    ``side`` and optional str ``trade_id`` (trades). ``columns`` maps each standard field to the file's
    header name; ``notes`` records defaults applied (e.g. no volume column).
    """

    frame: pd.DataFrame
    columns: Mapping[str, str]
    ignored_columns: tuple[str, ...]
    notes: tuple[str, ...]


def _norm(name: object) -> str:
    return re.sub(r"[\s\-]+", "_", str(name).strip().lower())


def _read_raw(path: Path) -> pd.DataFrame:
    name = path.name.lower()
    if not path.is_file():
        raise IngestError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise IngestError(f"{path}: file is empty (no header, no rows); nothing was written")
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
            if not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()
            return df
        if name.endswith((".csv", ".csv.gz", ".txt", ".txt.gz", ".gz")):
            return pd.read_csv(path, compression="infer", float_precision="round_trip", low_memory=False)
    except pd.errors.EmptyDataError as exc:
        raise IngestError(f"{path}: file is empty (no header, no rows); nothing was written") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise IngestError(f"{path}: cannot read file: {exc}") from exc
    raise IngestError(f"{path}: unsupported file type; expected .csv, .csv.gz or .parquet")


def _samples(raw: pd.Series, mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)[:_SAMPLE_ROWS]
    return ", ".join(f"row {i + 1}: {raw.iloc[i]!r}" for i in rows)


def _numeric(raw: pd.Series, column: str) -> np.ndarray:
    """Float64 values; empty/NA cells become NaN (a row-level problem), non-numbers a ColumnError."""
    if pd.api.types.is_bool_dtype(raw):
        raise ColumnError(column, f"column {column!r} holds true/false values, expected numbers")
    if pd.api.types.is_numeric_dtype(raw):
        return raw.to_numpy(dtype=np.float64, na_value=np.nan)
    text = raw.astype("string").str.strip()
    uniques = pd.unique(text.dropna())
    table: dict[str, float] = {"": math.nan}
    bad_tokens = set()
    for tok in uniques:
        if tok in table:
            continue
        try:
            table[tok] = float(tok)
        except ValueError:
            bad_tokens.add(tok)
    if bad_tokens:
        bad = text.isin(bad_tokens).fillna(False).to_numpy()
        raise ColumnError(
            column,
            f"column {column!r} has {int(bad.sum()):,} non-numeric value(s), e.g. {_samples(raw, bad)} "
            "(rows are 1-based data rows); nothing was written",
        )
    return text.map(table).astype("float64").fillna(np.nan).to_numpy(dtype=np.float64)


def _pick_column(norm_to_orig: dict[str, str], aliases: tuple[str, ...], field_name: str) -> str | None:
    present = [a for a in aliases if a in norm_to_orig]
    if len(present) > 1:
        names = ", ".join(repr(norm_to_orig[a]) for a in present)
        raise ColumnError(
            None, f"several columns could be the {field_name} column: {names}; rename all but one"
        )
    return norm_to_orig[present[0]] if present else None


def _timestamp_column(df: pd.DataFrame, norm_to_orig: dict[str, str]) -> tuple[pd.Series, str, list[str]]:
    """Find the timestamp column; returns (values, description, file columns used)."""
    for name in TIMESTAMP_NAMES[:5]:
        if name in norm_to_orig:
            col = norm_to_orig[name]
            return df[col], col, [col]
    if "date" in norm_to_orig and "time" in norm_to_orig:
        d, t = norm_to_orig["date"], norm_to_orig["time"]
        joined = df[d].astype("string").str.strip() + " " + df[t].astype("string").str.strip()
        return joined, f"{d}+{t}", [d, t]
    for name in ("time", "date"):
        if name in norm_to_orig:
            col = norm_to_orig[name]
            return df[col], col, [col]
    first = df.columns[0] if len(df.columns) else None
    if first is not None and (
        str(first).startswith("Unnamed: ") or _norm(first) in ("", "index", "__index_level_0__", "none")
    ):
        return df[first], f"{first!s} (unnamed first column)", [first]
    raise ColumnError(
        "timestamp",
        f"no timestamp column: expected one named {', '.join(TIMESTAMP_NAMES)} (any case), or an unnamed "
        f"first column; the file has {', '.join(repr(str(c)) for c in df.columns)}",
    )


def _epoch_to_ns(values: np.ndarray, column: str, raw: pd.Series) -> np.ndarray:
    """Integer/float epochs; unit by magnitude: |x|<1e11 s, <1e14 ms, <1e17 us, else ns."""
    a = np.abs(values)
    scale = np.select([a < 1e11, a < 1e14, a < 1e17], [1_000_000_000, 1_000_000, 1_000], 1).astype(np.int64)
    units = np.unique(scale)
    if len(units) > 1:
        majority = units[np.argmax([np.sum(scale == u) for u in units])]
        odd = scale != majority
        raise ColumnError(
            column,
            f"timestamp column {column!r} mixes epoch units (seconds/ms/us/ns by magnitude), e.g. "
            f"{_samples(raw, odd)}; nothing was written",
        )
    if np.any(a * float(units[0]) >= 9.2e18):
        too_big = a * float(units[0]) >= 9.2e18
        raise ColumnError(
            column, f"timestamp column {column!r} has epochs past year 2262, e.g. {_samples(raw, too_big)}"
        )
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64) * units[0]
    return np.round(values * float(units[0])).astype(np.int64)


def _localize(naive: pd.DatetimeIndex, tz: str, column: str, raw: pd.Series) -> np.ndarray:
    """Naive local times -> int64 ns UTC, refusing times a daylight-saving change makes unknowable.

    Times in a spring-forward gap do not exist: refused. Times in the fall-back hour happen twice: for
    a sorted file pandas can infer which occurrence is meant from where the clock goes back, except
    when the same local time repeats (ticks sharing a millisecond), where both readings fit: refused.
    """
    flagged = np.asarray(naive.tz_localize(tz, ambiguous="NaT", nonexistent="NaT").isna())
    if not flagged.any():
        return naive.tz_localize(tz, ambiguous="raise", nonexistent="raise").asi8
    all_dst = np.ones(len(naive), dtype=bool)
    gap = np.asarray(naive.tz_localize(tz, ambiguous=all_dst, nonexistent="NaT").isna())
    hint = "export the file in UTC or with UTC offsets (or pass tz UTC if it already is); nothing was written"
    if gap.any():
        raise ColumnError(
            column,
            f"timestamp column {column!r}: {int(gap.sum()):,} local time(s) do not exist in time zone {tz} "
            f"(skipped by a daylight-saving change), e.g. {_samples(raw, gap)}; {hint}",
        )
    amb = naive.asi8[flagged]
    repeated = len(amb) > 1 and bool(np.any(amb[1:] == amb[:-1]))
    if not repeated:
        try:
            return naive.tz_localize(tz, ambiguous="infer", nonexistent="raise").asi8
        except _TZ_ERRORS:
            pass
    raise ColumnError(
        column,
        f"timestamp column {column!r}: {int(flagged.sum()):,} local time(s) fall in the repeated hour of a "
        f"daylight-saving change in time zone {tz} and cannot be placed, e.g. {_samples(raw, flagged)}; {hint}",
    )


_OFFSET_RE = r"(?:[T\s]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2}))$|Z$"


def _text_to_ns(text: pa.Array, column: str, tz: str, raw: pd.Series) -> np.ndarray:
    """Parse stripped, non-empty strings; the first format in ``TEXT_TIMESTAMP_FORMATS`` that fits all wins."""
    has_offset = pc.match_substring_regex(text, _OFFSET_RE, ignore_case=True).to_numpy(zero_copy_only=False)
    if has_offset.any() and not has_offset.all():
        raise ColumnError(
            column,
            f"timestamp column {column!r} mixes values with and without a UTC offset, e.g. "
            f"{_samples(raw, ~has_offset)}; nothing was written",
        )
    values = text.to_pandas()
    best: tuple[int, pd.DatetimeIndex] | None = None
    for fmt in TEXT_TIMESTAMP_FORMATS:
        try:
            parsed = pd.DatetimeIndex(
                pd.to_datetime(values, format=fmt, errors="coerce", utc=bool(has_offset.any()))
            )
        except (ValueError, TypeError, OverflowError):
            continue
        n_bad = int(parsed.isna().sum())
        if best is None or n_bad < best[0]:
            best = (n_bad, parsed)
        if n_bad == 0:
            break
    if best is None or best[0]:
        bad = np.asarray(best[1].isna()) if best is not None else np.ones(len(raw), dtype=bool)
        raise ColumnError(
            column,
            f"timestamp column {column!r} has {int(bad.sum()):,} unparseable value(s), e.g. "
            f"{_samples(raw, bad)}; accepted: ISO 8601, M/D/YYYY[ H:M[:S]], YYYYMMDD, D.M.YYYY[ H:M:S], "
            "epoch s/ms/us/ns; nothing was written",
        )
    parsed = best[1]
    if parsed.tz is not None:
        return parsed.tz_convert("UTC").asi8
    return _localize(parsed, tz, column, raw)


def _empty_error(column: str, missing: np.ndarray) -> ColumnError:
    return ColumnError(
        column,
        f"timestamp column {column!r} has {int(missing.sum()):,} empty value(s), e.g. "
        + ", ".join(f"row {i + 1}" for i in np.flatnonzero(missing)[:_SAMPLE_ROWS])
        + "; nothing was written",
    )


def _objects_to_ns(raw: pd.Series, column: str, tz: str) -> np.ndarray:
    """Non-string objects, e.g. ``datetime.date`` values from a parquet date32 column."""
    try:
        parsed = pd.DatetimeIndex(pd.to_datetime(raw, errors="coerce"))
    except (ValueError, TypeError) as exc:
        raise ColumnError(
            column, f"timestamp column {column!r} cannot be read as dates/times: {exc}"
        ) from None
    bad = np.asarray(parsed.isna())
    if bad.any():
        raise ColumnError(
            column, f"timestamp column {column!r} has unparseable value(s), e.g. {_samples(raw, bad)}"
        )
    if parsed.tz is not None:
        return parsed.tz_convert("UTC").asi8
    return _localize(parsed, tz, column, raw)


def _timestamps_to_ns(raw: pd.Series, column: str, tz: str) -> np.ndarray:
    """Parse a timestamp column to int64 ns UTC or raise ColumnError naming sample rows."""
    missing = np.asarray(raw.isna())
    if missing.any():
        raise _empty_error(column, missing)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        return pd.DatetimeIndex(raw).tz_convert("UTC").asi8
    if pd.api.types.is_datetime64_dtype(raw):
        return _localize(pd.DatetimeIndex(raw), tz, column, raw)
    if pd.api.types.is_bool_dtype(raw):
        raise ColumnError(column, f"timestamp column {column!r} holds true/false values")
    if pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy()
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            bad = ~np.isfinite(values)
            raise ColumnError(
                column, f"timestamp column {column!r} has non-finite values, e.g. {_samples(raw, bad)}"
            )
        if np.issubdtype(values.dtype, np.integer) and np.all((values >= 19000101) & (values <= 22621231)):
            as_dates = pd.to_datetime(pd.Series(values).astype(str), format="%Y%m%d", errors="coerce")
            if not as_dates.isna().any():  # YYYYMMDD integers, not 1970 epoch seconds
                return _localize(pd.DatetimeIndex(as_dates), tz, column, raw)
        return _epoch_to_ns(values, column, raw)
    try:  # pyarrow's vectorised string kernels: Python-level str ops cost seconds on 1e6 ticks
        text = pc.utf8_trim_whitespace(pa.array(raw, type=pa.string(), from_pandas=True))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return _objects_to_ns(raw, column, tz)
    missing = np.asarray(pc.equal(text, "").to_numpy(zero_copy_only=False), dtype=bool)
    if missing.any():
        raise _empty_error(column, missing)
    if pc.all(pc.match_substring_regex(text, r"^[+-]?\d+$")).as_py():
        return _timestamps_to_ns(pd.Series(pc.cast(text, pa.int64()).to_numpy()), column, tz)
    return _text_to_ns(text, column, tz, raw)


def _sides(raw: pd.Series, column: str, buyer_maker: bool) -> np.ndarray:
    if buyer_maker:  # Binance-style: buyer is maker => seller was the aggressor
        tokens = raw.astype("string").str.strip().str.lower()
        table = {"true": 2, "1": 2, "false": 1, "0": 1}
    else:
        tokens = raw.astype("string").str.strip().str.lower().fillna("")
        table = _SIDE_TOKENS
    mapped = tokens.map(table)
    bad = np.asarray(mapped.isna())
    if bad.any():
        raise ColumnError(
            column,
            f"side column {column!r} has unrecognised value(s), e.g. {_samples(raw, bad)}; accepted: "
            "buy/b/buyer/1, sell/s/seller/2/-1, empty/none/0 (no aggressor)",
        )
    return mapped.to_numpy(dtype=np.uint8)


def load_file(path: str | os.PathLike[str], *, trades: bool = False, tz: str = "UTC") -> LoadedFile:
    """Read a bar or trades file and map it to standard columns (see ``LoadedFile``).

    Raises ``IngestError`` for unreadable/empty files and ``ColumnError`` for structural problems; row
    problems (NaN, negative, unsorted, ...) are left for ``validate_bars``/``validate_trades``.
    """
    p = Path(path)
    try:
        pd.Timestamp("2000-01-01").tz_localize(tz)
    except _TZ_ERRORS as exc:
        raise IngestError(f"unknown time zone {tz!r}: {exc}") from None
    df = _read_raw(p)
    if len(df) == 0:
        raise IngestError(f"{p}: file has a header but no data rows; nothing was written")
    norm_to_orig: dict[str, str] = {}
    for col in df.columns:
        key = _norm(col)
        if key in norm_to_orig:
            raise ColumnError(
                str(col), f"columns {norm_to_orig[key]!r} and {col!r} have the same name (ignoring case)"
            )
        norm_to_orig[key] = col
    ts_raw, ts_desc, ts_cols = _timestamp_column(df, norm_to_orig)
    wanted = TRADE_COLUMNS if trades else BAR_COLUMNS
    picked: dict[str, str] = {}
    for fld, aliases in wanted.items():
        col = _pick_column(norm_to_orig, aliases, fld)
        if col is not None:
            picked[fld] = col
    missing = [f for f in wanted if f not in picked and f not in _OPTIONAL]
    if missing:
        expect = "; ".join(f"{f}: {', '.join(wanted[f])}" for f in missing)
        raise ColumnError(
            missing[0],
            f"{p}: missing required column(s) {', '.join(missing)} (accepted names, any case: {expect}); "
            f"the file has {', '.join(repr(str(c)) for c in df.columns)}; nothing was written",
        )
    out = pd.DataFrame({"row": np.arange(1, len(df) + 1, dtype=np.int64)})
    out["ts"] = _timestamps_to_ns(ts_raw, ts_desc, tz)
    notes: list[str] = []
    if trades:
        out["price"] = _numeric(df[picked["price"]], picked["price"])
        out["size"] = _numeric(df[picked["size"]], picked["size"])
        if "side" in picked and "buyer_maker" in picked:
            raise ColumnError(
                None, f"both {picked['side']!r} and {picked['buyer_maker']!r} give the aggressor; keep one"
            )
        if "side" in picked:
            out["side"] = _sides(df[picked["side"]], picked["side"], buyer_maker=False)
        elif "buyer_maker" in picked:
            out["side"] = _sides(df[picked["buyer_maker"]], picked["buyer_maker"], buyer_maker=True)
        else:
            out["side"] = np.uint8(AggressorSide.NO_AGGRESSOR)
            notes.append("no side column: aggressor side set to NO_AGGRESSOR")
        if "trade_id" in picked:
            ids = df[picked["trade_id"]].astype("string").str.strip()
            bad = np.asarray(ids.isna() | (ids.fillna("") == "") | (ids.str.len().fillna(0) > 36))
            if bad.any():
                raise ColumnError(
                    picked["trade_id"],
                    f"trade id column {picked['trade_id']!r} has empty or over-36-character ids, e.g. "
                    f"{_samples(df[picked['trade_id']], bad)}",
                )
            out["trade_id"] = ids.to_numpy(dtype=object)
        else:
            notes.append("no trade id column: ids generated as '<ts_event>-<n-th trade at that ts>'")
    else:
        for fld in ("open", "high", "low", "close"):
            out[fld] = _numeric(df[picked[fld]], picked[fld])
        if "volume" in picked:
            out["volume"] = _numeric(df[picked["volume"]], picked["volume"])
        else:
            out["volume"] = 0.0
            notes.append("no volume column: volume set to 0")
    columns = {"timestamp": ts_desc, **picked}
    used = set(ts_cols) | set(picked.values())
    ignored = tuple(str(c) for c in df.columns if c not in used)
    return LoadedFile(out, columns, ignored, tuple(notes))


# -- validation ------------------------------------------------------------------------------------


def round_to_tick(values: np.ndarray, tick: float, precision: int) -> np.ndarray:
    """Nearest multiple of ``tick``, halves rounded up (prices are positive), cleaned to ``precision``."""
    with np.errstate(all="ignore"):
        return np.round(np.floor(values / tick + 0.5) * tick, precision)


def _ordering(
    ts: np.ndarray, candidate: np.ndarray, rows: np.ndarray, shown: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Flag rows whose timestamp is < (unsorted) or == (duplicate) the running max of earlier accepted rows.

    Only ``candidate`` rows (no value problem) take part: a row dropped for a NaN price must not make
    later rows look unsorted. Rows flagged here never raise the running max, so the max over all
    earlier candidates equals the max over earlier *accepted* rows.
    """
    n = len(ts)
    unsorted = np.zeros(n, dtype=bool)
    dup = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(candidate)
    if len(idx) < 2:
        return unsorted, dup, "", ""
    sub = ts[idx]
    cummax = np.maximum.accumulate(sub)
    prev = np.concatenate([[np.iinfo(np.int64).min], cummax[:-1]])
    new_max = sub > prev
    pos = np.maximum.accumulate(np.where(new_max, np.arange(len(sub)), 0))
    prev_pos = np.concatenate([[0], pos[:-1]])
    u, d = sub < prev, sub == prev
    unsorted[idx[u]] = True
    dup[idx[d]] = True
    du = dd = ""
    if u.any():
        k = int(np.argmax(u))
        j = idx[prev_pos[k]]
        du = (
            f"row {rows[idx[k]]} ({_fmt_ts(shown[idx[k]])}) is earlier than row {rows[j]} ({_fmt_ts(shown[j])}); "
            "if that earlier row is the glitch, fix it instead of dropping everything after it"
        )
    if d.any():
        k = int(np.argmax(d))
        du_j = idx[prev_pos[k]]
        dd = f"row {rows[idx[k]]} has the same timestamp {_fmt_ts(shown[idx[k]])} as row {rows[du_j]}"
    return unsorted, dup, du, dd


def _finalize(
    masks: dict[str, np.ndarray],
    describe: dict[str, str],
    frame: pd.DataFrame,
    order: tuple[str, ...],
    row_detail,
    source: str,
    notes: list[str],
) -> ValidationReport:
    rows = frame["row"].to_numpy()
    issues: dict[str, np.ndarray] = {}
    details: dict[str, str] = {}
    for reason in order:
        m = masks.get(reason)
        if m is None or not m.any():
            continue
        issues[reason] = rows[m]
        details[reason] = describe.get(reason) or row_detail(int(np.argmax(m)))
    return ValidationReport(len(frame), issues, details, tuple(notes), source)


def _descending_note(ts: np.ndarray) -> list[str]:
    if len(ts) >= 3 and np.all(np.diff(ts) < 0):
        return ["timestamps strictly decrease: the file is newest-first; sort it oldest-first and retry"]
    return []


def validate_bars(frame: pd.DataFrame, instrument: Instrument, *, source: str = "") -> ValidationReport:
    """Check every bar row of a ``load_file`` frame whose ``ts`` is already the bar-close ``ts_event``.

    An optional ``ts_file`` column (the time as stamped in the file) is what messages show, so a user
    can find the row; the checks use ``ts`` because that is what gets written.

    Price checks use the file's values; ``price_below_tick`` uses the values rounded to the instrument's
    tick. Rounding to the tick is monotone, so a row passing the range checks still passes them after
    rounding.
    """
    ts = frame["ts"].to_numpy(dtype=np.int64)
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)
    o, h, lo, c = prices.T
    v = frame["volume"].to_numpy(dtype=np.float64)
    tick = float(instrument.price_increment)
    finite = np.isfinite(prices)
    rounded = round_to_tick(prices, tick, instrument.price_precision)
    masks = {
        "timestamp_before_epoch": ts < 0,
        "nan_price": np.isnan(prices).any(axis=1),
        "inf_price": np.isinf(prices).any(axis=1),
        "non_positive_price": (finite & (prices <= 0)).any(axis=1),
        "price_out_of_range": (finite & (prices > PRICE_MAX)).any(axis=1),
        "price_below_tick": (finite & (prices > 0) & (rounded <= 0)).any(axis=1),
        "high_below_low": h < lo,
        "open_outside_range": (o < lo) | (o > h),
        "close_outside_range": (c < lo) | (c > h),
        "nan_volume": np.isnan(v),
        "inf_volume": np.isinf(v),
        "negative_volume": v < 0,
        "volume_out_of_range": np.isfinite(v) & (v > QUANTITY_MAX),
    }
    candidate = ~np.logical_or.reduce(list(masks.values()))
    rows = frame["row"].to_numpy()
    shown = frame["ts_file"].to_numpy(dtype=np.int64) if "ts_file" in frame else ts
    unsorted, dup, du, dd = _ordering(ts, candidate, rows, shown)
    masks["unsorted_timestamp"], masks["duplicate_timestamp"] = unsorted, dup

    def detail(i: int) -> str:
        return (
            f"row {rows[i]} ({_fmt_ts(shown[i])}): open={_num(o[i])} high={_num(h[i])} low={_num(lo[i])} "
            f"close={_num(c[i])} volume={_num(v[i])}"
        )

    return _finalize(
        masks,
        {"unsorted_timestamp": du, "duplicate_timestamp": dd},
        frame,
        BAR_REASONS,
        detail,
        source,
        _descending_note(ts),
    )


def validate_trades(frame: pd.DataFrame, instrument: Instrument, *, source: str = "") -> ValidationReport:
    """Check every trade row. Equal timestamps are allowed (many trades per ms); decreasing ones are not."""
    ts = frame["ts"].to_numpy(dtype=np.int64)
    p = frame["price"].to_numpy(dtype=np.float64)
    s = frame["size"].to_numpy(dtype=np.float64)
    fp, fs = np.isfinite(p), np.isfinite(s)
    rp = round_to_tick(p, float(instrument.price_increment), instrument.price_precision)
    rs = np.round(s, instrument.size_precision)
    masks = {
        "timestamp_before_epoch": ts < 0,
        "nan_price": np.isnan(p),
        "inf_price": np.isinf(p),
        "non_positive_price": fp & (p <= 0),
        "price_out_of_range": fp & (p > PRICE_MAX),
        "price_below_tick": fp & (p > 0) & (rp <= 0),
        "nan_size": np.isnan(s),
        "inf_size": np.isinf(s),
        "non_positive_size": fs & (s <= 0),
        "size_out_of_range": fs & (s > QUANTITY_MAX),
        "size_below_precision": fs & (s > 0) & (rs <= 0),
    }
    candidate = ~np.logical_or.reduce(list(masks.values()))
    rows = frame["row"].to_numpy()
    unsorted, _dup, du, _dd = _ordering(ts, candidate, rows, ts)
    masks["unsorted_timestamp"] = unsorted

    def detail(i: int) -> str:
        return f"row {rows[i]} ({_fmt_ts(ts[i])}): price={_num(p[i])} size={_num(s[i])}"

    return _finalize(
        masks, {"unsorted_timestamp": du}, frame, TRADE_REASONS, detail, source, _descending_note(ts)
    )


# -- instrument and bar type -----------------------------------------------------------------------


def _describe_instrument(inst: Instrument) -> str:
    return (
        f"{inst.id} ({type(inst).__name__}, price precision {inst.price_precision}, tick "
        f"{inst.price_increment}, size precision {inst.size_precision}, multiplier {inst.multiplier}, "
        f"{inst.quote_currency.code})"
    )


def resolve_instrument(catalog_path: str | os.PathLike[str], config: IngestConfig) -> tuple[Instrument, bool]:
    """The instrument to ingest against, and whether it is new (must be written with the data).

    An instrument already in the catalog wins; any explicitly given spec option must agree with it.
    Otherwise one is built with ``generic_instrument`` from the config (None -> documented defaults).
    """
    root = Path(catalog_path)
    existing: list[Instrument] = []
    if root.is_dir():
        try:
            existing = ParquetDataCatalog(str(root.absolute())).instruments(
                instrument_ids=[config.instrument_id]
            )
        except Exception as exc:  # pyarrow/datafusion errors share no narrower base
            raise IngestError(f"cannot read instruments from catalog {root}: {exc}") from exc
    if existing:
        inst = existing[-1]
        mismatches = []
        kind = _KIND_OF_CLASS.get(type(inst))
        if config.kind is not None and config.kind != kind:
            mismatches.append(f"kind {config.kind!r} (catalog: {kind or type(inst).__name__})")
        if config.price_precision is not None and config.price_precision != inst.price_precision:
            mismatches.append(f"price precision {config.price_precision} (catalog: {inst.price_precision})")
        if config.size_precision is not None and config.size_precision != inst.size_precision:
            mismatches.append(f"size precision {config.size_precision} (catalog: {inst.size_precision})")
        if config.tick_size is not None and Price.from_str(config.tick_size) != inst.price_increment:
            mismatches.append(f"tick size {config.tick_size} (catalog: {inst.price_increment})")
        if config.multiplier is not None and config.multiplier != int(inst.multiplier):
            mismatches.append(f"multiplier {config.multiplier} (catalog: {inst.multiplier})")
        if config.currency is not None and config.currency != inst.quote_currency.code:
            mismatches.append(f"currency {config.currency} (catalog: {inst.quote_currency.code})")
        if mismatches:
            raise IngestError(
                f"catalog {root} already has {_describe_instrument(inst)}; the requested "
                f"{'; '.join(mismatches)} disagree(s). Omit those options to use the catalog's instrument, "
                "or use a different instrument id. Nothing was written."
            )
        return inst, False
    if config.kind is not None and config.kind not in INSTRUMENT_KINDS:
        raise IngestError(f"instrument kind {config.kind!r} is not one of {INSTRUMENT_KINDS}")
    try:
        inst = generic_instrument(
            config.instrument_id,
            kind=config.kind or "equity",
            price_precision=2 if config.price_precision is None else config.price_precision,
            size_precision=0 if config.size_precision is None else config.size_precision,
            tick_size=config.tick_size,
            multiplier=1 if config.multiplier is None else config.multiplier,
            currency=config.currency or "USD",
        )
    except ValueError as exc:
        raise IngestError(f"cannot build instrument {config.instrument_id!r}: {exc}") from None
    return inst, True


def make_bar_type(instrument_id: str, bar_spec: str) -> BarType:
    """``GOOG.XNAS`` + ``1-DAY-LAST`` -> ``GOOG.XNAS-1-DAY-LAST-EXTERNAL`` (source defaults to EXTERNAL)."""
    spec = bar_spec.strip()
    if spec.count("-") == 2:
        spec += "-EXTERNAL"
    try:
        return BarType.from_str(f"{instrument_id}-{spec}")
    except ValueError as exc:
        raise IngestError(
            f"bad bar spec {bar_spec!r}: expected STEP-AGGREGATION-PRICE_TYPE like 1-MINUTE-LAST or 1-DAY-LAST "
            f"({exc})"
        ) from None


_CALENDAR = {
    int(BarAggregation.DAY): "days",
    int(BarAggregation.WEEK): "weeks",
    int(BarAggregation.MONTH): "months",
    int(BarAggregation.YEAR): "years",
}


def open_to_close(ts_open: np.ndarray, bar_type: BarType, tz: str) -> np.ndarray:
    """Shift bar-open stamps to bar-close stamps (Nautilus's convention) by one bar interval.

    Sub-day bars add a fixed interval; DAY/WEEK/MONTH/YEAR bars add calendar units in ``tz`` so a
    daily bar opening at local midnight closes at the next local midnight across DST changes.
    """
    spec = bar_type.spec
    if not spec.is_time_aggregated():
        raise IngestError(
            f"{bar_type}: a {spec} bar has no fixed length, so a bar-open timestamp cannot be turned into "
            "its close; stamp the file at bar close and pass timestamp_is='close' (--timestamp-is close)"
        )
    unit = _CALENDAR.get(int(spec.aggregation))
    if unit is None:
        return ts_open + np.int64(spec.get_interval_ns())
    local = pd.DatetimeIndex(ts_open.astype("datetime64[ns]"), tz="UTC").tz_convert(tz)
    try:
        shifted = local + pd.DateOffset(**{unit: spec.step})
        return shifted.tz_convert("UTC").asi8
    except _TZ_ERRORS as exc:
        raise IngestError(f"{bar_type}: cannot shift bar-open timestamps to close in {tz}: {exc}") from None


# -- ingest ----------------------------------------------------------------------------------------


def _refusal(report: ValidationReport) -> IngestError:
    return IngestError(
        "refused: "
        + report.summary()
        + "\nNothing was written; the catalog is unchanged. Fix those rows, or re-run with "
        "--drop-bad-rows (drop_bad_rows=True) to drop them.",
        report,
    )


def _prepare(
    path: Path, config: IngestConfig, instrument: Instrument
) -> tuple[LoadedFile, pd.DataFrame, ValidationReport, str, str]:
    loaded = load_file(path, trades=config.trades, tz=config.tz)
    frame = loaded.frame
    if config.trades:
        identifier = str(instrument.id)
        note = f"trade times as in the file, {config.tz} for naive values"
        report = validate_trades(frame, instrument, source=str(path))
    else:
        assert config.bar_spec is not None
        bar_type = make_bar_type(config.instrument_id, config.bar_spec)
        identifier = str(bar_type)
        if config.timestamp_is == "open":
            stamped = frame["ts"].to_numpy(dtype=np.int64)
            frame = frame.assign(ts=open_to_close(stamped, bar_type, config.tz), ts_file=stamped)
            note = (
                f"file stamps bar open; +{bar_type.spec.step} {_agg_name(bar_type)} added so ts_event = bar "
                f"close ({config.tz} for naive values)"
            )
        else:
            note = f"file stamps bar close; used as ts_event ({config.tz} for naive values)"
        report = validate_bars(frame, instrument, source=str(path))
    return loaded, frame, report, identifier, note


def _agg_name(bar_type: BarType) -> str:
    return str(bar_type.spec).split("-")[1].lower()


def _check_config(config: IngestConfig) -> None:
    if config.trades and config.bar_spec is not None:
        raise IngestError("trades ingest takes no bar spec (drop --bar-spec, or drop --trades for bars)")
    if not config.trades and not config.bar_spec:
        raise IngestError(
            "bar ingest needs a bar spec such as 1-MINUTE-LAST or 1-DAY-LAST (--bar-spec); "
            "for a trades file pass --trades"
        )
    if config.timestamp_is not in ("open", "close"):
        raise IngestError(f"timestamp_is must be 'open' or 'close', got {config.timestamp_is!r}")
    if not config.trades and config.bar_spec:  # fail on a bad spec before reading a large file
        bar_type = make_bar_type(config.instrument_id, config.bar_spec)
        if config.timestamp_is == "open" and not bar_type.spec.is_time_aggregated():
            open_to_close(np.empty(0, dtype=np.int64), bar_type, config.tz)  # raises the explanation


def build_objects(
    frame: pd.DataFrame, instrument: Instrument, identifier: str, trades: bool
) -> tuple[list, int, float, int]:
    """Round to the instrument's grid and build Nautilus objects.

    Returns (objects, price values changed by rounding, largest price change, sizes/volumes changed).
    ``frame`` must already be valid (as after validation and dropping).
    """
    prec, sprec = instrument.price_precision, instrument.size_precision
    tick = float(instrument.price_increment)
    ts = frame["ts"].to_numpy(dtype=np.int64).astype(np.uint64)
    if trades:
        raw_p = frame["price"].to_numpy(dtype=np.float64)
        raw_s = frame["size"].to_numpy(dtype=np.float64)
        p = np.ascontiguousarray(round_to_tick(raw_p, tick, prec))
        s = np.ascontiguousarray(np.round(raw_s, sprec))
        changed = p != raw_p
        n_sizes = int(np.sum(s != raw_s))
        if "trade_id" in frame:
            ids = [str(x) for x in frame["trade_id"]]
        else:
            seq = pd.Series(ts).groupby(ts).cumcount().to_numpy()
            ids = [f"{t}-{k}" for t, k in zip(ts.tolist(), seq.tolist(), strict=True)]
        sides = np.ascontiguousarray(frame["side"].to_numpy(dtype=np.uint8))
        objs = TradeTick.from_raw_arrays_to_list(instrument.id, prec, sprec, p, s, sides, ids, ts, ts)
        max_change = float(np.max(np.abs(p - raw_p))) if len(p) else 0.0
        return objs, int(changed.sum()), max_change, n_sizes
    raw = frame[["open", "high", "low", "close"]].to_numpy(dtype=np.float64)
    r = round_to_tick(raw, tick, prec)
    o, h, lo, c = (np.ascontiguousarray(r[:, i]) for i in range(4))
    # Monotone rounding keeps low <= open, close <= high; a violation here would be a bug, not bad data.
    if np.any(h < lo) or np.any((o < lo) | (o > h) | (c < lo) | (c > h)):
        raise IngestError(
            "internal error: rounding to the tick broke low <= open/close <= high; nothing written"
        )
    raw_v = frame["volume"].to_numpy(dtype=np.float64)
    v = np.ascontiguousarray(np.round(raw_v, sprec))
    bar_type = BarType.from_str(identifier)
    objs = Bar.from_raw_arrays_to_list(bar_type, prec, sprec, o, h, lo, c, v, ts, ts)
    changed = r != raw
    max_change = float(np.max(np.abs(r - raw))) if r.size else 0.0
    return objs, int(changed.sum()), max_change, int(np.sum(v != raw_v))


def ingest_file(
    path: str | os.PathLike[str],
    catalog_path: str | os.PathLike[str],
    config: IngestConfig,
    *,
    dry_run: bool = False,
) -> IngestReport:
    """Validate ``path`` and add its bars or trades (and the instrument, if new) to the catalog.

    Raises ``IngestError`` (including ``ColumnError``) when the file is refused, the data overlaps what
    the catalog already holds for that bar type / instrument, or the write fails; in every such case
    the catalog is byte-for-byte unchanged. ``dry_run=True`` does every check (overlap included) but
    writes nothing. ``catalog_path`` is created if it does not exist.
    """
    _check_config(config)
    src = Path(path)
    instrument, is_new = resolve_instrument(catalog_path, config)
    loaded, frame, report, identifier, ts_note = _prepare(src, config, instrument)
    if not report.ok and not config.drop_bad_rows:
        raise _refusal(report)
    bad = report.bad_rows
    kept = frame[~frame["row"].isin(bad)] if len(bad) else frame
    if len(kept) == 0:
        raise IngestError(
            "refused: every row is bad, nothing left to write; the catalog is unchanged.\n"
            + report.summary(),
            report,
        )
    objs, n_rounded, max_change, n_sizes = build_objects(kept, instrument, identifier, config.trades)
    to_write = ([instrument] if is_new else []) + objs
    try:
        plan = plan_catalog_write(catalog_path, to_write)
        result: CatalogWriteResult | None = None if dry_run else commit_plan(plan)
    except CatalogWriteError as exc:
        raise IngestError(f"refused: {exc}") from exc
    notes = list(loaded.notes) + list(report.notes)
    tick_frac = max_change / float(instrument.price_increment)
    if tick_frac > 0.1:
        notes.append(
            f"prices moved by up to {tick_frac:.0%} of a tick when rounded: the file has more decimals than "
            f"the instrument's tick {instrument.price_increment}; check the price precision / tick size"
        )
    ts = kept["ts"].to_numpy(dtype=np.int64)
    return IngestReport(
        source=str(src),
        catalog_path=str(Path(catalog_path)),
        trades=config.trades,
        identifier=identifier,
        instrument=_describe_instrument(instrument),
        instrument_written=is_new and str(instrument.id) in plan.instruments_new,
        rows_read=report.n_rows,
        rows_written=len(kept),
        rows_dropped=len(bad),
        dropped_by_reason={r: len(rows) for r, rows in report.issues.items()},
        prices_rounded=n_rounded,
        max_price_change=max_change,
        sizes_rounded=n_sizes,
        first_ts=int(ts[0]),
        last_ts=int(ts[-1]),
        timestamp_note=ts_note,
        columns=dict(loaded.columns),
        ignored_columns=loaded.ignored_columns,
        files=result.files if result is not None else (),
        dry_run=dry_run,
        notes=tuple(notes),
        validation=report,
    )
