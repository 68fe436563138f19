"""Save a finished backtest to a run directory and load it back (layout: ``docs/reports.md``).

Why a directory of Parquet files rather than a pickle: every file is readable by pandas/pyarrow/DuckDB
without sage or Nautilus, survives library upgrades, and the fills also go to CSV for a spreadsheet.
Nautilus's reports carry Python objects in some columns (``info`` dicts, ``commissions`` lists,
``exec_algorithm_params``); those are stored as JSON text and the column names are recorded in the file's
metadata, so :func:`load_run` gives them back as dicts/lists.

Writing is atomic: everything goes to a hidden staging directory next to the target, which is renamed
into place only when complete. A non-empty existing directory is never overwritten unless asked, and a
failed save leaves no half-written run behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

import sage

__all__ = [
    "RECORD_FILES",
    "Run",
    "RunDirError",
    "bars_by_instrument",
    "load_run",
    "load_run_bars",
    "save_run",
]

log = logging.getLogger(__name__)

#: sage record type -> file stem in the run directory.
RECORD_FILES: dict[str, str] = {
    "RegimeData": "regimes",
    "AgentSignal": "signals",
    "RiskProposal": "proposals",
    "DecisionRecord": "decisions",
}
_JSON_COLUMNS_KEY = b"sage.json_columns"
_RUN_FORMAT = 1


class RunDirError(Exception):
    """A run directory that cannot be written or read (exists, missing, not a run)."""


@dataclass
class Run:
    """A run directory loaded into memory. Missing optional files give empty frames, never errors."""

    path: Path
    meta: dict[str, Any]  #: run.json
    stats: dict[str, Any]  #: stats.json
    fills: pd.DataFrame
    orders: pd.DataFrame
    positions: pd.DataFrame
    account: dict[str, pd.DataFrame] = field(default_factory=dict)  #: by venue
    bars: dict[str, pd.DataFrame] = field(default_factory=dict)  #: by bar type, OHLCV indexed by close time
    records: dict[str, pd.DataFrame] = field(default_factory=dict)  #: by sage type name (RECORD_FILES)
    parents: pd.DataFrame = field(default_factory=pd.DataFrame)
    tca: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def decisions(self) -> pd.DataFrame:
        return self.records.get("DecisionRecord", pd.DataFrame())

    @property
    def regimes(self) -> pd.DataFrame:
        return self.records.get("RegimeData", pd.DataFrame())

    @property
    def signals(self) -> pd.DataFrame:
        return self.records.get("AgentSignal", pd.DataFrame())

    @property
    def proposals(self) -> pd.DataFrame:
        return self.records.get("RiskProposal", pd.DataFrame())

    @property
    def multipliers(self) -> dict[str, float]:
        return {i: float(s["multiplier"]) for i, s in self.meta.get("instruments", {}).items()}

    @property
    def report_dir(self) -> Path:
        return self.path / "report"


# -- bars ----------------------------------------------------------------------------------------------


def _bar_type_instrument(bar_type: str) -> str:
    from nautilus_trader.model.data import BarType

    return BarType.from_str(bar_type).instrument_id.value


def load_run_bars(config: Any, catalog: str | os.PathLike[str] | None = None) -> dict[str, pd.DataFrame]:
    """OHLCV frames (float columns, UTC close-time index) of every bar type a ``BacktestRunConfig``
    streams, read from ``catalog`` (default: each data entry's own ``catalog_path``) within the entry's
    start/end. Entries that are not bars are skipped."""
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    from sage.features.bars import bar_list_to_arrays

    out: dict[str, pd.DataFrame] = {}
    for entry in config.data:
        if not str(entry.data_cls).endswith(":Bar") and "Bar" not in str(entry.data_cls).rsplit(".", 1)[-1]:
            continue
        root = str(catalog if catalog is not None else entry.catalog_path)
        bar_types = list(entry.bar_types or [])
        if not bar_types:
            continue
        cat = ParquetDataCatalog(root)
        for bar_type in bar_types:
            bars = cat.bars(bar_types=[str(bar_type)], start=entry.start_time, end=entry.end_time)
            ts, o, h, lo, c, v = bar_list_to_arrays(bars)
            index = pd.DatetimeIndex(ts.view("datetime64[ns]"), name="ts_event").tz_localize("UTC")
            out[str(bar_type)] = pd.DataFrame(
                {"open": o, "high": h, "low": lo, "close": c, "volume": v}, index=index
            )
    return out


def bars_by_instrument(bars: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """One bar frame per instrument: its finest bar type (smallest median spacing) when there are several."""
    best: dict[str, tuple[float, pd.DataFrame]] = {}
    for bar_type, frame in bars.items():
        if len(frame) == 0:
            continue
        inst = _bar_type_instrument(bar_type)
        step = float(np.median(np.diff(frame.index.asi8))) if len(frame) > 1 else math.inf
        if inst not in best or step < best[inst][0]:
            best[inst] = (step, frame)
    return {inst: frame for inst, (_, frame) in best.items()}


def _instrument_specs(
    catalog: str | os.PathLike[str] | None, ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    if catalog is None or not ids:
        return {}
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    specs: dict[str, dict[str, Any]] = {}
    for inst in ParquetDataCatalog(str(catalog)).instruments(instrument_ids=list(ids)):
        specs[inst.id.value] = {
            "type": type(inst).__name__,
            "multiplier": float(inst.multiplier),
            "quote_currency": str(inst.quote_currency),
            "price_precision": int(inst.price_precision),
            "size_precision": int(inst.size_precision),
        }
    missing = sorted(set(ids) - set(specs))
    if missing:
        log.warning(
            "catalog %s has no definition of %s: equity falls back to account balances", catalog, missing
        )
    return specs


# -- frames <-> parquet --------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if is_dataclass(value):
        return {k: _json_default(v) for k, v in vars(value).items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


def _storable(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Object columns made Arrow-friendly: dict/list cells -> JSON text (column recorded), timestamps ->
    datetime, anything else -> str; ``None`` stays null."""
    out = df.copy()
    json_cols: list[str] = []
    for col in out.columns:
        if out[col].dtype != object:
            continue
        values = [v for v in out[col] if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if any(isinstance(v, (dict, list, tuple)) for v in values):
            out[col] = [None if v is None else json.dumps(v, default=_json_default) for v in out[col]]
            json_cols.append(str(col))
        elif values and all(isinstance(v, pd.Timestamp) for v in values):
            out[col] = pd.to_datetime(out[col], utc=True)
        elif not all(isinstance(v, str) for v in values):
            out[col] = [None if v is None or v is pd.NA else str(v) for v in out[col]]
    return out, json_cols


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    frame, json_cols = _storable(df)
    table = pa.Table.from_pandas(frame, preserve_index=True)
    meta = dict(table.schema.metadata or {})
    meta[_JSON_COLUMNS_KEY] = json.dumps(json_cols).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


def _read_frame(path: Path) -> pd.DataFrame:
    table = pq.read_table(path)
    json_cols = json.loads((table.schema.metadata or {}).get(_JSON_COLUMNS_KEY, b"[]"))
    df = table.to_pandas()
    for col in json_cols:
        df[col] = [None if v is None else json.loads(v) for v in df[col]]
    return df


def _write_records(name: str, records: pd.DataFrame | pa.Table, path: Path) -> None:
    """Published records (a frame, or the Arrow table ``run_backtest`` keeps) through the type's own
    Arrow schema (validated, typed vectors)."""
    from sage.data import types as sage_types

    cls = getattr(sage_types, name, None)
    if isinstance(records, pa.Table):
        source: Any = records
    else:
        columns = records.drop(columns=["type"], errors="ignore")
        if cls is None or not hasattr(cls, "columns_to_table"):
            _write_frame(columns, path)
            return
        source = {c: columns[c].to_list() for c in columns.columns}
    if cls is None or not hasattr(cls, "columns_to_table"):
        raise TypeError(f"{name}: not a sage record type, cannot write its Arrow table")
    table = cls.columns_to_table(source)
    pq.write_table(table, path)
    # The same records in a ParquetDataCatalog beside the run (RUN/catalog), so Nautilus users can
    # query them (catalog.query(DecisionRecord)) or replay them in another BacktestNode.
    from sage.data.catalog_writer import write_custom_data

    write_custom_data(path.parent / "catalog", cls, table.sort_by("ts_init"), durable=False)


def _record_count(published: Any, name: str) -> int:
    """Rows of one record type without building its frame when the outcome keeps Arrow tables."""
    rows = getattr(published, "rows", None)
    return rows(name) if rows is not None else len(published[name])


def _record_source(published: Any, name: str) -> pd.DataFrame | pa.Table:
    table = getattr(published, "table", None)
    return table(name) if table is not None else published[name]


def _plain(value: Any) -> Any:
    """A report field as a plain Parquet-friendly value: identifiers -> their string, Decimal -> float,
    enums -> their name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return float(value)
    inner = getattr(value, "value", None)
    if isinstance(inner, str):  # Nautilus identifiers
        return inner
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value)


def _parents_frame(parents: Any) -> pd.DataFrame:
    """Exec-algorithm parent reports (``ParentReport`` objects or a frame) as a flat frame."""
    if parents is None:
        return pd.DataFrame()
    if isinstance(parents, pd.DataFrame):
        return parents.reset_index(drop=True)
    rows = [{key: _plain(value) for key, value in vars(report).items()} for report in parents]
    return pd.DataFrame(rows)


def _clean_json(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# -- save / load -----------------------------------------------------------------------------------


def _tca(
    orders: pd.DataFrame,
    fills: pd.DataFrame,
    per_instrument: Mapping[str, pd.DataFrame],
    multipliers: Mapping[str, float],
    parents: pd.DataFrame,
) -> pd.DataFrame:
    """TCA per instrument (each against its own bars and multiplier), concatenated."""
    from sage.execution.tca import TCA_COLUMNS, tca_table

    if orders is None or len(orders) == 0:
        return pd.DataFrame(columns=list(TCA_COLUMNS))
    parent_qty = None
    if len(parents) and {"primary_id", "quantity"} <= set(parents.columns):
        parent_qty = {str(p): float(q) for p, q in zip(parents["primary_id"], parents["quantity"])}
    tables = []
    fills_flat = fills.reset_index() if "client_order_id" not in fills.columns else fills
    orders_flat = orders.reset_index() if "client_order_id" not in orders.columns else orders
    for inst, inst_orders in orders_flat.groupby(orders_flat["instrument_id"].astype(str), sort=True):
        market = per_instrument.get(inst)
        if market is None or len(market) == 0:
            log.warning("no bars for %s in the run: its orders are left out of the TCA", inst)
            continue
        ids = set(inst_orders["client_order_id"].astype(str))
        inst_fills = fills_flat[fills_flat["client_order_id"].astype(str).isin(ids)]
        tables.append(tca_table(inst_orders, inst_fills, market, multipliers.get(inst, 1.0), parent_qty))
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(TCA_COLUMNS))


def _nautilus_stats(result: Any) -> dict[str, Any]:
    general = {
        k: getattr(result, k, None)
        for k in (
            "iterations",
            "total_events",
            "total_orders",
            "total_positions",
            "elapsed_time",
            "backtest_start",
            "backtest_end",
        )
    }
    return {"pnls": dict(result.stats_pnls), "returns": dict(result.stats_returns), "general": general}


def _swap_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    if target.exists():
        if not target.is_dir():
            raise RunDirError(f"{target} exists and is not a directory")
        if any(target.iterdir()):
            if not overwrite:
                raise RunDirError(
                    f"{target} exists and is not empty (pass overwrite=True / --overwrite to replace it)"
                )
            trash = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(target, trash)
            os.replace(staging, target)
            shutil.rmtree(trash, ignore_errors=True)
            return
        target.rmdir()
    os.replace(staging, target)


def save_run(
    outcome: Any,
    out_dir: str | os.PathLike[str],
    *,
    config_path: str | os.PathLike[str],
    catalog: str | os.PathLike[str] | None,
    bars: Mapping[str, pd.DataFrame] | None = None,
    parents: Any = None,
    run_config: Any = None,
    overwrite: bool = False,
    tearsheet: bool = True,
) -> Path:
    """Write ``outcome`` (a ``sage.nodes.backtest.BacktestOutcome``) to ``out_dir`` and return its path.

    ``config_path`` is the YAML the run came from (its text is stored); ``catalog`` the catalog it read
    (instrument definitions; bars when ``bars`` is None, by the config's bar types). ``parents`` are the
    exec algorithms' parent reports (default: ``outcome.parents`` if the outcome has them). With
    ``tearsheet`` the report (``out_dir/report``) is built too. ``run_config`` is the
    ``BacktestRunConfig`` actually run when the caller changed it after reading ``config_path`` (e.g.
    command-line overrides); it then decides venues and bar types and is stored in run.json.
    Refuses a non-empty ``out_dir`` unless ``overwrite``; the directory appears complete or not at all.
    """
    from sage.nodes.backtest import load_backtest_config

    target = Path(out_dir)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not overwrite:
        raise RunDirError(
            f"{target} exists and is not empty (pass overwrite=True / --overwrite to replace it)"
        )
    config_path = Path(config_path)
    config = run_config if run_config is not None else load_backtest_config(config_path, catalog=catalog)
    if bars is None:
        bars = load_run_bars(config, catalog)
    parents_df = _parents_frame(parents if parents is not None else getattr(outcome, "parents", None))

    result = outcome.result
    fills, orders, positions = outcome.fills, outcome.orders, outcome.positions
    traded = sorted(set(fills["instrument_id"].astype(str)) if len(fills) else set())
    per_instrument = bars_by_instrument(bars)
    instruments = _instrument_specs(catalog, sorted(set(traded) | set(per_instrument)))
    multipliers = {i: s["multiplier"] for i, s in instruments.items()}

    from sage.reports.stats import run_performance

    _, perf = run_performance(fills, outcome.account, per_instrument, multipliers, result.backtest_start)
    stats = {
        "nautilus": _nautilus_stats(result),
        "sage": {c: msgspec.to_builtins(p) for c, p in perf.items()},
    }
    meta = {
        "format": _RUN_FORMAT,
        "run_id": result.run_id,
        "trader_id": result.trader_id,
        "instance_id": result.instance_id,
        "run_config_id": result.run_config_id,
        "config_path": str(config_path.resolve()),
        "config_text": config_path.read_text(),
        "run_config": json.loads(config.json()),
        "catalog": str(Path(catalog).resolve()) if catalog is not None else None,
        "run_started": result.run_started,
        "run_finished": result.run_finished,
        "elapsed_secs": result.elapsed_time,
        "backtest_start": result.backtest_start,
        "backtest_end": result.backtest_end,
        "venues": [str(v.name) for v in config.venues],
        "bar_types": sorted(bars),
        "instruments": instruments,
        "traded_instruments": traded,
        "records": {name: _record_count(outcome.published, name) for name in outcome.published},
        "sage_version": sage.__version__,
        "saved_at": time.time_ns(),
    }

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        (staging / "run.json").write_text(json.dumps(_clean_json(meta), indent=2, default=str))
        (staging / "stats.json").write_text(json.dumps(_clean_json(stats), indent=2, default=str))
        _write_frame(fills, staging / "fills.parquet")
        _storable(fills)[0].to_csv(staging / "fills.csv")
        _write_frame(orders, staging / "orders.parquet")
        _write_frame(positions, staging / "positions.parquet")
        for venue, report in outcome.account.items():
            _write_frame(report, staging / f"account_{venue}.parquet")
        (staging / "bars").mkdir()
        for bar_type, frame in bars.items():
            frame.to_parquet(staging / "bars" / f"{bar_type.replace('/', '_')}.parquet")
        for name in outcome.published:
            stem = RECORD_FILES.get(name, name)
            if _record_count(outcome.published, name):
                _write_records(name, _record_source(outcome.published, name), staging / f"{stem}.parquet")
        if len(parents_df):
            _write_frame(parents_df, staging / "parents.parquet")
        from sage.execution.tca import write_tca_parquet

        tca = _tca(orders, fills, per_instrument, multipliers, parents_df)
        write_tca_parquet(tca, staging / "tca.parquet", {"run_id": result.run_id})
        if tearsheet:
            from sage.reports.tearsheet import build_tearsheet

            build_tearsheet(load_run(staging), staging / "report")
        _swap_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def load_run(path: str | os.PathLike[str]) -> Run:
    """Read a run directory written by :func:`save_run`."""
    root = Path(path)
    if not root.is_dir():
        raise RunDirError(f"run directory {root} does not exist")
    if not (root / "run.json").is_file():
        raise RunDirError(
            f"{root} is not a sage run directory (no run.json; write one with `sage backtest CONFIG --out DIR`)"
        )
    meta = json.loads((root / "run.json").read_text())
    stats = json.loads((root / "stats.json").read_text()) if (root / "stats.json").is_file() else {}

    def frame(name: str) -> pd.DataFrame:
        p = root / name
        return _read_frame(p) if p.is_file() else pd.DataFrame()

    account = {
        p.stem.removeprefix("account_"): _read_frame(p) for p in sorted(root.glob("account_*.parquet"))
    }
    bars: dict[str, pd.DataFrame] = {}
    names = {bt.replace("/", "_"): bt for bt in meta.get("bar_types", [])}
    for p in sorted((root / "bars").glob("*.parquet")) if (root / "bars").is_dir() else []:
        bars[names.get(p.stem, p.stem)] = pd.read_parquet(p)
    records = {}
    for name, stem in RECORD_FILES.items():
        p = root / f"{stem}.parquet"
        records[name] = pq.read_table(p).to_pandas() if p.is_file() else pd.DataFrame()
    tca = pd.DataFrame()
    if (root / "tca.parquet").is_file():
        from sage.execution.tca import read_tca_parquet

        tca, _ = read_tca_parquet(root / "tca.parquet")
    return Run(
        path=root,
        meta=meta,
        stats=stats,
        fills=frame("fills.parquet"),
        orders=frame("orders.parquet"),
        positions=frame("positions.parquet"),
        account=account,
        bars=bars,
        records=records,
        parents=frame("parents.parquet"),
        tca=tca,
    )
