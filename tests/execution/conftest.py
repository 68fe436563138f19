"""Real-engine harness for the execution-algorithm tests.

Every test runs a real ``BacktestEngine``: an XCME venue (NETTING, margin account, seeded FillModel,
1 ms latency unless a test says otherwise), the ES instrument, and real ES data from the sample catalog -
1-minute bars, or raw trade ticks with ``trade_execution=True`` so trades move the simulated market.
A small :class:`ScriptedStrategy` runs test-supplied actions at chosen times and records every order
event and every :class:`~sage.execution.ParentReport`, so assertions are made on what Nautilus actually
did (events and cache), not on the algorithm's own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.backtest.models import FillModel, LatencyModel
from nautilus_trader.common.events import TimeEvent
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import Bar, TradeTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, OrderType, TimeInForce
from nautilus_trader.model.events import OrderDenied, OrderEvent, OrderFilled, OrderRejected
from nautilus_trader.model.identifiers import ClientOrderId, ExecAlgorithmId, Venue
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Money
from nautilus_trader.model.orders import Order
from nautilus_trader.persistence.catalog import ParquetDataCatalog
from nautilus_trader.trading.strategy import Strategy

from sage.data.instruments import es_future
from sage.data.sample import ES_BAR_TYPE
from sage.execution import PARENT_TOPIC, ParentReport

ES = es_future()
MINUTE = 60_000_000_000
#: Session window used by the bar tests (regular US hours on 2013-09-03, about 240 one-minute bars).
BARS_START = pd.Timestamp("2013-09-03 13:30", tz="UTC")
BARS_END = pd.Timestamp("2013-09-03 17:30", tz="UTC")
#: Trade-tick window: a few busy minutes after the cash open (a few tens of thousands of trades).
TICKS_START = pd.Timestamp("2013-09-03 14:00", tz="UTC")
TICKS_END = pd.Timestamp("2013-09-03 14:06", tz="UTC")


@pytest.fixture(scope="session")
def es_bars(sample_catalog: Path) -> list[Bar]:
    catalog = ParquetDataCatalog(str(sample_catalog))
    return catalog.bars(bar_types=[ES_BAR_TYPE], start=BARS_START, end=BARS_END)


@pytest.fixture(scope="session")
def es_ticks(sample_catalog: Path) -> list[TradeTick]:
    catalog = ParquetDataCatalog(str(sample_catalog))
    return catalog.trade_ticks(instrument_ids=[str(ES.id)], start=TICKS_START, end=TICKS_END)


Action = Callable[["ScriptedStrategy"], None]


class ScriptedStrategy(Strategy):
    """Runs ``(ts_ns, action)`` pairs on its clock and records events and parent reports."""

    def __init__(self, actions: Sequence[tuple[int, Action]], instrument: Instrument = ES) -> None:
        super().__init__(StrategyConfig(order_id_tag="001"))
        self.instrument = instrument
        self.actions = list(actions)
        self.events: list[OrderEvent] = []
        self.reports: list[ParentReport] = []
        self.primaries: dict[str, ClientOrderId] = {}

    def on_start(self) -> None:
        self.msgbus.subscribe(f"{PARENT_TOPIC}.{self.id}", self.reports.append)
        for i, (ts, action) in enumerate(self.actions):
            self.clock.set_time_alert_ns(f"action-{i}", ts, self._runner(action))

    def _runner(self, action: Action) -> Callable[[TimeEvent], None]:
        return lambda _event: action(self)

    def on_order_event(self, event: OrderEvent) -> None:
        self.events.append(event)

    def on_stop(self) -> None:
        """Nothing to clean up: what the algorithms do at the end of data is what the tests check."""

    # -- helpers used by the actions ----------------------------------------------------------------

    def submit_parent(
        self,
        name: str,
        algorithm: str,
        quantity: int | str,
        side: OrderSide = OrderSide.BUY,
        params: dict[str, Any] | None = None,
        limit_price: Decimal | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = False,
    ) -> Order:
        qty = self.instrument.make_qty(Decimal(str(quantity)))
        common: dict[str, Any] = {
            "instrument_id": self.instrument.id,
            "order_side": side,
            "quantity": qty,
            "time_in_force": time_in_force,
            "reduce_only": reduce_only,
            "exec_algorithm_id": ExecAlgorithmId(algorithm),
            "exec_algorithm_params": params,
        }
        if limit_price is None:
            order = self.order_factory.market(**common)
        else:
            order = self.order_factory.limit(price=self.instrument.make_price(limit_price), **common)
        self.primaries[name] = order.client_order_id
        self.submit_order(order)
        return order

    def submit_plain(self, side: OrderSide, quantity: int) -> Order:
        order = self.order_factory.market(self.instrument.id, side, self.instrument.make_qty(quantity))
        self.submit_order(order)
        return order

    def cancel_parent(self, name: str) -> None:
        self.cancel_order(self.cache.order(self.primaries[name]))

    # -- inspection ---------------------------------------------------------------------------------

    def family(self, name: str) -> list[Order]:
        """Spawned children of a parent, in spawn order (E1, E2, ...), without the primary."""
        primary_id = self.primaries[name]
        orders = [o for o in self.cache.orders_for_exec_spawn(primary_id) if o.client_order_id != primary_id]
        return sorted(orders, key=lambda o: int(o.client_order_id.value.rsplit("-E", 1)[1]))

    def report(self, name: str) -> ParentReport:
        found = [r for r in self.reports if r.primary_id == self.primaries[name]]
        assert len(found) == 1, f"expected one report for {name}, got {found}"
        return found[0]

    def fills(self, name: str | None = None) -> list[OrderFilled]:
        fills = [e for e in self.events if isinstance(e, OrderFilled)]
        if name is None:
            return fills
        ids = {o.client_order_id for o in self.cache.orders_for_exec_spawn(self.primaries[name])}
        return [f for f in fills if f.client_order_id in ids]

    def rejections(self) -> list[OrderEvent]:
        return [e for e in self.events if isinstance(e, (OrderRejected, OrderDenied))]


@dataclass
class Run:
    """One finished backtest: the engine (cache, trader) and the scripted strategy."""

    engine: BacktestEngine
    strategy: ScriptedStrategy
    algorithms: list[Any] = field(default_factory=list)

    @property
    def cache(self) -> Any:
        return self.engine.cache

    def open_orders(self) -> list[Order]:
        return [o for o in self.engine.cache.orders() if not o.is_closed]


def run_engine(
    data: Sequence[Any],
    actions: Sequence[tuple[int, Action]],
    algorithms: Sequence[Any],
    *,
    latency_ns: int | None = 1_000_000,
    trade_execution: bool = False,
    seed: int = 7,
    strategy: ScriptedStrategy | None = None,
) -> Run:
    """Run ``data`` through a fresh engine with ``algorithms`` and a scripted strategy."""
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        Venue("XCME"),
        OmsType.NETTING,
        AccountType.MARGIN,
        [Money(10_000_000, USD)],
        base_currency=USD,
        fill_model=FillModel(random_seed=seed),
        latency_model=None if latency_ns is None else LatencyModel(base_latency_nanos=latency_ns),
        trade_execution=trade_execution,
    )
    engine.add_instrument(ES)
    engine.add_data(list(data))
    strat = strategy or ScriptedStrategy(actions)
    engine.add_strategy(strat)
    for algorithm in algorithms:
        engine.add_exec_algorithm(algorithm)
    engine.run()
    return Run(engine=engine, strategy=strat, algorithms=list(algorithms))


def ts_of(data: Sequence[Any], index: int) -> int:
    """Timestamp of the ``index``-th data point (bars: the bar's close)."""
    return data[index].ts_init


def order_type_counts(orders: Sequence[Order]) -> dict[OrderType, int]:
    counts: dict[OrderType, int] = {}
    for order in orders:
        counts[order.order_type] = counts.get(order.order_type, 0) + 1
    return counts
