"""Tactical (60 x 7) and strategic (48 x 13) matrices: definitions, bounds, warm-up, windows, streaming."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import (
    DEFAULT_SCHEMA,
    STRATEGIC_COLUMNS,
    TACTICAL_COLUMNS,
    MatrixStream,
    compute,
    matrix_warmup,
    strategic_rows,
    tactical_rows,
    window_at,
    windows,
)

N = 720


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars(SyntheticMarketConfig(seed=9, n_bars=N))


@pytest.fixture(scope="module")
def feats(bars: pd.DataFrame) -> pd.DataFrame:
    return compute(bars)


@pytest.fixture(scope="module")
def tac(bars: pd.DataFrame) -> pd.DataFrame:
    return tactical_rows(bars)


@pytest.fixture(scope="module")
def strat(bars: pd.DataFrame) -> pd.DataFrame:
    return strategic_rows(bars)


def _mappings(bars: pd.DataFrame) -> list[dict]:
    return [
        {"ts": ts, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for ts, r in zip(bars.index, bars.itertuples(), strict=True)
    ]


def test_shapes_columns_bounds_and_warmup(bars, tac, strat) -> None:
    assert tac.shape == (N, 7) and tuple(tac.columns) == TACTICAL_COLUMNS
    assert strat.shape == (N, 13) and tuple(strat.columns) == STRATEGIC_COLUMNS
    assert tac.index.equals(bars.index) and strat.index.equals(bars.index)
    for kind, rows in (("tactical", tac), ("strategic", strat)):
        values = rows.to_numpy()
        warm = matrix_warmup(kind)
        assert np.isnan(values[:warm]).all(), kind
        assert not np.isnan(values[warm:]).any(), kind
        assert (np.abs(values[warm:]) <= 1.0).all(), kind  # every column is bounded
    assert matrix_warmup("tactical") == 20 and matrix_warmup("strategic") == 539


def test_tactical_definitions(bars, feats, tac) -> None:
    tp = DEFAULT_SCHEMA.tactical
    ok = tac.notna().all(axis=1)
    f, t = feats[ok], tac[ok]
    active = (f["fvg_bullish_active"] + f["fvg_bearish_active"]) > 0
    np.testing.assert_allclose(t["t_fvg_bull"], np.tanh(f["fvg_bullish_active"] / tp.count_scale), rtol=1e-12)
    np.testing.assert_allclose(t["t_fvg_bear"], np.tanh(f["fvg_bearish_active"] / tp.count_scale), rtol=1e-12)
    dist_atr = f["fvg_nearest_level"] * bars["close"][ok] / f["atr"]
    np.testing.assert_allclose(
        t["t_fvg_level"], np.where(active, np.tanh(dist_atr / tp.level_scale), 0.0), atol=1e-12
    )
    np.testing.assert_allclose(
        t["t_fvg_age_decay"], np.where(active, np.exp(-f["fvg_age"] / tp.age_tau), 0.0)
    )
    np.testing.assert_array_equal(t["t_fvg_mitigation"], f["fvg_mitigation_signal"])
    tstat = f["mom_fast"] / (f["ewma_vol"] * np.sqrt(DEFAULT_SCHEMA.basic.mom_fast))
    np.testing.assert_allclose(t["t_mom5"], np.tanh(tstat / tp.mom_scale), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t["t_vol_ratio"], (f["vol_ratio"] - 1) / (f["vol_ratio"] + 1), rtol=1e-12)
    assert active.any() and (~active).any()


def test_strategic_definitions(bars, feats, strat) -> None:
    sp = DEFAULT_SCHEMA.strategic
    ok = strat.notna().all(axis=1)
    f, s = feats[ok], strat[ok]
    np.testing.assert_allclose(s["s_macd_atr"], np.tanh(f["macd"] / f["atr"] / sp.trend_scale), rtol=1e-12)
    t20 = f["mom_slow"] / (f["ewma_vol"] * np.sqrt(20))
    np.testing.assert_allclose(s["s_trend_t20"], np.tanh(t20 / sp.trend_scale), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(s["s_autocorr"], f["ret_autocorr"])
    np.testing.assert_allclose(s["s_rsi"], (f["rsi"] - 50) / 50, rtol=1e-12)
    np.testing.assert_allclose(s["s_bb_pos"], np.tanh(2 * f["bb_pctb"] - 1), rtol=1e-12)
    # Volatility regime: trailing 100-bar z-score of log EWMA vol, clipped to +-4 and scaled to [-1, 1].
    lv = np.log(feats["ewma_vol"])
    roll = lv.rolling(sp.vol_z_window)
    z = ((lv - roll.mean()) / roll.apply(np.std, raw=True)).clip(-sp.z_clip, sp.z_clip) / sp.z_clip
    np.testing.assert_allclose(s["s_vol_regime"], z[ok], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        s["s_range_expansion"], (f["tr"] - f["atr"]) / (f["tr"] + f["atr"]), rtol=1e-12
    )
    np.testing.assert_allclose(
        s["s_mmd_short"], np.tanh(np.sqrt(f["mmd2_ref100"]) / sp.mmd_scale), rtol=1e-12
    )
    np.testing.assert_allclose(s["s_mmd_long"], np.tanh(np.sqrt(f["mmd2_ref500"]) / sp.mmd_scale), rtol=1e-12)
    np.testing.assert_allclose(s["s_vol_ratio"], (f["vol_ratio"] - 1) / (f["vol_ratio"] + 1), rtol=1e-12)
    tp = (bars["high"] + bars["low"] + bars["close"]) / 3
    vwap = (tp * bars["volume"]).rolling(sp.vwap_window).sum() / bars["volume"].rolling(sp.vwap_window).sum()
    dev = (bars["close"] - vwap) / feats["atr"]
    np.testing.assert_allclose(s["s_vwap_dev"], np.tanh(dev[ok] / sp.vwap_scale), rtol=1e-7, atol=1e-9)
    frac = (s.index.asi8 % 86_400_000_000_000) / 86_400_000_000_000
    np.testing.assert_allclose(s["s_tod_sin"], np.sin(2 * np.pi * frac), atol=1e-12)
    np.testing.assert_allclose(s["s_tod_cos"], np.cos(2 * np.pi * frac), atol=1e-12)


@pytest.mark.parametrize("kind", ["tactical", "strategic"])
def test_stream_window_equals_batch_window_bitwise(kind, bars, tac, strat) -> None:
    rows = tac if kind == "tactical" else strat
    stream = MatrixStream(kind)
    length = stream.window
    assert length == (60 if kind == "tactical" else 48)
    view = windows(rows, length)
    ready_from = matrix_warmup(kind) + length - 1
    for t, item in enumerate(_mappings(bars)):
        got = stream.update(item)
        assert got.shape == (length, len(rows.columns))
        np.testing.assert_array_equal(got, window_at(rows, t, length))
        if t >= length - 1:
            np.testing.assert_array_equal(got, view[t - length + 1])
        assert stream.ready == (t >= ready_from)
    stream.reset()
    assert not stream.ready
    assert np.isnan(stream.update(_mappings(bars)[0])[:-1]).all()


def test_windows_is_a_read_only_view(tac) -> None:
    values = tac.to_numpy()
    view = windows(values, 60)
    assert view.shape == (N - 59, 60, 7)
    assert np.shares_memory(view, values) and not view.flags.writeable
    np.testing.assert_array_equal(view[5], values[5:65])
    with pytest.raises(ValueError, match="length"):
        windows(values, 0)
    with pytest.raises(ValueError, match="2-D"):
        windows(values[:, 0], 3)


def test_bad_bar_is_a_nan_row_in_both_forms(bars) -> None:
    dirty = bars[["open", "high", "low", "close", "volume"]].copy()
    dirty.iloc[100, dirty.columns.get_loc("close")] = np.nan
    rows = tactical_rows(dirty)
    assert np.isnan(rows.iloc[100]).all() and rows.iloc[101].notna().all()
    stream = MatrixStream("tactical")
    for t, item in enumerate(_mappings(dirty)[:130]):
        got = stream.update(item)
    np.testing.assert_array_equal(got, window_at(rows, 129, 60))
    assert np.isnan(got[-30]).all()


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueError, match="tactical"):
        MatrixStream("daily")
