"""Quantile forecaster: 9 quantiles (0.1 .. 0.9) of the next-``h``-bar log return, in volatility units.

Target. For the bar at ``t`` with EWMA volatility ``sigma_t`` (the ``ewma_vol`` feature, per bar) the
model predicts quantiles of ``z_t = log(close_{t+h} / close_t) / (sigma_t * sqrt(h))``. Why standardise:
the inputs are scale-free, so the output must be too -- a 1-minute future and a daily index have return
scales 30x apart, and one model serves both. Multiply by ``sigma_t * sqrt(h)`` to get log-return
quantiles (:func:`to_log_return_quantiles`). The median's sign is the forecast direction, the 0.1-0.9
spread its uncertainty.

Monotone quantiles by sorting: the head emits 9 unconstrained values and sorts them. Sorting
("rearrangement", Chernozhukov, Fernandez-Val & Galichon 2010) never increases the pinball loss of a
set of quantile estimates, keeps gradients (a permutation) and -- unlike a cumulative-softplus
parameterisation -- involves no transcendental function, so it is bitwise batch-invariant.

Shapes: ``vector (B, Z)`` + ``last_row (B, F)`` -> ``(B, Z + F)`` -> MLP -> ``(B, Q)`` sorted.
"""

from __future__ import annotations

import itertools
import math

import msgspec
import numpy as np
import torch
from torch import nn

QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Default quantile levels; index 4 is the median."""


class ForecasterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Architecture and target of the quantile forecaster head."""

    latent_dim: int = 8
    """Regime-vector size (default 8; must equal the encoder's ``latent_dim``)."""
    n_features: int = 11
    """Features of the window's newest row fed alongside the vector (default 11)."""
    hidden: int = 32
    """Hidden width of the two-layer MLP (default 32)."""
    horizon: int = 5
    """Bars ahead ``h`` of the forecast return (default 5)."""
    levels: tuple[float, ...] = QUANTILE_LEVELS
    """Quantile levels, strictly increasing in (0, 1) (default 0.1, 0.2, ..., 0.9)."""

    def __post_init__(self) -> None:
        for name in ("latent_dim", "n_features", "hidden", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ForecasterConfig.{name} must be an int >= 1, got {value!r}")
        lv = self.levels
        if not lv or any(not 0.0 < q < 1.0 for q in lv) or any(b <= a for a, b in itertools.pairwise(lv)):
            raise ValueError(f"ForecasterConfig.levels must be strictly increasing in (0, 1), got {lv}")


class QuantileForecaster(nn.Module):
    """Two-layer MLP over ``[regime vector, newest feature row]`` -> sorted standardised-return quantiles."""

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Linear(config.latent_dim + config.n_features, config.hidden),
            nn.ReLU(),
            nn.Linear(config.hidden, len(config.levels)),
        )
        self.register_buffer("levels", torch.tensor(config.levels, dtype=torch.float32), persistent=False)

    def forward(self, vector: torch.Tensor, last_row: torch.Tensor) -> torch.Tensor:
        """``vector (B, Z)``, ``last_row (B, F)`` -> ``quantiles (B, Q)``, ascending along dim 1."""
        raw = self.net(torch.cat([vector, last_row], dim=1))  # (B, Q)
        return torch.sort(raw, dim=1).values


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball (quantile) loss of ``quantiles (B, Q)`` for ``target (B,)`` at ``levels (Q,)``.

    ``rho_tau(u) = max(tau * u, (tau - 1) * u)`` with ``u = target - q``: minimised in expectation by the
    true tau-quantile, so each output learns its own quantile.
    """
    u = target[:, None] - quantiles  # (B, Q)
    return torch.maximum(levels * u, (levels - 1.0) * u).mean()


def standardised_forward_return(close: np.ndarray, sigma: np.ndarray, horizon: int) -> np.ndarray:
    """The forecaster's target ``z_t`` for every bar (NaN where ``t + h`` is past the end, or where
    ``sigma_t`` is NaN or zero, e.g. during the volatility warm-up or in a flat market)."""
    close = np.asarray(close, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    z = np.full(close.shape, np.nan)
    if close.size > horizon:
        with np.errstate(divide="ignore", invalid="ignore"):
            ret = np.log(close[horizon:] / close[:-horizon])
            scale = sigma[:-horizon] * math.sqrt(horizon)
            z[:-horizon] = np.where(scale > 0.0, ret / scale, np.nan)
    return z


def to_log_return_quantiles(quantiles: np.ndarray, sigma: np.ndarray | float, horizon: int) -> np.ndarray:
    """Standardised quantiles ``(..., Q)`` -> next-``h`` log-return quantiles, given ``sigma`` (the bar's
    ``ewma_vol``, broadcast over the leading dims)."""
    scale = np.asarray(sigma, dtype=np.float64) * math.sqrt(horizon)
    return np.asarray(quantiles, dtype=np.float64) * scale[..., None]
