"""A writer killed with SIGKILL mid-write leaves the catalog readable and exactly as it was.

SIGKILL cannot be caught: no ``except``/``finally`` runs, so this is the guarantee of the write
*protocol* (stage to a hidden temp file or staging directory, then rename), not of error handling.
The child process is killed the moment its staging file/directory appears, i.e. in the middle of the
data write. Afterwards every visible catalog file is byte-identical, the catalog reads the old data,
and the same write can simply be repeated (leftover hidden staging is ignored by readers).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from sage.data.catalog_io import STAGING_PREFIX
from sage.data.catalog_writer import custom_data_directory, write_custom_data
from sage.data.ingest import IngestConfig, ingest_file
from sage.data.types import RegimeData

ROOT = Path(__file__).resolve().parents[2]
SAGE = Path(sys.executable).with_name("sage")
T0 = 1_600_000_000_000_000_000
MINUTE = 60_000_000_000
INSTRUMENT = "EUR/USD.SIM"

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from sage.data.catalog_writer import write_custom_data
    from sage.data.types import RegimeData
    sys.path.insert(0, {tests!r})
    from reliability.test_crash_consistency import regime_columns
    cols = regime_columns(int(sys.argv[2]), int(sys.argv[3]))
    print("READY", flush=True)
    write_custom_data(sys.argv[1], RegimeData, cols, row_group_size=5_000)
    print("DONE", flush=True)
    """
).format(tests=str(ROOT / "tests"))


def regime_columns(n: int, start: int) -> dict:
    rng = np.random.default_rng(start)
    p = rng.dirichlet(np.ones(4), n)
    ts = T0 + (start + np.arange(n, dtype=np.int64)) * MINUTE
    return {
        "instrument_id": INSTRUMENT, "label": p.argmax(1).astype(np.int8), "probabilities": p,
        "vector": rng.normal(size=(n, 8)), "confidence": p.max(1), "uncertainty": rng.uniform(0, 1, n),
        "fallback_level": np.int8(1), "model_version": "v1", "latency_us": rng.uniform(1, 9, n),
        "drift": rng.normal(size=n), "health_flags": np.zeros(n, np.int64), "ts_event": ts, "ts_init": ts,
    }  # fmt: skip


def visible_snapshot(root: Path) -> dict[str, str]:
    """What a catalog reader can see: every file outside hidden/staging entries -> sha256."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith((".", STAGING_PREFIX)) for part in rel.parts) or not path.is_file():
            continue
        out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _kill_when(proc: subprocess.Popen, appeared, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``appeared()`` is true; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if appeared():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0005)
    proc.kill()
    raise TimeoutError("the writer neither started writing nor finished")


def test_sigkill_during_write_custom_data(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write_custom_data(catalog, RegimeData, regime_columns(1_000, 0))
    before = visible_snapshot(catalog)
    directory = custom_data_directory(catalog, RegimeData, INSTRUMENT)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(catalog), "300000", "10000"],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
    killed = _kill_when(proc, lambda: any(p.name.endswith(".tmp") for p in directory.iterdir()))
    assert killed and proc.returncode == -signal.SIGKILL, "the write finished before it could be killed"

    assert visible_snapshot(catalog) == before
    rows = ParquetDataCatalog(str(catalog)).query(RegimeData)
    assert len(rows) == 1_000
    # The interrupted write can be repeated; the hidden leftover is neither read nor in the way.
    write_custom_data(catalog, RegimeData, regime_columns(50_000, 10_000))
    assert len(ParquetDataCatalog(str(catalog)).query(RegimeData)) == 51_000


def _bars_csv(path: Path, n: int, start: str) -> None:
    rng = np.random.default_rng(1)
    close = np.round(100 + np.cumsum(rng.normal(0, 0.05, n)), 2)
    open_ = np.concatenate([[100.0], close[:-1]])
    pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq="1min").strftime("%Y-%m-%dT%H:%M:%S"),
        "open": open_, "high": np.maximum(open_, close) + 0.01, "low": np.minimum(open_, close) - 0.01,
        "close": close, "volume": rng.integers(1, 100, n),
    }).to_csv(path, index=False)  # fmt: skip


def test_sigkill_during_sage_catalog_ingest(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    _bars_csv(small, 500, "2020-01-01")
    _bars_csv(big, 60_000, "2021-01-01")
    config = IngestConfig(instrument_id="ABC.XNAS", bar_spec="1-MINUTE-LAST")
    ingest_file(small, catalog, config)
    before = visible_snapshot(catalog)
    bar_type = "ABC.XNAS-1-MINUTE-LAST-EXTERNAL"

    proc = subprocess.Popen([str(SAGE), "catalog", "ingest", str(big), "--catalog", str(catalog),
                             "--instrument", "ABC.XNAS", "--bar-spec", "1-MINUTE-LAST"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    killed = _kill_when(proc, lambda: any(p.name.startswith(STAGING_PREFIX) for p in catalog.iterdir()))
    assert killed and proc.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"

    assert visible_snapshot(catalog) == before
    assert len(ParquetDataCatalog(str(catalog)).bars(bar_types=[bar_type])) == 500
    later = tmp_path / "later.csv"  # the catalog takes further ingests; the leftover staging is ignored
    _bars_csv(later, 1_000, "2022-01-01")
    assert ingest_file(later, catalog, config).rows_written == 1_000
    assert len(ParquetDataCatalog(str(catalog)).bars(bar_types=[bar_type])) == 1_500


@pytest.mark.parametrize("delay", [1.0, 2.0])
def test_ingest_killed_at_any_time_is_all_or_nothing(tmp_path: Path, delay: float) -> None:
    """Killed at a fixed time (validation, staging, renaming or done): never a partial catalog."""
    catalog = tmp_path / "catalog"
    csv = tmp_path / "bars.csv"
    _bars_csv(csv, 20_000, "2021-01-01")
    proc = subprocess.Popen([str(SAGE), "catalog", "ingest", str(csv), "--catalog", str(catalog),
                             "--instrument", "ABC.XNAS", "--bar-spec", "1-MINUTE-LAST"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    visible = visible_snapshot(catalog) if catalog.exists() else {}
    if not any(k.startswith("data/bar/") for k in visible):
        return  # nothing visible: fine, as long as readers see no bars either
    bars = ParquetDataCatalog(str(catalog)).bars(bar_types=["ABC.XNAS-1-MINUTE-LAST-EXTERNAL"])
    assert len(bars) == 20_000
    assert ParquetDataCatalog(str(catalog)).instruments(instrument_ids=["ABC.XNAS"])
