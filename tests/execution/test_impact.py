"""Square-root cost model, causal market statistics and the square-root-book venue fill model."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.common.component import TestClock
from nautilus_trader.config import LoggingConfig
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import TradeTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import ClientOrderId, StrategyId, TraderId, Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.model.orders import LimitOrder, MarketOrder
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.trading.strategy import Strategy

from sage.data.instruments import es_future
from sage.data.sample import ES_BAR_TYPE
from sage.data.synthetic import SyntheticMarketConfig, generate_bars, generate_trades, synthetic_instrument
from sage.execution.impact import (
    CALIBRATED_RESILIENCE_SECS,
    NS_PER_MINUTE,
    ImpactParams,
    MarketStats,
    SquareRootBookFillModel,
    SquareRootImpact,
    TrailingMarketStats,
    bars_from_trades,
    market_stats_frame,
    stats_at,
    trailing_market_stats,
)

T0 = pd.Timestamp("2024-01-01", tz="UTC").value


# -- Cost model ---------------------------------------------------------------------------------------------


def test_params_reject_bad_values() -> None:
    for kwargs in (
        {"Y": -1.0},
        {"exponent": 0.0},
        {"exponent": 1.5},
        {"min_horizon_min": 0.0},
        {"risk_aversion": -0.1},
        {"Y": float("nan")},
    ):
        with pytest.raises(ValueError):
            ImpactParams(**kwargs)


def test_impact_is_square_root_in_size_linear_in_sigma() -> None:
    model = SquareRootImpact(ImpactParams(Y=0.8))
    base = float(model.impact_bps(100.0, 400.0, 2e-4, 0.0))
    # Immediate = Y * sigma_bps * sqrt(Q / V) with one minute of volume.
    assert base == pytest.approx(0.8 * 2.0 * math.sqrt(100.0 / 400.0))
    assert float(model.impact_bps(400.0, 400.0, 2e-4, 0.0)) == pytest.approx(2 * base)
    assert float(model.impact_bps(100.0, 400.0, 4e-4, 0.0)) == pytest.approx(2 * base)
    # Horizons at or below tau0 are priced as tau0; longer horizons lower the participation.
    assert float(model.impact_bps(100.0, 400.0, 2e-4, 0.5)) == pytest.approx(base)
    assert float(model.impact_bps(100.0, 400.0, 2e-4, 4.0)) == pytest.approx(base / 2)


def test_cost_terms_and_broadcasting() -> None:
    model = SquareRootImpact()
    qty = np.array([[10.0], [1000.0]])
    horizons = np.array([0.0, 1.0, 10.0, 60.0])
    c = model.cost(qty, 500.0, 1.5e-4, horizons, half_spread_bps=0.8, urgency=0.5)
    assert c.cost_bps.shape == (2, 4)
    np.testing.assert_allclose(c.cost_bps, c.spread_bps + c.impact_bps)
    np.testing.assert_allclose(c.risk_bps, 1.5 * np.sqrt(horizons / 3.0) * np.ones((2, 1)))
    np.testing.assert_allclose(c.score_bps, c.cost_bps + 0.5 * c.risk_bps)  # lambda(0.5) = risk_aversion
    assert np.all(np.diff(c.impact_bps, axis=1) <= 0)  # slower = cheaper impact
    assert np.all(np.diff(c.risk_bps, axis=1) > 0)  # slower = riskier
    assert np.all(c.impact_bps[1] > c.impact_bps[0])  # bigger = dearer


def test_urgency_weights_risk_and_one_means_now() -> None:
    model = SquareRootImpact()
    horizons = np.array([0.0, 5.0, 30.0])
    scores = [model.cost(200.0, 100.0, 2e-4, horizons, urgency=u).score_bps for u in (0.0, 0.3, 0.7, 0.99)]
    for lo, hi in itertools.pairwise(scores):
        assert np.all(hi >= lo)
    now = model.cost(200.0, 100.0, 2e-4, horizons, urgency=1.0).score_bps
    assert np.isfinite(now[0]) and np.all(np.isinf(now[1:]))
    with pytest.raises(ValueError):
        model.cost(200.0, 100.0, 2e-4, horizons, urgency=1.5)


def test_optimal_horizon_matches_closed_form() -> None:
    params = ImpactParams(Y=0.9, risk_aversion=1.3)
    model = SquareRootImpact(params)
    q_over_v, u = 20.0, 0.4
    h = np.linspace(1.0, 200.0, 200_000)
    best = h[np.argmin(model.cost(q_over_v * 50.0, 50.0, 3e-4, h, urgency=u).score_bps)]
    lam = float(params.risk_weight(u))
    expected = math.sqrt(3.0) * params.Y * math.sqrt(q_over_v) / lam
    assert best == pytest.approx(expected, rel=1e-3)


def test_zero_volume_cannot_be_priced() -> None:
    with pytest.raises(ValueError, match="volume_per_min"):
        SquareRootImpact().impact_bps(10.0, 0.0, 1e-4, 1.0)


# -- Market statistics ---------------------------------------------------------------------------------


def _ts(minutes: list[float]) -> np.ndarray:
    return (T0 + np.asarray(minutes) * NS_PER_MINUTE).astype(np.int64)


def test_trailing_stats_by_hand_with_gap() -> None:
    # Bars at minutes 1, 2, 5 (minutes 3-4 had no trades), 3-minute window.
    ts = _ts([1, 2, 5])
    close = np.array([100.0, 101.0, 99.0])
    volume = np.array([10.0, 20.0, 30.0])
    vpm, sigma = trailing_market_stats(ts, close, volume, window_minutes=3.0, bar_minutes=1.0)
    # Elapsed since the first bar's open: 1, 2, 5 minutes -> covers 1, 2, min(3, 5) minutes.
    np.testing.assert_allclose(vpm, [10.0, 30.0 / 2.0, 30.0 / 3.0])
    r1 = math.log(101 / 100)
    r2 = math.log(99 / 101)
    assert math.isnan(sigma[0])
    assert sigma[1] == pytest.approx(math.sqrt(r1**2 / 1.0))
    # At minute 5 the window is (2, 5]: only the return into minute 5, over 3 covered minutes.
    assert sigma[2] == pytest.approx(math.sqrt(r2**2 / 3.0))


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.integers(1, 7), min_size=3, max_size=60),
    seed=st.integers(0, 2**31 - 1),
    cut=st.floats(0.1, 0.9),
)
def test_trailing_stats_are_causal_and_streaming_matches(gaps: list[int], seed: int, cut: float) -> None:
    rng = np.random.default_rng(seed)
    n = len(gaps)
    ts = _ts(np.cumsum(gaps).tolist())
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 1e-3, n)))
    volume = rng.integers(0, 500, n).astype(float)
    vpm, sigma = trailing_market_stats(ts, close, volume, window_minutes=10.0, bar_minutes=1.0)
    # Changing the future changes nothing in the past.
    k = max(1, int(cut * n))
    close2, volume2 = close.copy(), volume.copy()
    close2[k:] *= 1.5
    volume2[k:] += 1000.0
    vpm2, sigma2 = trailing_market_stats(ts, close2, volume2, window_minutes=10.0, bar_minutes=1.0)
    np.testing.assert_array_equal(vpm[:k], vpm2[:k])
    np.testing.assert_array_equal(sigma[:k], sigma2[:k])
    # The bar-by-bar estimator gives the same numbers.
    stream = TrailingMarketStats(window_minutes=10.0, bar_minutes=1.0)
    for i in range(n):
        out = stream.update(int(ts[i]), float(close[i]), float(volume[i]))
        if i == 0:
            assert out is None
            continue
        assert out.volume_per_min == pytest.approx(vpm[i], rel=1e-12, abs=1e-12)
        assert out.sigma_per_min == pytest.approx(sigma[i], rel=1e-9, abs=1e-15)


def test_stats_recover_known_volatility_and_volume() -> None:
    config = SyntheticMarketConfig(
        seed=3,
        n_bars=3000,
        volatile=SyntheticMarketConfig().bull,
        bear=SyntheticMarketConfig().bull,
        sideways=SyntheticMarketConfig().bull,
    )
    bars = generate_bars(config)  # every regime = BULL: vol 4e-4 per bar, volume ~1000 per bar
    frame = market_stats_frame(bars, window_minutes=600.0)
    late = frame.iloc[1000:]
    assert late["sigma_per_min"].median() == pytest.approx(4e-4, rel=0.1)
    # Lognormal volume noise (sigma 0.5) has mean exp(0.125) times its median parameter.
    assert late["volume_per_min"].median() == pytest.approx(1000.0, rel=0.15)


def test_market_stats_as_of_uses_only_closed_bars() -> None:
    config = SyntheticMarketConfig(seed=1, n_bars=200)
    bars = generate_bars(config)
    at = bars.index[120] + pd.Timedelta(seconds=30)  # mid-way through bar 121
    s = MarketStats.from_bars(bars, window_minutes=30.0, tick_size=0.25, at=at)
    assert s.ts_ns == bars.index[120].value
    assert s.price == bars["close"].iloc[120]
    assert s.half_spread_bps == pytest.approx(0.5 * 0.25 / s.price * 1e4)
    assert s == MarketStats.from_bars(bars.iloc[:121], window_minutes=30.0, tick_size=0.25)
    with pytest.raises(LookupError):
        MarketStats.from_bars(bars, at=bars.index[0] - pd.Timedelta(minutes=1))


def test_from_trades_aggregates_to_minute_bars() -> None:
    config = SyntheticMarketConfig(seed=5, n_bars=120)
    bars = generate_bars(config)
    trades = generate_trades(config, bars)
    rebuilt = bars_from_trades(trades)
    np.testing.assert_allclose(rebuilt["volume"].to_numpy(), bars["volume"].to_numpy())
    np.testing.assert_allclose(rebuilt["close"].to_numpy(), bars["close"].to_numpy())
    assert MarketStats.from_trades(trades) == MarketStats.from_bars(rebuilt)


# -- Venue fill model -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def venue() -> tuple[pd.DataFrame, object, pd.DatetimeIndex]:
    """Constant statistics (sigma 3 bps/min, 1000 contracts/min) so only the book's memory varies."""
    config = SyntheticMarketConfig(seed=11, n_bars=300)
    index = pd.date_range("2024-01-01 00:01", periods=300, freq="1min", tz="UTC")
    stats = pd.DataFrame(
        {"price": 4000.0, "volume_per_min": 1000.0, "sigma_per_min": 3e-4, "half_spread_bps": 0.0},
        index=index,
    )
    return stats, synthetic_instrument(config), index


def _market(instrument, side: OrderSide, qty: int, ts: int, n: int = 1) -> MarketOrder:
    return MarketOrder(
        trader_id=TraderId("T-001"),
        strategy_id=StrategyId("S-001"),
        instrument_id=instrument.id,
        client_order_id=ClientOrderId(f"O-{n}"),
        order_side=side,
        quantity=Quantity.from_int(qty),
        init_id=UUID4(),
        ts_init=ts,
    )


def _fill(model: SquareRootBookFillModel, instrument, order, touch: float) -> tuple[float, float]:
    px = Price(touch, instrument.price_precision)
    book = model.get_orderbook_for_fill_simulation(instrument, order, px, px)
    fills = book.simulate_fills(order, instrument.price_precision, instrument.size_precision, True)
    qty = sum(q.as_double() for _, q in fills)
    return sum(p.as_double() * q.as_double() for p, q in fills) / qty, qty


@pytest.mark.parametrize("qty", [500, 5_000, 40_000])
def test_fresh_book_pays_square_root_law(venue, qty: int) -> None:
    stats, instrument, index = venue
    model = SquareRootBookFillModel(stats, impact_coefficient=1.0, half_spread_ticks=0.0)
    t = int(index[200].value) + 1
    row = stats_at(stats, pd.Timestamp(t, tz="UTC"))
    touch = 4000.0
    avg, filled = _fill(model, instrument, _market(instrument, OrderSide.BUY, qty, t), touch)
    assert filled == qty
    expected = row.sigma_per_min * math.sqrt(qty / row.volume_per_min) * touch  # Y sigma sqrt(Q/V), points
    # Rounding each contract to the nearest tick is unbiased; the error is well under a tick.
    assert avg - touch == pytest.approx(expected, abs=0.4 * 0.25)


def test_book_memory_refills_with_resilience(venue) -> None:
    stats, instrument, index = venue
    t = int(index[200].value) + 1
    touch = 4000.0

    def run(dt_secs: float) -> tuple[float, float, float]:
        model = SquareRootBookFillModel(stats, half_spread_ticks=0.0)
        first, _ = _fill(model, instrument, _market(instrument, OrderSide.BUY, 3000, t, 1), touch)
        second, _ = _fill(
            model, instrument, _market(instrument, OrderSide.BUY, 3000, t + int(dt_secs * 1e9), 2), touch
        )
        other, _ = _fill(
            model, instrument, _market(instrument, OrderSide.SELL, 3000, t + int(dt_secs * 1e9), 3), touch
        )
        return first, second, other

    first, immediate_again, sell = run(0.0)
    assert immediate_again > first + 0.25  # walks on from where the first order left the book
    assert touch - sell == pytest.approx(first - touch)  # the bid side was untouched
    _, much_later, _ = run(50 * CALIBRATED_RESILIENCE_SECS)
    assert much_later == pytest.approx(first)  # fully refilled
    _, one_tau, _ = run(CALIBRATED_RESILIENCE_SECS)
    assert first < one_tau < immediate_again

    # Sending 6000 at once costs the same in total as 3000 + 3000 back to back (sizes are additive).
    model = SquareRootBookFillModel(stats, half_spread_ticks=0.0)
    both, _ = _fill(model, instrument, _market(instrument, OrderSide.BUY, 6000, t), touch)
    assert both == pytest.approx((first + immediate_again) / 2)


def test_half_spread_crossing_and_causality(venue) -> None:
    stats, instrument, index = venue
    model = SquareRootBookFillModel(stats, half_spread_ticks=0.5, resilience_secs=1e-6, seed=7)
    t = int(index[200].value) + 1
    touch = 4000.0
    extra = []
    for i in range(400):
        avg, _ = _fill(model, instrument, _market(instrument, OrderSide.BUY, 1, t + i * 10**9, i), touch)
        extra.append(round((avg - touch) / 0.25))
    assert set(extra) <= {0, 1}
    assert np.mean(extra) == pytest.approx(0.5, abs=0.08)
    # Before the first bar has closed (no statistics yet) Nautilus' own matching applies.
    early = _market(instrument, OrderSide.BUY, 10, int(index[0].value) - 1)
    px = Price(touch, instrument.price_precision)
    assert model.get_orderbook_for_fill_simulation(instrument, early, px, px) is None


def _limit(instrument, side: OrderSide, qty: int, price: float, ts: int, n: int = 1) -> LimitOrder:
    return LimitOrder(
        trader_id=TraderId("T-001"),
        strategy_id=StrategyId("S-001"),
        instrument_id=instrument.id,
        client_order_id=ClientOrderId(f"L-{n}"),
        order_side=side,
        quantity=Quantity.from_int(qty),
        price=Price(price, instrument.price_precision),
        init_id=UUID4(),
        ts_init=ts,
    )


def test_marketable_limit_walks_only_up_to_its_price(venue) -> None:
    stats, instrument, index = venue
    model = SquareRootBookFillModel(stats, half_spread_ticks=0.0)
    t = int(index[200].value) + 1
    px = Price(4000.0, instrument.price_precision)
    order = _limit(instrument, OrderSide.BUY, 5000, 4000.5, t)  # two ticks through the touch
    book = model.aggressive_book(instrument, order, px, px, limit=4000.5)
    fills = book.simulate_fills(order, instrument.price_precision, instrument.size_precision, True)
    prices = [p.as_double() for p, _ in fills]
    filled = sum(q.as_double() for _, q in fills)
    assert max(prices) == 4000.5 and min(prices) == 4000.0
    assert 0 < filled < 5000  # the rest of the curve lies beyond the limit
    # Only what was offered counts as consumed: a market order right after starts at the third tick.
    nxt, _ = _fill(model, instrument, _market(instrument, OrderSide.BUY, 1, t), 4000.0)
    assert nxt == 4000.75


def test_resting_limit_fills_from_a_volume_budget(venue) -> None:
    stats, instrument, index = venue  # 1000 contracts/min
    clock = TestClock()
    model = SquareRootBookFillModel(stats, passive_participation=0.1, passive_window_secs=60.0, clock=clock)
    t = int(index[200].value) + 1
    created = t
    at_touch = Price(4000.0, instrument.price_precision)
    through = Price(3999.75, instrument.price_precision)  # the tape trades below our bid

    def offered(now: int, touch: Price, qty: int = 500) -> float:
        clock.set_time(now)
        order = _limit(instrument, OrderSide.BUY, qty, 4000.0, created)
        book = model.passive_book(instrument, order, touch, touch)
        fills = book.simulate_fills(order, instrument.price_precision, instrument.size_precision, False)
        assert all(p.as_double() == 4000.0 for p, _ in fills)  # makers fill at their price
        return sum(q.as_double() for _, q in fills)

    assert offered(t, at_touch) == 0.0  # created now: nothing has traded yet
    assert offered(t + 30 * 10**9, at_touch) == 50.0  # 10 % of 1000/min over 30 s
    assert offered(t + 31 * 10**9, at_touch) == 1.0
    assert offered(t + 20 * 60 * 10**9, at_touch) == 100.0  # capped at one minute of accrual
    # An order created after an idle hour only earns its own resting time.
    created = t + 90 * 60 * 10**9
    assert offered(created + 6 * 10**9, at_touch) == 10.0
    # Traded through, the whole order fills at its price (Nautilus' L1 matching assumes so anyway).
    assert offered(created + 7 * 10**9, through, qty=5000) == 5000.0
    # The sell side has its own budget; without a clock resting orders are left to Nautilus.
    clock.set_time(created + 7 * 10**9)
    sell = _limit(instrument, OrderSide.SELL, 10, 4000.0, created + 7 * 10**9)
    assert model.passive_book(instrument, sell, at_touch, at_touch).simulate_fills(sell, 2, 0, False) == []


class _RestingBuy(Strategy):
    """One resting buy limit at ``price``, submitted at the first trade at or after ``at_ns``."""

    def __init__(self, instrument, qty: int, price: float, at_ns: int) -> None:
        super().__init__()
        self.instrument, self.qty, self.price, self.at_ns = instrument, qty, price, at_ns
        self.submitted_at: int | None = None

    def on_start(self) -> None:
        self.subscribe_trade_ticks(self.instrument.id)

    def on_trade_tick(self, tick: TradeTick) -> None:
        if self.submitted_at is None and tick.ts_event >= self.at_ns:
            price = self.instrument.make_price(self.price)
            self.submit_order(
                self.order_factory.limit(
                    self.instrument.id, OrderSide.BUY, Quantity.from_int(self.qty), price
                )
            )
            self.submitted_at = tick.ts_event


def _busy_level(trades: pd.DataFrame, at_ns: int) -> float:
    """A price under the market at ``at_ns`` that then trades most often before being traded through.

    (Test scaffolding, so looking ahead is fine: it picks a level where the at-the-touch rule matters.)
    """
    after = trades[trades.index.asi8 >= at_ns].price.to_numpy()
    best, best_n = after[0] - 0.25, -1
    for level in np.arange(after.min(), after[0], 0.25):
        below = np.flatnonzero(after < level - 1e-9)
        stop = below[0] if below.size else after.size
        n = int(np.sum(np.isclose(after[:stop], level)))
        if n > best_n:
            best, best_n = float(level), n
    return best


@pytest.fixture(scope="module")
def es_window(sample_catalog) -> tuple[list[TradeTick], pd.DataFrame, pd.DataFrame]:
    """Ten busy minutes of real ES trades (ticks move one price level at a time) and causal stats."""
    catalog = ParquetDataCatalog(str(sample_catalog))
    start, end = pd.Timestamp("2013-09-03 14:10", tz="UTC"), pd.Timestamp("2013-09-03 14:20", tz="UTC")
    ticks = catalog.trade_ticks(instrument_ids=["ESU3.XCME"], start=start, end=end)
    stats = market_stats_frame(catalog.bars(bar_types=[ES_BAR_TYPE], end=end), tick_size=0.25)
    trades = pd.DataFrame(
        {"price": [t.price.as_double() for t in ticks]},
        index=pd.DatetimeIndex([t.ts_event for t in ticks], tz="UTC"),
    )
    return ticks, stats, trades


def _resting_run(es_window, with_clock: bool) -> tuple[pd.DataFrame, int]:
    ticks, stats, _ = es_window
    instrument = es_future()
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    model = SquareRootBookFillModel(stats, clock=engine.kernel.clock if with_clock else None)
    engine.add_venue(
        Venue("XCME"),
        OmsType.NETTING,
        AccountType.MARGIN,
        [Money(10**9, USD)],
        base_currency=USD,
        trade_execution=True,
        fill_model=model,
    )
    engine.add_instrument(instrument)
    engine.add_data(ticks)
    at_ns = int(pd.Timestamp("2013-09-03 14:10:05", tz="UTC").value)
    strategy = _RestingBuy(instrument, qty=5_000, price=_busy_level(es_window[2], at_ns), at_ns=at_ns)
    engine.add_strategy(strategy)
    engine.run()
    fills = engine.trader.generate_fills_report()
    engine.dispose()
    return fills, int(strategy.submitted_at)


def test_resting_orders_at_the_touch_fill_at_a_share_of_the_volume(es_window) -> None:
    _, stats, trades = es_window
    fills, submitted = _resting_run(es_window, with_clock=True)
    default_fills, _ = _resting_run(es_window, with_clock=False)
    limit = float(fills.last_px.astype(float).iloc[0])
    assert (fills.liquidity_side == "MAKER").all() and (fills.last_px.astype(float) == limit).all()

    def at_touch_qty(report: pd.DataFrame) -> float:
        """Quantity filled while the last trade sat exactly at the limit (not traded through)."""
        when = pd.to_datetime(report.ts_event).astype("int64").to_numpy()
        last = trades["price"].to_numpy()[np.searchsorted(trades.index.asi8, when, side="right") - 1]
        return float(report.last_qty.astype(float)[np.isclose(last, limit)].sum())

    # Before the tape first trades through the limit, fills come at most at 10 % of the volume rate.
    through = trades[(trades.index.asi8 > submitted) & (trades.price < limit - 0.1)]
    first_through = int(through.index.asi8[0]) if len(through) else int(trades.index.asi8[-1])
    early = fills[pd.to_datetime(fills.ts_event).astype("int64") < first_through]
    minutes = (first_through - submitted) / 6e10
    assert early.last_qty.astype(float).sum() <= 0.1 * stats.volume_per_min.max() * minutes + 1.0
    assert at_touch_qty(fills) > 0.0  # the budget did fill something at the touch
    assert at_touch_qty(default_fills) > at_touch_qty(fills)  # Nautilus alone: the whole tape at the price


def test_levels_sum_to_quantity_on_the_size_grid(venue) -> None:
    stats, _, _ = venue
    model = SquareRootBookFillModel(stats, max_levels=5)
    start, sizes = model.levels(consumed=123.4, qty=10_000.0, a=0.05, tick=0.25, size_step=1.0)
    assert sizes.sum() == 10_000.0
    assert np.all(sizes >= 0) and np.all(sizes == np.round(sizes))
    assert len(sizes) == 5  # capped; the last level absorbs the rest
    assert start == round(math.sqrt(123.4) * 0.05 / 0.25)
