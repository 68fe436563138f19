"""Value at Risk and Conditional VaR (expected shortfall) by three methods.

Conventions: ``alpha`` is the confidence level (0.99 = the loss exceeded on 1 % of days). VaR and CVaR
are reported as **positive losses** in the units of the P&L given (account currency when scenarios are
money). Portfolio P&L of a scenario is ``scenario_pnl @ weights`` (or ``returns @ exposures``).

* **parametric** (variance-covariance): P&L ~ N(mu, sigma^2) with ``mu = w.m``, ``sigma^2 = w' S w``:
  ``VaR = -mu + sigma z``, ``CVaR = -mu + sigma phi(z) / (1 - alpha)``, ``z = Phi^-1(alpha)``.
* **historical**: the empirical quantile of past scenario P&L. With ``n`` scenarios sorted ascending,
  ``k = ceil(n (1 - alpha))`` worst ones form the tail: ``VaR = -pnl[k-1]`` (numpy's
  ``quantile(method="inverted_cdf")``), ``CVaR = -mean(pnl[:k])``.
* **Monte Carlo**: ``n_sims`` Gaussian scenarios ``mu + L z`` (``L`` the Cholesky factor of the
  covariance, ``z`` from ``numpy.random.Generator(PCG64(seed))``), then the historical estimator. On
  Gaussian inputs it converges to the parametric value (tested).

The quantile/shortfall kernel is numba (one pass to form the portfolio P&L, one partial sort); 1,000
scenarios x 10 instruments take a few microseconds.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np
from numba import njit

_N = NormalDist()


class VaRResult(NamedTuple):
    var: float
    """Value at Risk (positive = loss)."""
    cvar: float
    """Conditional VaR / expected shortfall (>= var)."""


def _check_alpha(alpha: float) -> None:
    if not 0.5 <= alpha < 1.0:
        raise ValueError(f"alpha (confidence) must be in [0.5, 1), got {alpha!r}")


def parametric_var(mean: float, std: float, alpha: float = 0.99) -> VaRResult:
    """VaR/CVaR of a normal P&L with the given mean and standard deviation."""
    _check_alpha(alpha)
    if not (math.isfinite(std) and std >= 0.0 and math.isfinite(mean)):
        raise ValueError(f"mean must be finite and std finite and >= 0, got {mean!r}, {std!r}")
    z = _N.inv_cdf(alpha)
    return VaRResult(-mean + std * z, -mean + std * _N.pdf(z) / (1.0 - alpha))


def parametric_var_portfolio(
    weights: np.ndarray, cov: np.ndarray, alpha: float = 0.99, mean: np.ndarray | None = None
) -> VaRResult:
    """Parametric VaR of ``weights @ X`` with ``X ~ N(mean, cov)`` (weights = money exposures when X are returns)."""
    w = np.asarray(weights, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (w.size, w.size):
        raise ValueError(f"cov must be ({w.size}, {w.size}), got {c.shape}")
    mu = float(w @ np.asarray(mean, dtype=np.float64)) if mean is not None else 0.0
    var = float(w @ c @ w)
    return parametric_var(mu, math.sqrt(max(var, 0.0)), alpha)


@njit(cache=True)
def _tail(pnl: np.ndarray, alpha: float) -> tuple[float, float]:  # pragma: no cover - numba
    n = pnl.shape[0]
    k = math.ceil(n * (1.0 - alpha) - 1e-9)  # tolerate float noise: 1000 * (1 - 0.99) = 10.000000000000009
    k = max(1, min(n, k))
    part = np.partition(pnl, k - 1)  # part[:k] are the k smallest, part[k-1] the k-th smallest
    var = -part[k - 1]
    s = 0.0
    for i in range(k):
        s += part[i]
    return var, -s / k


@njit(cache=True)
def _portfolio_tail(scenarios: np.ndarray, weights: np.ndarray, alpha: float) -> tuple[float, float]:  # pragma: no cover
    n, m = scenarios.shape
    pnl = np.empty(n)
    for i in range(n):
        acc = 0.0
        for j in range(m):
            acc += scenarios[i, j] * weights[j]
        pnl[i] = acc
    return _tail(pnl, alpha)


def historical_var(scenarios: np.ndarray, weights: np.ndarray | None = None, alpha: float = 0.99) -> VaRResult:
    """Empirical VaR/CVaR of ``scenarios @ weights`` (or of a 1-D P&L array when ``weights`` is None).

    Non-finite scenario rows are refused (a NaN would silently sort to one end).
    """
    _check_alpha(alpha)
    s = np.ascontiguousarray(scenarios, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no scenarios")
    if not np.isfinite(s).all():
        raise ValueError("scenarios contain NaN or inf")
    if weights is None:
        if s.ndim != 1:
            raise ValueError("give weights for a 2-D scenario matrix")
        return VaRResult(*_tail(s.copy(), alpha))
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != w.size:
        raise ValueError(f"scenarios must be (n, {w.size}), got {s.shape}")
    return VaRResult(*_portfolio_tail(s, w, alpha))


def monte_carlo_var(
    weights: np.ndarray,
    cov: np.ndarray,
    alpha: float = 0.99,
    *,
    mean: np.ndarray | None = None,
    n_sims: int = 10_000,
    seed: int = 0,
) -> VaRResult:
    """VaR/CVaR from ``n_sims`` seeded Gaussian scenarios ``mean + L z`` (deterministic for a seed)."""
    _check_alpha(alpha)
    w = np.asarray(weights, dtype=np.float64)
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (w.size, w.size):
        raise ValueError(f"cov must be ({w.size}, {w.size}), got {c.shape}")
    if n_sims < 100:
        raise ValueError(f"n_sims must be >= 100, got {n_sims}")
    # A tiny diagonal jitter makes a positive semi-definite (e.g. perfectly correlated) matrix factorable.
    jitter = 1e-12 * max(float(np.trace(c)) / max(w.size, 1), 1e-300)
    chol = np.linalg.cholesky(c + jitter * np.eye(w.size))
    z = np.random.Generator(np.random.PCG64(seed)).standard_normal((n_sims, w.size))
    scen = z @ chol.T
    if mean is not None:
        scen += np.asarray(mean, dtype=np.float64)
    return VaRResult(*_portfolio_tail(np.ascontiguousarray(scen), np.ascontiguousarray(w), alpha))


def numpy_historical_var(scenarios: np.ndarray, weights: np.ndarray, alpha: float = 0.99) -> VaRResult:
    """Plain-numpy reference of :func:`historical_var` (the benchmark's baseline, and a test oracle)."""
    pnl = np.asarray(scenarios, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)
    k = max(1, min(pnl.size, math.ceil(pnl.size * (1.0 - alpha) - 1e-9)))
    tail = np.sort(pnl)[:k]
    return VaRResult(float(-tail[-1]), float(-tail.mean()))
