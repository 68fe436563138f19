"""Fallback chain (``sage.regime.fallback``): every trigger moves to the right level and back, re-entry
is exactly ``reentry_probes`` successful probes ``probe_every`` bars apart, no flapping, level 5 never
fails, outputs are always valid ``RegimeData``, and the chain is deterministic under an injected clock.

Levels here are scripted test doubles (what a level computes is tested in test_rules / the model tests);
the integration test wires the real rule detectors, input validator and drift monitor on synthetic bars.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytest

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.data.types import RegimeData, RegimeHealth
from sage.features import FeatureSchema, compute, tactical_rows
from sage.regime.fallback import (
    LAST_RESORT_LEVEL,
    ChainOutput,
    FallbackChain,
    FallbackConfig,
    Level,
    LevelOutput,
    Reason,
)
from sage.regime.health import DriftConfig, DriftMonitor, InputValidator
from sage.regime.rules import RuleDetector, VolatilityDetector

BULLISH = (0.7, 0.1, 0.1, 0.1)
BEARISH = (0.1, 0.7, 0.1, 0.1)
SIDEWAYS = (0.1, 0.1, 0.7, 0.1)
VOLATILE = (0.1, 0.1, 0.1, 0.7)


class FakeClock:
    """Nanosecond clock that only moves when a level says it took time."""

    def __init__(self) -> None:
        self.ns = 1_000_000

    def __call__(self) -> int:
        return self.ns

    def spend_us(self, us: float) -> None:
        self.ns += int(us * 1000)


class Scripted:
    """A level whose behaviour per bar is scripted: ``fail[bar]`` in {"raise", "slow", "nan"}."""

    def __init__(self, clock: FakeClock, probs: tuple, uncertainty: float = math.nan, cost_us: float = 10.0):
        self.clock = clock
        self.probs = probs
        self.uncertainty = uncertainty
        self.cost_us = cost_us
        self.fail: dict[int, str] = {}
        self.calls: list[int] = []

    def __call__(self, bar: int) -> LevelOutput:
        self.calls.append(bar)
        mode = self.fail.get(bar)
        self.clock.spend_us(1000.0 if mode == "slow" else self.cost_us)
        if mode == "raise":
            raise RuntimeError(f"model exploded at bar {bar}")
        probs = (math.nan,) * 4 if mode == "nan" else self.probs
        return LevelOutput(probabilities=probs, uncertainty=self.uncertainty)


def make_chain(
    config: FallbackConfig | None = None, **overrides: Any
) -> tuple[FallbackChain, FakeClock, list[Scripted]]:
    clock = FakeClock()
    s = [
        Scripted(clock, BULLISH, uncertainty=0.02),
        Scripted(clock, BEARISH),
        Scripted(clock, SIDEWAYS),
        Scripted(clock, VOLATILE),
    ]
    levels = [
        Level(s[0], "model+conformal", budget_us=200.0, requires_uncertainty=True),
        Level(s[1], "model", budget_us=200.0),
        Level(s[2], "rules"),
        Level(s[3], "volatility"),
    ]
    for i, lv in overrides.items():
        levels[int(i[1:]) - 1] = lv
    return FallbackChain(levels, config or FallbackConfig(probe_every=2, reentry_probes=3), clock), clock, s


def run(chain: FallbackChain, n: int, input_bad: set[int] = frozenset(), **kw: Any) -> list[ChainOutput]:  # type: ignore[assignment]
    outs = []
    for _ in range(n):
        bar = chain.bar
        outs.append(chain.step(bar, input_ok=bar not in input_bad, ts=bar * 60_000_000_000, **kw))
    return outs


def levels_of(outs: list[ChainOutput]) -> list[int]:
    return [o.level for o in outs]


def as_regime_data(o: ChainOutput) -> RegimeData:
    return RegimeData(
        "SYN.SIM", model_version="test", ts_event=o.ts or 0, ts_init=o.ts or 0, **o.regime_fields()
    )


# -- each trigger: down to the right level and back up -----------------------------------------------------


def test_exception_moves_down_and_back_after_probes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sage.regime.fallback")
    chain, _, s = make_chain()
    s[0].fail = {10: "raise", 11: "raise", 12: "raise"}
    outs = run(chain, 25)
    # Fails at 10 -> unhealthy; probes at 12 (fails), 14, 16, 18 (3 successes) -> level 1 from bar 18.
    assert levels_of(outs) == [1] * 10 + [2] * 8 + [1] * 7
    assert [b for b in s[0].calls if 10 <= b < 18] == [10, 12, 14, 16]  # not called between probes
    assert outs[10].reason == Reason.EXCEPTION and outs[10].skipped == ((1, Reason.EXCEPTION),)
    assert outs[10].label == 1 and outs[10].health_flags & RegimeHealth.FALLBACK_ACTIVE
    assert outs[10].health_flags & RegimeHealth.UNCALIBRATED  # level 2 has no interval
    assert outs[9].health_flags == 0 and outs[18].health_flags == 0
    assert [(t.bar, t.from_level, t.to_level, t.reason) for t in chain.transitions] == [
        (10, 1, 2, "exception"),
        (18, 2, 1, "recovered"),
    ]
    assert outs[10].transition is chain.transitions[0]
    assert "RuntimeError" in chain.level_status(1)["last_error"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("regime level 1 -> 2 at bar 10" in m for m in messages)
    assert any("regime level 2 -> 1 at bar 18" in m and "3 probes" in m for m in messages)


def test_latency_breach_publishes_then_leaves_and_returns() -> None:
    chain, _, s = make_chain(FallbackConfig(probe_every=1, reentry_probes=3))
    s[0].fail = {5: "slow", 6: "slow"}
    outs = run(chain, 12)
    # bar 5: the late result is valid, so it is published (flagged); level 1 is left from bar 6;
    # probe at 6 is slow too (streak 0); probes 7, 8, 9 succeed -> back at 9.
    assert levels_of(outs) == [1] * 6 + [2] * 3 + [1] * 3
    assert outs[5].health_flags == RegimeHealth.LATENCY_BUDGET_EXCEEDED
    assert outs[5].level_latency_us == 1000.0 and outs[5].latency_us == 1000.0
    assert outs[6].reason == Reason.LATENCY and outs[6].latency_us == 1010.0  # slow probe + level 2
    assert chain.transitions[0].reason == "latency"


def test_latency_strikes_tolerate_a_lone_breach() -> None:
    chain, _, s = make_chain(FallbackConfig(latency_strikes=2, probe_every=1))
    s[0].fail = {5: "slow", 8: "slow", 9: "slow"}
    outs = run(chain, 12)
    assert levels_of(outs)[:10] == [1] * 10  # 5 alone is tolerated; 8, 9 is the second strike
    assert outs[10].level == 2 and outs[10].reason == Reason.LATENCY


def test_bar_budget_flags_the_whole_step() -> None:
    chain, _, _ = make_chain(FallbackConfig(bar_budget_us=5.0))
    out = chain.step(0)
    assert out.level == 1 and out.health_flags == RegimeHealth.LATENCY_BUDGET_EXCEEDED


def test_invalid_input_skips_levels_for_that_bar_only() -> None:
    chain, _, s = make_chain()
    validator = InputValidator(60_000_000_000)
    bars = [(10.0, 11.0, 9.0, 10.5, 5.0)] * 20
    bars[7] = (10.0, 11.0, 9.0, math.nan, 5.0)  # NaN bar
    stamps = [i * 60_000_000_000 for i in range(20)]
    stamps[12:] = [s + 600_000_000_000 for s in stamps[12:]]  # 10-minute gap before bar 12
    outs = []
    for i in range(20):
        issues = validator.check(stamps[i], *bars[i])
        outs.append(chain.step(i, input_ok=not issues, ts=stamps[i]))
    assert levels_of(outs) == [1] * 7 + [5] + [1] * 4 + [5] + [1] * 7
    assert outs[7].reason == Reason.INVALID_INPUT
    assert outs[7].probabilities == pytest.approx(
        0.5 ** (1 / 100) * np.array(BULLISH) + (1 - 0.5 ** (1 / 100)) * 0.25
    )  # last known (bar 6), one bar old, decaying towards the uniform prior
    assert outs[7].label == 0 and math.isnan(outs[7].uncertainty)
    assert chain.level_status(1)["healthy"] and chain.level_status(1)["failures"] == 0
    assert 7 not in s[0].calls and 12 not in s[2].calls  # skipped levels are not called


def test_drift_alarm_fails_the_model_health_check_and_recovery_is_probed() -> None:
    rng = np.random.default_rng(0)
    drift = DriftMonitor(DriftConfig(window=200, min_samples=100)).fit(rng.normal(size=(5000, 3)))

    def healthy(_: Any) -> bool:
        return not drift.alarm

    clock = FakeClock()
    model = Scripted(clock, BULLISH, uncertainty=0.01)
    chain = FallbackChain(
        [
            Level(model, health_check=healthy, requires_uncertainty=True),
            Level(Scripted(clock, BEARISH), health_check=healthy),
            Scripted(clock, SIDEWAYS),
            Scripted(clock, VOLATILE),
        ],
        FallbackConfig(probe_every=1, reentry_probes=2),
        clock,
    )
    levels = []
    n = 800
    for t in range(n):
        shifted = 200 <= t < 400
        drift.update(rng.normal(loc=3.0 if shifted else 0.0, size=3))
        levels.append(chain.step(t, drift=drift.score).level)
    first_alarm = levels.index(3)
    assert 200 < first_alarm < 300  # once ~1/3 of the 200-row window is shifted
    assert levels[:first_alarm] == [1] * first_alarm
    back = levels.index(1, first_alarm)
    assert 400 < back < 600 and set(levels[first_alarm:back]) == {3}
    assert levels[back:] == [1] * (n - back)
    assert chain.transitions[0].reason == "health_check"
    assert chain.transitions[0].detail == "L1: health_check; L2: health_check"
    # while the alarm held, probes ran the health check only, never the model itself
    assert not [b for b in model.calls if first_alarm <= b < back - 2]


def test_missing_checkpoint_then_installed() -> None:
    clock = FakeClock()
    model = Scripted(clock, BULLISH, uncertainty=0.01)
    chain = FallbackChain(
        [Level(None, requires_uncertainty=True), None, Scripted(clock, SIDEWAYS), Scripted(clock, VOLATILE)],
        FallbackConfig(probe_every=2, reentry_probes=2),
        clock,
    )
    outs = run(chain, 5)
    assert levels_of(outs) == [3] * 5 and not chain.transitions  # the starting level is not a transition
    assert outs[0].skipped == ((1, Reason.MISSING), (2, Reason.MISSING))
    chain.set_attempt(1, model)  # checkpoint loaded
    outs = run(chain, 6)
    assert levels_of(outs) == [3, 3, 1, 1, 1, 1]  # probes at bars 5 and 7 -> level 1 at 7
    chain.set_attempt(1, None)  # checkpoint withdrawn
    assert chain.step(chain.bar).level == 3 and chain.level_status(1)["reason"] == Reason.MISSING
    assert [(t.from_level, t.to_level, t.reason) for t in chain.transitions] == [
        (3, 1, "recovered"),
        (1, 3, "missing"),
    ]


def test_missing_uncertainty_moves_to_level_two() -> None:
    chain, _, s = make_chain(FallbackConfig(probe_every=1, reentry_probes=1))
    s[0].uncertainty = math.nan  # calibrator not warmed up yet
    outs = run(chain, 3)
    assert levels_of(outs) == [2, 2, 2] and outs[0].reason == Reason.INVALID_OUTPUT
    s[0].uncertainty = 0.03
    assert chain.step(3).level == 1


@pytest.mark.parametrize(
    "bad",
    [
        (0.5, 0.5, 0.5, 0.5),  # sums to 2
        (1.2, -0.2, 0.0, 0.0),  # negative
        (0.5, 0.5),  # wrong size
        (math.nan, 0.5, 0.25, 0.25),
        "not a distribution",
        None,
        LevelOutput(BULLISH, vector=np.zeros(3)),
        LevelOutput(BULLISH, vector=[math.inf] * 8),
        LevelOutput(BULLISH, confidence=1.5),
        LevelOutput(BULLISH, label=7),
    ],
)
def test_invalid_outputs_are_rejected(bad: Any) -> None:
    clock = FakeClock()
    chain = FallbackChain([lambda _: bad, None, None, Scripted(clock, VOLATILE)], clock=clock)
    out = chain.step(0)
    assert out.level == 4 and out.reason == Reason.INVALID_OUTPUT


def test_valid_outputs_are_normalised_and_completed() -> None:
    vec = np.arange(8.0)
    chain = FallbackChain(
        [
            lambda _: LevelOutput((0.25, 0.25, 0.25 + 5e-7, 0.25), vector=vec, uncertainty=0.1, label=3),
            None,
            None,
            None,
        ]
    )
    out = chain.step(0)
    assert out.level == 1 and sum(out.probabilities) == pytest.approx(1.0, abs=1e-15)
    assert out.vector == tuple(vec) and out.label == 3 and out.confidence == max(out.probabilities)
    chain2 = FallbackChain([lambda _: np.array([0.4, 0.1, 0.4, 0.1]), None, None, None])
    assert chain2.step(0).label == 2  # tie between BULL and SIDEWAYS -> SIDEWAYS (tie_label)


# -- level 5, anti-flapping, determinism -----------------------------------------------------------------


def test_last_resort_cannot_fail_and_decays_to_prior() -> None:
    def boom(_: Any) -> Any:
        raise ValueError("nope")

    cfg = FallbackConfig(last_known_half_life=10.0, prior=(0.1, 0.1, 0.6, 0.2))
    chain = FallbackChain([boom, boom, boom, boom], cfg)
    first = chain.step(0)
    assert first.level == LAST_RESORT_LEVEL and first.probabilities == (0.1, 0.1, 0.6, 0.2)
    assert first.label == 2 and first.confidence == 0.6 and first.vector == (0.0,) * 8
    as_regime_data(first)

    clock = FakeClock()
    good = Scripted(clock, VOLATILE)
    chain = FallbackChain([None, None, None, good], cfg, clock)
    assert chain.step(0).level == 4
    good.fail = {b: "raise" for b in range(1, 100)}
    outs = [chain.step(b) for b in range(1, 100)]
    assert set(levels_of(outs)) == {5}
    at_half_life = np.array(outs[9].probabilities)  # bar 10: 10 bars after the last publication
    np.testing.assert_allclose(at_half_life, 0.5 * np.array(VOLATILE) + 0.5 * np.array(cfg.prior))
    np.testing.assert_allclose(outs[-1].probabilities, cfg.prior, atol=1e-2)
    assert outs[0].label == 3 and outs[-1].label == 2


def test_no_flapping_when_a_level_works_every_other_bar() -> None:
    chain, _, s = make_chain(FallbackConfig(probe_every=1, reentry_probes=2))
    s[0].fail = {b: "raise" for b in range(3, 200, 2)}
    outs = run(chain, 200)
    assert levels_of(outs) == [1] * 3 + [2] * 197
    assert len(chain.transitions) == 1


def test_deterministic_given_inputs_and_clock() -> None:
    def scenario() -> tuple[str, list]:
        chain, _, s = make_chain(FallbackConfig(probe_every=3, reentry_probes=2, latency_strikes=2))
        rng = np.random.default_rng(11)
        for lvl in range(4):
            modes = rng.choice(["raise", "slow", "nan", "ok"], size=300, p=[0.05, 0.05, 0.05, 0.85])
            s[lvl].fail = {b: str(m) for b, m in enumerate(modes) if m != "ok"}
        outs = run(chain, 300, input_bad=set(range(0, 300, 37)))
        return repr(outs), list(chain.transitions)

    a, b = scenario(), scenario()
    assert a == b
    assert len(a[1]) > 10  # the scenario really exercises the machine


def test_never_stops_publishing_under_random_failures() -> None:
    chain, _, s = make_chain(FallbackConfig(probe_every=2, reentry_probes=2))
    rng = np.random.default_rng(12)
    for lvl in range(4):
        modes = rng.choice(["raise", "slow", "nan", "ok"], size=1000, p=[0.15, 0.1, 0.1, 0.65])
        s[lvl].fail = {b: str(m) for b, m in enumerate(modes) if m != "ok"}
    outs = run(chain, 1000, input_bad=set(rng.choice(1000, 50, replace=False).tolist()))
    assert len(outs) == 1000
    assert set(levels_of(outs)) == {1, 2, 3, 4, 5}
    for o in outs:
        rd = as_regime_data(o)  # every output is a valid RegimeData
        assert rd.fallback_level == o.level
        assert bool(rd.health_flags & RegimeHealth.FALLBACK_ACTIVE) == (o.level > 1)
        assert (o.level == 1) == (o.reason == Reason.OK)


def test_health_check_errors_and_base_exceptions() -> None:
    def broken_check(_: Any) -> bool:
        raise RuntimeError("checker down")

    clock = FakeClock()
    chain = FallbackChain(
        [
            Level(Scripted(clock, BULLISH, 0.1), health_check=broken_check),
            None,
            Scripted(clock, SIDEWAYS),
            None,
        ],
        clock=clock,
    )
    out = chain.step(0)
    assert out.level == 3 and out.reason == Reason.HEALTH

    def interrupted(_: Any) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        FallbackChain([interrupted, None, None, None]).step(0)


def test_configuration_errors() -> None:
    with pytest.raises(ValueError):
        FallbackChain([None, None, None])
    with pytest.raises(TypeError):
        FallbackChain([None, None, None, 42])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        FallbackConfig(prior=(0.5, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        FallbackConfig(reentry_probes=0)
    with pytest.raises(ValueError):
        FallbackChain([None] * 4).set_attempt(5, None)


# -- integration with the real detectors and monitors ---------------------------------------------------


def test_integration_with_rule_detectors_validator_and_drift() -> None:
    """Synthetic bars -> features -> real level 3/4 detectors updated every bar; a stand-in model for
    levels 1-2 with a drift health check on the tactical rows; NaN bars injected. The chain publishes a
    valid RegimeData on every bar and uses the expected levels."""
    bars = generate_bars(SyntheticMarketConfig(seed=3, n_bars=4000))[
        ["open", "high", "low", "close", "volume"]
    ]
    bars.iloc[[2500, 3100], bars.columns.get_loc("close")] = np.nan
    names = FeatureSchema().names
    feats = compute(bars).to_numpy()
    tact = tactical_rows(bars).to_numpy()
    rules, vol = RuleDetector(names), VolatilityDetector(names)
    drift = DriftMonitor(DriftConfig(window=200, min_samples=100)).fit(tact[:2000])
    validator = InputValidator(60_000_000_000)
    state: dict[str, np.ndarray] = {}

    def model(_: Any) -> LevelOutput:  # stand-in: the real network is plugged in by the glue
        if not np.isfinite(state["tact"]).all():
            raise ValueError("window not ready")
        p = np.exp(state["tact"][[5, 5, 6, 0]] * np.array([1.0, -1.0, 0.0, 1.0]))
        return LevelOutput(p / p.sum(), uncertainty=0.01)

    chain = FallbackChain(
        [
            Level(model, health_check=lambda _: not drift.alarm, requires_uncertainty=True),
            Level(lambda c: LevelOutput(model(c).probabilities), health_check=lambda _: not drift.alarm),
            Level(lambda _: state["rules"]),
            Level(lambda _: state["vol"]),
        ],
        FallbackConfig(probe_every=5, reentry_probes=3),
    )
    closes = bars.to_numpy()
    outs = []
    for t in range(len(bars)):
        issues = validator.check(int(bars.index.asi8[t]), *closes[t])
        state["tact"] = tact[t]
        state["rules"] = rules.update(feats[t])  # stateful detectors advance every bar, used or not
        state["vol"] = vol.update(feats[t])
        drift.update(tact[t])
        out = chain.step(t, input_ok=not issues, drift=drift.score, ts=int(bars.index.asi8[t]))
        as_regime_data(out)
        outs.append(out)
    lv = levels_of(outs)
    assert lv[0] == 3 or lv[0] == 5  # model window and rules both warming up
    assert lv[2500] == 5 and lv[3100] == 5  # NaN bars: last known
    assert lv[2501] == lv[2499]  # and straight back
    assert lv[1000:1100].count(1) > 90  # warmed up and healthy: the model publishes
    assert all(math.isnan(o.drift) or o.drift >= 0 for o in outs)
