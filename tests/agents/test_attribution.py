"""Analytic gradient x input (``sage.agents.attribution``) == torch autograd on the shipped actors.

The reference is ``torch.autograd.grad`` of the strength ``sum_a softmax(logits)_a * direction_a / 2``
on ``ensemble.policy.actors[agent]``: a float64 copy (the analytic path computes in float64, so they must
agree to rounding, 1e-9 relative) and the float32 original (the previous implementation; float32
rounding, ~1e-5 relative). Inputs: real tactical/strategic matrices of the seeded synthetic market and
random matrices (including saturating magnitudes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sage.agents import AgentEnsemble, AgentInputError, Attribution
from sage.agents.attribution import (
    gradient_x_input,
    pack_actor64,
    top_cells,
    torch_strength_gradient,
)
from sage.agents.engine import pack_actor
from sage.agents.observation import ACTION_DIRECTIONS, AGENTS, STRATEGIC_AGENTS, TACTICAL_AGENTS
from sage.features import STRATEGIC_COLUMNS, TACTICAL_COLUMNS

torch.set_num_threads(1)

DIRECTIONS = np.asarray(ACTION_DIRECTIONS, dtype=np.float64)
ACCOUNT = np.array([0.5, -0.2, 0.1, 0.3], dtype=np.float32)


@pytest.fixture(scope="module")
def ensemble() -> AgentEnsemble:
    return AgentEnsemble.load("default")


@pytest.fixture(scope="module")
def observations(ensemble) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per timeframe: real windows of the synthetic market (4) and random windows (3), with accounts."""
    from sage.training.agents import trending_market
    from sage.training.env import EnvData

    data = EnvData.from_synthetic(trending_market(99, 20_000))
    valid = np.flatnonzero(data.valid)
    picks = valid[np.linspace(0, len(valid) - 1, 4).astype(int)]
    rng = np.random.default_rng(11)
    out: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"tactical": [], "strategic": []}
    for t in picks:
        acc = rng.uniform(-1, 1, ensemble.config.account_dim).astype(np.float32)
        out["tactical"].append((np.ascontiguousarray(data.tactical_window(int(t))), acc))
        out["strategic"].append((np.ascontiguousarray(data.strategic_window(int(t))), acc))
    for kind, shape in (
        ("tactical", ensemble.config.tactical_shape),
        ("strategic", ensemble.config.strategic_shape),
    ):
        out[kind].append((rng.normal(size=shape).astype(np.float32), ACCOUNT))
        out[kind].append((rng.uniform(-1, 1, shape), ACCOUNT.astype(np.float64)))  # float64 input
        out[kind].append((rng.normal(scale=8.0, size=shape).astype(np.float32), ACCOUNT * 5))  # saturating
    return out


def _kind(agent: str) -> str:
    return "tactical" if agent in TACTICAL_AGENTS else "strategic"


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def test_shipped_agents_cover_both_timeframes():
    assert (
        set(TACTICAL_AGENTS) | set(STRATEGIC_AGENTS) == set(AGENTS) and TACTICAL_AGENTS and STRATEGIC_AGENTS
    )


@pytest.mark.parametrize("agent", AGENTS)
def test_gradient_matches_torch_autograd(ensemble, observations, agent):
    actor = ensemble.policy.actors[agent]
    params, dims = pack_actor64(actor)
    for matrix, account in observations[_kind(agent)]:
        grad, score, strength = gradient_x_input(params, dims, matrix, account, DIRECTIONS)
        ref64, strength64 = torch_strength_gradient(actor, matrix, account, DIRECTIONS, dtype=torch.float64)
        ref32, strength32 = torch_strength_gradient(actor, matrix, account, DIRECTIONS)
        assert np.abs(ref64).max() > 0  # a non-trivial gradient (the comparison is not vacuous)
        assert _rel_err(grad, ref64) < 1e-9
        assert strength == pytest.approx(strength64, rel=1e-12, abs=1e-15)
        assert _rel_err(grad, ref32) < 1e-5
        assert strength == pytest.approx(strength32, abs=1e-6)
        x = np.asarray(matrix, dtype=np.float32).astype(np.float64)
        np.testing.assert_array_equal(score, grad * x)


def test_gradient_covers_every_row_and_the_residual_path(ensemble, observations):
    """Old rows reach the strength only through the LSTM; the newest also through the head directly."""
    actor = ensemble.policy.actors["momentum"]
    params, dims = pack_actor64(actor)
    matrix, account = observations["tactical"][0]
    grad, _, _ = gradient_x_input(params, dims, matrix, account, DIRECTIONS)
    assert (np.abs(grad).sum(axis=1) > 0).all()
    head_w = actor.head[0].weight.detach().double().numpy()  # (Hh, 2H + F + A)
    assert np.abs(head_w[:, 2 * ensemble.config.hidden : 2 * ensemble.config.hidden + 7]).max() > 0


@pytest.mark.parametrize("agent", AGENTS)
def test_attributions_rank_like_torch(ensemble, observations, agent):
    columns = TACTICAL_COLUMNS if _kind(agent) == "tactical" else STRATEGIC_COLUMNS
    actor = ensemble.policy.actors[agent]
    for matrix, account in observations[_kind(agent)]:
        top_k = 12
        got = ensemble.attributions(agent, matrix, account, top_k=top_k)
        assert len(got) == top_k and all(isinstance(a, Attribution) for a in got)
        x = np.asarray(matrix, dtype=np.float32).astype(np.float64)
        length = x.shape[0]
        for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
            ref_grad, _ = torch_strength_gradient(actor, matrix, account, DIRECTIONS, dtype=dtype)
            ref = ref_grad * x
            scale = np.abs(ref).max()
            mags = np.sort(np.abs(ref).ravel())[::-1]
            order = top_cells(ref, top_k)
            for rank, (attr, flat) in enumerate(zip(got, order, strict=True)):
                row, col = divmod(int(flat), x.shape[1])
                cell = (length - 1 - attr.lag) * x.shape[1] + columns.index(attr.feature)
                assert attr.score == pytest.approx(ref.ravel()[cell], rel=tol, abs=tol * scale)
                gap_above = mags[rank - 1] - mags[rank] if rank > 0 else np.inf
                gap_below = mags[rank] - mags[rank + 1]
                if min(gap_above, gap_below) > 10 * tol * scale:  # not a near-tie: the same cell
                    assert (attr.feature, attr.lag) == (columns[col], length - 1 - row)
        scores = [abs(a.score) for a in got]
        assert scores == sorted(scores, reverse=True)


def test_top_cells_is_stable_and_clipped():
    score = np.array([[1.0, -3.0, 3.0], [0.5, -1.0, 0.0]])
    assert top_cells(score, 4).tolist() == [1, 2, 0, 4]  # |-3| == |3|: row-major order; then 1 before -1
    assert top_cells(score, 0).tolist() == [] and top_cells(score, -2).tolist() == []
    assert top_cells(score, 100).tolist() == [1, 2, 0, 4, 3, 5]


def test_attributions_are_deterministic_and_read_float32(ensemble, observations):
    matrix, account = observations["strategic"][1]
    first = ensemble.attributions("trend", matrix, account, top_k=6)
    for other, acc in observations["strategic"]:  # other calls in between change nothing
        ensemble.attributions("trend", other, acc)
    assert (
        ensemble.attributions("trend", matrix.astype(np.float64), account.astype(np.float64), top_k=6)
        == first
    )
    all_cells = ensemble.attributions("trend", matrix, account, top_k=10_000)
    assert len(all_cells) == 48 * 13 and all_cells[:6] == first
    assert ensemble.attributions("trend", matrix, account, top_k=0) == []
    assert ensemble.attributions("trend", matrix, account, top_k=-1) == []


def test_refresh_repacks_attribution_weights(observations):
    ens = AgentEnsemble.from_config(seed=5)
    matrix, account = observations["tactical"][0]
    before = ens.attributions("fvg", matrix, account, top_k=3)
    actor = ens.policy.actors["fvg"]
    with torch.no_grad():
        actor.encoder.lstm.weight_hh_l0.mul_(-1.5)
        actor.head[0].bias.add_(0.3)
    ens.refresh()
    after = ens.attributions("fvg", matrix, account, top_k=3)
    assert after != before
    params, dims = pack_actor64(actor)
    grad, _, _ = gradient_x_input(params, dims, matrix, account, DIRECTIONS)
    ref, _ = torch_strength_gradient(actor, matrix, account, DIRECTIONS, dtype=torch.float64)
    assert _rel_err(grad, ref) < 1e-9


def test_packing_shares_the_engine_layout(ensemble):
    for agent in (TACTICAL_AGENTS[0], STRATEGIC_AGENTS[0]):
        params64, dims64 = pack_actor64(ensemble.policy.actors[agent])
        params32, dims32 = pack_actor(ensemble.policy.actors[agent])
        np.testing.assert_array_equal(dims64, dims32)
        assert params64.dtype == np.float64 and params64.shape == params32.shape
        np.testing.assert_allclose(params64, params32, rtol=0, atol=1e-7)  # only the bias sums round


def test_attribution_errors_unchanged(ensemble, observations):
    tac, acc = observations["tactical"][0]
    strat, _ = observations["strategic"][0]
    with pytest.raises(ValueError, match="unknown agent 'nope'"):
        ensemble.attributions("nope", tac, acc)
    with pytest.raises(ValueError, match=r"tactical matrix must have shape \(60, 7\)"):
        ensemble.attributions("fvg", strat, acc)
    with pytest.raises(ValueError, match=r"strategic matrix must have shape \(48, 13\)"):
        ensemble.attributions("trend", tac, acc)
    with pytest.raises(ValueError, match="account must have shape"):
        ensemble.attributions("fvg", tac, acc[:2])
    bad = tac.copy()
    bad[3, 2] = np.nan
    with pytest.raises(AgentInputError, match="fvg: observation contains NaN or inf"):
        ensemble.attributions("fvg", bad, acc)
    bad_acc = acc.copy()
    bad_acc[1] = -np.inf
    with pytest.raises(AgentInputError, match="trend: observation contains NaN or inf"):
        ensemble.attributions("trend", strat, bad_acc)


def test_top_cells_scan_equals_stable_argsort():
    rng = np.random.default_rng(3)
    for _ in range(50):
        score = np.round(rng.normal(size=(60, 7)), 1) * rng.choice([-1, 1], size=(60, 7))  # many ties
        expected = np.argsort(-np.abs(score), axis=None, kind="stable")
        for k in (1, 3, 16, 17, 420):
            np.testing.assert_array_equal(top_cells(score, k), expected[:k])
