"""Parent-order state and the terminal report every parent ends with.

Kept apart from the algorithm base class so that consumers of the reports (TCA, strategies subscribing
to ``sage.execution.parents.<strategy_id>``) import plain data types, not an ``ExecAlgorithm``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import ClientOrderId, InstrumentId, StrategyId
from nautilus_trader.model.instruments import Instrument


class ParentStatus(enum.StrEnum):
    """How a parent (primary) order ended."""

    COMPLETED = "COMPLETED"  # the whole quantity filled
    CANCELED = "CANCELED"  # the strategy canceled the primary, or the venue canceled/expired it
    INCOMPLETE = "INCOMPLETE"  # horizon reached, remainder canceled (or the final sweep underfilled)
    ABORTED = "ABORTED"  # too many child rejections/denials
    REJECTED = "REJECTED"  # the primary itself (sent as the final slice) was rejected or denied
    DENIED = "DENIED"  # invalid parameters / unsupported primary: no child was ever sent
    STOPPED = "STOPPED"  # the algorithm stopped (end of data, shutdown) while the parent was running


class Phase(enum.Enum):
    """Where a parent is in its life; only :class:`SageExecAlgorithm` moves it."""

    PENDING = "pending"  # accepted, kickoff alert not fired yet
    ACTIVE = "active"  # releasing per schedule
    WINDING_DOWN = "winding_down"  # horizon reached: waiting for working orders, then sweep or cancel
    SWEEPING = "sweeping"  # the single final sweep is working
    ENDING = "ending"  # ended (cancel/abort/reject): waiting for working orders to close
    DONE = "done"


@dataclass(frozen=True)
class ParentReport:
    """Final account of one parent order, published when the parent reaches a terminal state.

    ``quantity`` is the parent's size as submitted by the strategy (the primary's own ``quantity`` field
    shrinks as children are spawned - Nautilus's convention - so use this one for TCA).
    ``n_children`` counts spawned children and excludes the primary even when it was sent as the final
    slice (``primary_sent``). ``avg_px`` is the fill-weighted average over the whole spawn family.
    """

    primary_id: ClientOrderId
    strategy_id: StrategyId
    instrument_id: InstrumentId
    algorithm: str
    side: OrderSide
    quantity: Decimal
    filled_qty: Decimal
    avg_px: float | None
    n_children: int
    primary_sent: bool
    n_rejected: int
    status: ParentStatus
    reason: str
    ts_start: int
    ts_end: int

    @property
    def unfilled_qty(self) -> Decimal:
        return self.quantity - self.filled_qty


@dataclass
class Parent:
    """Mutable state of one running parent. ``plan`` belongs to the concrete algorithm."""

    primary_id: ClientOrderId
    strategy_id: StrategyId
    instrument: Instrument
    side: OrderSide
    quantity: Decimal
    params: dict[str, Any]
    ts_start: int
    ts_end: int | None
    at_horizon: str
    phase: Phase = Phase.PENDING
    primary_sent: bool = False
    closing_primary: bool = False
    n_children: int = 0
    n_rejected: int = 0
    recanceled: set[ClientOrderId] = field(default_factory=set)
    end_status: ParentStatus | None = None
    end_reason: str = ""
    timers: set[str] = field(default_factory=set)
    plan: Any = None

    @property
    def increment(self) -> Decimal:
        return self.instrument.size_increment.as_decimal()


def floor_to_increment(value: Decimal, increment: Decimal) -> Decimal:
    """Largest multiple of ``increment`` that is <= ``value`` (quantities never round up past a limit)."""
    return (value / increment).to_integral_value(rounding=ROUND_FLOOR) * increment


def ceil_to_increment(value: Decimal, increment: Decimal) -> Decimal:
    """Smallest multiple of ``increment`` that is >= ``value``."""
    return (value / increment).to_integral_value(rounding=ROUND_CEILING) * increment
