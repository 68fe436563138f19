"""``RegimeReplayActor``: publish precomputed ``RegimeData`` from a catalog, streamed in bounded batches.

Why an actor and not a ``BacktestDataConfig``: Nautilus 1.221 refuses ``chunk_size`` streaming when a
run loads custom data, so a ``BacktestNode`` replaying ``RegimeData`` through its data path holds every
record (and every bar) in memory at once -- about 2.9 GB at 1M bars. This actor reads the records
itself, ``batch_rows`` at a time (``pyarrow.parquet.ParquetFile.iter_batches``), so the run can stream
its bars in chunks too and memory no longer grows with the length of the replay.

It behaves like the live :class:`~sage.regime.actor.RegimeActor` without computing anything: on each bar
of ``bar_type`` it publishes the record stamped at that bar (same ``DataType`` and metadata), so a
``SageStrategy`` makes the same decisions and gets the same fills as with the live actor
(``tests/regime/test_replay_actor.py``).

Which records are published, exactly: the stored records are a sequence with strictly increasing
``ts_event`` (checked, batch by batch). On a bar at time ``t`` every not-yet-published record with
``ts_event <= t`` is due: the one stamped at ``t`` is published; older ones belong to bars this run never
saw (the run starts later than the records, or they were computed on other bars) and are skipped, never
published late -- the live actor would not have published them either. Skips while the replay is under
way and bars without a record are logged once as warnings; counts of published, skipped and
never-reached records are logged at stop and readable as attributes.

Failure policy (fail closed, at start where possible): no catalog, no RegimeData files for the
instrument, a file whose name is not a catalog interval, overlapping files, a file whose schema is not
``RegimeData``'s -> :class:`ReplayError` at start, naming the file. Rows out of order, duplicates,
invalid values or another instrument's rows -> :class:`ReplayError` when their batch is read, naming the
file and the row.

Catalog path: ``catalog_path: null`` in a YAML config means "the run's catalog" (what ``--catalog``
gives, or the data entries' common catalog); :func:`resolve_replay_catalogs` fills it in on the raw
mapping. Only local catalogs are supported.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType, DataType
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.persistence.catalog.parquet import _parse_filename_timestamps
from nautilus_trader.persistence.funcs import class_to_filename, urisafe_identifier

from sage.data.types import RegimeData

__all__ = [
    "REPLAY_ACTOR_PATH",
    "RegimeReplayActor",
    "RegimeReplayActorConfig",
    "ReplayError",
    "ReplayFile",
    "regime_files",
    "resolve_replay_catalogs",
]

#: How configs name the actor (``engine.actors[*].actor_path``).
REPLAY_ACTOR_PATH = "sage.regime.replay:RegimeReplayActor"


class ReplayError(ValueError):
    """Precomputed regimes that cannot be replayed faithfully; the message names the file (and row)."""


class RegimeReplayActorConfig(ActorConfig, frozen=True):
    """Configuration for :class:`RegimeReplayActor`.

    Parameters
    ----------
    bar_type : str
        The bars the records were computed on (e.g. ``ESU3.XCME-1-MINUTE-LAST-EXTERNAL``); the actor
        subscribes to them and publishes the record stamped at each bar.
    catalog_path : str, optional
        The ``ParquetDataCatalog`` holding the ``RegimeData``. In YAML leave it null: it then means the
        run's catalog (``--catalog``; see :func:`resolve_replay_catalogs`). Empty at start is an error.
    instrument_id : str, optional
        Whose records to replay; default: the bar type's instrument.
    batch_rows : int, default 20_000
        Records decoded at a time. The actor never holds more decoded records than this; the Arrow
        reader additionally holds one parquet row group (the catalog's ``max_rows_per_group``).
    metadata : dict[str, str], optional
        ``DataType`` metadata of the published records, as ``RegimeActorConfig.metadata``: subscribers
        with metadata must use exactly the same dict; subscribers without metadata receive everything.
    """

    bar_type: str
    catalog_path: str | None = None
    instrument_id: str | None = None
    batch_rows: int = 20_000
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ReplayFile:
    """One parquet file of the replay, with the ``ts_init`` interval its name encodes."""

    path: Path
    start: int
    end: int
    rows: int


def regime_files(catalog_path: str | os.PathLike[str], instrument_id: str) -> list[ReplayFile]:
    """The ``RegimeData`` files of ``instrument_id`` in a local catalog, in interval order, checked.

    Same layout as :func:`sage.data.catalog_writer.custom_data_directory` (and Nautilus's
    ``write_data``): ``<catalog>/data/<class>/<instrument>/<start>_<end>.parquet``. Raises
    :class:`ReplayError` when the catalog or the files are missing, a name is not an interval,
    intervals overlap, or a file's schema lacks a ``RegimeData`` field or has it with another type.
    """
    root = Path(catalog_path)
    if not root.is_dir():
        raise ReplayError(f"RegimeReplayActor: catalog {root} does not exist")
    directory = root / "data" / class_to_filename(RegimeData) / urisafe_identifier(str(instrument_id))
    paths = sorted(directory.glob("*.parquet")) if directory.is_dir() else []
    if not paths:
        raise ReplayError(
            f"RegimeReplayActor: no RegimeData for {instrument_id} in catalog {root} (looked in {directory}); "
            f"write them with `sage regime precompute --bar-type BAR_TYPE --catalog {root}`"
        )
    files: list[ReplayFile] = []
    for path in paths:
        try:
            interval = _parse_filename_timestamps(path.name)
        except ValueError:
            interval = None
        if interval is None:
            raise ReplayError(
                f"RegimeReplayActor: {path}: file name is not a catalog interval <start>_<end>.parquet, "
                "so its place in the replay is unknown"
            )
        try:
            meta = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise ReplayError(f"RegimeReplayActor: {path}: not a readable parquet file ({exc})") from None
        with meta:
            _check_schema(path, meta.schema_arrow)
            rows = meta.metadata.num_rows
        files.append(ReplayFile(path, interval[0], interval[1], rows))
    files.sort(key=lambda f: (f.start, f.end))
    for before, after in itertools.pairwise(files):
        if after.start <= before.end:  # the catalog's intervals are closed
            raise ReplayError(
                f"RegimeReplayActor: {after.path.name} [{after.start}, {after.end}] overlaps "
                f"{before.path.name} [{before.start}, {before.end}] in {directory}; a replay needs one "
                "record per bar (remove or re-precompute one of them)"
            )
    return files


def _check_schema(path: Path, schema: pa.Schema) -> None:
    problems = []
    for field in RegimeData.SCHEMA:
        index = schema.get_field_index(field.name)
        if index < 0:
            problems.append(f"missing column {field.name!r}")
        elif schema.field(index).type != field.type:
            problems.append(f"column {field.name!r} is {schema.field(index).type}, expected {field.type}")
    version = (schema.metadata or {}).get(b"sage_schema_version")
    expected = RegimeData.SCHEMA.metadata[b"sage_schema_version"]
    if version is not None and version != expected:
        problems.append(f"sage_schema_version {version.decode()!r}, expected {expected.decode()!r}")
    if problems:
        raise ReplayError(f"RegimeReplayActor: {path}: not RegimeData: " + "; ".join(problems))


class _RecordStream:
    """Decoded ``RegimeData`` from ``files`` in order, at most ``batch_rows`` held at a time.

    Each batch is checked before it is decoded: ``ts_event`` strictly increasing (within the batch and
    against the previous batch, across files), one instrument. ``max_held`` is the largest number of
    decoded records held at once (what the memory bound is about).
    """

    def __init__(self, files: list[ReplayFile], instrument_id: InstrumentId, batch_rows: int) -> None:
        self.files = files
        self.instrument = str(instrument_id)
        self.batch_rows = batch_rows
        self.max_held = 0
        self.batches_decoded = 0
        self._batches = self._iter_batches()
        self._records: list[RegimeData] = []
        self._next = 0
        self._last_ts: int | None = None
        self._last_where = ""

    def peek(self) -> RegimeData | None:
        """The next record, or None at the end of the replay."""
        if self._next >= len(self._records):
            self._records = []  # release the spent batch before decoding the next one
            self._next = 0
            try:
                self._records = next(self._batches)
            except StopIteration:
                return None
            self.max_held = max(self.max_held, len(self._records))
            self.batches_decoded += 1
        return self._records[self._next]

    def pop(self) -> RegimeData:
        record = self._records[self._next]
        self._records[self._next] = None  # type: ignore[call-overload]  # published: not ours to keep
        self._next += 1
        return record

    def close(self) -> None:
        self._batches.close()
        self._records = []
        self._next = 0

    def _iter_batches(self) -> Iterator[list[RegimeData]]:
        columns = RegimeData.SCHEMA.names
        for file in self.files:
            with pq.ParquetFile(file.path) as reader:
                offset = 0
                for batch in reader.iter_batches(batch_size=self.batch_rows, columns=columns):
                    yield self._decode(file.path, offset, batch)
                    offset += batch.num_rows

    def _decode(self, path: Path, offset: int, batch: pa.RecordBatch) -> list[RegimeData]:
        if batch.num_rows == 0:
            return []
        ts = batch.column("ts_event").to_numpy(zero_copy_only=False)
        down = np.flatnonzero(ts[1:] <= ts[:-1])
        if down.size:
            i = int(down[0]) + 1
            self._order_error(
                f"{path}: row {offset + i}", int(ts[i]), f"row {offset + i - 1}", int(ts[i - 1])
            )
        if self._last_ts is not None and int(ts[0]) <= self._last_ts:
            self._order_error(f"{path}: row {offset}", int(ts[0]), self._last_where, self._last_ts)
        ids = batch.column("instrument_id")
        foreign = pc.not_equal(ids, pa.scalar(self.instrument))
        if pc.any(foreign).as_py():
            row = int(pc.index(foreign, True).as_py())
            raise ReplayError(
                f"RegimeReplayActor: {path}: row {offset + row} is for {ids[row].as_py()}, "
                f"not {self.instrument}"
            )
        try:
            records = RegimeData._arrow_decode(batch)
        except (TypeError, ValueError) as exc:
            raise ReplayError(
                f"RegimeReplayActor: {path} (rows from {offset}): invalid RegimeData: {exc}"
            ) from None
        self._last_ts = int(ts[-1])
        self._last_where = f"{path}: row {offset + batch.num_rows - 1}"
        return records

    @staticmethod
    def _order_error(where: str, ts: int, before: str, ts_before: int) -> None:
        kind = "duplicates" if ts == ts_before else "comes before"
        raise ReplayError(
            f"RegimeReplayActor: {where}: ts_event {ts} {kind} {before} (ts_event {ts_before}); a replay needs "
            "records in strictly increasing ts_event order, one per bar"
        )


class RegimeReplayActor(Actor):
    """Publishes the precomputed ``RegimeData`` stamped at each bar of ``config.bar_type``.

    Counters (read them after a run): ``published``; ``skipped`` (records older than the bar at which
    they became due: bars this run never saw); ``bars_without_record`` (bars with no record stamped at
    them); ``never_reached`` (records after the run's last bar, set at stop); ``max_held`` (the most
    decoded records held at once, <= ``batch_rows``).
    """

    def __init__(self, config: RegimeReplayActorConfig) -> None:
        super().__init__(config)
        if config.batch_rows < 1:
            raise ValueError(f"RegimeReplayActorConfig.batch_rows must be >= 1, got {config.batch_rows}")
        self.bar_type = BarType.from_str(config.bar_type)
        self.instrument_id = (
            InstrumentId.from_str(config.instrument_id)
            if config.instrument_id
            else self.bar_type.instrument_id
        )
        self.data_type = DataType(RegimeData, metadata=config.metadata or {})
        self.files: list[ReplayFile] = []
        self._stream: _RecordStream | None = None
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.published = 0
        self.skipped = 0
        self.bars_without_record = 0
        self.never_reached = 0
        self.max_held = 0
        self._bars_seen = 0
        self._warned_skip = False
        self._warned_missing = False

    @property
    def total_records(self) -> int:
        """Rows in the replayed files (from the parquet footers, nothing decoded)."""
        return sum(f.rows for f in self.files)

    def on_start(self) -> None:
        if not self.config.catalog_path:
            raise ReplayError(
                "RegimeReplayActor: catalog_path is empty; pass --catalog PATH (a null catalog_path means "
                "the run's catalog and must be filled in by the config loader)"
            )
        self.files = regime_files(self.config.catalog_path, str(self.instrument_id))
        self._stream = _RecordStream(self.files, self.instrument_id, self.config.batch_rows)
        self.log.info(
            f"replaying {self.total_records:,} RegimeData of {self.instrument_id} from {len(self.files)} "
            f"file(s) in {self.config.catalog_path} on {self.bar_type}, {self.config.batch_rows:,} at a time"
        )
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        stream = self._stream
        assert stream is not None
        self._bars_seen += 1
        ts = bar.ts_event
        matched = False
        while (record := stream.peek()) is not None and record.ts_event <= ts:
            stream.pop()
            if record.ts_event == ts:
                self.publish_data(self.data_type, record)
                self.published += 1
                matched = True
            else:
                self._skip(record, bar)
        self.max_held = stream.max_held
        if not matched:
            self.bars_without_record += 1
            if not self._warned_missing:
                self._warned_missing = True
                self.log.warning(
                    f"no precomputed RegimeData stamped at bar {bar.bar_type} {ts}; such bars get no regime "
                    "(counted in bars_without_record)"
                )

    def _skip(self, record: RegimeData, bar: Bar) -> None:
        self.skipped += 1
        if self._bars_seen > 1 and not self._warned_skip:  # before the first bar is the normal start case
            self._warned_skip = True
            self.log.warning(
                f"RegimeData stamped {record.ts_event} has no bar of {bar.bar_type} (next bar {bar.ts_event}); "
                "skipped, not published late. Were the regimes computed on another bar type?"
            )

    def on_stop(self) -> None:
        self.unsubscribe_bars(self.bar_type)
        if self._stream is not None:
            self.max_held = self._stream.max_held
            self._stream.close()
            self._stream = None
        self.never_reached = self.total_records - self.published - self.skipped
        self.log.info(
            f"RegimeData replay: {self.published:,} published, {self.skipped:,} skipped (no such bar), "
            f"{self.never_reached:,} after the last bar, {self.bars_without_record:,} bar(s) without a record"
        )

    def on_reset(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._reset_counters()


def resolve_replay_catalogs(raw: dict[str, Any], catalog: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Fill ``catalog_path`` of every ``RegimeReplayActor`` in a raw ``BacktestRunConfig`` mapping (in place).

    The rule ``load_backtest_config`` applies to data entries, applied to the actor: ``catalog`` (the
    ``--catalog`` option) replaces it; otherwise a null one becomes the data entries' catalog when they
    all name the same one. Raises :class:`ReplayError` when a null path cannot be resolved.
    Returns ``raw``.
    """
    engine = raw.get("engine") or {}
    actors = engine.get("actors") or []
    for i, actor in enumerate(actors):
        if not isinstance(actor, dict) or actor.get("actor_path") != REPLAY_ACTOR_PATH:
            continue
        config = actor.setdefault("config", {})
        if not isinstance(config, dict):
            continue
        if catalog is not None:
            config["catalog_path"] = str(Path(catalog).resolve())
        elif not config.get("catalog_path"):
            paths = {e.get("catalog_path") for e in raw.get("data") or [] if isinstance(e, dict)}
            paths.discard(None)
            if len(paths) != 1:
                raise ReplayError(
                    f"engine.actors[{i}].config.catalog_path is empty and the data entries name "
                    f"{len(paths)} catalogs {sorted(paths)}; pass --catalog PATH or set it"
                )
            config["catalog_path"] = str(Path(paths.pop()).resolve())
    return raw
