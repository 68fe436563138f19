"""Bar containers -> kernel arrays: validation errors, Nautilus/DataFrame/mapping agreement, bar validity."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.objects import Price, Quantity

from sage.features import compute
from sage.features.bars import bar_values, is_valid_bar, timestamp_ns, to_arrays

BAR_TYPE = BarType.from_str("ES.XCME-1-MINUTE-LAST-EXTERNAL")


def _frame(n: int = 5) -> pd.DataFrame:
    idx = pd.date_range("2024-03-01 14:30", periods=n, freq="1min", tz="UTC")
    close = 4000.0 + np.arange(n) * 0.25
    return pd.DataFrame(
        {
            "open": close - 0.25,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.full(n, 10.0),
        },
        index=idx,
    )


def _bars(df: pd.DataFrame) -> list[Bar]:
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
        for ts, r in zip(df.index, df.itertuples(), strict=True)
    ]


def test_frame_and_nautilus_bars_give_identical_arrays() -> None:
    df = _frame()
    from_df = to_arrays(df)
    from_bars = to_arrays(_bars(df))
    for a, b in zip(from_df, from_bars, strict=True):
        np.testing.assert_array_equal(a, b)
    assert from_df[0].dtype == np.int64 and from_df[1].dtype == np.float64
    assert from_df[0][0] == pd.Timestamp("2024-03-01 14:30", tz="UTC").value


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=["volume"]), "missing column"),
        (lambda df: df.tz_localize(None), "timezone-naive"),
        (lambda df: df.tz_convert("America/New_York"), "must be in UTC"),
        (lambda df: df.reset_index(drop=True), "UTC DatetimeIndex"),
        (lambda df: df.iloc[::-1], "strictly increasing"),
        (lambda df: pd.concat([df, df.iloc[-1:]]), "strictly increasing"),
        (lambda df: df.assign(close=df["close"].astype(str)), "must be numeric"),
    ],
)
def test_invalid_frames_raise_clear_value_errors(mutate, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        to_arrays(mutate(_frame()))
    with pytest.raises(ValueError, match=message):
        compute(mutate(_frame()))


def test_other_utc_spellings_and_units_are_accepted() -> None:
    df = _frame()
    expected = to_arrays(df)[0]
    for tz in (dt.UTC, "Etc/UTC"):
        np.testing.assert_array_equal(to_arrays(df.tz_convert(tz))[0], expected)
    as_ms = df.copy()
    as_ms.index = as_ms.index.as_unit("ms")
    np.testing.assert_array_equal(to_arrays(as_ms)[0], expected)
    # Integer and float32 columns are converted, extra columns ignored.
    mixed = df.assign(volume=df["volume"].astype(np.int64), open=df["open"].astype(np.float32), extra="x")
    np.testing.assert_array_equal(to_arrays(mixed)[5], expected * 0 + 10.0)


def test_unsupported_containers_raise() -> None:
    with pytest.raises(TypeError, match="DataFrame or a list"):
        to_arrays(np.zeros((3, 5)))
    with pytest.raises(TypeError, match="expected nautilus Bar"):
        to_arrays([{"open": 1.0}])


def test_bar_values_mapping_and_nautilus_bar_agree() -> None:
    df = _frame(1)
    bar = _bars(df)[0]
    ts = df.index[0]
    row = df.iloc[0]
    mapping = {"ts": int(ts.value), **{k: float(row[k]) for k in ("open", "high", "low", "close", "volume")}}
    assert bar_values(bar) == bar_values(mapping)
    assert bar_values({**mapping, "ts": ts}) == bar_values(mapping)
    assert bar_values({**mapping, "ts": np.datetime64(ts.tz_localize(None), "ns")}) == bar_values(mapping)
    with pytest.raises(ValueError, match="missing key 'volume'"):
        bar_values({k: v for k, v in mapping.items() if k != "volume"})
    with pytest.raises(TypeError, match="Bar or a mapping"):
        bar_values((1, 2, 3))


def test_timestamp_ns_rejects_naive_datetimes() -> None:
    assert timestamp_ns(dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == pd.Timestamp("2024-01-01", tz="UTC").value
    with pytest.raises(ValueError, match="timezone-naive"):
        timestamp_ns(dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="cannot interpret"):
        timestamp_ns("not a time")


@pytest.mark.parametrize(
    ("bar", "valid"),
    [
        ((100.0, 101.0, 99.0, 100.5, 10.0), True),
        ((100.0, 100.0, 100.0, 100.0, 0.0), True),  # flat bar, zero volume: valid
        ((np.nan, 101.0, 99.0, 100.5, 10.0), False),
        ((100.0, np.inf, 99.0, 100.5, 10.0), False),
        ((100.0, 101.0, 99.0, 100.5, np.nan), False),
        ((100.0, 101.0, 99.0, 100.5, -1.0), False),
        ((100.0, 101.0, 0.0, 100.5, 10.0), False),  # log returns need positive prices
        ((-1.0, 101.0, -2.0, 100.5, 10.0), False),
        ((100.0, 100.2, 99.0, 100.5, 10.0), False),  # high below close
        ((100.0, 101.0, 100.2, 100.1, 10.0), False),  # low above open
    ],
)
def test_is_valid_bar(bar: tuple[float, ...], valid: bool) -> None:
    assert is_valid_bar(*bar) is valid
