"""Assemble and run a Nautilus ``BacktestNode`` from a YAML file.

The YAML is a NautilusTrader ``BacktestRunConfig`` verbatim (venues / data / engine), so everything a
Nautilus user already knows applies and nothing is re-invented. sage adds only what a command line
needs: a ``--catalog`` override for every data entry, config errors that name the offending key, and
the run's reports (fills, positions, account) collected before the engine is disposed.

When a :class:`sage.nodes.cache_purge.CachePurger` is among the run's actors, the reports and the result's
totals/statistics come from the purger (archived + cached objects), so a bounded cache loses nothing.
Published sage records are kept as Arrow tables in chunks, not as Python objects, while the run lasts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.backtest.results import BacktestResult
from nautilus_trader.config import BacktestRunConfig

from sage.execution.algorithms.base import PARENT_TOPIC

_TOP_LEVEL_KEYS = {"venues", "data", "engine", "chunk_size", "dispose_on_completion", "start", "end",
                   "raise_exception", "id"}


class ConfigError(ValueError):
    """A run config that cannot be used, with the file and the offending key in the message."""


def read_yaml_mapping(path: Path, expected: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; every failure is a ``ConfigError`` naming the file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be {expected}")
    return raw


def load_backtest_config(
    path: Path | str,
    catalog: Path | str | None = None,
    *,
    instrument: str | None = None,
    bar_type: str | None = None,
) -> BacktestRunConfig:
    """Read a YAML ``BacktestRunConfig``; ``catalog`` replaces every data entry's ``catalog_path``.

    Entries whose ``catalog_path`` is null must get one from ``catalog``; that is how the shipped
    configs stay machine-independent. ``instrument`` / ``bar_type`` (``NEW`` or ``OLD=NEW``) rewrite
    the config for another instrument or bar type everywhere it appears (see
    :mod:`sage.nodes.overrides`).
    """
    path = Path(path)
    raw = read_yaml_mapping(path, "a mapping with venues/data/engine")
    if instrument is not None or bar_type is not None:
        from sage.nodes.overrides import apply_overrides

        try:
            raw = apply_overrides(raw, instrument=instrument, bar_type=bar_type)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(raw) - _TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; expected some of {sorted(_TOP_LEVEL_KEYS)}")
    for i, entry in enumerate(raw.get("data") or []):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: data[{i}] must be a mapping")
        if catalog is not None:
            entry["catalog_path"] = str(Path(catalog).resolve())
        elif not entry.get("catalog_path"):
            raise ConfigError(f"{path}: data[{i}].catalog_path is empty; pass --catalog PATH")
    from sage.regime.replay import ReplayError, resolve_replay_catalogs

    try:  # a RegimeReplayActor reads the run's catalog too (configs/sage_replay_chunked.yaml)
        resolve_replay_catalogs(raw, catalog)
    except ReplayError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    # Keep engines until reports are collected; run_backtest disposes them.
    raw["dispose_on_completion"] = False
    raw.setdefault("raise_exception", True)
    try:
        return BacktestRunConfig.parse(json.dumps(raw))
    except msgspec.ValidationError as exc:
        # msgspec names the failing path, e.g. "Expected `str`, got `int` - at `$.venues[0].oms_type`"
        raise ConfigError(f"{path}: {exc}") from None


@dataclass
class BacktestOutcome:
    """Everything a report or a test needs from one run, gathered before disposal."""

    result: BacktestResult
    fills: pd.DataFrame  #: one row per fill event (price, quantity, ts_event, client_order_id)
    orders: pd.DataFrame  #: one row per filled order (ts_init = when the strategy created it)
    positions: pd.DataFrame
    account: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: sage records published on the message bus during the run, by type name (e.g. "RegimeData"),
    #: as a frame of their fields (one row per record, in publication order). From ``run_backtest`` a
    #: :class:`PublishedRecords`: Arrow tables, each turned into its frame only when asked for.
    published: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    #: the sage exec algorithms' ``ParentReport``s (one per parent order that reached a terminal state)
    parents: list[Any] = field(default_factory=list)
    #: what a ``CachePurger`` among the actors purged (``PurgeCounts``), None without one
    purge: Any = None


def run_backtest(config: BacktestRunConfig) -> BacktestOutcome:
    """Run one ``BacktestRunConfig`` with a ``BacktestNode`` and collect its reports."""
    from sage.nodes.cache_purge import find_purger

    node = BacktestNode(configs=[config])
    try:
        node.build()  # engines exist now, so we can listen on their message bus before running
        published = _listen_for_sage_records(node.get_engine(config.id))
        parents: list[Any] = []
        node.get_engine(config.id).kernel.msgbus.subscribe(topic=f"{PARENT_TOPIC}*", handler=parents.append)
        results = node.run()
        if not results:
            raise RuntimeError("BacktestNode produced no result (see the Nautilus log above)")
        engine = node.get_engine(config.id)
        purger = find_purger(engine.trader.actors())
        reporter = engine.trader if purger is None else purger
        result = results[0]
        if purger is not None:
            run_analysis = config.engine.run_analysis if config.engine is not None else True
            result = purger.backtest_result(engine, run_analysis=run_analysis)
        account = {
            str(venue_cfg.name): reporter.generate_account_report(_venue(venue_cfg.name))
            for venue_cfg in config.venues
        }
        return BacktestOutcome(
            result=result,
            fills=reporter.generate_fills_report(),
            orders=reporter.generate_order_fills_report(),
            positions=reporter.generate_positions_report(),
            account=account,
            published=PublishedRecords(
                {name: table for name, rec in published.items() if (table := rec.table()) is not None}
            ),
            parents=parents,
            purge=None if purger is None else purger.counts,
        )
    finally:
        node.dispose()


class _RecordCollector:
    """Collects one sage record type from the message bus as Arrow tables of ``chunk_rows`` rows.

    Python objects (one per bar for ``RegimeData``) are held only until their chunk is full, so a long
    run keeps columnar memory instead of millions of objects. :meth:`frame` gives the frame the old
    ``pd.DataFrame([r.to_dict() for r in records])`` gave: a ``type`` column then the fields, vectors as
    lists, in publication order.
    """

    def __init__(self, cls: Any, chunk_rows: int = 10_000) -> None:
        self.cls = cls
        self.chunk_rows = chunk_rows
        self.pending: list[Any] = []
        self.tables: list[pa.Table] = []
        self.foreign = 0

    def __call__(self, record: Any) -> None:
        if type(record) is not self.cls:  # a topic-prefix match of another type: not this collector's
            self.foreign += 1
            return
        self.pending.append(record)
        if len(self.pending) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.tables.append(self.cls.objects_to_table(self.pending))
            self.pending = []

    def table(self) -> pa.Table | None:
        """Every record collected, in publication order (None if there was none)."""
        self.flush()
        if self.foreign:
            logging.getLogger("sage").warning(
                f"{self.foreign} record(s) on the data.{self.cls.__name__}* topics were not "
                f"{self.cls.__name__} and are not in BacktestOutcome.published"
            )
        if not self.tables:
            return None
        return pa.concat_tables(self.tables)

    def frame(self) -> pd.DataFrame | None:
        table = self.table()
        return None if table is None else records_frame(table)


def records_frame(table: pa.Table, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The frame ``pd.DataFrame([r.to_dict() for r in records])`` gives, from the records' Arrow table:
    a ``type`` column, then the fields (vectors as lists; integers int64). ``columns`` limits it to
    those fields (and skips the ``type`` column), which is cheap for scalar fields."""
    name = table.schema.metadata.get(b"sage_type", b"").decode() if table.schema.metadata else ""
    out: dict[str, Any] = {} if columns is not None else {"type": [name] * table.num_rows}
    for field_name in columns if columns is not None else table.column_names:  # to_dict() order
        column = table.column(field_name)
        if pa.types.is_integer(column.type):
            out[field_name] = column.to_numpy().astype(np.int64)
        elif pa.types.is_floating(column.type):
            out[field_name] = column.to_numpy()
        else:
            out[field_name] = column.to_pylist()
    return pd.DataFrame(out, index=pd.RangeIndex(table.num_rows))


class PublishedRecords(Mapping[str, pd.DataFrame]):
    """Published sage records by type name, kept as Arrow tables (a few hundred bytes per record).

    Why: a long run publishes one ``RegimeData`` per bar; a frame of Python objects (vectors as lists)
    costs several times the columnar table. ``published[name]`` builds the full frame on first use and
    caches it; :meth:`table` and :meth:`columns` serve consumers that need less (saving a run, summaries).
    """

    def __init__(self, tables: Mapping[str, pa.Table]) -> None:
        self._tables = {name: t for name, t in tables.items() if t.num_rows}
        self._frames: dict[str, pd.DataFrame] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            self._frames[name] = records_frame(self._tables[name])
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def table(self, name: str) -> pa.Table:
        """The records of type ``name`` as an Arrow table in the type's schema."""
        return self._tables[name]

    def rows(self, name: str) -> int:
        """Number of records of type ``name`` (0 if none)."""
        table = self._tables.get(name)
        return 0 if table is None else table.num_rows

    def columns(self, name: str, columns: Sequence[str]) -> pd.DataFrame:
        """Only ``columns`` of the records of type ``name`` (no ``type`` column)."""
        return records_frame(self._tables[name], columns)


def _listen_for_sage_records(engine: Any) -> dict[str, _RecordCollector]:
    """Subscribe to every sage custom-data topic (``data.<Type>`` plus any metadata suffix)."""
    from sage.data.types import SAGE_DATA_TYPES

    published: dict[str, _RecordCollector] = {}
    for cls in SAGE_DATA_TYPES:
        collector = _RecordCollector(cls)
        published[cls.__name__] = collector
        engine.kernel.msgbus.subscribe(topic=f"data.{cls.__name__}*", handler=collector)
    return published


def _venue(name: str) -> Any:
    from nautilus_trader.model.identifiers import Venue

    return Venue(name)
