"""Iceberg on real ES trade ticks: explicit clips, one at a time, partial fills, cancels, end of data."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import ES, run_engine, ts_of
from nautilus_trader.model.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from nautilus_trader.model.events import OrderDenied, OrderFilled, OrderSubmitted

from sage.execution import IcebergExecAlgorithm, ParentStatus

START = 100  # tick index at which the tests act


def _last_price(strategy) -> Decimal:
    return strategy.cache.trade_tick(ES.id).price.as_decimal()


@pytest.fixture(scope="module")
def working_iceberg(es_ticks):
    """A SELL iceberg two ticks above the market: it rests, then trades as the market comes up."""

    def act(s):
        s.submit_parent(
            "ice",
            "ICEBERG",
            30,
            side=OrderSide.SELL,
            params={"visible_qty": 4},
            limit_price=_last_price(s) + Decimal("0.50"),
        )

    return run_engine(
        es_ticks, [(ts_of(es_ticks, START), act)], [IcebergExecAlgorithm()], trade_execution=True
    )


def test_clips_never_exceed_visible_qty_and_sum_to_parent(working_iceberg) -> None:
    s = working_iceberg.strategy
    primary = working_iceberg.cache.order(s.primaries["ice"])
    clips = s.family("ice") + [primary]  # the primary itself is the last clip
    assert all(c.quantity.as_decimal() <= 4 for c in clips)
    assert all(c.order_type == OrderType.LIMIT and c.price == primary.price for c in clips)
    assert all(c.display_qty is None for c in clips)  # explicit clipping, not the venue's display_qty
    assert sum(int(c.quantity) for c in clips) == 30
    assert sum(int(f.last_qty) for f in s.fills("ice")) == 30
    assert s.report("ice").status == ParentStatus.COMPLETED
    assert working_iceberg.open_orders() == []


def test_only_one_clip_is_visible_at_a_time(working_iceberg) -> None:
    s = working_iceberg.strategy
    primary_id = s.primaries["ice"]
    family_ids = {o.client_order_id for o in working_iceberg.cache.orders_for_exec_spawn(primary_id)}
    visible = 0
    peak = 0
    remaining: dict = {}
    for event in s.events:
        if event.client_order_id not in family_ids:
            continue
        order = working_iceberg.cache.order(event.client_order_id)
        if isinstance(event, OrderSubmitted):
            visible += 1
            remaining[event.client_order_id] = order.quantity.as_decimal()
        elif isinstance(event, OrderFilled):
            remaining[event.client_order_id] -= event.last_qty.as_decimal()
            if remaining[event.client_order_id] == 0:
                visible -= 1
        peak = max(peak, visible)
    assert peak == 1 and visible == 0


def test_clips_are_partially_filled_by_trade_sizes(working_iceberg) -> None:
    s = working_iceberg.strategy
    fills_per_clip: dict = {}
    for fill in s.fills("ice"):
        fills_per_clip[fill.client_order_id] = fills_per_clip.get(fill.client_order_id, 0) + 1
    assert max(fills_per_clip.values()) > 1  # a clip worked through several partial fills


@pytest.fixture(scope="module")
def resting_iceberg(es_ticks):
    """A BUY iceberg far below the market (never trades), canceled by the strategy after 30 s."""
    t0 = ts_of(es_ticks, START)

    def submit(s):
        s.submit_parent("ice", "ICEBERG", 12, params={"visible_qty": 5}, limit_price=_last_price(s) - 5)

    return run_engine(
        es_ticks,
        [(t0, submit), (t0 + 30_000_000_000, lambda s: s.cancel_parent("ice"))],
        [IcebergExecAlgorithm()],
        trade_execution=True,
    )


def test_cancel_of_primary_cancels_the_resting_clip(resting_iceberg) -> None:
    s = resting_iceberg.strategy
    clips = s.family("ice")
    assert len(clips) == 1 and int(clips[0].quantity) == 5
    assert clips[0].status == OrderStatus.CANCELED
    assert resting_iceberg.cache.order(s.primaries["ice"]).status == OrderStatus.CANCELED
    report = s.report("ice")
    assert report.status == ParentStatus.CANCELED and report.filled_qty == 0
    assert resting_iceberg.open_orders() == []


def test_horizon_cancels_the_remainder(es_ticks) -> None:
    def submit(s):
        s.submit_parent(
            "ice",
            "ICEBERG",
            12,
            params={"visible_qty": 5, "horizon_secs": 20},
            limit_price=_last_price(s) - 5,
        )

    run = run_engine(
        es_ticks, [(ts_of(es_ticks, START), submit)], [IcebergExecAlgorithm()], trade_execution=True
    )
    s = run.strategy
    report = s.report("ice")
    assert report.status == ParentStatus.INCOMPLETE and "horizon reached" in report.reason
    assert report.unfilled_qty == 12
    assert [c.status for c in s.family("ice")] == [OrderStatus.CANCELED]
    assert run.open_orders() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit_price": None}, "accepts LIMIT primaries"),
        ({"limit_price": Decimal(1600), "time_in_force": TimeInForce.IOC}, "must be able to rest"),
        ({"limit_price": Decimal(1600), "params": {"visible_qty": 0.5}}, "below the size increment"),
        ({"limit_price": Decimal(1600), "params": {}}, "'visible_qty' is required"),
    ],
)
def test_invalid_iceberg_primaries_are_denied(es_ticks, kwargs, message) -> None:
    kwargs = {"params": {"visible_qty": 2}, **kwargs}
    run = run_engine(
        es_ticks[:2000],
        [(ts_of(es_ticks, START), lambda s: s.submit_parent("ice", "ICEBERG", 6, **kwargs))],
        [IcebergExecAlgorithm()],
        trade_execution=True,
    )
    denied = [e for e in run.strategy.events if isinstance(e, OrderDenied)]
    assert len(denied) == 1 and message in denied[0].reason
    assert run.strategy.family("ice") == []


@pytest.mark.parametrize("latency_ns", [None, 1_000_000])
def test_end_of_data_with_a_resting_clip(es_ticks, latency_ns) -> None:
    """At end of data the algorithm cancels the resting clip and the held remainder.

    Without a latency model the venue still processes that cancel, so nothing stays open. With one,
    the cancel is inside the latency window when the data ends and Nautilus never delivers it: the
    clip stays PENDING_CANCEL and the report says a cancel was outstanding.
    """

    def submit(s):
        s.submit_parent("ice", "ICEBERG", 12, params={"visible_qty": 5}, limit_price=_last_price(s) - 5)

    run = run_engine(
        es_ticks,
        [(ts_of(es_ticks, START), submit)],
        [IcebergExecAlgorithm()],
        trade_execution=True,
        latency_ns=latency_ns,
    )
    s = run.strategy
    report = s.report("ice")
    assert report.status == ParentStatus.STOPPED
    assert "cancel requested for 1 working order(s)" in report.reason
    assert run.cache.order(s.primaries["ice"]).status == OrderStatus.CANCELED  # the held 7
    (clip,) = s.family("ice")
    if latency_ns is None:
        assert clip.status == OrderStatus.CANCELED and run.open_orders() == []
    else:
        assert clip.status == OrderStatus.PENDING_CANCEL and run.open_orders() == [clip]
