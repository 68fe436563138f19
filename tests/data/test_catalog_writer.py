"""Tests of sage.data.catalog_writer: same output as ``ParquetDataCatalog.write_data``, refusals that
leave the catalog byte-for-byte unchanged, rollback of interrupted writes, and BacktestNode replay."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngineConfig
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.config import (
    BacktestDataConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
    ImportableStrategyConfig,
    LoggingConfig,
    StrategyConfig,
)
from nautilus_trader.model.data import Bar, BarType, CustomData, DataType
from nautilus_trader.model.identifiers import ClientId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog, _are_intervals_disjoint
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

from sage.data import catalog_writer
from sage.data.catalog_writer import CatalogWriteError, custom_data_directory, write_custom_data
from sage.data.types import SAGE_DATA_TYPES, RegimeData, SageData

T0 = 1_700_000_000_000_000_000
MINUTE = 60_000_000_000
EURUSD = "EUR/USD.SIM"
GBPUSD = "GBP/USD.SIM"


def valid_record(cls: type[SageData], i: int, instrument: str, ts: int) -> SageData:
    """A valid ``cls`` record built from its FieldSpecs (so it covers every type and field)."""
    rng = np.random.default_rng(i)
    kw: dict[str, Any] = {}
    for spec in cls.FIELDS[1:]:  # FIELDS[0] is instrument_id
        lo = -5.0 if spec.lo is None else spec.lo
        hi = 5.0 if spec.hi is None else min(spec.hi, 1000)
        if spec.choices is not None:
            kw[spec.name] = spec.choices[i % len(spec.choices)]
        elif spec.kind == "vector":
            kw[spec.name] = rng.uniform(lo, hi, spec.size)
        elif spec.kind == "float":
            kw[spec.name] = math.nan if spec.nan_ok and i % 3 == 0 else float(rng.uniform(lo, hi))
        elif spec.kind == "int":
            kw[spec.name] = int(rng.integers(int(lo), int(hi) + 1))
        else:
            kw[spec.name] = f'{{"i": {i}}}' if spec.is_json else f"{spec.name}-{i}"
    return cls(instrument, ts_event=ts - 1, ts_init=ts, **kw)


def records(
    cls: type[SageData], n: int, start: int = 0, instruments: tuple[str, ...] = (EURUSD,)
) -> list[SageData]:
    return [
        valid_record(cls, k, instruments[k % len(instruments)], T0 + (start + k) * MINUTE) for k in range(n)
    ]


def regime_columns(n: int, start: int = 0, instrument: str = EURUSD) -> dict[str, Any]:
    rng = np.random.default_rng(start)
    p = rng.dirichlet(np.ones(4), n)
    ts = T0 + (start + np.arange(n, dtype=np.int64)) * MINUTE
    return {
        "instrument_id": instrument,
        "label": p.argmax(1).astype(np.int8),
        "probabilities": p,
        "vector": rng.normal(size=(n, 8)),
        "confidence": p.max(1),
        "uncertainty": np.full(n, np.nan),
        "fallback_level": np.int8(1),
        "model_version": "v1",
        "latency_us": rng.uniform(1, 9, n),
        "drift": rng.normal(size=n),
        "health_flags": np.zeros(n, np.int64),
        "ts_event": ts,
        "ts_init": ts,
    }


def snapshot(root: Path) -> dict[str, str | None]:
    """Every path under ``root`` -> sha256 of its bytes (None for directories)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def same_objects(a: list[Any], b: list[Any]) -> bool:
    unwrap = [x.data if isinstance(x, CustomData) else x for x in a]
    other = [x.data if isinstance(x, CustomData) else x for x in b]
    return len(unwrap) == len(other) and all(x == y for x, y in zip(unwrap, other, strict=True))


# -- equivalence with write_data ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_writer_output_matches_write_data(tmp_path: Path, cls: type[SageData]) -> None:
    objs = records(cls, 60, instruments=(EURUSD, GBPUSD))  # interleaved instruments, sorted by ts_init
    paths = {name: tmp_path / name for name in ("nautilus", "objects", "columns")}
    for p in paths.values():
        p.mkdir()
    ParquetDataCatalog(str(paths["nautilus"])).write_data(objs)
    written = write_custom_data(paths["objects"], cls, objs)
    write_custom_data(ParquetDataCatalog(str(paths["columns"])), cls, cls.objects_to_table(objs))

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))

    assert files(paths["nautilus"]) == files(paths["objects"]) == files(paths["columns"])
    assert len(files(paths["nautilus"])) == 2  # one file per instrument directory
    assert sorted(written) == sorted(paths["objects"] / f for f in files(paths["objects"]))
    for f in files(paths["nautilus"]):
        expected = pq.read_schema(paths["nautilus"] / f)
        for name in ("objects", "columns"):
            assert pq.read_schema(paths[name] / f).equals(expected, check_metadata=True)

    reference = ParquetDataCatalog(str(paths["nautilus"]))
    for name in ("objects", "columns"):
        catalog = ParquetDataCatalog(str(paths[name]))
        assert same_objects(catalog.query(cls), reference.query(cls))
        assert same_objects(
            catalog.custom_data(cls, instrument_ids=[GBPUSD]), reference.query(cls, identifiers=[GBPUSD])
        )
        assert catalog.get_intervals(cls, EURUSD) == reference.get_intervals(cls, EURUSD)
    got = [q.data for q in ParquetDataCatalog(str(paths["objects"])).query(cls, identifiers=[EURUSD])]
    assert got == [o for o in objs if o.instrument_id.value == EURUSD]


def test_columnar_write_round_trips_values(tmp_path: Path) -> None:
    cols = regime_columns(500)
    write_custom_data(tmp_path, RegimeData, cols)
    got = [q.data for q in ParquetDataCatalog(str(tmp_path)).query(RegimeData)]
    want = RegimeData.table_to_objects(RegimeData.columns_to_table(cols))
    assert got == want and len(got) == 500
    assert np.array_equal(np.array([g.probabilities for g in got]), cols["probabilities"])


def test_custom_data_from_a_query_can_be_written_back(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    write_custom_data(tmp_path / "a", RegimeData, records(RegimeData, 10))
    queried = ParquetDataCatalog(str(tmp_path / "a")).query(RegimeData)
    write_custom_data(tmp_path / "b", RegimeData, queried)
    assert same_objects(ParquetDataCatalog(str(tmp_path / "b")).query(RegimeData), queried)


def test_start_end_override_names_the_file_and_must_cover_rows(tmp_path: Path) -> None:
    objs = records(RegimeData, 5, start=10)
    start, end = T0, T0 + 100 * MINUTE
    (path,) = write_custom_data(tmp_path, RegimeData, objs, start=start, end=end)
    assert ParquetDataCatalog(str(tmp_path)).get_intervals(RegimeData, EURUSD) == [(start, end)]
    assert path.parent == custom_data_directory(tmp_path, RegimeData, EURUSD)
    with pytest.raises(CatalogWriteError, match="does not cover"):
        write_custom_data(tmp_path / "other", RegimeData, objs, start=T0 + 11 * MINUTE)


# -- refusals leave the catalog unchanged ---------------------------------------------------------------


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    """A catalog holding minutes 100..199 of EUR/USD RegimeData and minutes 0..9 of GBP/USD."""
    write_custom_data(tmp_path, RegimeData, regime_columns(100, start=100))
    write_custom_data(tmp_path, RegimeData, regime_columns(10, start=0, instrument=GBPUSD))
    return tmp_path


@pytest.mark.parametrize(
    ("batch", "kwargs", "message"),
    [
        ({"n": 100, "start": 150}, {}, r"first offending row 0 \(ts_init"),
        ({"n": 100, "start": 50}, {}, r"first offending row 50 \(ts_init"),
        (
            {"n": 10, "start": 199},
            {},
            r"first offending row 0",
        ),  # closed intervals: a shared endpoint overlaps
        ({"n": 10, "start": 90}, {"end": T0 + 250 * MINUTE}, r"would enclose it"),
    ],
    ids=["tail", "head", "touching", "enclosing"],
)
def test_overlapping_write_is_refused_and_catalog_unchanged(
    populated: Path, batch: dict[str, int], kwargs: dict[str, int], message: str
) -> None:
    before = snapshot(populated)
    with pytest.raises(CatalogWriteError, match=message) as err:
        write_custom_data(populated, RegimeData, regime_columns(**batch), **kwargs)
    text = str(err.value)
    assert "RegimeData EUR/USD.SIM" in text and "overlaps existing file" in text
    assert f"[{T0 + 100 * MINUTE}, {T0 + 199 * MINUTE}]" in text  # the existing interval, in ns
    assert snapshot(populated) == before


def test_nautilus_write_data_saves_before_refusing_an_overlap(populated: Path) -> None:
    # The behaviour this writer exists to avoid: write_data saves the file, then its disjointness
    # assertion fires, and the catalog is left with overlapping files.
    before = snapshot(populated)
    overlapping = RegimeData.table_to_objects(RegimeData.columns_to_table(regime_columns(10, start=150)))
    with pytest.raises(AssertionError, match="not disjoint"):
        ParquetDataCatalog(str(populated)).write_data(overlapping)
    assert snapshot(populated) != before


def test_other_instrument_does_not_overlap(populated: Path) -> None:
    (path,) = write_custom_data(populated, RegimeData, regime_columns(100, start=150, instrument=GBPUSD))
    assert path.parent.name == "GBPUSD.SIM"


def test_unsorted_write_is_refused_and_catalog_unchanged(populated: Path) -> None:
    cols = regime_columns(20, start=300)
    cols["ts_init"] = cols["ts_init"].copy()
    cols["ts_init"][[7, 8]] = cols["ts_init"][[8, 7]]
    cols["ts_event"] = cols["ts_init"]
    before = snapshot(populated)
    with pytest.raises(CatalogWriteError, match=r"not sorted by ts_init; row 8 .* comes after row 7"):
        write_custom_data(populated, RegimeData, cols)
    objs = records(RegimeData, 5, start=400)
    with pytest.raises(CatalogWriteError, match="not sorted"):
        write_custom_data(populated, RegimeData, objs[::-1])
    assert snapshot(populated) == before


def test_unsorted_is_judged_per_instrument(tmp_path: Path) -> None:
    # Interleaved instruments are fine as long as each instrument's rows are sorted (write_data's rule).
    a = records(RegimeData, 4, start=10)
    b = records(RegimeData, 4, start=0, instruments=(GBPUSD,))
    write_custom_data(tmp_path, RegimeData, [a[0], b[0], a[1], b[1], a[2], b[2], a[3], b[3]])
    assert len(ParquetDataCatalog(str(tmp_path)).query(RegimeData)) == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": np.array([0] * 17 + [9, 0, 0])}, r"RegimeData\.label: row 17"),
        ({"ts_event": T0 + (300 + np.arange(20)) * MINUTE + 1}, r"row 0 has ts_event .* after ts_init"),
        ({"vector": np.zeros((20, 3))}, r"RegimeData\.vector"),
    ],
)
def test_invalid_batch_is_refused_and_catalog_unchanged(
    populated: Path, change: dict[str, Any], message: str
) -> None:
    before = snapshot(populated)
    with pytest.raises(CatalogWriteError, match=message):
        write_custom_data(populated, RegimeData, {**regime_columns(20, start=300), **change})
    assert snapshot(populated) == before


def test_wrong_objects_and_empty_batches_are_refused(tmp_path: Path) -> None:
    mixed = [*records(RegimeData, 2), *records(SAGE_DATA_TYPES[1], 1, start=5)]
    with pytest.raises(CatalogWriteError, match="row 2: expected RegimeData, got AgentSignal"):
        write_custom_data(tmp_path, RegimeData, mixed)
    with pytest.raises(CatalogWriteError, match="empty"):
        write_custom_data(tmp_path, RegimeData, [])
    with pytest.raises(TypeError):
        write_custom_data(tmp_path, Bar, [])  # type: ignore[arg-type]
    assert snapshot(tmp_path) == {}


def test_multi_instrument_write_is_all_or_nothing(populated: Path) -> None:
    # GBP/USD rows are fine, EUR/USD rows overlap: nothing is written, not even the GBP/USD file.
    objs = sorted(
        [*records(RegimeData, 5, start=500, instruments=(GBPUSD,)), *records(RegimeData, 5, start=150)],
        key=lambda o: o.ts_init,
    )
    before = snapshot(populated)
    with pytest.raises(CatalogWriteError, match="EUR/USD.SIM"):
        write_custom_data(populated, RegimeData, objs)
    assert snapshot(populated) == before


# -- interrupted writes roll back ------------------------------------------------------------------------


def test_failure_inside_pyarrow_writer_leaves_nothing(
    populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = pq.write_table
    calls: list[str] = []

    def write_then_fail(table: pa.Table, where: str, **kwargs: Any) -> None:
        calls.append(where)
        if len(calls) == 2:  # second file: leave a partial temp file behind, then fail
            with open(where, "wb") as f:
                f.write(b"PAR1 partial")
            raise OSError("simulated disk full")
        real_write(table, where, **kwargs)

    monkeypatch.setattr(catalog_writer.pq, "write_table", write_then_fail)
    objs = sorted(
        [
            *records(RegimeData, 5, start=500, instruments=("AUD/USD.SIM",)),
            *records(RegimeData, 5, start=500),
        ],
        key=lambda o: o.ts_init,
    )
    before = snapshot(populated)
    with pytest.raises(OSError, match="simulated disk full"):
        write_custom_data(populated, RegimeData, objs)
    assert len(calls) == 2 and all(Path(c).name.startswith(".") and c.endswith(".tmp") for c in calls)
    assert snapshot(populated) == before  # no temp files, no new AUDUSD.SIM directory


def test_failure_while_renaming_rolls_back_renamed_files(
    populated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    calls: list[str] = []

    def replace_then_fail(src: Any, dst: Any) -> None:
        calls.append(str(dst))
        if len(calls) == 2:
            raise PermissionError("simulated rename failure")
        real_replace(src, dst)

    monkeypatch.setattr(catalog_writer.os, "replace", replace_then_fail)
    objs = sorted(
        [*records(RegimeData, 5, start=500, instruments=(GBPUSD,)), *records(RegimeData, 5, start=500)],
        key=lambda o: o.ts_init,
    )
    before = snapshot(populated)
    with pytest.raises(PermissionError):
        write_custom_data(populated, RegimeData, objs)
    assert len(calls) == 2
    assert snapshot(populated) == before  # the first, already renamed, file was removed again


def test_write_into_empty_catalog_creates_nothing_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(catalog_writer.pq, "write_table", fail)
    with pytest.raises(RuntimeError, match="boom"):
        write_custom_data(tmp_path, RegimeData, regime_columns(3))
    assert snapshot(tmp_path) == {}  # data/custom_regime_data/EURUSD.SIM were removed again


# -- the overlap rule is the catalog's ----------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    existing=st.tuples(st.integers(0, 50), st.integers(0, 20)),
    new=st.tuples(st.integers(0, 50), st.integers(0, 20)),
)
def test_refuses_exactly_when_catalog_would_see_overlap(
    tmp_path_factory: pytest.TempPathFactory, existing: tuple[int, int], new: tuple[int, int]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    e_start, e_len = existing
    n_start, n_len = new
    write_custom_data(root, RegimeData, regime_columns(e_len + 1, start=e_start))
    intervals = [
        (T0 + e_start * MINUTE, T0 + (e_start + e_len) * MINUTE),
        (T0 + n_start * MINUTE, T0 + (n_start + n_len) * MINUTE),
    ]
    before = snapshot(root)
    try:
        write_custom_data(root, RegimeData, regime_columns(n_len + 1, start=n_start))
        refused = False
    except CatalogWriteError:
        refused = True
        assert snapshot(root) == before
    assert refused == (not _are_intervals_disjoint(intervals))


# -- replay -------------------------------------------------------------------------------------------


class ReplayConfig(StrategyConfig, frozen=True):
    bar_type: str


class ReplayRecorder(Strategy):
    def __init__(self, config: ReplayConfig) -> None:
        super().__init__(config)
        self.received: list[RegimeData] = []
        self.bars = 0

    def on_start(self) -> None:
        self.subscribe_bars(BarType.from_str(self.config.bar_type))
        self.subscribe_data(DataType(RegimeData), client_id=ClientId("SAGE"))

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1

    def on_data(self, data: Any) -> None:
        self.received.append(data)


def test_backtest_node_replays_writer_output(tmp_path: Path) -> None:
    instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD")
    bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
    n = 30
    bars = [
        Bar(
            bar_type,
            Price.from_str("1.10000"),
            Price.from_str("1.10020"),
            Price.from_str("1.09980"),
            Price.from_str("1.10010"),
            Quantity.from_int(10),
            T0 + k * MINUTE,
            T0 + k * MINUTE,
        )
        for k in range(n)
    ]
    catalog = ParquetDataCatalog(str(tmp_path))
    catalog.write_data([instrument])
    catalog.write_data(bars)
    cols = regime_columns(n)
    write_custom_data(catalog, RegimeData, cols)

    module = ReplayRecorder.__module__
    config = BacktestRunConfig(
        engine=BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            strategies=[
                ImportableStrategyConfig(
                    strategy_path=f"{module}:ReplayRecorder",
                    config_path=f"{module}:ReplayConfig",
                    config={"bar_type": str(bar_type)},
                )
            ],
        ),
        venues=[
            BacktestVenueConfig(
                name="SIM", oms_type="NETTING", account_type="MARGIN", starting_balances=["1000000 USD"]
            )
        ],
        data=[
            BacktestDataConfig(
                catalog_path=str(tmp_path),
                data_cls=Bar,
                instrument_id=instrument.id,
                bar_spec="1-MINUTE-LAST",
            ),
            BacktestDataConfig(
                catalog_path=str(tmp_path), data_cls=RegimeData.fully_qualified_name(), client_id="SAGE"
            ),
        ],
        dispose_on_completion=False,
        raise_exception=True,
    )
    node = BacktestNode([config])
    try:
        node.run()
        strategy = node.get_engine(config.id).trader.strategies()[0]
        assert strategy.bars == n
        assert strategy.received == RegimeData.table_to_objects(RegimeData.columns_to_table(cols))
    finally:
        node.dispose()
