"""A writer killed *between* two renames of its commit: `sage catalog clean` restores the catalog.

The staging protocol keeps readers safe while data is written (test_crash_consistency.py); the last
step renames several complete files into place one at a time, and a SIGKILL there leaves some of them
visible. The commit journal written before the first rename lets ``clean_catalog`` remove exactly
those files. The kill is real: the child replaces ``os.replace`` with a wrapper that SIGKILLs its own
process right after the first file lands, i.e. at the worst moment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from sage.data.catalog_clean import clean_catalog, find_leftovers
from sage.data.catalog_io import STAGING_PREFIX
from sage.data.catalog_writer import write_custom_data
from sage.data.commit_journal import JOURNAL_PREFIX, CommitJournal, recover
from sage.data.types import RegimeData

from .test_crash_consistency import ROOT, SAGE, _bars_csv, regime_columns, visible_snapshot

KILL_AFTER_FIRST_RENAME = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    real = os.replace
    def replace(src, dst, *a, **k):
        real(src, dst, *a, **k)
        if str(dst).endswith(".parquet"):
            os.kill(os.getpid(), signal.SIGKILL)  # right after the first data file is in place
    os.replace = replace
    mode = sys.argv[1]
    if mode == "records":
        import numpy as np
        from sage.data.catalog_writer import write_custom_data
        from sage.data.types import RegimeData
        from reliability.test_crash_consistency import regime_columns
        a, b = regime_columns(2_000, 5_000), regime_columns(2_000, 5_000)
        b["instrument_id"] = "GBP/USD.SIM"  # two instruments -> two files -> two renames
        cols = {{k: (np.concatenate([a[k], b[k]]) if isinstance(a[k], np.ndarray) and a[k].ndim else a[k])
                for k in a}}
        cols["instrument_id"] = np.array(["EUR/USD.SIM"] * 2_000 + ["GBP/USD.SIM"] * 2_000)
        write_custom_data(sys.argv[2], RegimeData, cols)
    else:
        from sage.data.ingest import IngestConfig, ingest_file
        ingest_file(sys.argv[3], sys.argv[2], IngestConfig(instrument_id="XYZ.XNAS", bar_spec="1-MINUTE-LAST"))
    print("NOT KILLED", flush=True)
    """
).format(tests=str(ROOT / "tests"))


def _run_killed(tmp_path: Path, *args: str) -> None:
    script = tmp_path / "killed_writer.py"
    script.write_text(KILL_AFTER_FIRST_RENAME)
    proc = subprocess.run([sys.executable, str(script), *args], check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the writer was not killed mid-commit: {proc.stdout}{proc.stderr}"


def test_record_write_killed_between_renames_is_undone_by_clean(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write_custom_data(catalog, RegimeData, regime_columns(1_000, 0))
    before = visible_snapshot(catalog)
    _run_killed(tmp_path, "records", str(catalog))

    partial = visible_snapshot(catalog)
    assert len(partial) == len(before) + 1, "expected exactly one of the two new files to be visible"
    journals, _ = find_leftovers(catalog)
    assert len(journals) == 1

    dry = clean_catalog(catalog, dry_run=True, min_age_s=0)
    assert visible_snapshot(catalog) == partial and len(next(iter(dry.commits.values()))) == 1
    report = clean_catalog(catalog, min_age_s=0)
    assert sum(len(v) for v in report.commits.values()) == 1, str(report)
    assert visible_snapshot(catalog) == before
    assert find_leftovers(catalog) == ([], [])
    assert len(ParquetDataCatalog(str(catalog)).query(RegimeData)) == 1_000
    # and the write can now simply be repeated
    write_custom_data(catalog, RegimeData, regime_columns(500, 5_000))
    assert len(ParquetDataCatalog(str(catalog)).query(RegimeData)) == 1_500


def test_ingest_killed_between_renames_is_undone_by_the_clean_command(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    _bars_csv(first, 300, "2020-01-01")
    _bars_csv(second, 2_000, "2021-01-01")
    ok = subprocess.run([str(SAGE), "catalog", "ingest", str(first), "--catalog", str(catalog), "--instrument",
                         "ABC.XNAS", "--bar-spec", "1-MINUTE-LAST"], check=False, capture_output=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    before = visible_snapshot(catalog)
    _run_killed(tmp_path, "ingest", str(catalog), str(second))  # a new instrument: its definition + its bars
    assert visible_snapshot(catalog) != before  # one of the two new files is visible

    cli = subprocess.run([str(SAGE), "catalog", "clean", "--catalog", str(catalog), "--min-age-mins", "0"],
                         check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert "unfinished commit" in cli.stdout
    assert visible_snapshot(catalog) == before
    assert not ParquetDataCatalog(str(catalog)).instruments(instrument_ids=["XYZ.XNAS"])
    assert len(ParquetDataCatalog(str(catalog)).bars(bar_types=["ABC.XNAS-1-MINUTE-LAST-EXTERNAL"])) == 300


def test_clean_removes_old_staging_debris_and_keeps_recent_and_visible_files(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    write_custom_data(catalog, RegimeData, regime_columns(100, 0))
    before = visible_snapshot(catalog)
    old_staging = catalog / f"{STAGING_PREFIX}abcd"
    (old_staging / "data").mkdir(parents=True)
    (old_staging / "data" / "x.parquet").write_bytes(b"partial")
    data_dir = next((catalog / "data").rglob("*.parquet")).parent
    old_tmp = data_dir / ".0_1.parquet.deadbeef.tmp"
    old_tmp.write_bytes(b"partial")
    building = tmp_path / ".catalog-building-xyz"
    building.mkdir()
    recent_tmp = data_dir / ".2_3.parquet.cafe.tmp"
    recent_tmp.write_bytes(b"being written")
    long_ago = time.time() - 3_600
    for p in (old_staging, old_tmp, building):
        os.utime(p, (long_ago, long_ago))

    report = clean_catalog(catalog, min_age_s=600)
    assert sorted(report.leftovers) == sorted([old_staging, old_tmp, building])
    assert report.skipped_recent == [recent_tmp]
    assert not old_staging.exists() and not old_tmp.exists() and not building.exists() and recent_tmp.exists()
    assert visible_snapshot(catalog) == before
    assert "kept (younger than the age limit" in str(report)


def test_journal_never_lists_existing_files_and_rejects_escaping_paths(tmp_path: Path) -> None:
    existing = tmp_path / "data" / "a.parquet"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        CommitJournal(tmp_path, [existing])
    bad = tmp_path / f"{JOURNAL_PREFIX}bad.json"
    bad.write_text('{"version": 1, "targets": ["../outside.parquet"], "dirs": []}')
    with pytest.raises(ValueError, match="escapes the catalog"):
        recover(bad)
    assert bad.exists() and existing.read_bytes() == b"old"
    garbage = tmp_path / f"{JOURNAL_PREFIX}garbage.json"
    garbage.write_text("{not json")
    report = clean_catalog(tmp_path, min_age_s=0)
    assert len(report.errors) == 2 and existing.exists()
