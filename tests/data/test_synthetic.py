"""Tests for the synthetic regime-switching market (``sage.data.synthetic``).

Statistical tolerances are stated next to each check and derived from sampling error: an estimate must
lie within 5 standard errors of the configured value (a false failure has probability < 1e-6 per check
for a fresh seed; the seeds are fixed, so the tests are deterministic anyway).
"""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nautilus_trader.model.instruments import FuturesContract
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from sage.data.regimes import N_REGIMES, REGIME_NAMES, Regime
from sage.data.synthetic import (
    MIN_BAR_VOLUME,
    RegimeParams,
    SyntheticMarketConfig,
    bar_log_returns,
    expected_mean_durations,
    generate_bars,
    generate_trades,
    read_truth,
    read_truth_config,
    regime_statistics,
    stationary_distribution,
    synthetic_bar_type,
    synthetic_instrument,
    truth_path,
    write_synthetic_catalog,
)

Z = 5.0  # tolerance in standard errors
N_STATS = 500_000


@pytest.fixture(scope="module")
def big() -> tuple[SyntheticMarketConfig, pd.DataFrame]:
    config = SyntheticMarketConfig(seed=7, n_bars=N_STATS)
    return config, generate_bars(config)


@pytest.fixture(scope="module")
def small() -> tuple[SyntheticMarketConfig, pd.DataFrame, pd.DataFrame]:
    config = SyntheticMarketConfig(seed=11, n_bars=5_000)
    bars = generate_bars(config)
    return config, bars, generate_trades(config, bars)


def _runs(regimes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, length, regime) of each complete run (the first and last runs are cut off: dropped)."""
    change = np.flatnonzero(regimes[1:] != regimes[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [regimes.size]]))
    return starts[1:-1], lengths[1:-1], regimes[starts][1:-1]


def assert_bars_consistent(bars: pd.DataFrame, config: SyntheticMarketConfig) -> None:
    o, h, lo, c, v = (bars[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    assert len(bars) == config.n_bars
    assert (h >= np.maximum(o, c)).all() and (lo <= np.minimum(o, c)).all() and (h >= lo).all()
    assert (lo >= config.price_tick).all(), "prices must stay >= one tick"
    for arr in (o, h, lo, c):
        steps = arr / config.price_tick
        assert np.abs(steps - np.rint(steps)).max() < 1e-6, "price off the tick grid"
        assert (np.round(arr, config.price_precision) == arr).all(), "price not clean at its precision"
    assert (o[1:] == c[:-1]).all(), "continuous market: open = previous close"
    assert (v >= MIN_BAR_VOLUME).all() and (v == np.rint(v)).all()
    assert bars["regime"].dtype == np.int8 and bars["regime"].between(0, N_REGIMES - 1).all()
    idx = bars.index
    assert isinstance(idx, pd.DatetimeIndex) and str(idx.tz) == "UTC"
    assert idx[0].value == config.start_ns + config.bar_interval_ns
    assert (np.diff(idx.asi8) == config.bar_interval_ns).all()


def assert_trades_consistent(trades: pd.DataFrame, bars: pd.DataFrame, config: SyntheticMarketConfig) -> None:
    ts = trades.index.asi8
    close_ns = bars.index.asi8
    assert (np.diff(ts) >= 0).all(), "trades must be time-sorted"
    bar = np.searchsorted(close_ns, ts, side="right")  # ts in (open_ns, close_ns) -> that bar
    assert (ts < close_ns[bar]).all() and (ts > close_ns[bar] - config.bar_interval_ns).all()
    g = trades.assign(bar=bar).groupby("bar")
    assert len(g) == len(bars), "every bar has trades"
    np.testing.assert_array_equal(g["price"].first().to_numpy(), bars["open"].to_numpy())
    np.testing.assert_array_equal(g["price"].last().to_numpy(), bars["close"].to_numpy())
    np.testing.assert_array_equal(g["price"].max().to_numpy(), bars["high"].to_numpy())
    np.testing.assert_array_equal(g["price"].min().to_numpy(), bars["low"].to_numpy())
    np.testing.assert_array_equal(g["size"].sum().to_numpy(), bars["volume"].to_numpy())
    np.testing.assert_array_equal(g["regime"].first().to_numpy(), bars["regime"].to_numpy())
    assert (g["regime"].nunique() == 1).all()
    counts = g.size().to_numpy()
    np.testing.assert_array_equal(counts, np.minimum(bars["volume"].to_numpy(), config.trades_per_bar))
    size = trades["size"].to_numpy()
    assert (size >= 1).all() and (size == np.rint(size)).all()
    steps = trades["price"].to_numpy() / config.price_tick
    assert np.abs(steps - np.rint(steps)).max() < 1e-6
    side = trades["aggressor_side"].to_numpy()
    assert set(np.unique(side)) <= {1, 2}
    px = trades["price"].to_numpy()
    assert (side[1:][px[1:] > px[:-1]] == 1).all() and (side[1:][px[1:] < px[:-1]] == 2).all()


# -- Determinism --------------------------------------------------------------------------------------------


def test_same_seed_identical_and_different_seed_differs() -> None:
    config = SyntheticMarketConfig(seed=3, n_bars=20_000)
    a, b = generate_bars(config), generate_bars(config)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for col in a.columns:
        assert a[col].to_numpy().tobytes() == b[col].to_numpy().tobytes()
    ta, tb = generate_trades(config, a), generate_trades(config)
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)

    other = msgspec.structs.replace(config, seed=4)
    c, tc = generate_bars(other), generate_trades(other)
    assert not np.array_equal(a["close"].to_numpy(), c["close"].to_numpy())
    assert not np.array_equal(a["regime"].to_numpy(), c["regime"].to_numpy())
    assert len(ta) != len(tc) or not np.array_equal(ta["price"].to_numpy(), tc["price"].to_numpy())


def test_longer_market_extends_shorter_one() -> None:
    short = SyntheticMarketConfig(seed=5, n_bars=3_000)
    long = msgspec.structs.replace(short, n_bars=7_000)
    bs, bl = generate_bars(short), generate_bars(long)
    pd.testing.assert_frame_equal(bs, bl.iloc[:3_000], check_exact=True, check_freq=False)
    ts, tl = generate_trades(short, bs), generate_trades(long, bl)
    pd.testing.assert_frame_equal(ts, tl.iloc[: len(ts)], check_exact=True)


# -- Bar and tick well-formedness ---------------------------------------------------------------------------


def test_bars_are_consistent(big: tuple[SyntheticMarketConfig, pd.DataFrame]) -> None:
    config, bars = big
    assert_bars_consistent(bars, config)
    assert list(bars.columns) == ["open", "high", "low", "close", "volume", "regime"]
    assert bars["open"].iloc[0] == config.initial_price
    # Wicks exist and scale with the regime volatility (VOLATILE ranges ~4x BULL's: 1.2e-3 vs 4e-4).
    rel_range = ((bars["high"] - bars["low"]) / bars["close"]).groupby(bars["regime"]).mean()
    assert rel_range[Regime.VOLATILE] > 2.5 * rel_range[Regime.BULL] > 0


def test_trades_consistent_with_bars(small: tuple[SyntheticMarketConfig, pd.DataFrame, pd.DataFrame]) -> None:
    config, bars, trades = small
    assert list(trades.columns) == ["price", "size", "aggressor_side", "regime"]
    assert trades["regime"].dtype == np.int8 and trades["aggressor_side"].dtype == np.uint8
    assert_trades_consistent(trades, bars, config)


def test_trades_on_minimum_volume_bars() -> None:
    """Bars whose volume is below trades_per_bar get exactly `volume` trades of size 1."""
    config = SyntheticMarketConfig(seed=2, n_bars=300, trades_per_bar=10)
    bars = generate_bars(config)
    bars["volume"] = np.resize(np.array([4.0, 5.0, 9.0, 10.0, 11.0, 500.0]), len(bars))
    trades = generate_trades(config, bars)
    assert_trades_consistent(trades, bars, config)
    bars.iloc[0, bars.columns.get_loc("volume")] = 3.0
    with pytest.raises(ValueError, match="whole numbers >= 4"):
        generate_trades(config, bars)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    n_bars=st.integers(1, 400),
    drift=st.floats(-2e-3, 2e-3),
    vol=st.floats(1e-5, 5e-2),
    volume_mean=st.floats(1.0, 5_000.0),
    tick=st.sampled_from([0.01, 0.1, 0.25, 1.0, 5.0]),
    price=st.floats(10.0, 1e5),
    trades_per_bar=st.integers(4, 12),
    reversion=st.floats(0.0, 0.5),
    level_half_life=st.one_of(st.none(), st.floats(1.0, 1e6)),
)
def test_well_formed_for_any_parameters(
    seed: int,
    n_bars: int,
    drift: float,
    vol: float,
    volume_mean: float,
    tick: float,
    price: float,
    trades_per_bar: int,
    reversion: float,
    level_half_life: float | None,
) -> None:
    regime = RegimeParams(
        drift=drift, volatility=vol, volume_mean=volume_mean, mean_duration=20.0, mean_reversion=reversion
    )
    config = SyntheticMarketConfig(
        seed=seed,
        n_bars=n_bars,
        initial_price=max(price, tick),
        price_tick=tick,
        bull=regime,
        volatile=msgspec.structs.replace(regime, volatility=3 * vol),
        trades_per_bar=trades_per_bar,
        level_half_life=level_half_life,
    )
    bars = generate_bars(config)
    assert_bars_consistent(bars, config)
    assert_trades_consistent(generate_trades(config, bars), bars, config)


# -- Regime statistics match the configuration ----------------------------------------------------------


def test_transition_matrix_and_durations_match_config(
    big: tuple[SyntheticMarketConfig, pd.DataFrame],
) -> None:
    config, bars = big
    regimes = bars["regime"].to_numpy()
    stats = regime_statistics(regimes, bar_log_returns(bars), bars["volume"].to_numpy())
    p = config.transitions()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(np.diag(p), [1 - 1 / 480, 1 - 1 / 360, 1 - 1 / 600, 1 - 1 / 120])

    # Transitions out of regime i are iid categorical(P[i]) given n_i visits: SE = sqrt(p (1 - p) / n_i).
    n_from = stats["transition_counts"].sum(axis=1, keepdims=True)
    se = np.sqrt(p * (1 - p) / n_from)
    assert (np.abs(stats["transition_matrix"] - p) <= Z * se).all(), (stats["transition_matrix"], p)

    # Complete runs are iid geometric with mean D, variance D (D - 1): SE = sqrt(D (D - 1) / runs).
    d = expected_mean_durations(p)
    se_d = np.sqrt(d * (d - 1) / stats["n_runs"])
    assert (np.abs(stats["mean_duration"] - d) <= Z * se_d).all(), (stats["mean_duration"], d)

    # Share of bars: a persistent chain has ~n / (2 D) effectively independent samples, so
    # SE ~ sqrt(pi (1 - pi) 2 D / n) (about 0.02 here: occupancy is only loosely pinned by 500k bars).
    pi = stationary_distribution(p)
    np.testing.assert_allclose(pi, np.array([480, 360, 600, 120]) / 1560)
    se_pi = np.sqrt(pi * (1 - pi) * 2 * d / len(regimes))
    assert (np.abs(stats["frequency"] - pi) <= Z * se_pi).all(), (stats["frequency"], pi)


def test_returns_and_volume_match_config(big: tuple[SyntheticMarketConfig, pd.DataFrame]) -> None:
    config, bars = big
    regimes = bars["regime"].to_numpy()
    returns = bar_log_returns(bars)
    stats = regime_statistics(regimes, returns, bars["volume"].to_numpy())
    n = stats["bars_per_regime"]
    close = bars["close"].to_numpy()
    # The model's conditional mean of bar t's return given the bar's open x = log(open_t):
    # drift - k_regime (x - run anchor) - k_level (x - log(initial_price)); the anchor is the run's first open.
    log_open = np.log(bars["open"].to_numpy())
    run_start = np.maximum.accumulate(
        np.where(np.r_[True, regimes[1:] != regimes[:-1]], np.arange(len(regimes)), 0)
    )
    k_level = np.log(2) / config.level_half_life
    for r in Regime:
        params = config.regimes[r]
        sigma = params.volatility
        # Rounding closes to the tick adds (e_t - e_t-1) / price with e ~ U(+-tick/2): variance tick^2 / (6 p^2).
        rounding_var = np.mean(config.price_tick**2 / (6 * close[regimes == r] ** 2))
        # Anchored mean reversion k inflates the stationary return variance by at most 2 / (2 - k).
        lo_var = sigma**2 + rounding_var
        hi_var = sigma**2 * 2 / (2 - params.mean_reversion) + rounding_var
        se_std = np.sqrt(hi_var) / np.sqrt(2 * n[r])  # SE of a normal sample std
        std = stats["return_std"][r]
        assert np.sqrt(lo_var) - Z * se_std <= std <= np.sqrt(hi_var) + Z * se_std, (r.name, std, sigma)

        # Mean log return per bar: shocks are iid, so around the conditional mean the SE is sigma / sqrt(n).
        sel = regimes == r
        pull = params.mean_reversion * (log_open - log_open[run_start]) + k_level * (
            log_open - np.log(config.initial_price)
        )
        expected_mean = params.drift - pull[sel].mean()
        assert abs(expected_mean - params.drift) < 0.2 * max(abs(params.drift), 1e-5), "pull is a small term"
        se_mean = np.sqrt(hi_var / n[r])
        assert abs(stats["return_mean"][r] - expected_mean) <= Z * se_mean, (r.name, stats["return_mean"][r])

        # Volume is lognormal with mean volume_mean: SE = mean sqrt(exp(s^2) - 1) / sqrt(n).
        s = config.volume_dispersion
        se_v = params.volume_mean * np.sqrt(np.expm1(s * s) / n[r])
        assert abs(stats["volume_mean"][r] - params.volume_mean) <= Z * se_v, (
            r.name,
            stats["volume_mean"][r],
        )

    assert stats["return_mean"][Regime.BULL] > 0 > stats["return_mean"][Regime.BEAR]
    assert stats["volume_mean"][Regime.VOLATILE] == max(stats["volume_mean"])


def test_trends_persist_and_sideways_reverts(big: tuple[SyntheticMarketConfig, pd.DataFrame]) -> None:
    """The regimes carry the structure models must learn: trending runs go their way, ranges revert."""
    config, bars = big
    regimes = bars["regime"].to_numpy()
    logc = np.log(bars["close"].to_numpy())
    logo = np.log(bars["open"].to_numpy())
    starts, lengths, which = _runs(regimes)
    net = logc[starts + lengths - 1] - logo[starts]

    # A full-length BULL run (>= 480 bars) drifts +1.44 % against noise of 0.88 %: P(up) ~ Phi(1.6) = 0.95;
    # BEAR (>= 360 bars) P(down) ~ Phi(1.26) = 0.90. Thresholds 0.85 / 0.80 sit > 5 SE (~0.015) below.
    bull = (which == Regime.BULL) & (lengths >= 480)
    bear = (which == Regime.BEAR) & (lengths >= 360)
    assert bull.sum() > 100 and bear.sum() > 100
    assert (net[bull] > 0).mean() > 0.85
    assert (net[bear] < 0).mean() > 0.80

    # Normalised squared net move over long runs: E = 1 for a random walk (BULL, after removing drift),
    # but <= 1 / (k (2 - k) L) ~ 0.13 for SIDEWAYS (k = 0.02, L >= 200). Mean of m chi2(1): SE sqrt(2 / m).
    long_ = lengths >= 200
    for regime, expected_max in ((Regime.SIDEWAYS, 0.2), (Regime.BULL, None)):
        params = config.regimes[regime]
        sel = long_ & (which == regime)
        m = int(sel.sum())
        z2 = (net[sel] - params.drift * lengths[sel]) ** 2 / (params.volatility**2 * lengths[sel])
        if expected_max is None:
            assert abs(z2.mean() - 1.0) <= Z * np.sqrt(2 / m) + 0.05, z2.mean()
        else:
            assert z2.mean() < expected_max, z2.mean()


def test_level_anchor_keeps_long_markets_in_range() -> None:
    """The weak pull to the initial price stops a million-bar market wandering off by e^+-2."""
    free = SyntheticMarketConfig(seed=1, n_bars=1_000_000, level_half_life=None)
    anchored = msgspec.structs.replace(free, level_half_life=100_000.0)
    dev_free = np.log(generate_bars(free)["close"].to_numpy() / free.initial_price)
    dev_anchored = np.log(generate_bars(anchored)["close"].to_numpy() / free.initial_price)
    assert np.abs(dev_free).max() > 2.0  # this seed's random walk falls from 4000 to below 550
    assert np.abs(dev_anchored).max() < 1.1
    assert np.sqrt(np.mean(dev_anchored**2)) < 0.5 * np.sqrt(np.mean(dev_free**2))


def test_explicit_transition_matrix() -> None:
    """A given matrix is used verbatim: forbidden transitions never happen, allowed ones match."""
    matrix = (
        (0.99, 0.0, 0.0, 0.01),
        (0.0, 0.98, 0.02, 0.0),
        (0.005, 0.0, 0.99, 0.005),
        (0.0, 0.05, 0.0, 0.95),
    )
    config = SyntheticMarketConfig(
        seed=1, n_bars=200_000, transition_matrix=matrix, initial_regime=Regime.BEAR
    )
    bars = generate_bars(config)
    assert bars["regime"].iloc[0] == Regime.BEAR
    stats = regime_statistics(bars["regime"].to_numpy(), bar_log_returns(bars))
    p = np.array(matrix)
    assert (stats["transition_counts"][p == 0.0] == 0).all()
    se = np.sqrt(p * (1 - p) / stats["transition_counts"].sum(axis=1, keepdims=True))
    assert (np.abs(stats["transition_matrix"] - p) <= Z * se).all()


def test_regime_statistics_small_example() -> None:
    regimes = np.array([0, 0, 1, 1, 1, 0, 2, 2, 3])
    returns = np.array([0.1, 0.3, -0.1, -0.2, np.nan, 0.2, 0.0, 0.0, 1.0])
    stats = regime_statistics(regimes, returns, volumes=np.arange(9.0))
    np.testing.assert_array_equal(stats["bars_per_regime"], [3, 3, 2, 1])
    assert stats["transition_counts"][0, 0] == 1 and stats["transition_counts"][0, 1] == 1
    np.testing.assert_allclose(stats["transition_matrix"][1], [1 / 3, 2 / 3, 0, 0])
    assert np.isnan(stats["transition_matrix"][3]).all()  # never left regime 3
    # complete runs: [1,1,1], [0], [2,2] (the first [0,0] and last [3] are censored)
    np.testing.assert_array_equal(stats["n_runs"], [1, 1, 1, 0])
    np.testing.assert_allclose(stats["mean_duration"][:3], [1, 3, 2])
    np.testing.assert_allclose(stats["return_mean"][:2], [0.2, -0.15])
    np.testing.assert_allclose(stats["return_std"][0], 0.1)
    np.testing.assert_allclose(stats["volume_mean"], [(0 + 1 + 5) / 3, 3, 6.5, 8])
    with pytest.raises(ValueError, match="equal length"):
        regime_statistics(regimes, returns[:-1])


# -- Catalog ------------------------------------------------------------------------------------------------


def _frame_from_bars(bars: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "open": [b.open.as_double() for b in bars],
            "high": [b.high.as_double() for b in bars],
            "low": [b.low.as_double() for b in bars],
            "close": [b.close.as_double() for b in bars],
            "volume": [b.volume.as_double() for b in bars],
        },
        index=pd.DatetimeIndex(
            np.array([b.ts_event for b in bars], dtype="datetime64[ns]"), name="ts_event"
        ).tz_localize("UTC"),
    )


def test_catalog_round_trip(tmp_path) -> None:
    config = SyntheticMarketConfig(seed=9, n_bars=2_000, start="2023-03-01 09:30")
    summary = write_synthetic_catalog(tmp_path, config, with_ticks=True)
    bar_type = "SYN.SIM-1-MINUTE-LAST-EXTERNAL"
    assert summary["bar_type"] == bar_type and summary["n_bars"] == 2_000
    assert summary["instrument_id"] == "SYN.SIM"
    assert summary["truth_path"] == str(truth_path(tmp_path, bar_type))
    assert abs(sum(summary["regime_frequencies"].values()) - 1.0) < 1e-12
    assert set(summary["regime_frequencies"]) == set(REGIME_NAMES)

    expected = generate_bars(config)
    trades = generate_trades(config, expected)
    assert summary["n_trades"] == len(trades)

    catalog = ParquetDataCatalog(str(tmp_path))
    got = _frame_from_bars(catalog.bars(bar_types=[bar_type]))
    pd.testing.assert_frame_equal(got, expected.drop(columns="regime"), check_exact=True, check_freq=False)

    ticks = catalog.trade_ticks(instrument_ids=["SYN.SIM"])
    assert len(ticks) == len(trades)
    np.testing.assert_array_equal([t.price.as_double() for t in ticks], trades["price"].to_numpy())
    np.testing.assert_array_equal([t.size.as_double() for t in ticks], trades["size"].to_numpy())
    np.testing.assert_array_equal([t.ts_event for t in ticks], trades.index.asi8)
    np.testing.assert_array_equal([int(t.aggressor_side) for t in ticks], trades["aggressor_side"].to_numpy())

    (instrument,) = catalog.instruments()
    assert isinstance(instrument, FuturesContract)
    assert instrument.price_precision == 2 and float(instrument.price_increment) == 0.25
    assert instrument.expiration_ns > config.end_ns

    truth = read_truth(tmp_path, bar_type)
    assert truth.dtype == np.int8 and truth.name == "regime"
    pd.testing.assert_series_equal(truth, expected["regime"], check_freq=False)
    assert read_truth_config(tmp_path, bar_type) == config

    # A second write must not silently mix two generations; overwrite replaces everything.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_synthetic_catalog(tmp_path, config)
    smaller = msgspec.structs.replace(config, n_bars=500, seed=10, start="2023-04-01")
    write_synthetic_catalog(tmp_path, smaller, overwrite=True)
    (instrument,) = ParquetDataCatalog(str(tmp_path)).instruments()
    assert instrument.activation_ns == smaller.start_ns
    got = _frame_from_bars(ParquetDataCatalog(str(tmp_path)).bars(bar_types=[bar_type]))
    pd.testing.assert_frame_equal(
        got, generate_bars(smaller).drop(columns="regime"), check_exact=True, check_freq=False
    )
    assert ParquetDataCatalog(str(tmp_path)).trade_ticks(instrument_ids=["SYN.SIM"]) == []
    assert len(read_truth(tmp_path, bar_type)) == 500
    assert not list(truth_path(tmp_path, bar_type).parent.glob("*.tmp"))


def test_catalog_rejects_mismatched_instrument(tmp_path) -> None:
    config = SyntheticMarketConfig(n_bars=10)
    wrong = synthetic_instrument(msgspec.structs.replace(config, price_tick=0.01))
    with pytest.raises(ValueError, match="price_tick"):
        write_synthetic_catalog(tmp_path, config, instrument=wrong)
    with pytest.raises(FileNotFoundError, match="no regime truth"):
        read_truth(tmp_path, "SYN.SIM-1-MINUTE-LAST-EXTERNAL")


def test_bar_type_follows_interval() -> None:
    assert str(synthetic_bar_type(SyntheticMarketConfig())) == "SYN.SIM-1-MINUTE-LAST-EXTERNAL"
    assert str(synthetic_bar_type(SyntheticMarketConfig(bar_interval_ns=5 * 60_000_000_000))) == (
        "SYN.SIM-5-MINUTE-LAST-EXTERNAL"
    )
    assert str(synthetic_bar_type(SyntheticMarketConfig(bar_interval_ns=3_600_000_000_000))) == (
        "SYN.SIM-1-HOUR-LAST-EXTERNAL"
    )
    assert str(synthetic_bar_type(SyntheticMarketConfig(bar_interval_ns=1_500_000_000))) == (
        "SYN.SIM-1500-MILLISECOND-LAST-EXTERNAL"
    )


# -- Validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"transition_matrix": ((0.9, 0.1, 0, 0),) * 3}, "must be 4x4"),
        ({"transition_matrix": ((0.9, 0.05, 0, 0),) + ((0.25,) * 4,) * 3}, "row BULL sums to"),
        ({"transition_matrix": ((1.1, -0.1, 0, 0),) + ((0.25,) * 4,) * 3}, "must be >= 0.*BULL->BEAR"),
        ({"transition_matrix": ((float("nan"), 1, 0, 0),) + ((0.25,) * 4,) * 3}, "non-finite"),
        ({"n_bars": 0}, "n_bars must be >= 1"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"start": "not a date"}, "ISO-8601"),
        ({"bar_interval_ns": 1_500}, "whole number of milliseconds"),
        ({"price_tick": 0.0}, "price_tick must be > 0"),
        ({"price_tick": 1e-12}, "more than 9 decimals"),
        ({"initial_price": 0.1}, "initial_price must be >= price_tick"),
        ({"initial_regime": 4}, "initial_regime"),
        ({"trades_per_bar": 3}, "trades_per_bar must be >= 4"),
        ({"volume_dispersion": -1.0}, "volume_dispersion"),
        ({"level_half_life": 0.5}, "level_half_life must be >= 1"),
        ({"instrument_id": "NOVENUE"}, "SYMBOL.VENUE"),
    ],
)
def test_invalid_config_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticMarketConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volatility": 0.0}, "volatility must be > 0"),
        ({"mean_duration": 0.5}, "mean_duration must be >= 1"),
        ({"mean_reversion": 1.0}, r"mean_reversion must be in \[0, 1\)"),
        ({"volume_mean": 0.0}, "volume_mean must be >= 1"),
        ({"drift": float("inf")}, "drift must be finite"),
    ],
)
def test_invalid_regime_params_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RegimeParams(**kwargs)


def test_config_json_round_trip_validates() -> None:
    config = SyntheticMarketConfig(
        seed=1, start=1_700_000_000_000_000_000, transition_matrix=((0.25,) * 4,) * 4
    )
    assert SyntheticMarketConfig.from_json(config.to_json()) == config
    raw = msgspec.json.decode(config.to_json())
    raw["transition_matrix"][0] = [0.3, 0.25, 0.25, 0.25]
    bad = msgspec.json.encode(raw)
    with pytest.raises(msgspec.ValidationError, match="sums to"):
        SyntheticMarketConfig.from_json(bad)


def test_start_parsing() -> None:
    assert SyntheticMarketConfig(start="2024-01-01").start_ns == pd.Timestamp("2024-01-01", tz="UTC").value
    assert SyntheticMarketConfig(start="2024-01-01T01:00:00+01:00").start_ns == (
        pd.Timestamp("2024-01-01", tz="UTC").value
    )
    assert SyntheticMarketConfig(start=123_000_000_000).start_ns == 123_000_000_000


# -- Speed (reported, not asserted) -------------------------------------------------------------------------


def test_report_million_bar_generation_time() -> None:
    config = SyntheticMarketConfig(seed=0, n_bars=1_000_000)
    generate_bars(SyntheticMarketConfig(n_bars=10))  # JIT / cache load outside the timing
    t0 = time.perf_counter()
    bars = generate_bars(config)
    elapsed = time.perf_counter() - t0
    assert len(bars) == 1_000_000
    print(f"\ngenerate_bars: 1,000,000 bars in {elapsed:.2f} s")
