"""The SAGE combiner: regime-adaptive, uncertainty-aware weights over the agents' signals.

Why a combiner at all: the five agents see different timeframes and patterns, and each is good in some
markets and poor in others. A fixed average ignores both facts; the combiner weights each agent by

    raw_i = performance_i  x  regime_multiplier_i  x  uncertainty_factor_i

then applies a floor and normalises (``w_i = floor + (1 - n floor) raw_i / sum(raw)``, so every agent
keeps at least ``floor``, the weights sum to 1, and hand computation stays easy). The three factors:

* **performance** -- a per-regime *Fixed-Share Hedge* (multiplicative weights, Herbster & Warmuth 1998)
  over each agent's realised PnL. An agent's PnL for a decision is ``direction/2 x log(close_{t+h} /
  close_t) / risk_unit_t`` (clipped to ``+-pnl_clip``): its signal's direction times the return over its
  own horizon ``h`` (in decision bars), in risk units (e.g. ATR / close) so the learning rate means the
  same on every instrument. It is credited on the bar where ``close_{t+h}`` is *known* -- never earlier
  (no look-ahead) -- with ``log W[r, i] += learning_rate / h x p_t[r] x pnl``: each regime row learns in
  proportion to the probability that regime had when the signal was issued, and the ``1/h`` cancels the
  ``h``-fold overlap of a long-horizon agent's returns. Rows are kept at mean 1, then mixed with the
  uniform weights (``W <- (1 - share) W + share``): that is what makes the weight *recent* (old evidence
  decays geometrically) and lets a recovering agent come back. The weight used is ``sum_r p[r] W[r, i]``.
* **regime multiplier** -- a configured table agent x (BULL, BEAR, SIDEWAYS, VOLATILE), probability
  weighted, ``m_i = sum_r p[r] M[i, r]``, and applied only as far as the regime estimate is trusted:
  ``1 + c_R (m_i - 1)``. :func:`fit_regime_multipliers` learns the table from historical agent PnL.
* **uncertainty factor** -- ``1 - entropy_penalty x u_i`` with the agent's *effective uncertainty*
  ``u_i = 1 - c_R (1 - H_i)``: ``H_i`` is the normalised entropy of the agent's action distribution
  (0 = certain, 1 = uniform) and ``c_R`` the regime confidence below. An agent is only as sure as the
  regime context its policy conditions on: when ``c_R`` falls, every ``u_i`` goes to 1 and the factor
  stops telling agents apart.

Regime confidence ``c_R = level_confidence[level] x (1 - regime_entropy_penalty x H(p)) x width_conf``
combines the fallback level (1 = full model .. 5 = last-resort rule), the ambiguity of the regime
probabilities and the calibrated interval width ``RegimeData.uncertainty``: widths are log-return units
that scale with volatility and bar size, so they are compared with a causal EWMA of earlier widths,
``width_conf = 1 / (1 + width_penalty x max(0, width / reference - 1))`` (NaN width: 1 -- an
uncalibrated estimate is already penalised by its level 2).

Outputs (:class:`CombinedResult`): ``signal = sum w_i s_i`` in [-1, 1] from the agents' strengths,
``disagreement = sum w_i (s_i - signal)^2`` (weighted variance), ``uncertainty = sum w_i u_i +
disagreement``, and ``passed`` -- ``|signal| >= consensus_threshold`` and ``uncertainty <=
max_uncertainty``. A factor common to all agents cancels in normalised weights, so regime confidence acts
through the multipliers' strength, the agents' effective uncertainty and hence the uncertainty gate.

Per decision bar the strategy calls :meth:`SageCombiner.step` (credit returns that became known at this
close, combine, record this bar's signals), or the three parts separately. :meth:`SageCombiner.combine`
is pure. State (Hedge weights, pending signals, width reference) survives restarts through
:meth:`SageCombiner.to_state` / :meth:`SageCombiner.from_state`. Pure Python on small lists: a
decision costs a few microseconds (``benchmarks/bench_combiner.py``). See ``docs/combiner.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
import numpy as np

from sage.data.regimes import N_REGIMES

__all__ = [
    "DEFAULT_AGENTS",
    "DEFAULT_HORIZONS",
    "DEFAULT_REGIME_MULTIPLIERS",
    "STATE_FORMAT",
    "STATE_VERSION",
    "CombinedResult",
    "CombinerConfig",
    "CombinerInputError",
    "CombinerStateError",
    "SageCombiner",
    "agent_arrays",
    "fit_regime_multipliers",
    "realised_agent_pnl",
]

#: The agents in the order of ``sage.agents.observation.AGENTS`` (repeated here so the combiner has no
#: dependency on the agents package; the strategy passes names, and they are matched by name).
DEFAULT_AGENTS: tuple[str, ...] = ("fvg", "momentum", "entry", "trend", "mean_reversion")

#: Horizon of each default agent in *decision bars* (5-minute bars): tactical agents act on 5-minute
#: bars (1 bar), strategic agents on 30-minute bars (6 bars).
DEFAULT_HORIZONS: tuple[int, ...] = (1, 1, 1, 6, 6)

#: Prior regime multipliers (rows: DEFAULT_AGENTS; columns: BULL, BEAR, SIDEWAYS, VOLATILE). Rationale:
#: trend and momentum followers earn in persistent trends and are whipsawed in ranges; mean reversion is
#: the reverse; fair-value-gap fills are most reliable in quiet ranges; every tactical agent is noisier
#: in volatile markets. Priors only -- replace them with :func:`fit_regime_multipliers` on your data.
DEFAULT_REGIME_MULTIPLIERS: tuple[tuple[float, float, float, float], ...] = (
    (1.0, 1.0, 1.1, 0.8),  # fvg
    (1.3, 1.3, 0.6, 0.9),  # momentum
    (1.0, 1.0, 1.0, 0.8),  # entry
    (1.4, 1.4, 0.5, 0.8),  # trend
    (0.6, 0.6, 1.4, 1.0),  # mean_reversion
)

STATE_FORMAT = "sage.strategy.combiner"
STATE_VERSION = 1

_LN5 = math.log(5.0)
_LN4 = math.log(float(N_REGIMES))
_N_ACTIONS = 5


class CombinerInputError(ValueError):
    """Inputs to the combiner are malformed (wrong length, unknown agent, NaN, out of range)."""


class CombinerStateError(ValueError):
    """A saved combiner state cannot be restored: corrupt, from another program, version or agent set."""


class CombinerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of :class:`SageCombiner`. Frozen and JSON-serialisable (part of the strategy config)."""

    agents: tuple[str, ...] = DEFAULT_AGENTS
    """Agent names, the row order of ``regime_multipliers`` and ``horizons`` (default the five sage
    agents in ``sage.agents.observation.AGENTS`` order)."""

    horizons: tuple[int, ...] = DEFAULT_HORIZONS
    """Each agent's PnL horizon in decision bars (default 1 for the 5-minute tactical agents, 6 for the
    30-minute strategic ones, when the strategy decides on 5-minute bars)."""

    learning_rate: float = 0.1
    """Hedge learning rate per unit of PnL (PnL is in risk units, clipped to ``pnl_clip``; default 0.1,
    near the textbook ``sqrt(8 ln n / T)`` for 5 agents over ~1000 credited bars)."""

    share: float = 0.01
    """Fixed-share mixing towards uniform per credited bar (default 0.01: evidence half-life ~70 bars;
    0 = plain Hedge, which never forgets)."""

    pnl_clip: float = 3.0
    """Per-credit PnL clip in risk units (default 3): one gap bar cannot wipe out an agent's weight."""

    regime_multipliers: tuple[tuple[float, ...], ...] = DEFAULT_REGIME_MULTIPLIERS
    """Agent x regime (BULL, BEAR, SIDEWAYS, VOLATILE) multiplier table, positive (default
    :data:`DEFAULT_REGIME_MULTIPLIERS`, documented priors)."""

    level_confidence: tuple[float, float, float, float, float] = (1.0, 0.8, 0.6, 0.4, 0.2)
    """Regime confidence per fallback level 1..5 (default 1.0 full model .. 0.2 last-resort rule)."""

    regime_entropy_penalty: float = 0.5
    """How much ambiguous regime probabilities lower regime confidence, in [0, 1] (default 0.5: a
    uniform distribution halves it)."""

    width_penalty: float = 1.0
    """How much a calibrated interval wider than usual lowers regime confidence (default 1.0: twice
    the usual width halves it; 0 disables)."""

    width_halflife: float = 500.0
    """Half-life in decision bars of the EWMA reference width (default 500)."""

    entropy_penalty: float = 0.5
    """Uncertainty factor ``1 - entropy_penalty x u_i``, in [0, 1) (default 0.5: a fully uncertain
    agent counts half as much as a certain one)."""

    weight_floor: float = 0.02
    """Minimum normalised weight of every agent present, ``n x floor < 1`` (default 0.02)."""

    consensus_threshold: float = 0.3
    """Minimum ``|signal|`` for a trade (default 0.3)."""

    max_uncertainty: float = 1.0
    """Maximum combined uncertainty for a trade (default 1.0; the combined uncertainty lies in [0, 2])."""

    def __post_init__(self) -> None:
        n = len(self.agents)
        if n == 0 or len(set(self.agents)) != n or not all(isinstance(a, str) and a for a in self.agents):
            raise ValueError(f"agents must be distinct non-empty names, got {self.agents}")
        if len(self.horizons) != n or any(int(h) != h or h < 1 for h in self.horizons):
            raise ValueError(f"horizons must be {n} integers >= 1 (one per agent), got {self.horizons}")
        m = self.regime_multipliers
        if len(m) != n or any(len(row) != N_REGIMES for row in m):
            raise ValueError(f"regime_multipliers must be {n} rows (agents) of {N_REGIMES} regimes")
        if not all(math.isfinite(x) and x > 0 for row in m for x in row):
            raise ValueError("regime_multipliers must be finite and > 0")
        lc = self.level_confidence
        if len(lc) != 5 or not all(0.0 <= x <= 1.0 for x in lc):
            raise ValueError(f"level_confidence must be 5 values in [0, 1], got {lc}")
        checks = {
            "learning_rate": self.learning_rate >= 0,
            "share": 0.0 <= self.share < 1.0,
            "pnl_clip": self.pnl_clip > 0,
            "regime_entropy_penalty": 0.0 <= self.regime_entropy_penalty <= 1.0,
            "width_penalty": self.width_penalty >= 0,
            "width_halflife": self.width_halflife > 0,
            "entropy_penalty": 0.0 <= self.entropy_penalty < 1.0,
            "weight_floor": 0.0 <= self.weight_floor and n * self.weight_floor < 1.0,
            "consensus_threshold": 0.0 <= self.consensus_threshold <= 1.0,
            "max_uncertainty": self.max_uncertainty >= 0,
        }
        bad = [name for name, ok in checks.items() if not (ok and math.isfinite(getattr(self, name)))]
        if bad:
            raise ValueError(
                f"invalid CombinerConfig value(s): {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)}"
            )


class CombinedResult(NamedTuple):
    """One combination. Per-agent tuples follow ``agents`` (the order the caller passed)."""

    signal: float
    """Weighted signal in [-1, 1]."""
    uncertainty: float
    """Weighted effective agent uncertainty + disagreement, in [0, 2]."""
    disagreement: float
    """Weighted variance of the agents' strengths around ``signal``, in [0, 1]."""
    threshold: float
    """The consensus threshold applied."""
    passed: bool
    """``|signal| >= threshold`` and ``uncertainty <= max_uncertainty``."""
    blocked_by: str | None
    """Why not passed: ``"threshold"``, ``"uncertainty"`` or None when passed."""
    regime_confidence: float
    """``c_R`` in [0, 1]."""
    agents: tuple[str, ...]
    weights: tuple[float, ...]
    performance_weights: tuple[float, ...]
    regime_multipliers: tuple[float, ...]
    """Effective multipliers ``1 + c_R (m_i - 1)``."""
    uncertainty_factors: tuple[float, ...]
    agent_uncertainties: tuple[float, ...]
    """Effective uncertainties ``u_i``."""
    strengths: tuple[float, ...]
    directions: tuple[int, ...]


class _Pending(msgspec.Struct, array_like=True):
    """A signal waiting for its return: issued at ``close`` (with that bar's ``risk_unit`` and regime
    ``probabilities``), credited at decision bar number ``due`` (= the bar it was issued + horizon)."""

    due: int
    agent: int
    direction: int
    close: float
    risk_unit: float
    probabilities: tuple[float, float, float, float]


class _State(msgspec.Struct, kw_only=True):
    """The serialised combiner (see :meth:`SageCombiner.to_state`)."""

    format: str
    version: int
    config: CombinerConfig
    step: int
    weights: list[list[float]]
    width_reference: float | None
    pending: list[_Pending]
    credits: list[int]


def _entropy(p: Sequence[float]) -> float:
    """Shannon entropy (nats) of a possibly unnormalised, float32-rounded distribution; -1 if invalid.

    ``H = log t - sum(x log x) / t`` with ``t = sum(x)``: one pass, no normalised copy.
    """
    total = sum(p)
    if not (0.0 < total < math.inf) or min(p) < 0.0:
        return -1.0
    acc = 0.0
    for x in p:
        if x > 0.0:
            acc += x * math.log(x)
    return max(0.0, math.log(total) - acc / total)


class SageCombiner:
    """Regime-adaptive, uncertainty-aware combination of agent signals with online Hedge weights.

    >>> comb = SageCombiner(CombinerConfig())
    >>> res = comb.step(close=4500.0, risk_unit=0.001, agents=..., directions=..., strengths=...,
    ...                 probabilities=..., regime_label=0, regime_probabilities=..., regime_level=1,
    ...                 regime_uncertainty=0.004)
    """

    def __init__(self, config: CombinerConfig | None = None) -> None:
        self.config = config = config or CombinerConfig()
        n = len(config.agents)
        self._n = n
        self._index = {name: i for i, name in enumerate(config.agents)}
        self._mult = [list(map(float, row)) for row in config.regime_multipliers]
        self._eta = [config.learning_rate / h for h in config.horizons]
        self._width_decay = 0.5 ** (1.0 / config.width_halflife)
        self._cache: dict[tuple[str, ...], tuple[int, ...]] = {}
        # state
        self._weights: list[list[float]] = [[1.0] * n for _ in range(N_REGIMES)]
        self._width_reference: float | None = None
        self._step = 0
        self._due: dict[int, list[_Pending]] = {}  # step -> signals credited at that step
        self._credits = [0] * n

    # -- inspection ---------------------------------------------------------------------------------

    @property
    def agents(self) -> tuple[str, ...]:
        return self.config.agents

    @property
    def performance_table(self) -> np.ndarray:
        """Hedge weights, shape (4 regimes, n agents), each row mean 1 (a copy)."""
        return np.array(self._weights, dtype=np.float64)

    @property
    def width_reference(self) -> float | None:
        """EWMA of the regime interval widths seen so far (None before the first finite width)."""
        return self._width_reference

    @property
    def steps(self) -> int:
        """Decision bars recorded so far."""
        return self._step

    @property
    def credits(self) -> tuple[int, ...]:
        """Number of PnL credits applied per configured agent."""
        return tuple(self._credits)

    @property
    def pending(self) -> int:
        """Signals still waiting for their return."""
        return sum(map(len, self._due.values()))

    # -- the decision step ----------------------------------------------------------------------------

    def step(
        self,
        *,
        close: float,
        risk_unit: float,
        agents: Sequence[str],
        directions: Sequence[int],
        strengths: Sequence[float],
        probabilities: Sequence[Sequence[float]],
        regime_label: int,
        regime_probabilities: Sequence[float],
        regime_level: int,
        regime_uncertainty: float = math.nan,
    ) -> CombinedResult:
        """One decision bar: :meth:`credit` what ``close`` realises, :meth:`combine`, :meth:`record`.

        Inputs are validated once. If the combination's inputs are rejected (an exception), the credits
        this close realised stay applied and the bar still counts, without recording its signals -- the
        state stays consistent, as after :meth:`skip`.
        """
        _check_positive(close, "close")
        _check_positive(risk_unit, "risk_unit (e.g. ATR / close)")
        idx = self._indices(agents)
        dirs = _ints(directions, len(idx), "directions")
        p_r = _regime_probabilities(regime_probabilities)
        self._credit(math.log(close))
        try:
            result = self._combine(
                agents,
                idx,
                dirs,
                strengths,
                probabilities,
                regime_label,
                p_r,
                regime_level,
                regime_uncertainty,
            )
        except BaseException:
            self._step += 1
            raise
        self._record(close, risk_unit, idx, dirs, p_r, regime_uncertainty)
        return result

    def skip(self, close: float) -> int:
        """A decision bar without signals to record (warming up, no regime yet): credit what ``close``
        realises and count the bar, so the agents' horizons stay measured in decision bars."""
        n = self.credit(close)
        self._step += 1
        return n

    def combine(
        self,
        agents: Sequence[str],
        directions: Sequence[int],
        strengths: Sequence[float],
        probabilities: Sequence[Sequence[float]],
        *,
        regime_label: int,
        regime_probabilities: Sequence[float],
        regime_level: int,
        regime_uncertainty: float = math.nan,
    ) -> CombinedResult:
        """Combine the agents' signals under the current weights. Pure: changes no state.

        ``agents`` may be any non-empty subset of the configured agents, in any order (e.g. only the
        tactical agents before the first strategic bar); results follow the order given.
        """
        idx = self._indices(agents)
        dirs = _ints(directions, len(idx), "directions")
        p_r = _regime_probabilities(regime_probabilities)
        return self._combine(
            agents, idx, dirs, strengths, probabilities, regime_label, p_r, regime_level, regime_uncertainty
        )

    def _combine(
        self,
        agents: Sequence[str],
        idx: tuple[int, ...],
        dirs: list[int],
        strengths: Sequence[float],
        probabilities: Sequence[Sequence[float]],
        regime_label: int,
        p_r: tuple[float, float, float, float],
        regime_level: int,
        regime_uncertainty: float,
    ) -> CombinedResult:
        cfg = self.config
        n = len(idx)
        strengths = _floats(strengths, n, "strengths")
        if isinstance(probabilities, np.ndarray):
            probabilities = probabilities.tolist()
        if len(probabilities) != n:
            raise CombinerInputError(
                f"probabilities: expected {n} rows (one per agent), got {len(probabilities)}"
            )
        if regime_label not in (0, 1, 2, 3):
            raise CombinerInputError(f"regime_label must be a regime code 0..3, got {regime_label!r}")
        if regime_level not in (1, 2, 3, 4, 5):
            raise CombinerInputError(f"regime_level must be a fallback level 1..5, got {regime_level!r}")
        c_r = self.regime_confidence(p_r, regime_level, regime_uncertainty)

        M = self._mult
        k = cfg.entropy_penalty
        perf = [0.0] * n
        mult = [0.0] * n
        unc_f = [0.0] * n
        u_eff = [0.0] * n
        raw = [0.0] * n
        total = 0.0
        p0, p1, p2, p3 = p_r
        w0, w1, w2, w3 = self._weights
        log = math.log
        for j in range(n):
            i = idx[j]
            s = strengths[j]
            if not -1.0 <= s <= 1.0:
                raise CombinerInputError(
                    f"strengths[{j}] ({agents[j]}): expected a finite value in [-1, 1], got {s!r}"
                )
            pj = probabilities[j]
            if len(pj) != _N_ACTIONS:
                raise CombinerInputError(
                    f"probabilities[{j}] ({agents[j]}): expected 5 values, got {len(pj)}"
                )
            # normalised entropy, inline (see _entropy): H = log t - sum(x log x) / t
            t = sum(pj)
            if not (0.0 < t < math.inf) or min(pj) < 0.0:
                raise CombinerInputError(
                    f"probabilities[{j}] ({agents[j]}): must be finite, >= 0 and not all 0, got {list(pj)}"
                )
            acc = 0.0
            for x in pj:
                if x > 0.0:
                    acc += x * log(x)
            h = max(0.0, log(t) - acc / t) / _LN5
            u = 1.0 - c_r * (1.0 - h)
            f = 1.0 - k * u
            perf_i = p0 * w0[i] + p1 * w1[i] + p2 * w2[i] + p3 * w3[i]
            m = M[i]
            m_i = 1.0 + c_r * (p0 * m[0] + p1 * m[1] + p2 * m[2] + p3 * m[3] - 1.0)
            r = perf_i * m_i * f
            perf[j] = perf_i
            mult[j] = m_i
            unc_f[j] = f
            u_eff[j] = u
            raw[j] = r
            total += r

        floor = cfg.weight_floor
        if total > 0.0:
            scale = (1.0 - n * floor) / total
            weights = [floor + scale * r for r in raw]
        else:  # cannot happen with a valid config (every factor > 0), but never divide by zero
            weights = [1.0 / n] * n
        signal = 0.0
        for w, s in zip(weights, strengths):
            signal += w * s
        signal = min(1.0, max(-1.0, signal))
        disagreement = 0.0
        weighted_u = 0.0
        for w, s, u in zip(weights, strengths, u_eff):
            disagreement += w * (s - signal) * (s - signal)
            weighted_u += w * u
        uncertainty = weighted_u + disagreement
        threshold = cfg.consensus_threshold
        if abs(signal) < threshold:
            blocked: str | None = "threshold"
        elif uncertainty > cfg.max_uncertainty:
            blocked = "uncertainty"
        else:
            blocked = None
        return CombinedResult(
            signal,
            uncertainty,
            disagreement,
            threshold,
            blocked is None,
            blocked,
            c_r,
            agents if type(agents) is tuple else tuple(agents),
            tuple(weights),
            tuple(perf),
            tuple(mult),
            tuple(unc_f),
            tuple(u_eff),
            tuple(strengths),
            tuple(dirs),
        )

    def regime_confidence(self, regime_probabilities: Sequence[float], level: int, width: float) -> float:
        """``c_R`` in [0, 1] from the fallback level, the regime probabilities' entropy and the width."""
        cfg = self.config
        h = _entropy(regime_probabilities)
        if h < 0.0:
            raise CombinerInputError(f"regime_probabilities invalid: {list(regime_probabilities)}")
        c = cfg.level_confidence[level - 1] * (1.0 - cfg.regime_entropy_penalty * h / _LN4)
        ref = self._width_reference
        if ref is not None and width > 0.0 and width != math.inf and cfg.width_penalty > 0.0:
            c /= 1.0 + cfg.width_penalty * max(0.0, width / ref - 1.0)
        return c

    # -- learning -------------------------------------------------------------------------------------

    def record(
        self,
        *,
        close: float,
        risk_unit: float,
        agents: Sequence[str],
        directions: Sequence[int],
        regime_probabilities: Sequence[float],
        regime_uncertainty: float = math.nan,
    ) -> None:
        """Register this decision bar's signals, to be credited ``horizon`` bars later; count the bar.

        ``risk_unit`` is the log-return size of one unit of risk at this bar (e.g. ATR / close); PnL is
        measured in it. Also folds a finite positive ``regime_uncertainty`` into the width reference.
        """
        _check_positive(close, "close")
        _check_positive(risk_unit, "risk_unit (e.g. ATR / close)")
        idx = self._indices(agents)
        dirs = _ints(directions, len(idx), "directions")
        self._record(
            close, risk_unit, idx, dirs, _regime_probabilities(regime_probabilities), regime_uncertainty
        )

    def _record(
        self,
        close: float,
        risk_unit: float,
        idx: tuple[int, ...],
        dirs: list[int],
        p_r: tuple[float, float, float, float],
        regime_uncertainty: float,
    ) -> None:
        step = self._step
        horizons = self.config.horizons
        due = self._due
        close = float(close)
        risk_unit = float(risk_unit)
        for i, d in zip(idx, dirs):
            when = step + horizons[i]
            rec = _Pending(when, i, d, close, risk_unit, p_r)
            bucket = due.get(when)
            if bucket is None:
                due[when] = [rec]
            else:
                bucket.append(rec)
        if regime_uncertainty > 0.0 and regime_uncertainty != math.inf:
            ref = self._width_reference
            a = self._width_decay
            self._width_reference = (
                float(regime_uncertainty) if ref is None else a * ref + (1.0 - a) * regime_uncertainty
            )
        self._step = step + 1

    def credit(self, close: float) -> int:
        """Credit every pending signal whose horizon ends at this bar, at this bar's ``close``.

        Call once per decision bar *before* :meth:`combine` (as :meth:`step` does): a signal recorded
        ``h`` bars ago is realised by the close of the current bar and by nothing later. Signals left
        overdue by a bar without ``credit`` are credited at the next call (a longer horizon, never an
        earlier one). Returns the number of credits applied.
        """
        _check_positive(close, "close")
        return self._credit(math.log(close))

    def _credit(self, log_close: float) -> int:
        due, step = self._due, self._step
        if due and min(due) < step:  # overdue signals (record() without credit() on some bar): now
            recs = [rec for when in sorted(w for w in due if w <= step) for rec in due.pop(when)]
        else:
            recs = due.pop(step, None)
        if not recs:
            return 0
        W = self._weights
        w0, w1, w2, w3 = W
        clip = self.config.pnl_clip
        eta = self._eta
        exp = math.exp
        credits = self._credits
        for rec in recs:
            i = rec.agent
            credits[i] += 1
            d = rec.direction
            if d == 0:
                continue
            pnl = 0.5 * d * (log_close - math.log(rec.close)) / rec.risk_unit
            pnl = min(clip, max(-clip, pnl))
            g = eta[i] * pnl
            p0, p1, p2, p3 = rec.probabilities
            w0[i] *= exp(g * p0)
            w1[i] *= exp(g * p1)
            w2[i] *= exp(g * p2)
            w3[i] *= exp(g * p3)
        n = self._n
        share = self.config.share
        keep = 1.0 - share
        for row in W:
            scale = keep * n / sum(row)
            for i in range(n):
                row[i] = row[i] * scale + share
        return len(recs)

    @staticmethod
    def pnl(direction: int, log_return: float, risk_unit: float, clip: float) -> float:
        """An agent's realised PnL for one signal, in risk units: ``direction/2 x return / risk_unit``,
        clipped to ``+-clip`` (the arithmetic :meth:`credit` applies)."""
        x = 0.5 * direction * log_return / risk_unit
        return min(clip, max(-clip, x))

    # -- persistence ----------------------------------------------------------------------------------

    def to_state(self) -> bytes:
        """Versioned JSON of everything learned (for ``Strategy.on_save``)."""
        state = _State(
            format=STATE_FORMAT,
            version=STATE_VERSION,
            config=self.config,
            step=self._step,
            weights=[list(row) for row in self._weights],
            width_reference=self._width_reference,
            pending=[rec for when in sorted(self._due) for rec in self._due[when]],
            credits=list(self._credits),
        )
        return msgspec.json.encode(state)

    @classmethod
    def from_state(cls, data: bytes, config: CombinerConfig | None = None) -> SageCombiner:
        """Rebuild a combiner from :meth:`to_state` bytes (for ``Strategy.on_load``).

        ``config`` (e.g. the strategy's current one, with newly fitted multipliers) replaces the saved
        config; its agents and horizons must match the saved ones, since the learned weights and
        pending signals are indexed by them. Raises :class:`CombinerStateError` on anything else.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CombinerStateError(f"combiner state must be bytes, got {type(data).__name__}")
        try:
            head = msgspec.json.decode(data)
        except msgspec.DecodeError as e:
            raise CombinerStateError(f"combiner state is not valid JSON ({e})") from None
        if not isinstance(head, dict) or head.get("format") != STATE_FORMAT:
            found = head.get("format") if isinstance(head, dict) else type(head).__name__
            raise CombinerStateError(f"not a combiner state (format {found!r}, expected {STATE_FORMAT!r})")
        if head.get("version") != STATE_VERSION:
            raise CombinerStateError(
                f"unsupported combiner state version {head.get('version')!r} (this sage reads {STATE_VERSION})"
            )
        try:
            state = msgspec.json.decode(data, type=_State)
        except (msgspec.ValidationError, ValueError) as e:
            raise CombinerStateError(f"corrupt combiner state: {e}") from None
        if config is None:
            config = state.config
        elif config.agents != state.config.agents or config.horizons != state.config.horizons:
            raise CombinerStateError(
                f"combiner state was saved for agents {state.config.agents} with horizons "
                f"{state.config.horizons}, not {config.agents} / {config.horizons}"
            )
        n = len(config.agents)
        w = state.weights
        if len(w) != N_REGIMES or any(len(row) != n for row in w):
            raise CombinerStateError(f"corrupt combiner state: weights must be {N_REGIMES} x {n}")
        if not all(math.isfinite(x) and x > 0 for row in w for x in row):
            raise CombinerStateError("corrupt combiner state: weights must be finite and > 0")
        if state.step < 0 or len(state.credits) != n or any(c < 0 for c in state.credits):
            raise CombinerStateError("corrupt combiner state: step/credits out of range")
        ref = state.width_reference
        if ref is not None and not (math.isfinite(ref) and ref > 0):
            raise CombinerStateError(f"corrupt combiner state: width_reference {ref!r}")
        for rec in state.pending:
            ok = (
                0 <= rec.agent < n
                and -2 <= rec.direction <= 2
                and 0 < rec.due <= state.step + config.horizons[rec.agent]
                and math.isfinite(rec.close)
                and rec.close > 0
                and math.isfinite(rec.risk_unit)
                and rec.risk_unit > 0
                and all(math.isfinite(p) and p >= 0 for p in rec.probabilities)
            )
            if not ok:
                raise CombinerStateError(f"corrupt combiner state: pending signal {rec!r}")
        comb = cls(config)
        comb._weights = [list(map(float, row)) for row in w]
        comb._width_reference = ref
        comb._step = state.step
        for rec in state.pending:
            comb._due.setdefault(rec.due, []).append(rec)
        comb._credits = list(state.credits)
        return comb

    # -- helpers ----------------------------------------------------------------------------------------

    def _indices(self, agents: Sequence[str]) -> tuple[int, ...]:
        key = agents if isinstance(agents, tuple) else tuple(agents)
        idx = self._cache.get(key)
        if idx is None:
            unknown = [a for a in key if a not in self._index]
            if unknown or not key or len(set(key)) != len(key):
                raise CombinerInputError(
                    f"agents must be a non-empty list of distinct configured agents {self.config.agents}, "
                    f"got {list(key)}"
                )
            idx = tuple(self._index[a] for a in key)
            self._cache[key] = idx
        return idx


def _check_positive(x: float, name: str) -> None:
    if not (x > 0.0 and x != math.inf):
        raise CombinerInputError(f"{name} must be finite and > 0, got {x!r}")


def _floats(values: Any, n: int, name: str) -> list[float]:
    out = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if len(out) != n:
        raise CombinerInputError(f"{name}: expected {n} values (one per agent), got {len(out)}")
    return [float(x) for x in out]


_DIRECTIONS = frozenset((-2, -1, 0, 1, 2))


def _ints(values: Any, n: int, name: str) -> list[int]:
    out = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if len(out) != n:
        raise CombinerInputError(f"{name}: expected {n} values (one per agent), got {len(out)}")
    if not _DIRECTIONS.issuperset(out):
        raise CombinerInputError(f"{name}: expected integers in -2..2, got {out}")
    return [int(x) for x in out]


def _regime_probabilities(values: Any) -> tuple[float, float, float, float]:
    p = values.tolist() if isinstance(values, np.ndarray) else list(values)
    if len(p) != N_REGIMES:
        raise CombinerInputError(f"regime_probabilities: expected {N_REGIMES} values, got {len(p)}")
    total = 0.0
    for x in p:
        if not (x >= 0.0 and x != math.inf):
            raise CombinerInputError(f"regime_probabilities must be finite and >= 0, got {p}")
        total += x
    if not total > 0.0:
        raise CombinerInputError(f"regime_probabilities sum to 0: {p}")
    return (p[0] / total, p[1] / total, p[2] / total, p[3] / total)


# -- batch helpers ------------------------------------------------------------------------------------


def realised_agent_pnl(
    directions: np.ndarray,
    close: np.ndarray,
    risk_unit: np.ndarray,
    horizons: Sequence[int],
    pnl_clip: float = 3.0,
) -> np.ndarray:
    """Batch form of the PnL :meth:`SageCombiner.credit` applies: ``pnl[t, i]`` is agent ``i``'s PnL for
    its signal at decision bar ``t``, known at bar ``t + h_i`` (NaN where that bar is past the end).

    ``directions`` (T, n) ints -2..2, ``close`` (T,) > 0, ``risk_unit`` (T,) > 0. The exact arithmetic
    of the streaming credit, so the two agree; use it to build the input of :func:`fit_regime_multipliers`.
    """
    d = np.asarray(directions)
    c = np.asarray(close, dtype=np.float64)
    ru = np.asarray(risk_unit, dtype=np.float64)
    if d.ndim != 2 or c.shape != (d.shape[0],) or ru.shape != c.shape or len(horizons) != d.shape[1]:
        raise CombinerInputError(
            f"expected directions (T, n), close (T,), risk_unit (T,), n horizons; got {d.shape}, "
            f"{c.shape}, {ru.shape}, {len(horizons)}"
        )
    if not (np.isfinite(c).all() and (c > 0).all() and np.isfinite(ru).all() and (ru > 0).all()):
        raise CombinerInputError("close and risk_unit must be finite and > 0")
    if not np.isin(d, (-2, -1, 0, 1, 2)).all():
        raise CombinerInputError("directions must be integers in -2..2")
    T, n = d.shape
    out = np.full((T, n), np.nan)
    log_c = np.log(c)
    for i, h in enumerate(horizons):
        if h < T:
            ret = log_c[h:] - log_c[:-h]
            x = 0.5 * d[:-h, i] * ret / ru[:-h]
            out[:-h, i] = np.clip(x, -pnl_clip, pnl_clip)
    return out


def fit_regime_multipliers(
    agent_pnl: np.ndarray,
    regimes: np.ndarray,
    *,
    prior_strength: float = 200.0,
    sensitivity: float = 5.0,
    bounds: tuple[float, float] = (0.25, 4.0),
) -> tuple[tuple[float, float, float, float], ...]:
    """Learn the agent x regime multiplier table from historical agent PnL.

    ``agent_pnl`` (T, n): per-bar PnL of each agent (e.g. :func:`realised_agent_pnl`; NaN rows are
    skipped per agent). ``regimes``: (T,) regime codes 0..3, or (T, 4) regime probabilities (each bar then
    counts towards every regime with its probability weight).

    Per agent and regime: the weighted information ratio ``IR = mean / std`` of its PnL, shrunk towards 0
    by the evidence, ``IR x n / (n + prior_strength)`` (``n`` = the regime's weighted bar count), mapped to
    ``exp(sensitivity x IR)``, each regime column normalised to mean 1 over agents (only ratios inside a
    column matter to normalised weights) and clipped to ``bounds``. A regime with no data keeps 1.0.
    Returns rows for ``CombinerConfig.regime_multipliers`` (same agent order as the columns of
    ``agent_pnl``).
    """
    pnl = np.asarray(agent_pnl, dtype=np.float64)
    if pnl.ndim != 2 or pnl.shape[0] == 0:
        raise CombinerInputError(f"agent_pnl must be (T, n_agents) with T > 0, got shape {pnl.shape}")
    T, n = pnl.shape
    reg = np.asarray(regimes)
    if reg.ndim == 1:
        if reg.shape != (T,) or not np.isin(reg, (0, 1, 2, 3)).all():
            raise CombinerInputError(f"regimes must be {T} codes in 0..3")
        probs = np.zeros((T, N_REGIMES))
        probs[np.arange(T), reg.astype(np.int64)] = 1.0
    elif reg.shape == (T, N_REGIMES):
        probs = reg.astype(np.float64)
        if not (np.isfinite(probs).all() and (probs >= 0).all()):
            raise CombinerInputError("regime probabilities must be finite and >= 0")
    else:
        raise CombinerInputError(f"regimes must be ({T},) codes or ({T}, 4) probabilities, got {reg.shape}")
    if np.isinf(pnl).any():
        raise CombinerInputError("agent_pnl must not contain +-inf")
    if not prior_strength >= 0 or not sensitivity >= 0 or not 0 < bounds[0] <= 1.0 <= bounds[1]:
        raise CombinerInputError(
            "need prior_strength >= 0, sensitivity >= 0, 0 < bounds[0] <= 1 <= bounds[1]"
        )

    table = np.ones((n, N_REGIMES))
    for r in range(N_REGIMES):
        col = np.ones(n)
        has_data = False
        for i in range(n):
            ok = np.isfinite(pnl[:, i])
            w = probs[ok, r]
            x = pnl[ok, i]
            n_eff = w.sum()
            if n_eff <= 1.0:
                continue
            has_data = True
            mean = float(np.dot(w, x) / n_eff)
            var = float(np.dot(w, (x - mean) ** 2) / n_eff)
            ir = mean / math.sqrt(var) if var > 0 else 0.0
            ir *= n_eff / (n_eff + prior_strength)
            col[i] = math.exp(sensitivity * ir)
        if has_data:
            table[:, r] = np.clip(col / col.mean(), bounds[0], bounds[1])
    return tuple(tuple(float(x) for x in row) for row in table)


def agent_arrays(
    outputs: Sequence[Any],
) -> tuple[tuple[str, ...], tuple[int, ...], tuple[float, ...], tuple[tuple[float, ...], ...]]:
    """``(agents, directions, strengths, probabilities)`` from agent outputs (``sage.agents.AgentOutput``
    or anything with those attribute names): the plain inputs of :meth:`SageCombiner.combine`."""
    return (
        tuple(o.agent for o in outputs),
        tuple(int(o.direction) for o in outputs),
        tuple(float(o.strength) for o in outputs),
        tuple(tuple(o.probabilities) for o in outputs),
    )
