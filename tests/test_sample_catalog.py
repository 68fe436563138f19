"""The sample catalog holds real data with correct instrument specs and honest timestamps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from sage.data import sample
from sage.data.catalog_info import describe_catalog


def test_instruments_have_correct_specs(sample_catalog: Path) -> None:
    catalog = ParquetDataCatalog(str(sample_catalog))
    by_id = {str(i.id): i for i in catalog.instruments()}
    es = by_id["ESU3.XCME"]
    assert (es.price_precision, str(es.price_increment), int(es.multiplier)) == (2, "0.25", 50)
    fx = by_id["EUR/USD.SIM"]
    assert (fx.price_precision, str(fx.price_increment)) == (5, "0.00001")
    assert str(by_id["SPX.SIM"].price_increment) == "0.01"
    assert by_id["GOOG.XNAS"].price_precision == 2


@pytest.mark.parametrize(
    ("bar_type", "count", "first_close"),
    [
        (sample.ES_BAR_TYPE, 2264, "2013-09-01 22:01:00+00:00"),
        (sample.EURUSD_BAR_TYPE, 5000, "2017-04-19 10:00:00+00:00"),
        (sample.SPX_BAR_TYPE, 5031, "1999-01-04 21:00:00+00:00"),  # 16:00 New York, winter
        (sample.GOOG_BAR_TYPE, 2148, "2004-08-19 20:00:00+00:00"),  # 16:00 New York, summer
    ],
)
def test_bars_stamped_at_close(sample_catalog: Path, bar_type: str, count: int, first_close: str) -> None:
    bars = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[bar_type])
    assert len(bars) == count
    assert pd.Timestamp(bars[0].ts_event, tz="UTC") == pd.Timestamp(first_close)
    ts = np.array([b.ts_event for b in bars])
    assert np.all(np.diff(ts) > 0)


def test_es_bars_aggregate_the_trades(sample_catalog: Path) -> None:
    catalog = ParquetDataCatalog(str(sample_catalog))
    ticks = catalog.trade_ticks(instrument_ids=[InstrumentId.from_str("ESU3.XCME")])
    assert len(ticks) == 500_000
    bars = catalog.bars(bar_types=[sample.ES_BAR_TYPE])
    # First bar covers [22:00, 22:01) UTC (17:00 Chicago) and is stamped 22:01.
    end = bars[0].ts_event
    in_bar = [t for t in ticks[:20_000] if end - 60_000_000_000 <= t.ts_event < end]
    prices = [t.price.as_double() for t in in_bar]
    assert bars[0].open.as_double() == prices[0]
    assert bars[0].close.as_double() == prices[-1]
    assert bars[0].high.as_double() == max(prices)
    assert bars[0].low.as_double() == min(prices)
    assert bars[0].volume.as_double() == sum(t.size.as_double() for t in in_bar)
    assert sum(b.volume.as_double() for b in bars) == sum(t.size.as_double() for t in ticks)


def test_spx_prices_rounded_to_tick(sample_catalog: Path) -> None:
    bars = ParquetDataCatalog(str(sample_catalog)).bars(bar_types=[sample.SPX_BAR_TYPE])
    assert str(bars[0].open) == "1229.23"  # raw file: 1229.22998
    for b in bars:
        assert b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close)


def test_build_is_idempotent_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cat"
    first = sample.build_sample_catalog(target)
    assert first.built
    digest = _tree_digest(target)
    assert not sample.build_sample_catalog(target).built  # stamp matches: nothing rewritten
    assert _tree_digest(target) == digest

    def explode(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sample, "_write_catalog", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        sample.build_sample_catalog(target, force=True)
    assert _tree_digest(target) == digest  # a failed rebuild leaves the old catalog intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat"]  # no staging left behind


def test_missing_raw_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="es_trades_2013-09.csv.gz"):
        sample.build_sample_catalog(tmp_path / "cat", raw_dir=tmp_path)


def test_describe_catalog(sample_catalog: Path) -> None:
    rows = {(e.data_type, e.identifier): e.rows for e in describe_catalog(sample_catalog)}
    assert rows[("trade_tick", "ESU3.XCME")] == 500_000
    assert rows[("bar", "ESU3.XCME-1-MINUTE-LAST-EXTERNAL")] == 2264


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()
