"""IMMEDIATE, and every algorithm end to end on bars and on trade ticks."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import ES, run_engine, ts_of
from nautilus_trader.model.enums import OrderSide, OrderStatus

from sage.execution import (
    ALGORITHM_IDS,
    IcebergExecAlgorithm,
    ImmediateExecAlgorithm,
    ParentStatus,
    StealthExecAlgorithm,
    TWAPExecAlgorithm,
    VolumeProfile,
    VWAPExecAlgorithm,
)


def test_immediate_sends_the_primary_as_is_at_the_same_time_as_a_plain_order(es_bars) -> None:
    t0 = ts_of(es_bars, 5)

    def act(s):
        s.submit_parent("p", "IMMEDIATE", 7)
        s.submit_plain(OrderSide.BUY, 7)

    run = run_engine(es_bars[:20], [(t0, act)], [ImmediateExecAlgorithm()])
    s = run.strategy
    assert s.family("p") == []
    primary = run.cache.order(s.primaries["p"])
    plain = next(o for o in run.cache.orders() if o.exec_algorithm_id is None)
    assert primary.status == plain.status == OrderStatus.FILLED
    assert (primary.ts_submitted, primary.ts_last, primary.avg_px) == (
        plain.ts_submitted,
        plain.ts_last,
        plain.avg_px,
    )
    report = s.report("p")
    assert report.status == ParentStatus.COMPLETED and report.n_children == 0 and report.primary_sent


def test_immediate_rejects_parameters(es_bars) -> None:
    run = run_engine(
        es_bars[:20],
        [(ts_of(es_bars, 5), lambda s: s.submit_parent("p", "IMMEDIATE", 7, params={"horizon_secs": 60}))],
        [ImmediateExecAlgorithm()],
    )
    assert run.cache.order(run.strategy.primaries["p"]).status == OrderStatus.DENIED
    assert "unknown key 'horizon_secs'" in run.strategy.report("p").reason


def _every_algorithm(s, price: Decimal) -> None:
    s.submit_parent("TWAP", "TWAP", 13, params={"horizon_secs": 180, "interval_secs": 30})
    s.submit_parent(
        "VWAP", "VWAP", 13, params={"horizon_secs": 180, "interval_secs": 30, "max_participation": 1.0}
    )
    s.submit_parent(
        "ICEBERG",
        "ICEBERG",
        13,
        side=OrderSide.SELL,
        params={"visible_qty": 3},
        limit_price=price - Decimal("1.00"),
    )  # marketable
    s.submit_parent(
        "STEALTH",
        "STEALTH",
        13,
        params={"horizon_secs": 180, "min_interval_secs": 10, "max_interval_secs": 30, "seed": 1},
    )
    s.submit_parent("IMMEDIATE", "IMMEDIATE", 13, side=OrderSide.SELL)


def _algorithms():
    return [
        TWAPExecAlgorithm(),
        VWAPExecAlgorithm(profiles={ES.id: VolumeProfile.flat()}),
        IcebergExecAlgorithm(),
        StealthExecAlgorithm(),
        ImmediateExecAlgorithm(),
    ]


@pytest.mark.parametrize("data", ["bars", "ticks"])
def test_every_algorithm_completes_exactly_the_parent(es_bars, es_ticks, data) -> None:
    feed = es_bars if data == "bars" else es_ticks
    run = run_engine(
        feed,
        [(ts_of(feed, 10), lambda s: _every_algorithm(s, _last(s)))],
        _algorithms(),
        trade_execution=data == "ticks",
    )
    s = run.strategy
    for name in ALGORITHM_IDS:
        report = s.report(name)
        assert report.status == ParentStatus.COMPLETED, (name, report)
        assert sum(int(f.last_qty) for f in s.fills(name)) == 13, name
        family = run.cache.orders_for_exec_spawn(s.primaries[name])
        assert all(o.is_closed for o in family), name
    assert run.open_orders() == []
    assert run.engine.portfolio.net_position(ES.id) == 13 + 13 + 13 - 13 - 13


def _last(s) -> Decimal:
    trade = s.cache.trade_tick(ES.id)
    if trade is not None:
        return trade.price.as_decimal()
    bar_type = s.cache.bar_types(instrument_id=ES.id)[0]
    return s.cache.bar(bar_type).close.as_decimal()
