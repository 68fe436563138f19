"""The two risk models with one interface: learned :class:`MRMS` and deterministic :class:`RuleRiskModel`.

``model.propose(trade, account) -> RiskDecision`` -- size (0..5 units), stop (ATR multiple), target
(reward:risk), confidence, and the tick-rounded bracket prices. Neither applies regime/uncertainty
scaling or portfolio limits: the caller does (``risk_scale`` -> ``decision.scaled``, then
``PortfolioRisk.check_entry``), so each step stays visible in a decision record.
"""

from __future__ import annotations

import math
import os

import msgspec
import numpy as np

from sage.risk.context import INPUT_DIM, INPUT_NAMES, AccountContext, TradeContext, risk_input_vector
from sage.risk.decision import MAX_UNITS, N_SIZES, REWARD_RISK_RANGE, STOP_RANGE, RiskDecision, make_decision

DEFAULT_MODEL_NAME: str = "mrms-default"
"""Shipped M-RMS weights: ``sage/assets/models/mrms-default`` (``MRMS.load("default")``)."""


class MRMS:
    """The learned Multi-agent Risk Management System: sizing, stop and target sub-agents + ensemble.

    Inference runs the numba engine of ``sage.models.mrms`` (no torch call per proposal).
    """

    source = "mrms"

    def __init__(self, net, manifest=None) -> None:
        from sage.models.mrms import MRMSEngine

        self.net = net
        self.manifest = manifest
        self.engine = MRMSEngine(net)
        self.model_version = f"{manifest.name}@{manifest.version}" if manifest is not None else "mrms-untrained"
        self._x = np.empty(INPUT_DIM, dtype=np.float32)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str] = "default") -> MRMS:
        """Load verified weights: ``"default"`` (shipped), another shipped name, or a checkpoint directory.

        Raises a ``sage.models.registry.ModelLoadError`` subclass naming the problem (missing, tampered,
        foreign, other inputs).
        """
        from sage.models.mrms import load_mrms

        name = DEFAULT_MODEL_NAME if str(name_or_path) == "default" else name_or_path
        net, manifest = load_mrms(name, input_names=INPUT_NAMES)
        return cls(net, manifest)

    @classmethod
    def from_net(cls, net, model_version: str = "mrms-untrained") -> MRMS:
        model = cls(net)
        model.model_version = model_version
        return model

    def propose(self, trade: TradeContext, account: AccountContext) -> RiskDecision:
        """Size and bracket one candidate trade (deterministic; a few microseconds)."""
        x = risk_input_vector(trade, account, out=self._x)
        probs, units, stop, rr, conf = self.engine.infer(x)
        return make_decision(
            trade,
            units=units,
            size_probabilities=tuple(probs.tolist()),
            stop_atr_multiple=stop,
            reward_risk=rr,
            confidence=conf,
            source=self.source,
            model_version=self.model_version,
        )

    def __repr__(self) -> str:
        return f"MRMS({self.model_version})"


class RuleRiskConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of the rule-based fallback (documented in docs/risk.md)."""

    risk_per_trade: float = 0.01
    """Fraction of equity risked at the stop by a full-conviction trade (default 1 %)."""
    base_stop_atr: float = 1.5
    """Stop distance in ATRs in a calm, directionless market (default 1.5)."""
    volatile_stop_add: float = 1.0
    """ATRs added to the stop per unit of VOLATILE probability (default 1.0)."""
    sideways_stop_cut: float = 0.5
    """ATRs taken off the stop per unit of SIDEWAYS probability (default 0.5)."""
    base_reward_risk: float = 1.5
    """Reward:risk with no trend information (default 1.5)."""
    trend_reward_add: float = 2.0
    """Added to reward:risk per unit of probability of the regime trending the trade's way (default 2.0)."""
    min_conviction: float = 0.5
    """Floor of the conviction factor ``|combined_signal| * (1 - combined_uncertainty) / 0.5`` (default 0.5:
    a candidate the strategy decided to take gets at least half the risk budget)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.risk_per_trade <= 0.1:
            raise ValueError(f"risk_per_trade must be in (0, 0.1], got {self.risk_per_trade}")
        if not 0.0 <= self.min_conviction <= 1.0:
            raise ValueError(f"min_conviction must be in [0, 1], got {self.min_conviction}")


class RuleRiskModel:
    """Deterministic fallback with :class:`MRMS`'s interface (used when the model is missing or unhealthy).

    * stop = ``base_stop_atr + volatile_stop_add * P(VOLATILE) - sideways_stop_cut * P(SIDEWAYS)``,
      clipped to [0.5, 3];
    * reward:risk = ``base_reward_risk + trend_reward_add * P(regime trending with the trade)``, clipped
      to [1, 5];
    * units = ``floor(risk_per_trade * equity * conviction / money at risk per unit)``, capped at 5,
      with conviction = ``clip(|combined_signal| * (1 - combined_uncertainty) / 0.5, min_conviction, 1)``;
    * size distribution: all mass on the chosen units; confidence = ``|combined_signal| * (1 -
      combined_uncertainty)``.
    """

    source = "rule"

    def __init__(self, config: RuleRiskConfig | None = None) -> None:
        self.config = config or RuleRiskConfig()
        self.model_version = "rule@1"

    def propose(self, trade: TradeContext, account: AccountContext) -> RiskDecision:
        risk_input_vector(trade, account)  # the same validation as MRMS (non-finite -> RiskInputError)
        c = self.config
        p_bull, p_bear, p_side, p_vol = trade.regime_probabilities
        stop = c.base_stop_atr + c.volatile_stop_add * p_vol - c.sideways_stop_cut * p_side
        stop = min(STOP_RANGE[1], max(STOP_RANGE[0], stop))
        aligned = p_bull if trade.side > 0 else p_bear
        rr = min(REWARD_RISK_RANGE[1], max(REWARD_RISK_RANGE[0], c.base_reward_risk + c.trend_reward_add * aligned))
        strength = abs(trade.combined_signal) * (1.0 - min(1.0, max(0.0, trade.combined_uncertainty)))
        conviction = min(1.0, max(c.min_conviction, strength / 0.5))
        unit_risk = trade.contract_size * trade.point_value * stop * trade.atr
        units = math.floor(c.risk_per_trade * account.equity * conviction / unit_risk + 1e-9)
        units = min(MAX_UNITS, max(0, units))
        probs = [0.0] * N_SIZES
        probs[units] = 1.0
        return make_decision(
            trade,
            units=units,
            size_probabilities=tuple(probs),
            stop_atr_multiple=stop,
            reward_risk=rr,
            confidence=strength,
            source=self.source,
            model_version=self.model_version,
        )

    def __repr__(self) -> str:
        return f"RuleRiskModel({self.config})"
