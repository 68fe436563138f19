"""Algorithm selector: price every candidate execution schedule under the square-root model, pick the cheapest.

Why a model-based selector instead of rules ("over 5 % of ADV -> VWAP"): the trade-off is between impact
(falls with a slower schedule) and timing risk (grows with it), and both scale with volatility and with
the order's size in minutes of volume, so fixed thresholds are wrong in some regime. Pricing each
candidate with :class:`~sage.execution.impact.SquareRootImpact` makes the choice explicit, monotone
(bigger orders get longer schedules, urgent orders shorter ones) and auditable: the :class:`Selection`
carries the expected cost of every algorithm, not only the winner's.

How each algorithm is priced (all per unit, bps of the arrival price; ``s`` half spread, ``V`` volume per
minute, ``sigma`` per-minute volatility, ``H`` horizon in minutes, ``beta`` the impact exponent; see
``docs/execution_costs.md``):

* **IMMEDIATE** - everything at once: ``s + Y sigma (Q / V)^beta`` (one minute of volume), no risk.
* **TWAP(H)** - equal slices every ``interval``: ``s + Y sigma (Q / (V H))^beta * k_TWAP``, risk
  ``sigma sqrt(H/3)``. ``k_TWAP = mean(w^-beta) * mean(w)^beta >= 1`` for the expected per-minute volume
  weights ``w`` over the horizon (a volume profile): equal slices take a larger share of thin minutes.
  Without a profile ``k_TWAP = 1``.
* **VWAP(H)** - slices in proportion to expected volume: ``k = 1``. Its participation cap is set to
  twice the planned participation (at least ``vwap_max_participation``), so on the model it never binds;
  with a cap that would (participation > 1), the part held back is swept at the horizon and priced as an
  immediate order of that size.
* **STEALTH(H)** - TWAP with slice sizes drawn from ``U(a, b)`` of the parent: uneven slices cost
  ``E[q^(1+beta)] / E[q]^(1+beta)`` times more impact (~1.05 for the defaults). Its benefit - a schedule
  that is hard to detect - is priced only through ``predictability_penalty`` (extra impact charged to
  the regular TWAP/VWAP schedules; default 0, so by default Stealth never beats TWAP).
* **ICEBERG(H)** - passive clips resting ``passive_offset_ticks`` behind the last trade (needs
  ``tick_size``): the price must first come to them - probability ``2 Phi(-d / (sigma sqrt(H)))``
  within ``H`` for a distance ``d`` (reflection principle) - and then they fill at a rate
  ``passive_participation * V``. The filled part earns the half spread but gives
  ``passive_adverse_selection_bps`` back (default: the half spread, i.e. no net edge); whatever has not
  filled by ``H`` is priced as completed aggressively (an immediate order of the remainder) - the
  algorithm itself cancels it at the horizon (``at_horizon="cancel"``) and leaves it to the caller, and
  the TCA marks it as opportunity cost. Risk: the filled share ``f`` trades out linearly over the time
  ``T`` the passive part needs, the rest stays exposed for all of ``H``:
  ``sigma sqrt(f^2 T / 3 + (1 - f)^2 H)``.

The score is ``cost + lambda(urgency) * risk`` (:meth:`~sage.execution.impact.ImpactParams.risk_weight`);
the lowest score wins, ties going to the simpler algorithm (the order of ``algorithms``) and the shorter
horizon. Since every fixed algorithm configuration on the grid is itself a candidate, the choice is never
worse on the model than any of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import msgspec
import numpy as np
import pandas as pd
from nautilus_trader.model.enums import OrderSide, TimeInForce
from nautilus_trader.model.identifiers import ExecAlgorithmId

from sage.execution.impact import NS_PER_MINUTE, CostBreakdown, ImpactParams, MarketStats, SquareRootImpact
from sage.execution.volume_profile import VolumeProfile

__all__ = [
    "ALGORITHMS",
    "AlgorithmSelector",
    "Selection",
    "SelectorConfig",
    "VolumeWeights",
    "build_order",
    "fixed_algorithm_costs",
    "price_candidates",
    "profile_weights",
    "touch_probability",
]

IMMEDIATE, TWAP, VWAP, STEALTH, ICEBERG = "IMMEDIATE", "TWAP", "VWAP", "STEALTH", "ICEBERG"

#: The algorithm ids the selector knows how to price and parametrise (sage.execution.algorithms).
ALGORITHMS: tuple[str, ...] = (IMMEDIATE, TWAP, VWAP, STEALTH, ICEBERG)

_MINUTES_PER_DAY = 1440

_CANDIDATE_COLUMNS = (
    "algorithm_id",
    "horizon_secs",
    "participation",
    "spread_bps",
    "impact_bps",
    "risk_bps",
    "cost_bps",
    "score_bps",
)


class VolumeWeights(Protocol):
    """What the selector needs from a volume profile (``sage.execution.VolumeProfile`` satisfies it)."""

    def fraction_between(self, start_ns: int, end_ns: int) -> float: ...


class SelectorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the selector may choose from and how it prices it. Frozen and JSON-serialisable."""

    impact: ImpactParams = ImpactParams()
    """The cost model's coefficients (default :class:`ImpactParams` defaults: Y 1.0, exponent 0.5,
    tau0 1 min, risk aversion 0.5)."""

    algorithms: tuple[str, ...] = ALGORITHMS
    """Candidate algorithms, in tie-break order (default all five, simplest first)."""

    horizons_secs: tuple[float, ...] = (120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
    """Horizons tried for the scheduled algorithms (default 2 min to 1 h). The best horizon grows like
    sqrt(Q / V) / lambda(urgency); extend the grid for orders of many hours of volume."""

    slice_interval_secs: float = 60.0
    """Slice interval for TWAP/VWAP (default 60 s, the model's tau0: each slice meets a refilled book),
    shortened to ``horizon / min_slices`` for short horizons."""

    min_slices: int = 4
    """Fewest slices a TWAP/VWAP schedule may have (default 4)."""

    vwap_max_participation: float = 0.25
    """Floor of the ``max_participation`` passed to VWAP (default 0.25). The cap sent is
    ``max(this, 2 x planned participation)`` (at most 1): a safety net against volume droughts that
    leaves the planned schedule room for ordinary minute-to-minute volume noise."""

    stealth_slice_fraction: tuple[float, float] = (0.05, 0.2)
    """Stealth slice sizes as fractions of the parent, uniform in [a, b] (default 5 %-20 %, the
    algorithm's own defaults); the gaps are set so the expected schedule spans 80 % of the horizon."""

    predictability_penalty: float = 0.0
    """Extra impact, as a fraction, charged to the regular TWAP/VWAP schedules for being detectable
    (default 0.0: information leakage is not priced, so Stealth only wins when this is set)."""

    passive_participation: float = 0.1
    """Share of market volume an Iceberg clip at the touch is expected to capture (default 0.1).
    ``SquareRootBookFillModel`` gives resting orders the same share at the touch, but a full fill when
    the tape trades through their price (Nautilus' rule), so backtests still flatter passive execution."""

    passive_adverse_selection_bps: float | None = None
    """Cost of adverse selection per passive fill, bps (default None = the half spread: the spread earned
    is given back, no net passive edge)."""

    iceberg_clip_minutes: float = 1.0
    """Iceberg visible clip, in minutes of expected passive fills: ``passive_participation * V * this``
    (default 1.0), at least one size increment."""

    passive_offset_ticks: int = 1
    """Ticks behind the last trade price at which Iceberg clips rest (default 1: the bid for a buy when
    the last trade was at the ask)."""

    def __post_init__(self) -> None:
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown or not self.algorithms:
            raise ValueError(
                f"SelectorConfig.algorithms must be a non-empty subset of {ALGORITHMS}, got {unknown}"
            )
        if not self.horizons_secs or any(not (math.isfinite(h) and h > 0) for h in self.horizons_secs):
            raise ValueError(
                f"SelectorConfig.horizons_secs must be positive numbers, got {self.horizons_secs}"
            )
        if not (self.slice_interval_secs > 0 and self.min_slices >= 1):
            raise ValueError("slice_interval_secs must be > 0 and min_slices >= 1")
        a, b = self.stealth_slice_fraction
        if not 0.0 < a <= b <= 1.0:
            raise ValueError(
                f"stealth_slice_fraction must satisfy 0 < a <= b <= 1, got {self.stealth_slice_fraction}"
            )
        for name in ("vwap_max_participation", "passive_participation"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"SelectorConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        adverse = self.passive_adverse_selection_bps
        if adverse is not None and not math.isfinite(adverse):
            raise ValueError(f"passive_adverse_selection_bps must be finite or None, got {adverse}")
        if self.predictability_penalty < 0 or self.iceberg_clip_minutes <= 0 or self.passive_offset_ticks < 0:
            raise ValueError(
                "predictability_penalty >= 0, iceberg_clip_minutes > 0, passive_offset_ticks >= 0"
            )


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """The selector's decision for one parent order, with the evidence."""

    algorithm_id: str
    """Exec algorithm to route the parent to (``exec_algorithm_id``)."""
    params: dict[str, Any]
    """``exec_algorithm_params`` for it (validated by the algorithm on submission)."""
    horizon_secs: float
    """Planned horizon (0 for IMMEDIATE)."""
    order_type: str
    """``"MARKET"``, or ``"LIMIT"`` for ICEBERG (clips rest at ``limit_price``)."""
    limit_price: float | None
    """Limit price of the primary for ICEBERG, else None."""
    expected_cost_bps: float
    """Modelled spread + impact of the choice (bps of arrival)."""
    risk_bps: float
    """Modelled timing-risk standard deviation of the choice (bps)."""
    score_bps: float
    """expected_cost_bps + lambda(urgency) * risk_bps: what was minimised."""
    per_algorithm_costs: dict[str, float]
    """Best score of each candidate algorithm over its horizons (bps)."""
    per_algorithm_horizons: dict[str, float]
    """Horizon at which each algorithm scored best (secs)."""


# -- Pricing (pure) -------------------------------------------------------------------------------------------


def touch_probability(distance_bps: float, sigma_bps: float, horizon_min: Any) -> np.ndarray:
    """Chance that a driftless price reaches a level ``distance_bps`` away within ``horizon_min`` minutes:
    ``2 * Phi(-d / (sigma * sqrt(H)))`` (reflection principle; 1 at distance 0)."""
    h = np.atleast_1d(np.asarray(horizon_min, dtype=np.float64))
    if distance_bps <= 0.0:
        return np.ones_like(h)
    scale = sigma_bps * np.sqrt(2.0 * np.maximum(h, 0.0))
    with np.errstate(divide="ignore"):
        z = np.where(scale > 0.0, distance_bps / scale, np.inf)
    return np.array([math.erfc(float(x)) for x in z])


def _stealth_factor(a: float, b: float, beta: float) -> float:
    """``E[q^(1+beta)] / E[q]^(1+beta)`` for ``q ~ U(a, b)`` (1 when a == b)."""
    k = 1.0 + beta
    if b - a < 1e-12:
        return 1.0
    moment = (b ** (k + 1) - a ** (k + 1)) / ((k + 1) * (b - a))
    return moment / (0.5 * (a + b)) ** k


def _twap_factors(weights: np.ndarray | None, horizons_min: np.ndarray, beta: float) -> np.ndarray:
    """``mean(w^-beta) * mean(w)^beta`` over the first ``ceil(H)`` minutes, per horizon (1 without weights)."""
    if weights is None:
        return np.ones_like(horizons_min)
    out = np.empty_like(horizons_min)
    w = np.maximum(
        weights, 1e-3 * max(float(np.mean(weights)), 1e-300)
    )  # a minute with no volume is not free
    for i, h in enumerate(horizons_min):
        m = max(1, math.ceil(h - 1e-9))
        ww = w[:m]
        out[i] = float(np.mean(ww**-beta) * np.mean(ww) ** beta)
    return out


def profile_weights(profile: VolumeWeights, start_ns: int, minutes: int) -> np.ndarray:
    """Expected volume fraction of each of the next ``minutes`` minutes from ``start_ns``.

    A :class:`~sage.execution.volume_profile.VolumeProfile` is read in one vectorised pass (bit-identical
    to asking its ``fraction_between`` minute by minute, which costs a pandas time-zone conversion per
    minute); any other :class:`VolumeWeights` is asked minute by minute.
    """
    if type(profile) is VolumeProfile:  # exactly the class: a subclass may redefine fraction_between
        return _volume_profile_weights(profile, int(start_ns), int(minutes))
    return _protocol_weights(profile, start_ns, minutes)


def _protocol_weights(profile: VolumeWeights, start_ns: int, minutes: int) -> np.ndarray:
    """The generic path: one ``fraction_between`` call per minute."""
    return np.array(
        [
            profile.fraction_between(start_ns + m * NS_PER_MINUTE, start_ns + (m + 1) * NS_PER_MINUTE)
            for m in range(minutes)
        ]
    )


def _volume_profile_weights(profile: VolumeProfile, start_ns: int, minutes: int) -> np.ndarray:
    """``VolumeProfile.fraction_between`` for ``minutes`` consecutive one-minute windows, vectorised.

    Mirrors that method's arithmetic operation for operation, so the floats are identical: a window
    ``[t, t + 1 min)`` overlaps the clock minute containing ``t`` by ``(1 min - r)`` and the next one by
    ``r`` (``r = t mod 1 min``), each weighted by its local minute-of-day fraction, summed first to last.
    UTC minute-of-day is plain modular arithmetic; any other zone goes through one pandas conversion of
    the whole window (instead of one per minute).
    """
    if minutes <= 0:
        return np.empty(0, dtype=np.float64)
    per_minute = _per_minute_fractions(profile.fractions, profile.bucket_minutes)
    first = start_ns // NS_PER_MINUTE  # clock minute holding the first window's start
    r = start_ns - first * NS_PER_MINUTE
    clock_minutes = np.arange(first, first + minutes + (1 if r else 0), dtype=np.int64)
    if profile.tz == "UTC":
        minute_of_day = clock_minutes % _MINUTES_PER_DAY
    else:
        local = pd.DatetimeIndex(clock_minutes * NS_PER_MINUTE, tz="UTC").tz_convert(profile.tz)
        minute_of_day = np.asarray(local.hour * 60 + local.minute)
    w = per_minute[minute_of_day]
    if not r:
        return w  # fraction_between sums a single term, weight * (1 min / 1 min): the weight itself
    head = np.float64((NS_PER_MINUTE - r) / NS_PER_MINUTE)
    tail = np.float64(r / NS_PER_MINUTE)
    return w[:-1] * head + w[1:] * tail


@functools.lru_cache(maxsize=32)
def _per_minute_fractions(fractions: tuple[float, ...], bucket_minutes: int) -> np.ndarray:
    """Fraction of daily volume per local minute of the day, as ``VolumeProfile`` computes it."""
    out = np.repeat(np.asarray(fractions) / bucket_minutes, bucket_minutes)
    out.flags.writeable = False
    return out


class _Candidates(NamedTuple):
    """Every priced (algorithm, horizon) candidate as parallel float64 arrays, rows in tie-break order.

    ``blocks`` holds ``(algorithm_id, first row, end row)`` per priced algorithm (its rows are contiguous,
    horizons ascending); :func:`price_candidates` turns this into its DataFrame, the selector reads it
    directly.
    """

    blocks: tuple[tuple[str, int, int], ...]
    horizon_secs: np.ndarray
    participation: np.ndarray
    spread_bps: np.ndarray
    impact_bps: np.ndarray
    risk_bps: np.ndarray
    cost_bps: np.ndarray
    score_bps: np.ndarray

    @property
    def algorithm_id(self) -> list[str]:
        """Algorithm id of each row."""
        return [algo for algo, start, stop in self.blocks for _ in range(stop - start)]


def _price_arrays(
    qty: float,
    stats: MarketStats,
    urgency: float,
    cfg: SelectorConfig,
    tick_size: float | None,
    volume_weights: np.ndarray | None,
) -> _Candidates:
    """The pricing behind :func:`price_candidates`, without pandas (see it for the arguments)."""
    if not (math.isfinite(qty) and qty > 0):
        raise ValueError(f"qty must be > 0, got {qty}")
    if not stats.volume_per_min > 0:
        raise ValueError("stats.volume_per_min must be > 0 to price an order (no liquidity estimate)")
    model = SquareRootImpact(cfg.impact)
    beta = cfg.impact.exponent
    V, sig, s = stats.volume_per_min, stats.sigma_per_min, stats.half_spread_bps
    horizons = np.array(sorted(set(cfg.horizons_secs)), dtype=np.float64)
    h_min = horizons / 60.0
    if volume_weights is not None:
        needed = math.ceil(h_min.max() - 1e-9)
        volume_weights = np.asarray(volume_weights, dtype=np.float64)
        if volume_weights.shape[0] < needed or np.any(~(volume_weights >= 0)):
            raise ValueError(f"volume_weights must be >= 0 and cover {needed} minutes")
    leak = 1.0 + cfg.predictability_penalty
    twap_k: np.ndarray | None = None  # k_TWAP, shared by TWAP and STEALTH
    rows: list[tuple[str, np.ndarray, CostBreakdown]] = []

    for algo in cfg.algorithms:
        if algo == IMMEDIATE:
            c = model.cost(qty, V, sig, 0.0, s, urgency=urgency)
            rows.append((algo, _ZERO_HORIZON, c))
        elif algo in (TWAP, STEALTH):
            if twap_k is None:
                twap_k = _twap_factors(volume_weights, h_min, beta)
            if algo == TWAP:
                k = twap_k * leak
            else:
                k = twap_k * _stealth_factor(*cfg.stealth_slice_fraction, beta)
            rows.append((algo, horizons, model.cost(qty, V, sig, h_min, s, impact_factor=k, urgency=urgency)))
        elif algo == VWAP:
            rows.append((algo, horizons, _vwap_cost(model, cfg, qty, V, sig, s, h_min, leak, urgency)))
        elif algo == ICEBERG:
            if tick_size is None:
                continue
            distance_bps = cfg.passive_offset_ticks * tick_size / stats.price * 1e4
            rows.append(
                (algo, horizons, _iceberg_cost(model, cfg, qty, V, sig, s, h_min, distance_bps, urgency))
            )

    if not rows:
        raise ValueError(f"no candidate to price among {cfg.algorithms}: ICEBERG needs tick_size")
    blocks = []
    start = 0
    for algo, hs, _ in rows:
        blocks.append((algo, start, start + hs.shape[0]))
        start += hs.shape[0]

    def column(name: str) -> np.ndarray:
        parts = []
        for _, hs, c in rows:
            x = getattr(c, name)
            parts.append(x if x.shape == hs.shape else np.broadcast_to(x, hs.shape))
        return np.concatenate(parts, dtype=np.float64)

    return _Candidates(
        blocks=tuple(blocks),
        horizon_secs=np.concatenate([hs for _, hs, _ in rows]),
        participation=column("participation"),
        spread_bps=column("spread_bps"),
        impact_bps=column("impact_bps"),
        risk_bps=column("risk_bps"),
        cost_bps=column("cost_bps"),
        score_bps=column("score_bps"),
    )


_ZERO_HORIZON = np.zeros(1, dtype=np.float64)
_ZERO_HORIZON.flags.writeable = False


def price_candidates(
    qty: float,
    stats: MarketStats,
    urgency: float,
    config: SelectorConfig | None = None,
    tick_size: float | None = None,
    volume_weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every (algorithm, horizon) candidate with its modelled costs: columns ``algorithm_id, horizon_secs,
    participation, spread_bps, impact_bps, risk_bps, cost_bps, score_bps``, in tie-break order.

    ``volume_weights``: expected volume per minute from now (any scale, e.g. from
    :func:`profile_weights`), covering the longest horizon; None = flat. ``tick_size``: needed for
    ICEBERG (its limit price); without it ICEBERG is not a candidate.
    """
    priced = _price_arrays(qty, stats, urgency, config or SelectorConfig(), tick_size, volume_weights)
    return pd.DataFrame(
        {
            "algorithm_id": priced.algorithm_id,
            "horizon_secs": priced.horizon_secs,
            "participation": priced.participation,
            "spread_bps": priced.spread_bps,
            "impact_bps": priced.impact_bps,
            "risk_bps": priced.risk_bps,
            "cost_bps": priced.cost_bps,
            "score_bps": priced.score_bps,
        },
        columns=list(_CANDIDATE_COLUMNS),
    )


def _blend(
    model: SquareRootImpact,
    qty: float,
    V: float,
    sig: float,
    s: float,
    h_min: np.ndarray,
    done: np.ndarray,
    scheduled_spread: float,
    scheduled_impact: np.ndarray,
    risk: np.ndarray,
    urgency: float,
) -> CostBreakdown:
    """A schedule that executes ``done`` of the parent as planned and sweeps the rest at the horizon."""
    rest = np.maximum(1.0 - done, 0.0)
    # The sweep is an immediate order of the rest: only its impact term is needed (what model.cost
    # would return as impact_bps, without pricing its spread and risk).
    sweep_impact = model.impact_bps(np.maximum(rest * qty, 1e-12), V, sig, 0.0)
    spread = done * scheduled_spread + rest * s
    impact = done * scheduled_impact + rest * sweep_impact
    cost = spread + impact
    weight = model.params.risk_weight(urgency)
    with np.errstate(invalid="ignore"):
        score = cost + np.where(risk > 0, weight * risk, 0.0)
    rho = model.participation(qty * done, V, np.maximum(h_min, model.params.min_horizon_min))
    return CostBreakdown(rho, spread, impact, risk, cost, score)


def vwap_cap(planned_participation: Any, floor: float) -> np.ndarray:
    """The ``max_participation`` sent to VWAP: ``max(floor, 2 x planned)``, at most 1."""
    return np.minimum(1.0, np.maximum(floor, 2.0 * np.asarray(planned_participation, dtype=np.float64)))


def _vwap_cost(
    model: SquareRootImpact,
    cfg: SelectorConfig,
    qty: float,
    V: float,
    sig: float,
    s: float,
    h_min: np.ndarray,
    leak: float,
    urgency: float,
) -> CostBreakdown:
    h_eff = np.maximum(h_min, cfg.impact.min_horizon_min)
    cap = vwap_cap(qty / (V * h_eff), cfg.vwap_max_participation)
    done = np.minimum(1.0, cap * V * h_eff / qty)
    impact = model.impact_bps(np.maximum(done * qty, 1e-12), V, sig, h_min) * leak
    risk = model.timing_risk_bps(sig, h_min)
    return _blend(model, qty, V, sig, s, h_min, done, s, impact, risk, urgency)


def _iceberg_cost(
    model: SquareRootImpact,
    cfg: SelectorConfig,
    qty: float,
    V: float,
    sig: float,
    s: float,
    h_min: np.ndarray,
    distance_bps: float,
    urgency: float,
) -> CostBreakdown:
    adverse = s if cfg.passive_adverse_selection_bps is None else cfg.passive_adverse_selection_bps
    rate = cfg.passive_participation * V  # contracts per minute the clips can expect
    done = np.minimum(1.0, rate * h_min / qty) * touch_probability(distance_bps, sig * 1e4, h_min)
    t_passive = np.minimum(h_min, qty / rate)
    zero = np.zeros_like(h_min)  # resting clips do not move the price in this model
    # The passive part trades out linearly over t_passive; the rest stays exposed for the whole horizon.
    risk = sig * 1e4 * np.sqrt(done**2 * t_passive / 3.0 + (1.0 - done) ** 2 * h_min)
    return _blend(model, qty, V, sig, s, h_min, done, adverse - s, zero, risk, urgency)


# -- Selector -------------------------------------------------------------------------------------------------


class AlgorithmSelector:
    """Chooses an exec algorithm, its horizon and its ``exec_algorithm_params`` for a parent order."""

    def __init__(self, config: SelectorConfig | None = None) -> None:
        self.config = config or SelectorConfig()

    def candidates(
        self,
        qty: float,
        stats: MarketStats,
        urgency: float = 0.5,
        tick_size: float | None = None,
        volume_profile: VolumeWeights | None = None,
    ) -> pd.DataFrame:
        """:func:`price_candidates` with the expected volume weights taken from ``volume_profile``."""
        weights = self._weights(stats, volume_profile)
        return price_candidates(qty, stats, urgency, self.config, tick_size, weights)

    def _weights(self, stats: MarketStats, volume_profile: VolumeWeights | None) -> np.ndarray | None:
        if volume_profile is None:
            return None
        minutes = math.ceil(max(self.config.horizons_secs) / 60.0 - 1e-9)
        return profile_weights(volume_profile, stats.ts_ns, minutes)

    def select(
        self,
        side: OrderSide | str,
        qty: float,
        stats: MarketStats,
        urgency: float = 0.5,
        tick_size: float | None = None,
        volume_profile: VolumeWeights | None = None,
        size_increment: float = 1.0,
    ) -> Selection:
        """Pick the lowest-score candidate for a parent of ``qty`` on ``side``.

        ``stats`` must be causal (e.g. :class:`~sage.execution.impact.TrailingMarketStats` inside a
        strategy); ``urgency`` in [0, 1] (1 = now); ``tick_size`` enables ICEBERG (its limit price is
        ``passive_offset_ticks`` behind ``stats.price``); ``size_increment`` rounds the Iceberg clip.

        Works on the candidate arrays directly (no DataFrame: this runs once per parent order inside a
        strategy); the result is the one :meth:`candidates` tabulates, row for row.
        """
        is_buy = _is_buy(side)
        weights = self._weights(stats, volume_profile)
        priced = _price_arrays(qty, stats, urgency, self.config, tick_size, weights)
        scores = priced.score_bps
        best = _argmin(scores)
        algo = next(a for a, start, stop in priced.blocks if start <= best < stop)
        horizon = float(priced.horizon_secs[best])
        per_algorithm_costs, per_algorithm_horizons = _per_algorithm_best(priced)
        limit_price = None
        if algo == ICEBERG:
            assert tick_size is not None
            offset = self.config.passive_offset_ticks * tick_size
            limit_price = stats.price - offset if is_buy else stats.price + offset
            limit_price = round(round(limit_price / tick_size) * tick_size, 10)
        return Selection(
            algorithm_id=algo,
            params=self.params_for(algo, horizon, qty, stats, size_increment),
            horizon_secs=horizon,
            order_type="LIMIT" if algo == ICEBERG else "MARKET",
            limit_price=limit_price,
            expected_cost_bps=float(priced.cost_bps[best]),
            risk_bps=float(priced.risk_bps[best]),
            score_bps=float(scores[best]),
            per_algorithm_costs=per_algorithm_costs,
            per_algorithm_horizons=per_algorithm_horizons,
        )

    def evaluate(
        self,
        algorithm_id: str,
        horizon_secs: float,
        side: OrderSide | str,
        qty: float,
        stats: MarketStats,
        urgency: float = 0.5,
        tick_size: float | None = None,
        volume_profile: VolumeWeights | None = None,
        size_increment: float = 1.0,
    ) -> Selection:
        """A :class:`Selection` for a *fixed* choice (e.g. "always TWAP over 10 minutes"), priced and
        parametrised exactly like the selector's own candidates, so fixed and selected routes compare
        like for like. ``per_algorithm_*`` hold only the fixed choice."""
        horizon = 0.0 if algorithm_id == IMMEDIATE else float(horizon_secs)
        cfg = msgspec.structs.replace(
            self.config,
            algorithms=(algorithm_id,),
            horizons_secs=(horizon_secs if horizon > 0 else self.config.horizons_secs[0],),
        )
        one = AlgorithmSelector(cfg)
        sel = one.select(side, qty, stats, urgency, tick_size, volume_profile, size_increment)
        return sel

    def params_for(
        self,
        algorithm_id: str,
        horizon_secs: float,
        qty: float,
        stats: MarketStats,
        size_increment: float = 1.0,
    ) -> dict[str, Any]:
        """``exec_algorithm_params`` that make ``algorithm_id`` run the schedule the model priced."""
        cfg = self.config
        if algorithm_id == IMMEDIATE:
            return {}
        if algorithm_id in (TWAP, VWAP):
            interval = min(cfg.slice_interval_secs, horizon_secs / cfg.min_slices)
            params: dict[str, Any] = {"horizon_secs": float(horizon_secs), "interval_secs": float(interval)}
            if algorithm_id == VWAP:
                h_eff = max(horizon_secs / 60.0, cfg.impact.min_horizon_min)
                params["max_participation"] = float(
                    vwap_cap(qty / (stats.volume_per_min * h_eff), cfg.vwap_max_participation)
                )
            return params
        if algorithm_id == STEALTH:
            a, b = cfg.stealth_slice_fraction
            gap = 0.8 * horizon_secs * 0.5 * (a + b)  # ~1/mean(fraction) slices over 80 % of the horizon
            return {
                "horizon_secs": float(horizon_secs),
                "min_slice_fraction": float(a),
                "max_slice_fraction": float(b),
                "min_interval_secs": float(0.5 * gap),
                "max_interval_secs": float(1.5 * gap),
            }
        if algorithm_id == ICEBERG:
            clip = cfg.passive_participation * stats.volume_per_min * cfg.iceberg_clip_minutes
            clip = max(size_increment, math.floor(min(clip, qty) / size_increment) * size_increment)
            # "cancel": at the horizon the clips stop; a "complete" sweep of an iceberg is a limit order at
            # the primary's price, which does not fill once the market has left it (and then rests).
            return {"visible_qty": float(clip), "horizon_secs": float(horizon_secs), "at_horizon": "cancel"}
        raise ValueError(f"unknown algorithm {algorithm_id!r}; expected one of {ALGORITHMS}")


def _argmin(scores: np.ndarray) -> int:
    """Lowest score; ties (within 1e-9 bps) go to the earliest row, i.e. simpler algorithm, shorter horizon."""
    finite = np.where(np.isfinite(scores), scores, np.inf)
    best = float(finite.min())
    if not math.isfinite(best):
        raise ValueError("no candidate has a finite score")
    return int(np.flatnonzero(finite <= best + 1e-9)[0])


def _per_algorithm_best(priced: _Candidates) -> tuple[dict[str, float], dict[str, float]]:
    """Best score and its horizon per algorithm, keyed in order of first appearance.

    The rule of ``groupby("algorithm_id", sort=False)["score_bps"].idxmin()``: NaN scores are skipped
    and, of equal scores, the first row wins (an exact minimum - unlike :func:`_argmin`, no tolerance).
    An algorithm listed twice in ``SelectorConfig.algorithms`` is one group over both its blocks.
    """
    scores = priced.score_bps
    best_row: dict[str, int] = {}
    for algo, start, stop in priced.blocks:
        block = scores[start:stop]
        low = np.fmin.reduce(block)  # NaN-skipping minimum (NaN only if the whole block is NaN)
        if math.isnan(low):
            best_row.setdefault(algo, -1)
            continue
        row = start + int(np.flatnonzero(block == low)[0])
        seen = best_row.get(algo, -1)
        if seen < 0 or low < scores[seen]:  # a later block wins only on a strictly lower score
            best_row[algo] = row
    costs: dict[str, float] = {}
    horizons: dict[str, float] = {}
    for algo, row in best_row.items():
        if row < 0:
            raise ValueError(f"no candidate of {algo} has a score (all NaN): check tick_size and stats")
        costs[algo] = float(scores[row])
        horizons[algo] = float(priced.horizon_secs[row])
    return costs, horizons


def _is_buy(side: OrderSide | str) -> bool:
    if isinstance(side, str):
        text = side.upper()
        if text not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, got {side!r}")
        return text == "BUY"
    if side not in (OrderSide.BUY, OrderSide.SELL):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    return side == OrderSide.BUY


def build_order(
    order_factory: Any, instrument: Any, side: OrderSide, qty: float, selection: Selection
) -> Any:
    """The Nautilus primary order for ``selection``: a market order, or a GTC limit at ``limit_price``
    for ICEBERG, routed to the selected exec algorithm with its params."""
    common = {
        "instrument_id": instrument.id,
        "order_side": side,
        "quantity": instrument.make_qty(qty),
        "exec_algorithm_id": ExecAlgorithmId(selection.algorithm_id),
        "exec_algorithm_params": dict(selection.params) or None,
    }
    if selection.order_type == "LIMIT":
        return order_factory.limit(
            price=instrument.make_price(selection.limit_price), time_in_force=TimeInForce.GTC, **common
        )
    return order_factory.market(**common)


def fixed_algorithm_costs(
    qty: float,
    stats: MarketStats,
    fixed: Sequence[tuple[str, float]],
    urgency: float = 0.5,
    config: SelectorConfig | None = None,
    tick_size: float | None = None,
    volume_weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Modelled costs of fixed ``(algorithm, horizon_secs)`` configurations (what a desk without a
    selector would run), priced exactly like the selector's candidates; one row per entry of ``fixed``
    with the columns of :func:`price_candidates`."""
    cfg = config or SelectorConfig()
    algos = tuple(dict.fromkeys(a for a, _ in fixed))
    horizons = tuple(sorted({float(h) for a, h in fixed if a != IMMEDIATE})) or cfg.horizons_secs
    table = price_candidates(
        qty,
        stats,
        urgency,
        msgspec.structs.replace(cfg, algorithms=algos, horizons_secs=horizons),
        tick_size,
        volume_weights,
    )
    rows = []
    for algo, h in fixed:
        hit = table[
            (table.algorithm_id == algo) & (np.isclose(table.horizon_secs, 0.0 if algo == IMMEDIATE else h))
        ]
        if hit.empty:
            raise ValueError(f"{algo} at {h}s is not priceable (ICEBERG needs tick_size)")
        rows.append(hit.iloc[0])
    return pd.DataFrame(rows).reset_index(drop=True)
