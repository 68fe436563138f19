"""What a sweep worker does with one :class:`~sage.sweep.spec.SweepTask`: run it, measure it.

The worker gets the full config mapping (not a file path), so it runs anywhere the catalog path is
readable -- another process, or a Ray node on another machine that mounts the same catalog. The
backtest itself is :func:`sage.nodes.backtest.run_backtest`, exactly what ``sage backtest`` runs;
only small numbers travel back to the parent.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sage.sweep.metrics import normalise_fills, summarize
from sage.sweep.spec import SweepTask


def run_sweep_task(task: SweepTask) -> dict[str, float]:
    """Run ``task``'s backtest and return its metrics (:data:`~sage.sweep.metrics.METRIC_COLUMNS`)."""
    from sage.nodes.backtest import load_backtest_config, run_backtest

    with tempfile.TemporaryDirectory(prefix="sage-sweep-") as tmp:
        path = Path(tmp) / f"task-{task.index}.yaml"
        path.write_text(yaml.safe_dump(task.config, sort_keys=False))
        config = load_backtest_config(path, catalog=task.catalog)
    outcome = run_backtest(config)
    fills = normalise_fills(outcome.fills)
    currencies = sorted(set(fills["currency"]))
    if len(currencies) > 1:
        raise ValueError(f"fills settle in several currencies {currencies}; metrics need one")
    traded = sorted(set(fills["instrument_id"]))
    instruments = traded or _config_instruments(task.config)[:1]
    closes = {i: _closes(task, i) for i in instruments}
    multipliers = _multipliers(task.catalog, instruments)
    capital = _capital(outcome.account, instruments, currencies[0] if currencies else None)
    return summarize(fills, closes, multipliers, capital)


def _config_instruments(config: dict[str, Any]) -> list[str]:
    return [str(bt).split("-")[0] for entry in config.get("data") or [] for bt in entry.get("bar_types") or []]


def _bar_type_for(config: dict[str, Any], instrument: str) -> str:
    for entry in config.get("data") or []:
        for bar_type in entry.get("bar_types") or []:
            if str(bar_type).split("-")[0] == instrument:
                return str(bar_type)
    raise ValueError(f"no bars of {instrument} in the config's data; they are needed to mark it to market")


def _closes(task: SweepTask, instrument: str) -> pd.Series:
    from nautilus_trader.model.data import Bar
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    bar_type = _bar_type_for(task.config, instrument)
    bars = ParquetDataCatalog(task.catalog).query(Bar, identifiers=[bar_type], start=task.start, end=task.end)
    ts = [b.ts_event for b in bars]
    return pd.Series([b.close.as_double() for b in bars], index=pd.Index(ts, dtype="int64"), dtype=float)


def _multipliers(catalog: str, instruments: list[str]) -> dict[str, float]:
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    found = ParquetDataCatalog(catalog).instruments(instrument_ids=instruments)
    return {str(i.id): float(i.multiplier) for i in found}


def _capital(account: dict[str, pd.DataFrame], instruments: list[str], currency: str | None) -> float:
    """Starting balance of the venues the instruments trade on (in the fills' currency)."""
    total = 0.0
    for venue in sorted({i.rsplit(".", 1)[-1] for i in instruments}):
        report = account.get(venue)
        if report is None or not len(report):
            raise ValueError(f"no account report for venue {venue}")
        first = report.iloc[0]
        if currency is not None and str(first["currency"]) != currency:
            raise ValueError(f"venue {venue} account is in {first['currency']}, fills in {currency}")
        total += float(first["total"])
    return total
