"""``risk_scale``: how much of the proposed risk to take given the regime estimate's quality.

Why: a regime estimate from a lower fallback level (rules, volatility only, last known) or with high
calibrated uncertainty is a worse basis for sizing; the size shrinks rather than the strategy acting on
it at full weight. Scale = ``level_scales[level - 1] * uncertainty_scale`` where the uncertainty scale is
1 up to ``uncertainty_threshold`` and falls linearly to ``min_uncertainty_scale`` at uncertainty 1.
A non-finite uncertainty is treated as 1 (maximal) -- fail closed.
"""

from __future__ import annotations

import math

import msgspec


class RiskScaleConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Risk multipliers per regime fallback level and for high uncertainty."""

    level_scales: tuple[float, float, float, float, float] = (1.0, 0.75, 0.5, 0.35, 0.25)
    """Scale at fallback levels 1..5 (default 1.0, 0.75, 0.5, 0.35, 0.25: full model with calibrated
    uncertainty trades full size; the last-known-regime fallback a quarter)."""
    uncertainty_threshold: float = 0.5
    """Uncertainty above which size is reduced (default 0.5)."""
    min_uncertainty_scale: float = 0.25
    """Uncertainty scale at uncertainty 1.0 (default 0.25)."""

    def __post_init__(self) -> None:
        if len(self.level_scales) != 5 or not all(0.0 <= s <= 1.0 for s in self.level_scales):
            raise ValueError(f"level_scales needs 5 values in [0, 1], got {self.level_scales}")
        if list(self.level_scales) != sorted(self.level_scales, reverse=True):
            raise ValueError("level_scales must not increase with the fallback level")
        if not 0.0 <= self.uncertainty_threshold < 1.0:
            raise ValueError(f"uncertainty_threshold must be in [0, 1), got {self.uncertainty_threshold}")
        if not 0.0 <= self.min_uncertainty_scale <= 1.0:
            raise ValueError(f"min_uncertainty_scale must be in [0, 1], got {self.min_uncertainty_scale}")


DEFAULT_RISK_SCALE = RiskScaleConfig()


def risk_scale(regime_level: int, uncertainty: float, config: RiskScaleConfig = DEFAULT_RISK_SCALE) -> float:
    """Risk multiplier in [0, 1] for a regime estimate at ``regime_level`` (1..5) with ``uncertainty``."""
    if not 1 <= int(regime_level) <= 5:
        raise ValueError(f"regime_level must be in 1..5, got {regime_level!r}")
    u = float(uncertainty)
    u = 1.0 if not math.isfinite(u) else min(1.0, max(0.0, u))
    level = config.level_scales[int(regime_level) - 1]
    thr = config.uncertainty_threshold
    if u <= thr:
        unc = 1.0
    else:
        unc = 1.0 - (u - thr) / (1.0 - thr) * (1.0 - config.min_uncertainty_scale)
    return float(min(1.0, max(0.0, level * unc)))
