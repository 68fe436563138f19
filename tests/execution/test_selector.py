"""Algorithm selector: optimality on the model, monotone behaviour, params the real algorithms accept."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.component import TestClock
from nautilus_trader.common.factories import OrderFactory
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, OrderType
from nautilus_trader.model.identifiers import StrategyId, TraderId, Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.trading.strategy import Strategy

from sage.data.instruments import es_future
from sage.data.sample import ES_BAR_TYPE
from sage.execution import (
    ICEBERG_PARAMS,
    STEALTH_PARAMS,
    TWAP_PARAMS,
    VWAP_PARAMS,
    IcebergExecAlgorithm,
    ImmediateExecAlgorithm,
    ParentStatus,
    StealthExecAlgorithm,
    TWAPExecAlgorithm,
    VolumeProfile,
    VWAPConfig,
    VWAPExecAlgorithm,
    parse_params,
)
from sage.execution.impact import (
    ImpactParams,
    MarketStats,
    SquareRootBookFillModel,
    market_stats_frame,
    stats_at,
)
from sage.execution.selector import (
    AlgorithmSelector,
    SelectorConfig,
    build_order,
    fixed_algorithm_costs,
    price_candidates,
    profile_weights,
    touch_probability,
)
from sage.execution.tca import market_frame, tca_from_backtest

STATS = MarketStats(price=1640.0, volume_per_min=800.0, sigma_per_min=2e-4, half_spread_bps=0.76)
FINE = SelectorConfig(
    algorithms=("IMMEDIATE", "TWAP"), horizons_secs=tuple(float(h) for h in range(60, 7201, 30))
)

stats_st = st.builds(
    MarketStats,
    price=st.floats(10.0, 10_000.0),
    volume_per_min=st.floats(1.0, 1e5),
    sigma_per_min=st.floats(1e-5, 2e-3),
    half_spread_bps=st.floats(0.0, 5.0),
)


@settings(max_examples=80, deadline=None)
@given(
    stats=stats_st,
    q_over_v=st.floats(0.001, 200.0),
    urgency=st.floats(0.0, 1.0),
    tick=st.sampled_from([None, 0.25]),
)
def test_choice_is_the_minimum_and_never_worse_than_any_fixed_algorithm(
    stats: MarketStats, q_over_v: float, urgency: float, tick: float | None
) -> None:
    qty = max(1.0, q_over_v * stats.volume_per_min)
    selector = AlgorithmSelector()
    sel = selector.select("BUY", qty, stats, urgency, tick_size=tick)
    table = selector.candidates(qty, stats, urgency, tick_size=tick)
    assert sel.score_bps == pytest.approx(table.score_bps.min())
    assert sel.score_bps == min(sel.per_algorithm_costs.values())
    fixed = [("IMMEDIATE", 0.0), ("TWAP", 600.0), ("VWAP", 600.0), ("STEALTH", 600.0)]
    if tick is not None:
        fixed.append(("ICEBERG", 600.0))
    fixed_scores = fixed_algorithm_costs(qty, stats, fixed, urgency, tick_size=tick).score_bps
    assert sel.score_bps <= fixed_scores.min() + 1e-9 <= fixed_scores.max() + 1e-9
    # On expected cost alone (risk ignored) the choice never costs more than sending everything at once.
    immediate = table[table.algorithm_id == "IMMEDIATE"].cost_bps.iloc[0]
    assert sel.expected_cost_bps <= immediate + 1e-9


def test_urgency_one_means_immediate_at_any_size() -> None:
    selector = AlgorithmSelector()
    for q_over_v in (0.01, 1.0, 30.0, 500.0):
        sel = selector.select(OrderSide.SELL, q_over_v * STATS.volume_per_min, STATS, 1.0, tick_size=0.25)
        assert sel.algorithm_id == "IMMEDIATE" and sel.horizon_secs == 0.0 and sel.params == {}
        assert sel.order_type == "MARKET" and sel.risk_bps == 0.0
    for q_over_v in (0.01, 0.5, 2.0):  # high (not total) urgency: immediate for ordinary sizes
        assert (
            selector.select("BUY", q_over_v * 800.0, STATS, 0.9, tick_size=0.25).algorithm_id == "IMMEDIATE"
        )


def test_bigger_orders_get_longer_schedules_urgent_ones_shorter() -> None:
    selector = AlgorithmSelector(FINE)
    sizes = STATS.volume_per_min * np.geomspace(0.01, 300.0, 60)
    for u in (0.2, 0.5, 0.8):
        horizons = [selector.select("BUY", q, STATS, u).horizon_secs for q in sizes]
        assert np.all(np.diff(horizons) >= 0), (u, horizons)
        assert horizons[0] == 0.0 and horizons[-1] > 0.0  # small: at once; large: sliced
    for q_over_v in (2.0, 20.0, 200.0):
        horizons = [
            selector.select("BUY", q_over_v * 800.0, STATS, u).horizon_secs
            for u in np.linspace(0.05, 1.0, 20)
        ]
        assert np.all(np.diff(horizons) <= 0), (q_over_v, horizons)


def test_slicing_threshold_and_horizon_follow_the_closed_form() -> None:
    """Slicing pays from Q/V > 16/3 (lambda/Y)^2; the chosen horizon is near sqrt(3) Y sqrt(Q/V) / lambda."""
    selector = AlgorithmSelector(FINE)
    lam = float(ImpactParams().risk_weight(0.5))
    threshold = 16.0 / 3.0 * lam**2
    assert selector.select("BUY", 0.8 * threshold * 800.0, STATS, 0.5).algorithm_id == "IMMEDIATE"
    assert selector.select("BUY", 1.5 * threshold * 800.0, STATS, 0.5).algorithm_id == "TWAP"
    q_over_v = 100.0
    sel = selector.select("BUY", q_over_v * 800.0, STATS, 0.5)
    assert sel.horizon_secs / 60.0 == pytest.approx(math.sqrt(3.0) * math.sqrt(q_over_v) / lam, abs=0.5)


def test_default_selector_slices_large_orders_and_rests_small_patient_ones() -> None:
    selector = AlgorithmSelector()
    small = selector.select("BUY", 20.0, STATS, 0.2, tick_size=0.25)
    assert small.algorithm_id == "ICEBERG" and small.order_type == "LIMIT"
    assert small.limit_price == 1640.0 - 0.25  # one tick behind the last trade, on the grid
    assert selector.select("SELL", 20.0, STATS, 0.2, tick_size=0.25).limit_price == 1640.25
    assert selector.select("BUY", 20.0, STATS, 0.2).algorithm_id != "ICEBERG"  # no tick: not priceable
    big = selector.select("BUY", 30 * 800.0, STATS, 0.5, tick_size=0.25)
    assert big.algorithm_id in ("TWAP", "VWAP") and big.horizon_secs >= 600.0


def test_volume_profile_and_leakage_change_the_choice() -> None:
    selector = AlgorithmSelector(
        SelectorConfig(algorithms=("TWAP", "VWAP", "STEALTH"), horizons_secs=(1800.0,))
    )
    flat = selector.select("BUY", 20 * 800.0, STATS, 0.5)
    assert flat.algorithm_id == "TWAP"  # without a profile VWAP ties and the simpler TWAP wins
    # A profile with a thin half hour: equal TWAP slices take a large share of the thin minutes.
    fractions = [1.0] * 48
    fractions[29] = 0.1  # 14:30-15:00 UTC
    profile = VolumeProfile(fractions=tuple(f / sum(fractions) for f in fractions), bucket_minutes=30)
    at = pd.Timestamp("2024-01-02 14:20", tz="UTC").value
    stats = msgspec.structs.replace(STATS, ts_ns=at)
    weights = profile_weights(profile, at, 30)
    assert weights[:10].min() > 5 * weights[10:].max()
    chosen = selector.select("BUY", 20 * 800.0, stats, 0.5, volume_profile=profile)
    assert chosen.algorithm_id == "VWAP"
    assert chosen.per_algorithm_costs["TWAP"] > chosen.per_algorithm_costs["VWAP"]
    leaky = AlgorithmSelector(msgspec.structs.replace(selector.config, predictability_penalty=0.2))
    assert leaky.select("BUY", 20 * 800.0, STATS, 0.5).algorithm_id == "STEALTH"


@pytest.mark.parametrize("q_over_v", [0.05, 1.0, 10.0])
@pytest.mark.parametrize("horizon", [120.0, 600.0, 3600.0])
def test_params_are_accepted_by_the_algorithms(q_over_v: float, horizon: float) -> None:
    selector = AlgorithmSelector()
    qty = round(q_over_v * STATS.volume_per_min)
    for algo, specs in (
        ("TWAP", TWAP_PARAMS),
        ("VWAP", VWAP_PARAMS),
        ("STEALTH", STEALTH_PARAMS),
        ("ICEBERG", ICEBERG_PARAMS),
    ):
        params = parse_params(selector.params_for(algo, horizon, qty, STATS), specs, algo)
        assert params["horizon_secs"] == horizon
        if algo in ("TWAP", "VWAP"):
            assert params["interval_secs"] <= horizon and horizon / params["interval_secs"] >= 4
        if algo == "STEALTH":
            assert params["min_interval_secs"] <= params["max_interval_secs"] <= horizon
            # Expected span (slices x mean gap) fits the horizon, as the algorithm asks.
            mean_fraction = 0.5 * (params["min_slice_fraction"] + params["max_slice_fraction"])
            mean_gap = 0.5 * (params["min_interval_secs"] + params["max_interval_secs"])
            assert horizon / mean_gap * mean_fraction >= 1.0
        if algo == "ICEBERG":
            assert 1.0 <= params["visible_qty"] <= max(qty, 1.0)


def test_build_order_routes_to_the_selected_algorithm() -> None:
    es = es_future()
    factory = OrderFactory(TraderId("T-001"), StrategyId("S-001"), TestClock())
    selector = AlgorithmSelector()
    twap = selector.select("BUY", 20 * 800.0, STATS, 0.5, tick_size=0.25)
    order = build_order(factory, es, OrderSide.BUY, 16000, twap)
    assert order.order_type == OrderType.MARKET and order.exec_algorithm_id.value == twap.algorithm_id
    assert order.exec_algorithm_params == twap.params and order.quantity.as_double() == 16000
    ice = selector.select("SELL", 20.0, STATS, 0.2, tick_size=0.25)
    order = build_order(factory, es, OrderSide.SELL, 20, ice)
    assert order.order_type == OrderType.LIMIT and order.price.as_double() == ice.limit_price
    now = build_order(factory, es, OrderSide.SELL, 5, selector.select("SELL", 5, STATS, 1.0))
    assert now.exec_algorithm_id.value == "IMMEDIATE" and not now.exec_algorithm_params


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SelectorConfig(algorithms=("TWAP", "MAGIC"))
    with pytest.raises(ValueError):
        SelectorConfig(horizons_secs=(0.0,))
    with pytest.raises(ValueError):
        SelectorConfig(stealth_slice_fraction=(0.3, 0.1))
    with pytest.raises(ValueError, match="volume_per_min"):
        price_candidates(10.0, MarketStats(price=1.0, volume_per_min=0.0, sigma_per_min=1e-4), 0.5)
    cfg = SelectorConfig(horizons_secs=(300.0,), passive_participation=0.2)
    assert SelectorConfig.__struct_config__.frozen
    assert msgspec.json.decode(msgspec.json.encode(cfg), type=SelectorConfig) == cfg


# -- Selections run by the real algorithms in a backtest -------------------------------------------------


class _SelectAndSubmit(Strategy):
    """At each (ts, side, qty, urgency): select with causal stats, build the order, submit it."""

    def __init__(self, instrument, plan, stats: pd.DataFrame, selector: AlgorithmSelector) -> None:
        super().__init__(StrategyConfig(order_id_tag="001"))
        self.instrument, self.plan, self.stats, self.selector = instrument, plan, stats, selector
        self.selections: dict[str, object] = {}

    def on_start(self) -> None:
        for i, (ts, side, qty, urgency) in enumerate(self.plan):
            self.clock.set_time_alert_ns(f"p{i}", ts, self._go(side, qty, urgency))

    def _go(self, side, qty, urgency):
        def submit(_event) -> None:
            stats = stats_at(self.stats, pd.Timestamp(self.clock.timestamp_ns(), tz="UTC"))
            sel = self.selector.select(side, qty, stats, urgency, tick_size=0.25)
            order = build_order(self.order_factory, self.instrument, side, qty, sel)
            self.selections[order.client_order_id.value] = sel
            self.submit_order(order)

        return submit


def test_selections_execute_in_a_real_backtest(sample_catalog: Path) -> None:
    es = es_future()
    catalog = ParquetDataCatalog(str(sample_catalog))
    start, end = pd.Timestamp("2013-09-03 14:00", tz="UTC"), pd.Timestamp("2013-09-03 14:10", tz="UTC")
    history = catalog.bars(bar_types=[ES_BAR_TYPE], end=end)
    stats = market_stats_frame(history, tick_size=0.25)
    ticks = catalog.trade_ticks(instrument_ids=[str(es.id)], start=start, end=end)
    selector = AlgorithmSelector(SelectorConfig(horizons_secs=(120.0, 240.0)))
    t0 = start.value + 10**9
    plan = [
        (t0, OrderSide.BUY, 30, 1.0),  # urgent: IMMEDIATE
        (t0 + 60 * 10**9, OrderSide.SELL, 40_000, 0.5),  # huge: sliced
        (t0 + 300 * 10**9, OrderSide.BUY, 10, 0.2),  # small and patient: ICEBERG
    ]
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        Venue("XCME"),
        OmsType.NETTING,
        AccountType.MARGIN,
        [Money(10**9, USD)],
        base_currency=USD,
        trade_execution=True,
        fill_model=SquareRootBookFillModel(stats, seed=3),
    )
    engine.add_instrument(es)
    engine.add_data(ticks)
    strategy = _SelectAndSubmit(es, plan, stats, selector)
    engine.add_strategy(strategy)
    profile = VolumeProfile.from_bars(catalog.bars(bar_types=[ES_BAR_TYPE], end=start))
    vwap = VWAPExecAlgorithm(VWAPConfig())
    vwap.set_profile(es.id, profile)
    algorithms = [
        ImmediateExecAlgorithm(),
        TWAPExecAlgorithm(),
        vwap,
        StealthExecAlgorithm(),
        IcebergExecAlgorithm(),
    ]
    for algo in algorithms:
        engine.add_exec_algorithm(algo)
    try:
        engine.run()
        chosen = [s.algorithm_id for s in strategy.selections.values()]
        assert (
            chosen[0] == "IMMEDIATE" and chosen[1] in ("TWAP", "VWAP", "STEALTH") and chosen[2] == "ICEBERG"
        )
        reports = {str(k): r for a in algorithms for k, r in a.reports.items()}
        assert set(reports) == set(strategy.selections)
        for pid, report in reports.items():
            assert report.status != ParentStatus.DENIED, report.reason  # the params were accepted
            assert report.status == ParentStatus.COMPLETED, (pid, report.status, report.reason)
        table = tca_from_backtest(engine, market_frame(ticks), parent_reports=reports).set_index("parent_id")
        assert list(table.algorithm) == chosen
        assert (table.fill_rate == 1.0).all()
        sliced = table.iloc[1]
        assert sliced.n_orders > 2 and sliced.duration_secs > 60.0
    finally:
        engine.dispose()


def test_touch_probability_matches_a_simulated_random_walk() -> None:
    """Reflection principle: P(min of a driftless walk over H reaches -d) = 2 Phi(-d / (sigma sqrt(H)))."""
    rng = np.random.default_rng(0)
    sigma, horizon, steps = 2.0, 10.0, 2000
    paths = np.cumsum(rng.normal(0.0, sigma * math.sqrt(horizon / steps), (4000, steps)), axis=1)
    for d in (1.0, 3.0, 8.0):
        simulated = float(np.mean(paths.min(axis=1) <= -d))
        assert touch_probability(d, sigma, horizon)[0] == pytest.approx(simulated, abs=0.03)
    assert touch_probability(0.0, sigma, horizon)[0] == 1.0
    p = touch_probability(1.5, sigma, np.array([1.0, 5.0, 60.0]))
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))
