"""CachePurger in real Nautilus backtests: the cache stays bounded and no report row is lost.

Every comparison runs the same backtest twice, without and with the purger, and asserts that the
reports built through the purger equal ``Trader.generate_*_report()`` of the un-purged run (rows,
columns, dtypes, order). Two kinds of values are random per run in Nautilus itself and are therefore
left out: UUID columns (``init_id``, ``event_id``) and the UUID suffix of position-snapshot ids.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import FillModel, LatencyModel, PerContractFeeModel
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import ActorConfig, CacheConfig, LoggingConfig, StrategyConfig
from nautilus_trader.examples.strategies.ema_cross import EMACross, EMACrossConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
from nautilus_trader.model.identifiers import ExecAlgorithmId, InstrumentId
from nautilus_trader.model.objects import Money
from nautilus_trader.trading.strategy import Strategy

from sage.data.synthetic import SyntheticMarketConfig, synthetic_market_bars, write_synthetic_catalog
from sage.data.types import RegimeData
from sage.execution import PARENT_TOPIC, IcebergConfig, IcebergExecAlgorithm, TWAPConfig, TWAPExecAlgorithm
from sage.nodes.backtest import (
    BacktestOutcome,
    PublishedRecords,
    _RecordCollector,
    load_backtest_config,
    run_backtest,
)
from sage.nodes.cache_purge import CachePurger, CachePurgerConfig

SAGE_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sage_backtest.yaml"
RANDOM_COLUMNS = ("init_id", "event_id")  # UUID4 per run in Nautilus itself
_SNAPSHOT_UUID = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- helpers ------------------------------------------------------------------------------------------


def _bars(n_bars: int, seed: int = 7) -> tuple[Any, BarType, list[Bar]]:
    return synthetic_market_bars(SyntheticMarketConfig(seed=seed, n_bars=n_bars))


class CountSamplerConfig(ActorConfig, frozen=True):
    bar_type: str
    every: int = 50


class CountSampler(Actor):
    """Records ``cache.orders_total_count()`` every ``every`` bars (its maximum is what the purge bounds)."""

    def __init__(self, config: CountSamplerConfig) -> None:
        super().__init__(config)
        self.seen = 0
        self.counts: list[int] = []

    def on_start(self) -> None:
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        self.seen += 1
        if self.seen % self.config.every == 0:
            self.counts.append(self.cache.orders_total_count())


def _engine(instrument: Any, oms_type: OmsType = OmsType.NETTING) -> BacktestEngine:
    """The venue of ``configs/sage_backtest.yaml`` (seeded fills, 1 ms latency, per-contract fees)."""
    engine = BacktestEngine(
        BacktestEngineConfig(
            logging=LoggingConfig(bypass_logging=True),
            cache=CacheConfig(bar_capacity=10_000, tick_capacity=10_000),
            run_analysis=True,
        )
    )
    engine.add_venue(
        instrument.id.venue,
        oms_type,
        AccountType.MARGIN,
        [Money(1_000_000, USD)],
        base_currency=USD,
        latency_model=LatencyModel(base_latency_nanos=1_000_000),
        fill_model=FillModel(prob_slippage=0.5, random_seed=42),
        fee_model=PerContractFeeModel(Money(2.50, USD)),
    )
    engine.add_instrument(instrument)
    return engine


def _without_random(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in RANDOM_COLUMNS if c in frame.columns])
    if frame.index.name == "position_id":
        frame = frame.copy()
        frame.index = pd.Index(
            [_SNAPSHOT_UUID.sub("-SNAPSHOT", str(i)) for i in frame.index], name="position_id"
        )
    return frame


def assert_same_report(expected: pd.DataFrame, actual: pd.DataFrame, name: str) -> None:
    assert len(expected) > 0, f"{name}: the un-purged run produced no rows, nothing was compared"
    pd.testing.assert_frame_equal(
        _without_random(actual), _without_random(expected), check_exact=True, obj=name
    )


def _trader_reports(engine: BacktestEngine) -> dict[str, pd.DataFrame]:
    trader = engine.trader
    out = {
        "orders": trader.generate_orders_report(),
        "order_fills": trader.generate_order_fills_report(),
        "fills": trader.generate_fills_report(),
        "positions": trader.generate_positions_report(),
    }
    for venue in engine.list_venues():
        out[f"account.{venue}"] = trader.generate_account_report(venue)
    return out


def _balance(engine: BacktestEngine) -> Money:
    return engine.cache.account_for_venue(engine.list_venues()[0]).balance_total(USD)


def _assert_same_result(expected: Any, actual: Any) -> None:
    assert (actual.total_orders, actual.total_positions) == (expected.total_orders, expected.total_positions)
    assert actual.stats_pnls == expected.stats_pnls
    pd.testing.assert_series_equal(pd.Series(actual.stats_returns), pd.Series(expected.stats_returns))


# -- EMACross (NETTING: one position id, flipped on every cross) ---------------------------------------


def _run_ema(n_bars: int, oms_type: OmsType, purger: CachePurger | None) -> dict[str, Any]:
    instrument, bar_type, bars = _bars(n_bars)
    engine = _engine(instrument, oms_type)
    engine.add_data(bars)
    engine.add_strategy(
        EMACross(
            EMACrossConfig(
                instrument_id=instrument.id,
                bar_type=bar_type,
                trade_size=Decimal(1),
                fast_ema_period=10,
                slow_ema_period=20,
            )
        )
    )
    sampler = CountSampler(CountSamplerConfig(bar_type=str(bar_type)))
    engine.add_actor(sampler)
    if purger is not None:
        engine.add_actor(purger)
    engine.run()
    out = {
        "reports": purger.reports() if purger else _trader_reports(engine),
        "result": purger.backtest_result(engine) if purger else engine.get_result(),
        "balance": _balance(engine),
        "max_orders": max(sampler.counts),
        "end_orders": engine.cache.orders_total_count(),
        "counts": purger.counts if purger else None,
    }
    engine.dispose()
    return out


@pytest.fixture(scope="module", params=[OmsType.NETTING, OmsType.HEDGING], ids=["netting", "hedging"])
def ema_pair(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    n_bars = 6_000
    plain = _run_ema(n_bars, request.param, None)
    purged = _run_ema(n_bars, request.param, CachePurger(CachePurgerConfig(interval_mins=30, buffer_mins=60)))
    return plain, purged


def test_ema_cross_reports_are_identical_with_the_purger(ema_pair) -> None:
    plain, purged = ema_pair
    assert set(purged["reports"]) == set(plain["reports"])
    for name, expected in plain["reports"].items():
        assert_same_report(expected, purged["reports"][name], name)
    assert purged["balance"] == plain["balance"]
    _assert_same_result(plain["result"], purged["result"])


def test_ema_cross_cache_stays_bounded(ema_pair) -> None:
    plain, purged = ema_pair
    counts = purged["counts"]
    assert counts.passes > 100 and counts.orders > 0.5 * plain["end_orders"]
    assert counts.account_events > 0
    # Un-purged, the cache ends with every order of the run; purged, it never holds even half of them.
    assert plain["end_orders"] > 1_000 and plain["max_orders"] >= 0.95 * plain["end_orders"]
    assert purged["max_orders"] < 0.5 * plain["end_orders"]


def test_hedging_positions_are_purged_too() -> None:
    """HEDGING closes a position per round trip (EMACross closes before reversing): those are purged."""
    purger = CachePurger(CachePurgerConfig(interval_mins=30, buffer_mins=60))
    run = _run_ema(3_000, OmsType.HEDGING, purger)
    assert run["counts"].positions > 50
    assert len(run["reports"]["positions"]) > run["counts"].positions


# -- exec algorithms: parents working while passes run -------------------------------------------------


class ParentsConfig(StrategyConfig, frozen=True):
    instrument_id: str
    bar_type: str
    every: int = 90


class Parents(Strategy):
    """Every ``every`` bars sends a TWAP parent (60 min horizon, 1 slice/min), then an Iceberg parent.

    Alternates sides so the NETTING position goes up and down; records every ``ParentReport``."""

    def __init__(self, config: ParentsConfig) -> None:
        super().__init__(config)
        self.seen = 0
        self.reports: list[Any] = []

    def on_start(self) -> None:
        self.instrument = self.cache.instrument(InstrumentId.from_str(self.config.instrument_id))
        self.msgbus.subscribe(f"{PARENT_TOPIC}.{self.id}", self.reports.append)
        self.subscribe_bars(BarType.from_str(self.config.bar_type))

    def on_bar(self, bar: Bar) -> None:
        self.seen += 1
        k, phase = divmod(self.seen, self.config.every)
        side = OrderSide.BUY if k % 2 == 0 else OrderSide.SELL
        if phase == 1:
            self.submit_order(
                self.order_factory.market(
                    self.instrument.id,
                    side,
                    self.instrument.make_qty(12),
                    exec_algorithm_id=ExecAlgorithmId("TWAP"),
                    exec_algorithm_params={"horizon_secs": 3600, "interval_secs": 60},
                )
            )
        elif phase == 30:
            offset = -2 if side == OrderSide.BUY else 2  # a marketable-ish limit: clips fill over a few bars
            price = self.instrument.make_price(
                bar.close.as_double() - offset * float(self.instrument.price_increment)
            )
            self.submit_order(
                self.order_factory.limit(
                    self.instrument.id,
                    side,
                    self.instrument.make_qty(6),
                    price,
                    time_in_force=TimeInForce.GTC,
                    exec_algorithm_id=ExecAlgorithmId("ICEBERG"),
                    exec_algorithm_params={"visible_qty": 2, "horizon_secs": 1800},
                )
            )


def _run_parents(purger: CachePurger | None) -> dict[str, Any]:
    instrument, bar_type, bars = _bars(2_000, seed=3)
    engine = _engine(instrument)
    engine.add_data(bars)
    strategy = Parents(ParentsConfig(instrument_id=str(instrument.id), bar_type=str(bar_type)))
    engine.add_strategy(strategy)
    engine.add_exec_algorithm(TWAPExecAlgorithm(TWAPConfig()))
    engine.add_exec_algorithm(IcebergExecAlgorithm(IcebergConfig()))
    if purger is not None:
        engine.add_actor(purger)
    engine.run()
    out = {
        "reports": purger.reports() if purger else _trader_reports(engine),
        "parents": [
            (str(r.primary_id), r.status, r.quantity, r.filled_qty, r.n_children) for r in strategy.reports
        ],
        "balance": _balance(engine),
        "counts": purger.counts if purger else None,
    }
    engine.dispose()
    return out


def test_purge_passes_while_twap_and_iceberg_parents_work() -> None:
    """A pass every minute with no buffer: children of working parents must stay, everything else goes."""
    plain = _run_parents(None)
    purged = _run_parents(CachePurger(CachePurgerConfig(interval_mins=1, buffer_mins=0)))
    assert len(plain["parents"]) >= 20
    assert purged["parents"] == plain["parents"]
    assert {status.name for _, status, *_ in plain["parents"]} >= {"COMPLETED"}
    assert purged["counts"].orders > 100
    for name, expected in plain["reports"].items():
        assert_same_report(expected, purged["reports"][name], name)
    assert purged["balance"] == plain["balance"]


# -- the SAGE config through run_backtest ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sage_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[BacktestOutcome, BacktestOutcome, dict[str, list]]:
    tmp = tmp_path_factory.mktemp("sage_purge")
    market = SyntheticMarketConfig(seed=11, n_bars=3_000)
    summary = write_synthetic_catalog(tmp / "catalog", market)
    raw = yaml.safe_load(SAGE_CONFIG.read_text())
    raw["engine"]["run_analysis"] = True
    plain_cfg, purged_cfg = tmp / "plain.yaml", tmp / "purged.yaml"
    purger = "sage.nodes.cache_purge:CachePurger"
    others = [a for a in raw["engine"]["actors"] if a["actor_path"] != purger]  # the shipped config has one
    raw["engine"]["actors"] = others
    plain_cfg.write_text(yaml.safe_dump(raw))
    raw["engine"]["actors"] = [
        *others,
        {
            "actor_path": purger,
            "config_path": "sage.nodes.cache_purge:CachePurgerConfig",
            "config": {"interval_mins": 15, "buffer_mins": 60},  # shorter than shipped: more passes in 3,000 bars
        },
    ]
    purged_cfg.write_text(yaml.safe_dump(raw))

    def run(path: Path) -> BacktestOutcome:
        config = load_backtest_config(
            path, catalog=tmp / "catalog", instrument=summary["instrument_id"], bar_type=summary["bar_type"]
        )
        return run_backtest(config)

    return run(plain_cfg), run(purged_cfg)


def test_sage_config_reports_are_identical_with_the_purger(sage_runs) -> None:
    plain, purged = sage_runs
    assert len(plain.fills) > 20, "the SAGE run must trade for this comparison to mean anything"
    assert plain.purge is None
    assert purged.purge.orders > 0.5 * plain.result.total_orders and purged.purge.account_events > 0
    assert_same_report(plain.fills, purged.fills, "fills")
    assert_same_report(plain.orders, purged.orders, "order_fills")
    assert_same_report(plain.positions, purged.positions, "positions")
    assert set(purged.account) == set(plain.account)
    for venue, expected in plain.account.items():
        assert_same_report(expected, purged.account[venue], f"account {venue}")
    _assert_same_result(plain.result, purged.result)
    assert set(purged.published) == set(plain.published)
    for name, expected in plain.published.items():  # minus wall-clock latencies (measured, not simulated)
        timing = [c for c in expected.columns if "latency_us" in c]
        pd.testing.assert_frame_equal(
            purged.published[name].drop(columns=timing),
            expected.drop(columns=timing),
            check_exact=True,
            obj=name,
        )
    assert [r.primary_id for r in purged.parents] == [r.primary_id for r in plain.parents]


def test_record_collector_gives_the_frame_of_the_record_objects(sage_runs) -> None:
    """The chunked Arrow collector gives exactly ``pd.DataFrame([r.to_dict() for r in records])``."""
    plain, _ = sage_runs
    regimes = plain.published["RegimeData"]
    assert len(regimes) > 2_000
    records = [RegimeData.from_dict(row) for row in regimes.head(700).to_dict("records")]
    collector = _RecordCollector(RegimeData, chunk_rows=256)  # several chunks and a partial one
    for record in records:
        collector(record)
    expected = pd.DataFrame([r.to_dict() for r in records])
    pd.testing.assert_frame_equal(collector.frame(), expected, check_exact=True)
    pd.testing.assert_frame_equal(collector.frame(), regimes.head(700), check_exact=True)
    published = PublishedRecords({"RegimeData": collector.table()})  # what run_backtest returns
    assert published.rows("RegimeData") == 700 and list(published) == ["RegimeData"]
    pd.testing.assert_frame_equal(published["RegimeData"], expected, check_exact=True)
    wanted = ["label", "fallback_level", "uncertainty", "ts_event"]
    pd.testing.assert_frame_equal(published.columns("RegimeData", wanted), expected[wanted], check_exact=True)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="interval_mins"):
        CachePurgerConfig(interval_mins=0)
    with pytest.raises(ValueError, match="buffer_mins"):
        CachePurgerConfig(buffer_mins=-1)
