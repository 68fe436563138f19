"""ICEBERG: show at most ``visible_qty`` at a time as explicit resting limit clips.

Why explicit clips instead of Nautilus's ``display_qty``: the simulated venue does not hide
``display_qty`` (the whole order is matchable and visible in fills), so an iceberg that relied on it
would behave like one big limit order in every backtest. Here the venue only ever sees one clip of at
most ``visible_qty``; the next clip is released when the current one has completely filled (or came
back canceled/expired, its unfilled part returning to the pool). The last clip is the primary itself.

Clips rest at the primary's limit price (only LIMIT primaries are accepted - an iceberg is a way to
work a *price*), carry the primary's post-only and reduce-only flags, and are GTC. The primary's time in
force must be GTC, GTD or DAY because the last clip is the primary and must be able to rest.

Params (``exec_algorithm_params``):

* ``visible_qty`` (required, > 0): the largest clip; rounded down to the size increment.
* ``horizon_secs`` (optional, > 0, default none): stop working after this long; leftovers follow
  ``at_horizon``.
* ``at_horizon`` (default from config, ``"cancel"`` for the iceberg: a ``"complete"`` sweep sends the
  whole remainder as one order and so shows more than ``visible_qty``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from nautilus_trader.model.enums import OrderType, TimeInForce
from nautilus_trader.model.identifiers import ExecAlgorithmId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.orders import Order

from sage.execution.algorithms.base import SageExecAlgorithm, SageExecAlgorithmConfig
from sage.execution.algorithms.params import AT_HORIZON, REQUIRED, Param, ParamError
from sage.execution.algorithms.parent import Parent, floor_to_increment

ICEBERG_ID = "ICEBERG"

ICEBERG_PARAMS: tuple[Param, ...] = (
    Param(
        "visible_qty", "float", REQUIRED, "largest clip shown to the venue", minimum=0, exclusive_minimum=True
    ),
    Param("horizon_secs", "float", None, "optional time limit in seconds", minimum=0, exclusive_minimum=True),
    AT_HORIZON,
)

_RESTING_TIFS = (TimeInForce.GTC, TimeInForce.GTD, TimeInForce.DAY)


class IcebergConfig(SageExecAlgorithmConfig, frozen=True, kw_only=True):
    """
    Configuration for :class:`IcebergExecAlgorithm`.

    Parameters
    ----------
    exec_algorithm_id : ExecAlgorithmId, default "ICEBERG"
        The id strategies put on their primary orders.
    max_rejections : PositiveInt, default 1
        See :class:`SageExecAlgorithmConfig`.
    at_horizon : {"complete", "cancel"}, default "cancel"
        Only used when an order sets ``horizon_secs``. Defaults to ``"cancel"`` here because a
        ``"complete"`` sweep sends the whole remainder as one order, i.e. shows more than ``visible_qty``.

    """

    exec_algorithm_id: ExecAlgorithmId | None = ExecAlgorithmId(ICEBERG_ID)
    at_horizon: Literal["complete", "cancel"] = "cancel"


class IcebergExecAlgorithm(SageExecAlgorithm):
    """One resting clip at a time, never larger than ``visible_qty``."""

    PARAMS = ICEBERG_PARAMS
    PRIMARY_TYPES = frozenset({OrderType.LIMIT})

    def __init__(self, config: IcebergConfig | None = None) -> None:
        super().__init__(config or IcebergConfig())

    def validate(self, order: Order, instrument: Instrument, params: dict[str, Any]) -> dict[str, Any]:
        if order.time_in_force not in _RESTING_TIFS:
            raise ParamError(
                f"an iceberg primary must be able to rest (GTC/GTD/DAY), got {order.time_in_force.name}"
            )
        visible = floor_to_increment(
            Decimal(str(params["visible_qty"])), instrument.size_increment.as_decimal()
        )
        if visible <= 0:
            raise ParamError(
                f"visible_qty {params['visible_qty']} is below the size increment {instrument.size_increment}"
            )
        return {**params, "visible_qty": visible}

    def start_parent(self, parent: Parent) -> None:
        self._clip(parent)

    def on_child_closed(self, parent: Parent, child: Order) -> None:
        if not self.working_orders(parent):
            self._clip(parent)

    def _clip(self, parent: Parent) -> None:
        primary = self.cache.order(parent.primary_id)
        self.release(
            parent,
            parent.params["visible_qty"],
            price=primary.price,
            time_in_force=TimeInForce.GTC,
            post_only=primary.is_post_only,
        )
