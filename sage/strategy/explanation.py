"""One generated sentence per decision, built from the recorded details so it is always true to them.

Why generated from ``details`` rather than from the live objects: the sentence is the part of the audit
record a person reads first; deriving it from the very numbers stored next to it (rounded to 2
decimals, 1 for the bracket) means it can never disagree with the record. Deterministic, no
randomness, no locale: equal details give equal sentences.

Shapes (one per decision rule in :mod:`sage.strategy.decision`)::

    BUY 2 ESU3.XCME: BULL regime (L1, p=0.71); momentum and trend agree (+0.62 combined, uncertainty
        0.18); M-RMS sized 2 units, stop 1.5 ATR, target 2.0R; TWAP.
    NO_TRADE: combined +0.12 below consensus 0.30 (agents disagree: fvg sell, trend buy).
    NO_TRADE: uncertainty 1.12 above limit 1.00 at combined +0.41; VOLATILE regime (L4, p=0.38).
    NO_TRADE: BUY signal +0.55 but M-RMS sized 0 units (confidence 0.21).
    NO_TRADE: BUY signal +0.55 blocked by portfolio risk (var_limit).
    NO_TRADE: kill switch active (max drawdown 5.2% > 5.0%).
    NO_TRADE: warming up.
    HOLD: order in progress.
    HOLD long 2 ESU3.XCME: combined +0.45 agrees with the position; BULL regime (L1, p=0.71).
    HOLD long 2 ESU3.XCME: combined +0.12 below consensus 0.30 (all agents hold); position kept.
    CLOSE long 2 ESU3.XCME: combined -0.51 against the position (trend and mean_reversion agree).
    HOLD long 2 ESU3.XCME: combined -0.51 against the position (trend and mean_reversion agree); exit on
        reversal off.
    CLOSE long 2 ESU3.XCME: kill switch active (daily loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sage.data.regimes import REGIME_NAMES

__all__ = ["explain", "format_quantity"]

_SIDE_WORD = {1: "buy", -1: "sell"}
_MAX_NAMED = 4


def explain(
    *,
    action: str,
    reason: str,
    quantity: float,
    position: float,
    instrument_id: str,
    details: Mapping[str, Any],
    max_uncertainty: float | None = None,
) -> str:
    """The sentence for one decision (see the module docstring for every shape)."""
    c = details["combined"]
    signal = c["signal"]
    if action in ("BUY", "SELL"):
        side = 1 if action == "BUY" else -1
        parts = [
            f"{action} {format_quantity(quantity)} {instrument_id}: {_regime(details)}",
            f"{_support(details['agents'], side)} ({_signed(signal)} combined, uncertainty {_num(c['uncertainty'])})",
            _risk(details, quantity),
        ]
        algo = details["execution"]["algorithm"]
        if algo:
            parts.append(algo)
        return "; ".join(parts) + "."

    held = _position(position, instrument_id)
    if reason == "warming_up":
        return f"HOLD {held}: warming up; position kept." if action == "HOLD" else "NO_TRADE: warming up."
    if reason == "order_pending":
        return f"HOLD {held}: order in progress." if position else "HOLD: order in progress."
    if reason == "kill_switch":
        why = details["kill_switch"]["reason"]
        tail = f"kill switch active ({why})" if why else "kill switch active"
        return f"CLOSE {held}: {tail}." if action == "CLOSE" else f"NO_TRADE: {tail}."
    if reason == "below_threshold":
        core = (
            f"combined {_signed(signal)} below consensus {_num(c['threshold'])} "
            f"({_disagreement(details['agents'])})"
        )
        return f"HOLD {held}: {core}; position kept." if action == "HOLD" else f"NO_TRADE: {core}."
    if reason == "uncertainty":
        limit = f" above limit {_num(max_uncertainty)}" if max_uncertainty is not None else " too high"
        core = (
            f"uncertainty {_num(c['uncertainty'])}{limit} at combined {_signed(signal)}; {_regime(details)}"
        )
        return f"HOLD {held}: {core}; position kept." if action == "HOLD" else f"NO_TRADE: {core}."
    if reason == "in_position":
        return f"HOLD {held}: combined {_signed(signal)} agrees with the position; {_regime(details)}."
    if reason == "against_position":
        side = 1 if (signal or 0.0) > 0 else -1
        core = f"combined {_signed(signal)} against the position ({_support(details['agents'], side)})"
        return f"HOLD {held}: {core}; exit on reversal off." if action == "HOLD" else f"CLOSE {held}: {core}."

    side = 1 if (signal or 0.0) > 0 else -1
    lead = f"NO_TRADE: {'BUY' if side > 0 else 'SELL'} signal {_signed(signal)}"
    risk = details["risk"]
    if reason == "no_risk":
        return f"{lead} but no risk proposal."
    if reason == "zero_size":
        return f"{lead} but {_sizer(risk)} sized 0 units (confidence {_num(risk['confidence'])})."
    if reason == "portfolio":
        reasons = details["portfolio"]["reasons"] or ["size cut to 0"]
        return f"{lead} blocked by portfolio risk ({', '.join(reasons)})."
    raise ValueError(f"no explanation for action {action!r} with reason {reason!r}")


def format_quantity(q: float) -> str:
    """``2`` for 2.0, ``0.5`` for 0.5, up to 6 significant digits; no exponent for normal sizes."""
    if q == int(q):
        return str(int(q))
    return f"{q:.6g}"


# -- pieces -------------------------------------------------------------------------------------------


def _num(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _signed(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.2f}"


def _regime(details: Mapping[str, Any]) -> str:
    r = details["regime"]
    label = r["label"]
    probs = r["probabilities"]
    p = probs[label] if 0 <= label < len(probs) else None
    return f"{REGIME_NAMES[label]} regime (L{r['level']}, p={_num(p)})"


def _position(position: float, instrument_id: str) -> str:
    side = "long" if position > 0 else "short"
    return f"{side} {format_quantity(abs(position))} {instrument_id}"


def _by_contribution(agents: Sequence[Mapping[str, Any]], side: int) -> list[str]:
    """Names of agents whose direction is on ``side``, the largest weight x |strength| first."""
    chosen = [a for a in agents if (a["direction"] > 0) - (a["direction"] < 0) == side]
    chosen.sort(key=lambda a: (-(a["weight"] or 0.0) * abs(a["strength"] or 0.0), a["agent"]))
    return [a["agent"] for a in chosen]


def _names(names: Sequence[str]) -> str:
    shown = list(names[:_MAX_NAMED])
    more = len(names) - len(shown)
    if more:
        shown.append(f"{more} more")
    if len(shown) == 1:
        return shown[0]
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _support(agents: Sequence[Mapping[str, Any]], side: int) -> str:
    pro = _by_contribution(agents, side)
    con = _by_contribution(agents, -side)
    if len(pro) == len(agents) > 2:
        text = f"all {len(pro)} agents agree"
    elif len(pro) >= 2:
        text = f"{_names(pro)} agree"
    elif pro:
        text = f"{pro[0]} {_SIDE_WORD[side]}s"
    else:
        text = f"agents lean {_SIDE_WORD[side]}"
    if con:
        text += f", {_names(con)} {'dissents' if len(con) == 1 else 'dissent'}"
    return text


def _disagreement(agents: Sequence[Mapping[str, Any]]) -> str:
    buy = _by_contribution(agents, 1)
    sell = _by_contribution(agents, -1)
    if buy and sell:
        ranked = sorted(
            (a for a in agents if a["direction"] != 0),
            key=lambda a: (-(a["weight"] or 0.0) * abs(a["strength"] or 0.0), a["agent"]),
        )
        shown = [f"{a['agent']} {_SIDE_WORD[1 if a['direction'] > 0 else -1]}" for a in ranked[:4]]
        return "agents disagree: " + ", ".join(shown)
    if buy or sell:
        names = buy or sell
        word = _SIDE_WORD[1 if buy else -1]
        return f"weak {word} from {_names(names)}"
    return "all agents hold"


def _sizer(risk: Mapping[str, Any]) -> str:
    return "M-RMS" if risk["source"] == "mrms" else "rule sizer"


def _risk(details: Mapping[str, Any], quantity: float) -> str:
    risk = details["risk"]
    units = risk["units"]
    text = (
        f"{_sizer(risk)} sized {units} unit{'' if units == 1 else 's'}, "
        f"stop {_num(risk['stop_atr_multiple'], 1)} ATR, target {_num(risk['reward_risk'], 1)}R"
    )
    proposed = risk["quantity"]
    if proposed is not None and abs(quantity - proposed) > 1e-9 * max(1.0, abs(proposed)):
        reasons = details["portfolio"]["reasons"]
        why = f": {', '.join(reasons)}" if reasons else ""
        text += f" (portfolio cut to {format_quantity(quantity)}{why})"
    return text
