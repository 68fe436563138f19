"""The selector's array fast path gives exactly what the public candidate table gives.

``AlgorithmSelector.select`` prices candidates as arrays (no DataFrame) and reads volume profiles in one
vectorised pass. These tests hold it to the slow, obvious definition: build the public
:func:`~sage.execution.selector.price_candidates` table (with weights asked of the profile minute by minute)
and pick from it with pandas - ``_argmin``'s tolerance rule for the winner, ``groupby(sort=False).idxmin()``
per algorithm - then demand equality of every field of the :class:`Selection`, floats bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pytest

from sage.execution import selector as selector_module
from sage.execution.impact import ImpactParams, MarketStats
from sage.execution.selector import (
    ALGORITHMS,
    AlgorithmSelector,
    Selection,
    SelectorConfig,
    price_candidates,
    profile_weights,
)
from sage.execution.volume_profile import VolumeProfile

NS_PER_MINUTE = 60_000_000_000
CASES = 400


# -- The reference: the public table, picked from with pandas ---------------------------------------------------


def weights_minute_by_minute(profile: Any, start_ns: int, minutes: int) -> np.ndarray:
    """The VolumeWeights protocol, asked one minute at a time (the definition of the weights)."""
    return np.array(
        [
            profile.fraction_between(start_ns + m * NS_PER_MINUTE, start_ns + (m + 1) * NS_PER_MINUTE)
            for m in range(minutes)
        ]
    )


def reference_select(
    selector: AlgorithmSelector,
    side: str,
    qty: float,
    stats: MarketStats,
    urgency: float,
    tick_size: float | None,
    profile: Any,
    size_increment: float,
) -> Selection:
    cfg = selector.config
    weights = None
    if profile is not None:
        minutes = math.ceil(max(cfg.horizons_secs) / 60.0 - 1e-9)
        weights = weights_minute_by_minute(profile, stats.ts_ns, minutes)
    table = price_candidates(qty, stats, urgency, cfg, tick_size, weights)
    scores = table["score_bps"].to_numpy()
    finite = np.where(np.isfinite(scores), scores, np.inf)
    if not math.isfinite(float(finite.min())):
        raise ValueError("no candidate has a finite score")
    best = int(np.flatnonzero(finite <= float(finite.min()) + 1e-9)[0])
    row = table.iloc[best]
    per_algo = table.loc[table.groupby("algorithm_id", sort=False)["score_bps"].idxmin()]
    algo = str(row["algorithm_id"])
    horizon = float(row["horizon_secs"])
    limit_price = None
    if algo == "ICEBERG":
        offset = cfg.passive_offset_ticks * tick_size
        limit_price = stats.price - offset if side == "BUY" else stats.price + offset
        limit_price = round(round(limit_price / tick_size) * tick_size, 10)
    return Selection(
        algorithm_id=algo,
        params=selector.params_for(algo, horizon, qty, stats, size_increment),
        horizon_secs=horizon,
        order_type="LIMIT" if algo == "ICEBERG" else "MARKET",
        limit_price=limit_price,
        expected_cost_bps=float(row["cost_bps"]),
        risk_bps=float(row["risk_bps"]),
        score_bps=float(row["score_bps"]),
        per_algorithm_costs={str(r.algorithm_id): float(r.score_bps) for r in per_algo.itertuples()},
        per_algorithm_horizons={str(r.algorithm_id): float(r.horizon_secs) for r in per_algo.itertuples()},
    )


def assert_identical(got: Selection, want: Selection, context: str) -> None:
    """Every field equal; floats compared with ``==`` (no tolerance); dict keys in the same order."""
    for field in Selection.__struct_fields__:
        a, b = getattr(got, field), getattr(want, field)
        assert type(a) is type(b), (context, field, a, b)
        if isinstance(a, dict):
            assert list(a.items()) == list(b.items()), (context, field, a, b)
            assert all(type(a[k]) is type(b[k]) for k in a), (context, field, a, b)
        else:
            assert a == b, (context, field, a, b)


# -- Random inputs ------------------------------------------------------------------------------------------------


def random_profile(rng: np.random.Generator) -> VolumeProfile:
    bucket = int(rng.choice([15, 30, 60]))
    n = 1440 // bucket
    fractions = rng.gamma(0.7, 1.0, n)
    fractions[rng.integers(0, n, size=3)] = 0.0  # dead buckets (weights of zero)
    fractions /= fractions.sum()
    tz = str(rng.choice(["UTC", "UTC", "America/Chicago", "Asia/Kolkata"]))
    return VolumeProfile(fractions=tuple(float(f) for f in fractions), bucket_minutes=bucket, tz=tz)


def random_case(rng: np.random.Generator) -> dict[str, Any]:
    vpm = float(10 ** rng.uniform(0.0, 4.0))
    minute = int(rng.integers(1_500_000_000 // 60, 1_800_000_000 // 60))
    ts_ns = minute * NS_PER_MINUTE + (0 if rng.random() < 0.4 else int(rng.integers(1, NS_PER_MINUTE)))
    stats = MarketStats(
        price=float(rng.uniform(5.0, 5000.0)),
        volume_per_min=vpm,
        sigma_per_min=0.0 if rng.random() < 0.05 else float(10 ** rng.uniform(-5.0, -2.5)),
        half_spread_bps=0.0 if rng.random() < 0.2 else float(rng.uniform(0.0, 5.0)),
        ts_ns=ts_ns,
    )
    qty = float(vpm * 10 ** rng.uniform(-3.0, 2.5))
    if rng.random() < 0.5:
        qty = float(max(1.0, round(qty)))
    urgency = float(rng.choice([0.0, 0.5, 1.0, rng.uniform(), rng.uniform(), rng.uniform()]))
    if rng.random() < 0.6:
        algorithms = ALGORITHMS
    else:  # restricted, reordered, occasionally repeated
        k = int(rng.integers(1, len(ALGORITHMS) + 1))
        algorithms = tuple(str(a) for a in rng.choice(ALGORITHMS, size=k, replace=rng.random() < 0.15))
    horizons = tuple(
        float(h)
        for h in rng.choice(
            [30.0, 60.0, 90.0, 120.0, 300.0, 450.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0],
            size=int(rng.integers(1, 7)),
        )
    )
    config = SelectorConfig(
        impact=ImpactParams(
            Y=float(rng.uniform(0.3, 1.5)),
            exponent=float(rng.choice([0.5, 0.6, 1.0])),
            min_horizon_min=float(rng.choice([0.5, 1.0, 2.0])),
            risk_aversion=float(rng.uniform(0.0, 2.0)),
        ),
        algorithms=algorithms,
        horizons_secs=horizons,
        predictability_penalty=float(rng.choice([0.0, 0.0, 0.2])),
        passive_participation=float(rng.uniform(0.02, 1.0)),
        passive_adverse_selection_bps=None if rng.random() < 0.7 else float(rng.uniform(-1.0, 3.0)),
        passive_offset_ticks=int(rng.integers(0, 4)),
        vwap_max_participation=float(rng.uniform(0.05, 1.0)),
    )
    return {
        "config": config,
        "side": "BUY" if rng.random() < 0.5 else "SELL",
        "qty": qty,
        "stats": stats,
        "urgency": urgency,
        "tick_size": None if rng.random() < 0.3 else float(rng.choice([0.01, 0.25, 1.0, 5.0])),
        "profile": random_profile(rng) if rng.random() < 0.5 else None,
        "size_increment": float(rng.choice([1.0, 0.5, 10.0])),
    }


def _outcome(fn, *args) -> Selection | type[BaseException]:
    try:
        return fn(*args)
    except (ValueError, ZeroDivisionError) as exc:
        return type(exc)


# -- Tests --------------------------------------------------------------------------------------------------------


def test_select_equals_the_table_reference_on_random_inputs() -> None:
    rng = np.random.default_rng(20240611)
    compared = errors = 0
    for i in range(CASES):
        case = random_case(rng)
        selector = AlgorithmSelector(case["config"])
        args = (
            case["side"],
            case["qty"],
            case["stats"],
            case["urgency"],
            case["tick_size"],
            case["profile"],
            case["size_increment"],
        )
        want = _outcome(reference_select, selector, *args)
        got = _outcome(selector.select, *args)
        context = f"case {i}: {case}"
        if isinstance(want, type):  # bad combinations (e.g. urgency 1 without IMMEDIATE) fail alike
            assert got is want, context
            errors += 1
            continue
        assert isinstance(got, Selection), (context, got)
        assert_identical(got, want, context)
        compared += 1
    assert compared >= 0.85 * CASES and errors > 0  # both branches exercised


def test_random_cases_cover_every_winner_and_both_weight_paths() -> None:
    """Guards the generator above: a change that made it degenerate would make the equality test weak."""
    rng = np.random.default_rng(20240611)
    winners, tz_seen = set(), set()
    for _ in range(CASES):
        case = random_case(rng)
        sel = _outcome(
            AlgorithmSelector(case["config"]).select,
            case["side"],
            case["qty"],
            case["stats"],
            case["urgency"],
            case["tick_size"],
            case["profile"],
            case["size_increment"],
        )
        if isinstance(sel, Selection):
            winners.add(sel.algorithm_id)
            if case["profile"] is not None:
                tz_seen.add(case["profile"].tz)
    assert winners == set(ALGORITHMS)
    assert {"UTC", "America/Chicago", "Asia/Kolkata"} <= tz_seen


@pytest.mark.parametrize("tz", ["UTC", "America/Chicago", "Asia/Kolkata", "Europe/London"])
@pytest.mark.parametrize("bucket", [1, 30, 60])
def test_profile_weights_match_fraction_between_bit_for_bit(tz: str, bucket: int) -> None:
    rng = np.random.default_rng(bucket)
    n = 1440 // bucket
    fractions = rng.gamma(0.5, 1.0, n)
    fractions[::7] = 0.0
    profile = VolumeProfile(
        fractions=tuple(float(f) for f in fractions / fractions.sum()), bucket_minutes=bucket, tz=tz
    )
    starts = [
        pd.Timestamp("2024-03-10 07:30", tz="UTC").value,  # Chicago spring-forward inside the window
        pd.Timestamp("2024-11-03 06:15:30.5", tz="UTC").value,  # Chicago fall-back, unaligned start
        pd.Timestamp("2024-03-31 00:45", tz="UTC").value + 1,  # London DST start, 1 ns past the minute
        pd.Timestamp("2024-01-02 23:59:59.999999999", tz="UTC").value,  # across midnight
        0,
    ] + [int(x) for x in rng.integers(1_400_000_000, 1_800_000_000, 6) * 10**9 + rng.integers(0, 10**9, 6)]
    for start in starts:
        for minutes in (1, 2, 61, 180):
            fast = profile_weights(profile, start, minutes)
            slow = weights_minute_by_minute(profile, start, minutes)
            assert fast.dtype == slow.dtype == np.float64 and fast.shape == slow.shape == (minutes,)
            assert np.array_equal(fast, slow), (tz, bucket, start, minutes, fast - slow)
    assert profile_weights(profile, starts[0], 0).shape == (0,)


def test_profile_weights_ask_other_weights_through_the_protocol() -> None:
    """A subclass (or any VolumeWeights) may define fraction_between differently: it is asked directly."""

    class Doubled(VolumeProfile):
        def fraction_between(self, start_ns: int, end_ns: int) -> float:
            return 2.0 * super().fraction_between(start_ns, end_ns)

    class Ramp:
        def fraction_between(self, start_ns: int, end_ns: int) -> float:
            return (start_ns // NS_PER_MINUTE) % 10 + 0.5

    flat = VolumeProfile.flat()
    doubled = Doubled(fractions=flat.fractions)
    start = pd.Timestamp("2024-01-02 14:20:17", tz="UTC").value
    assert np.array_equal(profile_weights(doubled, start, 30), 2.0 * profile_weights(flat, start, 30))
    assert np.array_equal(profile_weights(Ramp(), start, 30), weights_minute_by_minute(Ramp(), start, 30))
    stats = MarketStats(price=100.0, volume_per_min=50.0, sigma_per_min=3e-4, ts_ns=start)
    selector = AlgorithmSelector(SelectorConfig(horizons_secs=(300.0, 1800.0)))
    for profile in (doubled, Ramp()):
        got = selector.select("SELL", 2_000.0, stats, 0.3, 0.01, profile)
        assert_identical(got, reference_select(selector, "SELL", 2_000.0, stats, 0.3, 0.01, profile, 1.0), "")


def test_price_candidates_table_is_the_array_core_tabulated() -> None:
    stats = MarketStats(price=1640.0, volume_per_min=800.0, sigma_per_min=2e-4, half_spread_bps=0.76)
    config = SelectorConfig(algorithms=("VWAP", "IMMEDIATE", "ICEBERG", "TWAP", "VWAP"))
    table = price_candidates(5_000.0, stats, 0.4, config, tick_size=0.25)
    priced = selector_module._price_arrays(5_000.0, stats, 0.4, config, 0.25, None)
    assert list(table.columns) == list(selector_module._CANDIDATE_COLUMNS)
    assert table["algorithm_id"].dtype == object and (table.dtypes.iloc[1:] == np.float64).all()
    assert isinstance(table.index, pd.RangeIndex) and table.index.equals(pd.RangeIndex(len(table)))
    assert list(table.algorithm_id) == priced.algorithm_id
    n = len(config.horizons_secs)
    assert priced.algorithm_id == ["VWAP"] * n + ["IMMEDIATE"] + ["ICEBERG"] * n + ["TWAP"] * n + ["VWAP"] * n
    for column in selector_module._CANDIDATE_COLUMNS[1:]:
        assert np.array_equal(table[column].to_numpy(), getattr(priced, column)), column
    assert table.horizon_secs.iloc[n] == 0.0  # IMMEDIATE
    with pytest.raises(ValueError, match="ICEBERG needs tick_size"):
        price_candidates(5_000.0, stats, 0.4, SelectorConfig(algorithms=("ICEBERG",)))


def test_per_algorithm_best_follows_groupby_idxmin_ties_nans_and_repeats() -> None:
    """First minimum in row order per algorithm, NaN skipped, repeated algorithms pooled - as pandas does."""
    scores = np.array([3.0, 1.0, 1.0, np.nan, 2.0, np.nan, 1.0, 0.5, 0.5, np.inf, np.inf, 4.0])
    blocks = (("A", 0, 3), ("B", 3, 5), ("A", 5, 7), ("C", 7, 9), ("D", 9, 11), ("E", 11, 12))
    horizons = np.arange(len(scores), dtype=np.float64) * 60.0
    zeros = np.zeros_like(scores)
    priced = selector_module._Candidates(blocks, horizons, zeros, zeros, zeros, zeros, zeros, scores)
    costs, best_h = selector_module._per_algorithm_best(priced)
    table = pd.DataFrame({"algorithm_id": priced.algorithm_id, "horizon_secs": horizons, "score_bps": scores})
    ref = table.loc[table.groupby("algorithm_id", sort=False)["score_bps"].idxmin()]
    assert list(costs.items()) == [(r.algorithm_id, r.score_bps) for r in ref.itertuples()]
    assert list(best_h.items()) == [(r.algorithm_id, r.horizon_secs) for r in ref.itertuples()]
    assert best_h == {"A": 60.0, "B": 240.0, "C": 420.0, "D": 540.0, "E": 660.0}
    all_nan = priced._replace(
        score_bps=np.where(np.arange(12) == 3, np.nan, scores),
        blocks=(("A", 0, 3), ("B", 3, 4), ("C", 4, 12)),
    )
    with pytest.raises(ValueError, match="no candidate of B"):
        selector_module._per_algorithm_best(all_nan)
    # The winner keeps _argmin's tolerance: a later score lower by less than 1e-9 bps does not win.
    assert selector_module._argmin(np.array([np.nan, 2.0, 2.0 - 1e-12, 1.0 + 2e-9, 1.0])) == 4
    assert selector_module._argmin(np.array([1.0 + 5e-10, 1.0, np.inf])) == 0
    with pytest.raises(ValueError, match="finite score"):
        selector_module._argmin(np.array([np.inf, np.nan]))


class _NoPandas:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"select touched pandas.{name}")


def _no_fraction_between(self: Any, start_ns: int, end_ns: int) -> float:
    raise AssertionError("select asked fraction_between minute by minute")


@pytest.mark.parametrize("with_profile", [False, True])
def test_select_does_not_touch_pandas(monkeypatch: pytest.MonkeyPatch, with_profile: bool) -> None:
    stats = MarketStats(price=1640.0, volume_per_min=800.0, sigma_per_min=2e-4, half_spread_bps=0.76, ts_ns=7)
    selector = AlgorithmSelector()
    profile = VolumeProfile.flat() if with_profile else None  # a UTC profile: no time-zone conversion
    want = selector.select("BUY", 20 * 800.0, stats, 0.5, 0.25, profile)
    monkeypatch.setattr(selector_module, "pd", _NoPandas())
    monkeypatch.setattr(VolumeProfile, "fraction_between", _no_fraction_between)
    got = selector.select("BUY", 20 * 800.0, stats, 0.5, 0.25, profile)
    assert msgspec.to_builtins(got) == msgspec.to_builtins(want)
    with pytest.raises(AssertionError, match="touched pandas"):
        selector.candidates(20 * 800.0, stats, 0.5, 0.25, profile)
