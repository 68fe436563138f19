"""Tests for the FVG kernel: hand-checked gap life cycles, batch == streaming, causality, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.features import fvg
from sage.features.fvg import FvgParams, FvgStream

COL = {name: i for i, name in enumerate(fvg.columns())}
DEFAULT = FvgParams()


# ----------------------------------------------------------------------------------------------
# helpers


def _bars(rows: list[tuple[float, float, float, float, float]]) -> tuple[np.ndarray, ...]:
    """(o, h, l, c, v) rows -> ts, o, h, l, c, v arrays."""
    a = np.asarray(rows, dtype=np.float64)
    return (
        np.arange(len(rows), dtype=np.int64) * 60_000_000_000,
        a[:, 0],
        a[:, 1],
        a[:, 2],
        a[:, 3],
        a[:, 4],
    )


QUIET = (100.0, 101.0, 99.5, 100.5, 10.0)  # body 0.5; consecutive quiet bars overlap, so no gaps


def _stream_all(params: FvgParams, ts, o, h, l, c, v) -> np.ndarray:
    s = FvgStream(params)
    return np.vstack([s.update(ts[i], o[i], h[i], l[i], c[i], v[i]) for i in range(len(ts))])


def _random_bars(seed: int, n: int, nan_rate: float = 0.0) -> tuple[np.ndarray, ...]:
    """Random walk with volatility regimes and occasional impulse bars (so gaps do occur)."""
    rng = np.random.default_rng(seed)
    vol = np.where((np.arange(n) // 97) % 3 == 0, 0.004, 0.0015)
    impulse = rng.random(n) < 0.08
    lr = rng.standard_normal(n) * vol * np.where(impulse, 6.0, 1.0)
    c = 100.0 * np.exp(np.cumsum(lr))
    o = np.r_[c[0], c[:-1]] * (1.0 + rng.standard_normal(n) * vol * 0.2)
    h = np.maximum(o, c) * (1.0 + np.abs(rng.standard_normal(n)) * vol * 0.5)
    l = np.minimum(o, c) * (1.0 - np.abs(rng.standard_normal(n)) * vol * 0.5)
    v = rng.gamma(2.0, 50.0, n) * (rng.random(n) > 0.05)  # some zero-volume bars
    if nan_rate > 0.0:
        for arr in (o, h, l, c, v):
            bad = rng.random(n) < nan_rate / 5.0
            arr[bad] = rng.choice([np.nan, np.inf, -np.inf], size=int(bad.sum()))
    return np.arange(n, dtype=np.int64), o, h, l, c, v


def _bullish_scenario() -> list[tuple[float, float, float, float, float]]:
    """Quiet history, then a bullish gap [101, 102] formed at bar 26, touched at 30, mitigated at 33."""
    rows = [QUIET] * 25  # bars 0..24, high 101
    rows.append((100.5, 104.2, 100.4, 104.0, 10.0))  # 25: impulse, body 3.5 > 1.5 * 0.5
    rows.append((104.0, 105.5, 102.0, 105.0, 10.0))  # 26: low 102 > high[24] = 101 -> gap
    rows.append((105.0, 105.5, 104.0, 105.2, 10.0))  # 27: low 104.0 < high[25] 104.2, no new gap
    rows.append((105.2, 105.6, 104.6, 105.0, 10.0))  # 28
    rows.append((105.0, 105.4, 103.0, 103.5, 10.0))  # 29
    rows.append((103.5, 104.7, 101.5, 102.0, 10.0))  # 30: first touch, half filled
    rows.append((102.0, 103.1, 101.6, 102.5, 10.0))  # 31
    rows.append((102.5, 103.0, 101.7, 102.2, 10.0))  # 32
    rows.append((102.2, 102.6, 100.8, 101.0, 15.0))  # 33: low 100.8 <= 101: mitigated
    rows += [(101.0, 101.8, 100.5, 101.2, 10.0)] * 8  # 34..41 quiet around 101
    return rows


# ----------------------------------------------------------------------------------------------
# hand-built scenarios


def test_warmup_rows_are_nan_then_dense() -> None:
    ts, o, h, l, c, v = _bars(_bullish_scenario())
    out = fvg.batch(ts, o, h, l, c, v)
    w = fvg.warmup_bars(DEFAULT)
    assert w == 20
    assert np.isnan(out[:w]).all()
    assert np.isfinite(out[w:]).all()


def test_bullish_gap_detection_and_outputs() -> None:
    ts, o, h, l, c, v = _bars(_bullish_scenario())
    out = fvg.batch(ts, o, h, l, c, v)
    assert (out[20:26, COL["bullish_active"]] == 0).all()
    r = out[26]
    assert r[COL["bullish_active"]] == 1 and r[COL["bearish_active"]] == 0
    assert r[COL["nearest_level"]] == pytest.approx((102.0 - 105.0) / 105.0)  # top edge is nearest
    assert r[COL["age"]] == 0
    assert r[COL["gap_size"]] == pytest.approx(1.0)
    assert r[COL["gap_size_pct"]] == pytest.approx(1.0 / 105.0)
    assert r[COL["mitigation_depth"]] == 0.0
    assert r[COL["mitigation_signal"]] == 0.0 and r[COL["mitigation_strength"]] == 0.0
    # Bar 29 (close 103.5, low 103.0): still untouched, two bars older.
    assert out[29, COL["age"]] == 3
    assert out[29, COL["mitigation_depth"]] == 0.0
    # Bar 30: low 101.5 fills half the gap; close 102 sits on the top edge.
    assert out[30, COL["mitigation_depth"]] == pytest.approx(0.5)
    assert out[30, COL["nearest_level"]] == pytest.approx(0.0)
    # Depth never decreases while the gap lives (lowest low since formation).
    assert out[32, COL["mitigation_depth"]] == pytest.approx(0.5)


def test_mitigation_strength_by_hand_and_signal_window() -> None:
    ts, o, h, l, c, v = _bars(_bullish_scenario())
    out = fvg.batch(ts, o, h, l, c, v)
    # Mitigated at bar 33: gap [101, 102] formed at 26, first touched at 30, low 100.8, volume 15
    # against a trailing 20-bar mean of 10.
    penetration = (101.0 - 100.8) / 1.0  # 0.2 of a gap size beyond the far edge
    speed = 1.0 - (33 - 30) / 20.0
    volume = min((15.0 / 10.0) / 2.0, 1.0)
    age = 1.0 - (33 - 26) / 50.0
    expected = 0.4 * penetration + 0.3 * speed + 0.2 * volume + 0.1 * age
    assert expected == pytest.approx(0.571)
    assert out[33, COL["bullish_active"]] == 0
    assert out[33, COL["mitigation_strength"]] == pytest.approx(expected, abs=1e-12)
    # Signal holds for signal_window = 5 bars (33..37), then drops with the strength.
    assert (out[33:38, COL["mitigation_signal"]] == 1.0).all()
    assert out[33:38, COL["mitigation_strength"]] == pytest.approx(expected, abs=1e-12)
    assert out[32, COL["mitigation_signal"]] == 0.0
    assert out[38, COL["mitigation_signal"]] == 0.0 and out[38, COL["mitigation_strength"]] == 0.0
    # No gap left: the gap-specific columns fall back to 0.
    for name in ("nearest_level", "age", "gap_size", "gap_size_pct", "mitigation_depth"):
        assert out[34, COL[name]] == 0.0


def test_signal_window_and_weights_are_config() -> None:
    ts, o, h, l, c, v = _bars(_bullish_scenario())
    params = FvgParams(signal_window=2, w_penetration=1.0, w_speed=0.0, w_volume=0.0, w_age=0.0)
    out = fvg.batch(ts, o, h, l, c, v, params)
    assert (out[33:35, COL["mitigation_signal"]] == 1.0).all()
    assert out[35, COL["mitigation_signal"]] == 0.0
    assert out[33, COL["mitigation_strength"]] == pytest.approx(0.2)


def test_bearish_gap_mirrored() -> None:
    rows = [QUIET] * 25  # low 99.5
    rows.append((100.5, 100.6, 96.8, 97.0, 10.0))  # 25: impulse down, body 3.5
    rows.append((97.0, 98.0, 95.5, 96.0, 10.0))  # 26: high 98 < low[24] 99.5 -> gap [98, 99.5]
    rows.append((96.0, 97.0, 95.5, 96.5, 10.0))  # 27: high 97 >= low[25] 96.8, no new gap
    rows.append((96.5, 98.6, 96.0, 98.0, 10.0))  # 28: touch, fills (98.6 - 98) / 1.5 = 0.4
    rows.append((98.0, 100.1, 96.9, 99.8, 40.0))  # 29: high 100.1 >= 99.5 mitigates
    rows += [(99.8, 100.2, 98.5, 100.0, 10.0)] * 6
    ts, o, h, l, c, v = _bars(rows)
    out = fvg.batch(ts, o, h, l, c, v)
    r = out[26]
    assert r[COL["bearish_active"]] == 1 and r[COL["bullish_active"]] == 0
    assert r[COL["nearest_level"]] == pytest.approx((98.0 - 96.0) / 96.0)  # bottom edge above price
    assert r[COL["gap_size"]] == pytest.approx(1.5)
    assert out[28, COL["mitigation_depth"]] == pytest.approx(0.4)
    assert out[29, COL["bearish_active"]] == 0
    # Volume trailing mean before bar 29 is 10 -> ratio 4 -> volume term capped at 1.
    expected = 0.4 * min((100.1 - 99.5) / 1.5, 1.0) + 0.3 * (1 - 1 / 20) + 0.2 * 1.0 + 0.1 * (1 - 3 / 50)
    assert out[29, COL["mitigation_strength"]] == pytest.approx(expected, abs=1e-12)
    assert out[29, COL["mitigation_signal"]] == 1.0


def test_gap_rejected_when_middle_body_too_small() -> None:
    rows = _bullish_scenario()
    rows[25] = (100.5, 104.2, 100.4, 101.2, 10.0)  # same wick, body 0.7 <= 1.5 * 0.5 = 0.75
    ts, o, h, l, c, v = _bars(rows)
    out = fvg.batch(ts, o, h, l, c, v)
    assert (out[20:, COL["bullish_active"]] == 0).all()
    assert (out[20:, COL["mitigation_signal"]] == 0).all()
    # The threshold is a parameter: with body_mult 1.0 the same middle bar (0.7 > 0.5) qualifies.
    out2 = fvg.batch(ts, o, h, l, c, v, FvgParams(body_mult=1.0))
    assert out2[26, COL["bullish_active"]] == 1


def test_body_reference_is_exactly_the_lookback_bars_before_the_middle_bar() -> None:
    big = (85.0, 116.0, 84.0, 115.0, 10.0)  # body 30, wide range so it opens no gap itself
    # Outlier at bar 14: just outside bars 15..24, so the gap at 26 still qualifies.
    rows = _bullish_scenario()
    rows[14] = big
    assert fvg.batch(*_bars(rows))[26, COL["bullish_active"]] == 1
    # Outlier at bar 15: inside; mean body 3.45 -> threshold 5.175 > 3.5 rejects the gap.
    rows = _bullish_scenario()
    rows[15] = big
    assert fvg.batch(*_bars(rows))[26, COL["bullish_active"]] == 0
    # The middle bar is not part of its own reference: body 0.55 > 1.0 * 0.5 qualifies (including it
    # would lift the mean to 0.555 and reject).
    rows = _bullish_scenario()
    rows[25] = (100.5, 104.2, 100.4, 101.05, 10.0)
    assert fvg.batch(*_bars(rows), FvgParams(body_mult=1.0))[26, COL["bullish_active"]] == 1


def test_gap_expires_after_expiry_bars() -> None:
    rows = _bullish_scenario()[:28]  # gap formed at 26, then stay far above it
    rows += [(105.0, 105.5, 104.5, 105.1, 10.0)] * 60
    ts, o, h, l, c, v = _bars(rows)
    out = fvg.batch(ts, o, h, l, c, v)
    assert (out[26:76, COL["bullish_active"]] == 1).all()  # ages 0..49
    assert out[75, COL["age"]] == 49
    assert out[76, COL["bullish_active"]] == 0  # age 50: dropped
    assert (out[20:, COL["mitigation_signal"]] == 0).all()  # expiry is not mitigation
    # A bar that would have mitigated it at age 50 does nothing.
    rows2 = list(rows)
    rows2[76] = (105.0, 105.5, 100.0, 100.5, 10.0)
    out2 = fvg.batch(*_bars(rows2))
    assert out2[76, COL["mitigation_signal"]] == 0.0
    short = fvg.batch(ts, o, h, l, c, v, FvgParams(expiry_bars=10))
    assert short[35, COL["bullish_active"]] == 1 and short[36, COL["bullish_active"]] == 0


def test_gap_known_only_at_its_own_close() -> None:
    """Truncating the series right before the gap bar must show no gap (nothing leaks backwards)."""
    ts, o, h, l, c, v = _bars(_bullish_scenario())
    out25 = fvg.batch(ts[:26], o[:26], h[:26], l[:26], c[:26], v[:26])
    assert out25[25, COL["bullish_active"]] == 0
    assert fvg.batch(ts, o, h, l, c, v)[26, COL["bullish_active"]] == 1


def test_nearest_gap_picks_closest_edge_among_several() -> None:
    rows = _bullish_scenario()[:28]  # gap A [101, 102] at 26
    rows.append((105.2, 105.6, 104.8, 105.3, 10.0))  # 28: quiet
    rows.append((105.3, 109.0, 105.2, 108.8, 10.0))  # 29: impulse (body 3.5)
    rows.append((108.8, 110.0, 106.5, 109.5, 10.0))  # 30: low 106.5 > high[28] 105.6 -> gap B
    ts, o, h, l, c, v = _bars(rows)
    out = fvg.batch(ts, o, h, l, c, v)
    r = out[30]
    assert r[COL["bullish_active"]] == 2
    assert r[COL["nearest_level"]] == pytest.approx((106.5 - 109.5) / 109.5)
    assert r[COL["gap_size"]] == pytest.approx(106.5 - 105.6)
    assert r[COL["age"]] == 0


# ----------------------------------------------------------------------------------------------
# batch == streaming, causality


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 400),
    nan_rate=st.sampled_from([0.0, 0.0, 0.02, 0.2]),
    expiry=st.integers(1, 60),
    lookback=st.integers(1, 12),
    body_mult=st.sampled_from([0.0, 0.5, 1.5]),
)
def test_streaming_equals_batch_bitwise(
    seed: int, n: int, nan_rate: float, expiry: int, lookback: int, body_mult: float
) -> None:
    params = FvgParams(expiry_bars=expiry, body_lookback=lookback, body_mult=body_mult, volume_window=5)
    bars = _random_bars(seed, n, nan_rate)
    np.testing.assert_array_equal(_stream_all(params, *bars), fvg.batch(*bars, params))


def test_streaming_equals_batch_regime_series() -> None:
    bars = _random_bars(7, 5000)
    b = fvg.batch(*bars)
    np.testing.assert_array_equal(_stream_all(DEFAULT, *bars), b)
    assert (b[:, COL["bullish_active"]] > 0).sum() > 100  # the series does exercise gaps
    assert (b[:, COL["mitigation_signal"]] > 0).sum() > 100


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 598))
def test_no_lookahead(seed: int, k: int) -> None:
    bars = _random_bars(seed % 1000, 600)
    base = fvg.batch(*bars)
    rng = np.random.default_rng(seed)
    pert = [a.copy() for a in bars]
    for a in pert[1:]:
        a[k + 1 :] = a[k + 1 :] * rng.uniform(0.5, 1.5, size=a.shape[0] - k - 1)
    changed = fvg.batch(*pert)
    np.testing.assert_array_equal(changed[: k + 1], base[: k + 1])


# ----------------------------------------------------------------------------------------------
# degenerate input


def test_invalid_bars_give_nan_and_leave_state_untouched() -> None:
    bars = _random_bars(3, 3000, nan_rate=0.05)
    out = fvg.batch(*bars)
    valid = np.ones(len(bars[0]), dtype=bool)
    for a in bars[1:]:
        valid &= np.isfinite(a)
    assert (~valid).sum() > 50
    assert np.isnan(out[~valid]).all()
    assert not np.isinf(out).any()
    # State untouched = the valid rows equal a run on the valid bars alone.
    clean = fvg.batch(*(a[valid] for a in bars))
    np.testing.assert_array_equal(out[valid], clean)


def test_flat_zero_volume_and_zero_close_bars() -> None:
    n = 200
    ts = np.arange(n, dtype=np.int64)
    flat = np.full(n, 50.0)
    out = fvg.batch(ts, flat, flat, flat, flat, np.zeros(n))
    assert np.isnan(out[:20]).all()
    np.testing.assert_array_equal(out[20:], 0.0)
    # Gaps on a zero-volume series: volume term is 0, nothing is inf.
    bars = _random_bars(11, 2000)
    out = fvg.batch(bars[0], *bars[1:5], np.zeros(2000))
    assert not np.isinf(out).any()
    sig = out[:, COL["mitigation_signal"]] == 1.0
    assert sig.any()
    assert (out[sig, COL["mitigation_strength"]] <= 0.8 + 1e-12).all()  # w_volume part is 0
    # A close of exactly 0 makes the relative columns NaN, the rest stays defined.
    rows = _bullish_scenario()
    rows[27] = (105.0, 105.5, 104.0, 0.0, 10.0)  # inconsistent but finite; the gap stays active
    r = fvg.batch(*_bars(rows))[27]
    assert r[COL["bullish_active"]] == 1 and r[COL["gap_size"]] == pytest.approx(1.0)
    assert math.isnan(r[COL["nearest_level"]]) and math.isnan(r[COL["gap_size_pct"]])


@settings(max_examples=30, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            *[
                st.one_of(
                    st.floats(-1e6, 1e6, allow_nan=False),
                    st.sampled_from([0.0, 1.0, math.nan, math.inf, -math.inf, 1e300, -1e300]),
                )
                for _ in range(5)
            ]
        ),
        min_size=0,
        max_size=80,
    )
)
def test_arbitrary_floats_never_crash_or_inf(rows: list[tuple[float, ...]]) -> None:
    params = FvgParams(body_lookback=2, volume_window=2, expiry_bars=5)
    if rows:
        bars = _bars(rows)
    else:
        bars = (np.zeros(0, np.int64),) + tuple(np.zeros(0) for _ in range(5))
    out = fvg.batch(*bars, params)
    assert out.shape == (len(rows), fvg.N_COLUMNS)
    assert not np.isinf(out).any()
    np.testing.assert_array_equal(_stream_all(params, *bars) if rows else out, out)


def test_params_validation_and_array() -> None:
    p = FvgParams()
    assert p.as_array().dtype == np.float64 and p.as_array().shape == (11,)
    with pytest.raises(ValueError):
        FvgParams(expiry_bars=0)
    with pytest.raises(ValueError):
        FvgParams(volume_ratio_cap=0.0)
    with pytest.raises(TypeError):
        FvgParams(expiry_bars=50.0)
    assert len(fvg.init_state(p)) == fvg.state_size(p)
    assert FvgStream().columns == fvg.columns(p)
