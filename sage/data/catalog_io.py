"""All-or-nothing writes of Nautilus objects into a ``ParquetDataCatalog``.

Why this exists: ``ParquetDataCatalog.write_data`` writes each (type, identifier) group straight into the
catalog and only *afterwards* asserts that the new file's interval is disjoint from the existing ones; a
batch that overlaps, is unsorted, or hits a disk error halfway leaves some new files behind and a
catalog that queries return duplicated or partial data from. Users ingest their own files into the same
catalog they backtest against, so a failed ingest must leave it exactly as it was.

How: (1) plan — group the objects exactly as Nautilus does, check ordering, check each group's
``[first ts_init, last ts_init]`` interval against the intervals Nautilus itself derives from the
existing file names (``ParquetDataCatalog.get_intervals``), and skip instruments already present;
nothing is touched if the plan fails. (2) stage — let Nautilus write the new files into a private
catalog ``<catalog>/.staging-XXXX`` on the same filesystem, so file names, schemas and metadata are
Nautilus's own. (3) commit — move every staged file into place with ``os.replace`` (atomic per file on
POSIX). Any failure in (2) or (3) moves already-committed files back, removes directories this call
created and deletes the staging directory, so the catalog's files are byte-for-byte unchanged.

Limits: the commit is atomic per file, not across files, so a process killed during step (3) can leave
a subset of the new files (each one complete); the commit journal it leaves behind lets
``sage catalog clean`` remove them again (:mod:`sage.data.commit_journal`). Like Nautilus's catalog,
this is not safe against two writers on the same catalog at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from nautilus_trader.core.datetime import unix_nanos_to_iso8601
from nautilus_trader.model.data import Bar, CustomData, QuoteTick, TradeTick
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog
from nautilus_trader.persistence.funcs import class_to_filename, urisafe_identifier
from nautilus_trader.serialization.arrow.serializer import ArrowSerializer

from sage.data.commit_journal import CommitJournal

STAGING_PREFIX = ".staging-"

# Instrument fields that only say when the definition was recorded, not what it is: two otherwise equal
# definitions with different stamps are the same instrument and must not be stored twice.
_INSTRUMENT_TIME_FIELDS = ("ts_event", "ts_init")


class CatalogWriteError(Exception):
    """A catalog write was refused or failed; the catalog was left unchanged."""


class CatalogOverlapError(CatalogWriteError):
    """New data overlaps the time range of data already stored for the same type and identifier."""


class CatalogConflictError(CatalogWriteError):
    """An instrument with the same id but a different definition is already in the catalog."""


@dataclass(frozen=True)
class GroupPlan:
    """One (data class, identifier) group of a planned write: what would become one parquet file."""

    data_cls: type
    identifier: str | None
    count: int
    start_ns: int
    end_ns: int

    @property
    def label(self) -> str:
        """``Bar ES.XCME-1-MINUTE-LAST-EXTERNAL`` — how messages name the group."""
        return f"{self.data_cls.__name__} {self.identifier}" if self.identifier else self.data_cls.__name__


@dataclass(frozen=True)
class CatalogWritePlan:
    """The checked outcome of planning a write; ``objects`` is what will actually be written."""

    catalog_path: Path
    groups: tuple[GroupPlan, ...]
    instruments_new: tuple[str, ...]
    instruments_existing: tuple[str, ...]
    objects: tuple[Any, ...] = field(repr=False)


@dataclass(frozen=True)
class CatalogWriteResult:
    """What a committed write added: files relative to the catalog root, and instrument bookkeeping."""

    catalog_path: Path
    files: tuple[str, ...]
    groups: tuple[GroupPlan, ...]
    instruments_written: tuple[str, ...]
    instruments_existing: tuple[str, ...]


def _group_key(obj: Any) -> tuple[str, str | None]:
    """Mirror ``ParquetDataCatalog.write_data``'s grouping so each planned group is one Nautilus file."""
    if isinstance(obj, Instrument):
        return type(obj).__name__, obj.id.value
    if hasattr(obj, "bar_type"):
        return type(obj).__name__, str(obj.bar_type)
    if hasattr(obj, "instrument_id"):
        return type(obj).__name__, obj.instrument_id.value
    return type(obj).__name__, None


def _group(items: list[Any]) -> list[tuple[tuple[str, str | None], list[Any]]]:
    """Group objects by ``_group_key`` in O(n), keeping each group's order, groups sorted by key.

    The common market-data types are keyed by their hashable identifier *object*: converting an
    identifier to ``str`` per object (or ``hasattr`` misses, which raise inside Cython) costs seconds
    over a million ticks, so the string key is computed once per group.
    """
    buckets: dict[tuple[type, Any], list[Any]] = {}
    for obj in items:
        cls = type(obj)
        if cls is Bar:
            fast: Any = obj.bar_type
        elif cls is TradeTick or cls is QuoteTick:
            fast = obj.instrument_id
        else:
            fast = _group_key(obj)
        bucket = buckets.get((cls, fast))
        if bucket is None:
            buckets[(cls, fast)] = bucket = []
        bucket.append(obj)
    merged: dict[tuple[str, str | None], list[Any]] = {}
    for chunk in buckets.values():
        merged.setdefault(_group_key(chunk[0]), []).extend(chunk)
    return sorted(merged.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))


def _iso(ns: int) -> str:
    return unix_nanos_to_iso8601(ns)


def _instrument_rows(instruments: Sequence[Instrument]) -> list[dict[str, Any]]:
    """Serialise through Nautilus's own Arrow path so comparison is immune to lossy round-trips."""
    table = ArrowSerializer.serialize_batch(list(instruments), data_cls=type(instruments[0]))
    rows = table.to_pylist()
    for row in rows:
        for name in _INSTRUMENT_TIME_FIELDS:
            row.pop(name, None)
    return rows


def _existing_instrument_dirs(root: Path, instrument_id: str) -> list[tuple[type, Path]]:
    """Every catalog directory that holds an instrument with this id, whatever its instrument class."""
    found = []
    for cls in Instrument.__subclasses__():
        directory = root / "data" / class_to_filename(cls) / urisafe_identifier(instrument_id)
        if directory.is_dir() and any(directory.glob("*.parquet")):
            found.append((cls, directory))
    return found


def _unique_instruments(instruments: list[Instrument]) -> list[Instrument]:
    """Drop repeats of one definition within a batch (e.g. a builder passing the same spec twice)."""
    seen: list[dict[str, Any]] = []
    unique = []
    for inst, row in zip(instruments, _instrument_rows(instruments), strict=True):
        if row not in seen:
            seen.append(row)
            unique.append(inst)
    return unique


def _check_instrument(root: Path, instruments: list[Instrument]) -> bool:
    """Return True if an identical instrument is already stored; raise if a different one is."""
    iid = instruments[0].id.value
    existing = _existing_instrument_dirs(root, iid)
    if not existing:
        return False
    new_rows = _instrument_rows(instruments)
    for cls, directory in existing:
        if cls is not type(instruments[0]):
            raise CatalogConflictError(
                f"instrument {iid} is already in the catalog as a {cls.__name__}; refusing to add a "
                f"{type(instruments[0]).__name__} with the same id (catalog unchanged)"
            )
        stored = pq.read_table(sorted(str(p) for p in directory.glob("*.parquet"))).to_pylist()
        for row in stored:
            for name in _INSTRUMENT_TIME_FIELDS:
                row.pop(name, None)
        for new in new_rows:
            if new not in stored:
                last = stored[-1]
                diffs = sorted(k for k in new.keys() | last.keys() if new.get(k) != last.get(k))
                raise CatalogConflictError(
                    f"instrument {iid} is already in the catalog with a different definition "
                    f"(differs in: {', '.join(diffs)}); refusing to store a second one (catalog unchanged)"
                )
    return True


def plan_catalog_write(catalog_path: str | os.PathLike[str], objects: Iterable[Any]) -> CatalogWritePlan:
    """Check a write without touching the catalog; raise ``CatalogWriteError`` if it would be refused.

    Refused when: there is nothing to write; a group's ``ts_init`` decreases (Nautilus requires
    non-decreasing data per file); a group's closed interval ``[first ts_init, last ts_init]``
    intersects any existing file's interval for the same class and identifier (Nautilus treats
    touching endpoints as overlap too); an instrument id exists with a different definition.
    Instruments identical to a stored one (ignoring ``ts_event``/``ts_init``) are dropped from the
    write instead of being stored twice.
    """
    root = Path(catalog_path).absolute()
    items = list(objects)
    if not items:
        raise CatalogWriteError("nothing to write (empty object list); catalog unchanged")
    if any(isinstance(o, CustomData) for o in items):
        raise CatalogWriteError("CustomData is not supported by atomic_catalog_write")

    catalog = ParquetDataCatalog(str(root)) if root.is_dir() else None
    to_write: list[Any] = []
    groups: list[GroupPlan] = []
    new_instruments: list[str] = []
    existing_instruments: list[str] = []
    for (cls_name, identifier), chunk in _group(items):
        data_cls = type(chunk[0])
        if isinstance(chunk[0], Instrument):
            chunk = _unique_instruments(chunk)
            if root.is_dir() and _check_instrument(root, chunk):
                existing_instruments.append(str(identifier))
                continue
            new_instruments.append(str(identifier))
        ts = np.fromiter((o.ts_init for o in chunk), dtype=np.uint64, count=len(chunk))
        down = np.flatnonzero(ts[1:] < ts[:-1])
        if len(down):
            i = int(down[0]) + 1
            raise CatalogWriteError(
                f"{cls_name} {identifier}: ts_init decreases at object {i} "
                f"({_iso(int(ts[i - 1]))} then {_iso(int(ts[i]))}); sort the data first (catalog unchanged)"
            )
        plan = GroupPlan(data_cls, identifier, len(chunk), int(ts[0]), int(ts[-1]))
        if catalog is not None and not isinstance(chunk[0], Instrument):
            for start, end in catalog.get_intervals(data_cls, identifier):
                if plan.start_ns <= end and start <= plan.end_ns:
                    raise CatalogOverlapError(
                        f"{plan.label}: new data {_iso(plan.start_ns)} .. {_iso(plan.end_ns)} overlaps "
                        f"data already in the catalog {_iso(start)} .. {_iso(end)}; "
                        "nothing was written (catalog unchanged)"
                    )
        groups.append(plan)
        to_write.extend(chunk)
    return CatalogWritePlan(
        catalog_path=root,
        groups=tuple(groups),
        instruments_new=tuple(new_instruments),
        instruments_existing=tuple(existing_instruments),
        objects=tuple(to_write),
    )


def _make_dirs(directory: Path, created: list[Path]) -> None:
    """``mkdir -p`` that records each directory it creates so a rollback can remove exactly those."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        d = d.parent
    for d in reversed(missing):
        d.mkdir()
        created.append(d)


def _rollback(moved: list[tuple[Path, Path]], created: list[Path]) -> None:
    """Undo a partial commit: new files out, then the directories this write created (deepest first)."""
    for src, dest in reversed(moved):
        try:
            os.replace(dest, src)
        except OSError:
            dest.unlink(missing_ok=True)
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


def commit_plan(plan: CatalogWritePlan) -> CatalogWriteResult:
    """Stage and commit a checked plan (see module docstring); on any failure the catalog is unchanged."""
    root = plan.catalog_path
    if not plan.objects:
        return CatalogWriteResult(root, (), plan.groups, (), plan.instruments_existing)
    created: list[Path] = []
    moved: list[tuple[Path, Path]] = []
    staging: Path | None = None
    try:
        _make_dirs(root, created)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
        ParquetDataCatalog(str(staging)).write_data(list(plan.objects))
        staged = sorted(p for p in staging.rglob("*") if p.is_file())
        pairs = [(src, root / src.relative_to(staging)) for src in staged]
        clashes = [str(dest.relative_to(root)) for _, dest in pairs if dest.exists()]
        if clashes:  # a concurrent writer, or a file name the interval check could not foresee
            raise CatalogOverlapError(
                f"refusing to overwrite existing catalog files: {', '.join(clashes)} (catalog unchanged)"
            )
        # A process killed between two renames leaves the journal behind: `sage catalog clean` then removes
        # the files already moved (sage.data.commit_journal); an exception rolls back below as before.
        with CommitJournal(root, [dest for _, dest in pairs]):
            for src, dest in pairs:
                _make_dirs(dest.parent, created)
                os.replace(src, dest)
                moved.append((src, dest))
    except BaseException as exc:
        # Staging first: it lives inside the catalog root, which the rollback may need to remove.
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        _rollback(moved, created)
        if isinstance(exc, CatalogWriteError) or not isinstance(exc, Exception):
            raise
        raise CatalogWriteError(f"writing to catalog {root} failed, catalog unchanged: {exc!r}") from exc
    shutil.rmtree(staging, ignore_errors=True)
    return CatalogWriteResult(
        catalog_path=root,
        files=tuple(str(dest.relative_to(root)) for _, dest in moved),
        groups=plan.groups,
        instruments_written=plan.instruments_new,
        instruments_existing=plan.instruments_existing,
    )


def atomic_catalog_write(catalog_path: str | os.PathLike[str], objects: Iterable[Any]) -> CatalogWriteResult:
    """Write instruments and data (bars, trade/quote ticks, ...) to a catalog all-or-nothing.

    ``catalog_path`` is created if missing (and removed again if the write fails). Objects may be
    mixed and in any group order; within one (class, identifier) group they must be non-decreasing in
    ``ts_init``. Raises ``CatalogOverlapError``, ``CatalogConflictError`` or ``CatalogWriteError``
    (all leave the catalog unchanged).
    """
    return commit_plan(plan_catalog_write(catalog_path, objects))
