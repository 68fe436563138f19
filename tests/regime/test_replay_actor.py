"""``RegimeReplayActor``: precomputed regimes replayed by an actor, in bounded batches.

* config (c) ``configs/sage_replay_chunked.yaml`` (actor + chunked bars) gives the decisions and fills of
  config (a) (live RegimeActor), also with chunks far smaller than the run;
* in a real BacktestEngine the actor publishes exactly the catalog's records, in order, one per bar, each
  on its own bar;
* it never holds more than ``batch_rows`` decoded records (its counter, and the live RegimeData objects
  in the process);
* bad catalogs fail with errors naming the file (and row).
"""

from __future__ import annotations

import gc
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, LoggingConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import BarType, DataType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog

import tests.strategy.test_sage_end_to_end as e2e
from sage.data.catalog_writer import custom_data_directory, write_custom_data
from sage.data.types import RegimeData
from sage.nodes.backtest import load_backtest_config, run_backtest
from sage.nodes.overrides import apply_overrides
from sage.regime.replay import (
    REPLAY_ACTOR_PATH,
    RegimeReplayActor,
    RegimeReplayActorConfig,
    ReplayError,
    regime_files,
    resolve_replay_catalogs,
)
from tests.strategy.test_sage_end_to_end import ES_BARS, ROOT, _decisions, _fills

# The end-to-end module's fixtures, shared here: its catalog (sample + precomputed regimes) and run (a).
catalog = e2e.catalog
run_a = e2e.run_a

CONFIG_C = ROOT / "configs" / "sage_replay_chunked.yaml"
ES = "ESU3.XCME"


def _config_c(catalog: Path, tmp_path: Path, chunk_size: int | None = None):
    """Config (c) as ``sage backtest configs/sage_replay_chunked.yaml --catalog catalog`` loads it.

    ``resolve_replay_catalogs`` is what ``load_backtest_config`` needs to call for the actor's null
    ``catalog_path`` (idempotent once it does)."""
    raw = yaml.safe_load(CONFIG_C.read_text())
    if chunk_size is not None:
        raw["chunk_size"] = chunk_size
    resolve_replay_catalogs(raw, catalog)
    path = tmp_path / "sage_replay_chunked.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_backtest_config(path, catalog=catalog)


# -- (i) config (c) == config (a) ---------------------------------------------------------------------


def test_the_shipped_config_streams_bars_and_replays_regimes_with_the_actor(catalog, tmp_path):
    config = _config_c(catalog, tmp_path)
    assert config.chunk_size == 100_000
    assert [d.data_type.__name__ for d in config.data] == ["Bar"]  # no RegimeData through the data path
    actor = config.engine.actors[0]
    assert actor.actor_path == REPLAY_ACTOR_PATH
    assert actor.config["catalog_path"] == str(Path(catalog).resolve())
    assert actor.config["bar_type"] == ES_BARS


@pytest.mark.parametrize("chunk_size", [None, 500], ids=["shipped-chunks", "500-bar-chunks"])
def test_replay_actor_gives_the_decisions_and_fills_of_the_live_regime_actor(
    catalog, run_a, tmp_path, chunk_size
):
    run_c = run_backtest(_config_c(catalog, tmp_path, chunk_size))
    assert len(_decisions(run_c)) == 538 and len(_fills(run_c)) > 0
    pd.testing.assert_frame_equal(_decisions(run_a), _decisions(run_c))
    pd.testing.assert_frame_equal(_fills(run_a), _fills(run_c))
    # the records the strategy saw are the precomputed ones (latency_us NaN), one per 1-minute bar
    regimes = run_c.published["RegimeData"]
    assert len(regimes) == 2264 and regimes["latency_us"].isna().all()


# -- (ii) + (iii) in a real BacktestEngine ------------------------------------------------------------


class ProbeConfig(ActorConfig, frozen=True):
    bar_type: str
    keep: bool = True
    count_live_every: int = 0


class Probe(Actor):
    """Subscribes to the bars (before the replay actor) and to RegimeData; records what arrived when.

    With ``count_live_every`` it counts the RegimeData objects alive in the process every that many bars
    (and keeps none itself)."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__(config)
        self.last_bar_ts: int | None = None
        self.bars: list[int] = []
        self.received: list[tuple[RegimeData, int | None]] = []
        self.n_received = 0
        self.live_counts: list[int] = []
        self.live_before = 0

    def on_start(self) -> None:
        if self.config.count_live_every:
            gc.collect()
            self.live_before = _live_regime_data()
        self.subscribe_bars(BarType.from_str(self.config.bar_type))
        self.subscribe_data(DataType(RegimeData))

    def on_bar(self, bar) -> None:
        self.last_bar_ts = bar.ts_event
        self.bars.append(bar.ts_event)
        every = self.config.count_live_every
        if every and len(self.bars) % every == 0:
            self.live_counts.append(_live_regime_data() - self.live_before)

    def on_data(self, data) -> None:
        self.n_received += 1
        if self.config.keep:
            self.received.append((data, self.last_bar_ts))


def _live_regime_data() -> int:
    return sum(type(o) is RegimeData for o in gc.get_objects())


def _engine(catalog: Path, bar_type: str = ES_BARS, **probe) -> BacktestEngine:
    cat = ParquetDataCatalog(str(catalog))
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    bars = cat.bars(bar_types=[bar_type])
    instrument = cat.instruments(instrument_ids=[str(bars[0].bar_type.instrument_id)])[0]
    engine.add_venue(
        instrument.id.venue, OmsType.NETTING, AccountType.MARGIN, [Money(1_000_000, USD)], base_currency=USD
    )
    engine.add_instrument(instrument)
    engine.add_data(bars)
    engine.add_actor(Probe(ProbeConfig(bar_type=bar_type, **probe)))  # first: sees each bar before the replay
    return engine


def _stored(catalog: Path) -> list[RegimeData]:
    files = [f.path for f in regime_files(catalog, ES)]
    return RegimeData.table_to_objects(pq.ParquetDataset([str(f) for f in files]).read().sort_by("ts_init"))


def _run(engine: BacktestEngine, config: RegimeReplayActorConfig) -> tuple[RegimeReplayActor, Probe]:
    actor = RegimeReplayActor(config)
    engine.add_actor(actor)
    probe = next(a for a in engine.trader.actors() if isinstance(a, Probe))
    try:
        engine.run()
    finally:
        engine.dispose()
    return actor, probe


def test_the_actor_publishes_exactly_the_stored_records_in_order_one_per_bar(catalog):
    stored = _stored(catalog)
    actor, probe = _run(
        _engine(catalog), RegimeReplayActorConfig(catalog_path=str(catalog), bar_type=ES_BARS)
    )
    received = [r for r, _ in probe.received]
    assert received == stored  # value equality of every field, in order
    assert [r.ts_event for r in received] == probe.bars  # one per bar ...
    assert all(r.ts_event == bar_ts for r, bar_ts in probe.received)  # ... published on its own bar
    assert (actor.published, actor.skipped, actor.bars_without_record, actor.never_reached) == (
        len(stored),
        0,
        0,
        0,
    )


def test_the_actor_never_holds_more_than_batch_rows_decoded_records(catalog):
    batch_rows = 300
    engine = _engine(catalog, keep=False, count_live_every=250)
    config = RegimeReplayActorConfig(catalog_path=str(catalog), bar_type=ES_BARS, batch_rows=batch_rows)
    actor = RegimeReplayActor(config)
    engine.add_actor(actor)
    probe = next(a for a in engine.trader.actors() if isinstance(a, Probe))
    try:
        engine.run()
        stream_batches = actor._stream  # closed at stop
    finally:
        engine.dispose()
    assert stream_batches is None
    assert probe.n_received == actor.published == 2264
    assert actor.max_held == batch_rows  # full batches were decoded, never more
    # and the run never had more RegimeData alive than a batch (the probe keeps none; no strategy here)
    assert len(probe.live_counts) == 2264 // 250
    assert max(probe.live_counts) <= batch_rows, probe.live_counts
    assert min(probe.live_counts) > 0


def test_records_before_the_first_bar_are_skipped_and_records_after_the_last_never_published(
    catalog, tmp_path
):
    # replay the regimes against the bars of the middle third only
    cat = ParquetDataCatalog(str(catalog))
    bars = cat.bars(bar_types=[ES_BARS])
    part = tmp_path / "part"
    part_cat = ParquetDataCatalog(str(part))
    part_cat.write_data(cat.instruments(instrument_ids=[ES]))
    part_cat.write_data(bars[700:1400])
    actor, probe = _run(_engine(part), RegimeReplayActorConfig(catalog_path=str(catalog), bar_type=ES_BARS))
    assert [r.ts_event for r, _ in probe.received] == [b.ts_event for b in bars[700:1400]]
    assert (actor.skipped, actor.published, actor.never_reached) == (700, 700, 2264 - 1400)


# -- config plumbing ----------------------------------------------------------------------------------


def test_a_null_catalog_path_means_the_runs_catalog():
    raw = yaml.safe_load(CONFIG_C.read_text())
    actor_cfg = raw["engine"]["actors"][0]["config"]
    assert actor_cfg["catalog_path"] is None
    given = resolve_replay_catalogs(yaml.safe_load(CONFIG_C.read_text()), "/data/cat")
    assert given["engine"]["actors"][0]["config"]["catalog_path"] == "/data/cat"
    for entry in raw["data"]:
        entry["catalog_path"] = "/data/other"
    assert (
        resolve_replay_catalogs(raw, None)["engine"]["actors"][0]["config"]["catalog_path"] == "/data/other"
    )
    raw["data"].append({"catalog_path": "/data/third", "data_cls": "x"})
    raw["engine"]["actors"][0]["config"]["catalog_path"] = None
    with pytest.raises(ReplayError, match=r"actors\[0\].config.catalog_path is empty .* 2 catalogs"):
        resolve_replay_catalogs(raw, None)


def test_bar_type_override_reaches_the_replay_actor():
    raw = apply_overrides(yaml.safe_load(CONFIG_C.read_text()), bar_type="AAPL.XNAS-1-MINUTE-LAST-EXTERNAL")
    assert raw["engine"]["actors"][0]["config"]["bar_type"] == "AAPL.XNAS-1-MINUTE-LAST-EXTERNAL"


# -- (iv) bad input -----------------------------------------------------------------------------------


@pytest.fixture
def bad_catalog(catalog, tmp_path) -> Path:
    """A copy of the catalog's bars and instrument without regimes (tests add broken ones)."""
    path = tmp_path / "bad"
    shutil.copytree(catalog, path, ignore=shutil.ignore_patterns("custom_regime_data"))
    assert not custom_data_directory(path, RegimeData, ES).exists()
    return path


def _columns(n: int, start_ns: int = 1_378_000_000_000_000_000, step: int = 60_000_000_000) -> dict:
    ts = start_ns + step * np.arange(n, dtype=np.uint64)
    probs = np.tile([0.25, 0.25, 0.25, 0.25], (n, 1))
    return {
        "instrument_id": ES,
        "label": np.ones(n, np.int8),
        "probabilities": probs,
        "vector": np.zeros((n, 8)),
        "confidence": np.full(n, 0.5),
        "fallback_level": np.full(n, 3, np.int8),
        "model_version": "rules",
        "ts_event": ts,
        "ts_init": ts,
    }


def _start(catalog: Path, **kw) -> None:
    engine = _engine(catalog)
    try:
        engine.add_actor(
            RegimeReplayActor(RegimeReplayActorConfig(catalog_path=str(catalog), bar_type=ES_BARS, **kw))
        )
        engine.run()
    finally:
        engine.dispose()


def test_no_regimes_for_the_instrument_fails_at_start_naming_the_directory(bad_catalog):
    with pytest.raises(
        ReplayError, match=r"no RegimeData for ESU3.XCME .*custom_regime_data.*sage regime precompute"
    ):
        _start(bad_catalog)


def test_missing_catalog_and_empty_path_and_bad_batch_rows_are_refused(tmp_path):
    with pytest.raises(ReplayError, match="does not exist"):
        regime_files(tmp_path / "nowhere", ES)
    actor = RegimeReplayActor(RegimeReplayActorConfig(bar_type=ES_BARS))
    with pytest.raises(ReplayError, match="catalog_path is empty"):
        actor.on_start()
    with pytest.raises(ValueError, match="batch_rows must be >= 1"):
        RegimeReplayActor(RegimeReplayActorConfig(bar_type=ES_BARS, batch_rows=0))


def test_duplicate_records_fail_naming_the_file_and_row(bad_catalog):
    cols = _columns(10)
    cols["ts_event"][5] = cols["ts_event"][4]
    cols["ts_init"][5] = cols["ts_init"][4]
    (path,) = write_custom_data(bad_catalog, RegimeData, cols)  # sorted by ts_init: the writer accepts it
    with pytest.raises(ReplayError, match=rf"{path.name}: row 5: ts_event \d+ duplicates row 4"):
        _start(bad_catalog)


def test_records_out_of_order_across_batches_fail(bad_catalog):
    cols = _columns(10)
    cols["ts_event"] = cols["ts_event"][[0, 1, 2, 3, 4, 5, 6, 2, 8, 9]]  # ts_init still sorted, ts_event not
    (path,) = write_custom_data(bad_catalog, RegimeData, cols)
    with pytest.raises(ReplayError, match=rf"{path.name}: row 7: ts_event \d+ comes before .*row 6"):
        _start(bad_catalog, batch_rows=4)  # rows 4..7 are the second batch: caught inside it


def test_overlapping_files_fail_at_start(bad_catalog):
    first = write_custom_data(bad_catalog, RegimeData, _columns(10))[0]
    table = pq.read_table(first)
    clash = first.parent / "2013-09-01T01-47-00-000000000Z_2013-09-01T02-00-00-000000000Z.parquet"
    pq.write_table(table, clash)
    with pytest.raises(ReplayError, match=rf"overlaps {first.name}|{first.name} .* overlaps"):
        regime_files(bad_catalog, ES)


def test_a_file_that_is_not_regime_data_fails_at_start_naming_it(bad_catalog):
    (path,) = write_custom_data(bad_catalog, RegimeData, _columns(10))
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("confidence"), "confidence", pa.array(["x"] * 10))
    pq.write_table(table.drop_columns(["drift"]), path)
    with pytest.raises(
        ReplayError,
        match=rf"{path.name}: not RegimeData: column 'confidence' is string, expected double; missing column 'drift'",
    ):
        _start(bad_catalog)


def test_a_file_name_that_is_not_an_interval_fails(bad_catalog):
    (path,) = write_custom_data(bad_catalog, RegimeData, _columns(10))
    path.rename(path.with_name("regimes.parquet"))
    with pytest.raises(ReplayError, match="regimes.parquet: file name is not a catalog interval"):
        regime_files(bad_catalog, ES)


def test_invalid_values_and_foreign_rows_fail_naming_the_file(bad_catalog):
    (path,) = write_custom_data(bad_catalog, RegimeData, _columns(10))
    table = pq.read_table(path)
    conf = table.column("confidence").to_numpy().copy()
    conf[3] = math.nan
    pq.write_table(
        table.set_column(table.schema.get_field_index("confidence"), "confidence", pa.array(conf)), path
    )
    with pytest.raises(
        ReplayError, match=rf"{path.name} \(rows from 0\): invalid RegimeData: .*confidence: row 3"
    ):
        _start(bad_catalog)
    ids = pa.array([ES] * 9 + ["NQU3.XCME"])
    pq.write_table(table.set_column(0, "instrument_id", ids), path)
    with pytest.raises(ReplayError, match=rf"{path.name}: row 9 is for NQU3.XCME, not ESU3.XCME"):
        _start(bad_catalog)
