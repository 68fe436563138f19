"""Decision assembly: from the stages' outputs to an action, the DecisionRecord details and a sentence.

Why one pure function: the strategy runs five stages per decision bar (regime, agents, combiner, risk,
portfolio/kill switch, execution choice), and the audit trail must show exactly what each produced and
why the action followed. :func:`build_decision` takes every stage's output as plain values (dicts,
NamedTuples or the stages' own frozen objects -- read by attribute or key), decides the action by the
rules below, and writes the details in the shape of the DecisionRecord contract
(``docs/combiner.md``): **every key at every level is always present**, a stage that did not run (no
risk proposal when the combiner blocked, no portfolio check, no execution choice) has ``null`` values,
floats are finite or ``null``. ``details_json`` is its compact JSON, keys in contract order, so equal
inputs give byte-equal records; ``json.loads(details_json) == details``.

Action rules (``position`` is the current signed quantity):

1. kill switch active: ``CLOSE`` the position, or ``NO_TRADE`` when flat;
2. not ready (warming up; no combined result): ``NO_TRADE``, or ``HOLD`` an open position; an order
   still working (``order_pending``): ``HOLD``;
3. combiner did not pass (signal below the consensus threshold or uncertainty above its limit):
   ``HOLD`` an open position (its stop and target stay working), ``NO_TRADE`` when flat;
4. signal passed, position on the same side: ``HOLD`` (no pyramiding);
5. signal passed, position on the other side: ``CLOSE`` (re-entry is decided on a later bar, with a
   fresh risk proposal for the new side), or ``HOLD`` with ``exit_on_reversal=False``;
6. flat: ``BUY``/``SELL`` the sized quantity -- the portfolio check's ``quantity`` if it gives one,
   else the risk quantity times the portfolio ``scale`` -- unless there is no risk proposal, it sized 0,
   or the portfolio check refused: ``NO_TRADE``.

The explanation sentence (:mod:`sage.strategy.explanation`) is generated from the details themselves,
so its numbers are the recorded numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import msgspec

from sage.strategy.combiner import CombinedResult
from sage.strategy.explanation import explain

__all__ = [
    "ACTIONS",
    "DETAIL_KEYS",
    "BarInfo",
    "Decision",
    "RegimeInfo",
    "build_decision",
    "details_to_json",
]

ACTIONS: tuple[str, ...] = ("BUY", "SELL", "CLOSE", "HOLD", "NO_TRADE")

_RISK_KEYS = (
    "side",
    "units",
    "quantity",
    "stop_price",
    "target_price",
    "risk_amount",
    "reward_risk",
    "stop_atr_multiple",
    "confidence",
    "source",
    "scale",
)
_RISK_INTS = frozenset(("side", "units"))

#: The contract's keys, section by section, in order (``"agents"`` and ``"attributions"`` are lists of
#: objects with these keys).
DETAIL_KEYS: dict[str, tuple[str, ...]] = {
    "bar": ("bar_type", "ts", "close", "atr"),
    "regime": ("label", "level", "probabilities", "uncertainty", "confidence", "ts"),
    "agents": (
        "agent",
        "timeframe",
        "direction",
        "strength",
        "probabilities",
        "value",
        "weight",
        "performance_weight",
        "regime_multiplier",
        "uncertainty_factor",
    ),
    "combined": ("signal", "uncertainty", "disagreement", "threshold", "passed"),
    "risk": _RISK_KEYS,
    "portfolio": ("allowed", "scale", "reasons"),
    "kill_switch": ("active", "reason"),
    "execution": ("algorithm", "params"),
    "attributions": ("agent", "feature", "lag", "score"),
}


class BarInfo(NamedTuple):
    """The decision bar: its type string, close timestamp (ns), close price and ATR (NaN if unknown)."""

    bar_type: str
    ts: int
    close: float
    atr: float = math.nan


class RegimeInfo(NamedTuple):
    """The regime estimate the decision used (the fields of ``RegimeData`` the record keeps)."""

    label: int
    level: int
    probabilities: tuple[float, ...]
    uncertainty: float
    confidence: float
    ts: int

    @classmethod
    def from_regime_data(cls, regime: Any) -> RegimeInfo:
        """From a ``sage.data.types.RegimeData`` (or anything with its attribute names)."""
        return cls(
            int(regime.label),
            int(regime.fallback_level),
            tuple(regime.probabilities),
            float(regime.uncertainty),
            float(regime.confidence),
            int(regime.ts_event),
        )


class Decision(NamedTuple):
    """The outcome of one decision bar."""

    action: str
    """BUY, SELL, CLOSE, HOLD or NO_TRADE."""
    reason: str
    """Short code of the rule that decided: ``entry``, ``kill_switch``, ``below_threshold``,
    ``uncertainty``, ``in_position``, ``against_position``, ``no_risk``, ``zero_size``, ``portfolio``,
    ``warming_up``, ``order_pending``."""
    side: int
    """Order side to send: +1 buy, -1 sell, 0 nothing (HOLD / NO_TRADE)."""
    quantity: float
    """Quantity to act on (0 for HOLD / NO_TRADE)."""
    details: dict[str, Any]
    details_json: str
    explanation: str
    regime_label: int
    regime_level: int
    combined_signal: float
    combined_uncertainty: float

    def to_record(
        self, instrument_id: Any, *, decision_id: str, ts_event: int, ts_init: int, algorithm: str = "sage"
    ) -> Any:
        """This decision as a Nautilus ``sage.data.types.DecisionRecord``."""
        from sage.data.types import DecisionRecord

        return DecisionRecord(
            instrument_id,
            decision_id=decision_id,
            action=self.action,
            regime_label=self.regime_label,
            regime_level=self.regime_level,
            combined_signal=self.combined_signal,
            combined_uncertainty=self.combined_uncertainty,
            quantity=self.quantity,
            algorithm=algorithm,
            explanation=self.explanation,
            details_json=self.details_json,
            ts_event=ts_event,
            ts_init=ts_init,
        )


def build_decision(
    *,
    instrument_id: str,
    bar: Any,
    regime: Any,
    agents: Sequence[Any],
    combined: CombinedResult | None,
    position: float = 0.0,
    risk: Any = None,
    portfolio: Any = None,
    kill_switch: Any = None,
    execution: Any = None,
    attributions: Sequence[Any] | Mapping[str, Sequence[Any]] = (),
    max_uncertainty: float | None = None,
    ready: bool = True,
    order_pending: bool = False,
    exit_on_reversal: bool = True,
) -> Decision:
    """Decide the action and assemble the record's details, JSON and explanation. Pure.

    ``bar``: :class:`BarInfo` or a mapping/object with ``bar_type, ts, close, atr``. ``regime``:
    :class:`RegimeInfo` or a mapping/object with ``label, level, probabilities, uncertainty, confidence,
    ts`` (``RegimeData`` works: ``fallback_level``/``ts_event`` are read when ``level``/``ts`` are absent).
    ``agents``: the agents' outputs (``AgentOutput`` or mappings with ``agent, timeframe, direction,
    strength, probabilities, value``) in the order of ``combined.agents``. ``combined``: the combiner's
    result, or None when it did not run (warming up). ``risk``: a ``RiskDecision`` or mapping with the
    contract's risk keys, or None when no proposal was made. ``portfolio``: an ``EntryCheck`` or mapping
    (``allowed, scale, reasons`` and optionally ``quantity``) or None. ``kill_switch``: mapping/object with
    ``active`` and ``reason``, or None. ``execution``: a ``Selection`` or mapping with ``algorithm`` (or
    ``algorithm_id``) and ``params``, or None. ``attributions``: items with ``agent, feature, lag, score``,
    or a mapping agent -> items with ``feature, lag, score``. ``max_uncertainty``: the combiner's limit,
    quoted when it blocked. ``ready`` False (agents/ATR warming up) gives NO_TRADE (HOLD when a position is
    open); ``order_pending`` (an entry or exit still working) gives HOLD. ``exit_on_reversal`` False
    keeps (HOLD) a position the combined signal has turned against instead of closing it.
    """
    if combined is not None:
        names = tuple(_get(a, "agent") for a in agents)
        if names != tuple(combined.agents):
            raise ValueError(
                f"agents {list(names)} do not match the combined result's agents {list(combined.agents)}"
            )
    if not math.isfinite(position):
        raise ValueError(f"position must be finite, got {position!r}")

    risk_d = _section(risk, _RISK_KEYS)
    if risk is not None:
        for k in _RISK_INTS:
            if risk_d[k] is not None:
                risk_d[k] = int(risk_d[k])
    portfolio_d = _portfolio(portfolio)
    kill_d = _kill_switch(kill_switch)
    label = int(_get(regime, "label"))
    level = int(_first(regime, "level", "fallback_level"))
    details: dict[str, Any] = {
        "bar": {
            "bar_type": str(_get(bar, "bar_type")),
            "ts": _int(_first(bar, "ts", "ts_event")),
            "close": _f(_get(bar, "close")),
            "atr": _f(_get(bar, "atr")),
        },
        "regime": {
            "label": label,
            "level": level,
            "probabilities": _floats(_get(regime, "probabilities")),
            "uncertainty": _f(_get(regime, "uncertainty")),
            "confidence": _f(_get(regime, "confidence")),
            "ts": _int(_first(regime, "ts", "ts_event")),
        },
        "agents": _agents(agents, combined),
        "combined": _combined(combined),
        "risk": risk_d,
        "portfolio": portfolio_d,
        "kill_switch": kill_d,
        "execution": _execution(execution),
        "attributions": _attributions(attributions),
    }

    action, reason, side, quantity = _decide(
        combined,
        position,
        risk,
        risk_d,
        portfolio,
        portfolio_d,
        kill_d,
        ready,
        order_pending,
        exit_on_reversal,
    )
    sentence = explain(
        action=action,
        reason=reason,
        quantity=quantity,
        position=position,
        instrument_id=str(instrument_id),
        details=details,
        max_uncertainty=max_uncertainty,
    )
    return Decision(
        action=action,
        reason=reason,
        side=side,
        quantity=quantity,
        details=details,
        details_json=details_to_json(details),
        explanation=sentence,
        regime_label=label,
        regime_level=level,
        combined_signal=math.nan if combined is None else float(combined.signal),
        combined_uncertainty=math.nan if combined is None else float(combined.uncertainty),
    )


def details_to_json(details: Mapping[str, Any]) -> str:
    """Compact JSON, keys in insertion (contract) order, non-finite floats as ``null``."""
    return msgspec.json.encode(details).decode()


# -- the rules --------------------------------------------------------------------------------------------


def _decide(
    combined: CombinedResult | None,
    position: float,
    risk_raw: Any,
    risk: dict[str, Any],
    portfolio_raw: Any,
    portfolio: dict[str, Any],
    kill: dict[str, Any],
    ready: bool,
    order_pending: bool,
    exit_on_reversal: bool,
) -> tuple[str, str, int, float]:
    pos_side = (position > 0) - (position < 0)
    if kill["active"]:
        if pos_side:
            return "CLOSE", "kill_switch", -pos_side, abs(position)
        return "NO_TRADE", "kill_switch", 0, 0.0
    if not ready or combined is None:
        return ("HOLD" if pos_side else "NO_TRADE"), "warming_up", 0, 0.0
    if order_pending:
        return "HOLD", "order_pending", 0, 0.0
    if not combined.passed:
        reason = "uncertainty" if combined.blocked_by == "uncertainty" else "below_threshold"
        return ("HOLD" if pos_side else "NO_TRADE"), reason, 0, 0.0
    side = 1 if combined.signal > 0 else -1
    if pos_side == side:
        return "HOLD", "in_position", 0, 0.0
    if pos_side == -side:
        if not exit_on_reversal:
            return "HOLD", "against_position", 0, 0.0
        return "CLOSE", "against_position", side, abs(position)
    if risk_raw is None:
        return "NO_TRADE", "no_risk", 0, 0.0
    if risk["side"] not in (0, side) and risk["units"]:
        raise ValueError(
            f"risk proposal side {risk['side']} contradicts the combined signal {combined.signal:+.4f}"
        )
    if not risk["units"] or not risk["quantity"] or risk["side"] == 0:
        return "NO_TRADE", "zero_size", 0, 0.0
    if portfolio["allowed"] is False:
        return "NO_TRADE", "portfolio", 0, 0.0
    quantity = float(risk["quantity"])
    if portfolio_raw is not None:
        cut = _get(portfolio_raw, "quantity", None)
        if cut is not None and math.isfinite(cut):
            quantity = float(cut)
        elif portfolio["scale"] is not None:
            quantity *= portfolio["scale"]
    if not quantity > 0:
        return "NO_TRADE", "portfolio", 0, 0.0
    return ("BUY" if side > 0 else "SELL"), "entry", side, quantity


# -- sections -------------------------------------------------------------------------------------------


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if type(obj) is dict:  # the common case, without the (slow) ABC check
        return obj.get(key, default)
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _first(obj: Any, key: str, alt: str) -> Any:
    v = _get(obj, key)
    return _get(obj, alt) if v is None else v


def _int(x: Any) -> int | None:
    return None if x is None else int(x)


def _combined(c: CombinedResult | None) -> dict[str, Any]:
    if c is None:
        return {"signal": None, "uncertainty": None, "disagreement": None, "threshold": None, "passed": None}
    return {
        "signal": _f(c.signal),
        "uncertainty": _f(c.uncertainty),
        "disagreement": _f(c.disagreement),
        "threshold": _f(c.threshold),
        "passed": bool(c.passed),
    }


def _f(x: Any) -> float | None:
    """A finite float, else None (JSON null)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(v: Any) -> Any:
    """Plain JSON values: numbers finite (else null), numpy scalars unwrapped, containers recursed."""
    if v is None or type(v) is bool:
        return v
    if isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    item = getattr(v, "item", None)  # numpy scalar
    if item is not None:
        return _jsonable(item())
    return str(v)


def _section(obj: Any, keys: Sequence[str]) -> dict[str, Any]:
    if obj is None:
        return dict.fromkeys(keys)
    return {k: _jsonable(_get(obj, k)) for k in keys}


def _portfolio(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {"allowed": None, "scale": None, "reasons": None}
    allowed = _get(obj, "allowed")
    reasons = _get(obj, "reasons")
    return {
        "allowed": None if allowed is None else bool(allowed),
        "scale": _f(_get(obj, "scale")),
        "reasons": None if reasons is None else [str(r) for r in reasons],
    }


def _kill_switch(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {"active": None, "reason": None}
    active = _get(obj, "active")
    reason = _get(obj, "reason")
    return {
        "active": None if active is None else bool(active),
        "reason": None if reason is None else str(reason),
    }


def _execution(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {"algorithm": None, "params": None}
    algo = _get(obj, "algorithm")
    if algo is None:
        algo = _get(obj, "algorithm_id")
    params = _get(obj, "params")
    return {
        "algorithm": None if algo is None else str(algo),
        "params": None if params is None else _jsonable(params),
    }


def _floats(values: Any) -> list[float | None]:
    """Floats, each finite or None; one ``isfinite`` on the sum in the common all-finite case."""
    v = [float(x) for x in values]
    if math.isfinite(sum(v)):
        return v
    return [x if math.isfinite(x) else None for x in v]


def _row(obj: Any, keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The values of ``keys`` from a dict, mapping or object (None where missing)."""
    if type(obj) is dict:
        return tuple(map(obj.get, keys))
    if isinstance(obj, Mapping):
        return tuple(obj.get(k) for k in keys)
    return tuple(getattr(obj, k, None) for k in keys)


_AGENT_IN = ("agent", "timeframe", "direction", "strength", "probabilities", "value")
_ATTRIBUTION_IN = ("agent", "feature", "lag", "score")


def _agents(agents: Sequence[Any], combined: CombinedResult | None) -> list[dict[str, Any]]:
    n = len(agents)
    if combined is None:
        factors: Any = [(None, None, None, None)] * n
    else:
        factors = zip(
            _floats(combined.weights),
            _floats(combined.performance_weights),
            _floats(combined.regime_multipliers),
            _floats(combined.uncertainty_factors),
        )
    out = []
    for a, (w, pw, rm, uf) in zip(agents, factors):
        name, timeframe, direction, strength, probabilities, value = _row(a, _AGENT_IN)
        out.append(
            {
                "agent": str(name),
                "timeframe": None if timeframe is None else str(timeframe),
                "direction": int(direction),
                "strength": _f(strength),
                "probabilities": _floats(probabilities),
                "value": _f(value),
                "weight": w,
                "performance_weight": pw,
                "regime_multiplier": rm,
                "uncertainty_factor": uf,
            }
        )
    return out


def _attributions(items: Sequence[Any] | Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    rows: list[tuple[Any, ...]]
    if isinstance(items, Mapping):
        rows = [(agent, *_row(a, _ATTRIBUTION_IN)[1:]) for agent, seq in items.items() for a in seq]
    else:
        rows = [_row(a, _ATTRIBUTION_IN) for a in items]
    return [
        {
            "agent": None if agent is None else str(agent),
            "feature": str(feature),
            "lag": None if lag is None else int(lag),
            "score": _f(score),
        }
        for agent, feature, lag, score in rows
    ]
