"""Parameter tables, configs and the profile integral, without an engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nautilus_trader.execution.config import ExecAlgorithmFactory

from sage.execution import (
    ICEBERG_PARAMS,
    STEALTH_PARAMS,
    TWAP_PARAMS,
    VWAP_PARAMS,
    IcebergExecAlgorithm,
    ImmediateExecAlgorithm,
    ParamError,
    StealthConfig,
    StealthExecAlgorithm,
    TWAPConfig,
    TWAPExecAlgorithm,
    VolumeProfile,
    VWAPConfig,
    VWAPExecAlgorithm,
    parse_params,
)


def test_defaults_are_filled_and_values_coerced() -> None:
    params = parse_params({"horizon_secs": "600", "child_type": "LIMIT"}, TWAP_PARAMS, "TWAP")
    assert params == {
        "horizon_secs": 600.0,
        "interval_secs": 60.0,
        "child_type": "limit",
        "limit_offset_ticks": 1,
        "at_horizon": None,
    }
    stealth = parse_params({"horizon_secs": 60, "seed": 7.0}, STEALTH_PARAMS, "STEALTH")
    assert (
        stealth["seed"] == 7
        and stealth["min_slice_fraction"] == 0.05
        and stealth["max_interval_secs"] == 60.0
    )


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParamError) as info:
        parse_params({"max_participation": 1.5, "interval_secs": True, "speed": 3}, VWAP_PARAMS, "VWAP")
    message = str(info.value)
    for part in (
        "unknown key 'speed'",
        "'horizon_secs' is required",
        "'max_participation' must be <= 1",
        "'interval_secs' must be a number",
    ):
        assert part in message
    with pytest.raises(ParamError, match="'limit_offset_ticks' must be an integer"):
        parse_params({"horizon_secs": 5, "limit_offset_ticks": "one"}, TWAP_PARAMS, "TWAP")
    with pytest.raises(ParamError, match="'visible_qty' must be finite"):
        parse_params({"visible_qty": float("nan")}, ICEBERG_PARAMS, "ICEBERG")


@pytest.mark.parametrize(
    "algorithm",
    [
        TWAPExecAlgorithm(TWAPConfig(max_rejections=3, at_horizon="cancel")),
        VWAPExecAlgorithm(
            VWAPConfig(profile_bar_types=("ESU3.XCME-1-MINUTE-LAST-EXTERNAL",), profile_tz="America/Chicago")
        ),
        IcebergExecAlgorithm(),
        StealthExecAlgorithm(StealthConfig(seed=42)),
        ImmediateExecAlgorithm(),
    ],
)
def test_configs_round_trip_through_importable_config(algorithm) -> None:
    """Backtest nodes build algorithms from ImportableExecAlgorithmConfig; the config must survive that."""
    rebuilt = ExecAlgorithmFactory.create(algorithm.to_importable_config())
    assert type(rebuilt) is type(algorithm)
    assert rebuilt.config == algorithm.config and rebuilt.id == algorithm.id


def test_configs_are_frozen() -> None:
    config = TWAPConfig()
    with pytest.raises(AttributeError):
        config.max_rejections = 5  # type: ignore[misc]


_weights = st.lists(st.floats(0.0, 10.0), min_size=48, max_size=48).filter(lambda w: sum(w) > 0.1)
_times = st.integers(0, 5 * 86_400 * 10**9)


@settings(max_examples=60, deadline=None)
@given(_weights, _times, _times, _times, st.sampled_from(["UTC", "America/Chicago", "Asia/Kolkata"]))
def test_profile_integral_is_additive_and_bounded(weights, a, b, c, tz) -> None:
    fractions = np.asarray(weights) / np.sum(weights)
    profile = VolumeProfile(fractions=tuple(float(x) for x in fractions / fractions.sum()), tz=tz)
    lo, mid, hi = sorted((a, b, c))
    whole = profile.fraction_between(lo, hi)
    assert whole == pytest.approx(
        profile.fraction_between(lo, mid) + profile.fraction_between(mid, hi), abs=1e-9
    )
    days = (hi - lo) / (86_400 * 10**9)
    assert 0.0 <= whole <= days * max(fractions) * 48 + 1e-9
