"""Shared parent-order machinery for the sage execution algorithms.

Every sage algorithm (TWAP, VWAP, Iceberg, Stealth, Immediate) only decides *when* and *how much* to
release; this module owns everything that must be identical across them, because that is where
execution algorithms usually go wrong:

* **Accounting from the cache, not from counters.** A parent's executed and working quantities are
  recomputed from the orders of its spawn family (``cache.orders_for_exec_spawn``) every time, so partial
  fills, venue cancels, reduce-only quantity adjustments and rejections can never make the books drift:
  ``unreleased = quantity - filled - leaves of working orders``.
* **Nautilus's primary convention.** Children are spawned with ``reduce_primary=True`` while the primary is
  still held locally, so ``primary.quantity`` always equals the unreleased remainder; the release that
  would empty it sends *the primary itself* (its own type/price/TIF), which is how a fully executed
  parent ends with its primary ``FILLED``. Quantity a child gave back (IOC remainder, cancel, rejection)
  is folded back into the held primary with ``modify_order_in_place``; once the primary has been sent,
  later releases are spawned with ``reduce_primary=False``.
* **Every primary ends in a terminal, explained state.** A :class:`ParentReport` is logged, kept in
  :attr:`SageExecAlgorithm.reports` and published on ``sage.execution.parents.<strategy_id>``. Invalid
  parameters deny the primary (``OrderDenied`` with the reason) before any child exists; a primary the
  strategy cancels stops the schedule and cancels the working children; a child rejection aborts the
  parent after ``max_rejections``; the horizon either sweeps or cancels the remainder; ``on_stop`` (end
  of data) cancels what is working and cancels the held remainder of the primary.
* **Two Nautilus pitfalls are handled here.** ``ExecAlgorithm.execute`` silently drops commands that
  arrive before the algorithm is running (a strategy submitting in ``on_start``: strategies start before
  exec algorithms) - they are buffered and replayed. And the base class subscribes to a strategy's order
  events only *after* handing it the first order, so a child denied synchronously during that first
  ``on_order`` would go unseen - every parent therefore starts on a zero-delay time alert.

Local terminal events (denying or cancelling a primary the algorithm still holds) are sent to
``ExecEngine.process``, the same path the RiskEngine uses, so the cache, the strategy and the portfolio
see ordinary order events.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, ClassVar, Literal

from nautilus_trader.common.enums import ComponentState, LogColor
from nautilus_trader.common.events import TimeEvent
from nautilus_trader.config import ExecAlgorithmConfig, PositiveInt
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.execution.algorithm import ExecAlgorithm
from nautilus_trader.execution.messages import SubmitOrder, SubmitOrderList
from nautilus_trader.model.enums import OrderSide, OrderStatus, OrderType, TimeInForce, TriggerType
from nautilus_trader.model.events import (
    OrderCanceled,
    OrderCancelRejected,
    OrderDenied,
    OrderEvent,
    OrderExpired,
    OrderFilled,
    OrderRejected,
)
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price
from nautilus_trader.model.orders import Order
from nautilus_trader.model.orders.list import OrderList

from sage.execution.algorithms.params import Param, ParamError, parse_params
from sage.execution.algorithms.parent import (
    Parent,
    ParentReport,
    ParentStatus,
    Phase,
    floor_to_increment,
)

#: Message-bus topic prefix for :class:`ParentReport` messages (suffix: the strategy id).
PARENT_TOPIC = "sage.execution.parents"

#: Endpoint that applies an order event to the cached order and publishes it (used by the RiskEngine).
_EXEC_ENGINE_PROCESS = "ExecEngine.process"

_PRE_RUNNING = (ComponentState.PRE_INITIALIZED, ComponentState.READY, ComponentState.STARTING)


class SageExecAlgorithmConfig(ExecAlgorithmConfig, frozen=True, kw_only=True):
    """
    Configuration shared by the sage execution algorithms.

    Parameters
    ----------
    exec_algorithm_id : ExecAlgorithmId, optional
        The algorithm id strategies route to; each subclass config defaults it to its module constant
        (``"TWAP"``, ``"VWAP"``, ...). Override only to run two differently configured copies.
    max_rejections : PositiveInt, default 1
        Rejected or denied children tolerated per parent before the parent is aborted (working
        children canceled, the held remainder of the primary canceled). 1 = abort on the first
        rejection: venue rejections (reduce-only, margin, price bands) repeat, and retrying them
        blindly only multiplies rejections.
    at_horizon : {"complete", "cancel"}, default "complete"
        What happens to quantity still unfilled when a parent's horizon ends, unless the order's
        ``at_horizon`` parameter says otherwise: ``"complete"`` sends one final sweep (a market order,
        or for a LIMIT primary an order at its limit price); ``"cancel"`` cancels the remainder and
        reports the parent ``INCOMPLETE``.
    log_events : bool, default True
        Inherited: log the order events the algorithm receives.
    log_commands : bool, default True
        Inherited: log the commands the algorithm sends.

    """

    max_rejections: PositiveInt = 1
    at_horizon: Literal["complete", "cancel"] = "complete"


class SageExecAlgorithm(ExecAlgorithm):
    """Base class: parent bookkeeping, child release, event handling and terminal reports.

    Subclasses declare ``PARAMS`` (and ``PRIMARY_TYPES``), may override :meth:`validate` for
    cross-parameter checks, and implement :meth:`start_parent` (called once, when the parent starts)
    plus whatever timers they schedule with :meth:`schedule`. They release quantity only through
    :meth:`release`. Optional hooks: :meth:`on_child_closed`, :meth:`on_parent_done`.
    """

    PARAMS: ClassVar[tuple[Param, ...]] = ()
    PRIMARY_TYPES: ClassVar[frozenset[OrderType]] = frozenset({OrderType.MARKET, OrderType.LIMIT})

    def __init__(self, config: SageExecAlgorithmConfig) -> None:
        super().__init__(config)
        self._parents: dict[ClientOrderId, Parent] = {}
        self._buffered: list[Any] = []
        self._seq = 0
        #: Terminal reports by primary id (kept until reset).
        self.reports: dict[ClientOrderId, ParentReport] = {}

    # -- public queries ---------------------------------------------------------------------------

    def parent(self, primary_id: ClientOrderId) -> Parent | None:
        """The live state of a parent that has not finished yet (``None`` once reported)."""
        return self._parents.get(primary_id)

    @property
    def active_primary_ids(self) -> list[ClientOrderId]:
        return list(self._parents)

    # -- subclass interface -----------------------------------------------------------------------

    def validate(self, order: Order, instrument: Instrument, params: dict[str, Any]) -> dict[str, Any]:
        """Cross-parameter checks beyond the per-key ones; raise :class:`ParamError` to deny."""
        return params

    def start_parent(self, parent: Parent) -> None:
        """Begin executing ``parent`` (release the first slice, schedule the rest)."""
        raise NotImplementedError

    def on_child_closed(self, parent: Parent, child: Order) -> None:
        """A child reached a terminal state while the parent is active (Iceberg releases its next clip)."""

    def on_parent_done(self, parent: Parent) -> None:
        """The parent was reported; release per-parent resources."""

    # -- Nautilus lifecycle -----------------------------------------------------------------------

    def execute(self, command: Any) -> None:
        """Buffer commands that arrive before the algorithm runs instead of letting the base drop them."""
        if self.state == ComponentState.RUNNING:
            super().execute(command)
        elif self.state in _PRE_RUNNING:
            self.log.warning(f"{command.__class__.__name__} arrived before {self.id} was running; buffered")
            self._buffered.append(command)
        else:
            self.log.error(f"{command.__class__.__name__} arrived while {self.id} is {self.state.name}")
            for order in _orders_of(command):
                self._deny(order, f"{self.id} is {self.state.name}, not running")

    def on_start(self) -> None:
        if self._buffered:
            self.clock.set_time_alert_ns(self._timer_name("replay"), self.clock.timestamp_ns(), self._replay)

    def _replay(self, _event: TimeEvent) -> None:
        buffered, self._buffered = self._buffered, []
        for command in buffered:
            self.execute(command)

    def on_stop(self) -> None:
        """End of data or shutdown: cancel what is working, cancel held remainders, report every parent.

        Nautilus stops strategies before exec algorithms, so a strategy's own ``on_stop`` clean-up has
        already reached us. Events produced from here on are not delivered to a stopping algorithm, so
        each parent is reported now; orders whose cancel is still in flight are named in the reason.
        """
        for command in self._buffered:
            for order in _orders_of(command):
                self._deny(order, f"{self.id} stopped before it started the order")
        self._buffered.clear()
        for parent in list(self._parents.values()):
            self._cancel_timers(parent)
            working = self.working_orders(parent)
            for order in working:
                if not order.is_pending_cancel:
                    self.cancel_order(order)
            note = f"; cancel requested for {len(working)} working order(s)" if working else ""
            self._finish(parent, ParentStatus.STOPPED, f"algorithm stopped (end of data or shutdown){note}")

    def on_reset(self) -> None:
        self._parents.clear()
        self._buffered.clear()
        self.reports.clear()

    # -- primaries --------------------------------------------------------------------------------

    def on_order(self, order: Order) -> None:
        if order.client_order_id in self._parents or order.client_order_id in self.reports:
            self.log.error(f"{order.client_order_id} already handled by {self.id}; ignored")
            return
        instrument = self.cache.instrument(order.instrument_id)
        try:
            if instrument is None:
                raise ParamError(f"instrument {order.instrument_id} not in the cache")
            self._check_primary(order)
            params = parse_params(order.exec_algorithm_params, self.PARAMS, str(self.id))
            params = self.validate(order, instrument, params)
        except ParamError as exc:
            self._deny(order, str(exc))
            return
        now = self.clock.timestamp_ns()
        horizon = params.get("horizon_secs")
        parent = Parent(
            primary_id=order.client_order_id,
            strategy_id=order.strategy_id,
            instrument=instrument,
            side=order.side,
            quantity=order.quantity.as_decimal(),
            params=params,
            ts_start=now,
            ts_end=None if horizon is None else now + round(horizon * 1e9),
            at_horizon=params.get("at_horizon") or self.config.at_horizon,
        )
        self._parents[parent.primary_id] = parent
        self.log.info(
            f"accepted {order.client_order_id} {order.side_string()} {order.quantity} {params}", LogColor.BLUE
        )
        self.schedule(parent, now, "kickoff", self._kickoff)

    def on_order_list(self, order_list: OrderList) -> None:
        for order in order_list.orders:
            self._deny(order, f"{self.id} does not execute order lists")

    def _check_primary(self, order: Order) -> None:
        if order.order_type not in self.PRIMARY_TYPES:
            kinds = ", ".join(sorted(t.name for t in self.PRIMARY_TYPES))
            raise ParamError(f"{self.id} accepts {kinds} primaries, got {order.order_type.name}")
        if order.is_quote_quantity:
            raise ParamError(f"{self.id} needs a base-quantity order (quote_quantity=True given)")
        if order.emulation_trigger != TriggerType.NO_TRIGGER:
            raise ParamError("emulated primaries cannot be executed by an algorithm (Nautilus restriction)")

    def _kickoff(self, parent: Parent) -> None:
        primary = self.cache.order(parent.primary_id)
        if primary is None or primary.status != OrderStatus.INITIALIZED:
            status = "missing" if primary is None else primary.status.name
            self._finish(
                parent, ParentStatus.CANCELED, f"primary was {status} before the algorithm started it"
            )
            return
        parent.phase = Phase.ACTIVE
        if parent.ts_end is not None:
            self.schedule(parent, parent.ts_end, "horizon", self._on_horizon)
        self.start_parent(parent)

    # -- releasing --------------------------------------------------------------------------------

    def unreleased(self, parent: Parent) -> Decimal:
        """Quantity neither filled nor working at the venue (what the schedule may still release)."""
        filled = Decimal(0)
        leaves = Decimal(0)
        for order in self._family(parent):
            filled += order.filled_qty.as_decimal()
            if self._is_working(parent, order):
                leaves += order.leaves_qty.as_decimal()
        return parent.quantity - filled - leaves

    def filled(self, parent: Parent) -> Decimal:
        return sum((o.filled_qty.as_decimal() for o in self._family(parent)), Decimal(0))

    def release(
        self,
        parent: Parent,
        quantity: Decimal,
        price: Price | None = None,
        time_in_force: TimeInForce | None = None,
        post_only: bool = False,
    ) -> Order | None:
        """Send up to ``quantity`` (rounded down to the size increment) as one order.

        ``price=None`` sends a market child (GTC: a market order never rests, and an IOC market order
        in the simulator only takes the top level, so GTC is what fills it fully); otherwise a limit
        child at ``price`` (IOC unless ``time_in_force`` says otherwise). When the quantity would
        empty the remainder still held by the primary, the primary itself is sent instead. Returns
        the order sent, or ``None`` when nothing could be released.
        """
        if parent.phase not in (Phase.ACTIVE, Phase.SWEEPING):
            return None
        increment = parent.increment
        remaining = self.unreleased(parent)
        if remaining <= 0:
            return None
        qty = floor_to_increment(min(quantity, remaining), increment)
        min_qty = parent.instrument.min_quantity
        if min_qty is not None and qty < min_qty.as_decimal():
            qty = min(min_qty.as_decimal(), remaining)
        if remaining - qty < increment:  # an odd remainder below one increment goes with this release
            qty = remaining
        max_qty = parent.instrument.max_quantity
        if max_qty is not None:
            qty = min(qty, floor_to_increment(max_qty.as_decimal(), increment))
        if qty <= 0:
            return None
        primary = self.cache.order(parent.primary_id)
        held = not parent.primary_sent and primary.status == OrderStatus.INITIALIZED
        if held and qty == remaining:
            parent.primary_sent = True
            self.log.info(f"{parent.primary_id}: final release {qty} sends the primary itself", LogColor.BLUE)
            self.submit_order(primary)
            return primary
        quantity_obj = parent.instrument.make_qty(qty)
        if price is None:
            child = self.spawn_market(
                primary=primary,
                quantity=quantity_obj,
                time_in_force=time_in_force or TimeInForce.GTC,
                reduce_only=primary.is_reduce_only,
                tags=primary.tags,
                reduce_primary=held,
            )
        else:
            child = self.spawn_limit(
                primary=primary,
                quantity=quantity_obj,
                price=price,
                time_in_force=time_in_force or TimeInForce.IOC,
                post_only=post_only,
                reduce_only=primary.is_reduce_only,
                tags=primary.tags,
                reduce_primary=held,
            )
        parent.n_children += 1
        self.submit_order(child)
        return child

    def reference_price(self, instrument_id: InstrumentId, side: OrderSide) -> tuple[Price, int] | None:
        """Most recent price the algorithm can see: quote (ask for buys, bid for sells), last trade or bar close.

        Returns ``(price, ts)`` or ``None`` when the cache has no market data for the instrument.
        """
        candidates: list[tuple[int, Price]] = []
        quote = self.cache.quote_tick(instrument_id)
        if quote is not None:
            candidates.append((quote.ts_init, quote.ask_price if side == OrderSide.BUY else quote.bid_price))
        trade = self.cache.trade_tick(instrument_id)
        if trade is not None:
            candidates.append((trade.ts_init, trade.price))
        for bar_type in self.cache.bar_types(instrument_id=instrument_id):
            bar = self.cache.bar(bar_type)
            if bar is not None:
                candidates.append((bar.ts_init, bar.close))
        if not candidates:
            return None
        ts, price = max(candidates, key=lambda c: c[0])
        return price, ts

    def marketable_price(self, parent: Parent, offset_ticks: int) -> Price | None:
        """Reference price moved ``offset_ticks`` towards the other side, capped by a LIMIT primary's price."""
        ref = self.reference_price(parent.instrument.id, parent.side)
        if ref is None:
            return None
        tick = parent.instrument.price_increment.as_decimal()
        sign = 1 if parent.side == OrderSide.BUY else -1
        value = ref[0].as_decimal() + sign * offset_ticks * tick
        primary = self.cache.order(parent.primary_id)
        if primary.order_type == OrderType.LIMIT:
            cap = primary.price.as_decimal()
            value = min(value, cap) if parent.side == OrderSide.BUY else max(value, cap)
        if value <= 0:
            return None
        return parent.instrument.make_price(value)

    def schedule(self, parent: Parent, ts_ns: int, tag: str, action: Callable[[Parent], None]) -> None:
        """Run ``action(parent)`` at ``ts_ns`` on the component clock (skipped once the parent ends)."""
        name = self._timer_name(f"{parent.primary_id}-{tag}")
        parent.timers.add(name)

        def fire(_event: TimeEvent) -> None:
            parent.timers.discard(name)
            if parent.phase in (Phase.ENDING, Phase.DONE):
                return
            if tag != "kickoff" and tag != "horizon" and parent.phase is not Phase.ACTIVE:
                return
            action(parent)
            self._progress(parent)

        self.clock.set_time_alert_ns(name, ts_ns, fire)

    # -- events -----------------------------------------------------------------------------------

    def on_order_event(self, event: OrderEvent) -> None:
        order = self.cache.order(event.client_order_id)
        if order is None:
            return
        parent = self._parents.get(order.exec_spawn_id)
        if parent is None:
            return
        if order.client_order_id == parent.primary_id:
            self._on_primary_event(parent, order, event)
        else:
            self._on_child_event(parent, order, event)
        self._progress(parent)

    def _on_child_event(self, parent: Parent, child: Order, event: OrderEvent) -> None:
        if isinstance(event, OrderCancelRejected):
            # A parent that is ending waits for its children; ask once more if the venue refused the
            # cancel and the child is still working (a fill usually follows and closes it anyway).
            ending = parent.phase in (Phase.ENDING, Phase.WINDING_DOWN)
            still_working = not child.is_closed and not child.is_pending_cancel
            if ending and still_working and child.client_order_id not in parent.recanceled:
                parent.recanceled.add(child.client_order_id)
                self.cancel_order(child)
            return
        if isinstance(event, (OrderRejected, OrderDenied)):
            parent.n_rejected += 1
            self.log.warning(
                f"{parent.primary_id}: child {child.client_order_id} {type(event).__name__}: {event.reason}"
            )
            if parent.n_rejected >= self.config.max_rejections and parent.phase not in (
                Phase.ENDING,
                Phase.DONE,
            ):
                self._end(
                    parent,
                    ParentStatus.ABORTED,
                    f"{parent.n_rejected} child rejection(s) (max_rejections={self.config.max_rejections}); "
                    f"last: {event.reason}",
                )
        if child.is_closed and isinstance(
            event, (OrderFilled, OrderCanceled, OrderExpired, OrderRejected, OrderDenied)
        ):
            self._refold(parent)
            if parent.phase is Phase.ACTIVE:
                self.on_child_closed(parent, child)

    def _on_primary_event(self, parent: Parent, primary: Order, event: OrderEvent) -> None:
        terminal = (OrderCanceled, OrderExpired, OrderRejected, OrderDenied)
        if parent.closing_primary or not isinstance(event, terminal):
            return
        if parent.phase in (Phase.ENDING, Phase.DONE):
            return
        if not parent.primary_sent:
            # Only the strategy can cancel a primary the algorithm still holds - in any phase.
            self._end(parent, ParentStatus.CANCELED, "primary canceled by the strategy")
            return
        if parent.phase is Phase.SWEEPING or (
            parent.phase is Phase.WINDING_DOWN and parent.at_horizon == "cancel"
        ):
            return  # the sweep's outcome / our own horizon cancel: _progress reports what is left
        if isinstance(event, (OrderRejected, OrderDenied)):
            self._end(
                parent, ParentStatus.REJECTED, f"primary (final slice) {type(event).__name__}: {event.reason}"
            )
        else:
            what = type(event).__name__.removeprefix("Order").lower()
            self._end(parent, ParentStatus.CANCELED, f"primary (final slice) {what} by the strategy or venue")

    def _on_horizon(self, parent: Parent) -> None:
        if parent.phase is not Phase.ACTIVE:
            return
        parent.phase = Phase.WINDING_DOWN
        self._cancel_timers(parent)
        keep_primary = parent.at_horizon == "complete"
        for order in self.working_orders(parent):
            resting = order.order_type != OrderType.MARKET and order.time_in_force not in (
                TimeInForce.IOC,
                TimeInForce.FOK,
            )
            if order.client_order_id == parent.primary_id and keep_primary:
                continue  # the primary already is the final sweep
            if resting and not order.is_pending_cancel:
                self.cancel_order(order)

    # -- ending -----------------------------------------------------------------------------------

    def _end(self, parent: Parent, status: ParentStatus, reason: str) -> None:
        """Stop releasing, cancel working orders; the parent finishes when none is left working."""
        if parent.phase in (Phase.ENDING, Phase.DONE):
            return
        parent.phase = Phase.ENDING
        parent.end_status = status
        parent.end_reason = reason
        self._cancel_timers(parent)
        for order in self.working_orders(parent):
            if not order.is_pending_cancel:
                self.cancel_order(order)

    def _progress(self, parent: Parent) -> None:
        if parent.phase in (Phase.PENDING, Phase.DONE) or self.working_orders(parent):
            return
        remaining = self.unreleased(parent)
        if remaining <= 0:
            self._finish(parent, ParentStatus.COMPLETED, "whole quantity filled")
        elif parent.phase is Phase.ENDING:
            self._finish(parent, parent.end_status or ParentStatus.CANCELED, parent.end_reason)
        elif parent.phase is Phase.WINDING_DOWN:
            if parent.at_horizon == "cancel":
                self._finish(
                    parent, ParentStatus.INCOMPLETE, f"horizon reached, {remaining} unfilled canceled"
                )
                return
            parent.phase = Phase.SWEEPING
            primary = self.cache.order(parent.primary_id)
            price = primary.price if primary.order_type == OrderType.LIMIT else None
            if self.release(parent, remaining, price=price) is None:
                self._finish(
                    parent, ParentStatus.INCOMPLETE, f"horizon reached, final sweep of {remaining} not sent"
                )
        elif parent.phase is Phase.SWEEPING:
            self._finish(parent, ParentStatus.INCOMPLETE, f"final sweep left {remaining} unfilled")

    def _finish(self, parent: Parent, status: ParentStatus, reason: str) -> None:
        if parent.phase is Phase.DONE:
            return
        self._cancel_timers(parent)
        parent.phase = Phase.DONE
        primary = self.cache.order(parent.primary_id)
        if primary is not None and primary.status == OrderStatus.INITIALIZED:
            self._cancel_held_primary(primary)
        family = self._family(parent)
        filled = sum((o.filled_qty.as_decimal() for o in family), Decimal(0))
        notional = sum(float(o.avg_px) * float(o.filled_qty) for o in family if o.filled_qty.as_decimal() > 0)
        report = ParentReport(
            primary_id=parent.primary_id,
            strategy_id=parent.strategy_id,
            instrument_id=parent.instrument.id,
            algorithm=str(self.id),
            side=parent.side,
            quantity=parent.quantity,
            filled_qty=filled,
            avg_px=notional / float(filled) if filled > 0 else None,
            n_children=parent.n_children,
            primary_sent=parent.primary_sent,
            n_rejected=parent.n_rejected,
            status=status,
            reason=reason,
            ts_start=parent.ts_start,
            ts_end=self.clock.timestamp_ns(),
        )
        self._parents.pop(parent.primary_id, None)
        self._publish(report)
        self.on_parent_done(parent)

    def _deny(self, order: Order, reason: str) -> None:
        """Deny a primary the algorithm will not execute (visible to the strategy as ``OrderDenied``)."""
        self.log.warning(f"{order.client_order_id} DENIED by {self.id}: {reason}")
        now = self.clock.timestamp_ns()
        if order.status == OrderStatus.INITIALIZED:
            denied = OrderDenied(
                trader_id=order.trader_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                client_order_id=order.client_order_id,
                reason=reason,
                event_id=UUID4(),
                ts_init=now,
            )
            self.msgbus.send(endpoint=_EXEC_ENGINE_PROCESS, msg=denied)
        self._publish(
            ParentReport(
                primary_id=order.client_order_id,
                strategy_id=order.strategy_id,
                instrument_id=order.instrument_id,
                algorithm=str(self.id),
                side=order.side,
                quantity=order.quantity.as_decimal(),
                filled_qty=Decimal(0),
                avg_px=None,
                n_children=0,
                primary_sent=False,
                n_rejected=0,
                status=ParentStatus.DENIED,
                reason=reason,
                ts_start=now,
                ts_end=now,
            )
        )

    def _cancel_held_primary(self, primary: Order) -> None:
        """Cancel the remainder the algorithm still holds (never sent, so no venue is involved)."""
        parent = self._parents.get(primary.client_order_id)
        if parent is not None:
            parent.closing_primary = True
        now = self.clock.timestamp_ns()
        canceled = OrderCanceled(
            trader_id=primary.trader_id,
            strategy_id=primary.strategy_id,
            instrument_id=primary.instrument_id,
            client_order_id=primary.client_order_id,
            venue_order_id=None,
            account_id=None,
            event_id=UUID4(),
            ts_event=now,
            ts_init=now,
        )
        self.msgbus.send(endpoint=_EXEC_ENGINE_PROCESS, msg=canceled)

    def _publish(self, report: ParentReport) -> None:
        self.reports[report.primary_id] = report
        color = LogColor.GREEN if report.status == ParentStatus.COMPLETED else LogColor.YELLOW
        self.log.info(
            f"parent {report.primary_id} {report.status}: filled {report.filled_qty}/{report.quantity} "
            f"in {report.n_children} children{' + primary' if report.primary_sent else ''} - {report.reason}",
            color,
        )
        self.msgbus.publish(f"{PARENT_TOPIC}.{report.strategy_id}", report, external_pub=False)

    # -- internals --------------------------------------------------------------------------------

    def _family(self, parent: Parent) -> list[Order]:
        return self.cache.orders_for_exec_spawn(parent.primary_id)

    def _is_working(self, parent: Parent, order: Order) -> bool:
        if order.is_closed:
            return False
        if order.client_order_id == parent.primary_id:
            return parent.primary_sent
        return True

    def working_orders(self, parent: Parent) -> list[Order]:
        """Orders of the parent that the venue may still fill (children, and the primary once sent)."""
        return [o for o in self._family(parent) if self._is_working(parent, o)]

    def _refold(self, parent: Parent) -> None:
        """Give quantity returned by a closed child back to the primary while it is still held."""
        primary = self.cache.order(parent.primary_id)
        if parent.primary_sent or primary.status != OrderStatus.INITIALIZED:
            return
        target = self.unreleased(parent)
        if target > 0 and primary.quantity.as_decimal() != target:
            self.modify_order_in_place(primary, quantity=parent.instrument.make_qty(target))

    def _cancel_timers(self, parent: Parent) -> None:
        active = set(self.clock.timer_names)
        for name in parent.timers:
            if name in active:
                self.clock.cancel_timer(name)
        parent.timers.clear()

    def _timer_name(self, tag: str) -> str:
        self._seq += 1
        return f"{self.id}-{tag}-{self._seq}"


def _orders_of(command: Any) -> list[Order]:
    if isinstance(command, SubmitOrder):
        return [command.order]
    if isinstance(command, SubmitOrderList):
        return list(command.order_list.orders)
    return []
