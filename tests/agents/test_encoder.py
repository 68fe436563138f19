"""Pretrained encoder: self-supervised targets, focal loss, checkpoint, transfer into the agents."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.models.encoder import EncoderConfig, SequenceEncoder, transfer_weights
from sage.models.policy import MultiAgentPolicy, PolicyConfig
from sage.models.registry import ForeignCheckpointError
from sage.training.encoder import (
    EncoderTrainConfig,
    focal_loss,
    load_pretrained,
    prepare,
    pretrain_targets,
    train_encoder,
)
from sage.training.env import aggregate_bars

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    config = EncoderTrainConfig(steps=150, batch_size=64)
    bars = aggregate_bars(generate_bars(SyntheticMarketConfig(seed=5, n_bars=15_000)), 5)
    data = prepare(bars, config, "synthetic seed 5")
    out = tmp_path_factory.mktemp("encoder")
    result = train_encoder(config, data=data, out_dir=out)
    return out, result, data, config


def test_targets_follow_their_definitions():
    idx = pd.date_range("2024-01-01", periods=9, freq="5min", tz="UTC")
    high = np.array([10, 11, 12, 15, 12, 11, 10, 11, 12], dtype=float)
    low = high - 1.0
    low[6] = 5.0  # swing low at bar 6 too
    bars = pd.DataFrame({"open": low + 0.2, "high": high, "low": low, "close": high - 0.2, "volume": 1.0}, index=idx)
    t = pretrain_targets(bars, EncoderTrainConfig())
    assert t[6, 1] == 1  # window ending at 6: bar 3 (t - k) is the highest of bars 0..6
    assert (t[:6, 1] == -1).all()  # the first window with a confirmed swing candidate ends at 2k
    assert t[-1, 2] == -1 and t[0, 2] == 0  # next candle: none at the end; bar 1 closes near its high
    assert (t[:19, 0] == -1).all()  # expansion needs 20 bars of history


def test_focal_loss_reduces_to_cross_entropy():
    logits = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))
    assert float(focal_loss(logits, y, gamma=0.0)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    assert float(focal_loss(logits, y, gamma=2.0)) < float(F.cross_entropy(logits, y))


def test_pretraining_is_deterministic_and_learns(pretrained):
    _, result, data, config = pretrained
    again = train_encoder(config, data=data)
    for key, value in result.net.state_dict().items():
        assert torch.equal(value, again.net.state_dict()[key]), key
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    swing = result.metrics["holdout"]["swing"]
    assert swing["balanced_accuracy"] > 0.4  # 3 classes: chance is 1/3


def test_encoder_weights_transfer_into_every_agent(pretrained):
    out = pretrained[0]
    cfg, state, manifest = load_pretrained(out)
    assert cfg == EncoderConfig() and manifest.kind == "sage.pretrained-encoder"
    assert set(state) == {k for k in SequenceEncoder(cfg).state_dict()}
    policy = MultiAgentPolicy()
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    for agent, actor in policy.actors.items():
        copied = transfer_weights(state, actor.encoder)
        # the LSTM transfers; the projection does not (7 or 13 inputs, not 11)
        assert copied == sorted(k for k in state if k.startswith("lstm."))
        for k in copied:
            assert torch.equal(actor.encoder.state_dict()[k], state[k])
            assert actor.encoder.state_dict()[k].shape == state[k].shape
        assert torch.equal(actor.encoder.proj.weight, before[f"actors.{agent}.encoder.proj.weight"])
    # a projection of matching width transfers too
    same = SequenceEncoder(EncoderConfig())
    assert "proj.weight" in transfer_weights(state, same)
    # incompatible sizes are refused, not silently ignored
    with pytest.raises(ValueError, match="do not fit"):
        transfer_weights(state, SequenceEncoder(EncoderConfig(n_features=7, hidden=16)))
    with pytest.raises(ForeignCheckpointError):
        from sage.agents import AgentEnsemble

        AgentEnsemble.load(out)


def test_fine_tuning_changes_transferred_weights(pretrained):
    out, _, _, _ = pretrained
    _, state, _ = load_pretrained(out)
    policy = MultiAgentPolicy(PolicyConfig())
    actor = policy.actors["momentum"]
    transfer_weights(state, actor.encoder)
    optim = torch.optim.Adam(actor.parameters(), lr=1e-2)
    x = torch.rand(16, 60, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    acc = torch.zeros(16, 4)
    loss = -torch.log_softmax(actor(x, acc), 1)[:, 4].mean()  # push towards "strong buy"
    loss.backward()
    optim.step()
    w = actor.encoder.lstm.weight_hh_l0
    assert not torch.equal(w, state["lstm.weight_hh_l0"])
    assert w.shape == state["lstm.weight_hh_l0"].shape


def test_shipped_encoder_loads():
    cfg, _, manifest = load_pretrained("default")
    assert manifest.name == "encoder-default" and cfg.out_dim == 16
    assert "swing" in manifest.metrics["holdout"]
