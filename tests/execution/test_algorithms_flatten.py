"""Flattening while slices run: the naive close races the algorithm, flatten_position does not.

The naive way is what Nautilus's EMACrossTWAP example does: ``close_all_positions`` while a TWAP is
still working. Here it is reproduced with a reduce-only exit TWAP - every child that reaches the venue
after the close is refused with a REDUCE_ONLY rejection/denial - and with an entry TWAP, where the
position silently reopens. The flatten is done half a millisecond after a slice, so that slice's child
is still in flight (1 ms latency) when the flatten starts.
"""

from __future__ import annotations

import pytest
from conftest import ES, MINUTE, run_engine, ts_of
from nautilus_trader.examples.algorithms.twap import TWAPExecAlgorithm as NautilusExampleTWAP
from nautilus_trader.model.enums import OrderSide, OrderStatus
from nautilus_trader.model.events import OrderPendingCancel

from sage.execution import Flattener, ParentStatus, TWAPExecAlgorithm, flatten_position

IN_FLIGHT = 500_000  # ns after a slice: its child has been sent but not yet reached the venue


def _reduce_only_refusals(run) -> list:
    return [
        e for e in run.strategy.rejections() if "reduce only" in e.reason.lower() or "REDUCE_ONLY" in e.reason
    ]


def _exit_scenario(es_bars, algorithm, how: str):
    """Long 10, then a reduce-only TWAP sells it in 1-lot slices; flatten mid-way."""
    flats: list[Flattener] = []

    def flatten(s):
        if how == "naive":
            s.close_all_positions(ES.id)
        else:
            flats.append(flatten_position(s, ES.id))

    t0 = ts_of(es_bars, 5)
    params = {"horizon_secs": 600, "interval_secs": 60}
    actions = [
        (ts_of(es_bars, 2), lambda s: s.submit_plain(OrderSide.BUY, 10)),
        (
            t0,
            lambda s: s.submit_parent(
                "exit", "TWAP", 10, side=OrderSide.SELL, reduce_only=True, params=params
            ),
        ),
        (t0 + 4 * MINUTE + IN_FLIGHT, flatten),
    ]
    return run_engine(es_bars, actions, [algorithm]), flats


@pytest.mark.parametrize(
    "algorithm", [TWAPExecAlgorithm, NautilusExampleTWAP], ids=["sage", "nautilus-example"]
)
def test_naive_close_while_slices_run_produces_reduce_only_refusals(es_bars, algorithm) -> None:
    run, _ = _exit_scenario(es_bars, algorithm(), "naive")
    assert len(_reduce_only_refusals(run)) > 0
    assert run.engine.portfolio.is_flat(ES.id)


@pytest.mark.parametrize(
    "algorithm", [TWAPExecAlgorithm, NautilusExampleTWAP], ids=["sage", "nautilus-example"]
)
def test_flatten_position_while_slices_run_has_no_reduce_only_refusals(es_bars, algorithm) -> None:
    run, (flat,) = _exit_scenario(es_bars, algorithm(), "flatten")
    s = run.strategy
    assert s.rejections() == []
    assert flat.done and not flat.timed_out and len(flat.close_order_ids) == 1
    assert run.engine.portfolio.is_flat(ES.id)
    assert run.open_orders() == []
    # The child in flight when the flatten started was asked to cancel, reached the venue first and
    # filled; the close waited for it, so it closed exactly what was left.
    # (The sage TWAP cancels its own children when its primary is canceled; for the example TWAP the
    # flatten cancels them itself.)
    children = s.family("exit")
    (in_flight,) = [c for c in children if c.ts_init == ts_of(es_bars, 5) + 4 * MINUTE]
    asked = {e.client_order_id for e in s.events if isinstance(e, OrderPendingCancel)}
    assert in_flight.client_order_id in asked and in_flight.status == OrderStatus.FILLED
    close = run.cache.order(flat.close_order_ids[0])
    sold_by_children = sum(int(c.filled_qty) for c in children)
    assert close.status == OrderStatus.FILLED and int(close.quantity) == 10 - sold_by_children
    # Sized only after the in-flight fill was known: the close exists only after that fill event.
    position = {(type(e).__name__, e.client_order_id): i for i, e in enumerate(s.events)}
    assert (
        position[("OrderInitialized", close.client_order_id)]
        > position[("OrderFilled", in_flight.client_order_id)]
    )
    if algorithm is TWAPExecAlgorithm:
        assert s.report("exit").status == ParentStatus.CANCELED


def _entry_scenario(es_bars, how: str):
    """A TWAP buys 10 in 1-lot slices; the strategy flattens mid-way."""
    flats: list[Flattener] = []

    def flatten(s):
        if how == "naive":
            s.close_all_positions(ES.id)
        else:
            flats.append(flatten_position(s, ES.id))

    t0 = ts_of(es_bars, 5)
    actions = [
        (
            t0,
            lambda s: s.submit_parent("entry", "TWAP", 10, params={"horizon_secs": 600, "interval_secs": 60}),
        ),
        (t0 + 4 * MINUTE + IN_FLIGHT, flatten),
    ]
    return run_engine(es_bars, actions, [TWAPExecAlgorithm()]), flats


def test_naive_close_during_an_entry_schedule_leaves_a_position(es_bars) -> None:
    run, _ = _entry_scenario(es_bars, "naive")
    assert run.engine.portfolio.net_position(ES.id) > 0  # the TWAP kept buying after the "close"
    assert run.strategy.report("entry").status == ParentStatus.COMPLETED


def test_flatten_during_an_entry_schedule_ends_flat(es_bars) -> None:
    run, (flat,) = _entry_scenario(es_bars, "flatten")
    assert flat.done and run.strategy.rejections() == []
    assert run.engine.portfolio.is_flat(ES.id)
    assert run.strategy.report("entry").status == ParentStatus.CANCELED
    assert run.open_orders() == []


def test_reversal_submits_the_new_schedule_only_after_the_flat(es_bars) -> None:
    """EMACrossTWAP's reversal (close, then trade the other way) done with on_done: no race, no rejection."""
    flats: list[Flattener] = []

    def reverse(s):
        def then_sell(flat: Flattener) -> None:
            s.submit_parent(
                "short", "TWAP", 5, side=OrderSide.SELL, params={"horizon_secs": 180, "interval_secs": 60}
            )

        flats.append(flatten_position(s, ES.id, on_done=then_sell))

    t0 = ts_of(es_bars, 5)
    actions = [
        (
            t0,
            lambda s: s.submit_parent("long", "TWAP", 10, params={"horizon_secs": 600, "interval_secs": 60}),
        ),
        (t0 + 3 * MINUTE + IN_FLIGHT, reverse),
    ]
    run = run_engine(es_bars, actions, [TWAPExecAlgorithm()])
    s = run.strategy
    (flat,) = flats
    assert flat.done and s.rejections() == []
    close = run.cache.order(flat.close_order_ids[0])
    short_primary = run.cache.order(s.primaries["short"])
    assert short_primary.ts_init >= close.ts_init
    assert s.report("long").status == ParentStatus.CANCELED
    assert s.report("short").status == ParentStatus.COMPLETED
    assert run.engine.portfolio.net_position(ES.id) == -5


def test_flatten_with_nothing_working_closes_at_once(es_bars) -> None:
    flats: list[Flattener] = []
    actions = [
        (ts_of(es_bars, 2), lambda s: s.submit_plain(OrderSide.SELL, 4)),
        (ts_of(es_bars, 6), lambda s: flats.append(flatten_position(s, ES.id))),
    ]
    run = run_engine(es_bars[:20], actions, [TWAPExecAlgorithm()])
    (flat,) = flats
    assert flat.done and flat.canceled_ids == [] and len(flat.close_order_ids) == 1
    assert run.engine.portfolio.is_flat(ES.id)


def test_flatten_times_out_instead_of_closing_into_an_unresolved_order(es_bars) -> None:
    """A primary routed to an algorithm id nobody registered never becomes terminal: give up, close nothing."""
    flats: list[Flattener] = []
    done: list[Flattener] = []
    t = ts_of(es_bars, 6)
    actions = [
        (ts_of(es_bars, 2), lambda s: s.submit_plain(OrderSide.BUY, 2)),
        (
            ts_of(es_bars, 4),
            lambda s: s.submit_parent("lost", "NOT_REGISTERED", 3, params={"horizon_secs": 60}),
        ),
        (t, lambda s: flats.append(flatten_position(s, ES.id, timeout_secs=120, on_done=done.append))),
    ]
    run = run_engine(es_bars[:20], actions, [TWAPExecAlgorithm()])
    (flat,) = flats
    assert done == [flat] and flat.timed_out and not flat.done
    assert flat.close_order_ids == [] and run.engine.portfolio.net_position(ES.id) == 2
    assert run.cache.order(run.strategy.primaries["lost"]).status == OrderStatus.INITIALIZED
