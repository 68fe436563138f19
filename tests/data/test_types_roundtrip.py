"""End-to-end round trip of every sage data type through Nautilus' own persistence and replay:

publish_data in a BacktestEngine -> StreamingConfig feather stream -> dispose -> convert_stream_to_data
-> ParquetDataCatalog.query -> BacktestNode replay (BacktestDataConfig with client_id) into a Strategy.

One engine run and one node run are shared by all four types (module fixtures) to keep this fast.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import (
    ActorConfig,
    BacktestDataConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
    ImportableStrategyConfig,
    LoggingConfig,
    StrategyConfig,
    StreamingConfig,
)
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType, CustomData, DataType
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import ClientId, Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy

from sage.data.regimes import Regime
from sage.data.types import SAGE_DATA_TYPES, AgentSignal, DecisionRecord, RegimeData, RiskProposal, SageData

T0 = 1_700_000_000_000_000_000
MINUTE = 60_000_000_000
N_BARS = 12
CLIENT_ID = "SAGE"
INSTRUMENT = TestInstrumentProvider.default_fx_ccy("EUR/USD")
BAR_TYPE = BarType.from_str(f"{INSTRUMENT.id}-1-MINUTE-LAST-EXTERNAL")
UNKNOWN = "GBP/USD.SIM"  # never added to the engine


def make_bars() -> list[Bar]:
    closes = 1.1 + 0.0005 * np.sin(np.arange(N_BARS))
    return [
        Bar(
            BAR_TYPE,
            Price(c - 1e-4, 5),
            Price(c + 3e-4, 5),
            Price(c - 3e-4, 5),
            Price(c, 5),
            Quantity.from_int(1000 + k),
            T0 + k * MINUTE,
            T0 + k * MINUTE,
        )
        for k, c in enumerate(closes)
    ]


def records_from_bar(bar: Bar, k: int, ts_init: int) -> list[SageData]:
    """One record of each type computed from the bar, exercising NaN, vectors, unicode and JSON."""
    close = float(bar.close)
    p = np.exp(np.array([close, -close, 0.5 * k, 0.1]) % 1.7)
    p /= p.sum()
    iid = bar.bar_type.instrument_id
    ts_event = bar.ts_event
    return [
        RegimeData(
            iid,
            label=int(np.argmax(p)),
            probabilities=p,
            vector=np.cos(np.arange(8) * close + k),
            confidence=float(p.max()),
            uncertainty=math.nan if k % 3 == 0 else 1e-4 * k,
            fallback_level=1 + k % 5,
            model_version="regime-2.0",
            latency_us=80.0 + k,
            drift=math.nan if k % 2 else 0.01 * k,
            health_flags=k % 4,
            ts_event=ts_event,
            ts_init=ts_init,
        ),
        AgentSignal(
            iid,
            agent="trend",
            timeframe="5m",
            direction=(k % 5) - 2,
            strength=close - 1.1,
            probabilities=np.roll([0.4, 0.3, 0.1, 0.1, 0.1], k),
            value=float(bar.volume) / 1000,
            model_version="ppo-7",
            ts_event=ts_event,
            ts_init=ts_init,
        ),
        RiskProposal(
            iid,
            side=(k % 3) - 1,
            quantity=float(k % 6) * 1000,
            size_probabilities=np.eye(6)[k % 6],
            stop_atr_multiple=1.5,
            reward_risk=math.nan if k % 3 == 1 else 2.5,
            entry_price=close,
            stop_price=close - 0.002,
            target_price=close + 0.005,
            risk_amount=200.0 + k,
            confidence=0.6,
            source="mrms" if k % 2 else "rule",
            model_version="mrms-1",
            ts_event=ts_event,
            ts_init=ts_init,
        ),
        DecisionRecord(
            iid,
            decision_id=f"{k:04d}",
            action=("BUY", "SELL", "CLOSE", "HOLD", "NO_TRADE")[k % 5],
            regime_label=int(Regime(k % 4)),
            regime_level=1 + k % 5,
            combined_signal=math.nan if k == 4 else close - 1.1,
            combined_uncertainty=0.01,
            quantity=1000.0,
            algorithm="weighted-vote",
            explanation=f"bar {k}: close {close:.5f} → «{Regime(k % 4).name}»",
            details_json=f'{{"agents": {{"trend": {{"w": 0.5, "dir": {(k % 5) - 2}}}}}, "k": {k}}}',
            ts_event=ts_event,
            ts_init=ts_init,
        ),
    ]


class Publisher(Actor):
    def __init__(self) -> None:
        super().__init__(ActorConfig(component_id="SAGE-PUBLISHER"))
        self.sent: dict[type, list[SageData]] = {cls: [] for cls in SAGE_DATA_TYPES}
        self.unknown_sent = 0

    def on_start(self) -> None:
        self.subscribe_bars(BAR_TYPE)

    def on_bar(self, bar: Bar) -> None:
        k = len(self.sent[RegimeData])
        for obj in records_from_bar(bar, k, self.clock.timestamp_ns()):
            self.publish_data(DataType(type(obj)), obj)
            self.sent[type(obj)].append(obj)
        # Same type, but for an instrument the engine does not know: the streaming writer drops it.
        unknown = records_from_bar(bar, k, self.clock.timestamp_ns())[0]
        self.publish_data(
            DataType(RegimeData), RegimeData.from_dict({**unknown.to_dict(), "instrument_id": UNKNOWN})
        )
        self.unknown_sent += 1


class RecorderConfig(StrategyConfig, frozen=True):
    bar_type: str
    client_id: str


class Recorder(Strategy):
    """Subscribes to bars and the four sage types; records every arrival in order."""

    def __init__(self, config: RecorderConfig) -> None:
        super().__init__(config)
        self.events: list[Any] = []

    def on_start(self) -> None:
        self.subscribe_bars(BarType.from_str(self.config.bar_type))
        for cls in SAGE_DATA_TYPES:
            self.subscribe_data(DataType(cls), client_id=ClientId(self.config.client_id))

    def on_bar(self, bar: Bar) -> None:
        self.events.append(bar)

    def on_data(self, data: Any) -> None:
        self.events.append(data)


def assert_same(got: SageData, want: SageData) -> None:
    assert type(got) is type(want)
    for name in want.SCHEMA.names:
        g, w = getattr(got, name), getattr(want, name)
        if isinstance(w, float) and math.isnan(w):
            assert isinstance(g, float) and math.isnan(g), f"{type(want).__name__}.{name}: {g!r} != NaN"
        else:
            assert g == w and type(g) is type(w), f"{type(want).__name__}.{name}: {g!r} != {w!r}"


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[type, list[SageData]], str, int]:
    """Run the publishing engine with streaming on, dispose it, convert every type to parquet."""
    catalog_path = tmp_path_factory.mktemp("roundtrip_catalog")
    engine = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            streaming=StreamingConfig(catalog_path=str(catalog_path), include_types=list(SAGE_DATA_TYPES)),
        )
    )
    publisher = Publisher()
    try:
        engine.add_venue(
            Venue("SIM"),
            OmsType.NETTING,
            AccountType.MARGIN,
            [Money(1_000_000, USD)],
            default_leverage=Decimal(1),
        )
        engine.add_instrument(INSTRUMENT)
        engine.add_data(make_bars())
        engine.add_actor(publisher)
        engine.run()
        instance_id = engine.kernel.instance_id.value
    finally:
        engine.dispose()  # closes the feather writers; converting before this reads truncated streams

    catalog = ParquetDataCatalog(str(catalog_path))
    for cls in SAGE_DATA_TYPES:
        catalog.convert_stream_to_data(instance_id, cls)
    return catalog_path, publisher.sent, instance_id, publisher.unknown_sent


@pytest.fixture(scope="module")
def replayed(streamed: tuple[Path, dict[type, list[SageData]], str, int]) -> list[Any]:
    """Replay bars + the four converted types with a BacktestNode; return what the strategy saw."""
    catalog_path, *_ = streamed
    catalog = ParquetDataCatalog(str(catalog_path))
    catalog.write_data([INSTRUMENT])
    catalog.write_data(make_bars())
    module = Recorder.__module__
    config = BacktestRunConfig(
        engine=BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            strategies=[
                ImportableStrategyConfig(
                    strategy_path=f"{module}:Recorder",
                    config_path=f"{module}:RecorderConfig",
                    config={"bar_type": str(BAR_TYPE), "client_id": CLIENT_ID},
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
                catalog_path=str(catalog_path),
                data_cls=Bar,
                instrument_id=INSTRUMENT.id,
                bar_spec="1-MINUTE-LAST",
            ),
            *[
                BacktestDataConfig(
                    catalog_path=str(catalog_path), data_cls=cls.fully_qualified_name(), client_id=CLIENT_ID
                )
                for cls in SAGE_DATA_TYPES
            ],
        ],
        dispose_on_completion=False,
        raise_exception=True,
    )
    node = BacktestNode([config])
    try:
        node.run()
        strategy = node.get_engine(config.id).trader.strategies()[0]
        return list(strategy.events)
    finally:
        node.dispose()


def test_stream_layout_is_per_type_and_instrument(streamed: Any) -> None:
    catalog_path, _, instance_id, *_ = streamed
    for cls in SAGE_DATA_TYPES:
        stream_dir = catalog_path / "backtest" / instance_id / f"custom_{_snake(cls.__name__)}" / "EURUSD.SIM"
        assert len(list(stream_dir.glob("*.feather"))) == 1, stream_dir
        parquet = list(
            (catalog_path / "data" / f"custom_{_snake(cls.__name__)}" / "EURUSD.SIM").glob("*.parquet")
        )
        assert len(parquet) == 1


def test_stream_silently_drops_records_of_instruments_not_in_the_cache(streamed: Any) -> None:
    # StreamingFeatherWriter opens a per-instrument file only if cache.instrument(id) exists; records
    # for other instruments are skipped without a log line. Publish only for instruments the node knows.
    catalog_path, _, instance_id, unknown_sent = streamed
    assert unknown_sent == N_BARS
    assert not list((catalog_path / "backtest" / instance_id).rglob("GBPUSD.SIM*"))
    assert ParquetDataCatalog(str(catalog_path)).query(RegimeData, identifiers=[UNKNOWN]) == []


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_catalog_query_returns_what_was_published(streamed: Any, cls: type[SageData]) -> None:
    catalog_path, sent, *_ = streamed
    queried = ParquetDataCatalog(str(catalog_path)).query(cls)
    assert len(sent[cls]) == N_BARS
    assert len(queried) == N_BARS
    assert all(isinstance(q, CustomData) and q.data_type == DataType(cls) for q in queried)
    for got, want in zip([q.data for q in queried], sent[cls], strict=True):
        assert_same(got, want)


@pytest.mark.parametrize("cls", SAGE_DATA_TYPES, ids=lambda c: c.__name__)
def test_backtest_node_replays_published_values(
    streamed: Any, replayed: list[Any], cls: type[SageData]
) -> None:
    _, sent, *_ = streamed
    received = [e for e in replayed if type(e) is cls]
    assert len(received) == N_BARS
    for got, want in zip(received, sent[cls], strict=True):
        assert_same(got, want)


def test_replay_order_bar_first_then_records_in_config_order(replayed: list[Any]) -> None:
    # Equal ts_init: delivered in the order the data configs were added (bars first, then the types).
    kinds = [type(e) for e in replayed]
    assert kinds == [Bar, *SAGE_DATA_TYPES] * N_BARS
    for k in range(N_BARS):
        block = replayed[k * 5 : (k + 1) * 5]
        assert {e.ts_init for e in block} == {block[0].ts_init}


def test_custom_data_config_needs_client_id(streamed: Any) -> None:
    catalog_path, *_ = streamed
    config = BacktestRunConfig(
        engine=BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)),
        venues=[
            BacktestVenueConfig(
                name="SIM", oms_type="NETTING", account_type="MARGIN", starting_balances=["1000000 USD"]
            )
        ],
        data=[BacktestDataConfig(catalog_path=str(catalog_path), data_cls=RegimeData.fully_qualified_name())],
        raise_exception=True,
    )
    node = BacktestNode([config])
    try:
        with pytest.raises(ValueError, match="not setup for loading"):
            node.run()
    finally:
        node.dispose()


def test_custom_data_cannot_be_streamed_in_chunks(streamed: Any) -> None:
    catalog_path, *_ = streamed
    config = BacktestRunConfig(
        engine=BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)),
        venues=[
            BacktestVenueConfig(
                name="SIM", oms_type="NETTING", account_type="MARGIN", starting_balances=["1000000 USD"]
            )
        ],
        data=[
            BacktestDataConfig(
                catalog_path=str(catalog_path),
                data_cls=RegimeData.fully_qualified_name(),
                client_id=CLIENT_ID,
            )
        ],
        chunk_size=5,
        raise_exception=True,
    )
    node = BacktestNode([config])
    try:
        with pytest.raises(RuntimeError, match="unsupported `data_cls`"):
            node.run()
    finally:
        node.dispose()
