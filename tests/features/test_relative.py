"""Relative features: definitions, warm-up, flat bars, and scale invariance on synthetic-regime bars.

Randomised scale-invariance checks live in ``test_properties.py``; these are the deterministic ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import relative
from sage.features.bars import to_arrays
from sage.features.relative import RelativeParams


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars(SyntheticMarketConfig(seed=21, n_bars=800))


def test_definitions_match_formulas(bars: pd.DataFrame) -> None:
    out = pd.DataFrame(relative.batch(*to_arrays(bars)), columns=relative.COLUMNS, index=bars.index)
    pc = bars["close"].shift()
    for col in ("open", "high", "low", "close"):
        np.testing.assert_allclose(out[f"rel_{col}"], np.log(bars[col] / pc), rtol=1e-12, atol=1e-15)
        window = bars[col].rolling(20)
        z = (bars[col] - window.mean()) / window.apply(np.std, raw=True)
        np.testing.assert_allclose(out[f"z_{col}"], z, rtol=1e-7, atol=1e-9)
    rng = bars["high"] - bars["low"]
    body = (bars["close"] - bars["open"]) / rng
    upper = (bars["high"] - bars[["open", "close"]].max(axis=1)) / rng
    lower = (bars[["open", "close"]].min(axis=1) - bars["low"]) / rng
    flat = rng == 0
    np.testing.assert_allclose(out["body_ratio"][~flat], body[~flat], rtol=1e-12)
    np.testing.assert_allclose(out["upper_wick_ratio"][~flat], upper[~flat], rtol=1e-12)
    np.testing.assert_allclose(out["lower_wick_ratio"][~flat], lower[~flat], rtol=1e-12)
    # |body| + upper + lower wick = the whole range.
    total = out["body_ratio"].abs() + out["upper_wick_ratio"] + out["lower_wick_ratio"]
    np.testing.assert_allclose(total[~flat], 1.0, rtol=1e-12)
    assert out["body_ratio"].between(-1, 1).all()
    assert out[["upper_wick_ratio", "lower_wick_ratio"]].stack().between(0, 1).all()


def test_warmup_prefix(bars: pd.DataFrame) -> None:
    params = RelativeParams(z_window=7)
    out = relative.batch(*to_arrays(bars), params=params)
    for j, warm in enumerate(relative.warmup(params)):
        assert np.isnan(out[:warm, j]).all() and not np.isnan(out[warm:, j]).any(), relative.COLUMNS[j]


def test_flat_bars_and_flat_windows() -> None:
    n = 30
    p = np.full(n, 123.25)
    out = relative.batch(np.arange(n, dtype=np.int64), p, p, p, p, np.zeros(n))
    np.testing.assert_array_equal(out[1:, :7], 0.0)  # log returns and guarded ratios are exactly 0
    np.testing.assert_array_equal(out[19:, 7:], 0.0)  # flat window: z-score 0, not 0/0


def test_scale_invariance_on_synthetic_bars(bars: pd.DataFrame) -> None:
    ts, o, h, l, c, v = to_arrays(bars)
    base = relative.batch(ts, o, h, l, c, v)
    # A power of two scales every intermediate exactly: bitwise equal.
    np.testing.assert_array_equal(relative.batch(ts, 4 * o, 4 * h, 4 * l, 4 * c, v), base)
    # Any other factor: equal up to rounding of the scaled inputs (see docs/features.md).
    scaled = relative.batch(ts, 3.7 * o, 3.7 * h, 3.7 * l, 3.7 * c, 7 * v)
    np.testing.assert_allclose(scaled, base, rtol=1e-9, atol=1e-9)


def test_z_window_validation() -> None:
    with pytest.raises(ValueError, match="z_window"):
        RelativeParams(z_window=1)
