"""The risk models' output: a sized, bracketed proposal for one candidate trade (:class:`RiskDecision`).

Bracket prices are on the instrument's tick grid and on the correct sides of the entry. The stop is
rounded *away* from the entry (never tighter than the model asked for, so the money at risk is never
understated); the target is rounded to the nearest tick. Both are at least one tick from the entry.
``risk_amount = quantity * point_value * |entry - stop|`` in account currency, from the rounded prices.
"""

from __future__ import annotations

import math

import msgspec

from sage.risk.context import TradeContext

MAX_UNITS: int = 5
"""Largest position M-RMS proposes, in sizing units (0..5)."""
N_SIZES: int = MAX_UNITS + 1
STOP_RANGE: tuple[float, float] = (0.5, 3.0)
"""Stop distance in ATRs."""
REWARD_RISK_RANGE: tuple[float, float] = (1.0, 5.0)
"""Target distance / stop distance."""
_EPS = 1e-9


class RiskDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A position size and bracket for one candidate trade (what :meth:`MRMS.propose` returns)."""

    side: int
    """+1 long, -1 short."""
    units: int
    """Position in sizing units, 0..5 (0 = do not trade)."""
    quantity: float
    """Instrument quantity = units x contract_size."""
    size_probabilities: tuple[float, float, float, float, float, float]
    """The sizer's distribution over 0..5 units."""
    stop_atr_multiple: float
    """Stop distance in ATRs, in [0.5, 3.0]."""
    reward_risk: float
    """Target distance / stop distance, in [1, 5] (before tick rounding)."""
    entry_price: float
    """Reference entry price (tick-rounded)."""
    stop_price: float
    """Stop-loss price: below the entry for a long, above for a short (tick-rounded, away from entry)."""
    target_price: float
    """Take-profit price: above the entry for a long, below for a short (tick-rounded)."""
    risk_amount: float
    """Money lost at the stop, in account currency (0 when units is 0)."""
    confidence: float
    """The model's confidence in [0, 1] (see docs/risk.md for each source's definition)."""
    source: str
    """``"mrms"`` (learned) or ``"rule"`` (fallback)."""
    model_version: str
    """Version of the model that produced it."""
    scale: float = 1.0
    """Risk scale already applied to ``units`` (see :meth:`scaled`; 1.0 = none)."""

    def to_proposal(self, instrument_id, *, ts_event: int, ts_init: int):
        """This decision as a Nautilus custom data record (``sage.data.types.RiskProposal``)."""
        from sage.data.types import RiskProposal

        return RiskProposal(
            instrument_id,
            side=self.side,
            quantity=float(self.quantity),
            size_probabilities=tuple(float(p) for p in self.size_probabilities),
            stop_atr_multiple=float(self.stop_atr_multiple),
            reward_risk=float(self.reward_risk),
            entry_price=float(self.entry_price),
            stop_price=float(self.stop_price),
            target_price=float(self.target_price),
            risk_amount=float(self.risk_amount),
            confidence=float(self.confidence),
            source=self.source,
            model_version=self.model_version,
            ts_event=int(ts_event),
            ts_init=int(ts_init),
        )

    def scaled(self, factor: float, *, point_value: float) -> RiskDecision:
        """The same bracket with ``floor(units * factor)`` units (risk scaling never rounds size up)."""
        if not (math.isfinite(factor) and factor >= 0.0):
            raise ValueError(f"scale factor must be finite and >= 0, got {factor!r}")
        units = min(self.units, math.floor(self.units * min(factor, 1.0) + _EPS))
        per_unit = self.quantity / self.units if self.units else 0.0
        quantity = units * per_unit
        return msgspec.structs.replace(
            self,
            units=units,
            quantity=quantity,
            risk_amount=quantity * point_value * abs(self.entry_price - self.stop_price),
            scale=self.scale * factor,
        )


def round_to_tick(price: float, tick: float, mode: str = "nearest") -> float:
    """``price`` on the ``tick`` grid: ``nearest``, ``down`` or ``up`` (tolerant of float noise)."""
    q = price / tick
    if mode == "down":
        n = math.floor(q + _EPS)
    elif mode == "up":
        n = math.ceil(q - _EPS)
    else:
        n = math.floor(q + 0.5)
    decimals = max(0, -math.floor(math.log10(tick)) + 2)
    return round(n * tick, decimals)


def bracket_prices(
    side: int, entry: float, atr: float, tick: float, stop_atr_multiple: float, reward_risk: float
) -> tuple[float, float, float]:
    """``(entry, stop, target)`` on the tick grid, each side at least one tick from the entry."""
    entry = round_to_tick(entry, tick)
    dist = stop_atr_multiple * atr
    if side > 0:
        stop = min(round_to_tick(entry - dist, tick, "down"), round_to_tick(entry - tick, tick))
        target = max(round_to_tick(entry + reward_risk * (entry - stop), tick), round_to_tick(entry + tick, tick))
    else:
        stop = max(round_to_tick(entry + dist, tick, "up"), round_to_tick(entry + tick, tick))
        target = min(round_to_tick(entry - reward_risk * (stop - entry), tick), round_to_tick(entry - tick, tick))
    return entry, stop, target


def make_decision(
    trade: TradeContext,
    *,
    units: int,
    size_probabilities: tuple[float, ...],
    stop_atr_multiple: float,
    reward_risk: float,
    confidence: float,
    source: str,
    model_version: str,
) -> RiskDecision:
    """Assemble a :class:`RiskDecision`, clamping the ranges and computing prices and money at risk.

    The target is placed at ``reward_risk`` times the *rounded* stop distance, so the bracket's real
    reward:risk is the proposed one up to one tick.
    """
    units = int(min(MAX_UNITS, max(0, units)))
    stop_mult = float(min(STOP_RANGE[1], max(STOP_RANGE[0], stop_atr_multiple)))
    rr = float(min(REWARD_RISK_RANGE[1], max(REWARD_RISK_RANGE[0], reward_risk)))
    entry, stop, target = bracket_prices(trade.side, trade.entry_price, trade.atr, trade.tick_size, stop_mult, rr)
    quantity = units * trade.contract_size
    return RiskDecision(
        side=trade.side,
        units=units,
        quantity=quantity,
        size_probabilities=tuple(float(p) for p in size_probabilities),  # type: ignore[arg-type]
        stop_atr_multiple=stop_mult,
        reward_risk=rr,
        entry_price=entry,
        stop_price=stop,
        target_price=target,
        risk_amount=quantity * trade.point_value * abs(entry - stop),
        confidence=float(min(1.0, max(0.0, confidence))),
        source=source,
        model_version=model_version,
    )
