"""EWMA covariance/correlation across instruments and correlation-shock detection.

Estimator: RiskMetrics zero-mean EWMA, ``S <- lam S + (1 - lam) r r'`` per step, seeded by the mean of
the first ``min_periods`` outer products (NaN correlations before that) -- the same estimator as
``sage.features.basic.ewma_corr`` for a pair (a test holds them together), so a feature and the risk
manager never disagree about "the" correlation.

Shock: diversification fails exactly when correlations jump -- positions that looked independent start
losing together. The detector tracks the mean off-diagonal correlation ``c_t`` and flags a shock when it
rose by at least ``threshold`` above its minimum over the last ``window`` steps and is at least
``min_level``. A shock keeps the leverage scale at ``leverage_factor`` for ``cooldown`` steps after the
last triggering step, then releases it (logged both ways).
"""

from __future__ import annotations

import logging
import math
from collections import deque

import msgspec
import numpy as np

log = logging.getLogger("sage.risk.correlation")


class CorrelationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """EWMA correlation and shock-detection parameters."""

    lam: float = 0.94
    """EWMA decay per step (default 0.94, RiskMetrics daily; per bar here)."""
    min_periods: int = 20
    """Steps used to seed the EWMA; correlations are NaN before (default 20)."""
    shock_window: int = 20
    """Look-back, in steps, for the minimum the rise is measured from (default 20)."""
    shock_threshold: float = 0.3
    """Rise of the mean pairwise correlation that counts as a shock (default 0.3)."""
    shock_min_level: float = 0.5
    """The mean correlation must also be at least this high (default 0.5)."""
    leverage_factor: float = 0.5
    """Leverage multiplier while a shock is active (default 0.5 = halve exposure limits)."""
    cooldown: int = 50
    """Steps a shock stays active after the last triggering step (default 50)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.lam < 1.0:
            raise ValueError(f"lam must be in (0, 1), got {self.lam}")
        if self.min_periods < 1 or self.shock_window < 1 or self.cooldown < 0:
            raise ValueError("min_periods and shock_window must be >= 1, cooldown >= 0")
        if not 0.0 <= self.leverage_factor <= 1.0:
            raise ValueError(f"leverage_factor must be in [0, 1], got {self.leverage_factor}")


class EWMACorrelation:
    """Streaming EWMA covariance of a growing set of instruments, with shock detection."""

    def __init__(self, config: CorrelationConfig | None = None) -> None:
        self.config = config or CorrelationConfig()
        self.names: list[str] = []
        self._cov = np.zeros((0, 0))
        self._seed_sum = np.zeros((0, 0))
        self.count = 0
        self._history: deque[float] = deque(maxlen=self.config.shock_window + 1)
        self.shock_remaining = 0
        self.last_mean_correlation = math.nan
        self.shocks = 0

    # -- estimation -----------------------------------------------------------------------------------

    def _grow(self, name: str) -> int:
        self.names.append(name)
        n = len(self.names)
        for attr in ("_cov", "_seed_sum"):
            old = getattr(self, attr)
            new = np.zeros((n, n))
            new[: n - 1, : n - 1] = old
            setattr(self, attr, new)
        return n - 1

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            return self._grow(name)

    def update(self, returns: dict[str, float]) -> bool:
        """One step of returns (instrument -> return). Instruments missing from ``returns`` count as 0.

        Returns True when this step triggered a shock. Non-finite returns are ignored for the step (0).
        """
        for name in returns:
            self.index(name)
        r = np.zeros(len(self.names))
        for name, value in returns.items():
            if math.isfinite(value):
                r[self.names.index(name)] = value
        outer = np.outer(r, r)
        self.count += 1
        cfg = self.config
        if self.count <= cfg.min_periods:
            self._seed_sum += outer
            if self.count == cfg.min_periods:
                self._cov = self._seed_sum / cfg.min_periods
        else:
            self._cov = cfg.lam * self._cov + (1.0 - cfg.lam) * outer
        return self._detect()

    def covariance(self) -> np.ndarray:
        """Current EWMA covariance (NaN before ``min_periods`` steps)."""
        if self.count < self.config.min_periods:
            return np.full((len(self.names),) * 2, np.nan)
        return self._cov.copy()

    def correlation(self) -> np.ndarray:
        """Current correlation matrix; a zero-variance instrument correlates 0 with everything."""
        cov = self.covariance()
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd)
        corr[~np.isfinite(corr)] = 0.0 if self.count >= self.config.min_periods else np.nan
        if self.count >= self.config.min_periods:
            np.fill_diagonal(corr, 1.0)
        return np.clip(corr, -1.0, 1.0)

    def pair(self, a: str, b: str) -> float:
        corr = self.correlation()
        return float(corr[self.names.index(a), self.names.index(b)])

    def mean_correlation(self) -> float:
        """Mean off-diagonal correlation (NaN with fewer than two instruments or during warm-up)."""
        n = len(self.names)
        if n < 2 or self.count < self.config.min_periods:
            return math.nan
        corr = self.correlation()
        return float((corr.sum() - np.trace(corr)) / (n * (n - 1)))

    # -- shocks ---------------------------------------------------------------------------------------

    def _detect(self) -> bool:
        cfg = self.config
        c = self.mean_correlation()
        self.last_mean_correlation = c
        triggered = False
        if math.isfinite(c):
            if self._history:
                rise = c - min(self._history)
                if rise >= cfg.shock_threshold and c >= cfg.shock_min_level:
                    triggered = True
                    if self.shock_remaining == 0:
                        self.shocks += 1
                        log.warning(
                            "correlation shock: mean correlation %.2f rose %.2f within %d steps; leverage x%.2f",
                            c, rise, cfg.shock_window, cfg.leverage_factor,
                        )  # fmt: skip
                    self.shock_remaining = cfg.cooldown + 1
            self._history.append(c)
        if not triggered and self.shock_remaining > 0:
            self.shock_remaining -= 1
            if self.shock_remaining == 0:
                log.info("correlation shock released (mean correlation %.2f)", c)
        return triggered

    @property
    def shock_active(self) -> bool:
        return self.shock_remaining > 0

    @property
    def leverage_scale(self) -> float:
        """``leverage_factor`` while a shock is active, else 1."""
        return self.config.leverage_factor if self.shock_active else 1.0

    # -- persistence ----------------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "names": list(self.names),
            "cov": self._cov.tolist(),
            "seed_sum": self._seed_sum.tolist(),
            "count": self.count,
            "history": list(self._history),
            "shock_remaining": self.shock_remaining,
            "shocks": self.shocks,
        }

    def load_state(self, state: dict) -> None:
        self.names = list(state["names"])
        n = len(self.names)
        self._cov = np.asarray(state["cov"], dtype=np.float64).reshape(n, n)
        self._seed_sum = np.asarray(state["seed_sum"], dtype=np.float64).reshape(n, n)
        self.count = int(state["count"])
        self._history = deque(state["history"], maxlen=self.config.shock_window + 1)
        self.shock_remaining = int(state["shock_remaining"])
        self.shocks = int(state["shocks"])
