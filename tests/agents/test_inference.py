"""Inference contract: numba engine == torch modules, determinism, input errors, signals, attributions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sage.agents import AgentEnsemble, AgentInputError, AgentOutput, Attribution
from sage.agents.engine import tanh_array
from sage.agents.observation import ACCOUNT_DIM, AGENTS, STRATEGIC_AGENTS, TACTICAL_AGENTS
from sage.data.types import AgentSignal
from sage.features import STRATEGIC_COLUMNS, TACTICAL_COLUMNS
from sage.models.registry import IntegrityError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ensemble() -> AgentEnsemble:
    return AgentEnsemble.from_config(seed=3)


def _obs(seed: int):
    rng = np.random.default_rng(seed)
    return (
        rng.uniform(-1, 1, (60, 7)).astype(np.float32),
        rng.uniform(-1, 1, (48, 13)).astype(np.float32),
        np.array([0.5, -0.2, 0.1, 0.3], dtype=np.float32),
    )


def test_engine_tanh_matches_torch():
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    assert np.abs(tanh_array(x) - torch.tanh(torch.from_numpy(x)).numpy()).max() < 5e-7


def test_engine_matches_torch_policy(ensemble):
    for seed in range(3):
        tac, strat, acc = _obs(seed)
        ensemble.reset()
        so = ensemble.act_strategic(strat, acc)
        to = ensemble.act_tactical(tac, acc)  # its values see the strategic summaries cached above
        with torch.no_grad():
            out = ensemble.policy(torch.from_numpy(tac)[None], torch.from_numpy(strat)[None], torch.from_numpy(acc)[None])
        probs = torch.softmax(out.logits, -1)[0].numpy()
        got = np.array([o.probabilities for o in so + to])
        order = [AGENTS.index(o.agent) for o in so + to]
        np.testing.assert_allclose(got, probs[order], atol=2e-6)
        np.testing.assert_allclose([o.value for o in to], out.values[0].numpy()[:3], atol=2e-6)
        assert [o.agent for o in to] == list(TACTICAL_AGENTS)
        assert [o.agent for o in so] == list(STRATEGIC_AGENTS)


def test_outputs_are_consistent_and_deterministic(ensemble):
    tac, strat, acc = _obs(7)
    ensemble.reset()
    ensemble.act_strategic(strat, acc)
    first = ensemble.act_tactical(tac, acc)
    for seed in range(5):  # other observations in between change nothing for this one
        ensemble.act_tactical(*_obs(seed)[::2])
    again = ensemble.act_tactical(tac.astype(np.float64), acc)
    assert first == again
    for o in first:
        assert isinstance(o, AgentOutput) and o.timeframe == "5m"
        p = np.array(o.probabilities)
        assert p.min() >= 0 and abs(p.sum() - 1) < 1e-6
        assert o.direction == (-2, -1, 0, 1, 2)[int(np.argmax(p))]
        assert o.strength == pytest.approx(float(p @ np.array([-2, -1, 0, 1, 2])) / 2)


def test_nan_and_shape_errors(ensemble):
    tac, strat, acc = _obs(1)
    bad = tac.copy()
    bad[10, 3] = np.nan
    with pytest.raises(AgentInputError, match="tactical matrix contains NaN"):
        ensemble.act_tactical(bad, acc)
    bad_acc = acc.copy()
    bad_acc[0] = np.inf
    with pytest.raises(AgentInputError, match="account"):
        ensemble.act_strategic(strat, bad_acc)
    with pytest.raises(ValueError, match=r"shape \(60, 7\)"):
        ensemble.act_tactical(strat, acc)
    with pytest.raises(ValueError, match="account must have shape"):
        ensemble.act_tactical(tac, acc[:2])
    assert AgentInputError.__module__.startswith("sage.")


def test_signal_and_attributions(ensemble):
    tac, strat, acc = _obs(2)
    out = ensemble.act_tactical(tac, acc)[1]
    sig = out.to_signal("ESU3.XCME", ts_event=10, ts_init=11, model_version=ensemble.model_version)
    assert isinstance(sig, AgentSignal)
    assert sig.agent == "momentum" and sig.direction == out.direction and sig.value == out.value
    attr = ensemble.attributions("trend", strat, acc, top_k=7)
    assert len(attr) == 7 and all(isinstance(a, Attribution) for a in attr)
    assert all(a.feature in STRATEGIC_COLUMNS and 0 <= a.lag < 48 for a in attr)
    scores = [abs(a.score) for a in attr]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    # gradient x input: the top cell's score equals the finite-difference sensitivity times its value
    a0 = attr[0]
    row, col = 47 - a0.lag, STRATEGIC_COLUMNS.index(a0.feature)
    actor = ensemble.policy.actors["trend"]
    dirs = torch.tensor([-2.0, -1, 0, 1, 2])

    def strength(m):
        with torch.no_grad():
            return float((torch.softmax(actor(torch.tensor(m)[None], torch.tensor(acc)[None]), 1)[0] * dirs).sum() / 2)

    eps = 1e-3
    up, down = strat.copy(), strat.copy()
    up[row, col] += eps
    down[row, col] -= eps
    grad = (strength(up) - strength(down)) / (2 * eps)
    assert a0.score == pytest.approx(grad * strat[row, col], rel=0.05, abs=1e-6)
    assert all(a.feature in TACTICAL_COLUMNS for a in ensemble.attributions("fvg", tac, acc))
    with pytest.raises(ValueError, match="unknown agent"):
        ensemble.attributions("nope", tac, acc)


def test_shipped_default_loads_and_is_verified(tmp_path):
    ens = AgentEnsemble.load("default")
    assert ens.model_version.startswith("agents-default@")
    tac, strat, acc = _obs(4)
    assert len(ens.act_strategic(strat, acc)) == 2 and len(ens.act_tactical(tac, acc)) == 3
    # a tampered copy is refused
    import shutil

    from sage.models.registry import resolve

    copy = tmp_path / "agents"
    shutil.copytree(resolve("agents-default"), copy)
    data = bytearray((copy / "weights.pt").read_bytes())
    data[-100] ^= 1
    (copy / "weights.pt").write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        AgentEnsemble.load(copy)


def test_account_dim_matches_contract(ensemble):
    assert ensemble.config.account_dim == ACCOUNT_DIM
