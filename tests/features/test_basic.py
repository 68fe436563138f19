"""Basic kernels against independent textbook implementations, plus warm-up and degenerate-input behaviour."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import basic
from sage.features.bars import to_arrays
from sage.features.basic import BasicParams

N = 1500


@pytest.fixture(scope="module")
def market() -> tuple[tuple[np.ndarray, ...], pd.DataFrame]:
    bars = generate_bars(SyntheticMarketConfig(seed=11, n_bars=N))
    arrays = to_arrays(bars)
    out = pd.DataFrame(basic.batch(*arrays), columns=basic.COLUMNS)
    return arrays, out


def _seeded_ema(x: np.ndarray, period: int, alpha: float) -> np.ndarray:
    """Reference: NaN until `period` finite inputs, seeded with their mean, then m += alpha (x - m)."""
    out = np.full(x.shape, np.nan)
    first = int(np.flatnonzero(~np.isnan(x))[0])
    m = float(np.mean(x[first : first + period]))
    out[first + period - 1] = m
    for i in range(first + period, x.size):
        m = m + alpha * (x[i] - m)
        out[i] = m
    return out


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-9, atol: float = 1e-12) -> None:
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def test_returns_true_range_momentum_volume_ratio(market) -> None:
    (_, _, h, l, c, v), out = market
    cs = pd.Series(c)
    _close(out["ret"].to_numpy(), cs.pct_change().to_numpy())
    _close(out["log_ret"].to_numpy(), np.log(cs / cs.shift()).to_numpy())
    pc = cs.shift().to_numpy()
    tr = np.nanmax(np.vstack([h - l, np.abs(h - pc), np.abs(l - pc)]), axis=0)
    _close(out["tr"].to_numpy(), tr)
    _close(out["mom_fast"].to_numpy(), np.log(cs / cs.shift(5)).to_numpy())
    _close(out["mom_slow"].to_numpy(), np.log(cs / cs.shift(20)).to_numpy())
    vs = pd.Series(v)
    _close(out["vol_ratio"].to_numpy(), (vs / vs.rolling(20).mean()).to_numpy())


def test_wilder_atr_and_rsi(market) -> None:
    c = market[0][4]
    out = market[1]
    tr = out["tr"].to_numpy()
    _close(out["atr"].to_numpy(), _seeded_ema(tr, 14, 1 / 14))
    d = np.diff(c, prepend=np.nan)
    gain = _seeded_ema(np.where(np.isnan(d), np.nan, np.maximum(d, 0.0)), 14, 1 / 14)
    loss = _seeded_ema(np.where(np.isnan(d), np.nan, np.maximum(-d, 0.0)), 14, 1 / 14)
    _close(out["rsi"].to_numpy(), 100.0 - 100.0 / (1.0 + gain / loss), rtol=1e-8)


def test_macd_is_sma_seeded(market) -> None:
    c = market[0][4]
    out = market[1]
    macd = _seeded_ema(c, 12, 2 / 13) - _seeded_ema(c, 26, 2 / 27)
    _close(out["macd"].to_numpy(), macd, atol=1e-9)
    signal = _seeded_ema(macd, 9, 2 / 10)
    _close(out["macd_signal"].to_numpy(), signal, atol=1e-9)
    _close(out["macd_hist"].to_numpy(), macd - signal, atol=1e-9)


def test_bollinger_bands_and_percent_b(market) -> None:
    c = market[0][4]
    out = market[1]
    cs = pd.Series(c)
    mid = cs.rolling(20).mean()
    sd = cs.rolling(20).apply(lambda w: np.std(w), raw=True)  # population std, two-pass
    _close(out["bb_mid"].to_numpy(), mid.to_numpy(), rtol=1e-12)
    _close(out["bb_upper"].to_numpy(), (mid + 2 * sd).to_numpy(), rtol=1e-12)
    _close(out["bb_lower"].to_numpy(), (mid - 2 * sd).to_numpy(), rtol=1e-12)
    _close(out["bb_pctb"].to_numpy(), ((cs - (mid - 2 * sd)) / (4 * sd)).to_numpy(), rtol=1e-7, atol=1e-9)


def test_volatility_and_ewma_correlation(market) -> None:
    c = market[0][4]
    out = market[1]
    r = np.log(c[1:] / c[:-1])
    rv = np.full(N, np.nan)
    for t in range(20, N):
        rv[t] = np.sqrt(np.mean(r[t - 20 : t] ** 2))
    _close(out["rvol"].to_numpy(), rv)
    ewma_var = _seeded_ema(np.r_[np.nan, r**2], 20, 0.06)
    _close(out["ewma_vol"].to_numpy(), np.sqrt(ewma_var))
    x, y = np.r_[np.nan, np.nan, r[1:]], np.r_[np.nan, np.nan, r[:-1]]
    cov, vx, vy = (_seeded_ema(a, 20, 0.06) for a in (x * y, x * x, y * y))
    _close(out["ret_autocorr"].to_numpy(), cov / np.sqrt(vx * vy), rtol=1e-8)
    # The standalone two-series kernel is the same estimator.
    _close(basic.ewma_corr(x, y, lam=0.94, min_periods=20), out["ret_autocorr"].to_numpy(), rtol=1e-8)


def test_warmup_is_exact_nan_prefix(market) -> None:
    _, out = market
    for name, warm in zip(basic.COLUMNS, basic.warmup(BasicParams()), strict=True):
        col = out[name].to_numpy()
        assert np.isnan(col[:warm]).all(), name
        assert not np.isnan(col[warm:]).any(), name


def _const_bars(n: int, price: float = 50.0, volume: float = 0.0) -> tuple[np.ndarray, ...]:
    p = np.full(n, price)
    return np.arange(n, dtype=np.int64), p, p, p, p, np.full(n, volume)


def test_flat_market_with_zero_volume_is_defined_and_finite() -> None:
    out = pd.DataFrame(basic.batch(*_const_bars(80)), columns=basic.COLUMNS).iloc[40:]
    assert np.isfinite(out.to_numpy()).all()
    assert (out["ret"] == 0).all() and (out["tr"] == 0).all() and (out["atr"] == 0).all()
    assert (out["rsi"] == 50).all()  # no gains, no losses
    assert (out["bb_pctb"] == 0.5).all() and (out["bb_upper"] == 50.0).all()  # exact: flat window, zero std
    assert (out["rvol"] == 0).all() and (out["ewma_vol"] == 0).all()
    assert (out["ret_autocorr"] == 0).all()  # zero variance: no measurable co-movement
    assert (out["vol_ratio"] == 0).all()  # zero mean volume -> 0


def test_zero_volume_bar_in_active_market() -> None:
    ts, o, h, l, c, v = _const_bars(30, volume=5.0)
    v = v.copy()
    v[-1] = 0.0
    out = basic.batch(ts, o, h, l, c, v)
    assert out[-1, basic.C_VOL_RATIO] == 0.0
    assert out[-2, basic.C_VOL_RATIO] == pytest.approx(1.0)


def test_rsi_extremes_and_one_sided_moves() -> None:
    n = 40
    c = 100.0 + np.arange(n, dtype=float)
    out = basic.batch(np.arange(n, dtype=np.int64), c, c + 0.5, c - 0.5, c, np.ones(n))
    assert (out[14:, basic.C_RSI] == 100.0).all()
    out = basic.batch(
        np.arange(n, dtype=np.int64), c[::-1], c[::-1] + 0.5, c[::-1] - 0.5, c[::-1], np.ones(n)
    )
    assert (out[14:, basic.C_RSI] == 0.0).all()


def test_bad_bar_gives_nan_row_and_is_skipped() -> None:
    bars = generate_bars(SyntheticMarketConfig(seed=3, n_bars=120))
    ts, o, h, l, c, v = to_arrays(bars)
    clean = basic.batch(ts, o, h, l, c, v)
    bad_rows = [(np.nan, 1.0, 1.0, 1.0, 1.0), (1.0, np.inf, 1.0, 1.0, 1.0), (1.0, 2.0, 0.5, 1.5, -3.0)]
    for bad in bad_rows:
        k = 60
        ins = [np.insert(a, k, val) for a, val in zip((o, h, l, c, v), bad, strict=True)]
        got = basic.batch(np.insert(ts, k, ts[k]), *ins)
        assert np.isnan(got[k]).all()
        # Everything else is as if the bad bar never happened.
        np.testing.assert_array_equal(np.delete(got, k, axis=0), clean)


def test_ewma_corr_standalone() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = 0.8 * x + 0.6 * rng.normal(size=400)
    rho = basic.ewma_corr(x, y, lam=0.97, min_periods=30)
    assert np.isnan(rho[:29]).all() and np.isfinite(rho[29:]).all()
    assert 0.6 < np.mean(rho[100:]) < 0.95
    np.testing.assert_allclose(
        basic.ewma_corr(x, x, lam=0.97, min_periods=30), np.where(np.isnan(rho), np.nan, 1.0), atol=1e-12
    )
    with_gap = x.copy()
    with_gap[200] = np.nan
    rho_gap = basic.ewma_corr(with_gap, y, lam=0.97, min_periods=30)
    assert np.isnan(rho_gap[200]) and np.isfinite(rho_gap[201:]).all()
    with pytest.raises(ValueError, match="equally long"):
        basic.ewma_corr(x, y[:-1])
    with pytest.raises(ValueError, match="lam"):
        basic.ewma_corr(x, y, lam=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"atr_period": 0},
        {"macd_fast": 26},
        {"bb_k": 0.0},
        {"ewma_lambda": 1.0},
        {"corr_lambda": 0.0},
        {"rv_window": 2.5},
    ],
)
def test_params_are_validated(kwargs) -> None:
    with pytest.raises(ValueError):
        BasicParams(**kwargs)


def test_non_default_params_change_windows() -> None:
    bars = generate_bars(SyntheticMarketConfig(seed=4, n_bars=200))
    params = BasicParams(bb_period=7, mom_fast=3, volume_window=4, ewma_min_periods=5, rsi_period=6)
    out = pd.DataFrame(basic.batch(*to_arrays(bars), params=params), columns=basic.COLUMNS)
    for name, warm in zip(basic.COLUMNS, basic.warmup(params), strict=True):
        assert np.isnan(out[name].to_numpy()[:warm]).all() and not np.isnan(out[name].to_numpy()[warm:]).any()
    c = bars["close"]
    _close(out["bb_mid"].to_numpy(), c.rolling(7).mean().to_numpy(), rtol=1e-12)
    _close(out["mom_fast"].to_numpy(), np.log(c / c.shift(3)).to_numpy())
