"""Training is deterministic and leak-free; metrics and the causal HMM baseline are correct; the shipped
default weights load and beat chance on an unseen synthetic seed."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pytest
import torch

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import strategic_rows
from sage.features.schema import DEFAULT_SCHEMA
from sage.models.bundle import DEFAULT_BUNDLE, RegimeModelBundle, bundle_config
from sage.models.forecaster import QUANTILE_LEVELS, pinball_loss, standardised_forward_return
from sage.models.rde import RDEConfig
from sage.models.registry import read_manifest
from sage.training.regime import (
    HMMBaseline,
    RegimeTrainConfig,
    SyntheticData,
    add_train_regime_arguments,
    balanced_accuracy,
    config_from_args,
    evaluate,
    forecast_metrics,
    prepare_series,
    synthetic_series,
    train_regime,
    valid_window_ends,
)

TINY_ARCH = bundle_config(RDEConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, decoder_hidden=16), hidden=8)
TINY = RegimeTrainConfig(
    architecture=TINY_ARCH,
    synthetic=SyntheticData(train_seeds=(5,), bars_per_seed=2_000, val_seed=6, val_bars=1_500),
    catalog=None,
    steps=12,
    batch_synthetic=32,
    batch_real=0,
    warmup_steps=3,
)


def test_training_is_bitwise_deterministic(tmp_path: Path) -> None:
    a = train_regime(TINY, out_dir=tmp_path / "a", progress=False)
    b = train_regime(TINY, out_dir=tmp_path / "b", progress=False)
    sa, sb = a.bundle.net.state_dict(), b.bundle.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.weights_sha256 == b.weights_sha256
    assert (tmp_path / "a" / "weights.pt").read_bytes() == (tmp_path / "b" / "weights.pt").read_bytes()
    # the training distribution the drift monitors use is reproduced byte for byte too
    assert (tmp_path / "a" / "reference.json").read_bytes() == (tmp_path / "b" / "reference.json").read_bytes()
    assert read_manifest(tmp_path / "a").sidecars == read_manifest(tmp_path / "b").sidecars != {}
    assert a.history == b.history
    c = train_regime(msgspec.structs.replace(TINY, seed=1), progress=False)
    assert not torch.equal(c.bundle.net.state_dict()["rde.pos"], sa["rde.pos"])
    # the run restores the caller's torch settings
    assert not torch.are_deterministic_algorithms_enabled()


def test_training_learns_and_saves_a_loadable_manifest(tmp_path: Path) -> None:
    config = msgspec.structs.replace(TINY, steps=150, lr=1e-2, warmup_steps=10)
    result = train_regime(config, out_dir=tmp_path / "m", progress=False, command="pytest")
    first = np.mean([h["loss"] for h in result.history[:10]])
    last = np.mean([h["loss"] for h in result.history[-10:]])
    assert last < first
    manifest = read_manifest(tmp_path / "m")
    assert manifest.weights_sha256 == hashlib.sha256((tmp_path / "m" / "weights.pt").read_bytes()).hexdigest()
    assert manifest.training["command"] == "pytest"
    assert msgspec.convert(manifest.training["config"], RegimeTrainConfig) == config
    assert manifest.training["synthetic"][0]["seed"] == 5
    cls = manifest.metrics["validation_synthetic"]["classification"]
    assert 0.0 <= cls["balanced_accuracy"] <= 1.0 and np.asarray(cls["confusion"]).shape == (4, 4)
    loaded = RegimeModelBundle.load(tmp_path / "m", schema=DEFAULT_SCHEMA)
    w = np.random.default_rng(0).uniform(-1, 1, (5, 48, 11))
    assert np.array_equal(loaded.infer_batch(w).probs, result.bundle.infer_batch(w).probs)


def test_holdout_tail_never_leaks_into_training() -> None:
    bars = generate_bars(SyntheticMarketConfig(seed=3, n_bars=2_000))
    s = prepare_series(bars, name="x", source="catalog", config=DEFAULT_BUNDLE, holdout_fraction=0.25)
    split = int(s.holdout_ends[0])
    assert s.train_ends.max() < split and s.holdout_ends.min() == split
    assert s.holdout_ends.size == pytest.approx(0.25 * (s.train_ends.size + s.holdout_ends.size), abs=1)
    h = DEFAULT_BUNDLE.forecaster.horizon
    # training targets read close[t + h]: all of them end before the tail starts
    finite = np.flatnonzero(np.isfinite(s.train_target))
    assert finite.max() + h < split
    assert np.isfinite(s.target[s.holdout_ends[:-h]]).all()  # evaluation targets are kept
    assert (s.labels == -1).all()


def test_valid_window_ends() -> None:
    rows = np.ones((10, 2))
    rows[:3] = np.nan
    rows[6, 1] = np.nan
    assert list(valid_window_ends(rows, 2)) == [4, 5, 8, 9]
    assert list(valid_window_ends(rows[:1], 2)) == []


def test_forward_return_target() -> None:
    close = np.array([100.0, 101.0, 102.0, 101.0, 103.0])
    sigma = np.array([0.01, 0.0, np.nan, 0.01, 0.01])
    z = standardised_forward_return(close, sigma, 2)
    assert z[0] == pytest.approx(np.log(102 / 100) / (0.01 * np.sqrt(2)))
    assert np.isnan(z[1]) and np.isnan(z[2]) and np.isnan(z[3]) and np.isnan(z[4])


def test_pinball_is_minimised_by_the_true_quantiles() -> None:
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.standard_normal(20_000).astype(np.float32))
    levels = torch.tensor(QUANTILE_LEVELS)
    true_q = torch.quantile(z, levels)[None].expand(len(z), -1)
    best = pinball_loss(true_q, z, levels)
    for shift in (-0.2, 0.2):
        assert pinball_loss(true_q + shift, z, levels) > best
    m = forecast_metrics(true_q.numpy(), z.numpy().astype(np.float64), QUANTILE_LEVELS)
    assert m["coverage_outer"] == pytest.approx(0.8, abs=0.01)
    assert m["below_level"]["0.5"] == pytest.approx(0.5, abs=0.01)


def test_balanced_accuracy_matches_sklearn() -> None:
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(1)
    truth, pred = rng.integers(0, 4, 1000), rng.integers(0, 4, 1000)
    pred[:400] = truth[:400]
    assert balanced_accuracy(truth, pred) == pytest.approx(balanced_accuracy_score(truth, pred))


def test_hmm_filter_is_the_causal_forward_algorithm() -> None:
    """Filtered posterior at t == hmmlearn's posterior for the prefix ending at t (which for the last
    step of a sequence is the filtered one), so no future observation is used."""
    from hmmlearn.hmm import GaussianHMM

    rng = np.random.default_rng(4)
    x = np.concatenate(
        [rng.normal(0, 1, (150, 3)), rng.normal(2, 0.5, (150, 3)), rng.normal(-1, 2, (100, 3))]
    )
    model = GaussianHMM(3, covariance_type="full", n_iter=20, random_state=0).fit(x)
    base = HMMBaseline(model.startprob_, model.transmat_, model.means_, model.covars_, np.arange(3))
    np.testing.assert_allclose(base.log_emissions(x), model._compute_log_likelihood(x), rtol=1e-9, atol=1e-8)
    post = base.filter(x)
    for t in (0, 1, 37, 149, 150, 151, 298, 399):
        np.testing.assert_allclose(post[t], model.predict_proba(x[: t + 1])[-1], atol=1e-8)
    # perturbing the future leaves the past unchanged
    y = x.copy()
    y[200:] += 5.0
    np.testing.assert_array_equal(base.filter(y)[:200], post[:200])
    # NaN rows carry the prediction forward
    z = x.copy()
    z[10] = np.nan
    pz = base.filter(z)
    np.testing.assert_allclose(pz[10], post[9] @ model.transmat_, atol=1e-12)


def test_cli_arguments_map_to_config(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_regime_arguments(parser)
    assert config_from_args(parser.parse_args(["--out", str(tmp_path)])) == RegimeTrainConfig()
    args = parser.parse_args(["--synthetic-only", "--steps", "10", "--seed", "3", "--synthetic-bars", "5000"])
    cfg = config_from_args(args)
    assert cfg.catalog is None and cfg.steps == 10 and cfg.seed == 3 and cfg.synthetic.bars_per_seed == 5000
    cfg = config_from_args(parser.parse_args(["--bar-type", "SPX.SIM-1-DAY-LAST-EXTERNAL"]))
    assert cfg.bar_types == ("SPX.SIM-1-DAY-LAST-EXTERNAL",)


def test_shipped_default_beats_chance_on_an_unseen_seed() -> None:
    bundle = RegimeModelBundle.load("default", schema=DEFAULT_SCHEMA)
    manifest = bundle.manifest
    assert manifest is not None and manifest.name == "regime-default"
    assert msgspec.convert(manifest.training["config"], RegimeTrainConfig) == RegimeTrainConfig()
    series = synthetic_series(2024, 20_000, bundle.config)
    metrics = evaluate(bundle, series, series.train_ends)
    assert metrics["classification"]["balanced_accuracy"] > 0.5  # chance: 0.25
    assert 0.7 < metrics["forecast"]["coverage_outer"] < 0.9  # nominal 0.8
    # precompute through the public path equals the evaluation path
    rows = strategic_rows(generate_bars(SyntheticMarketConfig(seed=2024, n_bars=3_000)))
    out = bundle.infer_rows(rows)
    assert isinstance(rows, pd.DataFrame) and np.isfinite(out.probs[-1]).all()
