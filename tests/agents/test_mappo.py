"""MAPPO: bit-for-bit reproducible training, and a sanity check that trained agents beat random and
flat policies out of sample on a market with strong persistent trends."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest
import torch

from sage.agents import AgentEnsemble
from sage.data.synthetic import generate_bars
from sage.training.agents import AgentsDataConfig, AgentsTrainConfig, train_agents, trending_market
from sage.training.env import EnvData
from sage.training.evaluate_agents import EvaluationConfig, evaluate_series, prepare_series, run_evaluation
from sage.training.mappo import MappoConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def train_data() -> EnvData:
    return EnvData.from_synthetic(trending_market(7, 30_000))


@pytest.fixture(scope="module")
def held_out():
    return prepare_series(
        generate_bars(trending_market(2024, 30_000)), "trending seed 2024", tactical_minutes=5,
        strategic_minutes=30, periods_per_year=365 * 288,
    )


def test_training_reproduces_bit_for_bit(tmp_path, train_data):
    config = AgentsTrainConfig(
        data=AgentsDataConfig(synthetic_bars=30_000),
        mappo=MappoConfig(n_envs=2, n_steps=32, total_steps=128, update_epochs=1, n_minibatches=2, checkpoint_every=1),
    )
    a = train_agents(config, out_dir=tmp_path / "a", progress=False, data=train_data)
    b = train_agents(config, out_dir=tmp_path / "b", progress=False, data=train_data)
    ma, mb = a.ensemble.manifest, b.ensemble.manifest
    assert ma.weights_sha256 == mb.weights_sha256
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (tmp_path / "b" / "weights.pt").read_bytes()
    assert json.dumps(a.history) == json.dumps(b.history) and len(a.history) == 2  # NaN-safe equality
    # transferred pretrained LSTM, checkpoints through the registry, curves and history written
    assert ma.training["initialisation"]["encoder"].startswith("encoder-default@")
    assert (tmp_path / "a" / "learning_curves.png").stat().st_size > 10_000
    assert len(json.loads((tmp_path / "a" / "history.json").read_text())) == 2
    loaded = AgentEnsemble.load(tmp_path / "a" / "checkpoints" / "update-00002")
    assert loaded.manifest.weights_sha256 == ma.weights_sha256  # the last checkpoint is the final policy
    # a different seed gives different weights
    other = msgspec.structs.replace(config, mappo=msgspec.structs.replace(config.mappo, seed=1))
    c = train_agents(other, out_dir=tmp_path / "c", progress=False, data=train_data)
    assert c.ensemble.manifest.weights_sha256 != ma.weights_sha256


def test_trained_agents_beat_random_and_flat_out_of_sample(tmp_path, train_data, held_out):
    config = AgentsTrainConfig(
        mappo=MappoConfig(seed=0, n_envs=4, n_steps=128, total_steps=4 * 128 * 8, update_epochs=4, n_minibatches=4)
    )
    trained = train_agents(config, progress=False, data=train_data)
    assert trained.history[-1]["mean_reward"] > trained.history[0]["mean_reward"]
    ev = EvaluationConfig(folds=2)
    result = evaluate_series(trained.ensemble, held_out, ev)
    rows = {r["strategy"]: r for r in result["total"]}
    agents, rand, flat = rows["agents"], rows["random"], rows["flat"]
    assert agents["n_periods"] > 2000
    assert agents["total_return"] > flat["total_return"] == 0.0
    assert agents["sharpe"] > 1.0 > rand["sharpe"]
    assert agents["total_return"] > rand["total_return"]
    # the untrained (seeded initial) policy does not: the training made the difference
    untrained = evaluate_series(AgentEnsemble.from_config(seed=0), held_out, ev)
    assert {r["strategy"]: r for r in untrained["total"]}["agents"]["sharpe"] < agents["sharpe"]
    # the report renders and is written
    report = run_evaluation(ev, out_dir=tmp_path, ensemble=trained.ensemble, datasets=[held_out])
    assert "| agents |" in report.markdown and "| ema_cross_10_30 |" in report.markdown
    assert json.loads((tmp_path / "agents_evaluation.json").read_text())["results"][0]["bars"] > 2000
    assert np.isfinite(agents["max_drawdown"])
