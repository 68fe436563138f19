"""Fast, all-or-nothing writer of sage custom data into a Nautilus ``ParquetDataCatalog``.

Why not ``catalog.write_data``: for custom types it serialises one object at a time (~10k rows/s), it
checks for overlapping files only *after* saving the new one (so a refused write leaves the catalog
inconsistent), and a crash mid-write leaves a truncated ``.parquet`` that later queries pick up.

This writer produces the same files ``write_data`` would — same directory
(``<catalog>/data/custom_<snake_name>/<instrument id without "/">/``), same
``<start>_<end>.parquet`` naming from the first/last ``ts_init``, same Arrow schema and metadata, the
catalog's row-group size — so ``catalog.query``, ``catalog.custom_data`` and ``BacktestNode`` read them
unchanged. Differences are the guarantees:

* every check (types, field rules, ``ts_event <= ts_init``, ``ts_init`` sorted per instrument, no
  overlap with any existing file's interval) runs before anything touches the disk; a refusal raises
  :class:`CatalogWriteError` naming the class, the intervals and the first offending row;
* each file is written to a hidden temp file in its target directory (the catalog globs ``*.parquet``,
  so the temp file is never visible to queries), fsynced, then ``os.replace``-d into place; on any
  exception every temp file, every already-renamed file of this call and every directory this call
  created are removed, leaving the catalog byte-for-byte as it was;
* the columnar path (an Arrow table or a dict of numpy arrays) never builds Python objects, which is
  what makes >1M rows/s possible.

The catalog itself is not thread-safe; neither is this writer (it re-checks overlaps right before the
rename, which narrows but does not close the race with a concurrent writer).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from nautilus_trader.core.datetime import unix_nanos_to_iso8601
from nautilus_trader.model.data import CustomData

# Private helpers on purpose: the interval must be parsed from / rendered into file names exactly as the
# catalog does, or the overlap check and the catalog's own file pruning would disagree.
from nautilus_trader.persistence.catalog.parquet import (
    ParquetDataCatalog,
    _parse_filename_timestamps,
    _timestamps_to_filename,
)
from nautilus_trader.persistence.funcs import class_to_filename, urisafe_identifier

from sage.data.commit_journal import CommitJournal, fsync_dir
from sage.data.types import SageData

__all__ = ["CatalogWriteError", "custom_data_directory", "write_custom_data"]

ColumnBatch = pa.Table | Mapping[str, Any]


class CatalogWriteError(ValueError):
    """A write was refused (or rolled back); the catalog is unchanged."""


@dataclass(frozen=True, slots=True)
class _FilePlan:
    identifier: str
    directory: Path
    filename: str
    start: int
    end: int
    table: pa.Table

    @property
    def path(self) -> Path:
        return self.directory / self.filename


def custom_data_directory(
    catalog: ParquetDataCatalog | str | os.PathLike[str], cls: type, identifier: str
) -> Path:
    """Directory ``write_data`` uses for ``cls`` rows of ``identifier`` (an instrument id string)."""
    root = Path(_local_catalog(catalog).path)
    return root / "data" / class_to_filename(cls) / urisafe_identifier(identifier)


def write_custom_data(
    catalog: ParquetDataCatalog | str | os.PathLike[str],
    cls: type[SageData],
    data: Sequence[SageData | CustomData] | ColumnBatch,
    *,
    start: int | None = None,
    end: int | None = None,
    row_group_size: int | None = None,
    durable: bool = True,
) -> list[Path]:
    """Write ``data`` of type ``cls`` into ``catalog``; return the new files (one per instrument id).

    ``data`` is a list of ``cls`` instances (or ``CustomData`` wrapping them, as ``catalog.query``
    returns), or a columnar batch: an Arrow table or a mapping of field name -> numpy array / list /
    scalar in ``cls.SCHEMA`` (see ``SageData.columns_to_table``). Rows must be sorted by ``ts_init``
    within each instrument. ``start``/``end`` override the interval encoded in the file name (like
    ``write_data``) but must cover the rows. ``row_group_size`` defaults to the catalog's
    ``max_rows_per_group``; ``durable`` fsyncs file and directory before returning.

    Raises :class:`CatalogWriteError` (catalog untouched) when the batch is invalid, unsorted, empty or
    would overlap an existing file; any other exception during the write is re-raised after rollback.
    """
    cat = _local_catalog(catalog)
    table = _to_table(cls, data)
    plans = _plan(cat, cls, table, start, end)
    return _commit(cls, plans, row_group_size or cat.max_rows_per_group, durable, Path(cat.path))


# -- preparation (no disk writes) -------------------------------------------------------------------


def _local_catalog(catalog: ParquetDataCatalog | str | os.PathLike[str]) -> ParquetDataCatalog:
    if not isinstance(catalog, ParquetDataCatalog):
        catalog = ParquetDataCatalog(os.path.abspath(os.fspath(catalog)))
    cat = catalog
    if cat.fs_protocol != "file":
        raise CatalogWriteError(
            f"write_custom_data needs a local catalog (atomic rename); got protocol {cat.fs_protocol!r}"
        )
    return cat


def _to_table(cls: type[SageData], data: Sequence[SageData | CustomData] | ColumnBatch) -> pa.Table:
    if not (isinstance(cls, type) and issubclass(cls, SageData) and cls is not SageData):
        raise TypeError(f"cls must be one of the sage data types, got {cls!r}")
    try:
        if isinstance(data, pa.Table | pa.RecordBatch | Mapping):
            table = cls.columns_to_table(data)
        else:
            objs = [d.data if isinstance(d, CustomData) else d for d in data]
            wrong = next((i for i, o in enumerate(objs) if type(o) is not cls), None)
            if wrong is not None:
                raise TypeError(f"row {wrong}: expected {cls.__name__}, got {type(objs[wrong]).__name__}")
            table = cls.objects_to_table(objs)
            cls.validate_table(table)
    except (ValueError, TypeError) as e:
        raise CatalogWriteError(f"{cls.__name__}: refusing to write: {e}") from e
    if table.num_rows == 0:
        raise CatalogWriteError(f"{cls.__name__}: refusing to write an empty batch")
    return table


def _iso(ns: int) -> str:
    return unix_nanos_to_iso8601(int(ns))


def _plan(
    cat: ParquetDataCatalog,
    cls: type[SageData],
    table: pa.Table,
    start: int | None,
    end: int | None,
) -> list[_FilePlan]:
    name = cls.__name__
    ts_init = table.column("ts_init").to_numpy()
    ts_event = table.column("ts_event").to_numpy()
    ahead = np.flatnonzero(ts_event > ts_init)
    if ahead.size:
        r = int(ahead[0])
        raise CatalogWriteError(
            f"{name}: refusing to write: row {r} has ts_event {ts_event[r]} ({_iso(ts_event[r])}) after "
            f"ts_init {ts_init[r]} ({_iso(ts_init[r])}); a record cannot exist before its event"
        )
    if start is not None and end is not None and start > end:
        raise CatalogWriteError(f"{name}: refusing to write: start {start} > end {end}")

    root = Path(cat.path) / "data" / class_to_filename(cls)
    ids = table.column("instrument_id").combine_chunks()
    if pc.all(pc.equal(ids, ids[0])).as_py():  # the usual case; one compare pass beats hashing
        identifiers, codes = [ids[0].as_py()], None
    else:
        encoded = ids.dictionary_encode()
        identifiers, codes = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
    plans: list[_FilePlan] = []
    for code in np.argsort(identifiers, kind="stable"):  # write_data's order: sorted by identifier
        identifier = identifiers[int(code)]
        rows = None if codes is None else np.flatnonzero(codes == code)
        ts = ts_init if rows is None else ts_init[rows]
        _check_sorted(name, identifier, ts, rows)
        first, last = int(ts[0]), int(ts[-1])
        lo = first if start is None else int(start)
        hi = last if end is None else int(end)
        if lo > first or hi < last:
            raise CatalogWriteError(
                f"{name} {identifier}: refusing to write: interval [{lo}, {hi}] does not cover the rows' "
                f"ts_init range [{first}, {last}]"
            )
        directory = root / urisafe_identifier(identifier)
        _check_overlap(name, identifier, directory, lo, hi, ts, rows)
        part = table if rows is None else table.take(pa.array(rows))
        plans.append(_FilePlan(identifier, directory, _timestamps_to_filename(lo, hi), lo, hi, part))
    return plans


def _check_sorted(name: str, identifier: str, ts: np.ndarray, rows: np.ndarray | None) -> None:
    down = np.flatnonzero(ts[1:] < ts[:-1])
    if down.size:
        i = int(down[0]) + 1
        r = i if rows is None else int(rows[i])
        p = i - 1 if rows is None else int(rows[i - 1])
        raise CatalogWriteError(
            f"{name} {identifier}: refusing to write: rows are not sorted by ts_init; row {r} "
            f"(ts_init {ts[i]}, {_iso(ts[i])}) comes after row {p} (ts_init {ts[i - 1]}, {_iso(ts[i - 1])})"
        )


def _existing_intervals(directory: Path) -> list[tuple[int, int, str]]:
    if not directory.is_dir():
        return []
    out = []
    for path in directory.glob("*.parquet"):
        interval = _parse_filename_timestamps(path.name)
        if interval is not None:
            out.append((interval[0], interval[1], path.name))
    return sorted(out)


def _check_overlap(
    name: str,
    identifier: str,
    directory: Path,
    lo: int,
    hi: int,
    ts: np.ndarray,
    rows: np.ndarray | None,
) -> None:
    # The catalog treats file intervals as closed: [a, b] and [b, c] overlap.
    for e_lo, e_hi, fname in _existing_intervals(directory):
        if lo <= e_hi and e_lo <= hi:
            inside = np.flatnonzero((ts >= e_lo) & (ts <= e_hi))
            if inside.size:
                i = int(inside[0])
                r = i if rows is None else int(rows[i])
                first = f"first offending row {r} (ts_init {ts[i]}, {_iso(ts[i])})"
            else:
                first = "no row falls inside it, but the new file's interval would enclose it"
            raise CatalogWriteError(
                f"{name} {identifier}: refusing to write: new interval [{lo}, {hi}] ({_iso(lo)} .. {_iso(hi)}) "
                f"overlaps existing file {fname} [{e_lo}, {e_hi}] ({_iso(e_lo)} .. {_iso(e_hi)}); {first}"
            )


# -- commit (all or nothing) --------------------------------------------------------------------------


def _commit(
    cls: type[SageData], plans: list[_FilePlan], row_group_size: int, durable: bool, root: Path
) -> list[Path]:
    created_dirs: list[Path] = []
    temps: list[Path] = []
    done: list[Path] = []
    try:
        for plan in plans:
            created_dirs.extend(_makedirs(plan.directory))
            tmp = plan.directory / f".{plan.filename}.{uuid.uuid4().hex}.tmp"
            temps.append(tmp)
            _write_parquet(plan.table, tmp, row_group_size, durable)
        for plan in plans:  # another writer may have added a file since _plan looked
            ts = plan.table.column("ts_init").to_numpy()
            _check_overlap(cls.__name__, plan.identifier, plan.directory, plan.start, plan.end, ts, None)
        # A process killed between two renames leaves the journal: `sage catalog clean` then removes the
        # renamed files (sage.data.commit_journal); an exception rolls back below and drops the journal.
        with CommitJournal(root, [plan.path for plan in plans], durable=durable):
            for plan, tmp in zip(plans, temps, strict=True):
                os.replace(tmp, plan.path)
                done.append(plan.path)
        if durable:
            for directory in {p.directory for p in plans}:
                fsync_dir(directory)
    except BaseException:
        for path in (*temps, *done):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for directory in reversed(created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    return done


def _makedirs(directory: Path) -> list[Path]:
    """Create ``directory`` and missing parents; return the ones created, outermost first."""
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
    return list(reversed(missing))


def _write_parquet(table: pa.Table, path: Path, row_group_size: int, durable: bool) -> None:
    # Dictionary encoding only for text columns: on float columns it costs ~3x the write time and
    # buys nothing (model outputs rarely repeat). Readers do not care which encoding a page uses.
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # claim the name; never clobber
    os.close(fd)
    pq.write_table(table, str(path), row_group_size=row_group_size, use_dictionary=text)
    if durable:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

