"""VecMarketEnv: hand-computed PnL/costs/rewards, equality with the plain-Python reference, API."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from sage.agents.observation import ACCOUNT_DIM, account_features, account_state_into
from sage.data.synthetic import SyntheticMarketConfig
from sage.training.env import JOINT_DIM, EnvConfig, EnvConfigError, EnvData, VecMarketEnv
from sage.training.env_kernels import ReferenceMarketEnv

W = 60  # first bar with a complete (synthetic, hand-made) observation


def _hand_data(close: list[float], open_next: list[float], atr: float = 1.0) -> EnvData:
    """EnvData with hand-set prices after ``W`` flat warm bars; all matrix rows zero (finite)."""
    c = np.r_[np.full(W, close[0]), close]
    o = np.r_[np.full(W, close[0]), close[0], open_next]  # open[t + 1] is the fill of the decision at t
    n = c.size
    ts = (np.arange(n, dtype=np.int64) + 1) * 300_000_000_000
    return EnvData(
        ts=ts,
        open_=o[:n],
        close=c,
        atr=np.full(n, atr),
        tactical_rows=np.zeros((n, 7)),
        strategic_ts=ts,  # one "30-minute" row per bar keeps the hand example small
        strategic_rows=np.zeros((n, 13)),
    )


def _hand_config(**changes) -> EnvConfig:
    base = EnvConfig(
        episode_len=3,
        cost_bps=10.0,
        slippage_bps=0.0,
        slippage_atr=0.0,
        drawdown_penalty=0.5,
        shaping_scale=0.0,
        stop_drawdown=0.5,
    )
    return msgspec.structs.replace(base, **changes)


def test_pnl_costs_and_rewards_of_a_hand_computed_sequence() -> None:
    # Decision bars: close 100 -> 101 -> 99 -> 98; fills at the next opens 100.5, 100.8, 99.5.
    data = _hand_data([100.0, 101.0, 99.0, 98.0], [100.5, 100.8, 99.5])
    env = VecMarketEnv(data, _hand_config(), n_envs=1)
    obs = env.reset_at(np.array([W]))
    assert obs.account.tolist() == [[0.0, 0.0, 0.0, 0.0]]

    # Step 1: all agents +2 -> target +1. Old position 0, new 1 filled at 100.5.
    _, r, done, info = env.step(np.full((1, 5), 4))
    pnl1 = (101.0 - 100.5) / 100.0 - 1.0 * 10e-4  # gross 0.005, cost 0.001
    assert info["pnl"][0] == pytest.approx(pnl1, abs=1e-15)
    assert info["cost"][0] == pytest.approx(0.001, abs=1e-15)
    assert info["turnover"][0] == 1.0 and info["position"][0] == 1.0
    assert info["equity"][0] == pytest.approx(1.0 + pnl1)
    # Rewards in ATR units: atr / close = 0.01. Every agent's own signal equals the team's.
    assert r[0] == pytest.approx(np.full(5, pnl1 / 0.01), rel=1e-6)
    assert not done[0]

    # Step 2: directions (-2, -2, 0, 0, 0) -> mean -0.8 -> target -0.4, filled at 100.8.
    obs, r, done, info = env.step(np.array([[0, 0, 2, 2, 2]]))
    gross2 = (1.0 * (100.8 - 101.0) + -0.4 * (99.0 - 100.8)) / 101.0
    cost2 = 1.4 * 10e-4
    pnl2 = gross2 - cost2
    assert info["pnl"][0] == pytest.approx(pnl2, abs=1e-15)
    assert info["turnover"][0] == pytest.approx(1.4)
    eq2 = 1.0 + pnl1 + pnl2
    assert info["equity"][0] == pytest.approx(eq2)  # pnl2 > 0: a new peak, no drawdown
    scale = 1.0 / 101.0
    shared2 = pnl2 / scale
    own_short = (1.0 * (100.8 - 101.0) + -1.0 * (99.0 - 100.8)) / 101.0 - 2.0 * 10e-4  # +1 -> -1
    own_flat = (1.0 * (100.8 - 101.0)) / 101.0 - 1.0 * 10e-4  # +1 -> 0
    expected = [0.7 * own_short / scale + 0.3 * shared2] * 2 + [0.7 * own_flat / scale + 0.3 * shared2] * 3
    assert r[0] == pytest.approx(expected, rel=1e-6)
    # Account at bar 2 (close 99): short 0.4 entered at 100.8; open PnL -0.4 * (99 - 100.8) / 1 ATR.
    assert obs.account[0].tolist() == pytest.approx([-0.4, 0.4 * 1.8 / 5.0, 0.0, 1.0 / 13.0], rel=1e-6)

    # Step 3: all hold -> target 0, closes the short at 99.5; loses -> drawdown penalty.
    _, r, done, info = env.step(np.full((1, 5), 2))
    pnl3 = (-0.4 * (99.5 - 99.0)) / 99.0 - 0.4 * 10e-4
    assert info["pnl"][0] == pytest.approx(pnl3, abs=1e-15)
    shared3 = (pnl3 - 0.5 * (-pnl3)) / (1.0 / 99.0)  # new drawdown = the whole loss
    own_cover = -1.0 * (99.5 - 99.0) / 99.0 - 1.0 * 10e-4  # agents at -2 go flat at 99.5
    own3 = [own_cover, own_cover, 0.0, 0.0, 0.0]  # agents already flat earn and pay nothing
    expected3 = [0.7 * o * 99.0 + 0.3 * shared3 for o in own3]
    assert r[0] == pytest.approx(expected3, rel=1e-6)
    # Episode length 3: truncated, restarted; final account and totals reported.
    assert done[0] and info["truncated"][0] and not info["terminated"][0]
    assert info["episode_length"][0] == 3
    assert info["episode_pnl"][0] == pytest.approx(pnl1 + pnl2 + pnl3, abs=1e-15)
    assert info["episode_returns"] == pytest.approx([pnl1 + pnl2 + pnl3])
    dd = -pnl3 / eq2
    assert info["final_account"][0].tolist() == pytest.approx([0.0, 0.0, dd / 0.05, 0.0], rel=1e-5)


def test_fill_at_close_and_slippage() -> None:
    data = _hand_data([100.0, 102.0, 102.0, 102.0], [101.0, 102.0, 102.0], atr=2.0)
    config = _hand_config(fill_at_next_open=False, slippage_bps=5.0, slippage_atr=0.1, max_position=2.0)
    env = VecMarketEnv(data, config, n_envs=1)
    env.reset_at(np.array([W]))
    _, _, _, info = env.step(np.array([[3, 3, 3, 3, 3]]))  # +1 each -> target 0.5 -> exposure 1.0
    cost_rate = 15e-4 + 0.1 * (2.0 / 100.0)
    assert info["cost"][0] == pytest.approx(1.0 * cost_rate, abs=1e-15)
    assert info["pnl"][0] == pytest.approx(2.0 * 0.5 * (102.0 - 100.0) / 100.0 - cost_rate, abs=1e-15)


def test_drawdown_stop_terminates() -> None:
    data = _hand_data([100.0, 90.0, 90.0, 90.0], [100.0, 90.0, 90.0])
    env = VecMarketEnv(data, _hand_config(stop_drawdown=0.05), n_envs=1)
    env.reset_at(np.array([W]))
    _, _, done, info = env.step(np.full((1, 5), 4))
    assert done[0] and info["terminated"][0] and not info["truncated"][0]
    assert info["final_account"][0][2] == 1.0  # 10 % drawdown saturates the feature


def test_shaping_terms() -> None:
    data = _hand_data([100.0, 101.0, 101.0, 101.0], [100.0, 101.0, 101.0])
    data.tactical_rows[W] = [0.8, 0.2, 0.5, 0.9, 0.0, -0.6, 0.1]  # bull, bear, level, age, mitig, mom, vol
    data.strategic_rows[W, [0, 1, 3, 4]] = [0.4, 0.2, 0.5, 0.7]  # macd, trend, rsi, bb
    actions = np.array([[4, 3, 4, 0, 1]])  # directions +2, +1, +2, -2, -1
    rewards = []
    for scale in (0.0, 0.1):
        env = VecMarketEnv(data, _hand_config(shaping_scale=scale), n_envs=1)
        env.reset_at(np.array([W]))
        rewards.append(env.step(actions)[1][0].astype(np.float64))
    move = min(1.0, (101.0 - 100.0) / 100.0 / 0.01)
    shaping = [
        1.0 * (0.8 - 0.2) * max(1.0 - 0.5, 0.0),  # fvg: bullish gaps, near a level
        0.5 * -0.6,  # momentum: long against falling momentum
        0.25 * (2 - 0) * move,  # entry: opened long before an up move
        -1.0 * 0.5 * (0.4 + 0.2),  # trend: short into an up trend
        0.5 * 0.5 * (0.5 + 0.7),  # mean reversion: short when stretched up
    ]
    assert (rewards[1] - rewards[0]).tolist() == pytest.approx([0.1 * s for s in shaping], abs=1e-6)


def test_account_features_hand_values() -> None:
    out = account_features(0.5, 100.0, 103.0, 2.0, 0.01, 12)
    assert out.dtype == np.float32 and out.shape == (ACCOUNT_DIM,)
    assert out.tolist() == pytest.approx([0.5, 0.5 * 3.0 / 2.0 / 5.0, 0.2, 0.5])
    assert account_features(-1.0, 100.0, 200.0, 1.0, 0.5, 3).tolist() == pytest.approx([-1.0, -1.0, 1.0, 0.2])
    assert account_features(0.0, 0.0, 100.0, np.nan, np.nan, 7).tolist() == [0.0, 0.0, 0.0, 0.0]
    buf = np.empty(ACCOUNT_DIM)
    account_state_into(buf, 0.25, 10.0, 9.0, 0.5, 0.0, 1)
    assert buf.tolist() == pytest.approx([0.25, -0.1, 0.0, 1.0 / 13.0])


@pytest.fixture(scope="module")
def data() -> EnvData:
    return EnvData.from_synthetic(SyntheticMarketConfig(seed=11, n_bars=20_000))


@pytest.mark.parametrize(
    "changes",
    [
        {"episode_len": 12},
        {
            "episode_len": 30,
            "fill_at_next_open": False,
            "max_position": 4.0,
            "stop_drawdown": 0.004,
            "shaping_scale": 0.2,
            "agent_weights": (2.0, 1.0, 0.5, 1.0, 0.0),
            "reward_clip": 3.0,
        },
    ],
)
def test_vectorised_env_equals_python_reference(data: EnvData, changes: dict) -> None:
    config = msgspec.structs.replace(EnvConfig(), **changes)
    n = 6
    env = VecMarketEnv(data, config, n_envs=n, seed=5)
    obs = env.reset()
    refs = [ReferenceMarketEnv(data, config) for _ in range(n)]
    for i, ref in enumerate(refs):
        account, joint = ref.reset(int(obs.t_index[i]))
        np.testing.assert_allclose(obs.account[i], account, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(obs.joint[i], joint, rtol=1e-6, atol=1e-7)
    rng = np.random.default_rng(9)
    n_done = n_term = 0
    for _ in range(90):
        actions = rng.integers(0, 5, size=(n, 5))
        obs, rewards, _dones, info = env.step(actions)
        for i, ref in enumerate(refs):
            account, joint, ref_rewards, term, trunc, ref_info = ref.step(actions[i])
            np.testing.assert_allclose(rewards[i], ref_rewards, rtol=1e-6, atol=1e-6)
            assert (bool(info["terminated"][i]), bool(info["truncated"][i])) == (term, trunc)
            for key in ("pnl", "cost", "turnover", "equity", "position"):
                assert info[key][i] == pytest.approx(ref_info[key], rel=1e-12, abs=1e-15), key
            if term or trunc:
                n_done += 1
                n_term += term
                np.testing.assert_allclose(info["final_account"][i], account, rtol=1e-6, atol=1e-7)
                assert info["episode_pnl"][i] == pytest.approx(ref.episode_pnl, rel=1e-12, abs=1e-15)
                account, joint = ref.reset(int(obs.t_index[i]))
            np.testing.assert_allclose(obs.account[i], account, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(obs.joint[i], joint, rtol=1e-6, atol=1e-7)
            np.testing.assert_array_equal(obs.tactical[i], data.tactical_window(int(obs.t_index[i])))
            np.testing.assert_array_equal(obs.strategic[i], data.strategic_window(int(obs.t_index[i])))
    assert n_done >= n  # auto-reset exercised
    if "stop_drawdown" in changes:
        assert n_term > 0  # the drawdown stop exercised too


def test_observations_are_finite_and_shaped(data: EnvData) -> None:
    env = VecMarketEnv(data, EnvConfig(episode_len=20), n_envs=16, seed=0)
    obs = env.reset()
    for _ in range(45):
        assert obs.tactical.shape == (16, 60, 7) and obs.strategic.shape == (16, 48, 13)
        assert obs.account.shape == (16, ACCOUNT_DIM) and obs.joint.shape == (16, JOINT_DIM)
        for arr in (obs.tactical, obs.strategic, obs.account, obs.joint):
            assert arr.dtype == np.float32 and np.isfinite(arr).all()
        assert (np.abs(obs.account) <= 1.0).all()
        obs, rewards, dones, _ = env.step(env.sample_actions())
        assert rewards.dtype == np.float32 and rewards.shape == (16, 5) and np.isfinite(rewards).all()
        assert dones.dtype == np.bool_


def test_seeding_is_reproducible_and_modes_agree(data: EnvData) -> None:
    def run(**kwargs) -> list[np.ndarray]:
        env = VecMarketEnv(data, EnvConfig(episode_len=7), n_envs=5, seed=kwargs.pop("seed", 1), **kwargs)
        obs = env.reset()
        rng = np.random.default_rng(2)
        out = [obs.t_index.copy(), obs.account.copy()]
        for _ in range(20):
            obs, rewards, dones, _ = env.step(rng.integers(0, 5, size=(5, 5)))
            out += [obs.t_index.copy(), obs.joint.copy(), rewards.copy(), dones.copy()]
        return out

    a, b = run(), run()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = run(reuse_buffers=True, gather_windows=False)
    assert all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    d = run(seed=2)
    assert not np.array_equal(a[0], d[0])


def test_windowless_mode_and_gather(data: EnvData) -> None:
    env = VecMarketEnv(data, EnvConfig(), n_envs=3, seed=0, gather_windows=False)
    obs = env.reset()
    assert obs.tactical is None and obs.strategic is None
    tac, strat = env.gather(obs.t_index, obs.s_index)
    for i in range(3):
        assert np.array_equal(tac[i], data.tactical_window(int(obs.t_index[i])))
        assert np.array_equal(strat[i], data.strategic_window(int(obs.t_index[i])))


def test_bad_actions_and_config_raise(data: EnvData) -> None:
    env = VecMarketEnv(data, EnvConfig(), n_envs=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros((2, 5), dtype=np.int64))
    env.reset()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="0..4"):
        env.step(np.full((2, 5), 5))
    with pytest.raises(ValueError, match="integer"):
        env.step(np.zeros((2, 5)))
    with pytest.raises(EnvConfigError, match="individual_weight"):
        EnvConfig(individual_weight=-1.0)
    with pytest.raises(EnvConfigError, match="agent_weights"):
        EnvConfig(agent_weights=(1.0, 1.0))
    with pytest.raises(EnvConfigError, match="starts"):
        env.reset_at(np.array([0, 1]))
