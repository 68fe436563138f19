"""``sage regime precompute``: run the detector in batch over a catalog and store ``RegimeData``.

A backtest that replays precomputed regimes (``BacktestDataConfig(data_cls=RegimeData, client_id=...)``)
skips per-bar feature and model work, and sees the same records the ``RegimeActor`` would publish
(``RegimeDetector.batch`` and ``.stream`` share their per-bar core; see ``sage.regime.detector``). The
only difference is ``latency_us``: a live measurement, NaN in precomputed records.

Records are written with :func:`sage.data.catalog_writer.write_custom_data`: vectorised, atomic, and
refused before anything is written when they overlap regimes already stored for that instrument.

Bar types. An EXTERNAL bar type is read from the catalog as stored. An INTERNAL time aggregation --
``ESU3.XCME-30-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL``, or just ``ESU3.XCME-30-MINUTE-LAST-INTERNAL``
when the catalog holds a finer EXTERNAL bar type of the same instrument and price type whose interval
divides it (the finest is used) -- is built by Nautilus's own ``TimeBarAggregator`` inside a minimal
``BacktestEngine`` run over the source bars (:func:`aggregate_internal_bars`): the very code path a
``RegimeActor`` subscribed to that composite bar type goes through, with the engine's default data
settings (bars stamped at close, left-open intervals, first partial bar emitted, bars also built for
intervals without updates while the data runs). So the precomputed records replay identically to what
the actor computes live (tested against a real engine run). The aggregation costs an engine pass over
the source bars (tens of thousands of bars per second); the detector then runs in batch as usual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AggregationSource, BarAggregation
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from sage.data.catalog_writer import write_custom_data
from sage.data.regimes import Regime
from sage.data.types import RegimeData
from sage.regime.detector import DetectorConfig, load_detector


@dataclass(frozen=True)
class PrecomputeResult:
    """What a precompute wrote."""

    bar_type: str
    rows: int
    model_version: str
    levels: dict[int, int]
    files: tuple[Path, ...]
    seconds: float

    def summary(self) -> str:
        levels = ", ".join(f"L{k}: {v:,d}" for k, v in sorted(self.levels.items()))
        rate = self.rows / max(self.seconds, 1e-9)
        lines = [
            f"precomputed {self.rows:,d} RegimeData for {self.bar_type} with {self.model_version} "
            + f"in {self.seconds:.1f} s ({rate:,.0f} bars/s)",
            f"  fallback levels: {levels}",
        ]
        lines += [f"  file: {f}" for f in self.files]
        return "\n".join(lines)


def precompute_regimes(
    catalog_path: Path | str,
    bar_type: str,
    *,
    model: str = "default",
    config: DetectorConfig | None = None,
    out_catalog: Path | str | None = None,
) -> PrecomputeResult:
    """Detector rows for every ``bar_type`` bar in ``catalog_path``, written as ``RegimeData``.

    ``out_catalog`` (default: the same catalog) receives the records. Raises ``ValueError`` when the
    catalog has no such bars, ``ModelLoadError`` when the model cannot be loaded, and
    ``CatalogWriteError`` when regimes for an overlapping period are already stored.
    """
    started = time.perf_counter()
    bt = BarType.from_str(bar_type)
    catalog = ParquetDataCatalog(str(catalog_path))
    if bt.aggregation_source == AggregationSource.INTERNAL:
        source = bt.composite() if bt.is_composite() else _finest_source(catalog, bt)
        bars = aggregate_internal_bars(catalog, bt.standard(), source)
        bt = composite_bar_type(bt, source)
    else:
        bars = catalog.bars(bar_types=[str(bt)])
    if not bars:
        raise ValueError(f"catalog {catalog_path} has no bars of type {bt}")
    detector = load_detector(model, config)
    frame = detector.batch(bars)
    n = len(frame)
    columns = {
        "instrument_id": str(bt.instrument_id),
        "label": frame["label"].map(lambda name: Regime[name].value).to_numpy(np.int8),
        "probabilities": frame[["p_bull", "p_bear", "p_sideways", "p_volatile"]].to_numpy(np.float64),
        "vector": frame[[f"v{i}" for i in range(8)]].to_numpy(np.float64),
        "confidence": frame["confidence"].to_numpy(np.float64),
        "uncertainty": frame["uncertainty"].to_numpy(np.float64),
        "fallback_level": frame["level"].to_numpy(np.int8),
        "model_version": detector.model_version,
        "latency_us": np.full(n, np.nan),
        "drift": frame["drift"].to_numpy(np.float64),
        "health_flags": frame["health_flags"].to_numpy(np.int64),
        "ts_event": np.fromiter((b.ts_event for b in bars), dtype=np.uint64, count=n),
        "ts_init": np.fromiter((b.ts_init for b in bars), dtype=np.uint64, count=n),
    }
    table = RegimeData.columns_to_table(columns)
    files = write_custom_data(out_catalog or catalog_path, RegimeData, table)
    levels = {int(k): int(v) for k, v in frame["level"].value_counts().items()}
    return PrecomputeResult(str(bt), n, detector.model_version, levels, tuple(files), time.perf_counter() - started)


def composite_bar_type(target: BarType, source: BarType) -> BarType:
    """``target@source``: the bar type a subscriber names to get ``target`` built from ``source`` bars."""
    src = "EXTERNAL" if source.aggregation_source == AggregationSource.EXTERNAL else "INTERNAL"
    return BarType.from_str(f"{target.standard()}@{source.spec.step}-{BarAggregation(source.spec.aggregation).name}-{src}")


def _finest_source(catalog: ParquetDataCatalog, target: BarType) -> BarType:
    """The finest EXTERNAL time bar type in ``catalog`` for ``target``'s instrument and price type whose
    interval divides ``target``'s; ValueError naming what exists when there is none."""
    want = target.spec.timedelta
    if want.total_seconds() <= 0:
        raise ValueError(f"{target}: only time aggregations (second .. week) can be built from other bars")
    root = Path(catalog.path) / "data" / "bar"
    instrument = str(target.instrument_id)
    stored = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    candidates = []
    for name in stored:
        prefix = instrument.replace("/", "")
        if not name.startswith(prefix + "-"):
            continue
        try:
            bt = BarType.from_str(instrument + name[len(prefix) :])
        except ValueError:
            continue
        step = bt.spec.timedelta
        if (
            bt.aggregation_source == AggregationSource.EXTERNAL
            and bt.spec.price_type == target.spec.price_type
            and step.total_seconds() > 0
            and step < want
            and want % step == pd.Timedelta(0)
        ):
            candidates.append((step, bt))
    if not candidates:
        raise ValueError(
            f"cannot build {target}: the catalog has no EXTERNAL {target.spec.price_type.name} time bars of "
            f"{instrument} whose interval divides {want} (stored bar types: {', '.join(stored) or 'none'}); "
            f"name the source explicitly as {target}@<step>-<AGGREGATION>-EXTERNAL"
        )
    return min(candidates, key=lambda c: c[0])[1]


def aggregate_internal_bars(catalog: ParquetDataCatalog, target: BarType, source: BarType) -> list[Bar]:
    """``target`` bars aggregated from the catalog's ``source`` bars exactly as a live subscription to
    ``target@source`` would deliver them: Nautilus's ``TimeBarAggregator`` in a ``BacktestEngine``
    (default engine settings), collected by a subscriber started with the run."""
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig
    from nautilus_trader.model.enums import AccountType, OmsType
    from nautilus_trader.model.objects import Money

    bars = catalog.bars(bar_types=[str(source)])
    if not bars:
        raise ValueError(f"catalog {catalog.path} has no bars of type {source} to build {target} from")
    instruments = catalog.instruments(instrument_ids=[str(target.instrument_id)])
    if not instruments:
        raise ValueError(f"catalog {catalog.path} has no instrument {target.instrument_id}")
    instrument = instruments[0]
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    try:
        engine.add_venue(
            instrument.id.venue, OmsType.NETTING, AccountType.MARGIN,
            starting_balances=[Money(1_000_000, instrument.quote_currency)], base_currency=None,
        )  # fmt: skip
        engine.add_instrument(instrument)
        engine.add_data(bars)
        collector = _BarCollector(str(composite_bar_type(target, source)))
        engine.add_actor(collector)
        engine.run()
        return list(collector.bars)
    finally:
        engine.dispose()


class _BarCollectorConfig(ActorConfig, frozen=True):
    bar_type: str


class _BarCollector(Actor):
    """Subscribes to one (composite) bar type and keeps every bar it receives."""

    def __init__(self, bar_type: str) -> None:
        super().__init__(_BarCollectorConfig(component_id="SAGE-BAR-COLLECTOR", bar_type=bar_type))
        self.subscribed = BarType.from_str(bar_type)
        self.bars: list[Bar] = []

    def on_start(self) -> None:
        self.subscribe_bars(self.subscribed)

    def on_bar(self, bar: Bar) -> None:
        self.bars.append(bar)
