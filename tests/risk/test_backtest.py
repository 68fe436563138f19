"""Kill switch and correlation-shock cuts in a real BacktestEngine (no mocks of Nautilus).

* Kill switch: a small strategy buys 10 ES contracts on real sample bars; a 1 % drawdown engages the
  switch: its working limit order is cancelled, the position is flattened, the risk engine goes REDUCING
  then HALTED, and every later order is denied *by Nautilus's risk engine* (``OrderDenied``) until an
  operator reset published on ``RESET_TOPIC``; then orders fill again. A restarted strategy with the
  saved state is halted from its first bar.
* Correlation shock: two equities whose returns decorrelate then move together; the strategy sizes both
  through ``PortfolioRisk.check_entry`` each bar, and the positions held in Nautilus halve after the shock.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import FillModel, LatencyModel
from nautilus_trader.common.messages import TradingStateChanged
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TradingState
from nautilus_trader.model.events import OrderCanceled, OrderDenied, OrderFilled
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.trading.strategy import Strategy

from sage.data.instruments import es_future, generic_instrument
from sage.data.sample import ES_BAR_TYPE
from sage.risk import (
    RESET_TOPIC,
    CorrelationConfig,
    KillSwitch,
    KillSwitchConfig,
    PortfolioRisk,
    PortfolioRiskConfig,
    find_risk_engine,
)

DAY_NS = 86_400_000_000_000


def _engine(venue: str, oms: OmsType = OmsType.NETTING) -> BacktestEngine:
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        venue=Venue(venue), oms_type=oms, account_type=AccountType.MARGIN, base_currency=USD,
        starting_balances=[Money(100_000, USD)], fill_model=FillModel(random_seed=1),
        latency_model=LatencyModel(base_latency_nanos=1_000_000),
    )  # fmt: skip
    return engine


class KillSwitchStrategy(Strategy):
    """Buys once, lets the kill switch act on a drawdown, then probes with orders until and after a reset."""

    def __init__(self, instrument, bar_type: BarType, ks: KillSwitch, reset_after: int | None) -> None:
        super().__init__(StrategyConfig(order_id_tag="001"))
        self.instrument, self.bar_type, self.ks, self.reset_after = instrument, bar_type, ks, reset_after
        self.bars = 0
        self.entered = False
        self.order_events: list = []
        self.risk_events: list = []
        self.engaged_bar: int | None = None
        self.flat_when_halted: bool | None = None
        self.reset_bar: int | None = None
        self.working_limit = None

    def on_start(self) -> None:
        self.msgbus.subscribe("events.risk", self._on_risk)
        self.ks.attach(self)
        self.subscribe_bars(self.bar_type)

    def _on_risk(self, event) -> None:
        self.risk_events.append(event)
        if isinstance(event, TradingStateChanged) and event.state == TradingState.HALTED:
            self.flat_when_halted = not self.cache.positions_open(strategy_id=self.id)

    def equity(self) -> float:
        account = self.portfolio.account(self.instrument.id.venue)
        upnl = self.portfolio.unrealized_pnl(self.instrument.id)
        return account.balance_total(USD).as_double() + (upnl.as_double() if upnl is not None else 0.0)

    def on_bar(self, bar: Bar) -> None:
        self.bars += 1
        if not self.ks.active:
            reason = self.ks.check(equity=self.equity(), day=bar.ts_event // DAY_NS)
            if reason is not None:
                self.engaged_bar = self.bars
                self.ks.engage(self, reason)
        if not self.entered and not self.ks.active:
            self.entered = True
            self.submit_order(self.order_factory.market(self.instrument.id, OrderSide.BUY, Quantity.from_int(10)))
            self.working_limit = self.order_factory.limit(
                self.instrument.id, OrderSide.BUY, Quantity.from_int(1), self.instrument.make_price(bar.close.as_double() - 50)
            )
            self.submit_order(self.working_limit)
        halted = find_risk_engine(self.msgbus).trading_state == TradingState.HALTED
        if self.ks.active and halted and self.bars % 10 == 0:
            # a strategy that ignores the gate: Nautilus itself must deny it
            self.submit_order(self.order_factory.market(self.instrument.id, OrderSide.BUY, Quantity.from_int(1)))
        due = self.engaged_bar is not None and self.reset_after is not None and self.reset_bar is None
        if due and self.bars == self.engaged_bar + self.reset_after:
            self.reset_bar = self.bars
            self.msgbus.publish(RESET_TOPIC, "test-operator")
            self.submit_order(self.order_factory.market(self.instrument.id, OrderSide.SELL, Quantity.from_int(1)))

    def on_order_event(self, event) -> None:
        self.order_events.append(event)

    def on_event(self, event) -> None:
        self.ks.on_event(self, event)

    def on_save(self) -> dict[str, bytes]:
        return self.ks.to_state()

    def on_load(self, state: dict[str, bytes]) -> None:
        self.ks.from_state(state)


@pytest.fixture(scope="module")
def es_bars(sample_catalog: Path) -> list[Bar]:
    catalog = ParquetDataCatalog(str(sample_catalog))
    return catalog.bars(bar_types=[ES_BAR_TYPE])


def _run_kill_switch(es_bars, ks: KillSwitch, reset_after: int | None, n_bars: int | None = None):
    es = es_future()
    engine = _engine("XCME")
    engine.add_instrument(es)
    engine.add_data(es_bars if n_bars is None else es_bars[:n_bars])
    strategy = KillSwitchStrategy(es, BarType.from_str(ES_BAR_TYPE), ks, reset_after)
    engine.add_strategy(strategy)
    engine.run()
    return engine, strategy


def test_drawdown_breach_flattens_halts_and_denies_until_reset(es_bars):
    ks = KillSwitch(KillSwitchConfig(max_drawdown=0.01, max_daily_loss=0.5, mode="HALTED"))
    engine, s = _run_kill_switch(es_bars, ks, reset_after=120)
    try:
        assert s.engaged_bar is not None and "drawdown" in ks.state.history[0]
        states = [e.state for e in s.risk_events if isinstance(e, TradingStateChanged)]
        assert states == [TradingState.REDUCING, TradingState.HALTED, TradingState.ACTIVE]
        assert s.flat_when_halted is True
        # the working limit order was cancelled by the switch
        assert any(isinstance(e, OrderCanceled) and e.client_order_id == s.working_limit.client_order_id
                   for e in s.order_events)
        halted_ts = next(e.ts_event for e in s.risk_events if e.state == TradingState.HALTED)
        active_ts = next(e.ts_event for e in s.risk_events if e.state == TradingState.ACTIVE)
        denied = [e for e in s.order_events if isinstance(e, OrderDenied)]
        assert len(denied) >= 5 and all("HALTED" in e.reason for e in denied)
        assert all(halted_ts <= e.ts_event < active_ts for e in denied)
        fills = [e for e in s.order_events if isinstance(e, OrderFilled)]
        # the flatten fill is what completes the halt (same timestamp); nothing trades after it until reset
        flatten = [f for f in fills if f.ts_event == halted_ts]
        assert len({f.client_order_id for f in flatten}) == 1 and all(f.order_side == OrderSide.SELL for f in flatten)
        assert sum(float(f.last_qty) for f in flatten) == 10  # may fill in parts against the bar volume
        assert not [f for f in fills if halted_ts < f.ts_event < active_ts]
        assert [f for f in fills if f.ts_event > active_ts]  # the post-reset order filled
        assert not ks.active and "reset by test-operator" in ks.state.history[-1]
        assert find_risk_engine(s.msgbus).trading_state == TradingState.ACTIVE
    finally:
        engine.dispose()


def test_engaged_state_survives_a_restart(es_bars):
    ks = KillSwitch(KillSwitchConfig(max_drawdown=0.01, max_daily_loss=0.5))
    engine, s = _run_kill_switch(es_bars, ks, reset_after=None)
    saved = s.on_save()
    engine.dispose()
    assert ks.active
    restored = KillSwitch(KillSwitchConfig(max_drawdown=0.01, max_daily_loss=0.5))
    restored.from_state(saved)
    engine2, s2 = _run_kill_switch(es_bars, restored, reset_after=None, n_bars=200)
    try:
        assert restored.active and s2.entered is False  # never entered: blocked from the first bar
        assert [e.state for e in s2.risk_events] == [TradingState.REDUCING, TradingState.HALTED]
        assert [e for e in s2.order_events if isinstance(e, OrderDenied)]
        assert not [e for e in s2.order_events if isinstance(e, OrderFilled)]
    finally:
        engine2.dispose()
    # and a config reset on start clears it
    cleared = KillSwitch(KillSwitchConfig(max_drawdown=0.01, max_daily_loss=0.5, reset_on_start=True))
    cleared.from_state(saved)
    engine3, s3 = _run_kill_switch(es_bars, cleared, reset_after=None, n_bars=50)
    engine3.dispose()
    assert s3.entered and "config reset_on_start" in cleared.state.history[-1]


# -- correlation shock ---------------------------------------------------------------------------------


def _two_asset_bars(n_calm: int = 300, n_shock: int = 150, seed: int = 5):
    rng = np.random.default_rng(seed)
    ra = rng.normal(0.0, 0.002, n_calm + n_shock)
    rb = rng.normal(0.0, 0.002, n_calm + n_shock)
    rb[n_calm:] = ra[n_calm:]  # from the shock on, B moves exactly with A
    start = pd.Timestamp("2024-01-02 14:31", tz="UTC").value
    out = {}
    for name, r in (("AAA.XNAS", ra), ("BBB.XNAS", rb)):
        bt = BarType.from_str(f"{name}-1-MINUTE-LAST-EXTERNAL")
        close = 100.0 * np.exp(np.cumsum(r))
        prev = np.concatenate([[100.0], close[:-1]])
        bars = []
        for i in range(close.size):
            o, c = round(prev[i], 2), round(close[i], 2)
            ts = start + i * 60_000_000_000
            bars.append(Bar(bt, Price(o, 2), Price(max(o, c) + 0.01, 2), Price(min(o, c) - 0.01, 2), Price(c, 2),
                            Quantity.from_int(1_000_000), ts, ts))  # fmt: skip
        out[name] = bars
    return out


class ShockStrategy(Strategy):
    """Holds long A and B, each sized every bar by PortfolioRisk.check_entry (gross exposure bound)."""

    def __init__(self, instruments, pr: PortfolioRisk) -> None:
        super().__init__(StrategyConfig(order_id_tag="002"))
        self.instruments = {str(i.id): i for i in instruments}
        self.pr = pr
        self.last_close: dict[str, float] = {}
        self.log_rows: list[tuple[int, float, float, bool, tuple]] = []

    def on_start(self) -> None:
        for name in self.instruments:
            self.subscribe_bars(BarType.from_str(f"{name}-1-MINUTE-LAST-EXTERNAL"))

    def _qty(self, name: str) -> float:
        pos = self.cache.positions_open(instrument_id=self.instruments[name].id, strategy_id=self.id)
        return float(sum(p.signed_qty for p in pos))

    def on_bar(self, bar: Bar) -> None:
        name = str(bar.bar_type.instrument_id)
        c = bar.close.as_double()
        if name in self.last_close:
            self.pr.update_returns(name, float(np.log(c / self.last_close[name])), ts=bar.ts_event)
        self.last_close[name] = c
        account = self.portfolio.account(Venue("XNAS"))
        upnl = sum(u.as_double() for i in self.instruments.values() if (u := self.portfolio.unrealized_pnl(i.id)))
        equity = account.balance_total(USD).as_double() + upnl
        self.pr.update_equity(equity)
        for other, px in self.last_close.items():
            self.pr.set_position(other, self._qty(other), px)
        iid = bar.bar_type.instrument_id
        if self.cache.orders_inflight(instrument_id=iid) or self.cache.orders_open(instrument_id=iid):
            return  # the last resize is still on its way
        # resize this instrument: check a full-size entry with its own position taken out of the book
        held = self._qty(name)
        self.pr.set_position(name, 0.0, c)
        desired = 1000.0
        check = self.pr.check_entry(name, desired, risk_amount=desired * c * 0.01, notional=desired * c, equity=equity)
        self.pr.set_position(name, held, c)
        target = check.quantity
        delta = target - held
        if abs(delta) >= 1:
            side = OrderSide.BUY if delta > 0 else OrderSide.SELL
            self.submit_order(self.order_factory.market(bar.bar_type.instrument_id, side, Quantity.from_int(int(abs(delta)))))
        self.log_rows.append((bar.ts_event, held, target, self.pr.correlation.shock_active, check.reasons))


def test_correlation_shock_cuts_exposure_in_backtest():
    a, b = generic_instrument("AAA.XNAS"), generic_instrument("BBB.XNAS")
    engine = _engine("XNAS")
    for inst in (a, b):
        engine.add_instrument(inst)
    bars = _two_asset_bars()
    for series in bars.values():
        engine.add_data(series)
    cfg = PortfolioRiskConfig(
        max_gross_exposure=3.0, max_risk_per_trade=0.05, max_var=1.0, max_daily_loss=0.5, max_drawdown=0.5,
        correlation=CorrelationConfig(lam=0.94, min_periods=20, shock_window=30, shock_threshold=0.3,
                                      shock_min_level=0.5, leverage_factor=0.5, cooldown=10_000),
    )  # fmt: skip
    pr = PortfolioRisk(cfg)
    strategy = ShockStrategy([a, b], pr)
    engine.add_strategy(strategy)
    engine.run()
    try:
        assert pr.correlation.shocks == 1
        shock_ts = next(ts for ts, *_rest, active, _ in strategy.log_rows if active)
        shock_bar = (shock_ts - bars["AAA.XNAS"][0].ts_event) // 60_000_000_000
        assert 300 <= shock_bar < 340  # detected within ~40 bars of the correlation jump, never before it
        before = [held for ts, held, *_ in strategy.log_rows if ts < shock_ts][-50:]
        qty_a = float(engine.cache.positions_open(instrument_id=a.id)[0].quantity)
        qty_b = float(engine.cache.positions_open(instrument_id=b.id)[0].quantity)
        assert np.mean(before) == pytest.approx(1000.0)  # full size before the shock (limits not binding)
        assert qty_a == pytest.approx(500.0, abs=60) and qty_b == pytest.approx(500.0, abs=60)  # halved in Nautilus
        assert any("correlation_shock" in reasons for *_x, reasons in strategy.log_rows)
    finally:
        engine.dispose()
