"""Kelly sizing: the growth-optimal fraction of equity to risk, and a capped fractional version.

Why fractional and capped: the Kelly fraction is optimal only when the edge is known exactly. With an
estimated edge, full Kelly overbets badly when the estimate is high (growth falls off steeply past the
optimum while it rises gently before it), so practitioners bet a fraction (1/4 .. 1/2) of it and cap the
result. A non-positive Kelly fraction means "no edge": the sized fraction is 0 (or the configured floor).
"""

from __future__ import annotations

import math

import numpy as np


def kelly_fraction(win_probability: float, win_loss_ratio: float) -> float:
    """Kelly fraction of a binary bet: ``f* = p - (1 - p) / b``.

    ``p`` = probability of winning, ``b`` = amount won per unit lost (e.g. a 2R target against a 1R stop
    gives b = 2). May be negative (a losing bet). Maximises ``p log(1 + b f) + (1 - p) log(1 - f)``.
    """
    p, b = float(win_probability), float(win_loss_ratio)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"win_probability must be in [0, 1], got {p!r}")
    if not (math.isfinite(b) and b > 0.0):
        raise ValueError(f"win_loss_ratio must be finite and > 0, got {b!r}")
    return p - (1.0 - p) / b


def kelly_continuous(mean_return: float, variance: float) -> float:
    """Kelly leverage for a continuous (log-normal-ish) return: ``f* = mu / sigma^2``."""
    if not (math.isfinite(variance) and variance > 0.0):
        raise ValueError(f"variance must be finite and > 0, got {variance!r}")
    return float(mean_return) / float(variance)


def fractional_kelly(
    win_probability: float, win_loss_ratio: float, *, fraction: float = 0.25, cap: float = 0.02, floor: float = 0.0
) -> float:
    """Fraction of equity to risk: ``fraction * f*`` limited to ``[floor, cap]``.

    With no edge (``f* <= 0``) the result is ``floor`` (default 0: do not bet); otherwise
    ``min(cap, max(floor, fraction * f*))``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if not 0.0 <= floor <= cap:
        raise ValueError(f"need 0 <= floor <= cap, got floor={floor!r}, cap={cap!r}")
    f = kelly_fraction(win_probability, win_loss_ratio)
    if f <= 0.0:
        return floor
    return min(cap, max(floor, fraction * f))


def kelly_from_outcomes(r_multiples: np.ndarray) -> tuple[float, float, float]:
    """``(p, b, f*)`` estimated from realised trade outcomes in R multiples (PnL / money at risk).

    ``p`` = share of winners, ``b`` = mean win / mean |loss|. With no losers ``b`` is taken as the mean
    win over a 1R notional loss; with no winners ``f*`` is ``-inf``-free: ``p = 0`` gives ``f* = -1/b``.
    """
    r = np.asarray(r_multiples, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        raise ValueError("no finite trade outcomes")
    wins, losses = r[r > 0.0], r[r <= 0.0]
    p = wins.size / r.size
    mean_win = float(wins.mean()) if wins.size else 1.0
    mean_loss = float(-losses.mean()) if losses.size and losses.mean() < 0.0 else 1.0
    b = max(mean_win / mean_loss, 1e-9)
    return p, b, kelly_fraction(p, b)
