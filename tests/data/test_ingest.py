"""User data ingest: malformed files are refused with row-level reasons and the catalog stays untouched.

Every refusal test hashes the whole catalog directory (a pre-populated one) before and after, so "the
catalog is unchanged" is checked byte for byte, including directories and leftover staging dirs.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nautilus_trader.model.data import Bar, BarType, TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from sage.data import catalog_io
from sage.data.catalog_io import CatalogOverlapError, CatalogWriteError, atomic_catalog_write
from sage.data.ingest import (
    ColumnError,
    IngestConfig,
    IngestError,
    ingest_file,
    load_file,
)
from sage.data.instruments import goog_equity, spx_cfd

DAY = 86_400 * 10**9
HEADER = "timestamp,open,high,low,close,volume"
BARS = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-DAY-LAST")
BAR_TYPE = "TEST.SIM-1-DAY-LAST-EXTERNAL"


# -- helpers ---------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, str] | None:
    """Every file's sha256 and every directory under ``root`` (None if ``root`` does not exist)."""
    if not root.exists():
        return None
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out[f"dir:{rel}"] = ""
        for name in filenames:
            out[os.path.join(rel, name)] = hashlib.sha256(Path(dirpath, name).read_bytes()).hexdigest()
    return out


def good_rows(n: int, start: str = "2020-01-01") -> list[str]:
    days = pd.date_range(start, periods=n, freq="D")
    rows = []
    for i, d in enumerate(days):
        o = 100 + i
        rows.append(f"{d.date()},{o:.2f},{o + 2:.2f},{o - 1:.2f},{o + 1:.2f},{1000 + i}")
    return rows


def write_csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def read_bars(catalog: Path, bar_type: str = BAR_TYPE) -> list[Bar]:
    return ParquetDataCatalog(str(catalog)).bars(bar_types=[bar_type])


@pytest.fixture(scope="module")
def template_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog that already holds an instrument, bars of TEST.SIM and bars of another instrument."""
    root = tmp_path_factory.mktemp("template") / "catalog"
    src = tmp_path_factory.mktemp("src")
    ingest_file(write_csv(src / "first.csv", good_rows(10, "2019-01-01")), root, BARS)
    other = IngestConfig(instrument_id="GOOG.XNAS", bar_spec="1-DAY-LAST")
    ingest_file(write_csv(src / "goog.csv", good_rows(5, "2019-06-01")), root, other)
    return root


@pytest.fixture()
def catalog(template_catalog: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "catalog"
    shutil.copytree(template_catalog, dest)
    return dest


# -- refusals: one malformed file per bad case -----------------------------------------------------

ROW_CASES = [
    # name, rows replacing good rows (index -> text), expected reason, expected bad rows
    ("unsorted", {3: "2020-01-02,103,105,102,104,1003"}, "unsorted_timestamp", [4]),
    ("duplicate", {3: "2020-01-03,103,105,102,104,1003"}, "duplicate_timestamp", [4]),
    ("nan_price", {2: "2020-01-03,102,,101,103,1002"}, "nan_price", [3]),
    ("nan_token", {2: "2020-01-03,102,104,NaN,103,1002"}, "nan_price", [3]),
    ("inf_price", {1: "2020-01-02,101,inf,100,102,1001"}, "inf_price", [2]),
    ("negative_price", {4: "2020-01-05,104,106,-103,105,1004"}, "non_positive_price", [5]),
    ("zero_price", {0: "2020-01-01,0,102,0,101,1000"}, "non_positive_price", [1]),
    ("high_below_low", {2: "2020-01-03,102,100,101,101,1002"}, "high_below_low", [3]),
    ("open_above_high", {2: "2020-01-03,105,104,101,103,1002"}, "open_outside_range", [3]),
    ("open_below_low", {5: "2020-01-06,99,107,104,106,1005"}, "open_outside_range", [6]),
    ("close_above_high", {2: "2020-01-03,102,104,101,104.5,1002"}, "close_outside_range", [3]),
    ("close_below_low", {2: "2020-01-03,102,104,101,100.99,1002"}, "close_outside_range", [3]),
    ("negative_volume", {2: "2020-01-03,102,104,101,103,-1"}, "negative_volume", [3]),
    ("nan_volume", {2: "2020-01-03,102,104,101,103,"}, "nan_volume", [3]),
]


@pytest.mark.parametrize(("name", "edits", "reason", "rows"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_bad_rows_refused_catalog_unchanged(
    catalog: Path, tmp_path: Path, name: str, edits: dict[int, str], reason: str, rows: list[int]
) -> None:
    data = good_rows(8)
    for i, text in edits.items():
        data[i] = text
    before = snapshot(catalog)
    with pytest.raises(IngestError) as err:
        ingest_file(write_csv(tmp_path / f"{name}.csv", data), catalog, BARS)
    report = err.value.report
    assert report is not None and not report.ok
    assert report.issues[reason].tolist() == rows
    message = str(err.value)
    assert reason in message
    assert f"row {rows[0]}" in message
    assert "catalog is unchanged" in message
    assert snapshot(catalog) == before


def test_bad_rows_all_reported_at_once(catalog: Path, tmp_path: Path) -> None:
    data = good_rows(8)
    data[1] = "2020-01-02,101,inf,100,102,1001"
    data[6] = "2020-01-07,106,108,105,110,1006"
    before = snapshot(catalog)
    with pytest.raises(IngestError) as err:
        ingest_file(write_csv(tmp_path / "two.csv", data), catalog, BARS)
    assert err.value.report is not None
    assert err.value.report.bad_rows.tolist() == [2, 7]
    assert set(err.value.report.issues) == {"inf_price", "close_outside_range"}
    assert snapshot(catalog) == before


COLUMN_CASES = [
    ("missing_column", "timestamp,open,high,close,volume", None, "low"),
    ("non_numeric", HEADER, {3: "2020-01-04,103,105,102,1O4,1003"}, "'close'"),
    ("unparseable_ts", HEADER, {4: "2020-13-45,104,106,103,105,1004"}, "row 5"),
    ("empty_ts", HEADER, {4: ",104,106,103,105,1004"}, "row 5"),
    ("no_ts_column", "when,open,high,low,close,volume", None, "no timestamp column"),
    ("ambiguous_columns", "timestamp,open,high,low,close,Close", None, "'close'"),
]


@pytest.mark.parametrize(
    ("name", "header", "edits", "needle"), COLUMN_CASES, ids=[c[0] for c in COLUMN_CASES]
)
def test_bad_columns_refused_catalog_unchanged(
    catalog: Path, tmp_path: Path, name: str, header: str, edits: dict[int, str] | None, needle: str
) -> None:
    data = good_rows(8)
    if edits is None and header.count(",") == 4:  # one column fewer than the rows have
        data = [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in data]
    for i, text in (edits or {}).items():
        data[i] = text
    before = snapshot(catalog)
    with pytest.raises(ColumnError) as err:
        ingest_file(write_csv(tmp_path / f"{name}.csv", data, header), catalog, BARS)
    assert needle in str(err.value)
    assert snapshot(catalog) == before


def test_non_numeric_message_names_column_and_row(tmp_path: Path) -> None:
    data = good_rows(4)
    data[2] = "2020-01-03,102,104,101,n/a?,1002"
    with pytest.raises(ColumnError) as err:
        load_file(write_csv(tmp_path / "x.csv", data))
    assert err.value.column == "close"
    assert "row 3: 'n/a?'" in str(err.value)


@pytest.mark.parametrize("content", ["", HEADER + "\n"], ids=["zero_bytes", "header_only"])
def test_empty_file_refused(catalog: Path, tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    before = snapshot(catalog)
    with pytest.raises(IngestError, match="empty|no data rows"):
        ingest_file(path, catalog, BARS)
    assert snapshot(catalog) == before


def test_failed_ingest_into_missing_catalog_leaves_nothing(tmp_path: Path) -> None:
    data = good_rows(5)
    data[2] = "2020-01-03,102,104,101,103,-1"
    root = tmp_path / "new_catalog"
    with pytest.raises(IngestError):
        ingest_file(write_csv(tmp_path / "bad.csv", data), root, BARS)
    assert not root.exists()


def test_descending_file_gets_a_hint(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="newest-first"):
        ingest_file(write_csv(tmp_path / "desc.csv", good_rows(6)[::-1]), tmp_path / "c", BARS)


# -- dropping --------------------------------------------------------------------------------------


def test_drop_bad_rows_writes_the_rest_and_counts(catalog: Path, tmp_path: Path) -> None:
    data = good_rows(10)
    data[2] = "2020-01-03,102,,101,103,1002"  # nan_price
    data[5] = "2020-01-05,105,107,104,106,1005"  # equal to row 5's timestamp -> duplicate
    data[7] = "2020-01-08,107,106,108,107,1007"  # high < low (and open/close outside)
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-DAY-LAST", drop_bad_rows=True)
    report = ingest_file(write_csv(tmp_path / "mixed.csv", data), catalog, cfg)
    assert (report.rows_read, report.rows_written, report.rows_dropped) == (10, 7, 3)
    assert report.dropped_by_reason["nan_price"] == 1
    assert report.dropped_by_reason["duplicate_timestamp"] == 1
    assert report.dropped_by_reason["high_below_low"] == 1
    text = str(report)
    assert "3 dropped" in text and "nan_price 1" in text
    new = [b for b in read_bars(catalog) if b.ts_event >= pd.Timestamp("2020-01-01", tz="UTC").value]
    kept_days = [1, 2, 4, 5, 7, 9, 10]  # file rows that survive (1-based); ts_event = that day + 1 day
    expected_ts = [pd.Timestamp(f"2020-01-{d:02d}", tz="UTC").value + DAY for d in kept_days]
    assert [b.ts_event for b in new] == expected_ts
    assert [b.close.as_double() for b in new] == [101.0, 102.0, 104.0, 105.0, 107.0, 109.0, 110.0]


def test_unsorted_rows_dropped_relative_to_running_max(tmp_path: Path) -> None:
    """A row is unsorted when earlier than the latest accepted row, so a far-future glitch drops followers."""
    data = good_rows(6)
    data[1] = "2020-02-01,101,103,100,102,1001"
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-DAY-LAST", drop_bad_rows=True)
    report = ingest_file(write_csv(tmp_path / "glitch.csv", data), tmp_path / "c", cfg)
    assert report.validation.issues["unsorted_timestamp"].tolist() == [3, 4, 5, 6]
    assert report.rows_written == 2
    assert "row 3" in report.validation.details["unsorted_timestamp"]
    assert "row 2" in report.validation.details["unsorted_timestamp"]


def test_every_row_bad_is_refused_even_with_drop(tmp_path: Path) -> None:
    data = [r.replace(",100", ",-100") for r in good_rows(1)]
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-DAY-LAST", drop_bad_rows=True)
    with pytest.raises(IngestError, match="every row is bad"):
        ingest_file(write_csv(tmp_path / "allbad.csv", data), tmp_path / "c", cfg)
    assert not (tmp_path / "c").exists()


# -- good files round-trip -------------------------------------------------------------------------


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = np.round(50 + np.cumsum(rng.normal(0, 0.5, n)), 2)
    open_ = np.round(np.concatenate([[50.0], close[:-1]]), 2)
    high = np.round(np.maximum(open_, close) + rng.uniform(0, 1, n), 2)
    low = np.round(np.minimum(open_, close) - rng.uniform(0, 1, n), 2)
    vol = rng.integers(1, 10_000, n).astype(float)
    idx = pd.date_range("2021-03-01 09:30", periods=n, freq="1min")
    return pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close, "Volume": vol}, index=idx)


def _assert_bars_equal(bars: list[Bar], df: pd.DataFrame, shift_ns: int) -> None:
    assert len(bars) == len(df)
    got = np.array(
        [[b.open.as_double(), b.high.as_double(), b.low.as_double(), b.close.as_double()] for b in bars]
    )
    np.testing.assert_array_equal(got, df[["Open", "High", "Low", "Close"]].to_numpy())
    assert [b.volume.as_double() for b in bars] == df["Volume"].tolist()
    expected_ts = (pd.DatetimeIndex(df.index).tz_localize("UTC").asi8 + shift_ns).tolist()
    assert [b.ts_event for b in bars] == expected_ts
    assert [b.ts_init for b in bars] == expected_ts


def test_good_csv_gz_with_unnamed_index_column_round_trips(tmp_path: Path) -> None:
    df = _frame(300)
    path = tmp_path / "bars.csv.gz"
    with gzip.open(path, "wt") as fh:
        df.to_csv(fh)  # header ",Open,High,Low,Close,Volume" like the bundled samples
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-MINUTE-LAST")
    report = ingest_file(path, tmp_path / "c", cfg)
    assert report.rows_written == 300 and report.rows_dropped == 0 and report.prices_rounded == 0
    assert report.instrument_written
    bars = read_bars(tmp_path / "c", "TEST.SIM-1-MINUTE-LAST-EXTERNAL")
    _assert_bars_equal(bars, df, shift_ns=60 * 10**9)  # file stamps the open; Nautilus the close
    inst = ParquetDataCatalog(str(tmp_path / "c")).instruments()
    assert [str(i.id) for i in inst] == ["TEST.SIM"]


def test_good_parquet_round_trips_with_close_stamps(tmp_path: Path) -> None:
    df = _frame(200, seed=1)
    path = tmp_path / "bars.parquet"
    df.rename_axis("Timestamp").to_parquet(path)
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-MINUTE-LAST", timestamp_is="close")
    report = ingest_file(path, tmp_path / "c", cfg)
    assert report.columns["timestamp"] == "Timestamp"
    _assert_bars_equal(read_bars(tmp_path / "c", "TEST.SIM-1-MINUTE-LAST-EXTERNAL"), df, shift_ns=0)


def test_timestamp_formats_and_time_zone(tmp_path: Path) -> None:
    """M/D/YYYY text, epoch milliseconds and YYYYMMDD integers all land on the same UTC instants."""
    rows = good_rows(3)
    body = [r.split(",", 1)[1] for r in rows]
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-DAY-LAST", timestamp_is="close")
    variants = {
        "mdy": [f"1/{d}/2020,{b}" for d, b in zip((1, 2, 3), body, strict=True)],
        "epoch_ms": [f"{1577836800000 + i * 86_400_000},{b}" for i, b in enumerate(body)],
        "yyyymmdd": [f"2020010{d},{b}" for d, b in zip((1, 2, 3), body, strict=True)],
    }
    expected = [pd.Timestamp(f"2020-01-0{d}", tz="UTC").value for d in (1, 2, 3)]
    for name, data in variants.items():
        report = ingest_file(write_csv(tmp_path / f"{name}.csv", data), tmp_path / name, cfg)
        assert [b.ts_event for b in read_bars(tmp_path / name)] == expected, name
        assert report.first_ts == expected[0]
    central = IngestConfig(
        instrument_id="TEST.SIM", bar_spec="1-DAY-LAST", timestamp_is="close", tz="US/Central"
    )
    ingest_file(write_csv(tmp_path / "ct.csv", rows), tmp_path / "ct", central)
    assert read_bars(tmp_path / "ct")[0].ts_event == pd.Timestamp("2020-01-01 06:00", tz="UTC").value


def test_prices_rounded_to_tick_and_counted(tmp_path: Path) -> None:
    rows = ["1/4/1999,1229.22998,1248.810059,1219.099976,1228.099976,877000000"]
    cfg = IngestConfig(instrument_id="SPX.SIM", bar_spec="1-DAY-LAST", kind="cfd", size_precision=1)
    report = ingest_file(
        write_csv(tmp_path / "spx.csv", rows, "Date,Open,High,Low,Close,Volume"), tmp_path / "c", cfg
    )
    assert report.prices_rounded == 4
    assert report.max_price_change < 0.0001
    bar = read_bars(tmp_path / "c", "SPX.SIM-1-DAY-LAST-EXTERNAL")[0]
    assert (str(bar.open), str(bar.high), str(bar.low), str(bar.close)) == (
        "1229.23",
        "1248.81",
        "1219.10",
        "1228.10",
    )
    assert "4 price values rounded" in str(report)


def test_existing_instrument_reused_and_mismatch_refused(catalog: Path, tmp_path: Path) -> None:
    before = snapshot(catalog)
    bad = IngestConfig(instrument_id="TEST.SIM", bar_spec="1-DAY-LAST", price_precision=4)
    with pytest.raises(IngestError, match="price precision 4"):
        ingest_file(write_csv(tmp_path / "a.csv", good_rows(3, "2021-01-01")), catalog, bad)
    assert snapshot(catalog) == before
    report = ingest_file(write_csv(tmp_path / "b.csv", good_rows(3, "2021-01-01")), catalog, BARS)
    assert not report.instrument_written
    assert [str(i.id) for i in ParquetDataCatalog(str(catalog)).instruments()].count("TEST.SIM") == 1


# -- overlap / append ------------------------------------------------------------------------------


def test_overlapping_ingest_refused_and_disjoint_one_appends(catalog: Path, tmp_path: Path) -> None:
    before = snapshot(catalog)
    n_before = len(read_bars(catalog))
    with pytest.raises(IngestError, match="overlaps"):
        ingest_file(write_csv(tmp_path / "again.csv", good_rows(3, "2019-01-05")), catalog, BARS)
    assert snapshot(catalog) == before
    report = ingest_file(write_csv(tmp_path / "later.csv", good_rows(4, "2019-02-01")), catalog, BARS)
    assert len(report.files) == 1 and report.files[0].startswith("data/bar/TEST.SIM-1-DAY-LAST-EXTERNAL/")
    bars = read_bars(catalog)
    assert len(bars) == n_before + 4
    assert all(a.ts_event < b.ts_event for a, b in itertools.pairwise(bars))
    assert len(list((catalog / "data" / "bar" / BAR_TYPE).glob("*.parquet"))) == 2


def test_dry_run_checks_everything_and_writes_nothing(catalog: Path, tmp_path: Path) -> None:
    before = snapshot(catalog)
    report = ingest_file(
        write_csv(tmp_path / "d.csv", good_rows(3, "2021-01-01")), catalog, BARS, dry_run=True
    )
    assert report.dry_run and report.rows_written == 3 and report.files == ()
    with pytest.raises(IngestError, match="overlaps"):
        ingest_file(write_csv(tmp_path / "o.csv", good_rows(3, "2019-01-02")), catalog, BARS, dry_run=True)
    assert snapshot(catalog) == before


def test_open_stamps_need_a_fixed_bar_length(tmp_path: Path) -> None:
    cfg = IngestConfig(instrument_id="TEST.SIM", bar_spec="100-TICK-LAST")
    with pytest.raises(IngestError, match="timestamp-is close"):
        ingest_file(write_csv(tmp_path / "t.csv", good_rows(3)), tmp_path / "c", cfg)


# -- trades ----------------------------------------------------------------------------------------

TRADES = IngestConfig(instrument_id="ESZ3.XCME", trades=True, kind="future", tick_size="0.25", multiplier=50)


def test_trades_round_trip_with_shared_timestamps(tmp_path: Path) -> None:
    rows = [
        "2013-09-01 17:00:00.083,1640.25,8,buy",
        "2013-09-01 17:00:00.083,1640.25,1,SELL",
        "2013-09-01 17:00:00.083,1640.50,2,",
        "2013-09-01 17:00:01.000,1640.00,5,s",
    ]
    cfg = IngestConfig(
        instrument_id="ESZ3.XCME",
        trades=True,
        kind="future",
        tick_size="0.25",
        multiplier=50,
        tz="US/Central",
    )
    report = ingest_file(
        write_csv(tmp_path / "t.csv", rows, "DateTime,Price,Volume,Side"), tmp_path / "c", cfg
    )
    assert report.rows_written == 4
    ticks: list[TradeTick] = ParquetDataCatalog(str(tmp_path / "c")).trade_ticks(instrument_ids=["ESZ3.XCME"])
    assert [t.price.as_double() for t in ticks] == [1640.25, 1640.25, 1640.5, 1640.0]
    assert [t.size.as_double() for t in ticks] == [8, 1, 2, 5]
    assert [t.aggressor_side for t in ticks] == [
        AggressorSide.BUYER,
        AggressorSide.SELLER,
        AggressorSide.NO_AGGRESSOR,
        AggressorSide.SELLER,
    ]
    t0 = pd.Timestamp("2013-09-01 22:00:00.083", tz="UTC").value  # 17:00 CDT = 22:00 UTC
    assert [t.ts_event for t in ticks][:3] == [t0] * 3
    assert len({str(t.trade_id) for t in ticks}) == 4


TRADE_CASES = [
    ("unsorted", {2: "2020-01-01T00:00:00.5Z,100.25,1"}, "unsorted_timestamp", [3]),
    ("nan_price", {1: "2020-01-01T00:00:01Z,,1"}, "nan_price", [2]),
    ("inf_price", {1: "2020-01-01T00:00:01Z,-inf,1"}, "inf_price", [2]),
    ("zero_price", {1: "2020-01-01T00:00:01Z,0,1"}, "non_positive_price", [2]),
    ("zero_size", {3: "2020-01-01T00:00:03Z,100.5,0"}, "non_positive_size", [4]),
    ("negative_size", {3: "2020-01-01T00:00:03Z,100.5,-2"}, "non_positive_size", [4]),
    ("fractional_size", {3: "2020-01-01T00:00:03Z,100.5,0.4"}, "size_below_precision", [4]),
]


@pytest.mark.parametrize(("name", "edits", "reason", "rows"), TRADE_CASES, ids=[c[0] for c in TRADE_CASES])
def test_bad_trades_refused(
    tmp_path: Path, catalog: Path, name: str, edits: dict[int, str], reason: str, rows: list[int]
) -> None:
    data = [f"2020-01-01T00:00:0{i}Z,{100 + i * 0.25:.2f},{i + 1}" for i in range(5)]
    for i, text in edits.items():
        data[i] = text
    path = write_csv(tmp_path / f"{name}.csv", data, "ts,price,size")
    before = snapshot(catalog)
    with pytest.raises(IngestError) as err:
        ingest_file(path, catalog, TRADES)
    assert err.value.report is not None
    assert err.value.report.issues[reason].tolist() == rows
    assert reason in str(err.value) and f"row {rows[0]}" in str(err.value)
    assert snapshot(catalog) == before
    dropped = ingest_file(path, catalog, msgspec_replace(TRADES, drop_bad_rows=True))
    assert dropped.rows_dropped == len(rows) and dropped.rows_written == 5 - len(rows)


def msgspec_replace(cfg: IngestConfig, **changes: object) -> IngestConfig:
    return msgspec.structs.replace(cfg, **changes)


# -- the atomic write helper -----------------------------------------------------------------------


def test_failure_during_commit_rolls_back(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(catalog)
    calls = {"n": 0}
    real_replace = os.replace

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # first file is already in place when the second move fails
            raise OSError("disk full (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(catalog_io.os, "replace", failing_replace)
    cfg = IngestConfig(instrument_id="NEW.SIM", bar_spec="1-DAY-LAST")  # new instrument -> two files
    with pytest.raises(IngestError, match="disk full"):
        ingest_file(write_csv(tmp_path / "n.csv", good_rows(3)), catalog, cfg)
    assert calls["n"] >= 2
    assert snapshot(catalog) == before


def test_atomic_write_skips_identical_instruments_and_refuses_conflicts(tmp_path: Path) -> None:
    root = tmp_path / "c"
    first = atomic_catalog_write(root, [goog_equity(), goog_equity()])
    assert first.instruments_written == ("GOOG.XNAS",)
    before = snapshot(root)
    again = atomic_catalog_write(root, [goog_equity()])
    assert again.files == () and again.instruments_existing == ("GOOG.XNAS",)
    assert snapshot(root) == before
    assert len(ParquetDataCatalog(str(root)).instruments()) == 1
    spx = spx_cfd()
    atomic_catalog_write(root, [spx])
    with pytest.raises(CatalogWriteError, match="different definition"):
        changed = type(spx).from_dict(
            {**type(spx).to_dict(spx), "size_precision": 2, "size_increment": "0.01"}
        )
        atomic_catalog_write(root, [changed])


def test_atomic_write_refuses_overlap_before_writing(tmp_path: Path) -> None:
    root = tmp_path / "c"
    bt = BarType.from_str("GOOG.XNAS-1-DAY-LAST-EXTERNAL")

    def bars(start: str, n: int) -> list[Bar]:
        ts = pd.date_range(start, periods=n, freq="D", tz="UTC").asi8.astype(np.uint64)
        o = np.full(n, 10.0)
        return Bar.from_raw_arrays_to_list(bt, 2, 0, o, o + 1, o - 1, o, o, ts, ts)

    atomic_catalog_write(root, [goog_equity(), *bars("2020-01-01", 5)])
    before = snapshot(root)
    with pytest.raises(CatalogOverlapError):  # touching the last bar's timestamp is overlap too
        atomic_catalog_write(root, [*bars("2020-01-05", 3), goog_equity()])
    with pytest.raises(CatalogWriteError, match="decreases"):
        atomic_catalog_write(root, bars("2021-01-01", 3)[::-1])
    assert snapshot(root) == before


# -- fuzz: random corruption of a valid frame ------------------------------------------------------

CORRUPTIONS = (
    "nan_open",
    "inf_high",
    "neg_low",
    "zero_close",
    "swap_high_low",
    "open_above_high",
    "close_below_low",
    "ts_back",
    "ts_dup",
    "ts_jump",
    "neg_volume",
    "nan_volume",
)


def _reference_bad_rows(df: pd.DataFrame) -> set[int]:
    """Independent row-by-row oracle of the documented rules (1-based rows)."""
    bad = set()
    running_max = None
    for i, r in enumerate(df.itertuples(index=False), start=1):
        prices = [r.open, r.high, r.low, r.close]
        value_bad = (
            any(not np.isfinite(p) or p <= 0 for p in prices)
            or r.high < r.low
            or not (r.low <= r.open <= r.high)
            or not (r.low <= r.close <= r.high)
            or not np.isfinite(r.volume)
            or r.volume < 0
        )
        if value_bad or (running_max is not None and r.ts <= running_max):
            bad.add(i)
        else:
            running_max = r.ts
    return bad


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=2, max_value=25),
    seed=st.integers(min_value=0, max_value=2**16),
    hits=st.lists(st.tuples(st.integers(0, 24), st.sampled_from(CORRUPTIONS)), max_size=6),
    drop=st.booleans(),
)
def test_fuzz_corruption_refused_or_only_valid_rows(
    template_catalog: Path, n: int, seed: int, hits: list[tuple[int, str]], drop: bool
) -> None:
    rng = np.random.default_rng(seed)
    close = np.round(100 + np.cumsum(rng.normal(0, 1, n)), 2)
    open_ = np.round(np.concatenate([[100.0], close[:-1]]), 2)
    df = pd.DataFrame(
        {
            "ts": pd.Timestamp("2022-01-03").value + np.arange(n, dtype=np.int64) * DAY,
            "open": open_,
            "high": np.round(np.maximum(open_, close) + rng.uniform(0, 2, n), 2),
            "low": np.round(np.minimum(open_, close) - rng.uniform(0, 2, n), 2),
            "close": close,
            "volume": rng.integers(0, 1000, n).astype(float),
        }
    )
    for row, kind in hits:
        i = row % n
        if kind == "nan_open":
            df.loc[i, "open"] = np.nan
        elif kind == "inf_high":
            df.loc[i, "high"] = np.inf
        elif kind == "neg_low":
            df.loc[i, "low"] = -abs(df.loc[i, "low"])
        elif kind == "zero_close":
            df.loc[i, "close"] = 0.0
        elif kind == "swap_high_low":
            df.loc[i, ["high", "low"]] = df.loc[i, ["low", "high"]].to_numpy()
        elif kind == "open_above_high":
            df.loc[i, "open"] = df.loc[i, "high"] + 1
        elif kind == "close_below_low":
            df.loc[i, "close"] = df.loc[i, "low"] - 0.5
        elif kind == "ts_back":
            df.loc[i, "ts"] = df.loc[i, "ts"] - 3 * DAY
        elif kind == "ts_dup" and i > 0:
            df.loc[i, "ts"] = df.loc[i - 1, "ts"]
        elif kind == "ts_jump":
            df.loc[i, "ts"] = df.loc[i, "ts"] + 5 * DAY
        elif kind == "neg_volume":
            df.loc[i, "volume"] = -1.0
        elif kind == "nan_volume":
            df.loc[i, "volume"] = np.nan
    oracle = _reference_bad_rows(df)
    cfg = IngestConfig(
        instrument_id="FUZZ.SIM", bar_spec="1-DAY-LAST", timestamp_is="close", drop_bad_rows=drop
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "catalog"
        shutil.copytree(template_catalog, root)
        before = snapshot(root)
        path = Path(tmp) / "fuzz.csv"
        out = df.assign(timestamp=pd.to_datetime(df["ts"]).dt.strftime("%Y-%m-%dT%H:%M:%S")).drop(
            columns="ts"
        )
        out[["timestamp", "open", "high", "low", "close", "volume"]].to_csv(path, index=False)
        if oracle and (not drop or len(oracle) == n):
            with pytest.raises(IngestError) as err:
                ingest_file(path, root, cfg)
            assert snapshot(root) == before
            if err.value.report is not None and not drop:
                assert set(err.value.report.bad_rows.tolist()) == oracle
            return
        report = ingest_file(path, root, cfg)
        assert report.rows_dropped == len(oracle)
        kept = df.drop(index=[r - 1 for r in oracle])
        bars = read_bars(root, "FUZZ.SIM-1-DAY-LAST-EXTERNAL")
        assert [b.ts_event for b in bars] == kept["ts"].tolist()
        for b, r in zip(bars, kept.itertuples(index=False), strict=True):
            assert b.low <= b.open <= b.high and b.low <= b.close <= b.high
            assert (b.open.as_double(), b.high.as_double(), b.low.as_double(), b.close.as_double()) == (
                r.open,
                r.high,
                r.low,
                r.close,
            )
            assert b.volume.as_double() == r.volume


def test_daylight_saving_local_times(tmp_path: Path) -> None:
    """Sorted local bars through the fall-back hour are placed; gap times and repeated ticks are refused."""
    body = "100,101,99,100,10"
    local = ["00:30", "01:00", "01:30", "01:00", "01:30", "02:00"]  # clocks go back at 02:00 CDT
    rows = [f"2021-11-07 {t},{body}" for t in local]
    cfg = IngestConfig(
        instrument_id="TEST.SIM", bar_spec="30-MINUTE-LAST", timestamp_is="close", tz="US/Central"
    )
    ingest_file(write_csv(tmp_path / "fallback.csv", rows), tmp_path / "c", cfg)
    ts = [b.ts_event for b in read_bars(tmp_path / "c", "TEST.SIM-30-MINUTE-LAST-EXTERNAL")]
    start = pd.Timestamp("2021-11-07 05:30", tz="UTC").value  # 00:30 CDT
    assert ts == [start + k * 1_800 * 10**9 for k in range(6)]
    gap = [f"2021-03-14 {t},{body}" for t in ("01:30", "02:30", "03:30")]  # 02:30 never happened
    with pytest.raises(ColumnError, match="do not exist") as err:
        ingest_file(write_csv(tmp_path / "gap.csv", gap), tmp_path / "g", cfg)
    assert "row 2" in str(err.value)
    ticks = [f"2021-11-07 01:30:00.000,100.25,{k + 1}" for k in range(2)]
    es = msgspec_replace(TRADES, tz="US/Central")
    with pytest.raises(ColumnError, match="repeated hour"):
        ingest_file(write_csv(tmp_path / "ticks.csv", ticks, "ts,price,size"), tmp_path / "t", es)
    assert not (tmp_path / "g").exists() and not (tmp_path / "t").exists()
