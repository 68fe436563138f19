"""sage.strategy: the SAGE combiner, decision assembly and explanations (pure cores); see docs/combiner.md."""

from sage.strategy.combiner import (
    DEFAULT_AGENTS,
    DEFAULT_HORIZONS,
    DEFAULT_REGIME_MULTIPLIERS,
    CombinedResult,
    CombinerConfig,
    CombinerInputError,
    CombinerStateError,
    SageCombiner,
    agent_arrays,
    fit_regime_multipliers,
    realised_agent_pnl,
)
from sage.strategy.decision import DETAIL_KEYS, BarInfo, Decision, RegimeInfo, build_decision, details_to_json
from sage.strategy.explanation import explain

__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_HORIZONS",
    "DEFAULT_REGIME_MULTIPLIERS",
    "DETAIL_KEYS",
    "BarInfo",
    "CombinedResult",
    "CombinerConfig",
    "CombinerInputError",
    "CombinerStateError",
    "Decision",
    "RegimeInfo",
    "SageCombiner",
    "agent_arrays",
    "build_decision",
    "details_to_json",
    "explain",
    "fit_regime_multipliers",
    "realised_agent_pnl",
]
