"""EWMA correlation (against the feature kernel and by hand), shock detection, risk_scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage.features.basic import ewma_corr
from sage.risk import CorrelationConfig, EWMACorrelation, RiskScaleConfig, risk_scale


def test_ewma_correlation_by_hand():
    ew = EWMACorrelation(CorrelationConfig(lam=0.5, min_periods=2))
    ew.update({"a": 1.0, "b": 1.0})
    assert math.isnan(ew.pair("a", "b"))
    ew.update({"a": 1.0, "b": -1.0})  # seed: mean of outer products -> cov 0, var 1, 1
    assert ew.pair("a", "b") == pytest.approx(0.0)
    ew.update({"a": 2.0, "b": 2.0})  # cov = .5*0 + .5*4 = 2; var_a = var_b = .5*1 + .5*4 = 2.5
    assert ew.pair("a", "b") == pytest.approx(2.0 / 2.5)
    assert ew.covariance() == pytest.approx(np.array([[2.5, 2.0], [2.0, 2.5]]))


def test_ewma_correlation_equals_feature_kernel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    y = 0.6 * x + 0.8 * rng.normal(size=500)
    ref = ewma_corr(x, y, lam=0.94, min_periods=20)
    ew = EWMACorrelation(CorrelationConfig(lam=0.94, min_periods=20))
    got = []
    for a, b in zip(x, y, strict=True):
        ew.update({"x": a, "y": b})
        got.append(ew.pair("x", "y"))
    np.testing.assert_allclose(np.array(got), ref, rtol=1e-12, atol=1e-14, equal_nan=True)


def test_correlation_shock_cuts_leverage_then_releases():
    cfg = CorrelationConfig(lam=0.9, min_periods=20, shock_window=20, shock_threshold=0.3,
                            shock_min_level=0.5, leverage_factor=0.5, cooldown=10)
    ew = EWMACorrelation(cfg)
    rng = np.random.default_rng(1)
    for _ in range(200):
        assert not ew.update({"a": rng.normal(), "b": rng.normal()})
    assert ew.leverage_scale == 1.0
    fired_at = None
    for t in range(60):
        r = rng.normal()
        if ew.update({"a": r, "b": r}) and fired_at is None:
            fired_at = t
    assert fired_at is not None and fired_at < 20
    assert ew.shocks == 1
    # correlation now stays high but no longer rises: the shock expires after the cooldown
    assert ew.leverage_scale == 1.0 and not ew.shock_active
    assert ew.mean_correlation() > 0.9


def test_risk_scale_levels_and_uncertainty():
    assert risk_scale(1, 0.1) == 1.0
    assert risk_scale(3, 0.1) == 0.5
    assert risk_scale(5, 0.0) == 0.25
    assert risk_scale(1, 0.75) == pytest.approx(1.0 - 0.5 * 0.75)
    assert risk_scale(1, 1.0) == pytest.approx(0.25)
    assert risk_scale(2, float("nan")) == pytest.approx(0.75 * 0.25)  # NaN = maximal uncertainty
    levels = [risk_scale(k, 0.6) for k in range(1, 6)]
    assert levels == sorted(levels, reverse=True)
    with pytest.raises(ValueError):
        risk_scale(0, 0.1)
    with pytest.raises(ValueError):
        RiskScaleConfig(level_scales=(0.5, 1.0, 0.5, 0.5, 0.5))
