"""Kelly, VaR/CVaR against closed forms and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sage.risk import (
    fractional_kelly,
    historical_var,
    kelly_continuous,
    kelly_fraction,
    kelly_from_outcomes,
    monte_carlo_var,
    parametric_var,
    parametric_var_portfolio,
)
from sage.risk.var import numpy_historical_var

Z99 = 2.3263478740408408  # Phi^-1(0.99)
PHI_Z99 = math.exp(-Z99 * Z99 / 2) / math.sqrt(2 * math.pi)


def test_kelly_closed_form():
    assert kelly_fraction(0.6, 1.0) == pytest.approx(0.2)
    assert kelly_fraction(0.5, 2.0) == pytest.approx(0.25)
    assert kelly_fraction(0.3, 2.0) == pytest.approx(-0.05)
    assert kelly_continuous(0.05, 0.04) == pytest.approx(1.25)


def test_kelly_maximises_log_growth():
    p, b = 0.55, 1.5
    f = np.linspace(0.0, 0.9, 90_001)
    growth = p * np.log1p(b * f) + (1 - p) * np.log1p(-f)
    assert f[np.argmax(growth)] == pytest.approx(kelly_fraction(p, b), abs=1e-4)


def test_fractional_kelly_caps_and_floor():
    assert fractional_kelly(0.6, 1.0, fraction=0.25, cap=1.0) == pytest.approx(0.05)
    assert fractional_kelly(0.9, 3.0, fraction=0.5, cap=0.02) == 0.02
    assert fractional_kelly(0.3, 1.0, fraction=0.5, cap=0.02, floor=0.001) == 0.001
    with pytest.raises(ValueError):
        kelly_fraction(1.2, 1.0)


def test_kelly_from_outcomes():
    p, b, f = kelly_from_outcomes(np.array([2.0, 2.0, -1.0, -1.0, 2.0, -1.0]))
    assert (p, b) == (0.5, 2.0)
    assert f == pytest.approx(0.25)


def test_parametric_var_of_a_normal():
    var, cvar = parametric_var(0.0, 1.0, 0.99)
    assert var == pytest.approx(Z99, rel=1e-12)
    assert cvar == pytest.approx(PHI_Z99 / 0.01, rel=1e-12)  # 2.6652...
    var, _ = parametric_var(0.001, 0.02, 0.95)
    assert var == pytest.approx(-0.001 + 0.02 * 1.6448536269514722, rel=1e-12)


def test_parametric_portfolio_matches_scalar():
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    w = np.array([2.0, -1.0])
    sigma = math.sqrt(w @ cov @ w)
    assert parametric_var_portfolio(w, cov, 0.99).var == pytest.approx(sigma * Z99)


def test_historical_var_hand_computed():
    pnl = np.array([3.0, -7.0, 1.0, -2.0, 5.0, -1.0, 0.0, 2.0, -4.0, 4.0])
    # alpha 0.9, n = 10: k = ceil(10 * 0.1) = 1 -> the worst outcome
    assert historical_var(pnl, alpha=0.9) == (7.0, 7.0)
    # alpha 0.8: k = 2 -> VaR = 2nd worst (4), CVaR = mean of the two worst (5.5)
    assert historical_var(pnl, alpha=0.8) == (4.0, 5.5)


def test_historical_var_equals_numpy_quantile():
    rng = np.random.default_rng(3)
    scen = rng.standard_t(4, size=(1000, 10))
    w = rng.normal(size=10)
    pnl = scen @ w
    for alpha in (0.9505, 0.9912, 0.9777):  # n (1 - alpha) not an integer: numpy's float rounding is moot
        assert historical_var(scen, w, alpha).var == pytest.approx(
            -np.quantile(pnl, 1.0 - alpha, method="inverted_cdf"), rel=1e-12
        )
    for alpha in (0.95, 0.99, 0.975):
        got = historical_var(scen, w, alpha)
        ref = numpy_historical_var(scen, w, alpha)
        assert got.var == pytest.approx(ref.var, rel=1e-12)
        assert got.cvar == pytest.approx(ref.cvar, rel=1e-12)
        assert got.cvar >= got.var


def test_monte_carlo_var_converges_to_parametric():
    cov = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, 0.3], [0.2, 0.3, 0.5]]) * 1e-4
    w = np.array([1e6, -2e5, 5e5])
    par = parametric_var_portfolio(w, cov, 0.99)
    mc = monte_carlo_var(w, cov, 0.99, n_sims=200_000, seed=7)
    assert mc.var == pytest.approx(par.var, rel=0.02)
    assert mc.cvar == pytest.approx(par.cvar, rel=0.03)
    assert monte_carlo_var(w, cov, 0.99, n_sims=1000, seed=1) == monte_carlo_var(w, cov, 0.99, n_sims=1000, seed=1)


def test_historical_var_on_gaussian_sample_near_parametric():
    rng = np.random.default_rng(11)
    x = rng.normal(0.0, 2.0, size=400_000)
    assert historical_var(x, alpha=0.99).var == pytest.approx(2.0 * Z99, rel=0.01)


def test_var_refuses_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        historical_var(np.array([1.0, np.nan, 2.0]), alpha=0.9)
    with pytest.raises(ValueError, match="alpha"):
        parametric_var(0.0, 1.0, 1.5)
