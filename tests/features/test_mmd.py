"""Tests for the MMD kernel: RFF accuracy vs exact MMD, regime sensitivity, batch == streaming, causality."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import mmd
from sage.features.mmd import MmdParams, MmdStream

DEFAULT = MmdParams()
# Small windows so hypothesis examples get past warm-up and through several recalibrations quickly;
# an odd frequency count exercises the remainder path of the 4-way accumulation.
SMALL = MmdParams(
    recent_window=5, ref_windows=(7, 23), vol_window=3, n_frequencies=5, bandwidth_sample=8, refresh_every=11
)


def _synthetic(seed: int, n: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    df = generate_bars(SyntheticMarketConfig(seed=seed, n_bars=n))
    bars = (
        df.index.asi8.astype(np.int64),
        *(df[col].to_numpy(dtype=np.float64) for col in ("open", "high", "low", "close", "volume")),
    )
    return bars, df["regime"].to_numpy()


def _vol_switch(seed: int, n: int, block: int, vols: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Random walk alternating between two volatilities every ``block`` bars (fat-ish tails)."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n) // block) % 2 == 0, vols[0], vols[1])
    lr = vol * (rng.standard_normal(n) + 0.2 * rng.standard_t(4, n))
    c = 100.0 * np.exp(np.cumsum(lr))
    o = np.r_[100.0, c[:-1]]
    h = np.maximum(o, c) * (1.0 + np.abs(rng.standard_normal(n)) * vol * 0.5)
    l = np.minimum(o, c) * (1.0 - np.abs(rng.standard_normal(n)) * vol * 0.5)
    return np.arange(n, dtype=np.int64), o, h, l, c, rng.uniform(1.0, 10.0, n)


def _random_bars(seed: int, n: int, nan_rate: float) -> tuple[np.ndarray, ...]:
    bars = [a.copy() for a in _vol_switch(seed, n, 37, (0.001, 0.005))]
    rng = np.random.default_rng(seed + 1)
    if nan_rate > 0.0:
        for arr in bars[1:]:
            bad = rng.random(n) < nan_rate / 5.0
            arr[bad] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -1.0], size=int(bad.sum()))
    return tuple(bars)


def _stream_all(params: MmdParams, ts, o, h, l, c, v) -> np.ndarray:
    s = MmdStream(params)
    return np.vstack([s.update(ts[i], o[i], h[i], l[i], c[i], v[i]) for i in range(len(ts))]).reshape(
        len(ts), len(params.ref_windows)
    )


# ----------------------------------------------------------------------------------------------
# building blocks


def test_sincos_matches_libm() -> None:
    @njit
    def run(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.empty_like(a)
        c = np.empty_like(a)
        for i in range(a.shape[0]):
            s[i], c[i] = mmd._sincos(a[i])
        return s, c

    a = np.concatenate(
        [np.linspace(-50.0, 50.0, 100_001), np.random.default_rng(0).uniform(-1e4, 1e4, 10_000)]
    )
    s, c = run(a)
    assert np.abs(s - np.sin(a)).max() < 1e-13
    assert np.abs(c - np.cos(a)).max() < 1e-13
    s, c = run(np.array([np.nan, np.inf, 1e16]))  # no meaningful phase: mapped to angle 0
    np.testing.assert_array_equal(s, 0.0)
    np.testing.assert_array_equal(c, 1.0)


def test_descriptors_match_independent_computation() -> None:
    (ts, o, h, l, c, v), _ = _synthetic(5, 3000)
    s = MmdStream(DEFAULT)
    for i in range(len(ts)):
        s.update(ts[i], o[i], h[i], l[i], c[i], v[i])
    ring = mmd.ring_descriptors(s.state, DEFAULT)
    L = DEFAULT.ring_length
    assert ring.shape == (L, mmd.N_DESCRIPTORS)
    pc = c[:-1]
    lr = np.log(c[1:] / pc)
    vol = np.array([lr[j - 20 : j].std() for j in range(20, len(lr) + 1)])  # population std
    expected = np.column_stack([c[1:] / pc - 1.0, lr, (h[1:] - l[1:]) / pc, np.r_[np.zeros(19), vol]])[-L:]
    np.testing.assert_allclose(ring, expected, rtol=1e-9, atol=1e-15)


def test_warmup_then_finite() -> None:
    bars, _ = _synthetic(1, 1500)
    out = mmd.batch(*bars)
    w = mmd.warmup_bars(DEFAULT)
    assert w == 20 + 520 - 1
    assert np.isnan(out[:w]).all()
    assert np.isfinite(out[w:]).all()
    assert (out[w:] >= 0.0).all() and (out[w:] <= 4.0).all()
    assert mmd.columns(DEFAULT) == ("mmd2_ref100", "mmd2_ref500")


def test_calibration_is_the_documented_trailing_median_heuristic() -> None:
    """At each calibration bar: ring mean/std and sigma = median distance of evenly spaced samples."""
    bars = _vol_switch(6, 2600, 400, (0.001, 0.003))
    p = DEFAULT
    first = mmd.warmup_bars(p)  # first non-NaN row is the first calibration
    s = MmdStream(p)
    sigmas = []
    for i in range(len(bars[0])):
        s.update(*(a[i] for a in bars))
        if i == first - 1:
            assert mmd.calibration(s.state, p)[2] == 0.0  # not calibrated yet
        if i in (first, first + p.refresh_every, first + 2 * p.refresh_every):
            mu, sd, sigma = mmd.calibration(s.state, p)
            ring = mmd.ring_descriptors(s.state, p)
            np.testing.assert_allclose(mu, ring.mean(axis=0), rtol=1e-12)
            np.testing.assert_allclose(sd, ring.std(axis=0), rtol=1e-12)
            m, L = p.bandwidth_sample, p.ring_length
            sample = (ring[[(a * (L - 1)) // (m - 1) for a in range(m)]] - mu) / sd
            d = np.sqrt(((sample[:, None, :] - sample[None, :, :]) ** 2).sum(-1))
            assert sigma == pytest.approx(np.median(d[np.triu_indices(m, 1)]), rel=1e-12)
            sigmas.append(sigma)
        elif i > first and sigmas:
            assert mmd.calibration(s.state, p)[2] == sigmas[-1]  # fixed between recalibrations
    assert len(sigmas) == 3


def test_window_sums_equal_direct_feature_means() -> None:
    """Incremental ring/sum bookkeeping == features recomputed from scratch (no RFF error involved)."""
    bars = _vol_switch(2, 2400, 300, (0.001, 0.003))
    p = DEFAULT
    s = MmdStream(p)
    w0 = mmd._orthogonal_frequencies(mmd.N_DESCRIPTORS, p.n_frequencies, p.seed)
    checked = 0
    for i in range(len(bars[0])):
        out = s.update(*(a[i] for a in bars))
        if i >= mmd.warmup_bars(p) and i % 53 == 0:
            mu, sd, sigma = mmd.calibration(s.state, p)
            ang = ((mmd.ring_descriptors(s.state, p) - mu) / sd) @ w0 / sigma
            z = np.hstack([np.cos(ang), np.sin(ang)]) / math.sqrt(p.n_frequencies)
            recent = z[-p.recent_window :].mean(axis=0)
            for j, r in enumerate(p.ref_windows):
                ref = z[-p.recent_window - r : -p.recent_window].mean(axis=0)
                assert out[j] == pytest.approx(float(((recent - ref) ** 2).sum()), rel=1e-9, abs=1e-12)
            checked += 1
    assert checked >= 30


# ----------------------------------------------------------------------------------------------
# approximation error vs the exact MMD


def _rff_vs_exact(params: MmdParams, seeds: tuple[int, ...], every: int) -> tuple[np.ndarray, np.ndarray]:
    """(approx, exact) biased MMD^2 at checkpoints, shape (n_checkpoints, n_refs) each."""
    approx, exact = [], []
    for seed in seeds:
        bars = _vol_switch(seed, 4000, 700, (0.001, 0.004))
        s = MmdStream(params)
        for i in range(len(bars[0])):
            out = s.update(*(a[i] for a in bars))
            if i >= mmd.warmup_bars(params) and i % every == 0:
                mu, sd, sigma = mmd.calibration(s.state, params)
                x = (mmd.ring_descriptors(s.state, params) - mu) / sd
                rec = x[-params.recent_window :]
                exact.append(
                    [
                        mmd.exact_mmd2(rec, x[-params.recent_window - r : -params.recent_window], sigma)
                        for r in params.ref_windows
                    ]
                )
                approx.append(out.copy())
    return np.asarray(approx), np.asarray(exact)


def test_rff_error_bound_vs_exact_biased_mmd2() -> None:
    """Documented bound (docs/fvg_mmd.md): relative MAE < 0.15 and correlation > 0.97 per column."""
    approx, exact = _rff_vs_exact(DEFAULT, seeds=(0, 1, 2), every=41)
    assert len(exact) > 150
    err = np.abs(approx - exact)
    for j in range(exact.shape[1]):
        rel_mae = err[:, j].mean() / exact[:, j].mean()
        corr = np.corrcoef(approx[:, j], exact[:, j])[0, 1]
        assert rel_mae < 0.15, (j, rel_mae)
        assert corr > 0.97, (j, corr)
    assert err[:, 0].mean() < 0.015  # mmd2_ref100, absolute


def test_rff_converges_with_more_frequencies() -> None:
    """Many more frequencies must shrink the error: catches a bandwidth/scale mismatch, which would not."""
    small = _rff_vs_exact(DEFAULT, seeds=(3,), every=29)
    big = _rff_vs_exact(MmdParams(n_frequencies=512), seeds=(3,), every=29)
    np.testing.assert_array_equal(small[1].shape, big[1].shape)
    mae_small = np.abs(small[0] - small[1]).mean()
    mae_big = np.abs(big[0] - big[1]).mean()
    assert mae_big < 0.4 * mae_small, (mae_big, mae_small)


# ----------------------------------------------------------------------------------------------
# behaviour


def test_mmd_jumps_after_vol_regime_change() -> None:
    calm, wild = 0.001, 0.004
    bars = _vol_switch(9, 3000, 2000, (calm, wild))  # calm until bar 2000, then 4x vol
    out = mmd.batch(*bars)
    stationary = out[800:1990]
    after = out[2020:2040]  # recent window fully in the new regime, references still calm
    for j in range(out.shape[1]):
        assert after[:, j].min() > np.quantile(stationary[:, j], 0.99), j
        assert after[:, j].mean() > 4.0 * stationary[:, j].mean(), j


def test_mmd_higher_entering_volatile_regime_on_synthetic_market() -> None:
    bars, regime = _synthetic(4, 60_000)
    out = mmd.batch(*bars)
    calm = (regime == 0) | (regime == 2)
    start = np.flatnonzero((regime[1:] == 3) & calm[:-1]) + 1  # calm -> VOLATILE switches
    start = start[start > 2000]
    probe = start + 25
    long_calm = [k for k in range(600, len(regime)) if calm[k - 600 : k + 1].all()]
    assert len(probe) >= 10 and len(long_calm) > 1000
    assert np.nanmean(out[probe, 0]) > 2.0 * np.nanmean(out[long_calm, 0])


# ----------------------------------------------------------------------------------------------
# batch == streaming, causality


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 250), nan_rate=st.sampled_from([0.0, 0.0, 0.05, 0.3]))
def test_streaming_equals_batch_bitwise(seed: int, n: int, nan_rate: float) -> None:
    bars = _random_bars(seed, n, nan_rate)
    np.testing.assert_array_equal(_stream_all(SMALL, *bars), mmd.batch(*bars, SMALL))


def test_streaming_equals_batch_synthetic_regimes() -> None:
    bars, _ = _synthetic(11, 4000)  # 4000 bars: first calibration plus three recalibrations
    b = mmd.batch(*bars)
    np.testing.assert_array_equal(_stream_all(DEFAULT, *bars), b)
    assert np.isfinite(b[mmd.warmup_bars(DEFAULT) :]).all()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), k=st.integers(0, 198))
def test_no_lookahead(seed: int, k: int) -> None:
    bars = _random_bars(seed % 997, 200, 0.0)
    base = mmd.batch(*bars, SMALL)
    rng = np.random.default_rng(seed)
    pert = [a.copy() for a in bars]
    for a in pert[1:]:
        a[k + 1 :] = a[k + 1 :] * rng.uniform(0.5, 1.5, size=a.shape[0] - k - 1)
    np.testing.assert_array_equal(mmd.batch(*pert, SMALL)[: k + 1], base[: k + 1])


# ----------------------------------------------------------------------------------------------
# degenerate input


def test_invalid_bars_give_nan_and_leave_state_untouched() -> None:
    bars = _random_bars(5, 1500, 0.1)
    out = mmd.batch(*bars, SMALL)
    _, o, h, l, c, v = bars
    valid = np.isfinite(o) & np.isfinite(h) & np.isfinite(l) & np.isfinite(c) & np.isfinite(v) & (c > 0)
    assert (~valid).sum() > 50
    assert np.isnan(out[~valid]).all()
    np.testing.assert_array_equal(out[valid], mmd.batch(*(a[valid] for a in bars), SMALL))


def test_flat_and_zero_volume_bars() -> None:
    n = 700
    flat = np.full(n, 42.0)
    out = mmd.batch(np.arange(n, dtype=np.int64), flat, flat, flat, flat, np.zeros(n))
    w = mmd.warmup_bars(DEFAULT)
    assert np.isnan(out[:w]).all()
    assert np.isfinite(out[w:]).all() and (np.abs(out[w:]) < 1e-20).all()


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            *[
                st.one_of(
                    st.floats(-1e6, 1e6, allow_nan=False),
                    st.floats(1e-300, 1e300),
                    st.sampled_from([0.0, 1.0, math.nan, math.inf, -math.inf, 1e300, 1e-300]),
                )
                for _ in range(5)
            ]
        ),
        min_size=1,
        max_size=120,
    )
)
def test_arbitrary_floats_never_crash_or_inf(rows: list[tuple[float, ...]]) -> None:
    a = np.asarray(rows, dtype=np.float64)
    ts = np.arange(len(rows), dtype=np.int64)
    out = mmd.batch(ts, a[:, 0], a[:, 1], a[:, 2], a[:, 3], a[:, 4], SMALL)
    assert not np.isinf(out).any()
    fin = out[np.isfinite(out)]
    assert (fin >= 0.0).all() and (fin <= 4.0 + 1e-12).all()
    np.testing.assert_array_equal(_stream_all(SMALL, ts, *a.T), out)


def test_params_validation() -> None:
    with pytest.raises(ValueError):
        MmdParams(ref_windows=())
    with pytest.raises(ValueError):
        MmdParams(ref_windows=(100, 100))
    with pytest.raises(ValueError):
        MmdParams(bandwidth_sample=10_000)
    with pytest.raises(ValueError):
        MmdParams(recent_window=1)
    with pytest.raises(TypeError):
        MmdParams(recent_window=20.0)
    with pytest.raises(TypeError):
        MmdParams(ref_windows=[100, 500])
    p = MmdParams(ref_windows=(50, 200, 1000))
    assert mmd.columns(p) == ("mmd2_ref50", "mmd2_ref200", "mmd2_ref1000")
    assert p.as_array().dtype == np.float64
    assert MmdStream(p).update(0, 1.0, 1.0, 1.0, 1.0, 1.0).shape == (3,)
    assert len(mmd.init_state(p)) == mmd.state_size(p)
