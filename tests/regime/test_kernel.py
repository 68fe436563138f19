"""The compiled per-bar kernel against the reference Python components, and the training drift reference.

The detector runs one numba step per bar (``sage.regime.kernel``); the Python ``FallbackChain``,
``SortedWindow`` and ``DriftMonitor`` remain the documented, general components. These tests hold the
kernel's specialised copies to them, and check the drift reference that ships with a model.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features.matrices import strategic_rows
from sage.models.bundle import InputReference, RegimeModelBundle
from sage.regime import kernel as K
from sage.regime.conformal import SortedWindow
from sage.regime.detector import OUTPUT_COLUMNS, DetectorConfig, RegimeDetector
from sage.regime.fallback import FallbackChain, FallbackConfig, Level, LevelOutput
from sage.regime.health import DriftConfig, DriftMonitor, HealthFlag


def _scenario(seed: int, n: int = 1500) -> dict[str, np.ndarray]:
    """Per bar and level: a candidate (valid, NaN or not a distribution), a health verdict, input validity."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4), size=(n, 4))
    p[rng.random((n, 4)) < 0.08] = np.nan  # "cannot decide" / model warm-up
    p[rng.random((n, 4)) < 0.02, 0] = 0.9  # not a distribution
    ties = rng.random(n) < 0.05
    p[ties, 2] = np.array([0.4, 0.1, 0.4, 0.1])  # argmax tie, SIDEWAYS wins
    vec = rng.normal(size=(n, 4, 8))
    unc = np.where(rng.random((n, 4)) < 0.15, np.nan, rng.random((n, 4)))
    # health failures come in runs, like a drift alarm
    ok = np.ones((n, 4), dtype=bool)
    for start in rng.integers(0, n, 12):
        ok[start : start + rng.integers(5, 60), : 2] = False
    input_ok = rng.random(n) > 0.03
    return {"p": p, "vec": vec, "unc": unc, "ok": ok, "input_ok": input_ok}


@pytest.mark.parametrize(("seed", "present"), [(0, (1, 1, 1, 1)), (1, (1, 1, 1, 1)), (2, (0, 0, 1, 1))])
def test_kernel_chain_equals_fallback_chain(seed: int, present: tuple[int, ...]) -> None:
    logging.disable(logging.WARNING)
    s = _scenario(seed)
    config = FallbackConfig(reentry_probes=2, probe_every=3, last_known_half_life=20.0)

    def level(i: int) -> Level | None:
        if not present[i]:
            return None
        return Level(
            lambda ctx, i=i: LevelOutput(ctx["p"][i], ctx["vec"][i] if i < 2 else None,
                                        uncertainty=ctx["unc"][i] if i < 2 else math.nan),
            health_check=lambda ctx, i=i: bool(ctx["ok"][i]),
            requires_uncertainty=i == 0,
        )

    chain = FallbackChain([level(i) for i in range(4)], config, clock=lambda: 0)
    k_chain = np.zeros(K.CH_SIZE, dtype=np.int64)
    k_chain[K.CH_LEVEL] = 5
    lvl = np.zeros((4, K.LV_SIZE), dtype=np.int64)
    pres = np.array(present, dtype=bool)
    lvl[:, K.LV_HEALTHY] = pres
    lvl[~pres, K.LV_REASON] = K.R_MISSING
    last = np.zeros(K.V_SIZE)
    value = np.zeros(K.V_SIZE)
    out_i = np.zeros(K.OI_SIZE, dtype=np.int64)
    ws = np.zeros(K.WS_SIZE)
    prior = np.asarray(config.prior, dtype=np.float64)
    levels = []
    for t in range(len(s["input_ok"])):
        ctx = {"p": s["p"][t], "vec": s["vec"][t], "unc": s["unc"][t], "ok": s["ok"][t]}
        ref = chain.step(ctx, input_ok=bool(s["input_ok"][t]))
        cand = np.zeros((4, K.V_SIZE))
        cand[:, K.V_P : K.V_P + 4] = s["p"][t]
        cand[:2, K.V_VEC : K.V_VEC + 8] = s["vec"][t][:2]
        cand[:, K.V_UNC] = s["unc"][t]
        cand[2:, K.V_UNC] = np.nan
        K.chain_step(k_chain, lvl, last, cand, pres, s["ok"][t], bool(s["input_ok"][t]), config.reentry_probes,
                     config.probe_every, config.tie_label, config.last_known_half_life, prior, value, out_i, ws)  # fmt: skip
        assert out_i[K.OI_LEVEL] == ref.level, t
        assert out_i[K.OI_LABEL] == ref.label, t
        assert tuple(value[K.V_P : K.V_P + 4]) == ref.probabilities, t  # bitwise (fsum as in Python)
        assert tuple(value[K.V_VEC : K.V_VEC + 8]) == ref.vector, t
        assert value[K.V_CONF] == ref.confidence
        assert value[K.V_UNC] == ref.uncertainty or (math.isnan(value[K.V_UNC]) and math.isnan(ref.uncertainty))
        skipped = tuple((i + 1, int(out_i[K.OI_SKIP + i])) for i in range(4) if out_i[K.OI_SKIP + i] != K.NO_SKIP)
        codes = {r: c for c, r in enumerate(("ok", "exception", "latency", "invalid_input", "health_check",
                                             "invalid_output", "missing", "recovered"))}  # fmt: skip
        assert skipped == tuple((n, codes[str(r)]) for n, r in ref.skipped), t
        levels.append(ref.level)
    assert len(set(levels)) >= 3  # the scenario really moves through the chain


def test_sorted_window_kernel_equals_python() -> None:
    rng = np.random.default_rng(4)
    values = np.round(rng.normal(size=3000), 1)  # many ties
    py = SortedWindow(50)
    fifo, srt, meta = np.zeros(50), np.zeros(50), np.zeros(2, dtype=np.int64)
    for x in values:
        py.push(x)
        K.sw_push(fifo, srt, meta, 0, float(x))
        assert np.array_equal(srt[: meta[1]], py.sorted_values())
        assert K.sw_median(srt, int(meta[1])) == py.median()


def test_fsum_is_correctly_rounded() -> None:
    rng = np.random.default_rng(5)
    scratch = np.zeros(8)
    for _ in range(2000):
        x = rng.dirichlet(np.ones(4)) * rng.choice([1.0, 1e-12, 1e12])
        assert K.fsum(x, 4, scratch) == math.fsum(x)


def _reference(rows: np.ndarray, columns: tuple[str, ...], grid: int = 200) -> InputReference:
    return InputReference.from_rows(rows, np.ones(len(rows)), np.zeros(len(rows), dtype=np.int64), columns=columns, grid=grid)


def test_drift_monitor_from_quantiles_matches_fit_on_raw_rows() -> None:
    rng = np.random.default_rng(6)
    raw = np.column_stack([rng.normal(size=20_000), np.clip(rng.normal(size=20_000), -1.0, 1.0),
                           rng.integers(0, 5, 20_000).astype(float)])  # continuous, clipped, discrete  # fmt: skip
    ref = _reference(raw, ("a", "b", "c"))
    q, below = ref.arrays()
    test = np.column_stack([rng.normal(0.3, 1.2, 3000), np.clip(rng.normal(size=3000), -1, 1),
                            rng.integers(0, 5, 3000).astype(float)])  # fmt: skip
    for method in ("psi", "ks"):
        cfg = DriftConfig(method=method)
        a = DriftMonitor(cfg).fit(raw)
        b = DriftMonitor.from_quantiles(q, below, cfg)
        for j in range(3):  # same bins (up to quantile interpolation) and the same reference shares
            np.testing.assert_allclose(b._edges[j], a._edges[j], atol=0.02)
            np.testing.assert_allclose(b._ref_p[j], a._ref_p[j], atol=2e-3)
        np.testing.assert_allclose(b.run(test), a.run(test), atol=0.02, equal_nan=True)
    shifted = DriftMonitor.from_quantiles(q, below).run(test)
    assert shifted[-1] < 0.5  # columns b, c unchanged: the median stays calm


def test_input_reference_quantiles_and_shares_are_weighted() -> None:
    rows = np.array([[0.0], [1.0], [2.0], [3.0]])
    ref = InputReference.from_rows(rows, np.array([0.7, 0.1, 0.1, 0.1]), np.array([0, 1, 1, -1]), columns=("x",), grid=4)
    assert ref.quantiles[0] == (0.0, 0.0, 0.0, 1.0, 3.0)  # 70 % of the mass sits at 0
    assert ref.below[0] == (0.0, 0.0, 0.0, pytest.approx(0.7), pytest.approx(0.9))
    assert ref.label_shares == pytest.approx((0.7 / 0.9, 0.2 / 0.9, 0.0, 0.0))


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars(SyntheticMarketConfig(seed=8, n_bars=1800))[["open", "high", "low", "close", "volume"]]


def _bundle_with_reference(bars: pd.DataFrame, shift: float = 0.0) -> RegimeModelBundle:
    bundle = RegimeModelBundle.from_config(seed=2)
    matrix = strategic_rows(bars, bundle.feature_schema)
    rows = bundle.select_rows(matrix)
    ok = np.isfinite(rows).all(axis=1)
    labels = bundle.infer_rows(matrix).labels.astype(np.int64)
    bundle.reference = InputReference.from_rows(
        rows[ok] + shift, np.ones(int(ok.sum())), labels[ok], columns=bundle.input_names
    )
    return bundle


def test_training_reference_drives_drift_and_streams_equal_batch(bars: pd.DataFrame, tmp_path: Path) -> None:
    logging.disable(logging.WARNING)
    bundle = _bundle_with_reference(bars)
    bundle.save(tmp_path / "m", name="m")
    loaded = RegimeModelBundle.load(tmp_path / "m")
    assert loaded.reference == bundle.reference  # through the checksummed sidecar
    detector = RegimeDetector(DetectorConfig(latency_budget_us=1e9), loaded)
    assert detector.drift_source == "training"
    batch = detector.batch(bars)
    # scored from the first valid window on (no self-reference warm-up of 2000 rows)
    first_valid = int(np.flatnonzero(np.isfinite(loaded.select_rows(strategic_rows(bars))).all(axis=1))[0])
    assert batch.drift.iloc[first_valid + 150 :].notna().all()
    assert batch.drift.iloc[-300:].median() < 0.25  # the same market as the reference: calm
    stream = detector.stream()
    live = pd.DataFrame([stream.update({"ts": ts.value, **r}) for ts, r in bars.iterrows()], index=bars.index)
    for col in OUTPUT_COLUMNS:
        if col == "latency_us":
            continue
        a, b = live[col], batch[col]
        if col == "health_flags":
            a, b = a & ~16, b & ~16
        pd.testing.assert_series_equal(a, b, check_names=False)
    assert stream.drift_monitor is not None and len(stream.drift_monitor.top_features(3)) == 3


def test_inputs_unlike_the_training_reference_leave_the_model_levels(bars: pd.DataFrame) -> None:
    logging.disable(logging.WARNING)
    detector = RegimeDetector(DetectorConfig(latency_budget_us=1e9), _bundle_with_reference(bars, shift=3.0))
    frame = detector.batch(bars)
    alarmed = (frame.health_flags & int(HealthFlag.DRIFT_ALARM)) != 0
    assert alarmed.iloc[-500:].all()
    assert (frame.level.iloc[-500:] >= 3).all()  # rules, not the drifted model
    assert any(t.reason == "health_check" for t in frame.attrs["transitions"])


def test_checkpoint_without_reference_falls_back_to_self_reference(bars: pd.DataFrame, caplog) -> None:
    detector = RegimeDetector(DetectorConfig(drift_reference_bars=300), RegimeModelBundle.from_config(seed=2))
    assert detector.drift_source == "self"
    logging.disable(logging.NOTSET)
    with caplog.at_level(logging.INFO, logger="sage.regime.detector"):
        frame = detector.batch(bars)
    assert "self-reference" in caplog.text
    assert frame.drift.notna().sum() > 0
    off = RegimeDetector(DetectorConfig(drift_reference_bars=0), RegimeModelBundle.from_config(seed=2))
    assert off.drift_source == "off" and off.batch(bars).drift.isna().all()


def test_batch_logs_the_same_transitions_as_the_stream(bars: pd.DataFrame, caplog) -> None:
    detector = RegimeDetector(DetectorConfig(drift_reference_bars=300, latency_budget_us=1e9),
                              RegimeModelBundle.from_config(seed=2))  # fmt: skip
    logging.disable(logging.NOTSET)
    with caplog.at_level(logging.INFO, logger="sage.regime"):
        frame = detector.batch(bars)
        batch_log = [r.getMessage() for r in caplog.records]
        caplog.clear()
        stream = detector.stream()
        for ts, r in bars.iterrows():
            stream.update({"ts": ts.value, **r})
        stream_log = [r.getMessage() for r in caplog.records]
    assert frame.attrs["transitions"] == list(stream.transitions) and len(stream.transitions) >= 2
    # batch logs the self-reference fit during the run and the events after it; the stream in bar order
    fits = [m for m in batch_log if m.startswith("drift reference")]
    assert len(fits) == 1 and fits == [m for m in stream_log if m.startswith("drift reference")]
    events = [m for m in batch_log if not m.startswith("drift reference")]
    assert events == [m for m in stream_log if not m.startswith("drift reference")]
    assert any("regime level" in m for m in events) and any("health flags" in m for m in events)
