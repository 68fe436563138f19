"""sage.regime: reliability around the regime models -- conformal calibration, rule detectors, fallback, health.

* :mod:`sage.regime.conformal` -- split and adaptive conformal calibration of forecast intervals.
* :mod:`sage.regime.rules` -- level-3 (multi-indicator) and level-4 (volatility-only) rule detectors.
* :mod:`sage.regime.fallback` -- the five-level fallback chain that always publishes.
* :mod:`sage.regime.health` -- latency, input validation, feature and prediction drift, health flags.
* :mod:`sage.regime.kernel` -- the detector's compiled per-bar step (all of the above, specialised),
  shared by ``RegimeDetector.batch`` and ``DetectorStream.update``.

Pure numpy/numba; no Nautilus, no torch. See ``docs/regime_reliability.md``.
"""

from sage.regime.conformal import (
    AdaptiveConformal,
    ConformalRun,
    SortedWindow,
    SplitConformal,
    apply_correction,
    conformal_quantile,
    conformity_scores,
)
from sage.regime.fallback import (
    LAST_RESORT_LEVEL,
    ChainOutput,
    FallbackChain,
    FallbackConfig,
    Level,
    LevelOutput,
    Reason,
    Transition,
)
from sage.regime.health import (
    BAD_BAR,
    DriftConfig,
    DriftMonitor,
    HealthFlag,
    HealthMonitor,
    InputIssue,
    InputValidator,
    LatencyMonitor,
    PredictionDriftMonitor,
    input_health_flags,
    psi,
)
from sage.regime.rules import (
    UNDECIDED,
    RuleConfig,
    RuleDetector,
    VolatilityConfig,
    VolatilityDetector,
    labels_from_probabilities,
)

__all__ = [
    "BAD_BAR",
    "LAST_RESORT_LEVEL",
    "UNDECIDED",
    "AdaptiveConformal",
    "ChainOutput",
    "ConformalRun",
    "DriftConfig",
    "DriftMonitor",
    "FallbackChain",
    "FallbackConfig",
    "HealthFlag",
    "HealthMonitor",
    "InputIssue",
    "InputValidator",
    "LatencyMonitor",
    "Level",
    "LevelOutput",
    "PredictionDriftMonitor",
    "Reason",
    "RuleConfig",
    "RuleDetector",
    "SortedWindow",
    "SplitConformal",
    "Transition",
    "VolatilityConfig",
    "VolatilityDetector",
    "apply_correction",
    "conformal_quantile",
    "conformity_scores",
    "input_health_flags",
    "labels_from_probabilities",
    "psi",
]
