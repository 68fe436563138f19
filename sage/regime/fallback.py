"""Five-level fallback chain: the regime detector always publishes, and says how it got its answer.

Why: a regime estimate is an input to every agent; "no estimate this bar" would stall them, and a wrong
estimate from a broken model is worse than a cruder one that is known to be crude. The chain runs the
best level that is currently *healthy* and labels the output with that level (``RegimeData.fallback_level``)
and the reason the better levels were not used.

Levels (by convention; the chain itself only sees callables):

1. full model with calibrated uncertainty (output must carry a finite ``uncertainty``),
2. model without uncertainty,
3. multi-indicator rule detector (:class:`sage.regime.rules.RuleDetector`),
4. volatility-only detector (:class:`sage.regime.rules.VolatilityDetector`),
5. last known regime, decaying towards a prior -- built in, pure arithmetic on stored values, cannot fail.

Per bar, :meth:`FallbackChain.step` walks levels 1..4:

* A **healthy** level is attempted: optional ``health_check(ctx)``, then ``attempt(ctx)``, timed with the
  injected clock, then the output is validated. Success publishes it and stops the walk. Failure marks the
  level **unhealthy** with a :class:`Reason` and the walk continues downwards *in the same bar*.
* An **unhealthy** level is **probed** every ``probe_every`` bars (whether or not a higher level published):
  the same health check + attempt + validation + latency test, its output not published unless it is
  the probe that completes re-entry. ``reentry_probes`` consecutive successful probes make it healthy
  again (a failed probe resets the count to 0), so a level that works one bar in two never comes back --
  no flapping. Re-entry therefore takes ``reentry_probes * probe_every`` bars at least.
* A level whose ``attempt`` is None is **missing** (no checkpoint); :meth:`FallbackChain.set_attempt`
  installs one, after which it re-enters through the same probes.
* **Invalid input** (``input_ok=False``, e.g. a NaN bar or a gap flagged by
  :class:`sage.regime.health.InputValidator`) skips every level with ``blocked_by_input`` for *this bar
  only*: the levels are not at fault and are not marked unhealthy, so the next valid bar goes straight back.

Failure causes (:class:`Reason`): ``EXCEPTION`` (any ``Exception`` from the attempt; ``BaseException`` such
as ``KeyboardInterrupt`` propagates), ``LATENCY`` (``latency_strikes`` consecutive attempts above the level's
``budget_us``), ``HEALTH`` (health check returned False or raised -- e.g. a drift alarm), ``INVALID_OUTPUT``
(probabilities not a finite distribution, bad vector/confidence, or no finite uncertainty where required).

Latency is measured around the attempt with ``clock`` (``time.perf_counter_ns`` by default; inject a fake
clock in tests -- the chain is deterministic given inputs and clock readings). A breach is only known once
the attempt has returned: in-process there is no safe way to abort a running Python/torch call without
threads or processes, which would break determinism and could not stop a C extension anyway. So an
over-budget result that is otherwise valid *is published* (discarding it would only add the cost of a
lower level) with ``LATENCY_BUDGET_EXCEEDED`` set, and the level is left from the next bar on. A call that
hangs forever blocks the bar; guarding against that belongs to a process-level watchdog.

Every change of the published level is appended to ``transitions`` (bounded) and logged on logger
``"sage.regime.fallback"`` (warning when moving down, info when moving up); level health changes are
logged too.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec
import numpy as np

from sage.regime.health import HealthFlag

__all__ = [
    "LAST_RESORT_LEVEL",
    "ChainOutput",
    "FallbackChain",
    "FallbackConfig",
    "Level",
    "LevelOutput",
    "Reason",
    "Transition",
]

logger = logging.getLogger("sage.regime.fallback")

#: The built-in level that cannot fail.
LAST_RESORT_LEVEL: int = 5
_N_ATTEMPT_LEVELS = 4
_VECTOR_SIZE = 8
_N_REGIMES = 4
_SIDEWAYS = 2
_ZERO_VECTOR: tuple[float, ...] = (0.0,) * _VECTOR_SIZE


class Reason(StrEnum):
    """Why a level was (not) used; also the cause recorded on a transition."""

    OK = "ok"
    EXCEPTION = "exception"
    LATENCY = "latency"
    INVALID_INPUT = "invalid_input"
    HEALTH = "health_check"
    INVALID_OUTPUT = "invalid_output"
    MISSING = "missing"
    RECOVERED = "recovered"


@dataclass(frozen=True, slots=True)
class LevelOutput:
    """What a level's ``attempt`` returns (a bare length-4 probability array is accepted too).

    ``probabilities`` (BULL, BEAR, SIDEWAYS, VOLATILE) must be finite, >= 0 and sum to 1 within 1e-6 (then
    renormalised exactly). ``vector`` (8 finite floats) defaults to zeros for levels without an embedding;
    ``confidence`` defaults to the largest probability; ``label`` to the argmax; ``uncertainty`` (calibrated
    interval width, >= 0) to NaN.
    """

    probabilities: Any
    vector: Any = None
    uncertainty: float = math.nan
    confidence: float | None = None
    label: int | None = None


@dataclass(frozen=True, slots=True)
class Level:
    """One of levels 1..4.

    ``attempt(ctx)`` computes the level's output for the bar (should be a cheap read of state that the
    caller updates every bar, so that a level that was not used for a while is current when needed);
    None = missing. ``health_check(ctx) -> bool`` runs first (e.g. ``lambda ctx: not drift.alarm``).
    ``budget_us`` is the attempt's latency budget. ``requires_uncertainty`` makes a NaN uncertainty an
    invalid output (level 1). ``blocked_by_input`` skips the level on bars flagged invalid.
    """

    attempt: Callable[[Any], LevelOutput | Any] | None
    name: str = ""
    health_check: Callable[[Any], bool] | None = None
    budget_us: float = math.inf
    requires_uncertainty: bool = False
    blocked_by_input: bool = True


class FallbackConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters of :class:`FallbackChain`; every field has a documented default."""

    reentry_probes: int = 3
    """Consecutive successful probes an unhealthy or newly installed level needs to re-enter (default 3)."""

    probe_every: int = 5
    """Bars between probes of an unhealthy level (default 5): a probe of a slow model costs its latency
    again, so probing every bar would double the cost of a latency fallback."""

    latency_strikes: int = 1
    """Consecutive over-budget attempts that make a level unhealthy (default 1: leave on the first
    breach, as the issue asks; 2+ tolerates a lone GC pause)."""

    last_known_half_life: float = 100.0
    """Level 5: the last published probabilities decay towards ``prior`` with this half-life in bars
    (default 100), so a long outage ends in "no view" rather than a stale conviction."""

    prior: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)
    """Level 5 probabilities when nothing was ever published (default uniform)."""

    tie_label: int = _SIDEWAYS
    """Label when several regimes tie for the largest probability (default SIDEWAYS = 2, "no view")."""

    bar_budget_us: float = math.inf
    """Budget for the whole step (all attempts and probes); exceeding it sets
    ``LATENCY_BUDGET_EXCEEDED`` (default inf: only per-level budgets count)."""

    max_transitions: int = 10_000
    """Transitions kept in memory (oldest dropped; all are logged)."""

    def __post_init__(self) -> None:
        if self.reentry_probes < 1 or self.probe_every < 1 or self.latency_strikes < 1:
            raise ValueError("reentry_probes, probe_every and latency_strikes must be >= 1")
        if not self.last_known_half_life > 0:
            raise ValueError("last_known_half_life must be > 0")
        p = np.asarray(self.prior, dtype=np.float64)
        if p.shape != (_N_REGIMES,) or not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1.0) > 1e-9:
            raise ValueError(f"prior must be 4 non-negative floats summing to 1, got {self.prior}")
        if self.tie_label not in range(_N_REGIMES):
            raise ValueError(f"tie_label must be a regime code 0..3, got {self.tie_label}")
        if not self.bar_budget_us > 0 or self.max_transitions < 1:
            raise ValueError("bar_budget_us must be > 0 and max_transitions >= 1")


class Transition(msgspec.Struct, frozen=True):
    """A change of the published level."""

    bar: int
    ts: int | None
    from_level: int
    to_level: int
    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ChainOutput:
    """One bar's published regime estimate and how it was obtained.

    ``reason`` is why level 1 was not used (``OK`` at level 1); ``skipped`` lists each level above the
    published one with its reason. ``latency_us`` is the whole step; ``level_latency_us`` the published
    attempt (0 at level 5). :meth:`regime_fields` gives the ``RegimeData`` keyword arguments.
    """

    bar: int
    ts: int | None
    level: int
    reason: Reason
    skipped: tuple[tuple[int, Reason], ...]
    label: int
    probabilities: tuple[float, float, float, float]
    confidence: float
    vector: tuple[float, ...]
    uncertainty: float
    latency_us: float
    level_latency_us: float
    drift: float
    health_flags: int
    transition: Transition | None = None

    def regime_fields(self) -> dict[str, Any]:
        """Fields for ``sage.data.types.RegimeData(instrument_id, model_version=..., ts_event=..., ts_init=...,
        **fields)`` -- the caller adds identity, version and time stamps."""
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "vector": self.vector,
            "confidence": self.confidence,
            "uncertainty": self.uncertainty,
            "fallback_level": self.level,
            "latency_us": self.latency_us,
            "drift": self.drift,
            "health_flags": self.health_flags,
        }


@dataclass(slots=True)
class _LevelState:
    healthy: bool
    reason: Reason = Reason.OK
    detail: str = ""
    streak: int = 0  # consecutive successful probes while unhealthy
    next_probe: int = 0  # first bar at which the next probe may run
    breach_streak: int = 0  # consecutive over-budget attempts
    failures: int = 0
    last_error: str = ""


@dataclass(slots=True)
class _Valid:
    probabilities: tuple[float, ...]
    vector: tuple[float, ...]
    uncertainty: float
    confidence: float
    label: int


@dataclass(slots=True)
class _Attempt:
    ok: bool
    reason: Reason = Reason.OK
    detail: str = ""
    value: _Valid | None = None
    latency_us: float = 0.0
    breached: bool = False


def _floats(values: Any) -> tuple[float, ...]:
    """A flat tuple of Python floats from a sequence or array (raises TypeError/ValueError if not)."""
    if isinstance(values, np.ndarray):
        return tuple(values.astype(np.float64).ravel().tolist())
    if isinstance(values, (str, bytes)):
        raise TypeError(f"expected numbers, got {type(values).__name__}")
    return tuple(float(x) for x in values)


def _argmax_label(p: Sequence[float], tie_label: int) -> int:
    """Index of the largest probability; ``tie_label`` wins a tie it is part of, else the first index."""
    top = max(p)
    winners = [i for i, x in enumerate(p) if x >= top]
    if len(winners) > 1 and tie_label in winners:
        return tie_label
    return winners[0]


@dataclass(slots=True)
class _LastKnown:
    value: _Valid | None = None
    bar: int = 0
    ts: int | None = field(default=None)


class FallbackChain:
    """The per-bar state machine over levels 1..4 plus the built-in level 5.

    Parameters
    ----------
    levels:
        Four entries for levels 1..4: a :class:`Level`, a bare attempt callable, or None (missing).
    config:
        :class:`FallbackConfig`.
    clock:
        Nanosecond clock for latency (default ``time.perf_counter_ns``).

    State: ``bar`` (steps taken), ``level`` (last published level, 5 before the first step),
    ``transitions``, and per-level health (:meth:`level_status`).
    """

    def __init__(
        self,
        levels: Sequence[Level | Callable[[Any], Any] | None],
        config: FallbackConfig | None = None,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if len(levels) != _N_ATTEMPT_LEVELS:
            raise ValueError(f"expected {_N_ATTEMPT_LEVELS} levels (1..4), got {len(levels)}")
        self.config = config if config is not None else FallbackConfig()
        self.clock = clock
        self._levels: list[Level] = [self._as_level(x, i + 1) for i, x in enumerate(levels)]
        self.reset()

    @staticmethod
    def _as_level(x: Level | Callable[[Any], Any] | None, number: int) -> Level:
        if isinstance(x, Level):
            return x if x.name else Level(**{**_level_kwargs(x), "name": f"level{number}"})
        if x is None or callable(x):
            return Level(attempt=x, name=f"level{number}")
        raise TypeError(f"level {number}: expected Level, callable or None, got {type(x).__name__}")

    def reset(self) -> None:
        """Back to the initial state: every present level healthy, nothing published yet."""
        self._state = [
            _LevelState(healthy=lv.attempt is not None, reason=Reason.OK if lv.attempt else Reason.MISSING)
            for lv in self._levels
        ]
        self._last = _LastKnown()
        self.bar = 0
        self.level = LAST_RESORT_LEVEL
        self._published_once = False
        self.transitions: deque[Transition] = deque(maxlen=self.config.max_transitions)

    # -- configuration at run time ----------------------------------------------------------------------

    def set_attempt(self, level: int, attempt: Callable[[Any], Any] | None) -> None:
        """Install (e.g. after loading a checkpoint) or remove a level's attempt.

        An installed level starts unhealthy and re-enters through ``reentry_probes`` probes, starting at
        the next step; None makes it missing.
        """
        i = self._index(level)
        lv = self._levels[i]
        self._levels[i] = Level(**{**_level_kwargs(lv), "attempt": attempt})
        st = self._state[i]
        if attempt is None:
            self._mark_unhealthy(i, Reason.MISSING, "attempt removed")
        else:
            st.healthy = False
            st.reason = Reason.MISSING
            st.detail = "installed, probing"
            st.streak = 0
            st.next_probe = self.bar
            logger.info(
                "regime level %d (%s) installed; re-enters after %d probes",
                level,
                lv.name,
                self.config.reentry_probes,
            )

    def level_status(self, level: int) -> dict[str, Any]:
        """Health of one of levels 1..4, for logs and tests."""
        st = self._state[self._index(level)]
        return {
            "healthy": st.healthy,
            "reason": st.reason,
            "detail": st.detail,
            "probe_streak": st.streak,
            "failures": st.failures,
            "last_error": st.last_error,
            "present": self._levels[self._index(level)].attempt is not None,
        }

    @staticmethod
    def _index(level: int) -> int:
        if level not in range(1, _N_ATTEMPT_LEVELS + 1):
            raise ValueError(f"level must be 1..{_N_ATTEMPT_LEVELS}, got {level}")
        return level - 1

    # -- one bar -------------------------------------------------------------------------------------------

    def step(
        self,
        ctx: Any = None,
        *,
        input_ok: bool = True,
        health_flags: int = 0,
        drift: float = math.nan,
        ts: int | None = None,
    ) -> ChainOutput:
        """Produce this bar's estimate. Never raises for a failing level (only ``BaseException`` escapes).

        ``ctx`` is passed to every attempt and health check. ``input_ok=False`` skips input-dependent
        levels for this bar. ``health_flags`` (caller's :class:`~sage.regime.health.HealthFlag` bits) and
        ``drift`` pass through to the output.
        """
        t_start = self.clock()
        bar = self.bar
        cfg = self.config
        skipped: list[tuple[int, Reason]] = []
        published: tuple[int, _Attempt] | None = None
        recovered: list[str] = []

        for i, lv in enumerate(self._levels):
            number = i + 1
            st = self._state[i]
            if lv.attempt is None:
                if published is None:
                    skipped.append((number, Reason.MISSING))
                continue
            if not input_ok and lv.blocked_by_input:
                if published is None:
                    skipped.append((number, Reason.INVALID_INPUT))
                continue
            if st.healthy:
                if published is not None:
                    continue  # a better level already published; healthy levels below are not run
                res = self._try(i, ctx)
                if res.ok:
                    published = (number, res)
                    if res.breached:
                        st.breach_streak += 1
                        if st.breach_streak >= cfg.latency_strikes:
                            self._mark_unhealthy(i, Reason.LATENCY, res.detail)
                    else:
                        st.breach_streak = 0
                else:
                    self._mark_unhealthy(i, res.reason, res.detail)
                    skipped.append((number, res.reason))
                continue
            # Unhealthy: probe on schedule, whether or not something above published.
            if bar >= st.next_probe:
                st.next_probe = bar + cfg.probe_every
                res = self._try(i, ctx)
                if res.ok and not res.breached:
                    st.streak += 1
                    if st.streak >= cfg.reentry_probes:
                        recovered.append(f"L{number} re-entered after {st.streak} probes (was {st.reason})")
                        self._mark_healthy(i)
                        if published is None:
                            published = (number, res)
                            continue
                else:
                    st.streak = 0
                    if not res.ok:
                        st.last_error = res.detail
            if published is None:
                skipped.append((number, st.reason))

        if published is not None:
            number, res = published
            assert res.value is not None
            value = res.value
            self._last = _LastKnown(value=value, bar=bar, ts=ts)
            level_latency = res.latency_us
            level_breached = res.breached
        else:
            number = LAST_RESORT_LEVEL
            value = self._last_resort(bar)
            level_latency = 0.0
            level_breached = False

        latency_us = (self.clock() - t_start) / 1000.0
        flags = int(health_flags)
        if number > 1:
            flags |= HealthFlag.FALLBACK_ACTIVE
        if math.isnan(value.uncertainty):
            flags |= HealthFlag.UNCALIBRATED
        if level_breached or latency_us > cfg.bar_budget_us:
            flags |= HealthFlag.LATENCY_BUDGET_EXCEEDED

        reason = skipped[0][1] if skipped else Reason.OK
        transition = None
        if not self._published_once or number != self.level:
            if self._published_once:
                going_down = number > self.level
                cause = reason if going_down else Reason.RECOVERED
                detail = "; ".join([f"L{n}: {r}" for n, r in skipped] + recovered)
                transition = Transition(bar, ts, self.level, number, str(cause), detail)
                self.transitions.append(transition)
                log = logger.warning if going_down else logger.info
                log(
                    "regime level %d -> %d at bar %d (ts=%s): %s [%s]",
                    self.level,
                    number,
                    bar,
                    ts,
                    cause,
                    detail,
                )
            self._published_once = True
            self.level = number

        self.bar += 1
        return ChainOutput(
            bar=bar,
            ts=ts,
            level=number,
            reason=reason,
            skipped=tuple(skipped),
            label=value.label,
            probabilities=value.probabilities,  # type: ignore[arg-type]
            confidence=value.confidence,
            vector=value.vector,
            uncertainty=value.uncertainty,
            latency_us=latency_us,
            level_latency_us=level_latency,
            drift=float(drift),
            health_flags=int(flags),
            transition=transition,
        )

    # -- internals ----------------------------------------------------------------------------------------

    def _try(self, i: int, ctx: Any) -> _Attempt:
        lv = self._levels[i]
        assert lv.attempt is not None
        if lv.health_check is not None:
            try:
                healthy = bool(lv.health_check(ctx))
            except Exception as e:  # noqa: BLE001 -- a broken health check is a failed one
                return _Attempt(False, Reason.HEALTH, f"health check raised {e!r}")
            if not healthy:
                return _Attempt(False, Reason.HEALTH, "health check failed")
        t0 = self.clock()
        try:
            raw = lv.attempt(ctx)
        except Exception as e:  # noqa: BLE001 -- any failure of a level is a reason to fall back
            latency = (self.clock() - t0) / 1000.0
            self._state[i].last_error = repr(e)
            return _Attempt(False, Reason.EXCEPTION, repr(e), latency_us=latency)
        latency = (self.clock() - t0) / 1000.0
        value, problem = self._validate(raw, lv.requires_uncertainty)
        if value is None:
            return _Attempt(False, Reason.INVALID_OUTPUT, problem, latency_us=latency)
        breached = latency > lv.budget_us
        detail = f"{latency:.1f} us > budget {lv.budget_us:.1f} us" if breached else ""
        return _Attempt(True, Reason.OK, detail, value, latency, breached)

    def _validate(self, raw: Any, requires_uncertainty: bool) -> tuple[_Valid | None, str]:
        """Check and complete a level's output. Plain Python over 4 + 8 floats: numpy's per-call overhead
        would dominate the chain's own cost (~5x) for arrays this small."""
        try:
            out = raw if isinstance(raw, LevelOutput) else LevelOutput(probabilities=raw)
            p = _floats(out.probabilities)
            if len(p) != _N_REGIMES or not all(math.isfinite(x) for x in p):
                return None, f"probabilities not 4 finite values: {p}"
            total = math.fsum(p)
            if min(p) < -1e-9 or abs(total - 1.0) > 1e-6:
                return None, f"probabilities not a distribution: {p}"
            clipped = tuple(max(x, 0.0) for x in p)
            total = math.fsum(clipped)
            probs = tuple(x / total for x in clipped)
            if out.vector is None:
                vec = _ZERO_VECTOR
            else:
                vec = _floats(out.vector)
                if len(vec) != _VECTOR_SIZE or not all(math.isfinite(x) for x in vec):
                    return None, f"vector not {_VECTOR_SIZE} finite values"
            unc = float(out.uncertainty)
            if math.isinf(unc) or unc < 0:  # an infinite width is "no calibrated interval"
                unc = math.nan
            if requires_uncertainty and math.isnan(unc):
                return None, "no finite calibrated uncertainty"
            conf = max(probs) if out.confidence is None else float(out.confidence)
            if not 0.0 <= conf <= 1.0:
                return None, f"confidence {conf} outside [0, 1]"
            if out.label is None:
                label = _argmax_label(probs, self.config.tie_label)
            else:
                label = int(out.label)
                if label not in range(_N_REGIMES):
                    return None, f"label {label} not a regime code"
        except (TypeError, ValueError) as e:
            return None, f"malformed output: {e!r}"
        return _Valid(probs, vec, unc, conf, label), ""

    def _last_resort(self, bar: int) -> _Valid:
        """Level 5: last published estimate blended towards the prior by age; the prior if none."""
        last = self._last.value
        prior = self.config.prior
        if last is None:
            p = tuple(float(x) for x in prior)
            vec = _ZERO_VECTOR
        else:
            age = bar - self._last.bar
            w = 0.5 ** (age / self.config.last_known_half_life)
            mixed = [w * a + (1.0 - w) * b for a, b in zip(last.probabilities, prior)]
            total = math.fsum(mixed)
            p = tuple(x / total for x in mixed)
            vec = last.vector
        return _Valid(p, vec, math.nan, max(p), _argmax_label(p, self.config.tie_label))

    def _mark_unhealthy(self, i: int, reason: Reason, detail: str) -> None:
        st = self._state[i]
        was_healthy = st.healthy
        st.healthy = False
        st.reason = reason
        st.detail = detail
        st.streak = 0
        st.breach_streak = 0
        st.failures += 1
        st.next_probe = self.bar + self.config.probe_every
        if was_healthy:
            logger.warning(
                "regime level %d (%s) unhealthy at bar %d: %s %s",
                i + 1,
                self._levels[i].name,
                self.bar,
                reason,
                detail,
            )

    def _mark_healthy(self, i: int) -> None:
        st = self._state[i]
        logger.info(
            "regime level %d (%s) healthy again at bar %d after %d probes (was: %s)",
            i + 1,
            self._levels[i].name,
            self.bar,
            st.streak,
            st.reason,
        )
        st.healthy = True
        st.reason = Reason.OK
        st.detail = ""
        st.streak = 0
        st.breach_streak = 0


def _level_kwargs(lv: Level) -> dict[str, Any]:
    return {name: getattr(lv, name) for name in Level.__slots__}  # type: ignore[attr-defined]
