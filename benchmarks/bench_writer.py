"""Benchmark of ``sage.data.catalog_writer.write_custom_data`` against ``ParquetDataCatalog.write_data``.

Run from the repo root::

    python -m benchmarks.bench_writer                      # 1M columnar rows, 200k objects, 20k write_data
    python -m benchmarks.bench_writer --rows 200000 --write-data-rows 5000

All paths write the same ``RegimeData`` rows (seeded random values: 4 probabilities, an 8-D vector, NaN
uncertainties) into a fresh temporary catalog, in the same process. Goal (issue): >1M rows/s for the
columnar writer where ``write_data`` manages ~10k custom rows/s. Rows/s are computed from wall time;
CPU time is printed as well because a shared machine inflates wall time. Each timing is the best of
``--repeat`` runs (``write_data`` runs once: it is slow and its speed does not vary much). Building
the Python objects for the object paths is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from sage.data.catalog_writer import write_custom_data
from sage.data.types import RegimeData

T0 = 1_700_000_000_000_000_000
MINUTE = 60_000_000_000


def regime_columns(n: int, seed: int = 7) -> dict[str, Any]:
    """``n`` RegimeData rows as columns, one minute apart, as a precompute would hand them over."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4), n)
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    uncertainty = rng.uniform(0.0, 0.01, n)
    uncertainty[rng.random(n) < 0.1] = np.nan
    return {
        "instrument_id": "EUR/USD.SIM",
        "label": p.argmax(1).astype(np.int8),
        "probabilities": p,
        "vector": rng.normal(size=(n, 8)),
        "confidence": p.max(1),
        "uncertainty": uncertainty,
        "fallback_level": rng.integers(1, 6, n).astype(np.int8),
        "model_version": "regime-2.0",
        "latency_us": rng.uniform(50, 500, n),
        "drift": rng.normal(size=n),
        "health_flags": rng.integers(0, 128, n),
        "ts_event": ts,
        "ts_init": ts,
    }


def timed(fn: Callable[[Path], Any], repeat: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds of ``repeat`` calls, each into a fresh empty catalog directory."""
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench_writer_") as d:
            w0, c0 = time.perf_counter(), time.process_time()
            fn(Path(d))
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows for the columnar writer")
    parser.add_argument("--object-rows", type=int, default=200_000, help="rows for the writer's object path")
    parser.add_argument("--write-data-rows", type=int, default=20_000, help="rows for catalog.write_data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    cols = regime_columns(args.rows)
    n_obj = min(args.object_rows, args.rows)
    n_wd = min(args.write_data_rows, args.rows)
    table = RegimeData.columns_to_table(cols)
    objects = RegimeData.table_to_objects(table.slice(0, max(n_obj, n_wd)))

    def check(root: Path, n: int) -> None:
        files = list(root.rglob("*.parquet"))
        assert sum(pq.read_metadata(f).num_rows for f in files) == n, "benchmark wrote the wrong row count"

    def writer_columns(root: Path, durable: bool = True) -> None:
        write_custom_data(root, RegimeData, cols, durable=durable)
        check(root, args.rows)

    def writer_arrow(root: Path) -> None:
        write_custom_data(root, RegimeData, table)
        check(root, args.rows)

    def writer_objects(root: Path) -> None:
        write_custom_data(root, RegimeData, objects[:n_obj])
        check(root, n_obj)

    def nautilus_write_data(root: Path) -> None:
        ParquetDataCatalog(str(root)).write_data(objects[:n_wd])
        check(root, n_wd)

    cases: list[tuple[str, int, Callable[[Path], Any], int]] = [
        ("write_custom_data(dict of numpy)", args.rows, writer_columns, args.repeat),
        (
            "  same, durable=False (no fsync)",
            args.rows,
            lambda r: writer_columns(r, durable=False),
            args.repeat,
        ),
        ("write_custom_data(pa.Table)", args.rows, writer_arrow, args.repeat),
        ("write_custom_data(list[RegimeData])", n_obj, writer_objects, args.repeat),
        ("catalog.write_data(list[RegimeData])", n_wd, nautilus_write_data, 1),
    ]
    results = []
    for name, rows, fn, repeat in cases:
        wall, cpu = timed(fn, repeat)
        results.append({"path": name, "rows": rows, "wall_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall})
    baseline = results[-1]["rows_per_s"]

    print(f"RegimeData catalog writes (best of {args.repeat}; write_data once)")
    print(f"{'path':<40} {'rows':>10} {'wall s':>8} {'cpu s':>8} {'rows/s':>12} {'x write_data':>13}")
    for r in results:
        print(
            f"{r['path']:<40} {r['rows']:>10,} {r['wall_s']:>8.3f} {r['cpu_s']:>8.3f} "
            f"{r['rows_per_s']:>12,.0f} {r['rows_per_s'] / baseline:>13.1f}"
        )
    goal = results[0]["rows_per_s"] > 1_000_000
    print(f"goal >1M rows/s (columnar, durable): {'met' if goal else 'NOT met'}")
    return results


if __name__ == "__main__":
    main()
