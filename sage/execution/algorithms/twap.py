"""TWAP: release equal slices at a fixed interval over a horizon.

Why recompute each slice from what is left (``ceil(unreleased / slices_left)``) instead of fixing the
sizes up front like Nautilus's example TWAP: quantity a marketable-limit child did not fill (IOC
remainder) or a venue canceled comes back to the pool, and spreading it over the slices still to come
keeps the schedule even and still ends exactly at the parent quantity. When nothing comes back the result
is the classic schedule: ``floor(horizon / interval)`` slices at ``t0, t0 + interval, ...``, sizes
differing by at most one size increment, larger ones first, the last slice being the primary itself.

Params (``exec_algorithm_params``):

* ``horizon_secs`` (required, > 0): the schedule spans ``[t0, t0 + horizon)``.
* ``interval_secs`` (default 60, > 0, <= horizon): time between slices.
* ``child_type`` (default ``"market"``): ``"market"`` or ``"limit"`` (marketable limit, IOC).
* ``limit_offset_ticks`` (default 1): how far through the reference price a ``"limit"`` child is priced.
* ``at_horizon`` (default from config, ``"complete"``): ``"complete"`` or ``"cancel"`` leftovers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from nautilus_trader.model.enums import OrderType
from nautilus_trader.model.identifiers import ExecAlgorithmId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.orders import Order

from sage.execution.algorithms.base import SageExecAlgorithm, SageExecAlgorithmConfig
from sage.execution.algorithms.params import (
    AT_HORIZON,
    CHILD_TYPE,
    LIMIT_OFFSET_TICKS,
    REQUIRED,
    Param,
    ParamError,
)
from sage.execution.algorithms.parent import Parent, ceil_to_increment

TWAP_ID = "TWAP"

TWAP_PARAMS: tuple[Param, ...] = (
    Param("horizon_secs", "float", REQUIRED, "schedule length in seconds", minimum=0, exclusive_minimum=True),
    Param("interval_secs", "float", 60.0, "seconds between slices", minimum=0, exclusive_minimum=True),
    CHILD_TYPE,
    LIMIT_OFFSET_TICKS,
    AT_HORIZON,
)


class TWAPConfig(SageExecAlgorithmConfig, frozen=True, kw_only=True):
    """
    Configuration for :class:`TWAPExecAlgorithm`.

    Parameters
    ----------
    exec_algorithm_id : ExecAlgorithmId, default "TWAP"
        The id strategies put on their primary orders.
    max_rejections : PositiveInt, default 1
        See :class:`SageExecAlgorithmConfig`.
    at_horizon : {"complete", "cancel"}, default "complete"
        See :class:`SageExecAlgorithmConfig`.

    """

    exec_algorithm_id: ExecAlgorithmId | None = ExecAlgorithmId(TWAP_ID)


def check_child_type(order: Order, params: dict[str, Any]) -> None:
    """A LIMIT primary's price is a promise; market children would break it."""
    if order.order_type == OrderType.LIMIT and params["child_type"] == "market":
        raise ParamError("a LIMIT primary needs child_type='limit' (market children would ignore its price)")


@dataclass
class _Plan:
    n_slices: int
    interval_ns: int
    next_index: int = 0


class TWAPExecAlgorithm(SageExecAlgorithm):
    """Time-weighted slicing; works on bars, trade ticks or quotes (prices come from the cache)."""

    PARAMS = TWAP_PARAMS

    def __init__(self, config: TWAPConfig | None = None) -> None:
        super().__init__(config or TWAPConfig())

    def validate(self, order: Order, instrument: Instrument, params: dict[str, Any]) -> dict[str, Any]:
        if params["interval_secs"] > params["horizon_secs"]:
            raise ParamError(
                f"interval_secs ({params['interval_secs']}) must not exceed horizon_secs ({params['horizon_secs']})"
            )
        check_child_type(order, params)
        return params

    def start_parent(self, parent: Parent) -> None:
        n_slices = max(1, int(parent.params["horizon_secs"] // parent.params["interval_secs"]))
        parent.plan = _Plan(n_slices=n_slices, interval_ns=round(parent.params["interval_secs"] * 1e9))
        self._slice(parent)

    def _slice(self, parent: Parent) -> None:
        plan: _Plan = parent.plan
        index = plan.next_index
        plan.next_index += 1
        if plan.next_index < plan.n_slices:
            self.schedule(parent, parent.ts_start + plan.next_index * plan.interval_ns, "slice", self._slice)
        slices_left = plan.n_slices - index
        qty = ceil_to_increment(self.unreleased(parent) / Decimal(slices_left), parent.increment)
        price = None
        if parent.params["child_type"] == "limit":
            price = self.marketable_price(parent, parent.params["limit_offset_ticks"])
            if price is None:
                self.log.warning(f"{parent.primary_id}: no reference price yet, slice {index} skipped")
                return
        self.release(parent, qty, price=price)
