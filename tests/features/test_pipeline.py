"""Public API: compute() and FeatureStream on DataFrames, Nautilus Bars and mappings; families compose exactly.

Streaming/batch agreement here is asserted bitwise (``assert_array_equal``, NaN positions included) on
synthetic-regime bars long enough for every family to be warm; the randomised versions are in
``test_properties.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.objects import Price, Quantity

from sage.data.synthetic import SyntheticMarketConfig, generate_bars
from sage.features import (
    DEFAULT_SCHEMA,
    FeatureSchema,
    FeatureStream,
    basic,
    compute,
    fvg,
    mmd,
    relative,
    warmup_bars,
)
from sage.features.bars import to_arrays
from sage.features.schema import FAMILIES

BAR_TYPE = BarType.from_str("ES.XCME-1-MINUTE-LAST-EXTERNAL")
N = 700  # > MMD warm-up (539) so every column has values


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return generate_bars(SyntheticMarketConfig(seed=5, n_bars=N))


@pytest.fixture(scope="module")
def features(bars: pd.DataFrame) -> pd.DataFrame:
    return compute(bars)


def _nautilus(bars: pd.DataFrame) -> list[Bar]:
    return [
        Bar(
            BAR_TYPE,
            Price(r.open, 2),
            Price(r.high, 2),
            Price(r.low, 2),
            Price(r.close, 2),
            Quantity(r.volume, 0),
            int(ts.value),
            int(ts.value),
        )
        for ts, r in zip(bars.index, bars.itertuples(), strict=True)
    ]


def _mappings(bars: pd.DataFrame) -> list[dict]:
    return [
        {"ts": ts, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}
        for ts, r in zip(bars.index, bars.itertuples(), strict=True)
    ]


def test_compute_frame_shape_index_and_columns(bars: pd.DataFrame, features: pd.DataFrame) -> None:
    assert features.index.equals(bars.index)
    assert tuple(features.columns) == DEFAULT_SCHEMA.names
    assert (features.dtypes == np.float64).all()
    assert not np.isinf(features.to_numpy()).any()
    assert features.iloc[-1].notna().all()  # fully warm at the end


def test_compute_on_nautilus_bars_equals_frame(bars: pd.DataFrame, features: pd.DataFrame) -> None:
    out = compute(_nautilus(bars))
    np.testing.assert_array_equal(out.to_numpy(), features.to_numpy())
    assert out.index.equals(bars.index.rename("ts_event"))
    assert str(out.index.tz) == "UTC"


def test_stream_equals_batch_bitwise_for_bar_and_mapping(bars: pd.DataFrame, features: pd.DataFrame) -> None:
    expected = features.to_numpy()
    for items in (_nautilus(bars), _mappings(bars)):
        stream = FeatureStream()
        rows = np.array([stream.update(item) for item in items])
        np.testing.assert_array_equal(rows, expected)
    stream.reset()
    row0 = stream.update_values(
        int(bars.index[0].value), *bars.iloc[0][["open", "high", "low", "close", "volume"]]
    )
    np.testing.assert_array_equal(row0, expected[0])
    assert stream.names == DEFAULT_SCHEMA.names


def test_each_family_in_the_pipeline_equals_its_own_batch(bars: pd.DataFrame, features: pd.DataFrame) -> None:
    arrays = to_arrays(bars)
    for family, module, _ in FAMILIES:
        own = module.batch(*arrays, params=DEFAULT_SCHEMA.family_params(family))
        cols = list(DEFAULT_SCHEMA.family_columns(family))
        np.testing.assert_array_equal(features[cols].to_numpy(), own, err_msg=family)
    assert {f for f, _, _ in FAMILIES} == {"basic", "relative", "fvg", "mmd"}
    assert (basic, relative, fvg, mmd) == tuple(m for _, m, _ in FAMILIES)


def test_warmup_is_the_exact_nan_prefix(features: pd.DataFrame) -> None:
    warm = warmup_bars()
    assert set(warm) == set(features.columns)
    for name, k in warm.items():
        col = features[name].to_numpy()
        assert np.isnan(col[:k]).all(), name
        assert not np.isnan(col[k:]).any(), name


def test_column_subset_schema(bars: pd.DataFrame, features: pd.DataFrame) -> None:
    cols = ("z_close", "fvg_age", "rsi", "mmd2_ref500")
    schema = FeatureSchema(columns=cols)
    out = compute(bars, schema)
    assert tuple(out.columns) == cols
    np.testing.assert_array_equal(out.to_numpy(), features[list(cols)].to_numpy())
    stream = FeatureStream(schema)
    np.testing.assert_array_equal(np.array([stream.update(m) for m in _mappings(bars)]), out.to_numpy())
    only_basic = compute(bars, FeatureSchema(columns=("atr",)))
    np.testing.assert_array_equal(only_basic["atr"].to_numpy(), features["atr"].to_numpy())


def test_bad_bars_yield_nan_rows_and_leave_state_untouched(
    bars: pd.DataFrame, features: pd.DataFrame
) -> None:
    bad = pd.DataFrame(
        {
            "open": [np.nan, 100.0, 100.0, 100.0],
            "high": [101.0, np.inf, 101.0, 99.0],  # last: high below open
            "low": [99.0, 99.0, 99.0, 98.0],
            "close": [100.0, 100.0, 100.0, 98.5],
            "volume": [1.0, 1.0, -5.0, 1.0],
        }
    )
    positions = [0, 300, 301, 650]  # first bar, mid-stream, consecutive, during MMD output
    pieces, start = [], 0
    for k, pos in enumerate(positions):
        pieces.append(bars.iloc[start:pos])
        stamp = bars.index[pos] - pd.Timedelta(seconds=30 - k)
        pieces.append(bad.iloc[[k]].set_index(pd.DatetimeIndex([stamp])))
        start = pos
    pieces.append(bars.iloc[start:])
    dirty = pd.concat(pieces)[["open", "high", "low", "close", "volume"]]
    out = compute(dirty)
    is_bad = ~dirty.index.isin(bars.index)
    assert np.isnan(out[is_bad].to_numpy()).all()
    np.testing.assert_array_equal(out[~is_bad].to_numpy(), features.to_numpy())
    stream = FeatureStream()
    np.testing.assert_array_equal(np.array([stream.update(m) for m in _mappings(dirty)]), out.to_numpy())


def test_extreme_but_valid_prices_never_emit_inf() -> None:
    idx = pd.date_range("2024-01-01", periods=6, freq="1min", tz="UTC")
    price = np.array([1e-300, 1e300, 1e-300, 1.0, 1e300, 1e-300])
    df = pd.DataFrame(
        {"open": price, "high": price, "low": price, "close": price, "volume": 1e308}, index=idx
    )
    out = compute(df)
    assert not np.isinf(out.to_numpy()).any()


def test_empty_input() -> None:
    empty = pd.DataFrame(
        {k: pd.Series(dtype=float) for k in ("open", "high", "low", "close", "volume")},
        index=pd.DatetimeIndex([], tz="UTC"),
    )
    out = compute(empty)
    assert out.shape == (0, len(DEFAULT_SCHEMA.names))
    assert compute([]).shape == (0, len(DEFAULT_SCHEMA.names))


def test_schema_argument_is_validated(bars: pd.DataFrame) -> None:
    with pytest.raises(TypeError, match="FeatureSchema"):
        compute(bars, schema={"columns": ["atr"]})
