"""Explanation sentences: exact text for representative decisions, and always true to the details."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.strategy import DETAIL_KEYS, explain
from sage.strategy.explanation import format_quantity


def agent(name, direction, strength, weight):
    return {
        "agent": name,
        "timeframe": "5m",
        "direction": direction,
        "strength": strength,
        "probabilities": [0.2] * 5,
        "value": 0.0,
        "weight": weight,
        "performance_weight": 1.0,
        "regime_multiplier": 1.0,
        "uncertainty_factor": 1.0,
    }


def details(
    agents,
    signal,
    uncertainty=0.18,
    threshold=0.3,
    passed=True,
    label=0,
    level=1,
    probs=(0.71, 0.09, 0.1, 0.1),
    risk=None,
    portfolio=None,
    kill=None,
    algorithm=None,
):
    d = {
        "bar": {"bar_type": "ESU3.XCME-5-MINUTE-LAST-INTERNAL", "ts": 0, "close": 4500.0, "atr": 3.0},
        "regime": {
            "label": label,
            "level": level,
            "probabilities": list(probs),
            "uncertainty": 0.004,
            "confidence": max(probs),
            "ts": 0,
        },
        "agents": agents,
        "combined": {
            "signal": signal,
            "uncertainty": uncertainty,
            "disagreement": 0.05,
            "threshold": threshold,
            "passed": passed,
        },
        "risk": risk or dict.fromkeys(DETAIL_KEYS["risk"]),
        "portfolio": portfolio or {"allowed": None, "scale": None, "reasons": None},
        "kill_switch": kill or {"active": False, "reason": None},
        "execution": {"algorithm": algorithm, "params": {} if algorithm else None},
        "attributions": [],
    }
    assert all(list(d[k]) == list(DETAIL_KEYS[k]) for k in ("bar", "regime", "combined", "risk", "portfolio"))
    return d


RISK = {
    "side": 1,
    "units": 2,
    "quantity": 2.0,
    "stop_price": 4495.5,
    "target_price": 4509.0,
    "risk_amount": 450.0,
    "reward_risk": 2.0,
    "stop_atr_multiple": 1.5,
    "confidence": 0.6,
    "source": "mrms",
    "scale": 1.0,
}

TREND_UP = [
    agent("fvg", 0, 0.05, 0.15),
    agent("momentum", 2, 0.9, 0.3),
    agent("entry", 0, 0.1, 0.15),
    agent("trend", 2, 0.8, 0.3),
    agent("mean_reversion", 0, -0.05, 0.1),
]


def say(action, reason, d, quantity=0.0, position=0.0, max_uncertainty=None):
    return explain(
        action=action,
        reason=reason,
        quantity=quantity,
        position=position,
        instrument_id="ESU3.XCME",
        details=d,
        max_uncertainty=max_uncertainty,
    )


def test_buy_sentence():
    d = details(
        TREND_UP, 0.62, risk=RISK, portfolio={"allowed": True, "scale": 1.0, "reasons": []}, algorithm="TWAP"
    )
    assert say("BUY", "entry", d, quantity=2.0) == (
        "BUY 2 ESU3.XCME: BULL regime (L1, p=0.71); momentum and trend agree (+0.62 combined, "
        "uncertainty 0.18); M-RMS sized 2 units, stop 1.5 ATR, target 2.0R; TWAP."
    )


def test_sell_sentence_with_dissent_rule_sizer_and_portfolio_cut():
    agents = [
        agent("fvg", 1, 0.4, 0.1),
        agent("trend", -2, -0.9, 0.5),
        agent("mean_reversion", -1, -0.5, 0.4),
    ]
    risk = dict(RISK, side=-1, units=3, quantity=3.0, source="rule", stop_atr_multiple=2.0, reward_risk=1.5)
    d = details(
        agents,
        -0.61,
        uncertainty=0.42,
        label=1,
        level=3,
        probs=(0.1, 0.55, 0.2, 0.15),
        risk=risk,
        portfolio={"allowed": True, "scale": 0.5, "reasons": ["correlation_shock"]},
        algorithm="VWAP",
    )
    assert say("SELL", "entry", d, quantity=1.5) == (
        "SELL 1.5 ESU3.XCME: BEAR regime (L3, p=0.55); trend and mean_reversion agree, fvg dissents "
        "(-0.61 combined, uncertainty 0.42); rule sizer sized 3 units, stop 2.0 ATR, target 1.5R "
        "(portfolio cut to 1.5: correlation_shock); VWAP."
    )


def test_no_trade_below_consensus_with_disagreement():
    agents = [
        agent("fvg", -2, -0.7, 0.3),
        agent("momentum", 0, 0.0, 0.1),
        agent("entry", 0, 0.0, 0.1),
        agent("trend", 2, 0.8, 0.4),
        agent("mean_reversion", 0, 0.0, 0.1),
    ]
    d = details(agents, 0.12, passed=False)
    assert say("NO_TRADE", "below_threshold", d) == (
        "NO_TRADE: combined +0.12 below consensus 0.30 (agents disagree: trend buy, fvg sell)."
    )
    assert say("HOLD", "below_threshold", d, position=-2.0) == (
        "HOLD short 2 ESU3.XCME: combined +0.12 below consensus 0.30 (agents disagree: trend buy, fvg sell); "
        "position kept."
    )


def test_no_trade_weak_or_silent_agents():
    weak = details(
        [agent("momentum", 1, 0.3, 0.5), agent("fvg", 1, 0.2, 0.3), agent("trend", 0, 0.0, 0.2)],
        0.21,
        passed=False,
    )
    assert say("NO_TRADE", "below_threshold", weak) == (
        "NO_TRADE: combined +0.21 below consensus 0.30 (weak buy from momentum and fvg)."
    )
    silent = details([agent("momentum", 0, 0.01, 0.5), agent("trend", 0, -0.02, 0.5)], -0.005, passed=False)
    assert say("NO_TRADE", "below_threshold", silent) == (
        "NO_TRADE: combined -0.01 below consensus 0.30 (all agents hold)."
    )


def test_other_no_trade_reasons():
    d = details(TREND_UP, 0.55, uncertainty=1.12, label=3, level=4, probs=(0.2, 0.2, 0.22, 0.38))
    assert say("NO_TRADE", "uncertainty", d, max_uncertainty=1.0) == (
        "NO_TRADE: uncertainty 1.12 above limit 1.00 at combined +0.55; VOLATILE regime (L4, p=0.38)."
    )
    assert say("NO_TRADE", "no_risk", d) == "NO_TRADE: BUY signal +0.55 but no risk proposal."
    zero = details(TREND_UP, -0.55, risk=dict(RISK, units=0, quantity=0.0, confidence=0.21))
    assert (
        say("NO_TRADE", "zero_size", zero)
        == "NO_TRADE: SELL signal -0.55 but M-RMS sized 0 units (confidence 0.21)."
    )
    blocked = details(
        TREND_UP,
        0.55,
        risk=RISK,
        portfolio={"allowed": False, "scale": 0.0, "reasons": ["var_limit", "daily_loss"]},
    )
    assert say("NO_TRADE", "portfolio", blocked) == (
        "NO_TRADE: BUY signal +0.55 blocked by portfolio risk (var_limit, daily_loss)."
    )
    kill = details(TREND_UP, 0.55, kill={"active": True, "reason": "max drawdown 5.2% > 5.0%"})
    assert say("NO_TRADE", "kill_switch", kill) == "NO_TRADE: kill switch active (max drawdown 5.2% > 5.0%)."
    assert say("CLOSE", "kill_switch", kill, quantity=2.0, position=2.0) == (
        "CLOSE long 2 ESU3.XCME: kill switch active (max drawdown 5.2% > 5.0%)."
    )
    assert say("NO_TRADE", "warming_up", details([], None, passed=None)) == "NO_TRADE: warming up."


def test_hold_and_close_sentences():
    d = details(TREND_UP, 0.45)
    assert say("HOLD", "in_position", d, position=2.0) == (
        "HOLD long 2 ESU3.XCME: combined +0.45 agrees with the position; BULL regime (L1, p=0.71)."
    )
    assert say("HOLD", "order_pending", d) == "HOLD: order in progress."
    against = details(
        [
            agent("trend", -2, -0.8, 0.5),
            agent("mean_reversion", -1, -0.4, 0.3),
            agent("momentum", 0, 0.0, 0.2),
        ],
        -0.51,
    )
    assert say("CLOSE", "against_position", against, quantity=2.0, position=2.0) == (
        "CLOSE long 2 ESU3.XCME: combined -0.51 against the position (trend and mean_reversion agree)."
    )


def test_format_quantity():
    assert [format_quantity(q) for q in (2.0, 0.5, 1234567.0, 0.0001)] == ["2", "0.5", "1234567", "0.0001"]


def test_unknown_reason_raises():
    with pytest.raises(ValueError, match="no explanation"):
        say("NO_TRADE", "because", details(TREND_UP, 0.5))


@settings(max_examples=200, deadline=None)
@given(
    signal=st.floats(-1, 1),
    uncertainty=st.floats(0, 2),
    threshold=st.floats(0, 1),
    units=st.integers(1, 5),
    stop=st.floats(0.5, 3.0),
    rr=st.floats(1.0, 5.0),
    p=st.floats(0.25, 1.0),
)
def test_sentence_numbers_are_the_recorded_numbers(signal, uncertainty, threshold, units, stop, rr, p):
    probs = (p, (1 - p) / 3, (1 - p) / 3, (1 - p) / 3)
    side = 1 if signal >= 0 else -1
    risk = dict(RISK, side=side, units=units, quantity=float(units), stop_atr_multiple=stop, reward_risk=rr)
    d = details(
        TREND_UP,
        signal,
        uncertainty=uncertainty,
        threshold=threshold,
        probs=probs,
        risk=risk,
        portfolio={"allowed": True, "scale": 1.0, "reasons": []},
        algorithm="TWAP",
    )
    action = "BUY" if side > 0 else "SELL"
    text = say(action, "entry", d, quantity=float(units))
    m = re.fullmatch(
        rf"{action} (\d+) ESU3\.XCME: BULL regime \(L1, p=([\d.]+)\); .* \(([+-][\d.]+) combined, uncertainty "
        r"([\d.]+)\); M-RMS sized (\d) units?, stop ([\d.]+) ATR, target ([\d.]+)R; TWAP\.",
        text,
    )
    assert m, text
    q, pp, s, u, n, st_, r = m.groups()
    assert int(q) == units and int(n) == units
    assert float(pp) == pytest.approx(p, abs=0.005 + 1e-12)
    assert float(s) == pytest.approx(signal, abs=0.005 + 1e-12)
    assert float(u) == pytest.approx(uncertainty, abs=0.005 + 1e-12)
    assert float(st_) == pytest.approx(stop, abs=0.05 + 1e-12)
    assert float(r) == pytest.approx(rr, abs=0.05 + 1e-12)
    below = say("NO_TRADE", "below_threshold", dict(d, combined=dict(d["combined"], passed=False)))
    m2 = re.match(r"NO_TRADE: combined ([+-][\d.]+) below consensus ([\d.]+) \(", below)
    assert m2 and float(m2.group(1)) == pytest.approx(signal, abs=0.005 + 1e-12)
    assert float(m2.group(2)) == pytest.approx(threshold, abs=0.005 + 1e-12)
