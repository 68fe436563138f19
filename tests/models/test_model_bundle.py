"""The bundle's inference: streaming equals precompute bitwise, engine agrees with torch, shapes and NaNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.data.regimes import Regime
from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import MatrixStream, strategic_rows
from sage.models.bundle import (
    DEFAULT_BUNDLE,
    DEFAULT_INPUT_COLUMNS,
    REFERENCE_BUNDLE,
    REFERENCE_FILE,
    BundleConfig,
    InputReference,
    InputSpec,
    RegimeModelBundle,
    bundle_config,
    windows_from_rows,
)
from sage.models.rde import REFERENCE_RDE, RDEConfig
from sage.models.registry import CorruptCheckpointError, IntegrityError, MissingCheckpointError

MEAN_POOL = bundle_config(RDEConfig(pooling="mean", n_layers=2))
LAST_POOL = bundle_config(RDEConfig(pooling="last", n_layers=2))


def _windows(n: int, length: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, length, len(DEFAULT_INPUT_COLUMNS)))


def _assert_same(a, b) -> None:
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        assert np.array_equal(x, y, equal_nan=True)


@pytest.mark.parametrize("config", [DEFAULT_BUNDLE, MEAN_POOL, LAST_POOL], ids=["default", "mean2", "last2"])
def test_single_equals_batch_bitwise(config: BundleConfig) -> None:
    bundle = RegimeModelBundle.from_config(config, seed=5)
    windows = _windows(600)
    batch = bundle.infer_batch(windows)
    for i in range(len(windows)):
        one = bundle.infer(windows[i])
        _assert_same(one, (batch.vectors[i], batch.probs[i], batch.quantiles[i]))
    # Any sub-batch, order or dtype gives the same bits for each window.
    perm = np.random.default_rng(1).permutation(len(windows))[:97]
    _assert_same(
        bundle.infer_batch(windows[perm]), (batch.vectors[perm], batch.probs[perm], batch.quantiles[perm])
    )
    _assert_same(
        bundle.infer_batch(windows[5:6]), (batch.vectors[5:6], batch.probs[5:6], batch.quantiles[5:6])
    )
    as_f32 = windows.astype(np.float32).astype(np.float64)  # already-rounded inputs: same float32 values
    _assert_same(bundle.infer_batch(as_f32), batch)


def test_reference_scale_single_equals_batch_bitwise() -> None:
    bundle = RegimeModelBundle.from_config(REFERENCE_BUNDLE, seed=2)
    assert bundle.config.rde == REFERENCE_RDE
    windows = _windows(12, length=24, seed=3)
    batch = bundle.infer_batch(windows)
    for i in range(len(windows)):
        _assert_same(bundle.infer(windows[i]), (batch.vectors[i], batch.probs[i], batch.quantiles[i]))


@pytest.mark.parametrize(
    "config",
    [DEFAULT_BUNDLE, MEAN_POOL, LAST_POOL, REFERENCE_BUNDLE],
    ids=["default", "mean2", "last2", "ref"],
)
def test_engine_matches_torch_reference(config: BundleConfig) -> None:
    bundle = RegimeModelBundle.from_config(config, seed=7)
    windows = _windows(64, length=bundle.window_length, seed=4)
    out = bundle.infer_batch(windows)
    with torch.inference_mode():
        vec, probs, quant = bundle.net.infer(torch.from_numpy(windows.astype(np.float32)))
    np.testing.assert_allclose(out.vectors, vec.numpy(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(out.probs, probs.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(out.quantiles, quant.numpy(), rtol=0, atol=2e-5)
    # and the torch training forward's classifier/forecaster agree with its reference inference
    with torch.no_grad():
        train_out = bundle.net.eval()(torch.from_numpy(windows.astype(np.float32)))
    np.testing.assert_allclose(torch.softmax(train_out.logits, 1).numpy(), probs.numpy(), atol=1e-6)


def test_outputs_are_well_formed() -> None:
    bundle = RegimeModelBundle.from_config(DEFAULT_BUNDLE, seed=1)
    out = bundle.infer_batch(_windows(200))
    assert out.vectors.shape == (200, 8) and out.probs.shape == (200, 4) and out.quantiles.shape == (200, 9)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(out.probs >= 0)
    assert np.all(np.diff(out.quantiles, axis=1) >= 0)
    one = bundle.infer(_windows(1)[0])
    assert isinstance(one.label, Regime) and one.label == int(np.argmax(one.probs))
    assert one.median == one.quantiles[4] and one.spread == pytest.approx(one.quantiles[8] - one.quantiles[0])


def test_invalid_windows_give_nan_rows_only() -> None:
    bundle = RegimeModelBundle.from_config(DEFAULT_BUNDLE, seed=1)
    windows = _windows(10)
    clean = bundle.infer_batch(windows)
    windows[3, 7, 2] = np.nan
    windows[6, 0, 0] = np.inf
    out = bundle.infer_batch(windows)
    assert (
        np.isnan(out.probs[[3, 6]]).all()
        and np.isnan(out.vectors[3]).all()
        and np.isnan(out.quantiles[6]).all()
    )
    keep = [0, 1, 2, 4, 5, 7, 8, 9]
    _assert_same(
        (out.vectors[keep], out.probs[keep], out.quantiles[keep]),
        (clean.vectors[keep], clean.probs[keep], clean.quantiles[keep]),
    )
    assert list(out.labels[[2, 3, 6]]) == [clean.labels[2], -1, -1]
    assert np.isnan(bundle.infer(windows[3]).probs).all()
    with pytest.raises(ValueError, match="shape"):
        bundle.infer(windows[0, :5])
    with pytest.raises(ValueError, match="shape"):
        bundle.infer_batch(windows[0])


def test_streaming_matrix_equals_precompute_bitwise() -> None:
    """End to end: MatrixStream bar by bar -> select -> infer == strategic_rows -> infer_rows, every bar."""
    bundle = RegimeModelBundle.from_config(DEFAULT_BUNDLE, seed=11)
    bars = generate_bars(SyntheticMarketConfig(seed=9, n_bars=900))
    batch = bundle.infer_rows(strategic_rows(bars, bundle.feature_schema))
    stream = MatrixStream("strategic", bundle.feature_schema)
    ts = bars.index.asi8
    cols = [bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")]
    valid = 0
    for t in range(len(bars)):
        bar = {
            "ts": int(ts[t]),
            "open": cols[0][t],
            "high": cols[1][t],
            "low": cols[2][t],
            "close": cols[3][t],
            "volume": cols[4][t],
        }
        out = bundle.infer(bundle.select(stream.update(bar)))
        _assert_same(out, (batch.vectors[t], batch.probs[t], batch.quantiles[t]))
        valid += bool(np.isfinite(out.probs).all())
    # warm-up: 539 strategic bars + 47 more for the first full 48-row window
    assert valid == len(bars) - 539 - 47
    assert np.isnan(batch.probs[: 539 + 47]).all()


def test_infer_rows_alignment() -> None:
    bundle = RegimeModelBundle.from_config(DEFAULT_BUNDLE, seed=1)
    rows = np.random.default_rng(2).uniform(-1, 1, (300, 13))
    rows[:50] = np.nan
    rows[120, 4] = np.nan
    out = bundle.infer_rows(rows)
    selected = bundle.select_rows(rows)
    ref = bundle.infer_batch(windows_from_rows(selected, 48))
    _assert_same((out.vectors[47:], out.probs[47:], out.quantiles[47:]), ref)
    invalid = np.isnan(out.probs).any(axis=1)
    assert (
        invalid[: 50 + 47].all()
        and not invalid[97:120].any()
        and invalid[120:168].all()
        and not invalid[168:].any()
    )
    with pytest.raises(ValueError):
        bundle.select_rows(rows[:, :11])


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1), st.floats(min_value=-50, max_value=50))
def test_single_equals_batch_on_arbitrary_values(seed: int, scale: float) -> None:
    """Out-of-range inputs (the model only ever sees [-1, 1]) still keep the bitwise equality."""
    bundle = _HYP_BUNDLE
    windows = _windows(6, seed=seed) * scale
    batch = bundle.infer_batch(windows)
    for i in range(6):
        _assert_same(bundle.infer(windows[i]), (batch.vectors[i], batch.probs[i], batch.quantiles[i]))


_HYP_BUNDLE = RegimeModelBundle.from_config(LAST_POOL, seed=13)


def test_config_consistency_is_enforced() -> None:
    with pytest.raises(ValueError, match="inputs.window"):
        BundleConfig(inputs=InputSpec(window=12))
    assert DEFAULT_BUNDLE.inputs.window == DEFAULT_BUNDLE.rde.window == 48
    with pytest.raises(ValueError, match="strategic columns"):
        InputSpec(columns=("rsi",))
    with pytest.raises(ValueError, match="divisible"):
        RDEConfig(d_model=10, n_heads=4)
    assert InputSpec().hash(RegimeModelBundle.from_config().feature_schema) != InputSpec(window=23).hash(
        RegimeModelBundle.from_config().feature_schema
    )


def _reference_for(bundle: RegimeModelBundle) -> InputReference:
    rows = np.random.default_rng(3).normal(size=(500, len(bundle.input_names)))
    labels = np.random.default_rng(4).integers(-1, 4, 500)
    return InputReference.from_rows(rows, np.ones(500), labels, columns=bundle.input_names, grid=20)


def test_reference_sidecar_is_saved_checksummed_and_verified(tmp_path) -> None:
    bundle = RegimeModelBundle.from_config(seed=5)
    manifest = bundle.save(tmp_path / "m", name="m", reference=_reference_for(bundle))
    assert set(manifest.sidecars) == {REFERENCE_FILE}
    assert RegimeModelBundle.load(tmp_path / "m").reference == bundle.reference
    path = tmp_path / "m" / REFERENCE_FILE
    original = path.read_bytes()
    path.write_bytes(original.replace(b"0.", b"1.", 1))  # tampered
    with pytest.raises(IntegrityError, match=REFERENCE_FILE):
        RegimeModelBundle.load(tmp_path / "m")
    path.unlink()
    with pytest.raises(MissingCheckpointError, match=REFERENCE_FILE):
        RegimeModelBundle.load(tmp_path / "m")
    # a checkpoint written without a reference loads with none (the detector then self-references)
    RegimeModelBundle.from_config(seed=5).save(tmp_path / "plain", name="plain")
    assert RegimeModelBundle.load(tmp_path / "plain").reference is None


def test_reference_for_other_inputs_is_refused(tmp_path) -> None:
    bundle = RegimeModelBundle.from_config(seed=5)
    ref = _reference_for(bundle)
    bad = InputReference.from_rows(np.zeros((10, 2)), np.ones(10), np.zeros(10, dtype=np.int64), columns=("a", "b"), grid=4)
    bundle.save(tmp_path / "m", name="m", reference=bad)
    with pytest.raises(CorruptCheckpointError, match="does not describe"):
        RegimeModelBundle.load(tmp_path / "m")
    assert ref.columns == bundle.input_names


def test_shipped_default_carries_its_training_reference() -> None:
    bundle = RegimeModelBundle.load("default")
    ref = bundle.reference
    assert ref is not None and ref.columns == bundle.input_names and ref.grid == 200
    assert ref.rows > 300_000  # every training window of the 4 synthetic markets and the real bars
    assert sum(ref.label_shares) == pytest.approx(1.0) and min(ref.label_shares) > 0.05
    q, below = ref.arrays()
    assert (np.diff(q, axis=1) >= 0).all() and (np.diff(below, axis=1) >= 0).all()
    assert "labelled pool 0.800" in ref.weighting
