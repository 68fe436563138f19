"""Flatten a position without racing running execution-algorithm slices.

The race (reproduced in ``tests/execution/test_algorithms_flatten.py``): a strategy calls
``close_all_positions`` while an algorithm is still slicing. The close order is sized from the position
*now*, but children already in flight, or spawned by the algorithm's next timer, keep changing the
position afterwards. For a reduce-only exit schedule every child that reaches the venue after the close
is ``REJECTED`` (REDUCE_ONLY would have increased position); for an entry schedule the position silently
reopens. Nautilus's EMACrossTWAP example does exactly this.

:func:`flatten_position` does it in the only order that cannot race:

1. cancel every open order of the strategy on the instrument - algorithm primaries first (a primary
   still held by its algorithm is canceled locally, which stops the algorithm's schedule and, for the
   sage algorithms, cancels its working children), then every child and plain order left open;
2. wait - on the strategy's own order-event topic - until each of those orders is terminal (canceled,
   filled, rejected, expired). A child that was in flight when the cancel went out fills or is canceled,
   either way its effect on the position is final by then;
3. only then close what is really left, with ordinary reduce-only market orders (``close_position``),
   sized from the final position.

The close is therefore never larger than the position and never races a child. The helper needs nothing
from the algorithms beyond Nautilus's own order routing, so it also works with Nautilus's example TWAP
(whose children it cancels itself). ``on_done`` is the place to submit a reversal order, after the flat.
"""

from __future__ import annotations

from collections.abc import Callable

from nautilus_trader.common.events import TimeEvent
from nautilus_trader.model.enums import OrderStatus, TimeInForce
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId
from nautilus_trader.model.orders import Order
from nautilus_trader.trading.strategy import Strategy

#: Cancel requests per order before the flatten stops asking (a venue that keeps rejecting cancels).
_MAX_CANCEL_ATTEMPTS = 3


class Flattener:
    """One flatten request for ``(strategy, instrument_id)``; see :func:`flatten_position`.

    Attributes after completion: ``done`` (the close was sent, or nothing needed closing),
    ``timed_out`` (gave up waiting; nothing was closed), ``canceled_ids`` (orders it asked to cancel)
    and ``close_order_ids`` (the closing orders it submitted).
    """

    def __init__(
        self,
        strategy: Strategy,
        instrument_id: InstrumentId,
        *,
        time_in_force: TimeInForce = TimeInForce.GTC,
        reduce_only: bool = True,
        tags: list[str] | None = None,
        timeout_secs: float | None = None,
        on_done: Callable[[Flattener], None] | None = None,
    ) -> None:
        self.strategy = strategy
        self.instrument_id = instrument_id
        self.time_in_force = time_in_force
        self.reduce_only = reduce_only
        self.tags = tags
        self.timeout_secs = timeout_secs
        self.on_done = on_done
        self.done = False
        self.timed_out = False
        self.canceled_ids: list[ClientOrderId] = []
        self.close_order_ids: list[ClientOrderId] = []
        self._topic = f"events.order.{strategy.id}"
        self._subscribed = False
        self._timer: str | None = None
        self._attempts: dict[ClientOrderId, int] = {}

    @property
    def finished(self) -> bool:
        return self.done or self.timed_out

    def open_orders(self) -> list[Order]:
        """Every order of the strategy on the instrument that could still change the position."""
        cache, venue = self.strategy.cache, self.instrument_id.venue
        # Set difference of the cache's id indexes (C-level) rather than a property read per order of the
        # run: flattening is frequent in long backtests and the cache keeps every closed order.
        ids = cache.client_order_ids(venue, self.instrument_id, self.strategy.id) - cache.client_order_ids_closed(
            venue, self.instrument_id, self.strategy.id
        )
        orders = [o for o in map(cache.order, ids) if o is not None and not o.is_closed]
        return sorted(orders, key=lambda o: (o.ts_init, o.client_order_id.value))  # submission order

    def start(self) -> Flattener:
        opened = self.open_orders()
        primaries = [o for o in opened if o.is_primary]
        for order in primaries + [o for o in opened if not o.is_primary]:
            self._cancel(order)
        if not self.open_orders():
            self._close()
            return self
        self.strategy.msgbus.subscribe(self._topic, self._on_event)
        self._subscribed = True
        if self.timeout_secs is not None:
            self._timer = f"sage-flatten-{self.instrument_id}-{self.strategy.clock.timestamp_ns()}"
            deadline = self.strategy.clock.timestamp_ns() + int(self.timeout_secs * 1e9)
            self.strategy.clock.set_time_alert_ns(self._timer, deadline, self._on_timeout)
        n = len(self.open_orders())
        self.strategy.log.info(f"flatten {self.instrument_id}: waiting for {n} order(s) to close")
        return self

    def _cancel(self, order: Order) -> None:
        order = self.strategy.cache.order(order.client_order_id)  # a cancel above may have closed it
        if order.is_closed or order.is_pending_cancel:
            return
        if order.status == OrderStatus.INITIALIZED and not order.is_primary:
            return  # never submitted (and not held by an algorithm): nothing to cancel anywhere
        attempts = self._attempts.get(order.client_order_id, 0)
        if attempts >= _MAX_CANCEL_ATTEMPTS:
            return
        self._attempts[order.client_order_id] = attempts + 1
        if attempts == 0:
            self.canceled_ids.append(order.client_order_id)
        self.strategy.cancel_order(order)

    def _on_event(self, _event: object) -> None:
        if self.finished:
            return
        remaining = self.open_orders()
        if remaining:
            for order in remaining:
                # New orders (a foreign algorithm's last slice) or a cancel the venue rejected.
                self._cancel(order)
            return
        self._unsubscribe()
        self._close()

    def _on_timeout(self, _event: TimeEvent) -> None:
        if self.finished:
            return
        self.timed_out = True
        self._unsubscribe()
        ids = ", ".join(str(o.client_order_id) for o in self.open_orders())
        self.strategy.log.error(f"flatten {self.instrument_id}: timed out waiting for {ids}; nothing closed")
        if self.on_done is not None:
            self.on_done(self)

    def _unsubscribe(self) -> None:
        if self._subscribed:
            self.strategy.msgbus.unsubscribe(self._topic, self._on_event)
            self._subscribed = False
        if self._timer is not None and self._timer in self.strategy.clock.timer_names:
            self.strategy.clock.cancel_timer(self._timer)

    def _close(self) -> None:
        positions = self.strategy.cache.positions_open(
            instrument_id=self.instrument_id, strategy_id=self.strategy.id
        )
        for position in positions:
            before = {o.client_order_id for o in self.strategy.cache.orders(instrument_id=self.instrument_id)}
            self.strategy.close_position(
                position, tags=self.tags, time_in_force=self.time_in_force, reduce_only=self.reduce_only
            )
            after = self.strategy.cache.orders(instrument_id=self.instrument_id)
            self.close_order_ids += [o.client_order_id for o in after if o.client_order_id not in before]
        self.done = True
        self.strategy.log.info(
            f"flatten {self.instrument_id}: {len(self.canceled_ids)} order(s) canceled, "
            f"{len(positions)} position(s) closed"
        )
        if self.on_done is not None:
            self.on_done(self)


def flatten_position(
    strategy: Strategy,
    instrument_id: InstrumentId,
    *,
    time_in_force: TimeInForce = TimeInForce.GTC,
    reduce_only: bool = True,
    tags: list[str] | None = None,
    timeout_secs: float | None = None,
    on_done: Callable[[Flattener], None] | None = None,
) -> Flattener:
    """Cancel the strategy's orders on ``instrument_id``, wait until all are terminal, then close.

    Returns the started :class:`Flattener`; it may already be ``done`` when nothing was working.
    ``timeout_secs`` (default: wait indefinitely) gives up - and closes nothing - if some order never
    reaches a terminal state (e.g. a venue that never answers a cancel); ``on_done`` is then still
    called, with ``timed_out`` set. At the end of a backtest, commands still inside the latency window
    are never processed by the simulated venue, so a flatten started in ``on_stop`` can only complete
    if no order is in flight.
    """
    return Flattener(
        strategy,
        instrument_id,
        time_in_force=time_in_force,
        reduce_only=reduce_only,
        tags=tags,
        timeout_secs=timeout_secs,
        on_done=on_done,
    ).start()
