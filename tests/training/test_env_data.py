"""EnvData: causal 1m -> 5m / 30m aggregation, causal alignment, no look-ahead, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sage.agents.observation import align_strategic
from sage.data.sample import ES_BAR_TYPE
from sage.data.synthetic import (
    SyntheticMarketConfig,
    generate_bars,
    synthetic_bar_type,
    write_synthetic_catalog,
)
from sage.training.env import EnvConfig, EnvData, EnvDataError, VecMarketEnv, aggregate_bars

N_BARS = 20_000  # 1-minute bars: just enough for ~480 5-minute bars with a complete strategic window


@pytest.fixture(scope="module")
def bars_1m() -> pd.DataFrame:
    return generate_bars(SyntheticMarketConfig(seed=7, n_bars=N_BARS))


@pytest.fixture(scope="module")
def data(bars_1m: pd.DataFrame) -> EnvData:
    return EnvData.from_bars(bars_1m)


def _minute_bars(minutes: list[int], closes: list[float]) -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01T22:00:00Z") + pd.to_timedelta(minutes, unit="min")
    c = np.asarray(closes, dtype=float)
    return pd.DataFrame(
        {
            "open": c - 0.25,
            "high": c + 0.5,
            "low": c - 0.75,
            "close": c,
            "volume": np.arange(1.0, len(c) + 1),
        },
        index=pd.DatetimeIndex(ts, name="ts_event"),
    )


def test_aggregate_by_close_bucket_skips_gaps_and_drops_the_forming_bar() -> None:
    # 1-minute closes at 22:01..22:05 (bucket 22:05), 22:06, 22:09 (bucket 22:10), none in 22:15,
    # 22:16..22:17 (bucket 22:20, still forming at the end: dropped).
    bars = _minute_bars([1, 2, 3, 4, 5, 6, 9, 16, 17], [10, 11, 9, 12, 13, 14, 15, 16, 17])
    out = aggregate_bars(bars, 5)
    assert list(out.index) == [pd.Timestamp("2024-01-01T22:05Z"), pd.Timestamp("2024-01-01T22:10Z")]
    first, second = out.iloc[0], out.iloc[1]
    assert (first.open, first.high, first.low, first.close, first.volume) == (9.75, 13.5, 8.25, 13.0, 15.0)
    assert (second.open, second.high, second.low, second.close, second.volume) == (
        13.75,
        15.5,
        13.25,
        15.0,
        13.0,
    )
    # A bucket that is complete at the last bar (close exactly on its boundary) is kept.
    assert len(aggregate_bars(bars.iloc[:5], 5)) == 1


def test_align_strategic_hand_values() -> None:
    ts5 = np.array([5, 10, 25, 30, 35, 60, 65]) * 60_000_000_000
    ts30 = np.array([30, 60]) * 60_000_000_000
    assert align_strategic(ts5, ts30).tolist() == [-1, -1, -1, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="strictly increasing"):
        align_strategic(ts5[::-1], ts30)


def test_30_minute_alignment_is_causal(bars_1m: pd.DataFrame, data: EnvData) -> None:
    s = data.strategic_index
    assert (np.diff(s) >= 0).all()
    seen = s >= 0
    # The aligned 30-minute bar closed at or before the 5-minute close, and the next one after it.
    assert (data.strategic_ts[s[seen]] <= data.ts[seen]).all()
    nxt = s[seen] + 1
    has_next = nxt < data.strategic_ts.size
    assert (data.strategic_ts[nxt[has_next]] > data.ts[seen][has_next]).all()
    # Each 30-minute bar is made of 1-minute bars closing no later than its own stamp.
    bars30 = aggregate_bars(bars_1m, 30)
    assert np.array_equal(bars30.index.as_unit("ns").asi8, data.strategic_ts)
    t = int(np.flatnonzero(data.valid)[0])
    upto = bars_1m[bars_1m.index <= pd.Timestamp(data.strategic_ts[s[t]], tz="UTC")]
    assert bars30["close"].iloc[s[t]] == upto["close"].iloc[-1]


def test_episode_starts_fit_whole_valid_episodes(data: EnvData) -> None:
    starts = data.episode_starts(50)
    assert starts.size > 0
    for s in starts[:: max(1, starts.size // 20)]:
        assert data.valid[s : s + 51].all()
    reference = [s for s in range(len(data) - 50) if data.valid[s : s + 51].all()]
    assert starts.tolist() == reference
    with pytest.raises(EnvDataError, match="consecutive"):
        data.episode_starts(len(data))


def test_regime_label_is_that_of_the_last_minute(bars_1m: pd.DataFrame, data: EnvData) -> None:
    for t in (0, 100, len(data) - 1):
        upto = bars_1m[bars_1m.index <= pd.Timestamp(data.ts[t], tz="UTC")]
        assert data.regime[t] == upto["regime"].iloc[-1]


def test_valid_observations_are_complete(data: EnvData) -> None:
    valid = np.flatnonzero(data.valid)
    assert valid.size > 300
    for t in valid[:: max(1, valid.size // 25)]:
        assert np.isfinite(data.tactical_window(int(t))).all()
        assert np.isfinite(data.strategic_window(int(t))).all()
        assert data.tactical_window(int(t)).shape == (60, 7)
        assert data.strategic_window(int(t)).shape == (48, 13)
    first = int(valid[0])
    assert not np.isfinite(data.strategic_rows[data.strategic_index[first] - 48]).all()  # just warmed up


def test_no_observation_depends_on_later_data(bars_1m: pd.DataFrame, data: EnvData) -> None:
    valid = np.flatnonzero(data.valid)
    t = int(valid[valid.size // 2])
    cut = pd.Timestamp(data.ts[t], tz="UTC")
    rng = np.random.default_rng(0)
    later = bars_1m.index > cut
    perturbed = bars_1m.copy()
    scale = np.exp(rng.normal(0.0, 0.02, size=int(later.sum())))
    for col in ("open", "high", "low", "close"):
        perturbed.loc[later, col] = bars_1m.loc[later, col].to_numpy() * scale
    perturbed.loc[later, "volume"] = bars_1m.loc[later, "volume"].to_numpy()[::-1]
    other = EnvData.from_bars(perturbed)
    assert not np.array_equal(other.close[t + 1 :], data.close[t + 1 :])  # the future really changed
    s = int(data.strategic_index[t])
    assert np.array_equal(other.tactical_rows[: t + 1], data.tactical_rows[: t + 1], equal_nan=True)
    assert np.array_equal(other.strategic_rows[: s + 1], data.strategic_rows[: s + 1], equal_nan=True)
    assert np.array_equal(other.atr[: t + 1], data.atr[: t + 1], equal_nan=True)
    assert np.array_equal(other.close[: t + 1], data.close[: t + 1])
    assert np.array_equal(other.valid[: t + 1], data.valid[: t + 1])

    # Through the environment: same starts, same actions -> identical observations while t_index <= t.
    config = EnvConfig(episode_len=40)
    envs = [VecMarketEnv(d, config, n_envs=4, seed=3) for d in (data, other)]
    starts = np.array([t - 30, t - 20, t - 5, t], dtype=np.int64)
    obs = [e.reset_at(starts) for e in envs]
    rng = np.random.default_rng(1)
    compared = 0
    for _ in range(31):
        now = obs[0].t_index
        mask = now <= t
        assert np.array_equal(obs[1].t_index, now)
        for name in ("tactical", "strategic", "account", "joint"):
            a, b = getattr(obs[0], name)[mask], getattr(obs[1], name)[mask]
            assert np.array_equal(a, b), name
        compared += int(mask.sum())
        actions = rng.integers(0, 5, size=(4, 5))
        obs = [e.step(actions)[0] for e in envs]
    assert compared == 31 + 21 + 6 + 1


def test_bad_input_is_rejected_with_a_clear_error(bars_1m: pd.DataFrame) -> None:
    small = bars_1m.iloc[:3000].drop(columns="regime")
    with pytest.raises(EnvDataError, match="longer history"):
        EnvData.from_bars(small)
    naive = small.copy()
    naive.index = naive.index.tz_localize(None)
    with pytest.raises(EnvDataError, match="timezone-naive"):
        EnvData.from_bars(naive)
    shifted = small.copy()
    shifted.index = shifted.index + pd.Timedelta(seconds=30)
    with pytest.raises(EnvDataError, match="minute grid"):
        EnvData.from_bars(shifted)
    broken = small.copy()
    broken.iloc[10, broken.columns.get_loc("high")] = broken["low"].iloc[10] - 1.0
    with pytest.raises(EnvDataError, match="invalid bar"):
        EnvData.from_bars(broken)


def test_from_catalog_equals_from_bars(tmp_path, bars_1m: pd.DataFrame, data: EnvData) -> None:
    config = SyntheticMarketConfig(seed=7, n_bars=N_BARS)
    write_synthetic_catalog(tmp_path, config)
    loaded = EnvData.from_catalog(tmp_path, str(synthetic_bar_type(config)))
    for name in ("ts", "close", "open", "atr", "strategic_index", "valid", "regime"):
        assert np.array_equal(getattr(loaded, name), getattr(data, name), equal_nan=True), name
    assert np.array_equal(loaded.tactical_rows, data.tactical_rows, equal_nan=True)
    assert np.array_equal(loaded.strategic_rows, data.strategic_rows, equal_nan=True)


def test_sample_catalog_es_is_too_short_for_a_strategic_window(sample_catalog) -> None:
    # The bundled ES sample has ~2 days of 1-minute bars; 48 warm 30-minute rows need ~13 days.
    with pytest.raises(EnvDataError, match="30-minute bars"):
        EnvData.from_catalog(sample_catalog, ES_BAR_TYPE)
