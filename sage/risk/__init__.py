"""sage.risk: M-RMS (learned sizing, stop and target), its rule-based fallback, portfolio limits, kill switch.

::

    from sage.risk import MRMS, RuleRiskModel, TradeContext, AccountContext, risk_scale
    model = MRMS.load("default")                       # shipped weights, verified (or RuleRiskModel())
    d = model.propose(trade, account)                  # RiskDecision: units 0..5, stop/target prices, risk
    d = d.scaled(risk_scale(level, uncertainty), point_value=trade.point_value)
    check = portfolio_risk.check_entry(iid, d.quantity, d.risk_amount, notional, equity, side=d.side)
    if kill_switch.allows_entry() and check.allowed: ...

See ``docs/risk.md``.
"""

from sage.risk.context import (
    ACCOUNT_FEATURES,
    INPUT_DIM,
    INPUT_NAMES,
    TRADE_FEATURES,
    AccountContext,
    RiskInputError,
    TradeContext,
    risk_input_matrix,
    risk_input_vector,
)
from sage.risk.correlation import CorrelationConfig, EWMACorrelation
from sage.risk.decision import RiskDecision, bracket_prices, make_decision
from sage.risk.kelly import fractional_kelly, kelly_continuous, kelly_fraction, kelly_from_outcomes
from sage.risk.killswitch import RESET_TOPIC, KillSwitch, KillSwitchConfig, find_risk_engine
from sage.risk.models import MRMS, RuleRiskConfig, RuleRiskModel
from sage.risk.portfolio import EntryCheck, PortfolioRisk, PortfolioRiskConfig
from sage.risk.scaling import RiskScaleConfig, risk_scale
from sage.risk.var import VaRResult, historical_var, monte_carlo_var, parametric_var, parametric_var_portfolio

__all__ = [
    "ACCOUNT_FEATURES",
    "INPUT_DIM",
    "INPUT_NAMES",
    "MRMS",
    "RESET_TOPIC",
    "TRADE_FEATURES",
    "AccountContext",
    "CorrelationConfig",
    "EWMACorrelation",
    "EntryCheck",
    "KillSwitch",
    "KillSwitchConfig",
    "PortfolioRisk",
    "PortfolioRiskConfig",
    "RiskDecision",
    "RiskInputError",
    "RiskScaleConfig",
    "RuleRiskConfig",
    "RuleRiskModel",
    "TradeContext",
    "VaRResult",
    "bracket_prices",
    "find_risk_engine",
    "fractional_kelly",
    "historical_var",
    "kelly_continuous",
    "kelly_fraction",
    "kelly_from_outcomes",
    "make_decision",
    "monte_carlo_var",
    "parametric_var",
    "parametric_var_portfolio",
    "risk_input_matrix",
    "risk_input_vector",
    "risk_scale",
]
