"""The four market regimes sage models, as small integer codes.

Why an ``IntEnum`` with fixed values: regime labels are stored as ``int8`` columns (the synthetic truth
parquet, detector outputs, custom Nautilus data) and used as array indices (transition matrices,
per-regime statistics). Fixing ``BULL=0 .. VOLATILE=3`` here, in one dependency-free module, keeps every
producer and consumer agreeing on what ``2`` means without importing the generator or Nautilus.
"""

from __future__ import annotations

from enum import IntEnum


class Regime(IntEnum):
    """Market regime code; the value is the row/column index in every 4x4 regime matrix."""

    BULL = 0  # persistent up-trend
    BEAR = 1  # persistent down-trend
    SIDEWAYS = 2  # range-bound, mean-reverting, quiet
    VOLATILE = 3  # no direction, large moves, heavy volume


#: Number of regimes; the size of regime matrices and per-regime arrays.
N_REGIMES: int = len(Regime)

#: Regime names in code order, e.g. for table headers and JSON keys.
REGIME_NAMES: tuple[str, ...] = tuple(r.name for r in Regime)
