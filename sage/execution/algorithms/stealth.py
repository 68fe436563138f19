"""STEALTH: randomised slice sizes and gaps within bounds, reproducible from a seed.

Why randomise: an evenly spaced, evenly sized schedule is easy for other participants to detect. Each
slice draws a size fraction ``U(min_slice_fraction, max_slice_fraction)`` of the parent quantity
(rounded down to the size increment, at least one increment) and the gap to the next slice
``U(min_interval_secs, max_interval_secs)``. Draws come from a private ``random.Random(seed)`` - never
the global ``random``, which Nautilus's ``FillModel`` reseeds - in a fixed order (size, then gap), so the
same seed and parent give the same schedule in every run.

The last slice takes the remainder: either because the drawn size covers it (then it is no larger than
a regular draw) or because the next gap would land at or past the horizon (then it can exceed
``max_slice_fraction``; the algorithm logs a warning - give the horizon room, roughly
``horizon / mean gap * mean fraction >= 1``).

Params (``exec_algorithm_params``):

* ``horizon_secs`` (required, > 0).
* ``min_slice_fraction`` (default 0.05) / ``max_slice_fraction`` (default 0.2): size bounds, fractions
  of the parent quantity in ``(0, 1]``, min <= max.
* ``min_interval_secs`` (default 5) / ``max_interval_secs`` (default 60): gap bounds, ``0 < min <= max``.
* ``seed`` (default: the config's ``seed`` mixed with a CRC32 of the primary's client order id, so two
  parents of one run differ but every run repeats).
* ``child_type``, ``limit_offset_ticks``, ``at_horizon``: as for TWAP.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nautilus_trader.config import NonNegativeInt
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
from sage.execution.algorithms.parent import Parent, floor_to_increment
from sage.execution.algorithms.twap import check_child_type

STEALTH_ID = "STEALTH"

STEALTH_PARAMS: tuple[Param, ...] = (
    Param(
        "horizon_secs",
        "float",
        REQUIRED,
        "time by which the last slice is sent",
        minimum=0,
        exclusive_minimum=True,
    ),
    Param(
        "min_slice_fraction",
        "float",
        0.05,
        "smallest slice, fraction of the parent",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Param(
        "max_slice_fraction",
        "float",
        0.2,
        "largest slice, fraction of the parent",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Param(
        "min_interval_secs", "float", 5.0, "shortest gap between slices", minimum=0, exclusive_minimum=True
    ),
    Param(
        "max_interval_secs", "float", 60.0, "longest gap between slices", minimum=0, exclusive_minimum=True
    ),
    Param("seed", "int", None, "RNG seed (default: config seed mixed with the primary id)", minimum=0),
    CHILD_TYPE,
    LIMIT_OFFSET_TICKS,
    AT_HORIZON,
)


class StealthConfig(SageExecAlgorithmConfig, frozen=True, kw_only=True):
    """
    Configuration for :class:`StealthExecAlgorithm`.

    Parameters
    ----------
    exec_algorithm_id : ExecAlgorithmId, default "STEALTH"
        The id strategies put on their primary orders.
    seed : NonNegativeInt, default 0
        Base seed; an order without its own ``seed`` parameter uses ``seed ^ crc32(client_order_id)``.
    max_rejections : PositiveInt, default 1
        See :class:`SageExecAlgorithmConfig`.
    at_horizon : {"complete", "cancel"}, default "complete"
        See :class:`SageExecAlgorithmConfig`.

    """

    exec_algorithm_id: ExecAlgorithmId | None = ExecAlgorithmId(STEALTH_ID)
    seed: NonNegativeInt = 0


@dataclass
class _Plan:
    rng: random.Random
    seed: int
    slice_times: list[int] = field(default_factory=list)


class StealthExecAlgorithm(SageExecAlgorithm):
    """Random-size, random-gap slicing within bounds."""

    PARAMS = STEALTH_PARAMS

    def __init__(self, config: StealthConfig | None = None) -> None:
        super().__init__(config or StealthConfig())

    def validate(self, order: Order, instrument: Instrument, params: dict[str, Any]) -> dict[str, Any]:
        if params["min_slice_fraction"] > params["max_slice_fraction"]:
            raise ParamError("min_slice_fraction must not exceed max_slice_fraction")
        if params["min_interval_secs"] > params["max_interval_secs"]:
            raise ParamError("min_interval_secs must not exceed max_interval_secs")
        if params["min_interval_secs"] > params["horizon_secs"]:
            raise ParamError("min_interval_secs must not exceed horizon_secs")
        check_child_type(order, params)
        return params

    def seed_for(self, primary_id: Any, params: dict[str, Any]) -> int:
        if params["seed"] is not None:
            return int(params["seed"])
        return int(self.config.seed) ^ zlib.crc32(str(primary_id).encode())

    def start_parent(self, parent: Parent) -> None:
        seed = self.seed_for(parent.primary_id, parent.params)
        parent.plan = _Plan(rng=random.Random(seed), seed=seed)
        self.log.info(f"{parent.primary_id}: stealth seed {seed}")
        self._slice(parent)

    def _slice(self, parent: Parent) -> None:
        plan: _Plan = parent.plan
        p = parent.params
        now = self.clock.timestamp_ns()
        # Always draw both numbers, in this order, so the stream never depends on fills.
        fraction = plan.rng.uniform(p["min_slice_fraction"], p["max_slice_fraction"])
        gap_ns = round(plan.rng.uniform(p["min_interval_secs"], p["max_interval_secs"]) * 1e9)
        last = parent.ts_end is not None and now + gap_ns >= parent.ts_end
        if not last:
            # Keep ticking even when nothing is left right now: a working child may still hand back
            # quantity (IOC remainder); the parent completes - and its timers stop - once all is filled.
            self.schedule(parent, now + gap_ns, "slice", self._slice)
        remaining = self.unreleased(parent)
        if remaining <= 0:
            return
        qty = max(
            parent.increment, floor_to_increment(parent.quantity * Decimal(repr(fraction)), parent.increment)
        )
        if last:
            if remaining > qty:
                self.log.warning(
                    f"{parent.primary_id}: horizon leaves no room for another slice; last slice takes {remaining}"
                )
            qty = remaining
        price = None
        if p["child_type"] == "limit":
            price = self.marketable_price(parent, p["limit_offset_ticks"])
            if price is None:
                self.log.warning(f"{parent.primary_id}: no reference price yet, slice skipped")
                return
        if self.release(parent, qty, price=price) is not None:
            plan.slice_times.append(now)
