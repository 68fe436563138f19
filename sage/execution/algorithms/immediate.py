"""IMMEDIATE: send the whole primary at once, but with the same parent bookkeeping as the slicers.

Why an algorithm that does not slice: a selector (``sage.execution.selector``) routes every order through
*some* execution algorithm id, and strategies flatten, cancel and read :class:`ParentReport`\\ s the same
way whichever was chosen. Routing "no slicing" through this algorithm keeps that one code path. The
primary goes out as-is (its own type, price and time in force) on the parent's zero-delay kickoff, so it
reaches the venue at the same timestamp as a direct submission. No parameters are accepted.
"""

from __future__ import annotations

from nautilus_trader.model.enums import OrderType
from nautilus_trader.model.identifiers import ExecAlgorithmId

from sage.execution.algorithms.base import SageExecAlgorithm, SageExecAlgorithmConfig
from sage.execution.algorithms.params import Param
from sage.execution.algorithms.parent import Parent

IMMEDIATE_ID = "IMMEDIATE"

IMMEDIATE_PARAMS: tuple[Param, ...] = ()


class ImmediateConfig(SageExecAlgorithmConfig, frozen=True, kw_only=True):
    """
    Configuration for :class:`ImmediateExecAlgorithm`.

    Parameters
    ----------
    exec_algorithm_id : ExecAlgorithmId, default "IMMEDIATE"
        The id strategies put on their primary orders.
    max_rejections : PositiveInt, default 1
        See :class:`SageExecAlgorithmConfig` (a rejected primary always ends the parent ``REJECTED``).
    at_horizon : {"complete", "cancel"}, default "complete"
        Unused (no horizon).

    """

    exec_algorithm_id: ExecAlgorithmId | None = ExecAlgorithmId(IMMEDIATE_ID)


class ImmediateExecAlgorithm(SageExecAlgorithm):
    """Pass-through: the primary is the only order."""

    PARAMS = IMMEDIATE_PARAMS
    PRIMARY_TYPES = frozenset(
        {
            OrderType.MARKET,
            OrderType.LIMIT,
            OrderType.MARKET_TO_LIMIT,
            OrderType.STOP_MARKET,
            OrderType.STOP_LIMIT,
            OrderType.MARKET_IF_TOUCHED,
            OrderType.LIMIT_IF_TOUCHED,
        }
    )

    def __init__(self, config: ImmediateConfig | None = None) -> None:
        super().__init__(config or ImmediateConfig())

    def start_parent(self, parent: Parent) -> None:
        self.release(parent, parent.quantity)
