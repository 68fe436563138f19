"""SAGE combiner: hand-computed Hedge updates and weights, regime/uncertainty effects, consensus,
state persistence, no look-ahead in performance crediting, and the regime-table fit."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.data.regimes import Regime
from sage.strategy import (
    DEFAULT_AGENTS,
    CombinerConfig,
    CombinerInputError,
    CombinerStateError,
    SageCombiner,
    fit_regime_multipliers,
    realised_agent_pnl,
)

ONE_HOT = (0.0, 0.0, 0.0, 0.0, 1.0)  # entropy 0: a certain agent
UNIFORM = (0.2, 0.2, 0.2, 0.2, 0.2)  # entropy 1
BULL = (1.0, 0.0, 0.0, 0.0)


def two_agents(**kw) -> CombinerConfig:
    base = {
        "agents": ("a", "b"),
        "horizons": (1, 1),
        "regime_multipliers": ((1.0,) * 4, (1.0,) * 4),
        "weight_floor": 0.0,
    }
    base.update(kw)
    return CombinerConfig(**base)


def combine(
    comb, strengths=(0.5, -0.5), probs=(ONE_HOT, ONE_HOT), regime=BULL, level=1, width=math.nan, agents=None
):
    agents = agents or comb.agents
    dirs = [round(2 * s) if -1 <= s <= 1 else 0 for s in strengths]
    return comb.combine(
        agents,
        dirs,
        strengths,
        probs,
        regime_label=int(np.argmax(regime)),
        regime_probabilities=regime,
        regime_level=level,
        regime_uncertainty=width,
    )


# -- Hedge -----------------------------------------------------------------------------------------


def test_hedge_update_matches_hand_computation():
    eta, share = 0.5, 0.1
    comb = SageCombiner(two_agents(learning_rate=eta, share=share))
    comb.record(close=100.0, risk_unit=0.01, agents=("a", "b"), directions=(2, -2), regime_probabilities=BULL)
    assert comb.credit(101.0) == 2
    pnl = math.log(1.01) / 0.01  # a: +1 x return / risk unit; b: the opposite
    wa, wb = math.exp(eta * pnl), math.exp(-eta * pnl)
    wa, wb = 2 * wa / (wa + wb), 2 * wb / (wa + wb)  # row mean 1
    wa, wb = (1 - share) * wa + share, (1 - share) * wb + share  # fixed share
    table = comb.performance_table
    np.testing.assert_allclose(table[Regime.BULL], [wa, wb], rtol=1e-12)
    np.testing.assert_allclose(table[1:], 1.0)  # regimes with probability 0 learn nothing
    # the weight used is the regime-probability mixture of the rows
    res = combine(comb, regime=(0.25, 0.75, 0.0, 0.0))
    np.testing.assert_allclose(res.performance_weights, [0.25 * wa + 0.75, 0.25 * wb + 0.75], rtol=1e-12)


def test_hedge_update_is_probability_weighted_and_scaled_by_horizon():
    eta = 0.3
    cfg = two_agents(horizons=(1, 2), learning_rate=eta, share=0.0, pnl_clip=100.0)
    comb = SageCombiner(cfg)
    p = (0.5, 0.5, 0.0, 0.0)
    comb.record(close=100.0, risk_unit=0.02, agents=("a", "b"), directions=(1, 1), regime_probabilities=p)
    comb.credit(103.0)  # a is due (h=1); b is not
    ret = math.log(1.03)
    ga = eta * 0.5 * ret / 0.02 * 0.5  # eta/h x p[r] x (direction/2 x ret / risk_unit)
    wa, wb = math.exp(ga), 1.0
    np.testing.assert_allclose(comb.performance_table[0], [2 * wa / (wa + wb), 2 * wb / (wa + wb)])
    comb.record(close=103.0, risk_unit=0.02, agents=("a", "b"), directions=(0, 0), regime_probabilities=p)
    before = comb.performance_table
    comb.credit(99.0)  # b's signal from bar 0 realises now (h=2), with eta / 2; a's 0-direction gains 0
    gb = eta / 2 * 0.5 * math.log(0.99) / 0.02 * 0.5
    row = before[0] * np.exp([0.0, gb])
    np.testing.assert_allclose(comb.performance_table[0], 2 * row / row.sum(), rtol=1e-12)
    np.testing.assert_allclose(comb.performance_table[2:], 1.0)


def test_pnl_is_clipped():
    comb = SageCombiner(two_agents(learning_rate=1.0, share=0.0, pnl_clip=2.0))
    comb.record(close=100.0, risk_unit=0.001, agents=("a", "b"), directions=(2, 0), regime_probabilities=BULL)
    comb.credit(150.0)  # +405 risk units, clipped to 2
    wa = math.exp(2.0)
    np.testing.assert_allclose(comb.performance_table[0], [2 * wa / (wa + 1), 2 / (wa + 1)])


def test_fixed_share_lets_a_losing_agent_recover():
    comb = SageCombiner(two_agents(learning_rate=0.5, share=0.05))
    close = 100.0
    for _ in range(30):  # a is right 30 times
        comb.record(
            close=close, risk_unit=0.01, agents=("a", "b"), directions=(2, -2), regime_probabilities=BULL
        )
        close *= 1.01
        comb.credit(close)
    assert comb.performance_table[0, 1] < 0.1 and comb.performance_table[0, 1] >= 0.05 - 1e-12
    for _ in range(30):  # then b is right 30 times
        comb.record(
            close=close, risk_unit=0.01, agents=("a", "b"), directions=(2, -2), regime_probabilities=BULL
        )
        close /= 1.01
        comb.credit(close)
    assert comb.performance_table[0, 1] > 1.5


# -- weights ---------------------------------------------------------------------------------------


def test_weights_floor_and_normalisation_hand_computed():
    table = ((2.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0))
    cfg = two_agents(regime_multipliers=table, weight_floor=0.1, entropy_penalty=0.5)
    res = combine(SageCombiner(cfg), strengths=(0.8, -0.4), probs=(ONE_HOT, UNIFORM))
    # c_R = 1 (level 1, one-hot regime); raw = perf 1 x mult (2, 1) x factor (1, 1 - 0.5 x 1) = (2, 0.5)
    assert res.regime_confidence == pytest.approx(1.0)
    assert res.uncertainty_factors == pytest.approx((1.0, 0.5))
    assert res.regime_multipliers == pytest.approx((2.0, 1.0))
    w = (0.1 + 0.8 * 2 / 2.5, 0.1 + 0.8 * 0.5 / 2.5)  # floor + (1 - n floor) raw / sum(raw)
    assert res.weights == pytest.approx(w)
    signal = w[0] * 0.8 + w[1] * -0.4
    assert res.signal == pytest.approx(signal)
    disagreement = w[0] * (0.8 - signal) ** 2 + w[1] * (-0.4 - signal) ** 2
    assert res.disagreement == pytest.approx(disagreement)
    assert res.uncertainty == pytest.approx(w[0] * 0.0 + w[1] * 1.0 + disagreement)


@settings(max_examples=200, deadline=None)
@given(
    strengths=st.lists(st.floats(-1, 1), min_size=5, max_size=5),
    logits=st.lists(st.floats(-5, 5), min_size=25, max_size=25),
    regime=st.lists(st.floats(0.01, 1), min_size=4, max_size=4),
    level=st.integers(1, 5),
    width=st.one_of(st.just(math.nan), st.floats(1e-4, 1.0)),
)
def test_weights_are_a_floored_distribution_and_outputs_bounded(strengths, logits, regime, level, width):
    comb = SageCombiner(CombinerConfig(weight_floor=0.05))
    comb.record(
        close=1.0,
        risk_unit=0.01,
        agents=DEFAULT_AGENTS,
        directions=[0] * 5,
        regime_probabilities=regime,
        regime_uncertainty=0.01,
    )
    e = np.exp(np.array(logits).reshape(5, 5))
    probs = e / e.sum(axis=1, keepdims=True)
    res = combine(comb, strengths=strengths, probs=probs.tolist(), regime=regime, level=level, width=width)
    assert sum(res.weights) == pytest.approx(1.0, abs=1e-12)
    assert min(res.weights) >= 0.05 - 1e-12
    assert -1.0 <= res.signal <= 1.0
    assert 0.0 <= res.disagreement <= 1.0
    assert 0.0 <= res.uncertainty <= 2.0
    assert 0.0 <= res.regime_confidence <= 1.0


def test_regime_multiplier_moves_weight_between_trend_and_mean_reversion():
    comb = SageCombiner()  # documented default table
    probs = [ONE_HOT] * 5
    strengths = (0.0, 0.0, 0.0, 0.5, -0.5)  # trend buys, mean reversion sells
    bull = combine(comb, strengths=strengths, probs=probs, regime=(1, 0, 0, 0))
    side = combine(comb, strengths=strengths, probs=probs, regime=(0, 0, 1, 0))
    trend, mr = DEFAULT_AGENTS.index("trend"), DEFAULT_AGENTS.index("mean_reversion")
    assert bull.weights[trend] > bull.weights[mr] and bull.signal > 0
    assert side.weights[trend] < side.weights[mr] and side.signal < 0
    assert bull.regime_multipliers[trend] == pytest.approx(1.4)
    # at the last-resort level the table is applied only as far as the regime is trusted (c_R = 0.2)
    l5 = combine(comb, strengths=strengths, probs=probs, regime=(1, 0, 0, 0), level=5)
    assert l5.regime_confidence == pytest.approx(0.2)
    assert l5.regime_multipliers[trend] == pytest.approx(1 + 0.2 * 0.4)
    assert abs(l5.weights[trend] - l5.weights[mr]) < abs(bull.weights[trend] - bull.weights[mr])


def test_uncertainty_factor_prefers_confident_agents_while_the_regime_is_trusted():
    comb = SageCombiner(two_agents(entropy_penalty=0.8))
    l1 = combine(comb, strengths=(0.5, -0.5), probs=(ONE_HOT, UNIFORM), level=1)
    l4 = combine(comb, strengths=(0.5, -0.5), probs=(ONE_HOT, UNIFORM), level=4)
    assert l1.weights[0] / l1.weights[1] == pytest.approx(1 / 0.2)  # factors 1 and 1 - 0.8
    assert 1.0 < l4.weights[0] / l4.weights[1] < l1.weights[0] / l1.weights[1]
    assert l4.uncertainty > l1.uncertainty  # lower regime confidence -> higher effective uncertainty
    # ambiguous regime probabilities lower the confidence too
    amb = combine(comb, strengths=(0.5, -0.5), probs=(ONE_HOT, UNIFORM), regime=(0.25,) * 4)
    assert amb.regime_confidence == pytest.approx(0.5)  # 1 - 0.5 x normalised entropy 1


def test_interval_width_wider_than_usual_lowers_regime_confidence():
    comb = SageCombiner(two_agents(width_penalty=1.0))
    assert combine(comb, width=0.05).regime_confidence == 1.0  # no reference yet
    comb.record(
        close=1.0,
        risk_unit=0.01,
        agents=("a", "b"),
        directions=(0, 0),
        regime_probabilities=BULL,
        regime_uncertainty=0.01,
    )
    assert comb.width_reference == pytest.approx(0.01)
    assert combine(comb, width=0.005).regime_confidence == 1.0
    assert combine(comb, width=0.02).regime_confidence == pytest.approx(0.5)
    assert combine(comb, width=math.nan).regime_confidence == 1.0  # uncalibrated: the level carries it


def test_consensus_threshold_and_uncertainty_gate():
    cfg = two_agents(consensus_threshold=0.3)
    comb = SageCombiner(cfg)
    at = combine(comb, strengths=(0.3, 0.3))
    assert at.signal == pytest.approx(0.3) and at.passed and at.blocked_by is None
    below = combine(comb, strengths=(0.29, 0.29))
    assert not below.passed and below.blocked_by == "threshold"
    neg = combine(comb, strengths=(-0.5, -0.5))
    assert neg.passed and neg.signal == pytest.approx(-0.5)
    strict = SageCombiner(two_agents(consensus_threshold=0.3, max_uncertainty=0.1))
    res = combine(strict, strengths=(0.9, 0.1), probs=(ONE_HOT, ONE_HOT))  # disagreement 0.16 > 0.1
    assert abs(res.signal) >= 0.3 and not res.passed and res.blocked_by == "uncertainty"


def test_subset_of_agents_in_any_order():
    comb = SageCombiner()
    res = combine(comb, strengths=(0.5, 0.2, 0.1), probs=[ONE_HOT] * 3, agents=("entry", "fvg", "momentum"))
    assert res.agents == ("entry", "fvg", "momentum")
    assert sum(res.weights) == pytest.approx(1.0)
    assert res.regime_multipliers == pytest.approx((1.0, 1.0, 1.3))


def test_combine_is_pure():
    comb = SageCombiner()
    comb.record(
        close=100.0, risk_unit=0.01, agents=DEFAULT_AGENTS, directions=[1] * 5, regime_probabilities=BULL
    )
    before = comb.to_state()
    combine(comb, strengths=(0.1, 0.2, 0.3, 0.4, 0.5), probs=[UNIFORM] * 5)
    assert comb.to_state() == before


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"agents": ("fvg", "nope")}, "configured agents"),
        ({"agents": ("fvg", "fvg")}, "distinct"),
        ({"strengths": (0.5, float("nan"))}, r"strengths\[1\]"),
        ({"strengths": (0.5, 1.5)}, r"\[-1, 1\]"),
        ({"probs": (ONE_HOT, (0.5, 0.5))}, "expected 5 values"),
        ({"probs": (ONE_HOT, (0.5, -0.1, 0.2, 0.2, 0.2))}, ">= 0"),
        ({"level": 0}, "fallback level"),
        ({"regime": (0.0, 0.0, 0.0, 0.0)}, "sum to 0"),
        ({"regime": (1.0, 0.0, 0.0)}, "expected 4"),
    ],
)
def test_bad_input_names_the_problem(kwargs, match):
    comb = SageCombiner()
    agents = kwargs.pop("agents", ("fvg", "momentum"))
    with pytest.raises(CombinerInputError, match=match):
        combine(comb, agents=agents, **kwargs)


def test_bad_record_input():
    comb = SageCombiner()
    with pytest.raises(CombinerInputError, match="risk_unit"):
        comb.record(
            close=1.0, risk_unit=float("nan"), agents=("fvg",), directions=(1,), regime_probabilities=BULL
        )
    with pytest.raises(CombinerInputError, match="directions"):
        comb.record(close=1.0, risk_unit=0.1, agents=("fvg",), directions=(3,), regime_probabilities=BULL)
    with pytest.raises(CombinerInputError, match="close"):
        comb.credit(0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"horizons": (1, 1)},
        {"weight_floor": 0.2},
        {"entropy_penalty": 1.0},
        {"level_confidence": (1.0, 0.8, 0.6, 0.4)},
        {"regime_multipliers": ((1.0, 1.0, 1.0, 0.0),) * 5},
        {"learning_rate": float("nan")},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        CombinerConfig(**kwargs)


# -- state -----------------------------------------------------------------------------------------


def _drive(comb: SageCombiner, rng: np.random.Generator, n: int, close: float = 100.0) -> list:
    out = []
    for _ in range(n):
        close *= math.exp(rng.normal(0, 0.01))
        strengths = rng.uniform(-1, 1, 5)
        e = rng.dirichlet(np.ones(5), size=5)
        p = rng.dirichlet(np.ones(4))
        out.append(
            comb.step(
                close=close,
                risk_unit=0.01,
                agents=DEFAULT_AGENTS,
                directions=np.rint(2 * strengths).astype(int),
                strengths=strengths,
                probabilities=e,
                regime_label=int(p.argmax()),
                regime_probabilities=p,
                regime_level=int(rng.integers(1, 6)),
                regime_uncertainty=float(rng.uniform(0.005, 0.02)),
            )
        )
    return out


def test_state_round_trip_continues_identically():
    comb = SageCombiner()
    _drive(comb, np.random.default_rng(1), 40)
    state = comb.to_state()
    restored = SageCombiner.from_state(state)
    assert restored.to_state() == state
    assert restored.pending == comb.pending > 0
    a = _drive(comb, np.random.default_rng(2), 20)
    b = _drive(restored, np.random.default_rng(2), 20)
    assert a == b
    # a new config with the same agents/horizons (e.g. refitted multipliers) is accepted
    refit = CombinerConfig(consensus_threshold=0.4)
    assert SageCombiner.from_state(state, refit).config.consensus_threshold == 0.4


def _tamper(state: bytes, **changes) -> bytes:
    d = msgspec.json.decode(state)
    for k, v in changes.items():
        d[k] = v
    return msgspec.json.encode(d)


def test_corrupt_or_foreign_state_raises_clear_errors():
    comb = SageCombiner()
    _drive(comb, np.random.default_rng(3), 10)
    state = comb.to_state()
    cases = [
        (state[: len(state) // 2], "not valid JSON"),
        (b"\x00\x01garbage", "not valid JSON"),
        (b'{"format": "something.else", "version": 1}', "not a combiner state"),
        (b"[1, 2, 3]", "not a combiner state"),
        (_tamper(state, version=99), "unsupported combiner state version 99"),
        (_tamper(state, weights=[[1.0] * 5] * 3), "weights must be 4 x 5"),
        (_tamper(state, weights=[[1.0, 1.0, -1.0, 1.0, 1.0]] * 4), "finite and > 0"),
        (_tamper(state, step="ten"), "corrupt combiner state"),
        (_tamper(state, width_reference=-1.0), "width_reference"),
        (_tamper(state, pending=[[0, 9, 1, 100.0, 0.01, [1, 0, 0, 0]]]), "pending signal"),
    ]
    for data, match in cases:
        with pytest.raises(CombinerStateError, match=match):
            SageCombiner.from_state(data)
    other = CombinerConfig(agents=("a", "b"), horizons=(1, 1), regime_multipliers=((1.0,) * 4,) * 2)
    with pytest.raises(CombinerStateError, match="saved for agents"):
        SageCombiner.from_state(state, other)
    with pytest.raises(CombinerStateError, match="must be bytes"):
        SageCombiner.from_state("a string")  # type: ignore[arg-type]


# -- no look-ahead ---------------------------------------------------------------------------------


def test_a_return_arriving_later_changes_only_later_weights():
    """Two histories equal up to bar k and different after it: every result up to and including bar k
    is identical; a signal is credited exactly at its horizon, not before."""
    rng = np.random.default_rng(7)
    T, k = 60, 30
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, T)))
    other = closes.copy()
    other[k + 1 :] *= 1.05  # the future differs
    inputs = [
        (rng.uniform(-1, 1, 5), rng.dirichlet(np.ones(5), 5), rng.dirichlet(np.ones(4))) for _ in range(T)
    ]

    def run(cl):
        comb, out, tables = SageCombiner(), [], []
        for t in range(T):
            s, e, p = inputs[t]
            out.append(
                comb.step(
                    close=float(cl[t]),
                    risk_unit=0.01,
                    agents=DEFAULT_AGENTS,
                    directions=np.rint(2 * s).astype(int),
                    strengths=s,
                    probabilities=e,
                    regime_label=int(p.argmax()),
                    regime_probabilities=p,
                    regime_level=1,
                )
            )
            tables.append(comb.performance_table)
        return out, tables

    a, ta = run(closes)
    b, tb = run(other)
    assert a[: k + 1] == b[: k + 1]
    assert a[k + 1] != b[k + 1]  # the tactical agents' bar-k signals are credited at bar k+1's close
    for t in range(k + 1):
        np.testing.assert_array_equal(ta[t], tb[t])


def test_credit_happens_exactly_at_the_horizon():
    cfg = two_agents(horizons=(3, 3), share=0.0)
    comb = SageCombiner(cfg)
    kw = {"risk_unit": 0.01, "agents": ("a", "b"), "regime_probabilities": BULL}
    comb.record(close=100.0, directions=(2, -2), **kw)
    for close in (120.0, 80.0):  # bars 1, 2: nothing is due, whatever the price does
        assert comb.credit(close) == 0
        np.testing.assert_array_equal(comb.performance_table, 1.0)
        comb.record(close=close, directions=(0, 0), **kw)
    assert comb.credit(101.0) == 2  # bar 3: the bar-0 signals realise at this close
    assert comb.performance_table[0, 0] > 1.0 > comb.performance_table[0, 1]


def test_streaming_credits_equal_the_batch_pnl_replayed():
    """realised_agent_pnl (batch) replayed through the Hedge rule gives the streaming weights."""
    rng = np.random.default_rng(11)
    T = 80
    cfg = CombinerConfig(share=0.02, learning_rate=0.2)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.005, T)))
    ru = rng.uniform(0.003, 0.01, T)
    dirs = rng.integers(-2, 3, (T, 5))
    probs = rng.dirichlet(np.ones(4), T)
    comb = SageCombiner(cfg)
    streamed = []
    for t in range(T):
        comb.credit(float(closes[t]))
        streamed.append(comb.performance_table)
        comb.record(
            close=float(closes[t]),
            risk_unit=float(ru[t]),
            agents=DEFAULT_AGENTS,
            directions=dirs[t],
            regime_probabilities=probs[t],
        )
    pnl = realised_agent_pnl(dirs, closes, ru, cfg.horizons, cfg.pnl_clip)
    assert np.isnan(pnl[-1]).all() and np.isfinite(pnl[: T - 6]).all()
    W = np.ones((4, 5))
    for s in range(T):
        np.testing.assert_allclose(streamed[s], W, rtol=1e-10)
        credited = False
        for i, h in enumerate(cfg.horizons):
            t = s + 1 - h  # signals of bar t are credited at bar t + h, i.e. before bar s + 1 combines
            if 0 <= t < T and t + h < T:
                W[:, i] *= np.exp(cfg.learning_rate / h * probs[t] * pnl[t, i])
                credited = True
        if credited:
            W = (1 - cfg.share) * W * (5 / W.sum(axis=1, keepdims=True)) + cfg.share


# -- fitting the regime table ----------------------------------------------------------------------


def _regime_path(rng: np.random.Generator, T: int) -> np.ndarray:
    out = np.empty(T, dtype=np.int64)
    r = 0
    for t in range(T):
        if rng.random() < 0.02:
            r = int(rng.integers(0, 4))
        out[t] = r
    return out


def test_fit_finds_the_agent_that_is_right_only_in_one_regime():
    rng = np.random.default_rng(5)
    T = 8000
    regimes = _regime_path(rng, T)
    rets = rng.normal(0, 0.01, T)
    closes = 100 * np.exp(np.concatenate([[0.0], np.cumsum(rets[1:])]))
    nxt = np.sign(np.append(np.diff(np.log(closes)), 0.0)).astype(int)  # the true next move
    dirs = rng.integers(-2, 3, (T, 3))
    bull = regimes == Regime.BULL
    dirs[bull, 0] = 2 * nxt[bull]  # agent 0 is right in BULL only, random elsewhere
    pnl = realised_agent_pnl(dirs, closes, np.full(T, 0.01), (1, 1, 1))
    table = np.array(fit_regime_multipliers(pnl, regimes))
    assert table.shape == (3, 4)
    assert table[0, Regime.BULL] > 2.0 and table[0, Regime.BULL] == table[:, Regime.BULL].max()
    others = [Regime.BEAR, Regime.SIDEWAYS, Regime.VOLATILE]
    np.testing.assert_allclose(table[:, others], 1.0, atol=0.3)  # nobody has an edge there
    np.testing.assert_allclose(table[:, others].mean(axis=0), 1.0, atol=1e-9)  # columns have mean 1
    assert (table[1:, Regime.BULL] < 1.0).all()
    # the same from regime probabilities (soft labels)
    probs = np.full((T, 4), 0.02)
    probs[np.arange(T), regimes] = 0.94
    soft = np.array(fit_regime_multipliers(pnl, probs))
    assert soft[0, Regime.BULL] > 1.5 and soft[0, Regime.BULL] == soft[:, Regime.BULL].max()
    # the fitted table plugs into the config and shifts weight to agent 0 in BULL only
    cfg = CombinerConfig(
        agents=("x", "y", "z"), horizons=(1, 1, 1), regime_multipliers=tuple(map(tuple, table))
    )
    comb = SageCombiner(cfg)
    r_bull = comb.combine(
        ("x", "y", "z"),
        (1, 1, 1),
        (0.5, 0.5, 0.5),
        [ONE_HOT] * 3,
        regime_label=0,
        regime_probabilities=(1, 0, 0, 0),
        regime_level=1,
    )
    r_bear = comb.combine(
        ("x", "y", "z"),
        (1, 1, 1),
        (0.5, 0.5, 0.5),
        [ONE_HOT] * 3,
        regime_label=1,
        regime_probabilities=(0, 1, 0, 0),
        regime_level=1,
    )
    assert r_bull.weights[0] > 0.5 > r_bear.weights[0]


def test_fit_shrinks_thin_evidence_and_validates():
    pnl = np.array([[1.0, 0.0], [1.2, 0.1], [0.9, -0.1]])
    table = fit_regime_multipliers(pnl, np.array([0, 0, 0]), prior_strength=1e6)
    np.testing.assert_allclose(table, 1.0, atol=1e-3)  # three bars are no evidence
    with pytest.raises(CombinerInputError, match="codes in 0..3"):
        fit_regime_multipliers(pnl, np.array([0, 4, 0]))
    with pytest.raises(CombinerInputError, match="agent_pnl"):
        fit_regime_multipliers(np.zeros(3), np.array([0, 0, 0]))
    with pytest.raises(CombinerInputError, match="inf"):
        fit_regime_multipliers(np.array([[np.inf, 0.0]] * 3), np.array([0, 0, 0]))


def test_rejected_step_and_skip_keep_horizons_in_decision_bars():
    cfg = two_agents(horizons=(2, 2), share=0.0)
    comb = SageCombiner(cfg)
    kw = {
        "risk_unit": 0.01,
        "agents": ("a", "b"),
        "probabilities": (ONE_HOT, ONE_HOT),
        "regime_label": 0,
        "regime_probabilities": BULL,
        "regime_level": 1,
    }
    comb.step(close=100.0, directions=(2, -2), strengths=(1.0, -1.0), **kw)  # bar 0: due at bar 2
    with pytest.raises(CombinerInputError, match="strengths"):
        comb.step(close=101.0, directions=(2, -2), strengths=(float("nan"), -1.0), **kw)  # bar 1 rejected
    assert comb.steps == 2 and comb.pending == 2  # the bar counted; nothing recorded for it
    assert comb.skip(102.0) == 2  # bar 2: the bar-0 signals realise at this close
    assert comb.steps == 3 and comb.pending == 0
    assert comb.performance_table[0, 0] > 1.0 > comb.performance_table[0, 1]
    with pytest.raises(CombinerInputError, match="risk_unit"):  # rejected before anything changes
        comb.step(close=103.0, directions=(0, 0), strengths=(0.0, 0.0), **{**kw, "risk_unit": 0.0})
    assert comb.steps == 3


def test_overdue_signals_are_credited_at_the_next_credit_never_earlier():
    comb = SageCombiner(two_agents(share=0.0))
    kw = {"risk_unit": 0.01, "agents": ("a", "b"), "regime_probabilities": BULL}
    comb.record(close=100.0, directions=(2, -2), **kw)  # due at bar 1
    comb.record(close=100.0, directions=(0, 0), **kw)  # bar 1 recorded without credit()
    assert comb.pending == 4
    assert comb.credit(110.0) == 4  # bar 2: both overdue and due signals, at this close
    assert comb.pending == 0
    assert comb.performance_table[0, 0] > 1.0 > comb.performance_table[0, 1]
