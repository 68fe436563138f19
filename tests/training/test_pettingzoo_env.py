"""SageParallelEnv: the PettingZoo parallel protocol over the same kernel."""

from __future__ import annotations

import numpy as np
import pytest

from sage.agents.observation import AGENTS
from sage.data.synthetic import SyntheticMarketConfig
from sage.training.env import EnvConfig, EnvData, VecMarketEnv
from sage.training.pettingzoo_env import SageParallelEnv


@pytest.fixture(scope="module")
def data() -> EnvData:
    return EnvData.from_synthetic(SyntheticMarketConfig(seed=13, n_bars=19_000))


def test_pettingzoo_parallel_api(data: EnvData) -> None:
    pytest.importorskip("gymnasium")
    test = pytest.importorskip("pettingzoo.test")
    env = SageParallelEnv(data, EnvConfig(episode_len=25), seed=0)
    test.parallel_api_test(env, num_cycles=60)


def test_episode_matches_the_vector_env(data: EnvData) -> None:
    config = EnvConfig(episode_len=10)
    pz = SageParallelEnv(data, config, seed=4)
    vec = VecMarketEnv(data, config, n_envs=1, seed=4)
    obs, infos = pz.reset(seed=4)
    vobs = vec.reset(seed=4)
    assert pz.agents == list(AGENTS)
    assert infos["fvg"]["t_index"] == int(vobs.t_index[0])
    assert np.array_equal(obs["fvg"]["matrix"], vobs.tactical[0])
    assert np.array_equal(obs["trend"]["matrix"], vobs.strategic[0])
    rng = np.random.default_rng(0)
    for step in range(10):
        joint = rng.integers(0, 5, size=(1, 5))
        obs, rewards, terms, truncs, infos = pz.step({a: int(joint[0, i]) for i, a in enumerate(AGENTS)})
        vobs, vrewards, _vdones, vinfo = vec.step(joint)
        assert [rewards[a] for a in AGENTS] == pytest.approx(vrewards[0].tolist())
        if step < 9:
            assert not any(terms.values()) and not any(truncs.values())
            assert np.array_equal(obs["momentum"]["account"], vobs.account[0])
    assert all(truncs.values()) and pz.agents == []
    # The final observation is the episode's last bar, not the auto-reset one.
    final_t = int(vinfo["final_t_index"][0])
    assert np.array_equal(obs["entry"]["matrix"], data.tactical_window(final_t))
    assert np.array_equal(obs["mean_reversion"]["matrix"], data.strategic_window(final_t))
    assert np.array_equal(obs["entry"]["account"], vinfo["final_account"][0])
    assert infos["fvg"]["episode_length"] == 10
    with pytest.raises(RuntimeError, match="reset"):
        pz.step({a: 2 for a in AGENTS})


def test_spaces_and_errors(data: EnvData) -> None:
    pytest.importorskip("gymnasium")
    env = SageParallelEnv(data)
    obs, _ = env.reset(seed=1)
    for agent in AGENTS:
        assert env.observation_space(agent).contains(obs[agent])
        assert env.action_space(agent).n == 5
    assert env.state().shape == env.state_space().shape
    with pytest.raises(ValueError, match="unknown agent"):
        env.observation_space("bogus")
    with pytest.raises(ValueError, match="missing"):
        env.step({"fvg": 1})
