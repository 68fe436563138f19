"""Realistic sage records (decisions, agent signals, risk proposals) over real bars, for report tests.

SageStrategy is not in the tree yet, so the tests write what it will publish: one DecisionRecord every
``every`` bars with the full ``details_json`` of the run-directory contract, built from the bar's real
close and ATR, the regime the RegimeActor published at that bar, four agents whose weights depend on the
regime, and a risk proposal with ATR-based stop and target. The records go through the real sage types
(their validation), then ``to_dict`` like ``run_backtest`` collects them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from sage.data.types import AgentSignal, DecisionRecord, RiskProposal

AGENTS = (("fvg", "5m"), ("momentum", "5m"), ("entry", "5m"), ("strategic", "30m"))
# Regime-dependent base weights (bull, bear, sideways, volatile) per agent, like the SAGE combiner's.
BASE_WEIGHTS = np.array(
    [[0.3, 0.3, 0.2, 0.2], [0.2, 0.2, 0.35, 0.25], [0.2, 0.3, 0.2, 0.3], [0.3, 0.2, 0.25, 0.25]]
)
THRESHOLD = 0.3


def synthetic_records(
    bars: pd.DataFrame, regimes: pd.DataFrame, instrument: str, bar_type: str, every: int = 30, seed: int = 3
) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = bars.index.asi8
    close = bars["close"].to_numpy()
    tr = np.maximum(bars["high"] - bars["low"], 0.25).to_numpy()
    atr = pd.Series(tr).rolling(14, min_periods=1).mean().to_numpy()
    reg_ts = regimes["ts_event"].to_numpy(np.int64)
    decisions, signals, proposals = [], [], []
    for k, i in enumerate(range(every, len(ts), every)):
        t = int(ts[i])
        j = max(int(np.searchsorted(reg_ts, t, side="right")) - 1, 0)
        reg = regimes.iloc[j]
        label, level = int(reg["label"]), int(reg["fallback_level"])
        weights = BASE_WEIGHTS[:, label] * rng.uniform(0.8, 1.2, 4)
        weights /= weights.sum()
        agents, combined = [], 0.0
        for (name, tf), w in zip(AGENTS, weights):
            probs = rng.dirichlet(np.ones(5))
            direction = int(np.argmax(probs)) - 2
            strength = float(probs.max())
            combined += w * direction / 2 * strength
            agents.append(
                {
                    "agent": name,
                    "timeframe": tf,
                    "direction": direction,
                    "strength": strength,
                    "probabilities": probs.tolist(),
                    "value": float(rng.normal(0, 0.2)),
                    "weight": float(w),
                    "performance_weight": 1.0,
                    "regime_multiplier": float(BASE_WEIGHTS[AGENTS.index((name, tf)), label] * 4),
                    "uncertainty_factor": 1.0,
                }
            )
            signals.append(
                AgentSignal(
                    instrument,
                    agent=name,
                    timeframe=tf,
                    direction=direction,
                    strength=strength,
                    probabilities=probs,
                    value=agents[-1]["value"],
                    model_version="test@1",
                    ts_event=t,
                    ts_init=t,
                ).to_dict()
            )
        combined = float(np.clip(combined * 3, -1, 1))
        passed = abs(combined) >= THRESHOLD
        side = (1 if combined > 0 else -1) if passed else 0
        action = {1: "BUY", -1: "SELL", 0: "NO_TRADE"}[side]
        stop = close[i] - side * 1.5 * atr[i] if side else float("nan")
        target = close[i] + side * 3.0 * atr[i] if side else float("nan")
        units = 2 if side else 0
        risk = None
        if side:
            risk = {
                "side": side,
                "units": units,
                "quantity": float(units),
                "stop_price": stop,
                "target_price": target,
                "risk_amount": 1.5 * atr[i] * units * 50,
                "reward_risk": 2.0,
                "stop_atr_multiple": 1.5,
                "confidence": 0.6,
                "source": "mrms",
                "scale": 1.0,
            }
            proposals.append(
                RiskProposal(
                    instrument,
                    side=side,
                    quantity=float(units),
                    size_probabilities=[0, 0.1, 0.6, 0.2, 0.1, 0],
                    stop_atr_multiple=1.5,
                    reward_risk=2.0,
                    entry_price=close[i],
                    stop_price=stop,
                    target_price=target,
                    risk_amount=risk["risk_amount"],
                    confidence=0.6,
                    source="mrms",
                    model_version="test@1",
                    ts_event=t,
                    ts_init=t,
                ).to_dict()
            )
        details = {
            "bar": {"bar_type": bar_type, "ts": t, "close": float(close[i]), "atr": float(atr[i])},
            "regime": {
                "label": label,
                "level": level,
                "probabilities": list(reg["probabilities"]),
                "uncertainty": None if pd.isna(reg["uncertainty"]) else float(reg["uncertainty"]),
                "confidence": float(reg["confidence"]),
                "ts": int(reg["ts_event"]),
            },
            "agents": agents,
            "combined": {
                "signal": combined,
                "uncertainty": 0.1,
                "disagreement": float(np.std([a["direction"] for a in agents]) / 2),
                "threshold": THRESHOLD,
                "passed": passed,
            },
            "risk": risk,
            "portfolio": {"allowed": True, "scale": 1.0, "reasons": []},
            "kill_switch": {"active": False, "reason": None},
            "execution": {"algorithm": "TWAP", "params": {"horizon_secs": 300}} if side else None,
            "attributions": [
                {"agent": "fvg", "feature": "fvg_bull_distance", "lag": 0, "score": 0.12},
                {"agent": "momentum", "feature": "rsi_14", "lag": 1, "score": -0.31},
            ],
        }
        explanation = (
            f"{action} because the combined signal {combined:+.2f} "
            f"{'crossed' if passed else 'stayed inside'} the ±{THRESHOLD} threshold in regime {label}."
        )
        decisions.append(
            DecisionRecord(
                instrument,
                decision_id=f"D-{k:05d}",
                action=action,
                regime_label=label,
                regime_level=level,
                combined_signal=combined,
                combined_uncertainty=0.1,
                quantity=float(units),
                algorithm="TWAP" if side else "",
                ts_event=t,
                ts_init=t,
                explanation=explanation,
                details_json=json.dumps(details),
            ).to_dict()
        )
    return {
        "DecisionRecord": pd.DataFrame(decisions),
        "AgentSignal": pd.DataFrame(signals),
        "RiskProposal": pd.DataFrame(proposals),
    }
