"""VWAP and its volume profile: profile estimation, profile-proportional slices, the participation cap."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ES, MINUTE, run_engine
from nautilus_trader.model.events import OrderDenied

from sage.data.sample import ES_BAR_TYPE
from sage.execution import ParentStatus, VolumeProfile, VWAPConfig, VWAPExecAlgorithm

NS = 1_000_000_000


def _ns(iso: str) -> int:
    return pd.Timestamp(iso, tz="UTC").value


# -- VolumeProfile ------------------------------------------------------------------------------------


def test_profile_from_frame_pools_days_and_integrates_over_partial_buckets() -> None:
    index = pd.to_datetime(
        ["2024-01-02 14:05", "2024-01-02 14:40", "2024-01-03 14:10", "2024-01-03 15:00"], utc=True
    )
    profile = VolumeProfile.from_frame(pd.Series([30.0, 10.0, 30.0, 30.0], index=index), bucket_minutes=30)
    frame = profile.to_frame().set_index("bucket_start")["fraction"]
    assert frame["14:00"] == pytest.approx(0.6) and frame["14:30"] == pytest.approx(0.1)
    assert frame["15:00"] == pytest.approx(0.3) and frame.sum() == pytest.approx(1.0)
    assert profile.n_days == 2 and profile.mean_daily_volume == pytest.approx(50.0)
    # 10 of the 30 minutes of the 14:00 bucket, plus all of the 14:30 bucket, on any day.
    assert profile.fraction_between(_ns("2024-02-01 14:20"), _ns("2024-02-01 15:00")) == pytest.approx(
        0.2 + 0.1
    )
    assert profile.fraction_between(_ns("2024-02-01 00:00"), _ns("2024-02-02 00:00")) == pytest.approx(1.0)
    assert profile.expected_volume(_ns("2024-02-01 15:00"), _ns("2024-02-01 15:30")) == pytest.approx(15.0)


def test_profile_bar_stamps_and_time_zone() -> None:
    """A bar closing at 14:00 belongs to the bucket ending at 14:00; buckets can be exchange-local."""
    closes = pd.Series([5.0, 7.0], index=pd.to_datetime(["2013-09-03 14:00", "2013-09-03 14:01"], utc=True))
    by_end = (
        VolumeProfile.from_frame(closes, bucket_minutes=60, label="end").to_frame().set_index("bucket_start")
    )
    assert by_end.loc["13:00", "fraction"] == pytest.approx(5 / 12) and by_end.loc[
        "14:00", "fraction"
    ] == pytest.approx(7 / 12)
    chicago = VolumeProfile.from_frame(closes, bucket_minutes=60, tz="America/Chicago", label="end")
    local = chicago.to_frame().set_index("bucket_start")
    assert local.loc["08:00", "fraction"] == pytest.approx(5 / 12)  # 13:59 UTC = 08:59 CDT
    # The same UTC instant maps to a local bucket; in winter (CST, UTC-6) it is an hour earlier locally.
    summer = chicago.fraction_between(_ns("2013-09-03 13:00"), _ns("2013-09-03 14:00"))
    winter = chicago.fraction_between(_ns("2013-12-03 14:00"), _ns("2013-12-03 15:00"))
    assert summer == pytest.approx(5 / 12) and winter == pytest.approx(5 / 12)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"fractions": (0.5, 0.5), "bucket_minutes": 30}, "fractions for 48 buckets"),
        ({"fractions": tuple([1 / 48] * 48), "bucket_minutes": 7}, "divisor of 1440"),
        ({"fractions": tuple([0.1] * 48), "bucket_minutes": 30}, "sum to 1"),
    ],
)
def test_profile_rejects_inconsistent_input(kwargs, error) -> None:
    with pytest.raises(ValueError, match=error):
        VolumeProfile(**kwargs)


def test_profile_from_the_sample_catalog_peaks_at_the_cash_open(sample_catalog: Path) -> None:
    profile = VolumeProfile.from_catalog(sample_catalog, ES_BAR_TYPE, bucket_minutes=30, tz="America/Chicago")
    frame = profile.to_frame()
    assert len(frame) == 48 and frame.fraction.sum() == pytest.approx(1.0)
    assert frame.loc[frame.fraction.idxmax(), "bucket_start"] == "08:30"  # CME equity cash open
    assert profile.n_days == 3 and profile.mean_daily_volume > 100_000


# -- VWAP in the engine -------------------------------------------------------------------------------

#: 14:00-14:30 UTC carries three times the volume of 14:30-15:00 (and nothing else trades).
SKEWED = VolumeProfile.from_frame(
    pd.Series([3.0, 1.0], index=pd.to_datetime(["2013-09-03 14:00", "2013-09-03 14:30"], utc=True)),
    bucket_minutes=30,
)


def _vwap_run(es_bars, quantity, params, **algo_kwargs):
    t0 = _ns("2013-09-03 14:00")
    algorithm = (
        VWAPExecAlgorithm(**algo_kwargs) if algo_kwargs else VWAPExecAlgorithm(profiles={ES.id: SKEWED})
    )
    return run_engine(
        es_bars, [(t0, lambda s: s.submit_parent("v", "VWAP", quantity, params=params))], [algorithm]
    )


def _slices(run):
    s = run.strategy
    primary = run.cache.order(s.primaries["v"])
    out = [(c.ts_init, int(c.quantity)) for c in s.family("v")]
    if primary.ts_submitted:
        out.append((primary.ts_submitted, int(primary.quantity)))
    return sorted(out)


def test_vwap_slices_follow_the_profile(es_bars) -> None:
    run = _vwap_run(es_bars, 120, {"horizon_secs": 3600, "interval_secs": 300, "max_participation": 1.0})
    slices = _slices(run)
    t0 = _ns("2013-09-03 14:00")
    assert [t for t, _ in slices] == [t0 + k * 5 * MINUTE for k in range(12)]
    first_half = [q for t, q in slices if t < t0 + 30 * MINUTE]
    second_half = [q for t, q in slices if t >= t0 + 30 * MINUTE]
    assert first_half == [15] * 6 and second_half == [5] * 6  # 120 * 3/4 and 120 * 1/4, evenly per bucket
    assert run.strategy.report("v").status == ParentStatus.COMPLETED
    assert sum(int(f.last_qty) for f in run.strategy.fills("v")) == 120


def _bar_volume(es_bars, start_ns: int, end_ns: int) -> float:
    return sum(b.volume.as_double() for b in es_bars if start_ns < b.ts_event <= end_ns)


@pytest.mark.parametrize("at_horizon", ["cancel", "complete"])
def test_participation_cap_binds_on_the_previous_interval_volume(es_bars, at_horizon) -> None:
    rate = 0.001
    params = {"horizon_secs": 1800, "interval_secs": 300, "max_participation": rate, "at_horizon": at_horizon}
    run = _vwap_run(es_bars, 400, params)
    s = run.strategy
    t0 = _ns("2013-09-03 14:00")
    scheduled = [c for c in s.family("v") if c.ts_init < t0 + 30 * MINUTE]
    assert len(scheduled) == 6
    for child in scheduled:
        cap = math.floor(rate * _bar_volume(es_bars, child.ts_init - 5 * MINUTE, child.ts_init))
        assert 0 < int(child.quantity) <= cap
    # The profile wanted 50 lots per slice in the first half hour; the cap kept every slice below that.
    assert all(int(c.quantity) < 50 for c in scheduled)
    report = s.report("v")
    held_back = 400 - sum(int(c.quantity) for c in scheduled)
    if at_horizon == "cancel":
        assert report.status == ParentStatus.INCOMPLETE and report.unfilled_qty == held_back
        assert run.cache.order(s.primaries["v"]).status.name == "CANCELED"
    else:
        # One uncapped sweep at the horizon: the primary itself, carrying what the cap held back.
        primary = run.cache.order(s.primaries["v"])
        assert primary.ts_submitted == t0 + 30 * MINUTE and int(primary.quantity) == held_back
        assert report.status == ParentStatus.COMPLETED and report.filled_qty == 400
    assert run.open_orders() == []


def test_participation_cap_uses_trade_ticks_when_present(es_ticks) -> None:
    t0 = es_ticks[100].ts_init
    flat = VolumeProfile.flat(bucket_minutes=30)
    params = {"horizon_secs": 240, "interval_secs": 60, "max_participation": 0.01, "at_horizon": "cancel"}
    run = run_engine(
        es_ticks,
        [(t0, lambda s: s.submit_parent("v", "VWAP", 500, params=params))],
        [VWAPExecAlgorithm(profiles={ES.id: flat})],
        trade_execution=True,
    )
    children = run.strategy.family("v")
    assert len(children) >= 3
    ts = np.array([t.ts_event for t in es_ticks])
    size = np.array([t.size.as_double() for t in es_ticks])
    for child in children:
        window = (ts >= child.ts_init - 60 * NS) & (ts <= child.ts_init)
        assert 0 < int(child.quantity) <= math.floor(0.01 * size[window].sum())
    assert run.strategy.report("v").status == ParentStatus.INCOMPLETE


def test_vwap_without_a_profile_is_denied_unless_flat_fallback(es_bars) -> None:
    params = {"horizon_secs": 600, "interval_secs": 300, "max_participation": 1.0}
    denied = _vwap_run(es_bars, 10, params, config=VWAPConfig())
    events = [e for e in denied.strategy.events if isinstance(e, OrderDenied)]
    assert len(events) == 1 and "no volume profile for ESU3.XCME" in events[0].reason

    fallback = _vwap_run(es_bars, 10, params, config=VWAPConfig(flat_profile_fallback=True))
    assert [q for _, q in _slices(fallback)] == [5, 5]
    assert fallback.strategy.report("v").status == ParentStatus.COMPLETED


def test_vwap_loads_profiles_from_the_catalog_on_start(es_bars, sample_catalog: Path) -> None:
    config = VWAPConfig(
        catalog_path=str(sample_catalog),
        profile_bar_types=(ES_BAR_TYPE,),
        profile_end="2013-09-03 13:30",  # history before the backtest window only
        profile_tz="America/Chicago",
    )
    run = _vwap_run(
        es_bars, 60, {"horizon_secs": 1800, "interval_secs": 300, "max_participation": 1.0}, config=config
    )
    (algorithm,) = run.algorithms
    profile = algorithm.profile(ES.id)
    assert profile is not None and profile.n_days == 3
    t0 = _ns("2013-09-03 14:00")
    expected = [
        60
        * profile.fraction_between(t0 + k * 5 * MINUTE, t0 + (k + 1) * 5 * MINUTE)
        / profile.fraction_between(t0, t0 + 30 * MINUTE)
        for k in range(6)
    ]
    got = [q for _, q in _slices(run)]
    assert sum(got) == 60
    assert np.abs(np.cumsum(got) - np.cumsum(expected)).max() <= 1.0  # rounding only, never drifting
