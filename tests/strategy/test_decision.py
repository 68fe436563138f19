"""Decision assembly: the action rules, and the details JSON against the DecisionRecord contract for
every action (every key present at every level, in contract order, finite floats or null)."""

from __future__ import annotations

import json
import math
import re

import pytest

from sage.data.types import DecisionRecord
from sage.execution.selector import Selection
from sage.strategy import (
    DEFAULT_AGENTS,
    DETAIL_KEYS,
    BarInfo,
    CombinerConfig,
    RegimeInfo,
    SageCombiner,
    build_decision,
)

#: The contract (notes/run_dir.md), verbatim: the reference the details are checked against.
CONTRACT = json.loads(
    """
{"bar": {"bar_type": "...", "ts": 0, "close": 0.0, "atr": 0.0},
 "regime": {"label": 0, "level": 1, "probabilities": [0.25, 0.25, 0.25, 0.25], "uncertainty": 0.0,
            "confidence": 0.0, "ts": 0},
 "agents": [{"agent": "fvg", "timeframe": "5m", "direction": 1, "strength": 0.4,
             "probabilities": [0.2, 0.2, 0.2, 0.2, 0.2], "value": 0.1, "weight": 0.3,
             "performance_weight": 1.0, "regime_multiplier": 1.0, "uncertainty_factor": 1.0}],
 "combined": {"signal": 0.0, "uncertainty": 0.0, "disagreement": 0.0, "threshold": 0.3, "passed": false},
 "risk": {"side": 1, "units": 2, "quantity": 2.0, "stop_price": 0.0, "target_price": 0.0, "risk_amount": 0.0,
          "reward_risk": 2.0, "stop_atr_multiple": 1.5, "confidence": 0.6, "source": "mrms", "scale": 1.0},
 "portfolio": {"allowed": true, "scale": 1.0, "reasons": []},
 "kill_switch": {"active": false, "reason": null},
 "execution": {"algorithm": "TWAP", "params": {}},
 "attributions": [{"agent": "fvg", "feature": "fvg_bull_distance", "lag": 0, "score": 0.12}]}
"""
)

BAR = BarInfo("ESU3.XCME-5-MINUTE-LAST-INTERNAL", 1_700_000_000_000_000_000, 4500.25, 3.5)
REGIME = RegimeInfo(0, 1, (0.71, 0.09, 0.1, 0.1), 0.004, 0.71, 1_700_000_000_000_000_000)
CERTAIN_BUY = (0.0, 0.0, 0.05, 0.15, 0.8)
CERTAIN_SELL = tuple(reversed(CERTAIN_BUY))
HOLDING = (0.05, 0.1, 0.7, 0.1, 0.05)
RISK = {
    "side": 1,
    "units": 2,
    "quantity": 2.0,
    "stop_price": 4495.0,
    "target_price": 4510.75,
    "risk_amount": 525.0,
    "reward_risk": 2.0,
    "stop_atr_multiple": 1.5,
    "confidence": 0.64,
    "source": "mrms",
    "scale": 1.0,
}
PORTFOLIO_OK = {"allowed": True, "scale": 1.0, "reasons": []}
KILL_OFF = {"active": False, "reason": None}
TWAP = {"algorithm": "TWAP", "params": {"horizon_secs": 300.0, "interval_secs": 60.0}}


def agent_outputs(directions, probs):
    out = []
    for name, d, p in zip(DEFAULT_AGENTS, directions, probs):
        strength = sum((k - 2) * q for k, q in enumerate(p)) / 2
        out.append(
            {
                "agent": name,
                "timeframe": "5m" if name in ("fvg", "momentum", "entry") else "30m",
                "direction": d,
                "strength": strength,
                "probabilities": p,
                "value": 0.1,
            }
        )
    return out


def combined_for(outputs, level=1):
    comb = SageCombiner(CombinerConfig())
    return comb.combine(
        [o["agent"] for o in outputs],
        [o["direction"] for o in outputs],
        [o["strength"] for o in outputs],
        [o["probabilities"] for o in outputs],
        regime_label=REGIME.label,
        regime_probabilities=REGIME.probabilities,
        regime_level=level,
        regime_uncertainty=REGIME.uncertainty,
    )


BULLISH = agent_outputs((2, 2, 1, 2, 0), (CERTAIN_BUY,) * 4 + (HOLDING,))
BEARISH = agent_outputs((-2, -2, -1, -2, 0), (CERTAIN_SELL,) * 4 + (HOLDING,))
MIXED = agent_outputs((-2, 0, 0, 2, 0), (CERTAIN_SELL, HOLDING, HOLDING, CERTAIN_BUY, HOLDING))


def build(outputs=BULLISH, **kw):
    args = {
        "instrument_id": "ESU3.XCME",
        "bar": BAR,
        "regime": REGIME,
        "agents": outputs,
        "risk": None,
        "portfolio": None,
        "kill_switch": KILL_OFF,
        "execution": None,
        "attributions": [{"agent": "fvg", "feature": "fvg_bull_distance", "lag": 0, "score": 0.12}],
    }
    args.update(kw)
    if "combined" not in args:
        args["combined"] = combined_for(outputs)
    return build_decision(**args)


def assert_contract_shape(details):
    """Every key of the contract at every level, in order, and nothing else; JSON-safe values."""
    assert list(details) == list(CONTRACT)
    for section, value in CONTRACT.items():
        if isinstance(value, list):
            assert isinstance(details[section], list)
            for item in details[section]:
                assert list(item) == list(value[0]), section
        else:
            assert list(details[section]) == list(value), section
        assert tuple(DETAIL_KEYS[section]) == tuple(value[0] if isinstance(value, list) else value)


def _no_constants(name):
    raise AssertionError(f"non-finite constant {name} in details JSON")


def assert_json_faithful(decision):
    """The JSON is the details, compact (no whitespace outside strings), with finite numbers only."""
    text = decision.details_json
    assert json.loads(text, parse_constant=_no_constants) == decision.details
    assert not re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', '""', text))


# -- every action --------------------------------------------------------------------------------------


def test_buy_entry():
    d = build(risk=RISK, portfolio=PORTFOLIO_OK, execution=TWAP)
    assert (d.action, d.reason, d.side, d.quantity) == ("BUY", "entry", 1, 2.0)
    assert_contract_shape(d.details)
    assert_json_faithful(d)
    assert d.details["risk"] == RISK
    assert d.details["execution"] == TWAP
    assert d.details["combined"]["passed"] is True
    assert d.details["agents"][0]["weight"] == pytest.approx(combined_for(BULLISH).weights[0])


def test_sell_entry_with_real_selection_and_portfolio_cut():
    selection = Selection(
        algorithm_id="VWAP",
        params={"horizon_secs": 600.0, "max_participation": 0.25},
        horizon_secs=600.0,
        order_type="MARKET",
        limit_price=None,
        expected_cost_bps=1.2,
        risk_bps=3.4,
        score_bps=2.9,
        per_algorithm_costs={"VWAP": 2.9},
        per_algorithm_horizons={"VWAP": 600.0},
    )
    risk = dict(RISK, side=-1, units=4, quantity=4.0, stop_price=4505.5, target_price=4489.25)
    cut = {"allowed": True, "scale": 0.5, "quantity": 2.0, "reasons": ["var_limit"]}
    d = build(BEARISH, risk=risk, portfolio=cut, execution=selection)
    assert (d.action, d.side, d.quantity) == ("SELL", -1, 2.0)
    assert d.details["portfolio"] == {"allowed": True, "scale": 0.5, "reasons": ["var_limit"]}
    assert d.details["execution"] == {"algorithm": "VWAP", "params": selection.params}
    assert_contract_shape(d.details)
    assert_json_faithful(d)
    # without an explicit quantity the portfolio scale applies
    d2 = build(BEARISH, risk=risk, portfolio={"allowed": True, "scale": 0.25, "reasons": ["kelly_cap"]})
    assert d2.quantity == 1.0


def test_close_against_position_and_on_kill_switch():
    d = build(BEARISH, position=3.0)
    assert (d.action, d.reason, d.side, d.quantity) == ("CLOSE", "against_position", -1, 3.0)
    kept = build(BEARISH, position=3.0, exit_on_reversal=False)
    assert (kept.action, kept.reason, kept.side, kept.quantity) == ("HOLD", "against_position", 0, 0.0)
    assert kept.explanation.endswith("; exit on reversal off.")
    assert_contract_shape(d.details)
    assert_json_faithful(d)
    k = build(BULLISH, position=-1.0, kill_switch={"active": True, "reason": "daily loss 2.1% > 2.0%"})
    assert (k.action, k.reason, k.side, k.quantity) == ("CLOSE", "kill_switch", 1, 1.0)
    assert k.details["kill_switch"] == {"active": True, "reason": "daily loss 2.1% > 2.0%"}
    flat = build(BULLISH, kill_switch={"active": True, "reason": "max drawdown"}, risk=RISK)
    assert (flat.action, flat.reason, flat.quantity) == ("NO_TRADE", "kill_switch", 0.0)


def test_hold():
    same = build(BULLISH, position=2.0)
    assert (same.action, same.reason, same.side, same.quantity) == ("HOLD", "in_position", 0, 0.0)
    weak = build(MIXED, position=-2.0)
    assert (weak.action, weak.reason) == ("HOLD", "below_threshold")
    pending = build(BULLISH, order_pending=True)
    assert (pending.action, pending.reason) == ("HOLD", "order_pending")
    for d in (same, weak, pending):
        assert_contract_shape(d.details)
        assert_json_faithful(d)


def test_no_trade_variants():
    below = build(MIXED)
    assert (below.action, below.reason) == ("NO_TRADE", "below_threshold")
    assert below.details["combined"]["passed"] is False
    assert below.details["risk"] == dict.fromkeys(DETAIL_KEYS["risk"])  # stage did not run: all null
    assert below.details["portfolio"] == {"allowed": None, "scale": None, "reasons": None}
    assert below.details["execution"] == {"algorithm": None, "params": None}
    assert build(BULLISH).reason == "no_risk"
    assert build(BULLISH, risk=dict(RISK, units=0, quantity=0.0)).reason == "zero_size"
    blocked = build(
        BULLISH, risk=RISK, portfolio={"allowed": False, "scale": 0.0, "reasons": ["gross_exposure"]}
    )
    assert (blocked.action, blocked.reason) == ("NO_TRADE", "portfolio")
    warm = build(BULLISH, combined=None, ready=False)
    assert (warm.action, warm.reason) == ("NO_TRADE", "warming_up")
    assert warm.details["combined"] == dict.fromkeys(DETAIL_KEYS["combined"])
    assert all(a["weight"] is None for a in warm.details["agents"])
    assert math.isnan(warm.combined_signal)
    for d in (below, blocked, warm):
        assert d.action == "NO_TRADE" and d.side == 0 and d.quantity == 0.0
        assert_contract_shape(d.details)
        assert_json_faithful(d)


def test_uncertainty_gate_blocks():
    comb = SageCombiner(CombinerConfig(max_uncertainty=0.2))
    o = BULLISH
    combined = comb.combine(
        [a["agent"] for a in o],
        [a["direction"] for a in o],
        [a["strength"] for a in o],
        [a["probabilities"] for a in o],
        regime_label=0,
        regime_probabilities=REGIME.probabilities,
        regime_level=4,
    )
    assert combined.blocked_by == "uncertainty"
    d = build(o, combined=combined, risk=RISK, max_uncertainty=0.2)
    assert (d.action, d.reason) == ("NO_TRADE", "uncertainty")


# -- JSON details ------------------------------------------------------------------------------------


def test_non_finite_floats_become_null_and_output_is_deterministic():
    regime = RegimeInfo(2, 2, (0.2, 0.2, 0.4, 0.2), math.nan, 0.4, 5)
    bar = BarInfo("X", 7, 100.0, math.inf)
    risk = dict(RISK, risk_amount=math.nan)
    a = build(BULLISH, regime=regime, bar=bar, risk=risk, portfolio=PORTFOLIO_OK, execution=TWAP)
    b = build(BULLISH, regime=regime, bar=bar, risk=risk, portfolio=PORTFOLIO_OK, execution=TWAP)
    assert a.details_json == b.details_json and a.explanation == b.explanation
    assert a.details["regime"]["uncertainty"] is None and a.details["bar"]["atr"] is None
    assert a.details["risk"]["risk_amount"] is None
    assert_json_faithful(a)


def test_numpy_values_and_objects_are_read():
    import numpy as np

    class Output:  # the attribute names of sage.agents.AgentOutput
        def __init__(self, **kw):
            self.__dict__.update(kw)

    outs = [
        Output(**{k: (np.float32(v) if isinstance(v, float) else v) for k, v in o.items()}) for o in BULLISH
    ]
    for o in outs:
        o.probabilities = np.asarray(o.probabilities, dtype=np.float32)
        o.direction = np.int64(o.direction)
    params = {"horizon_secs": np.float64(300.0), "slices": np.int64(5), "bad": np.float64("nan")}
    d = build(
        outs,
        risk=RISK,
        portfolio=PORTFOLIO_OK,
        execution={"algorithm": "TWAP", "params": params},
        combined=combined_for(BULLISH),
    )
    assert d.details["execution"]["params"] == {"horizon_secs": 300.0, "slices": 5, "bad": None}
    assert isinstance(d.details["agents"][0]["direction"], int)
    assert_json_faithful(d)


def test_real_regime_data_and_decision_record():
    from sage.data.types import RegimeData

    rd = RegimeData(
        "ESU3.XCME",
        label=0,
        probabilities=(0.71, 0.09, 0.1, 0.1),
        vector=(0.0,) * 8,
        confidence=0.71,
        uncertainty=0.004,
        fallback_level=1,
        model_version="t",
        ts_event=11,
        ts_init=12,
    )
    d = build(regime=rd, risk=RISK, portfolio=PORTFOLIO_OK, execution=TWAP)
    assert d.details["regime"] == {
        "label": 0,
        "level": 1,
        "probabilities": [0.71, 0.09, 0.1, 0.1],
        "uncertainty": 0.004,
        "confidence": 0.71,
        "ts": 11,
    }
    assert RegimeInfo.from_regime_data(rd).level == 1
    rec = d.to_record("ESU3.XCME", decision_id="S-1", ts_event=BAR.ts, ts_init=BAR.ts)
    assert isinstance(rec, DecisionRecord)
    assert rec.action == "BUY" and rec.quantity == 2.0 and rec.details == d.details
    assert rec.explanation == d.explanation


def test_inconsistent_inputs_raise():
    with pytest.raises(ValueError, match="do not match"):
        build(BULLISH, combined=combined_for(BEARISH[:3]))
    with pytest.raises(ValueError, match="contradicts"):
        build(BULLISH, risk=dict(RISK, side=-1))
    with pytest.raises(ValueError, match="position"):
        build(BULLISH, position=math.nan)


def test_real_risk_decision_object_is_read_by_attribute():
    risk_mod = pytest.importorskip("sage.risk.decision")  # built by the risk helper (same contract)
    risk = risk_mod.RiskDecision(
        side=-1,
        units=3,
        quantity=3.0,
        size_probabilities=(0.0, 0.1, 0.2, 0.6, 0.1, 0.0),
        stop_atr_multiple=1.5,
        reward_risk=2.0,
        entry_price=4500.0,
        stop_price=4505.25,
        target_price=4489.5,
        risk_amount=787.5,
        confidence=0.6,
        source="mrms",
        model_version="t",
        scale=0.75,
    )
    d = build(BEARISH, risk=risk, portfolio=PORTFOLIO_OK, execution=TWAP)
    assert (d.action, d.quantity) == ("SELL", 3.0)
    assert d.details["risk"] == {
        "side": -1,
        "units": 3,
        "quantity": 3.0,
        "stop_price": 4505.25,
        "target_price": 4489.5,
        "risk_amount": 787.5,
        "reward_risk": 2.0,
        "stop_atr_multiple": 1.5,
        "confidence": 0.6,
        "source": "mrms",
        "scale": 0.75,
    }
    assert "M-RMS sized 3 units, stop 1.5 ATR, target 2.0R" in d.explanation
    assert_json_faithful(d)
