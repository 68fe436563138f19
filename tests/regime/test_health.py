"""Health monitors (``sage.regime.health``): flag compatibility with ``RegimeData``, latency statistics,
input reason codes, drift statistics against numpy/scipy references, and flag aggregation/logging."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from sage.data.sample import load_spx
from sage.data.types import RegimeHealth
from sage.regime.health import (
    BAD_BAR,
    DriftConfig,
    DriftMonitor,
    HealthFlag,
    HealthMonitor,
    InputIssue,
    InputValidator,
    LatencyMonitor,
    PredictionDriftMonitor,
    input_health_flags,
    psi,
)

MIN = 60_000_000_000


def test_health_flags_match_regime_health() -> None:
    assert {f.name: f.value for f in HealthFlag} == {f.name: f.value for f in RegimeHealth}


# -- latency ------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_latency_monitor_percentiles_breaches_and_ring() -> None:
    mon = LatencyMonitor(budget_us=100.0, window=50)
    assert math.isnan(mon.p50) and math.isnan(mon.recent_breach_rate)
    rng = np.random.default_rng(0)
    x = rng.exponential(40.0, size=130)
    breaches = [mon.record(v) for v in x]
    assert breaches == list(x > 100.0)
    assert mon.breaches == int((x > 100.0).sum()) and mon.count == 130
    recent = x[-50:]  # the ring keeps the last `window` values
    assert mon.p50 == pytest.approx(np.percentile(recent, 50))
    assert mon.p99 == pytest.approx(np.percentile(recent, 99))
    assert mon.recent_breach_rate == pytest.approx(np.mean(recent > 100.0))
    assert not mon.record(math.nan) and mon.count == 130  # not measured: ignored
    mon.record(100.0)
    assert mon.flags == HealthFlag.OK  # exactly at budget is not a breach
    mon.record(100.5)
    assert mon.flags == HealthFlag.LATENCY_BUDGET_EXCEEDED


def test_latency_measure_uses_injected_clock_even_on_error() -> None:
    clock = FakeClock()
    mon = LatencyMonitor(budget_us=10.0, clock=clock)
    with mon.measure():
        clock.ns += 7_000
    assert mon.last_us == 7.0 and not mon.last_breached
    with pytest.raises(RuntimeError), mon.measure():
        clock.ns += 25_000
        raise RuntimeError("boom")
    assert mon.last_us == 25.0 and mon.last_breached


# -- input validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bar", "expected"),
    [
        ((10.0, 11.0, 9.0, 10.5, 5.0), InputIssue.OK),
        ((10.0, 11.0, 9.0, math.nan, 5.0), InputIssue.NON_FINITE),
        ((10.0, 11.0, 9.0, 10.5, math.inf), InputIssue.NON_FINITE),
        ((10.0, 11.0, 0.0, 10.5, 5.0), InputIssue.NON_POSITIVE_PRICE),
        ((10.0, 11.0, 9.0, 10.5, -1.0), InputIssue.NEGATIVE_VOLUME),
        ((10.0, 10.2, 9.0, 10.5, 5.0), InputIssue.INCONSISTENT_OHLC),
        ((10.0, 11.0, 10.1, 10.5, 5.0), InputIssue.INCONSISTENT_OHLC),
        ((10.0, 11.0, 9.0, 10.5, 0.0), InputIssue.OK),
    ],
)
def test_input_validator_bar_rules(bar: tuple[float, ...], expected: InputIssue) -> None:
    v = InputValidator(MIN)
    assert v.check(MIN, *bar) == expected
    assert bool(input_health_flags(expected) & HealthFlag.MISSING_FEATURES) == bool(expected & BAD_BAR)


def test_input_validator_time_stamps() -> None:
    v = InputValidator(MIN, max_gap_bars=3.0)
    ok = (10.0, 11.0, 9.0, 10.5, 5.0)
    assert v.check(10 * MIN, *ok) == InputIssue.OK
    assert v.check(13 * MIN, *ok) == InputIssue.OK  # exactly 3 intervals: not a gap
    assert v.check(17 * MIN, *ok) == InputIssue.GAP
    assert v.check(17 * MIN, *ok) == InputIssue.DUPLICATE_TS
    assert v.check(16 * MIN, *ok) == InputIssue.UNSORTED_TS
    assert v.last_ts == 17 * MIN  # out-of-order bars do not move the clock back
    assert v.check(18 * MIN, 1.0, 0.5, 1.0, 1.0, 1.0) == InputIssue.INCONSISTENT_OHLC
    assert v.check(19 * MIN, *ok) == InputIssue.OK  # a bad bar with a good stamp still advances time
    assert v.flags == HealthFlag.OK
    v.check(30 * MIN, math.nan, 1.0, 1.0, 1.0, 1.0)
    assert v.flags == HealthFlag.MISSING_FEATURES | HealthFlag.STALE_INPUT
    no_gaps = InputValidator(None)
    no_gaps.check(0, *ok)
    assert no_gaps.check(10**15, *ok) == InputIssue.OK


def test_input_validator_frame_equals_streaming_on_real_daily_bars() -> None:
    bars = load_spx()
    bars.iloc[100, bars.columns.get_loc("close")] = np.nan
    day = 86_400_000_000_000
    batch = InputValidator(day, max_gap_bars=4.5).check_frame(bars)
    stream = InputValidator(day, max_gap_bars=4.5)
    expected = [
        int(stream.check(ts, *row))
        for ts, row in zip(bars.index.asi8, bars[["open", "high", "low", "close", "volume"]].to_numpy())
    ]
    np.testing.assert_array_equal(batch, expected)
    assert batch[100] == InputIssue.NON_FINITE
    # ordinary weekends and 4-day holiday weekends pass; the only gaps are real market closures
    gap_days = bars.index[(batch & InputIssue.GAP) > 0]
    assert len(gap_days) <= 3, gap_days  # e.g. the 2001-09-11 closure


# -- drift ---------------------------------------------------------------------------------------------------


def _reference_scores(dm: DriftMonitor, window_rows: np.ndarray, method: str) -> np.ndarray:
    """Per-feature scores recomputed with numpy from the fitted edges (the test oracle)."""
    out = []
    for j in range(window_rows.shape[1]):
        col = window_rows[:, j]
        col = col[np.isfinite(col)]
        if col.size < dm.config.min_samples:
            out.append(np.nan)
            continue
        idx = np.searchsorted(dm._edges[j], col, side="right")
        p = np.bincount(idx, minlength=dm.config.bins)[: dm.config.bins] / col.size
        if method == "psi":
            out.append(float(psi(p, dm._ref_p[j], dm.config.eps)))
        else:
            out.append(float(np.max(np.abs(np.cumsum(p) - dm._ref_cdf[j]))))
    return np.array(out)


@pytest.mark.parametrize("method", ["psi", "ks"])
def test_drift_scores_match_numpy_oracle(method: str) -> None:
    rng = np.random.default_rng(2)
    n = 3000
    ref = np.column_stack(
        [
            rng.normal(size=n),
            rng.exponential(size=n),
            rng.integers(0, 3, size=n).astype(float),  # discrete: tied quantiles merge bins
            np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),  # NaNs are skipped
        ]
    )
    cfg = DriftConfig(method=method, window=400, min_samples=50)  # type: ignore[arg-type]
    dm = DriftMonitor(cfg).fit(ref)
    live = ref[:1000] + np.array([0.0, 0.5, 0.0, 0.0])
    live[::3, 3] = np.nan
    scores = dm.run(live)
    for t in (30, 399, 999):  # before min_samples, window just full, after many slides
        dm2 = DriftMonitor(cfg).fit(ref)
        dm2.run(live[: t + 1])
        oracle = _reference_scores(dm2, live[max(0, t - 399) : t + 1], method)
        np.testing.assert_allclose(dm2.scores, oracle, rtol=1e-12, equal_nan=True)
        ok = np.isfinite(oracle)
        assert (math.isnan(scores[t]) and not ok.any()) or scores[t] == pytest.approx(np.median(oracle[ok]))


def test_ks_at_edges_brackets_exact_ks() -> None:
    """KS at the reference-quantile edges is a lower bound within one bin's reference mass."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(20000, 1))
    dm = DriftMonitor(DriftConfig(method="ks", window=500, n_bins=50)).fit(ref)
    for shift in (0.0, 0.2, 1.0):
        live = rng.normal(loc=shift, size=(500, 1))
        dm.reset()
        dm.run(live)
        exact = ks_2samp(live[:, 0], ref[:, 0]).statistic
        assert exact - dm._ref_p[0].max() - 1e-12 <= dm.scores[0] <= exact + 1e-12


def test_drift_flags_detect_a_real_shift_not_noise() -> None:
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(20000, 12))
    dm = DriftMonitor(DriftConfig(window=500)).fit(ref)
    same = dm.run(rng.normal(size=(1500, 12)))
    assert np.all(np.isnan(same[:99])) and np.isfinite(same[99:]).all()  # min_samples = 100
    # PSI's sampling noise is ~(bins - 1) / n: 0.09 at the first scored row, 0.018 with a full window
    assert np.nanmax(same) < dm.config.warn_threshold and np.nanmax(same[-500:]) < 0.05
    assert dm.flags == HealthFlag.OK and not dm.alarm
    shifted = dm.run(rng.normal(loc=1.0, scale=2.0, size=(500, 12)))
    assert shifted[-1] > dm.config.alarm_threshold
    assert dm.flags == HealthFlag.DRIFT_WARNING | HealthFlag.DRIFT_ALARM and dm.alarm
    dm.run(rng.normal(size=(500, 12)))  # the shifted rows leave the window: back to normal
    assert dm.flags == HealthFlag.OK
    assert len(dm.top_features(3)) == 3


def test_drift_monitor_dataframe_columns_and_mapping_rows() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(rng.normal(size=(2000, 3)), columns=["a", "b", "c"])
    dm = DriftMonitor(DriftConfig(window=100, min_samples=10), columns=["c", "a"]).fit(ref)
    assert dm.columns == ("c", "a")
    s1 = dm.update({"a": 0.1, "c": 0.2, "b": 99.0})
    dm2 = DriftMonitor(DriftConfig(window=100, min_samples=10), columns=["c", "a"]).fit(ref)
    s2 = dm2.update(np.array([0.2, 0.1]))
    assert (math.isnan(s1) and math.isnan(s2)) or s1 == s2
    np.testing.assert_array_equal(dm._ring, dm2._ring)
    with pytest.raises(ValueError):
        dm.update(np.zeros(3))
    with pytest.raises(RuntimeError):
        DriftMonitor().update(np.zeros(3))
    with pytest.raises(ValueError):
        DriftConfig(warn=0.5, alarm=0.1)


def test_prediction_drift() -> None:
    rng = np.random.default_rng(6)
    ref_labels = rng.choice(4, p=[0.3, 0.2, 0.4, 0.1], size=5000)
    pdm = PredictionDriftMonitor(window=300, min_samples=100).fit(ref_labels)
    for lab in rng.choice(4, p=[0.3, 0.2, 0.4, 0.1], size=300):
        pdm.update(int(lab))
    assert pdm.score < 0.05 and pdm.flags == HealthFlag.OK
    for _ in range(300):  # the detector suddenly calls everything VOLATILE
        pdm.update(np.array([0.1, 0.1, 0.1, 0.7]))
    assert pdm.score > 0.25 and pdm.flags & HealthFlag.DRIFT_ALARM
    # probabilities and labels give the same reference
    probs = np.eye(4)[ref_labels] * 0.7 + 0.075
    np.testing.assert_array_equal(PredictionDriftMonitor().fit(probs).ref_p, pdm.ref_p)
    pdm.update(np.full(4, np.nan))  # invalid prediction: takes a slot, no class
    assert pdm._counts.sum() == 299


def test_health_monitor_combines_and_logs_changes_once(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(7)
    hm = HealthMonitor(
        latency=LatencyMonitor(budget_us=50.0),
        validator=InputValidator(MIN),
        drift=DriftMonitor(DriftConfig(window=300, min_samples=150)).fit(rng.normal(size=(3000, 4))),
        prediction_drift=PredictionDriftMonitor(window=100, min_samples=50).fit(rng.integers(0, 4, 3000)),
    )
    caplog.set_level(logging.INFO, logger="sage.regime.health")
    for t in range(200):
        hm.on_bar((t + 1) * MIN, 10.0, 11.0, 9.0, 10.0, 1.0)
        hm.on_features(rng.normal(size=4))
        hm.on_prediction(int(rng.integers(0, 4)))
        hm.on_latency(10.0)
        assert hm.log_changes() == HealthFlag.OK
    assert not caplog.records
    hm.on_bar(300 * MIN, math.nan, 11.0, 9.0, 10.0, 1.0)
    hm.on_features(np.full(4, np.nan))
    hm.on_latency(80.0)
    for _ in range(3):
        flags = hm.log_changes()
    assert flags == (
        HealthFlag.MISSING_FEATURES | HealthFlag.STALE_INPUT | HealthFlag.LATENCY_BUDGET_EXCEEDED
    )
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    hm.on_bar(301 * MIN, 10.0, 11.0, 9.0, 10.0, 1.0)
    hm.on_features(rng.normal(size=4))
    hm.on_latency(10.0)
    assert hm.log_changes() == HealthFlag.OK
    assert any("cleared" in r.getMessage() for r in caplog.records)
    snap = hm.snapshot()
    assert snap["latency_breaches"] == 1 and math.isfinite(snap["drift"]) and not hm.drift_alarm
