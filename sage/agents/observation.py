"""What an agent sees: the single definition shared by the training env and live inference.

Why one module: an agent trained on one arithmetic and run on another silently degrades. The
training environment (:mod:`sage.training.env`, a numba kernel) and the strategy (one bar at a time)
both call :func:`account_state_into` -- the env from inside its kernel, the strategy through
:func:`account_features` -- so the account vector is bitwise the same number in both places.

Agents (fixed order; the index is the column in action / reward arrays):

* tactical, on 5-minute bars, observe the ``TACTICAL_SHAPE`` (60 x 7) matrix of
  :func:`sage.features.tactical_rows`: ``fvg``, ``momentum``, ``entry``;
* strategic, on 30-minute bars, observe the ``STRATEGIC_SHAPE`` (48 x 13) matrix of
  :func:`sage.features.strategic_rows`: ``trend``, ``mean_reversion``.

Every agent also observes the account vector (``ACCOUNT_FEATURES``). Actions are 5 discrete levels,
index ``0..4`` = direction ``-2`` (strong sell) .. ``+2`` (strong buy).

Causality: a 5-minute bar closing at ``t`` may use the latest 30-minute bar whose *close* is
``<= t`` (:func:`align_strategic`) -- never the 30-minute bar still forming.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

AGENTS: tuple[str, ...] = ("fvg", "momentum", "entry", "trend", "mean_reversion")
"""All agents, in action/reward column order."""
TACTICAL_AGENTS: tuple[str, ...] = AGENTS[:3]
"""Agents that act on the 5-minute tactical matrix."""
STRATEGIC_AGENTS: tuple[str, ...] = AGENTS[3:]
"""Agents that act on the 30-minute strategic matrix."""
AGENT_TIMEFRAMES: dict[str, str] = {name: ("5m" if name in TACTICAL_AGENTS else "30m") for name in AGENTS}
"""Agent name -> the bar timeframe it observes ("5m" or "30m")."""
N_AGENTS: int = len(AGENTS)

N_ACTIONS: int = 5
"""Discrete action levels per agent."""
ACTION_DIRECTIONS: tuple[int, ...] = (-2, -1, 0, 1, 2)
"""Action index -> direction (strong sell .. strong buy)."""

TACTICAL_SHAPE: tuple[int, int] = (60, 7)
"""(rows, columns) of the tactical matrix (rows oldest first; columns ``TACTICAL_COLUMNS``)."""
STRATEGIC_SHAPE: tuple[int, int] = (48, 13)
"""(rows, columns) of the strategic matrix (columns ``STRATEGIC_COLUMNS``)."""

ACCOUNT_FEATURES: tuple[str, ...] = ("position", "unrealized_atr", "drawdown", "holding_time")
"""Account vector, every entry bounded:

* ``position`` -- current position as a fraction of the maximum position, in [-1, 1];
* ``unrealized_atr`` -- open PnL per unit of maximum position, in ATRs of the observed bar:
  ``position * (close - entry_price) / atr``, clipped to [-UNREALIZED_CLIP_ATR, +UNREALIZED_CLIP_ATR]
  and divided by ``UNREALIZED_CLIP_ATR`` -> [-1, 1] (0 when flat or when ATR is not positive);
* ``drawdown`` -- drawdown from the peak, as a fraction of peak equity, divided by
  ``DRAWDOWN_SCALE`` and clipped to [0, 1] (a 5 % drawdown saturates);
* ``holding_time`` -- completed 5-minute bars since the position was opened, mapped by
  ``n / (n + HOLDING_HALF_BARS)`` into [0, 1) (0.5 after one hour; 0 when flat).
"""
ACCOUNT_DIM: int = len(ACCOUNT_FEATURES)

UNREALIZED_CLIP_ATR: float = 5.0
"""Open PnL beyond this many ATRs saturates (the sign still tells the agent which side it is on)."""
DRAWDOWN_SCALE: float = 0.05
"""Drawdown fraction mapped to 1.0."""
HOLDING_HALF_BARS: float = 12.0
"""Holding time (in 5-minute bars) mapped to 0.5."""


@njit(cache=True)
def account_state_into(
    out: np.ndarray,
    position: float,
    entry_price: float,
    close: float,
    atr: float,
    drawdown: float,
    bars_held: float,
) -> None:
    """Write the account vector into ``out[:ACCOUNT_DIM]`` (numba core; see ``ACCOUNT_FEATURES``).

    NaN/inf inputs never leak out: each entry falls back to its neutral value (0) instead.
    """
    pos = min(1.0, max(-1.0, position)) if math.isfinite(position) else 0.0
    out[0] = pos
    unreal = 0.0
    if (
        pos != 0.0
        and atr > 0.0
        and math.isfinite(atr)
        and math.isfinite(entry_price)
        and math.isfinite(close)
    ):
        unreal = pos * (close - entry_price) / atr
        unreal = min(UNREALIZED_CLIP_ATR, max(-UNREALIZED_CLIP_ATR, unreal)) / UNREALIZED_CLIP_ATR
    out[1] = unreal
    dd = drawdown / DRAWDOWN_SCALE if math.isfinite(drawdown) else 0.0
    out[2] = min(1.0, max(0.0, dd))
    held = bars_held if (pos != 0.0 and math.isfinite(bars_held) and bars_held > 0.0) else 0.0
    out[3] = held / (held + HOLDING_HALF_BARS)


def account_features(
    position: float,
    entry_price: float,
    close: float,
    atr: float,
    drawdown: float,
    bars_held: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The float32 account vector (``ACCOUNT_DIM``) an agent observes; see ``ACCOUNT_FEATURES``.

    ``position``: signed fraction of the maximum position; ``entry_price``: average entry price of the
    open position; ``close``/``atr``: the observed bar's close and ATR (price units, 5-minute bars);
    ``drawdown``: fraction of peak equity currently lost (>= 0); ``bars_held``: completed 5-minute
    bars since the position was opened. ``out`` (float32, shape ``(ACCOUNT_DIM,)``) is filled in
    place and returned if given.
    """
    if out is None:
        out = np.empty(ACCOUNT_DIM, dtype=np.float32)
    elif out.shape != (ACCOUNT_DIM,) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape ({ACCOUNT_DIM},), got {out.dtype} {out.shape}")
    buf = np.empty(ACCOUNT_DIM, dtype=np.float64)
    account_state_into(
        buf, float(position), float(entry_price), float(close), float(atr), float(drawdown), float(bars_held)
    )
    out[:] = buf
    return out


def action_direction(action: int) -> int:
    """Direction (-2..2) of an action index (0..4); raises ``ValueError`` outside the range."""
    if not 0 <= int(action) < N_ACTIONS:
        raise ValueError(f"action must be in 0..{N_ACTIONS - 1}, got {action}")
    return ACTION_DIRECTIONS[int(action)]


def align_strategic(ts_5m: np.ndarray, ts_30m: np.ndarray) -> np.ndarray:
    """For each 5-minute bar close, the index of the last 30-minute bar whose close is ``<= it``.

    Both inputs are int64 nanosecond close timestamps (Nautilus ``ts_event``), strictly increasing.
    Returns int64 indices into ``ts_30m``; ``-1`` where no 30-minute bar has closed yet. A 30-minute bar
    closing at exactly the 5-minute close *is* visible: both are complete at that instant.
    """
    t5 = np.asarray(ts_5m)
    t30 = np.asarray(ts_30m)
    if t5.ndim != 1 or t30.ndim != 1:
        raise ValueError("ts_5m and ts_30m must be 1-D timestamp arrays")
    if t5.dtype.kind not in "iu" or t30.dtype.kind not in "iu":
        raise ValueError(f"timestamps must be integer nanoseconds, got {t5.dtype} and {t30.dtype}")
    for name, ts in (("ts_5m", t5), ("ts_30m", t30)):
        if ts.size > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise ValueError(f"{name} must be strictly increasing")
    return np.searchsorted(t30.astype(np.int64), t5.astype(np.int64), side="right").astype(np.int64) - 1
