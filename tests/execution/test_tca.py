"""Transaction-cost analysis: hand-checked numbers, Nautilus report/engine inputs, persistence, summaries."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.examples.algorithms.twap import TWAPExecAlgorithm
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import ExecAlgorithmId, Venue
from nautilus_trader.model.objects import Money, Quantity
from nautilus_trader.trading.strategy import Strategy

from sage.data.synthetic import SyntheticMarketConfig, generate_bars, generate_trades, synthetic_instrument
from sage.execution.impact import SquareRootBookFillModel, market_stats_frame
from sage.execution.tca import (
    TCA_COLUMNS,
    _twap,
    market_frame,
    read_tca_parquet,
    tca_from_backtest,
    tca_markdown,
    tca_records,
    tca_summary,
    tca_table,
    write_tca_parquet,
)

T0 = pd.Timestamp("2024-03-01 14:00", tz="UTC")


def _s(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def _ns(seconds: float) -> int:
    return _s(seconds).value


@pytest.fixture()
def hand_case() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A TWAP buy parent (two fills, remainder canceled) and a plain market sell, in report format."""
    market = pd.DataFrame(
        {"price": [100.0, 101.0, 102.0, 100.0, 99.0], "size": [5.0, 10.0, 10.0, 20.0, 5.0]},
        index=pd.DatetimeIndex([_s(0), _s(10), _s(20), _s(40), _s(60)]),
    )
    orders = pd.DataFrame(
        {
            "client_order_id": ["P1", "P1-E1", "P2"],
            "instrument_id": ["X.SIM"] * 3,
            "side": ["BUY", "BUY", "SELL"],
            # The primary's quantity shrank by the spawned 4 (Nautilus convention): 10 = 6 + 4.
            "quantity": ["6", "4", "5"],
            "filled_qty": ["4", "4", "5"],
            "exec_spawn_id": ["P1", "P1", None],
            "exec_algorithm_id": ["TWAP", "TWAP", None],
            "exec_algorithm_params": [{"horizon_secs": 30, "interval_secs": 10}, None, None],
            "ts_init": [_ns(5), _ns(10), _ns(45)],
            "ts_last": [_ns(40), _ns(10), _ns(45)],  # P1's remainder canceled at t=40
        }
    ).set_index("client_order_id")
    fills = pd.DataFrame(
        {
            "client_order_id": ["P1-E1", "P1", "P2"],
            "last_px": ["101.5", "102.5", "99.5"],
            "last_qty": ["4", "4", "5"],
            "ts_event": [_s(10), _s(30), _s(45)],
            "commission": ["0.00 USD", "0.00 USD", "1.00 USD"],
        }
    ).set_index("client_order_id")
    return orders, fills, market


def test_hand_checked_numbers(hand_case) -> None:
    orders, fills, market = hand_case
    t = tca_table(orders, fills, market, multiplier=2.0).set_index("parent_id")
    assert list(t.reset_index().columns) == list(TCA_COLUMNS)
    buy, sell = t.loc["P1"], t.loc["P2"]

    assert buy.algorithm == "TWAP" and buy.side == 1 and buy.quantity == 10 and buy.filled_qty == 8
    assert buy.n_orders == 2 and buy.n_fills == 2 and buy.horizon_secs == 30
    assert buy.arrival_price == 100.0  # last print at or before t=5
    assert buy.end_ts == _ns(40) and buy.duration_secs == 35.0 and buy.end_price == 100.0
    assert buy.avg_fill_price == 102.0
    assert buy.slippage_bps == pytest.approx(200.0)
    assert buy.execution_cost_bps == pytest.approx((8 * 102.0 - 8 * 100.0) / (10 * 100.0) * 1e4)
    assert buy.opportunity_cost_bps == pytest.approx(0.0)  # the price came back to arrival by the end
    assert buy.shortfall_bps == pytest.approx(160.0)
    assert buy.shortfall_ccy == pytest.approx(16.0 * 2.0)
    twap = (100.0 * 5 + 101.0 * 10 + 102.0 * 20) / 35.0
    assert buy.twap_price == pytest.approx(twap)
    assert buy.twap_cost_bps == pytest.approx((twap - 100.0) / 100.0 * 1e4)
    assert buy.vs_twap_bps == pytest.approx((102.0 - twap) / twap * 1e4)
    assert buy.market_volume == 40.0 and buy.participation == pytest.approx(0.2)

    assert sell.algorithm == "NONE" and sell.side == -1 and sell.fill_rate == 1.0
    assert sell.slippage_bps == pytest.approx(50.0)  # sold 0.5 below an arrival of 100
    assert sell.fees_bps == pytest.approx(1.0 / (5 * 100.0 * 2.0) * 1e4)
    assert sell.shortfall_bps == pytest.approx(50.0 + sell.fees_bps)
    assert sell.duration_secs == 0.0 and sell.twap_price == 100.0 and sell.vs_twap_bps == pytest.approx(50.0)
    assert math.isnan(sell.participation)  # an instant has no market volume


def test_opportunity_cost_marks_the_remainder_at_the_end_price(hand_case) -> None:
    orders, fills, market = hand_case
    orders = orders.copy()
    orders.loc["P1", "ts_last"] = _ns(60)  # canceled later, when the price was 99
    t = tca_table(orders, fills, market).set_index("parent_id").loc["P1"]
    assert t.end_price == 99.0
    assert t.opportunity_cost_bps == pytest.approx(2 * (99.0 - 100.0) / (10 * 100.0) * 1e4)
    # Parent sizes from the algorithms' reports override what the orders imply.
    t2 = tca_table(orders, fills, market, parent_reports={"P1": 16.0}).set_index("parent_id").loc["P1"]
    assert t2.quantity == 16.0 and t2.fill_rate == 0.5


def test_fills_of_unknown_orders_are_an_error(hand_case) -> None:
    orders, fills, market = hand_case
    with pytest.raises(ValueError, match="missing from the orders"):
        tca_table(orders.drop(index="P2"), fills, market)


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(1, 50), st.floats(50.0, 150.0)), min_size=1, max_size=30),
    a=st.integers(-20, 800),
    width=st.integers(0, 800),
)
def test_twap_matches_a_brute_force_integral(steps: list[tuple[int, float]], a: int, width: int) -> None:
    ts = np.cumsum([s for s, _ in steps]).astype(np.int64) * 10**9
    px = np.array([p for _, p in steps])
    start, end = a * 10**9, (a + width) * 10**9
    got = _twap(ts, px, np.array([start]), np.array([end]))[0]
    if start < ts[0]:
        assert math.isnan(got)
        return

    # Brute force: walk the segments of the step function.
    def price_at(t: int) -> float:
        return float(px[np.searchsorted(ts, t, side="right") - 1])

    if width == 0:
        assert got == price_at(start)
        return
    cuts = [start, *[int(t) for t in ts if start < t < end], end]
    area = sum(price_at(lo) * (hi - lo) for lo, hi in itertools.pairwise(cuts))
    assert got == pytest.approx(area / (end - start), rel=1e-9)


def test_parquet_round_trip_and_summary(hand_case, tmp_path: Path) -> None:
    orders, fills, market = hand_case
    table = tca_table(orders, fills, market)
    path = write_tca_parquet(table, tmp_path / "runs" / "tca.parquet", metadata={"run": "abc", "seed": 1})
    back, meta = read_tca_parquet(path)
    pd.testing.assert_frame_equal(back, table)
    assert meta == {"run": "abc", "seed": 1}
    assert not list(path.parent.glob(".*tmp"))  # no temp file left behind
    records = tca_records(table)
    assert [r.parent_id for r in records] == ["P1", "P2"] and records[0].filled_qty == 8.0

    summary = tca_summary(table, by="algorithm")
    assert summary.loc["TWAP", "parents"] == 1 and summary.loc["NONE", "quantity"] == 5.0
    assert summary.loc["TWAP", "shortfall_bps"] == pytest.approx(160.0)
    md = tca_markdown(summary)
    lines = md.splitlines()
    assert lines[0].startswith("| algorithm | parents |") and len(lines) == 4
    assert "| TWAP | 1 |" in md

    both = pd.concat([table, table.assign(parent_id=lambda d: d.parent_id + "b", shortfall_bps=0.0)])
    # Notional-weighted: two equal TWAP parents at 160 and 0 bps average to 80.
    assert tca_summary(both).loc["TWAP", "shortfall_bps"] == pytest.approx(80.0)

    with pytest.raises(ValueError, match="not a sage TCA file"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
        read_tca_parquet(tmp_path / "other.parquet")


# -- From a real backtest ---------------------------------------------------------------------------


class _Parents(Strategy):
    """Submits (offset_secs, side, qty, algorithm or None, params) parent orders after the first trade."""

    def __init__(self, instrument, plan) -> None:
        super().__init__(StrategyConfig(order_id_tag="001"))
        self.instrument = instrument
        self.plan = plan

    def on_start(self) -> None:
        self.subscribe_trade_ticks(self.instrument.id)
        self.started = False

    def on_trade_tick(self, tick: TradeTick) -> None:
        if self.started:
            return
        self.started = True
        for i, (offset, side, qty, algo, params) in enumerate(self.plan):
            self.clock.set_time_alert_ns(
                f"p{i}", tick.ts_event + int(offset * 1e9), self._submitter(side, qty, algo, params)
            )

    def _submitter(self, side, qty, algo, params):
        def submit(_event) -> None:
            order = self.order_factory.market(
                self.instrument.id,
                side,
                Quantity.from_int(qty),
                exec_algorithm_id=ExecAlgorithmId(algo) if algo else None,
                exec_algorithm_params=params,
            )
            self.submit_order(order)

        return submit


@pytest.fixture(scope="module")
def synthetic_run():
    config = SyntheticMarketConfig(seed=21, n_bars=90)
    bars = generate_bars(config)
    trades = generate_trades(config, bars)
    instrument = synthetic_instrument(config, multiplier=5)
    ticks = TradeTick.from_raw_arrays_to_list(
        instrument.id,
        instrument.price_precision,
        instrument.size_precision,
        trades["price"].to_numpy(),
        trades["size"].to_numpy(),
        np.zeros(len(trades), np.uint8),
        [str(i) for i in range(len(trades))],
        trades.index.asi8.astype(np.uint64),
        trades.index.asi8.astype(np.uint64),
    )
    stats = market_stats_frame(bars, window_minutes=30.0, tick_size=config.price_tick)
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        Venue("SIM"),
        OmsType.NETTING,
        AccountType.MARGIN,
        [Money(10**9, USD)],
        base_currency=USD,
        trade_execution=True,
        fill_model=SquareRootBookFillModel(stats, seed=1),
    )
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    plan = [
        (60 * 30, OrderSide.BUY, 3000, None, None),
        (60 * 40, OrderSide.SELL, 3000, "TWAP", {"horizon_secs": 300, "interval_secs": 30}),
        (60 * 50, OrderSide.BUY, 400, None, None),
        (60 * 60, OrderSide.BUY, 3000, "TWAP", {"horizon_secs": 600, "interval_secs": 60}),
    ]
    engine.add_strategy(_Parents(instrument, plan))
    engine.add_exec_algorithm(TWAPExecAlgorithm())
    engine.run()
    yield engine, ticks, stats
    engine.dispose()


def test_backtest_tca_engine_and_reports_agree(synthetic_run) -> None:
    engine, ticks, _ = synthetic_run
    market = market_frame(ticks)
    from_engine = tca_from_backtest(engine, market)
    reports = (engine.trader.generate_orders_report(), engine.trader.generate_fills_report())
    from_reports = tca_from_backtest(reports, market, multiplier=5.0)
    pd.testing.assert_frame_equal(from_engine, from_reports)

    t = from_engine
    assert list(t.algorithm) == ["NONE", "TWAP", "NONE", "TWAP"]
    assert (t.fill_rate == 1.0).all()
    fills = reports[1]
    assert t.n_fills.sum() == len(fills)
    assert t.filled_qty.sum() == fills.last_qty.astype(float).sum()
    # Sliced parents: 10 children each, arrival = decision time, duration within the horizon.
    twap = t[t.algorithm == "TWAP"]
    assert (twap.n_orders == [10, 10]).all()
    assert (twap.duration_secs <= twap.horizon_secs).all() and (
        twap.duration_secs >= 0.8 * twap.horizon_secs
    ).all()
    assert ((twap.participation > 0) & (twap.participation < 1)).all()
    lo = np.array([market.loc[_ts(a) : _ts(e), "price"].min() for a, e in zip(twap.arrival_ts, twap.end_ts)])
    hi = np.array([market.loc[_ts(a) : _ts(e), "price"].max() for a, e in zip(twap.arrival_ts, twap.end_ts)])
    assert ((twap.twap_price >= lo - 1e-9) & (twap.twap_price <= hi + 1e-9)).all()
    # Without fees or remainder the shortfall is the slippage; shortfall_ccy uses the multiplier 5.
    np.testing.assert_allclose(t.shortfall_bps, t.slippage_bps)
    np.testing.assert_allclose(
        t.shortfall_ccy, t.side * (t.avg_fill_price - t.arrival_price) * t.filled_qty * 5.0, rtol=1e-9
    )


def test_venue_impact_shows_in_the_tca(synthetic_run) -> None:
    """The square-root venue makes size cost: the 3000-lot market order pays more than the 400-lot one."""
    engine, ticks, _ = synthetic_run
    t = tca_from_backtest(engine, market_frame(ticks))
    big, small = t.iloc[0], t.iloc[2]
    assert big.algorithm == small.algorithm == "NONE"
    assert big.slippage_bps > small.slippage_bps > 0.0


def _ts(ns: int) -> pd.Timestamp:
    return pd.Timestamp(int(ns), tz="UTC")
