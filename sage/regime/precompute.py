"""``sage regime precompute``: run the detector in batch over a catalog and store ``RegimeData``.

A backtest that replays precomputed regimes (``BacktestDataConfig(data_cls=RegimeData, client_id=...)``)
skips per-bar feature and model work, and sees the same records the ``RegimeActor`` would publish
(``RegimeDetector.batch`` and ``.stream`` share their per-bar core; see ``sage.regime.detector``). The
only difference is ``latency_us``: a live measurement, NaN in precomputed records.

Records are written with :func:`sage.data.catalog_writer.write_custom_data`: vectorised, atomic, and
refused before anything is written when they overlap regimes already stored for that instrument.
Bars must exist in the catalog for ``bar_type``; regimes on an INTERNAL aggregation (e.g. 30-minute
from 1-minute) are computed by the actor live, not precomputed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nautilus_trader.model.data import BarType
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
    bars = ParquetDataCatalog(str(catalog_path)).bars(bar_types=[str(bt)])
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
