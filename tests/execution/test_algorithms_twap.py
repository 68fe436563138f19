"""TWAP in a real engine: even slices on schedule, partial fills, cancels, rejections, end of data."""

from __future__ import annotations

from decimal import Decimal

import pytest
from conftest import MINUTE, ScriptedStrategy, run_engine, ts_of
from nautilus_trader.examples.algorithms.twap import TWAPExecAlgorithm as NautilusExampleTWAP
from nautilus_trader.model.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from nautilus_trader.model.events import OrderDenied

from sage.execution import ParentStatus, TWAPExecAlgorithm

SECOND = 1_000_000_000


def test_twap_on_bars_slices_evenly_on_schedule_and_sums_to_parent(es_bars) -> None:
    t0 = ts_of(es_bars, 5)
    params = {"horizon_secs": 300, "interval_secs": 60}
    run = run_engine(
        es_bars, [(t0, lambda s: s.submit_parent("p", "TWAP", 11, params=params))], [TWAPExecAlgorithm()]
    )
    s = run.strategy
    children = s.family("p")
    primary = run.cache.order(s.primaries["p"])

    # 5 slices: four spawned children then the primary itself; sizes differ by one at most, larger first.
    assert [int(c.quantity) for c in children] == [3, 2, 2, 2]
    assert all(c.order_type == OrderType.MARKET for c in children)
    assert [c.ts_init for c in children] == [t0 + k * MINUTE for k in range(4)]
    assert primary.status == OrderStatus.FILLED and int(primary.quantity) == 2
    assert primary.ts_submitted == t0 + 4 * MINUTE
    assert sum(int(c.quantity) for c in children) + int(primary.quantity) == 11

    # Fills were reported to the strategy for every order of the family and add up to the parent.
    fills = s.fills("p")
    assert {f.client_order_id for f in fills} == {c.client_order_id for c in children} | {
        primary.client_order_id
    }
    assert sum(int(f.last_qty) for f in fills) == 11
    report = s.report("p")
    assert report.status == ParentStatus.COMPLETED
    assert (report.quantity, report.filled_qty, report.n_children, report.primary_sent) == (11, 11, 4, True)
    assert report.avg_px == pytest.approx(sum(float(f.last_px) * int(f.last_qty) for f in fills) / 11)
    assert run.open_orders() == []
    assert run.engine.portfolio.net_position(s.instrument.id) == 11


def test_twap_limit_children_on_trade_ticks_handle_partial_fills(es_ticks) -> None:
    """IOC marketable limits fill only the traded size; the remainder returns and is re-released."""
    t0 = ts_of(es_ticks, 100)
    params = {"horizon_secs": 240, "interval_secs": 30, "child_type": "limit", "limit_offset_ticks": 0}
    run = run_engine(
        es_ticks,
        [(t0, lambda s: s.submit_parent("p", "TWAP", 40, params=params))],
        [TWAPExecAlgorithm()],
        trade_execution=True,
    )
    s = run.strategy
    children = s.family("p")
    primary = run.cache.order(s.primaries["p"])
    assert len(children) == 7 and all(c.order_type == OrderType.LIMIT for c in children)
    assert all(c.time_in_force == TimeInForce.IOC for c in children)
    partial = [c for c in children if 0 < c.filled_qty.as_double() < c.quantity.as_double()]
    assert partial, "trade-tick liquidity should leave some IOC children partially filled"
    assert all(c.status == OrderStatus.CANCELED for c in partial)
    # Returned quantity is re-spread: later slices are larger than the even 40/8 = 5.
    assert int(children[-1].quantity) > 5
    # Exactly the parent was executed: children's fills plus the primary's (the final slice).
    child_filled = sum(int(c.filled_qty) for c in children)
    assert int(primary.quantity) == 40 - child_filled and primary.status == OrderStatus.FILLED
    assert sum(int(f.last_qty) for f in s.fills("p")) == 40
    assert s.report("p").status == ParentStatus.COMPLETED
    assert run.open_orders() == []


def test_cancel_of_primary_mid_way_stops_the_schedule(es_bars) -> None:
    t0 = ts_of(es_bars, 5)
    cancel_at = t0 + 2 * MINUTE + 500_000  # the third child is in flight (1 ms latency)
    params = {"horizon_secs": 600, "interval_secs": 60}
    run = run_engine(
        es_bars,
        [
            (t0, lambda s: s.submit_parent("p", "TWAP", 10, params=params)),
            (cancel_at, lambda s: s.cancel_parent("p")),
        ],
        [TWAPExecAlgorithm()],
    )
    s = run.strategy
    children = s.family("p")
    primary = run.cache.order(s.primaries["p"])
    assert len(children) == 3 and all(c.ts_init < cancel_at for c in children)
    assert primary.status == OrderStatus.CANCELED
    # The in-flight child was asked to cancel; it reached the venue first and filled - accounted, not lost.
    assert any(
        e.client_order_id == children[-1].client_order_id
        for e in s.events
        if type(e).__name__ == "OrderPendingCancel"
    )
    assert all(c.is_closed for c in children)
    report = s.report("p")
    filled = sum(int(f.last_qty) for f in s.fills("p"))
    assert report.status == ParentStatus.CANCELED and report.filled_qty == filled == 3
    assert "canceled by the strategy" in report.reason
    assert run.open_orders() == []
    assert run.engine.portfolio.net_position(s.instrument.id) == 3


class _SubmitsOnStart(ScriptedStrategy):
    def __init__(self, algorithm: str) -> None:
        super().__init__([])
        self.algorithm = algorithm

    def on_start(self) -> None:
        super().on_start()
        self.submit_parent("p", self.algorithm, 4, params={"horizon_secs": 120, "interval_secs": 60})


def test_primary_submitted_in_on_start_is_buffered_not_dropped(es_bars) -> None:
    """Strategies start before exec algorithms; Nautilus's ExecAlgorithm drops commands until it runs."""
    ours = run_engine(es_bars, [], [TWAPExecAlgorithm()], strategy=_SubmitsOnStart("TWAP"))
    assert ours.strategy.report("p").status == ParentStatus.COMPLETED
    assert sum(int(f.last_qty) for f in ours.strategy.fills("p")) == 4

    example = run_engine(es_bars, [], [NautilusExampleTWAP()], strategy=_SubmitsOnStart("TWAP"))
    dropped = example.cache.order(example.strategy.primaries["p"])
    assert dropped.status == OrderStatus.INITIALIZED and example.strategy.fills() == []


@pytest.mark.parametrize(
    ("params", "limit_price", "message"),
    [
        ({"interval_secs": 60}, None, "'horizon_secs' is required"),
        ({"horizon_secs": 300, "intervall_secs": 60}, None, "unknown key 'intervall_secs'"),
        ({"horizon_secs": 60, "interval_secs": 120}, None, "must not exceed horizon_secs"),
        ({"horizon_secs": 300, "child_type": "twap"}, None, "'child_type' must be one of"),
        ({"horizon_secs": -5}, None, "'horizon_secs' must be > 0"),
        ({"horizon_secs": 300}, Decimal(1600), "needs child_type='limit'"),
    ],
)
def test_invalid_params_deny_the_primary_visibly(es_bars, params, limit_price, message) -> None:
    t0 = ts_of(es_bars, 3)
    run = run_engine(
        es_bars[:20],
        [(t0, lambda s: s.submit_parent("p", "TWAP", 5, params=params, limit_price=limit_price))],
        [TWAPExecAlgorithm()],
    )
    s = run.strategy
    primary = run.cache.order(s.primaries["p"])
    assert primary.status == OrderStatus.DENIED
    denied = [e for e in s.events if isinstance(e, OrderDenied)]
    assert len(denied) == 1 and message in denied[0].reason
    assert s.family("p") == [] and s.fills() == []
    report = s.report("p")
    assert report.status == ParentStatus.DENIED and message in report.reason


def test_child_rejection_aborts_parent_and_cancels_the_held_remainder(es_bars) -> None:
    """A reduce-only exit larger than the position: the child that would flip it is refused.

    Nautilus's RiskEngine denies it synchronously (children carry the primary's position id), i.e.
    inside the algorithm's own ``submit_order`` call - the re-entrant case the base class must handle.
    """
    t0 = ts_of(es_bars, 5)
    params = {"horizon_secs": 240, "interval_secs": 60}
    run = run_engine(
        es_bars,
        [
            (ts_of(es_bars, 2), lambda s: s.submit_plain(OrderSide.BUY, 3)),
            (
                t0,
                lambda s: s.submit_parent(
                    "p", "TWAP", 8, side=OrderSide.SELL, params=params, reduce_only=True
                ),
            ),
        ],
        [TWAPExecAlgorithm()],
    )
    s = run.strategy
    refused = s.rejections()
    assert len(refused) == 1 and "reduce only" in refused[0].reason.lower()
    children = s.family("p")
    assert len(children) == 2  # the second child was refused; nothing was sent after it
    assert children[-1].status == OrderStatus.DENIED
    report = s.report("p")
    assert report.status == ParentStatus.ABORTED and report.n_rejected == 1
    assert report.filled_qty == 2 and report.unfilled_qty == 6
    assert run.cache.order(s.primaries["p"]).status == OrderStatus.CANCELED
    assert run.open_orders() == []
    assert run.engine.portfolio.net_position(s.instrument.id) == 1


def _start_index_without_collision(bars, interval_ns: int, before_end: int) -> int:
    """A start bar such that no slice time coincides with the last bar (see the in-flight test)."""
    for start in range(len(bars) - before_end, len(bars) - 2):
        last = bars[-1].ts_init
        t0 = bars[start].ts_init
        if (last - t0) % interval_ns != 0:
            return start
    raise AssertionError("no suitable start bar")


def test_end_of_data_mid_schedule_leaves_nothing_open(es_bars) -> None:
    interval = 90 * SECOND
    start = _start_index_without_collision(es_bars, interval, before_end=10)
    run = run_engine(
        es_bars,
        [
            (
                ts_of(es_bars, start),
                lambda s: s.submit_parent(
                    "p", "TWAP", 20, params={"horizon_secs": 3600, "interval_secs": 90}
                ),
            )
        ],
        [TWAPExecAlgorithm()],
    )
    s = run.strategy
    report = s.report("p")
    filled = sum(int(f.last_qty) for f in s.fills("p"))
    primary = run.cache.order(s.primaries["p"])
    assert report.status == ParentStatus.STOPPED and "end of data" in report.reason
    assert 0 < filled == report.filled_qty < 20
    # Whatever was not filled is the held remainder the algorithm canceled: nothing lost, nothing open.
    assert primary.status == OrderStatus.CANCELED and filled + int(primary.quantity) == 20
    assert run.open_orders() == []


def test_child_sent_at_the_last_timestamp_is_reported_in_flight(es_bars) -> None:
    """Nautilus never processes commands still inside the latency window when the data ends.

    With a 90 s interval started three minutes before the last bar, the third slice is due exactly at
    the last bar: it is sent after that bar and never reaches the simulated venue. The algorithm
    requests its cancel at stop and says so in the report - the one case where an order stays open.
    """
    t0 = es_bars[-1].ts_init - 3 * MINUTE
    assert t0 in {b.ts_init for b in es_bars}
    run = run_engine(
        es_bars,
        [
            (
                t0,
                lambda s: s.submit_parent(
                    "p", "TWAP", 20, params={"horizon_secs": 3600, "interval_secs": 90}
                ),
            )
        ],
        [TWAPExecAlgorithm()],
    )
    report = run.strategy.report("p")
    assert report.status == ParentStatus.STOPPED
    assert "cancel requested for 1 working order(s)" in report.reason
    stuck = run.open_orders()
    assert len(stuck) == 1 and stuck[0].status == OrderStatus.PENDING_CANCEL
    assert stuck[0].ts_init == es_bars[-1].ts_init


@pytest.mark.parametrize("at_horizon", ["cancel", "complete"])
def test_limit_primary_caps_children_and_rests_as_the_last_slice(es_ticks, at_horizon) -> None:
    """A LIMIT primary's price caps every child; its final slice rests at that price past the horizon."""
    t0 = ts_of(es_ticks, 100)

    def act(s):
        cap = s.cache.trade_tick(s.instrument.id).price.as_decimal() - 5  # far below: never trades here
        params = {"horizon_secs": 120, "interval_secs": 30, "child_type": "limit", "at_horizon": at_horizon}
        s.submit_parent("p", "TWAP", 8, params=params, limit_price=cap)

    run = run_engine(es_ticks, [(t0, act)], [TWAPExecAlgorithm()], trade_execution=True)
    s = run.strategy
    primary = run.cache.order(s.primaries["p"])
    children = s.family("p")
    assert len(children) == 3 and all(c.price == primary.price for c in children)  # capped, not ref + 1 tick
    assert all(c.status == OrderStatus.CANCELED and c.filled_qty.as_double() == 0 for c in children)  # IOC
    assert primary.ts_submitted == t0 + 90 * SECOND and int(primary.quantity) == 8  # carries all returns
    report = s.report("p")
    if at_horizon == "cancel":
        assert primary.status == OrderStatus.CANCELED
        assert report.status == ParentStatus.INCOMPLETE and report.unfilled_qty == 8
        assert run.open_orders() == []
    else:  # the resting primary is the sweep: still working when the data ends
        assert report.status == ParentStatus.STOPPED and "cancel requested for 1" in report.reason
