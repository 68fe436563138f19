"""TiRex / Chronos forecast adapters with tiny checkpoints built offline in the packages' own formats.

What is pinned: the adapters load local directories only (no network, clear errors naming the path),
return 9 ascending float64 log-return quantiles at the detector's horizon that equal a direct call of
the package's own API on the same context, never read data after ``t``, and give bitwise the same
rows streaming as in batch. Skipped per adapter only when its optional package is not installed.
"""

from __future__ import annotations

import importlib.util
import math
import socket

import numpy as np
import pytest
import torch

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.models.adapters import (
    AdapterConfig,
    ForecasterSpecError,
    QuantileForecastAdapter,
    load_forecaster,
    log_return_quantiles,
    parse_spec,
    standardise,
)
from sage.models.forecaster import QUANTILE_LEVELS, to_log_return_quantiles
from sage.models.registry import CorruptCheckpointError, MissingCheckpointError, ModelLoadError

HAS_TIREX = importlib.util.find_spec("tirex") is not None
HAS_CHRONOS = importlib.util.find_spec("chronos") is not None
needs_tirex = pytest.mark.skipif(not HAS_TIREX, reason="optional package tirex-ts is not installed")
needs_chronos = pytest.mark.skipif(
    not HAS_CHRONOS, reason="optional package chronos-forecasting is not installed"
)

H = 5
MIN_CONTEXT = 32
KINDS = [
    pytest.param("tirex", marks=needs_tirex),
    pytest.param("bolt", marks=needs_chronos),
    pytest.param("t5", marks=needs_chronos),
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Tiny seeded checkpoints of every installed family, written once per module."""
    root = tmp_path_factory.mktemp("foundation")
    out: dict[str, str] = {}
    if HAS_TIREX:
        from sage.models.adapters.tiny import build_tiny_tirex

        out["tirex"] = f"tirex:{build_tiny_tirex(root / 'tirex', train_ctx_len=64)}"
    if HAS_CHRONOS:
        from sage.models.adapters.tiny import build_tiny_chronos_bolt, build_tiny_chronos_t5

        out["bolt"] = f"chronos:{build_tiny_chronos_bolt(root / 'bolt', context_length=64)}"
        out["t5"] = f"chronos:{build_tiny_chronos_t5(root / 't5', context_length=64, num_samples=10)}"
    return out


@pytest.fixture(scope="module")
def adapters(checkpoints) -> dict[str, QuantileForecastAdapter]:
    return {k: load_forecaster(spec, horizon=H, min_context=MIN_CONTEXT) for k, spec in checkpoints.items()}


def _closes(n: int, seed: int = 7) -> np.ndarray:
    """Synthetic 1-minute closes (sage's regime market), an equity-index-like level near 4000."""
    return generate_bars(SyntheticMarketConfig(n_bars=n, seed=seed))["close"].to_numpy()


def _n(kind: str) -> int:
    return 48 if kind == "t5" else 72  # the sampling model is ~5x slower per call


@pytest.mark.parametrize("kind", KINDS)
def test_stream_equals_batch_bitwise(adapters, kind) -> None:
    adapter = adapters[kind]
    closes = _closes(_n(kind))
    batch = adapter.predict_closes(closes)
    stream = adapter.stream()
    rows = np.array([stream.update(c) for c in closes])
    assert batch.dtype == np.float64 and batch.shape == (closes.size, len(QUANTILE_LEVELS))
    assert np.array_equal(batch, rows, equal_nan=True)
    # warm-up: NaN until MIN_CONTEXT valid closes, then finite and ascending
    assert np.isnan(batch[: MIN_CONTEXT - 1]).all()
    ready = batch[MIN_CONTEXT - 1 :]
    assert np.isfinite(ready).all()
    assert (np.diff(ready, axis=1) >= 0.0).all()
    # priming with history (no model calls) leaves the stream where updating bar by bar would
    primed = adapter.stream()
    primed.prime(closes[:-1])
    assert np.array_equal(primed.update(closes[-1]), batch[-1])


@pytest.mark.parametrize("kind", KINDS)
def test_no_lookahead(adapters, kind) -> None:
    adapter = adapters[kind]
    closes = _closes(_n(kind))
    base = adapter.predict_closes(closes)
    cut = closes.size - 12
    changed = closes.copy()
    changed[cut + 1 :] *= np.random.default_rng(1).uniform(0.8, 1.25, closes.size - cut - 1)
    after = adapter.predict_closes(changed)
    assert np.array_equal(base[: cut + 1], after[: cut + 1], equal_nan=True)
    assert not np.array_equal(base[cut + 1 :], after[cut + 1 :])  # the change is visible once it is past
    # the single-context form of bar t sees only closes[:t + 1]
    for t in (MIN_CONTEXT - 1, cut):
        assert np.array_equal(adapter.predict(closes[: t + 1]), base[t])


@needs_tirex
def test_tirex_matches_package_api(checkpoints, adapters) -> None:
    """Adapter row t == TiRex's own forecast() on the same context, step h, log(q / c_t)."""
    from tirex.models.tirex import TiRexZero

    path = checkpoints["tirex"].split(":", 1)[1]
    model = TiRexZero.from_pretrained(f"{path}/model.ckpt", backend="torch", device="cpu")
    closes = _closes(90)
    adapter = adapters["tirex"]
    length = adapter.context_length
    for horizon in (1, H):
        rows = (
            adapter.predict_closes(closes)
            if horizon == H
            else load_forecaster(
                checkpoints["tirex"], horizon=horizon, min_context=MIN_CONTEXT
            ).predict_closes(closes)
        )
        t = closes.size - 1
        context = closes[t - length + 1 : t + 1].astype(np.float32)
        q, _ = model.forecast(context[None], prediction_length=horizon, output_type="numpy")
        expected = np.log(np.sort(q[0, horizon - 1].astype(np.float64)) / np.float64(context[-1]))
        assert np.array_equal(rows[t], expected)


@needs_chronos
@pytest.mark.parametrize("kind", ["bolt", "t5"])
def test_chronos_matches_package_api(checkpoints, adapters, kind) -> None:
    """Adapter row t == the pipeline's own predict_quantiles() on the same context (seeded for T5)."""
    from chronos import BaseChronosPipeline

    path = checkpoints[kind].split(":", 1)[1]
    pipeline = BaseChronosPipeline.from_pretrained(path, device_map="cpu", dtype=torch.float32)
    adapter = adapters[kind]
    closes = _closes(90)  # longer than the context: the adapter's context is the last 64 closes exactly
    t = closes.size - 1
    context = torch.from_numpy(closes[t - adapter.context_length + 1 : t + 1].astype(np.float32))[None]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        q, _ = pipeline.predict_quantiles(context, prediction_length=H, quantile_levels=list(QUANTILE_LEVELS))
    expected = np.log(np.sort(q[0, H - 1].numpy().astype(np.float64)) / np.float64(context[0, -1]))
    assert np.array_equal(adapter.predict(closes), expected)


@needs_chronos
def test_sampling_model_is_a_function_of_its_context(adapters) -> None:
    adapter = adapters["t5"]
    closes = _closes(40)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = adapter.predict(closes)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert np.array_equal(first, adapter.predict(closes))


@pytest.mark.parametrize(
    "kind", [pytest.param("tirex", marks=needs_tirex), pytest.param("bolt", marks=needs_chronos)]
)
def test_larger_batches_agree_to_float32_rounding(checkpoints, adapters, kind) -> None:
    closes = _closes(80)
    exact = adapters[kind].predict_closes(closes)
    fast = load_forecaster(checkpoints[kind], horizon=H, min_context=MIN_CONTEXT, batch_size=16)
    np.testing.assert_allclose(fast.predict_closes(closes), exact, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kind", [pytest.param("tirex", marks=needs_tirex), pytest.param("bolt", marks=needs_chronos)]
)
def test_bad_closes_are_missing_values(adapters, kind) -> None:
    adapter = adapters[kind]
    closes = _closes(60)
    clean = adapter.predict_closes(closes)
    dirty = closes.copy()
    dirty[40], dirty[45], dirty[50] = np.nan, -1.0, np.inf
    out = adapter.predict_closes(dirty)
    assert np.array_equal(out[:40], clean[:40], equal_nan=True)  # earlier bars unaffected
    assert np.isnan(out[[40, 45, 50]]).all()  # no log return from an invalid newest close
    assert np.isfinite(out[[41, 46, 51, 59]]).all()  # later bars: the bad close is masked, not fatal
    assert not np.array_equal(out[41], clean[41])


@pytest.mark.parametrize(
    "kind", [pytest.param("tirex", marks=needs_tirex), pytest.param("bolt", marks=needs_chronos)]
)
def test_loads_and_predicts_without_network(checkpoints, kind, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    adapter = load_forecaster(checkpoints[kind], horizon=H, min_context=MIN_CONTEXT)
    assert np.isfinite(adapter.predict(_closes(40))).all()
    # a missing directory is reported as such -- never turned into a hub download
    with pytest.raises(MissingCheckpointError, match="NX-AI/TiRex|amazon/chronos-bolt-tiny"):
        load_forecaster("tirex:NX-AI/TiRex" if kind == "tirex" else "chronos:amazon/chronos-bolt-tiny")


@pytest.mark.parametrize(
    "kind", [pytest.param("tirex", marks=needs_tirex), pytest.param("chronos", marks=needs_chronos)]
)
def test_checkpoint_errors_name_the_path(tmp_path, kind) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(MissingCheckpointError, match=f"{missing}.*does not exist"):
        load_forecaster(f"{kind}:{missing}")
    a_file = tmp_path / "weights.bin"
    a_file.write_bytes(b"x")
    with pytest.raises(MissingCheckpointError, match="not a directory"):
        load_forecaster(f"{kind}:{a_file}")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingCheckpointError, match=str(empty)):
        load_forecaster(f"{kind}:{empty}")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / ("model.ckpt" if kind == "tirex" else "config.json")).write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match=str(corrupt)):
        load_forecaster(f"{kind}:{corrupt}")
    assert issubclass(MissingCheckpointError, ModelLoadError)  # what the RegimeActor falls back on


def test_spec_parsing() -> None:
    assert parse_spec("tirex:/models/tirex") == ("tirex", "/models/tirex")
    assert parse_spec("Chronos:./bolt") == ("chronos", "./bolt")
    for bad in ("tirex", "tirex:", "moirai:/x", "/models/tirex"):
        with pytest.raises(ForecasterSpecError):
            parse_spec(bad)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="horizon"):
        AdapterConfig(horizon=0)
    with pytest.raises(ValueError, match="context_length"):
        AdapterConfig(context_length=1)


def test_log_return_quantiles_and_standardise() -> None:
    price_q = np.array([[101.0, 99.0, 100.0] + [100.5] * 6, [-1.0] + [100.0] * 8])
    out = log_return_quantiles(price_q, np.array([100.0, 100.0]))
    assert np.allclose(out[0, :3], np.log([0.99, 1.0, 1.005]))  # sorted before the log
    assert np.isnan(out[1]).all()  # a non-positive price quantile has no log return
    z = np.linspace(-1.0, 1.0, 9)
    sigma = 0.002
    assert np.allclose(standardise(to_log_return_quantiles(z, sigma, H), sigma, H), z)
    assert np.isnan(standardise(z, 0.0, H)).all()
    assert math.isclose(float(standardise(z, sigma, H)[-1]), 1.0 / (sigma * math.sqrt(H)))
